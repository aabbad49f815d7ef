//! Replies read off a connection, in RESP2 (Flux never asks for RESP3).
//!
//! The redis crate's [`redis::Parser`] reads any reply of either protocol
//! through a general parser combinator; a decision's reply is one array of
//! small integers, and reading it that way was most of what Flux's own code
//! cost a request on Redis (measured end to end: 5 of its 9 µs of CPU, its
//! code run with caches other requests had emptied). So the replies are
//! read here: simple strings, integers, bulk strings and arrays as the crate
//! makes them ([`Value::Okay`] for `+OK`), error replies through the crate
//! itself, so that every error keeps the kind the crate gives it.

use std::io::Read;

use redis::{ErrorKind, RedisResult, Value};

/// Arrays nest no deeper than this (as the crate's parser).
const MAX_DEPTH: usize = 100;
/// Bytes read at a time; a decision's reply is some 40.
const READ_SIZE: usize = 16 * 1024;

/// The bytes read off one connection and not yet taken as replies.
#[derive(Default)]
pub(crate) struct Replies {
    /// Read into from `end` on; grown only for a reply that does not fit.
    buf: Vec<u8>,
    /// The unread bytes are `buf[start..end]`.
    start: usize,
    end: usize,
}

impl Replies {
    /// The next whole reply, reading `io` until it has come.
    pub(crate) fn next(&mut self, io: &mut dyn Read) -> RedisResult<Value> {
        loop {
            if let Some((value, used)) = parse(&self.buf[self.start..self.end], 0)? {
                self.start += used;
                if self.start == self.end {
                    (self.start, self.end) = (0, 0);
                }
                return Ok(value);
            }
            self.fill(io)?;
        }
    }

    fn fill(&mut self, io: &mut dyn Read) -> RedisResult<()> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        if self.end == self.buf.len() {
            self.buf.resize((2 * self.buf.len()).max(READ_SIZE), 0);
        }
        match io.read(&mut self.buf[self.end..])? {
            0 => Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into()),
            read => {
                self.end += read;
                Ok(())
            }
        }
    }
}

/// The reply at the start of `bytes` and how many bytes it takes; None
/// when it has not all come yet.
fn parse(bytes: &[u8], depth: usize) -> RedisResult<Option<(Value, usize)>> {
    let Some((&kind, rest)) = bytes.split_first() else {
        return Ok(None);
    };
    let Some(end) = rest.windows(2).position(|pair| pair == b"\r\n") else {
        return Ok(None);
    };
    let line = &rest[..end];
    let next = 1 + end + 2;
    let value = match kind {
        b'+' => match std::str::from_utf8(line) {
            Ok("OK") => Value::Okay,
            Ok(text) => Value::SimpleString(text.to_owned()),
            Err(_) => return Err(garbage("a simple string that is not UTF-8")),
        },
        b':' => Value::Int(integer(line)?),
        b'$' => {
            let Ok(size) = usize::try_from(integer(line)?) else {
                return Ok(Some((Value::Nil, next)));
            };
            let Some(body) = bytes.get(next..next + size + 2) else {
                return Ok(None);
            };
            if &body[size..] != b"\r\n" {
                return Err(garbage("a bulk string longer than its length"));
            }
            return Ok(Some((
                Value::BulkString(body[..size].to_vec()),
                next + size + 2,
            )));
        }
        b'*' => {
            let Ok(count) = usize::try_from(integer(line)?) else {
                return Ok(Some((Value::Nil, next)));
            };
            if depth >= MAX_DEPTH {
                return Err(garbage("arrays nested too deep"));
            }
            let mut items = Vec::with_capacity(count.min(1024));
            let mut at = next;
            for _ in 0..count {
                let Some((item, used)) = parse(&bytes[at..], depth + 1)? else {
                    return Ok(None);
                };
                items.push(item);
                at += used;
            }
            return Ok(Some((Value::Array(items), at)));
        }
        // An error reply, in the crate's own words and kinds.
        b'-' => redis::parse_redis_value(&bytes[..next])?,
        _ => return Err(garbage("a reply of a type RESP2 does not have")),
    };
    Ok(Some((value, next)))
}

fn integer(line: &[u8]) -> RedisResult<i64> {
    let (negative, digits) = match line.split_first() {
        Some((b'-', digits)) => (true, digits),
        _ => (false, line),
    };
    let mut value: i64 = 0;
    for &digit in digits {
        if !digit.is_ascii_digit() || digits.len() > 18 {
            // Long, padded or not a number: as the crate reads it.
            return std::str::from_utf8(line)
                .ok()
                .and_then(|text| text.trim().parse().ok())
                .ok_or_else(|| garbage("expected an integer"));
        }
        value = value * 10 + i64::from(digit - b'0');
    }
    if digits.is_empty() {
        return Err(garbage("expected an integer"));
    }
    Ok(if negative { -value } else { value })
}

fn garbage(what: &'static str) -> redis::RedisError {
    (
        ErrorKind::Parse,
        "Redis sent a reply Flux cannot read",
        what.to_owned(),
    )
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the crate's parser makes of `bytes`, and what ours does.
    fn both(bytes: &[u8]) -> (Value, Value) {
        let theirs = redis::parse_redis_value(bytes).unwrap();
        let mut replies = Replies::default();
        let ours = replies.next(&mut &bytes[..]).unwrap();
        assert_eq!(replies.end, 0, "every byte of {bytes:?} taken");
        (theirs, ours)
    }

    #[test]
    fn every_reply_a_decision_or_a_set_up_gets_is_read_as_the_crate_reads_it() {
        for bytes in [
            &b"+OK\r\n"[..],
            b"+PONG\r\n",
            b":0\r\n",
            b":-1\r\n",
            b":9223372036854775807\r\n",
            b":-9223372036854775808\r\n",
            b": 12 \r\n",
            b"$5\r\nhello\r\n",
            b"$0\r\n\r\n",
            b"$-1\r\n",
            b"$4\r\na\r\nb\r\n",
            b"*-1\r\n",
            b"*0\r\n",
            b"*6\r\n:1\r\n:0\r\n:999999\r\n:60\r\n:0\r\n:0\r\n",
            b"*2\r\n$1\r\n0\r\n*3\r\n$3\r\nk:1\r\n$3\r\nk:2\r\n$-1\r\n",
            b"*2\r\n:1\r\n-ERR inner\r\n",
        ] {
            let (theirs, ours) = both(bytes);
            assert_eq!(ours, theirs, "{}", String::from_utf8_lossy(bytes));
        }
    }

    #[test]
    fn error_replies_keep_the_crate_s_kinds() {
        for bytes in [
            &b"-NOSCRIPT No matching script\r\n"[..],
            b"-BUSY Redis is busy running a script\r\n",
            b"-OOM command not allowed when used memory > 'maxmemory'.\r\n",
            b"-READONLY You can't write against a read only replica.\r\n",
            b"-MOVED 3999 127.0.0.1:6381\r\n",
            b"-WRONGPASS invalid username-password pair\r\n",
        ] {
            let (theirs, ours) = both(bytes);
            assert_eq!(ours, theirs);
            let (theirs, ours) = (theirs.extract_error(), ours.extract_error());
            assert_eq!(ours.unwrap_err().kind(), theirs.unwrap_err().kind());
        }
    }

    #[test]
    fn a_reply_split_across_reads_is_waited_for_and_replies_in_one_read_are_kept() {
        /// Hands out one byte per read.
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let Some((&first, rest)) = self.0.split_first() else {
                    return Ok(0);
                };
                buf[0] = first;
                self.0 = rest;
                Ok(1)
            }
        }
        let wire = b"*3\r\n:1\r\n$2\r\nab\r\n+OK\r\n:7\r\n$-1\r\n";
        let mut replies = Replies::default();
        let mut trickle = Trickle(wire);
        let first = replies.next(&mut trickle).unwrap();
        assert_eq!(
            first,
            Value::Array(vec![
                Value::Int(1),
                Value::BulkString(b"ab".to_vec()),
                Value::Okay
            ])
        );
        assert_eq!(replies.next(&mut trickle).unwrap(), Value::Int(7));
        assert_eq!(replies.next(&mut trickle).unwrap(), Value::Nil);

        let mut whole = &wire[..];
        let mut replies = Replies::default();
        let read: Vec<Value> = (0..3).map(|_| replies.next(&mut whole).unwrap()).collect();
        assert_eq!(read, [first, Value::Int(7), Value::Nil]);
    }

    #[test]
    fn a_reply_larger_than_one_read_grows_the_buffer() {
        let body = vec![b'x'; 3 * READ_SIZE + 5];
        let mut wire = format!("${}\r\n", body.len()).into_bytes();
        wire.extend_from_slice(&body);
        wire.extend_from_slice(b"\r\n:1\r\n");
        let mut replies = Replies::default();
        let mut io = &wire[..];
        assert_eq!(replies.next(&mut io).unwrap(), Value::BulkString(body));
        assert_eq!(replies.next(&mut io).unwrap(), Value::Int(1));
    }

    #[test]
    fn a_connection_closed_mid_reply_or_a_reply_that_cannot_be_read_is_an_error() {
        let mut replies = Replies::default();
        let closed = replies.next(&mut &b"*2\r\n:1\r\n"[..]).unwrap_err();
        assert!(closed.is_io_error(), "{closed:?}");
        for bytes in [
            &b":x\r\n"[..],
            b"$2\r\nabc\r\n",
            b"%1\r\n:1\r\n:2\r\n",
            b"+\xff\r\n",
        ] {
            let err = Replies::default().next(&mut &bytes[..]).unwrap_err();
            assert_eq!(
                err.kind(),
                ErrorKind::Parse,
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
    }
}
