//! What a batch needs on a cluster: which primary serves a key, a plain
//! connection to it, and the rounds that follow redirects.
//!
//! The redis crate's cluster connection fails a multi-command send as a whole
//! when any reply in it is an error (`NOSCRIPT`, `MOVED`), losing the replies
//! of the calls that did run: a retry would decide them twice. It also sends
//! a command again by itself after a reset or a timeout, when the command
//! may have run, and sleeps between retries. So every decision on a cluster
//! (a single one is a batch of one) is split here by primary, by our own
//! slot map, and each part goes as one pipeline over a plain connection to
//! that node, where every reply, error or not, is kept. Calls answered
//! `MOVED`, `ASK` or `NOSCRIPT` did not run: they go again in a next round,
//! to the node named (after `ASKING`), or after `SCRIPT LOAD` in the same
//! pipeline. Every round, every read and every write ends by the batch's
//! deadline (`timeout_ms` after it started), so a slot map that never
//! settles holds no call beyond it.

use std::time::Instant;

use redis::{ConnectionAddr, ConnectionInfo, RedisResult, ServerErrorKind, Value};

use crate::connection::ClusterLink;
use crate::node::{timed_out, Node};
use crate::store::ScriptCall;

/// Rounds a batch makes at most: one, a redirect, an `ASK` from there and a
/// script to load suffice while a slot migrates; more means the slot map
/// does not settle.
const MAX_ROUNDS: usize = 5;

/// The hash slot of `key` (CRC16-XMODEM mod 16384, honouring `{hash tags}`).
pub(crate) fn slot(key: &[u8]) -> u16 {
    let key = match key.iter().position(|&b| b == b'{') {
        Some(open) => match key[open + 1..].iter().position(|&b| b == b'}') {
            Some(len) if len > 0 => &key[open + 1..open + 1 + len],
            _ => key,
        },
        None => key,
    };
    crc16(key) % 16384
}

fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= (byte as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

impl ClusterLink {
    /// The primary serving `slot`, as "host:port"; `None` if the map has no
    /// owner for it (a slot being migrated, or a map not fetched yet).
    pub(crate) fn primary(&self, slot: u16) -> Option<&str> {
        self.slots
            .iter()
            .find(|(first, last, _)| (*first..=*last).contains(&slot))
            .map(|(_, _, addr)| addr.as_str())
    }

    /// The plain connection to the primary at `addr` ("host:port"), made
    /// within what is left until `deadline` if there is none yet.
    fn node(&mut self, addr: &str, deadline: Instant) -> RedisResult<&mut Node> {
        if !self.nodes.contains_key(addr) {
            let (host, port) = addr
                .rsplit_once(':')
                .and_then(|(host, port)| Some((host, port.parse::<u16>().ok()?)))
                .ok_or_else(|| {
                    redis::RedisError::from((
                        redis::ErrorKind::Client,
                        "cluster node address",
                        addr.to_owned(),
                    ))
                })?;
            let info = node_info(&self.seed, host, port);
            let conn = Node::connect(&info, self.timeout, deadline)?;
            self.nodes.insert(addr.to_owned(), conn);
        }
        Ok(self.nodes.get_mut(addr).expect("inserted above"))
    }

    /// The primary serving `slot` by our map, else any: a node that does not
    /// serve it says which does (`MOVED`).
    fn route(&self, slot: u16) -> RedisResult<String> {
        self.primary(slot)
            .or_else(|| self.slots.first().map(|(_, _, addr)| addr.as_str()))
            .map(str::to_owned)
            .ok_or_else(|| {
                redis::RedisError::from((
                    redis::ErrorKind::ClusterConnectionNotFound,
                    "the cluster's slot map names no primary",
                ))
            })
    }

    pub(crate) fn refresh_slots(&mut self) -> RedisResult<()> {
        self.slots = slot_map(&mut self.conn)?;
        Ok(())
    }

    /// The distinct primaries, as (host, port).
    pub(crate) fn primaries(&mut self) -> RedisResult<Vec<(String, u16)>> {
        self.refresh_slots()?;
        let mut primaries: Vec<(String, u16)> = Vec::new();
        for (_, _, addr) in &self.slots {
            let Some((host, port)) = addr.rsplit_once(':') else {
                continue;
            };
            let node = (host.to_owned(), port.parse().unwrap_or(0));
            if !primaries.contains(&node) {
                primaries.push(node);
            }
        }
        Ok(primaries)
    }
}

/// Where a call of a batch goes next, and what must precede it there.
#[derive(Debug, Clone)]
struct Hop {
    node: String,
    /// After `ASK`: the node serves the slot to a command after `ASKING`.
    asking: bool,
    /// After `NOSCRIPT`: the script is loaded there first.
    load: bool,
}

/// Replies to each of `calls`, in order, each decided at most once, all by
/// `deadline`: one pipeline per primary per round, following `MOVED`, `ASK`
/// and `NOSCRIPT` (and `TRYAGAIN`) in further rounds. A call still
/// redirected after the last round keeps the redirect as its reply; one
/// left when the deadline passes, or whose node failed, gets that error.
pub(crate) fn run(
    link: &mut ClusterLink,
    calls: &[ScriptCall<'_>],
    deadline: Instant,
) -> RedisResult<Vec<RedisResult<Value>>> {
    if link.slots.is_empty() {
        link.refresh_slots()?;
    }
    let mut replies: Vec<Option<RedisResult<Value>>> = vec![None; calls.len()];
    let mut pending = Vec::with_capacity(calls.len());
    for (i, call) in calls.iter().enumerate() {
        let node = link.route(slot(call.key().as_bytes()))?;
        pending.push((
            i,
            Hop {
                node,
                asking: false,
                load: false,
            },
        ));
    }
    let mut moved = false;
    for _ in 0..MAX_ROUNDS {
        if pending.is_empty() || Instant::now() >= deadline {
            break;
        }
        let mut next = Vec::new();
        for (node, group) in by_node(std::mem::take(&mut pending)) {
            let answered = round(link, &node, &group, calls, deadline);
            for ((i, hop), reply) in group.into_iter().zip(answered) {
                if let Some(again) = reply.as_ref().ok().and_then(|v| redirect(v, &hop)) {
                    moved |= !again.asking && again.node != hop.node;
                    next.push((i, again));
                }
                replies[i] = Some(reply);
            }
        }
        pending = next;
    }
    if moved {
        // The next batch reads the map anew.
        link.slots.clear();
    }
    if Instant::now() >= deadline {
        for (i, _) in pending {
            replies[i] = Some(Err(timed_out()));
        }
    }
    Ok(replies
        .into_iter()
        .map(|reply| reply.unwrap_or_else(|| Err(timed_out())))
        .collect())
}

/// The calls grouped by the node they go to, in order of first appearance.
#[allow(clippy::type_complexity)]
fn by_node(calls: Vec<(usize, Hop)>) -> Vec<(String, Vec<(usize, Hop)>)> {
    let mut groups: Vec<(String, Vec<(usize, Hop)>)> = Vec::new();
    for (i, hop) in calls {
        match groups.iter_mut().find(|(node, _)| *node == hop.node) {
            Some((_, group)) => group.push((i, hop)),
            None => groups.push((hop.node.clone(), vec![(i, hop)])),
        }
    }
    groups
}

/// Sends `group` to `node` as one pipeline, each call after what its hop
/// needs first, and reads a reply per call. When the node fails, or time
/// runs out, the calls not answered get that error, and the connection
/// (maybe with replies unread) is dropped.
fn round(
    link: &mut ClusterLink,
    node: &str,
    group: &[(usize, Hop)],
    calls: &[ScriptCall<'_>],
    deadline: Instant,
) -> Vec<RedisResult<Value>> {
    let mut packed = Vec::new();
    for (i, hop) in group {
        if hop.load {
            calls[*i]
                .script
                .load_cmd()
                .write_packed_command(&mut packed);
        }
        if hop.asking {
            redis::cmd("ASKING").write_packed_command(&mut packed);
        }
        calls[*i].cmd.write_packed_command(&mut packed);
    }
    let mut replies = Vec::with_capacity(group.len());
    let sent = link.node(node, deadline).and_then(|conn| {
        conn.within(deadline, |conn| {
            conn.send_packed_command(&packed)?;
            for (_, hop) in group {
                // What went before the call answers first; the call's own
                // reply tells whether that worked.
                for _ in 0..(hop.load as usize + hop.asking as usize) {
                    conn.recv_response()?;
                }
                replies.push(Ok(conn.recv_response()?));
            }
            Ok(())
        })
    });
    if let Err(err) = sent {
        link.nodes.remove(node);
        replies.resize(group.len(), Err(err));
    }
    replies
}

/// Where a call that answered `value` goes next, if the answer says it did
/// not run: to the node a `MOVED` or `ASK` names, or again where it went
/// after loading the script (`NOSCRIPT`) or at once (`TRYAGAIN`).
fn redirect(value: &Value, hop: &Hop) -> Option<Hop> {
    let Value::ServerError(err) = value else {
        return None;
    };
    match err.kind()? {
        kind @ (ServerErrorKind::Moved | ServerErrorKind::Ask) => {
            let err = value.clone().extract_error().err()?;
            let (addr, _slot) = err.redirect_node()?;
            // An empty host means the one that answered.
            let node = match addr.strip_prefix(':') {
                Some(port) => format!("{}:{port}", hop.node.rsplit_once(':')?.0),
                None => addr.to_owned(),
            };
            Some(Hop {
                node,
                asking: kind == ServerErrorKind::Ask,
                load: false,
            })
        }
        ServerErrorKind::NoScript => Some(Hop {
            load: true,
            ..hop.clone()
        }),
        ServerErrorKind::TryAgain => Some(hop.clone()),
        _ => None,
    }
}

/// The seed's settings (credentials, TLS) for another node.
fn node_info(seed: &ConnectionInfo, host: &str, port: u16) -> ConnectionInfo {
    let addr = match seed.addr() {
        ConnectionAddr::TcpTls {
            insecure,
            tls_params,
            ..
        } => ConnectionAddr::TcpTls {
            host: host.to_owned(),
            port,
            insecure: *insecure,
            tls_params: tls_params.clone(),
        },
        _ => ConnectionAddr::Tcp(host.to_owned(), port),
    };
    seed.clone().set_addr(addr)
}

fn slot_map(conn: &mut redis::cluster::ClusterConnection) -> RedisResult<Vec<(u16, u16, String)>> {
    let ranges: Vec<Vec<Value>> = redis::cmd("CLUSTER").arg("SLOTS").query(conn)?;
    let mut map = Vec::with_capacity(ranges.len());
    for range in ranges {
        if range.len() < 3 {
            continue;
        }
        let first: u16 = redis::from_redis_value(range[0].clone())?;
        let last: u16 = redis::from_redis_value(range[1].clone())?;
        let node: Vec<Value> = redis::from_redis_value(range[2].clone())?;
        if node.len() < 2 {
            continue;
        }
        let host: String = redis::from_redis_value(node[0].clone())?;
        let port: u16 = redis::from_redis_value(node[1].clone())?;
        map.push((first, last, format!("{host}:{port}")));
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis() {
        // Values from CLUSTER KEYSLOT.
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"123456789"), 12739);
        assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
        // An empty tag does not count: the whole key is hashed.
        assert_eq!(slot(b"{}foo"), crc16(b"{}foo") % 16384);
        assert_ne!(slot(b"{}foo"), slot(b"foo"));
    }
}
