//! The words of configuration errors: what each key accepts, how a key
//! path is written, and how a Redis URL is shown without its password.

use std::fmt::Write as _;
use std::ops::Range;

use crate::Policy;

/// The keys of a limit table, for the message when one is not a table.
pub(super) const LIMIT_KEYS: &str = "policy, rate, requests, period, burst, max_wait, shadow";

/// "unknown field `x`, expected one of `a`, `b`" from serde, said for a config file.
pub(super) fn unknown_key(path: &[&str], raw: &str) -> String {
    let allowed = raw
        .split_once(", expected ")
        .map(|(_, list)| list.trim_start_matches("one of ").replace('`', ""));
    match (path, allowed) {
        ([_], Some(_)) => "unknown section; flux.toml has [redis], [flux], [analytics], \
                           [rate_limit], [rate_limits.NAME] and [http]"
            .to_owned(),
        ([.., _], Some(allowed)) => {
            let table = dotted(&path[..path.len() - 1]);
            format!("unknown key; [{table}] allows {allowed}")
        }
        _ => raw.to_owned(),
    }
}

/// What the key at `path` accepts, in the words of an error message.
pub(super) fn expected(path: &[&str]) -> Option<String> {
    let (section, key) = match path {
        ["rate_limits"] => {
            return Some("a table of named limits, as in [rate_limits.login]".into())
        }
        [_] => return Some("a table".into()),
        ["rate_limits", _] => return Some(format!("a table of {LIMIT_KEYS}")),
        ["http", "rules"] => {
            return Some(
                "a table of path patterns, as in [http.rules] \"/login\" = \"5/minute\"".into(),
            )
        }
        ["http", "rules", _] => return Some(super::http::RULE_VALUE.into()),
        ["rate_limits", _, key] => ("rate_limit", *key),
        [section, key] => (*section, *key),
        _ => return None,
    };
    let words = match (section, key) {
        ("redis", "url") => return Some(expected_url()),
        ("redis" | "analytics", "host") => "a host name or IP address in quotes",
        ("redis" | "analytics", "port") => "a port number from 1 to 65535",
        ("redis", "db") => "a database number of at least 0",
        ("redis", "username" | "password" | "sentinel_username" | "sentinel_password") => {
            "a string"
        }
        ("redis", "pool_size") => "a whole number of connections of at least 1",
        ("redis", "timeout_ms") => "a whole number of milliseconds of at least 1",
        ("redis", "sentinel") => "a list of \"host:port\" addresses of sentinels",
        ("redis", "master_name") => "the master's name in quotes",
        ("flux", "storage") => "\"memory\" or \"redis\"",
        ("flux", "key_prefix") | ("analytics", "stream") => "a string",
        ("flux", "log_file") => "a file path in quotes",
        ("flux", "jitter_max_ms") => "a whole number of milliseconds of at least 0",
        ("flux", "ipv6_prefix") => "a prefix length from 1 to 128",
        ("flux", "local_cache_size") => {
            "a whole number of entries of at least 0 (0 turns the local deny cache off)"
        }
        ("analytics", "retention") => "a whole number of events of at least 1",
        ("analytics", "sample_rate") => "a number from 0.0 to 1.0",
        ("rate_limit", "policy") => return Some(format!("one of {}", Policy::allowed_names())),
        ("http", "name") => "the name of a limit under [rate_limits], in quotes",
        ("rate_limit" | "http", "rate") => {
            "a rate in quotes, as in \"10/second\", \"100 per minute\" or \"10/second;1000/day\""
        }
        ("rate_limit", "requests") => "a whole number of at least 1",
        ("rate_limit", "period") => "a number of seconds greater than 0",
        ("rate_limit", "burst") => "a whole number of at least 1",
        ("rate_limit", "max_wait") => "a number of seconds of at least 0",
        (
            _,
            "cluster" | "fail_silently" | "console_logging" | "jitter_enabled" | "enabled"
            | "shadow",
        ) => "true or false",
        _ => return None,
    };
    Some(words.to_owned())
}

const URL_SCHEMES: [&str; 8] = [
    "redis",
    "rediss",
    "redis+cluster",
    "rediss+cluster",
    "redis+sentinel",
    "rediss+sentinel",
    "redis+unix",
    "unix",
];

pub(super) fn expected_url() -> String {
    let schemes: Vec<_> = URL_SCHEMES.iter().map(|s| format!("{s}://")).collect();
    format!("a URL starting with {}", schemes.join(", "))
}

pub(super) fn has_redis_scheme(url: &str) -> bool {
    url.split_once("://")
        .is_some_and(|(scheme, _)| URL_SCHEMES.iter().any(|s| s.eq_ignore_ascii_case(scheme)))
}

pub(super) fn strip_suffix_ignore_case<'s>(s: &'s str, suffix: &str) -> Option<&'s str> {
    let cut = s.len().checked_sub(suffix.len())?;
    (s.is_char_boundary(cut) && s[cut..].eq_ignore_ascii_case(suffix)).then(|| &s[..cut])
}

/// Percent-encodes all but RFC 3986's unreserved characters, so any
/// username or password survives inside a URL.
pub(super) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for byte in s.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// Hides the passwords in a Redis URL, for messages and debug output:
/// `scheme://user:secret@host/0` -> `scheme://user:***@host/0`, and
/// everything after a `pass=` or `password=` query parameter (how a
/// `unix://` URL carries it) -> `?db=1&pass=***`.
///
/// Passwords are often written into URLs unencoded, so the userinfo is
/// taken to end at the *last* `@`, wherever a `/`, `?`, `#` or `:` in the
/// password puts the URL's other delimiters, and everything after its first
/// `:` is hidden. When the two rules overlap, the union is hidden: a message
/// may show less of the address, never part of a password. A URL without
/// `://` (a mistake worth a message) is redacted the same way.
pub fn redact_url(url: &str) -> String {
    let rest_at = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[rest_at..];
    let mut hidden: Vec<Range<usize>> = Vec::new();
    if let Some(at) = rest.rfind('@') {
        if let Some(colon) = rest[..at].find(':') {
            hidden.push(rest_at + colon + 1..rest_at + at);
        }
    }
    let lower = rest.to_ascii_lowercase();
    let query_password = ["?pass=", "&pass=", "?password=", "&password="]
        .iter()
        .filter_map(|marker| lower.find(marker).map(|i| i + marker.len()))
        .min();
    if let Some(value) = query_password {
        hidden.push(rest_at + value..url.len());
    }
    hidden.sort_by_key(|range| range.start);
    let mut out = String::with_capacity(url.len());
    let mut shown_from = 0;
    for range in hidden {
        if range.end <= shown_from {
            continue;
        }
        // An overlapping range continues the `***` already written.
        if range.start >= shown_from {
            out.push_str(&url[shown_from..range.start]);
            out.push_str("***");
        }
        shown_from = range.end;
    }
    out.push_str(&url[shown_from..]);
    out
}

/// A key path as TOML writes it, quoting names that are not bare keys.
pub(super) fn dotted(path: &[&str]) -> String {
    let parts: Vec<_> = path
        .iter()
        .map(|name| {
            let bare = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if bare {
                (*name).to_owned()
            } else {
                format!("{name:?}")
            }
        })
        .collect();
    parts.join(".")
}

/// The 1-based line of a byte offset.
pub(super) fn line_at(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}
