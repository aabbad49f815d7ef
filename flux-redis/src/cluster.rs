//! What a batch needs to know about a cluster: which primary serves a key.
//!
//! The redis crate's cluster pipeline fails as a whole when any command in it
//! gets an error reply, losing the replies of the calls that did run, and a
//! `NOSCRIPT` from one node must not cost the decisions made on the others.
//! So a batch is split here by primary, each part sent as one plain pipeline
//! to that node, and every reply, error or not, is kept.

use redis::{RedisResult, Value};

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
