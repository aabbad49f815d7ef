//! Connections to one Redis or to a Redis Cluster, as the pool (pool.rs)
//! and the analytics sink hold them.
//!
//! A PING before each use would double the cost of a decision, so no
//! connection is checked before use; instead every connection remembers
//! whether a call on it failed in a way that may have left it unusable (a
//! timeout leaves a reply unread, a reset leaves no socket), and
//! [`Manager::has_broken`] says to drop it when it comes back. Whether
//! connections that sat idle may have died unnoticed is kept in [`Health`].
//!
//! With Redis Sentinel, a connection is made to the master the sentinels
//! name (sentinel.rs) and must stay the master's: one that answers
//! `READONLY` (its server was demoted by a failover) is dropped like a dead
//! one, and those as old as it answer `ROLE`, not `PING`, before their next
//! call, so a connection to a replica is never reused.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::cluster::{ClusterClient, ClusterConnection};
use redis::io::tcp::TcpSettings;
use redis::{ConnectionInfo, ConnectionLike, RedisResult};

use crate::error::{breaks_connection, is_readonly};
use crate::node::Node;
use crate::sentinel::{self, Sentinels};
use crate::target::Target;

/// Makes connections for the pool, each bounded by `timeout` on connect,
/// read and write. Holds settings only, no connection, so the pool of each
/// process (a forked child makes its own) shares it.
pub(crate) struct Manager {
    kind: Kind,
    timeout: Duration,
    health: Arc<Health>,
}

/// What the pool's connections have in common.
#[derive(Debug, Default)]
pub(crate) struct Health {
    /// Bumped when a connection is found dead (Redis restarted, a proxy
    /// dropped it): those made before it may be dead too.
    generation: AtomicU64,
}

impl Health {
    /// A connection was found closed or reset.
    pub(crate) fn found_dead(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether `conn` may have died unnoticed: it is older than the last
    /// connection found dead.
    pub(crate) fn suspects(&self, conn: &Conn) -> bool {
        conn.generation < self.generation.load(Ordering::Relaxed)
    }

    /// `conn` answered: it is as good as a new one.
    pub(crate) fn clear(&self, conn: &mut Conn) {
        conn.generation = self.generation.load(Ordering::Relaxed);
    }
}

enum Kind {
    Single(Box<ConnectionInfo>),
    Cluster(ClusterClient, Box<ConnectionInfo>),
    Sentinel(Sentinels),
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            Kind::Single(_) => "single",
            Kind::Cluster(..) => "cluster",
            Kind::Sentinel(_) => "sentinel",
        };
        f.debug_struct("Manager")
            .field("kind", &kind)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Manager {
    pub(crate) fn new(target: Target, timeout: Duration) -> RedisResult<Self> {
        // A request and its reply are each one write: no reason to let Nagle
        // hold back the tail of a large pipeline (a Node sets the same).
        let nodelay = |info: ConnectionInfo| {
            let tcp = info.tcp_settings().clone().set_nodelay(true);
            info.set_tcp_settings(tcp)
        };
        let kind = match target {
            Target::Single(info) => Kind::Single(info),
            Target::Cluster(nodes) => Kind::Cluster(
                ClusterClient::builder(nodes.iter().cloned().map(nodelay))
                    .tcp_settings(TcpSettings::default().set_nodelay(true))
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    // Used for the slot map, script loads and clear, never
                    // for decisions (cluster.rs): enough to follow a MOVED
                    // or ASK; a node that does not answer is not waited on
                    // again and again.
                    .retries(2)
                    .min_retry_wait(10)
                    .max_retry_wait(timeout.as_millis().max(10) as u64)
                    .build()?,
                Box::new(nodes[0].clone()),
            ),
            Target::Sentinel(target) => Kind::Sentinel(Sentinels::new(*target)),
        };
        Ok(Manager {
            kind,
            timeout,
            health: Arc::default(),
        })
    }

    pub(crate) fn health(&self) -> &Arc<Health> {
        &self.health
    }

    /// How long connecting, and each reply, may take.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A new connection, made within `within` (a cluster's within the
    /// timeout it was built with).
    pub(crate) fn connect(&self, within: Duration) -> RedisResult<Conn> {
        let deadline = Instant::now() + within;
        let link = match &self.kind {
            Kind::Single(info) => Link::Single(Node::connect(info, self.timeout, deadline)?),
            Kind::Sentinel(sentinels) => {
                Link::Single(sentinels.connect_master(self.timeout, deadline)?)
            }
            Kind::Cluster(client, seed) => {
                // Connect and read timeouts come from the client's builder.
                let conn = client.get_connection()?;
                conn.set_write_timeout(Some(self.timeout))?;
                Link::Cluster(Box::new(ClusterLink {
                    conn,
                    slots: Vec::new(),
                    nodes: HashMap::new(),
                    seed: (**seed).clone(),
                    timeout: self.timeout,
                }))
            }
        };
        Ok(Conn {
            link,
            master_only: matches!(self.kind, Kind::Sentinel(_)),
            broken: false,
            uses: 0,
            generation: self.health.generation.load(Ordering::Relaxed),
        })
    }

    /// Whether `conn` must not be used again.
    pub(crate) fn has_broken(&self, conn: &Conn) -> bool {
        conn.broken || !conn.link.is_open()
    }
}

/// One pooled connection and whether it is still fit to hand out.
pub(crate) struct Conn {
    link: Link,
    /// Made to the master the sentinels named: a `READONLY` reply means it
    /// no longer is, and breaks the connection.
    master_only: bool,
    broken: bool,
    /// Calls made on it: a connection that has served calls before may have
    /// gone stale while it sat in the pool (a Redis restart).
    uses: u64,
    /// `Health::generation` when it was made or last proved alive.
    generation: u64,
}

/// What a call talks to Redis over: a connection of Flux's own to one
/// server (node.rs), or a cluster's.
pub(crate) enum Link {
    Single(Node),
    Cluster(Box<ClusterLink>),
}

/// A cluster connection, and for batches the slot map and a plain connection
/// to each primary (see cluster.rs).
pub(crate) struct ClusterLink {
    pub(crate) conn: ClusterConnection,
    /// `(first slot, last slot, primary "host:port")` from `CLUSTER SLOTS`,
    /// fetched by the first batch and again whenever a batch meets `MOVED`.
    pub(crate) slots: Vec<(u16, u16, String)>,
    /// Connections to primaries by "host:port", made as batches need them.
    pub(crate) nodes: HashMap<String, Node>,
    /// How to reach a node: the first seed's settings (TLS, credentials).
    pub(crate) seed: ConnectionInfo,
    pub(crate) timeout: Duration,
}

impl Conn {
    pub(crate) fn uses(&self) -> u64 {
        self.uses
    }

    pub(crate) fn is_broken(&self) -> bool {
        self.broken
    }

    /// Runs `f` on the connection, marking it broken when `f` fails in a way
    /// that may have left it unusable.
    pub(crate) fn run<T>(&mut self, f: impl FnOnce(&mut Link) -> RedisResult<T>) -> RedisResult<T> {
        self.uses += 1;
        let result = f(&mut self.link);
        if let Err(err) = &result {
            if breaks_connection(err) || (self.master_only && is_readonly(err)) {
                self.broken = true;
            }
        }
        result
    }

    /// Whether the connection still serves: a `PING`, or for a master found
    /// through Sentinel a `ROLE` that must say `master`.
    pub(crate) fn probe(&mut self) -> RedisResult<()> {
        let master_only = self.master_only;
        self.run(|link| match link {
            Link::Single(conn) if master_only => sentinel::verify_master(conn),
            _ => redis::cmd("PING").query(link.as_dyn()),
        })
    }
}

impl Link {
    pub(crate) fn as_dyn(&mut self) -> &mut dyn ConnectionLike {
        match self {
            Link::Single(conn) => conn,
            Link::Cluster(link) => &mut link.conn,
        }
    }

    fn is_open(&self) -> bool {
        match self {
            Link::Single(conn) => conn.is_open(),
            Link::Cluster(link) => link.conn.is_open(),
        }
    }
}
