//! What a batch needs on a cluster: which primary serves a key, and a plain
//! connection to it.
//!
//! The redis crate's cluster connection fails a multi-command send as a whole
//! when any reply in it is an error (`NOSCRIPT`, `MOVED`), losing the replies
//! of the calls that did run: a retry would decide them twice. So a batch is
//! split here by primary, by our own slot map, and each part goes as one
//! pipeline over a plain connection to that node, where every reply, error or
//! not, is kept. Single calls keep using the cluster connection, which
//! follows redirects.

use redis::{Client, Connection, ConnectionAddr, ConnectionInfo, RedisResult, Value};

use crate::connection::ClusterLink;

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

    /// The plain connection to the primary at `addr` ("host:port").
    pub(crate) fn node(&mut self, addr: &str) -> RedisResult<&mut Connection> {
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
            let conn = Client::open(info)?.get_connection_with_timeout(self.timeout)?;
            conn.set_read_timeout(Some(self.timeout))?;
            conn.set_write_timeout(Some(self.timeout))?;
            self.nodes.insert(addr.to_owned(), conn);
        }
        Ok(self.nodes.get_mut(addr).expect("inserted above"))
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
