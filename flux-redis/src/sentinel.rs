//! Finding the master through Redis Sentinel.
//!
//! A new connection asks the sentinels, in turn, where the master named in
//! the configuration is (`SENTINEL get-master-addr-by-name`), starting with
//! the one that answered last; connects there; and asks the server its
//! `ROLE`, since a sentinel may not have seen a failover yet. Only a server
//! that says it is the master is used. Everything, sentinels included, is
//! done by one deadline (`timeout_ms` from the start), so a sentinel or a
//! master that stopped answering costs its share of that and no more.
//!
//! The redis crate has a Sentinel client of its own, but it asks with
//! `SENTINEL MASTERS`, checks the role on a separate connection, and
//! connects to sentinels and masters with no bound on time: a sentinel that
//! accepts and never answers would hold a call for good.
//!
//! After a failover, the connections to the old master either die with it or
//! answer `READONLY` once it is a replica; either way they are dropped, and
//! the next connection is made by asking the sentinels again (connection.rs).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use redis::{ConnectionInfo, ErrorKind, RedisResult, ServerErrorKind, Value};

use crate::node::{left, Node};
use crate::target::SentinelTarget;

/// The sentinels of one master, and which of them answered last.
#[derive(Debug)]
pub(crate) struct Sentinels {
    target: SentinelTarget,
    /// Asked first next time: the sentinel that answered last.
    first: AtomicUsize,
}

impl Sentinels {
    pub(crate) fn new(target: SentinelTarget) -> Self {
        Sentinels {
            target,
            first: AtomicUsize::new(0),
        }
    }

    /// A connection to the master, verified by `ROLE`, made by `deadline`;
    /// each of its requests may then take `timeout`.
    pub(crate) fn connect_master(&self, timeout: Duration, deadline: Instant) -> RedisResult<Node> {
        let (host, port) = self.master_address(deadline)?;
        let info = self.target.master_at(host, port);
        let mut conn = Node::connect(&info, timeout, deadline)?;
        conn.within(deadline, verify_master)?;
        Ok(conn)
    }

    /// Where the sentinels say the master is. Each sentinel gets an even
    /// share of the time left, so one that does not answer leaves time for
    /// the next.
    fn master_address(&self, deadline: Instant) -> RedisResult<(String, u16)> {
        let sentinels = &self.target.sentinels;
        let first = self.first.load(Ordering::Relaxed);
        let mut last_error = None;
        for turn in 0..sentinels.len() {
            let index = (first + turn) % sentinels.len();
            let share = left(deadline)? / (sentinels.len() - turn) as u32;
            match ask(&sentinels[index], &self.target.master_name, share) {
                Ok(Some(address)) => {
                    self.first.store(index, Ordering::Relaxed);
                    return Ok(address);
                }
                Ok(None) => {
                    last_error = Some(redis::RedisError::from((
                        ErrorKind::MasterNameNotFoundBySentinel,
                        "a sentinel knows no master by the configured name",
                        format!("{:?}", self.target.master_name),
                    )))
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.expect("at least one sentinel"))
    }
}

/// One sentinel's answer within `timeout`: the master's address, or `None`
/// when it knows no master by that name.
fn ask(
    sentinel: &ConnectionInfo,
    name: &str,
    timeout: Duration,
) -> RedisResult<Option<(String, u16)>> {
    let deadline = Instant::now() + timeout;
    let answer = Node::connect(sentinel, timeout, deadline).and_then(|mut conn| {
        conn.within(deadline, |conn| {
            redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(name)
                .query(conn)
        })
    });
    answer.map_err(|err| about_password(err, sentinel))
}

/// A sentinel's refusal of the client's password, or of none, said with
/// what to set: the sentinels' password is not the master's.
fn about_password(err: redis::RedisError, sentinel: &ConnectionInfo) -> redis::RedisError {
    let what = if err.code() == Some("NOAUTH") {
        "a sentinel asks for a password: set [redis] sentinel_password"
    } else if err.kind() == ErrorKind::AuthenticationFailed {
        "a sentinel refused [redis] sentinel_password"
    } else {
        return err;
    };
    let answer = match (err.code(), err.detail()) {
        (Some(code), Some(detail)) => format!("{code} {detail}"),
        (code, detail) => code.or(detail).unwrap_or("").to_owned(),
    };
    let detail = format!("{} answered {answer}", sentinel.addr());
    redis::RedisError::from((ErrorKind::AuthenticationFailed, what, detail))
}

/// `ROLE` says `master`, or the connection is refused as a replica's would
/// be (`READONLY`).
pub(crate) fn verify_master(conn: &mut Node) -> RedisResult<()> {
    let role: Vec<Value> = redis::cmd("ROLE").query(conn)?;
    match role.first() {
        Some(Value::BulkString(role)) if role == b"master" => Ok(()),
        _ => Err(redis::RedisError::from((
            ErrorKind::Server(ServerErrorKind::ReadOnly),
            "the server the sentinels named is not the master (yet)",
        ))),
    }
}
