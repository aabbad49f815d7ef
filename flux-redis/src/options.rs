//! Where Redis is and how to talk to it.

use std::fmt;
use std::time::Duration;

use flux_core::config::RedisConfig;
use redis::{ConnectionInfo, IntoConnectionInfo};

use crate::RedisError;

/// How to reach Redis: a URL, or host/port/db and credentials; how many
/// connections to keep; how long any call may take; single node or cluster.
///
/// URLs: `redis://[user[:password]@]host[:port][/db]`, `rediss://` for TLS,
/// `redis+unix:///path/to.sock`, and for Redis Cluster
/// `redis+cluster://[user[:password]@]host:port[,host:port...]` (or
/// `rediss+cluster://`) naming one or more seed nodes. When `url` is set it is
/// the whole address and `host`, `port`, `db`, `username` and `password` are
/// not used.
///
/// ```
/// use flux_redis::RedisOptions;
/// let options = RedisOptions::from_url("redis+cluster://10.0.0.1:7000,10.0.0.2:7000");
/// assert!(options.is_cluster());
/// assert!(!RedisOptions::default().is_cluster());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct RedisOptions {
    pub url: Option<String>,
    pub host: String,
    pub port: u16,
    pub db: i64,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Connections kept open (r2d2 pool size); at least 1.
    pub pool_size: u32,
    /// Bound on connecting, on waiting for a pooled connection, and on each
    /// reply, in milliseconds; at least 1.
    pub timeout_ms: u64,
    /// Talk to a Redis Cluster (also implied by a `redis+cluster://` URL).
    pub cluster: bool,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            url: None,
            host: "127.0.0.1".to_owned(),
            port: 6379,
            db: 0,
            username: None,
            password: None,
            pool_size: 5,
            timeout_ms: 200,
            cluster: false,
        }
    }
}

// Hand-written so a password never reaches a log line.
impl fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisOptions")
            .field("url", &self.url.as_deref().map(redact_url))
            .field("host", &self.host)
            .field("port", &self.port)
            .field("db", &self.db)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("pool_size", &self.pool_size)
            .field("timeout_ms", &self.timeout_ms)
            .field("cluster", &self.cluster)
            .finish()
    }
}

/// The `[redis]` table of flux.toml.
impl From<&RedisConfig> for RedisOptions {
    fn from(config: &RedisConfig) -> Self {
        RedisOptions {
            url: config.url.clone(),
            host: config.host.clone(),
            port: config.port,
            db: i64::from(config.db),
            username: config.username.clone(),
            password: config.password.clone(),
            pool_size: config.pool_size,
            timeout_ms: config.timeout_ms,
            cluster: config.is_cluster(),
        }
    }
}

const CLUSTER_SCHEMES: [(&str, &str); 2] = [
    ("redis+cluster://", "redis://"),
    ("rediss+cluster://", "rediss://"),
];

/// What the options resolve to: one server, or a cluster's seed nodes.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    Single(Box<ConnectionInfo>),
    Cluster(Vec<ConnectionInfo>),
}

impl RedisOptions {
    pub fn from_url(url: impl Into<String>) -> Self {
        RedisOptions {
            url: Some(url.into()),
            ..RedisOptions::default()
        }
    }

    pub fn host_port(host: impl Into<String>, port: u16) -> Self {
        RedisOptions {
            host: host.into(),
            port,
            ..RedisOptions::default()
        }
    }

    pub fn is_cluster(&self) -> bool {
        self.cluster
            || self.url.as_deref().is_some_and(|url| {
                CLUSTER_SCHEMES
                    .iter()
                    .any(|(scheme, _)| url.starts_with(scheme))
            })
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// The URL these options connect to, with the password hidden: for messages.
    pub fn display_url(&self) -> String {
        redact_url(&self.url.clone().unwrap_or_else(|| self.compose_url()))
    }

    fn compose_url(&self) -> String {
        let mut url = String::from("redis://");
        if self.username.is_some() || self.password.is_some() {
            if let Some(user) = &self.username {
                url.push_str(&percent_encode(user));
            }
            if let Some(password) = &self.password {
                url.push(':');
                url.push_str(&percent_encode(password));
            }
            url.push('@');
        }
        if self.host.contains(':') {
            // An IPv6 address.
            url.push_str(&format!("[{}]", self.host));
        } else {
            url.push_str(&self.host);
        }
        url.push_str(&format!(":{}/{}", self.port, self.db));
        url
    }

    pub(crate) fn target(&self) -> Result<Target, RedisError> {
        if self.pool_size == 0 {
            return Err(RedisError::Config(
                "pool_size must be at least 1, got 0".into(),
            ));
        }
        if self.timeout_ms == 0 {
            return Err(RedisError::Config(
                "timeout_ms must be at least 1 (milliseconds), got 0".into(),
            ));
        }
        let url = self.url.clone().unwrap_or_else(|| self.compose_url());
        if !self.is_cluster() {
            return Ok(Target::Single(Box::new(parse(&url)?)));
        }
        let (base, nodes) = match CLUSTER_SCHEMES
            .iter()
            .find_map(|(cluster, plain)| url.strip_prefix(cluster).map(|rest| (*plain, rest)))
        {
            Some(split) => split,
            None => match url.split_once("://") {
                Some(("redis", rest)) => ("redis://", rest),
                Some(("rediss", rest)) => ("rediss://", rest),
                _ => {
                    return Err(RedisError::Config(format!(
                        "a Redis Cluster is reached over TCP: use redis+cluster://host:port[,host:port...], got {}",
                        redact_url(&url)
                    )))
                }
            },
        };
        // user:password@ applies to every seed node; the path (a db) is not allowed.
        let (auth, hosts) = match nodes.rsplit_once('@') {
            Some((auth, hosts)) => (format!("{auth}@"), hosts),
            None => (String::new(), nodes),
        };
        let hosts = hosts.trim_end_matches('/');
        if hosts.contains('/') {
            return Err(RedisError::Config(format!(
                "Redis Cluster has only database 0: leave the /db out of {}",
                redact_url(&url)
            )));
        }
        let infos = hosts
            .split(',')
            .filter(|h| !h.is_empty())
            .map(|host| parse(&format!("{base}{auth}{host}")))
            .collect::<Result<Vec<_>, _>>()?;
        if infos.is_empty() {
            return Err(RedisError::Config(format!(
                "no cluster node in {}",
                redact_url(&url)
            )));
        }
        if infos.iter().any(|info| info.redis_settings().db() != 0) || self.db != 0 {
            return Err(RedisError::Config(
                "Redis Cluster has only database 0: db must be 0".into(),
            ));
        }
        Ok(Target::Cluster(infos))
    }
}

fn parse(url: &str) -> Result<ConnectionInfo, RedisError> {
    url.into_connection_info().map_err(|e| {
        RedisError::Config(format!(
            "cannot use Redis URL {}: {e} (expected redis://[user[:password]@]host[:port][/db], \
             rediss:// for TLS, or redis+cluster://host:port[,host:port...])",
            redact_url(url)
        ))
    })
}

/// `scheme://user:secret@host` -> `scheme://user:***@host`.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.rsplit_once('@') {
        Some((auth, host)) => {
            let user = auth.split_once(':').map_or(auth, |(user, _)| user);
            let hidden = if auth.contains(':') { ":***" } else { "" };
            format!("{scheme}://{user}{hidden}@{host}")
        }
        None => url.to_owned(),
    }
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for byte in s.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_and_credentials_become_a_url() {
        let options = RedisOptions {
            username: Some("app".into()),
            password: Some("s3cret@p:ss".into()),
            db: 3,
            ..RedisOptions::host_port("redis.internal", 6380)
        };
        assert_eq!(
            options.compose_url(),
            "redis://app:s3cret%40p%3Ass@redis.internal:6380/3"
        );
        let Target::Single(info) = options.target().unwrap() else {
            panic!("not a cluster")
        };
        assert_eq!(info.redis_settings().password(), Some("s3cret@p:ss"));
        assert_eq!(info.redis_settings().db(), 3);
        assert_eq!(
            options.display_url(),
            "redis://app:***@redis.internal:6380/3"
        );
        assert!(!format!("{options:?}").contains("s3cret"));
    }

    #[test]
    fn cluster_urls_name_every_seed_node() {
        let options =
            RedisOptions::from_url("redis+cluster://:secret@127.0.0.1:7000,127.0.0.1:7001/");
        let Target::Cluster(nodes) = options.target().unwrap() else {
            panic!("a cluster")
        };
        assert_eq!(nodes.len(), 2);
        assert!(nodes
            .iter()
            .all(|n| n.redis_settings().password() == Some("secret")));

        let flag = RedisOptions {
            cluster: true,
            ..RedisOptions::from_url("redis://127.0.0.1:7000")
        };
        assert!(matches!(flag.target().unwrap(), Target::Cluster(n) if n.len() == 1));

        let db = RedisOptions::from_url("redis+cluster://127.0.0.1:7000/2");
        assert!(db.target().unwrap_err().to_string().contains("database 0"));
    }

    #[test]
    fn the_redis_table_of_flux_toml_converts() {
        let config = RedisConfig {
            url: Some("redis+cluster://127.0.0.1:7000,127.0.0.1:7001".into()),
            pool_size: 8,
            timeout_ms: 50,
            ..RedisConfig::default()
        };
        let options = RedisOptions::from(&config);
        assert!(options.is_cluster());
        assert_eq!((options.pool_size, options.timeout_ms), (8, 50));
        assert!(matches!(options.target().unwrap(), Target::Cluster(n) if n.len() == 2));
    }

    #[test]
    fn bad_options_are_config_errors() {
        let e = RedisOptions::from_url("http://localhost")
            .target()
            .unwrap_err();
        assert!(matches!(e, RedisError::Config(_)), "{e}");
        let e = RedisOptions {
            pool_size: 0,
            ..RedisOptions::default()
        }
        .target()
        .unwrap_err();
        assert!(e.to_string().contains("pool_size"), "{e}");
    }
}
