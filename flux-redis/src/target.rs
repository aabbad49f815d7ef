//! Where Redis is: the `[redis]` table of flux.toml resolved to the nodes to
//! connect to.
//!
//! Reached by URL: `redis://[user[:password]@]host[:port][/db]`, `rediss://`
//! for TLS, `redis+unix:///path/to.sock`, and for Redis Cluster
//! `redis+cluster://[user[:password]@]host:port[,host:port...]` (or
//! `rediss+cluster://`) naming one or more seed nodes; or by host, port, db
//! and credentials ([`RedisConfig::url`] composes those into a URL).

use flux_core::config::{redact_url, RedisConfig};
use redis::{ConnectionInfo, IntoConnectionInfo};

use crate::RedisError;

/// What a `[redis]` table resolves to: one server, or a cluster's seed nodes.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    Single(Box<ConnectionInfo>),
    Cluster(Vec<ConnectionInfo>),
}

/// The server, or a cluster's seed nodes, that `config` names. Checks what
/// a config built in code may have skipped (pool size and timeout of 0).
pub(crate) fn resolve(config: &RedisConfig) -> Result<Target, RedisError> {
    if config.pool_size == 0 {
        return Err(RedisError::Config(
            "pool_size must be at least 1, got 0".into(),
        ));
    }
    if config.timeout_ms == 0 {
        return Err(RedisError::Config(
            "timeout_ms must be at least 1 (milliseconds), got 0".into(),
        ));
    }
    // The URL with any `+cluster` taken off its scheme.
    let url = config.url();
    if !config.is_cluster() {
        return Ok(Target::Single(Box::new(parse(&url)?)));
    }
    let (base, nodes) = match url.split_once("://") {
        Some(("redis", rest)) => ("redis://", rest),
        Some(("rediss", rest)) => ("rediss://", rest),
        _ => {
            return Err(RedisError::Config(format!(
                "a Redis Cluster is reached over TCP: use redis+cluster://host:port[,host:port...], got {}",
                redact_url(&url)
            )))
        }
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
    if infos.iter().any(|info| info.redis_settings().db() != 0) || config.db != 0 {
        return Err(RedisError::Config(
            "Redis Cluster has only database 0: db must be 0".into(),
        ));
    }
    Ok(Target::Cluster(infos))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_and_credentials_become_a_url() {
        let config = RedisConfig {
            username: Some("app".into()),
            password: Some("s3cret@p:ss".into()),
            db: 3,
            ..RedisConfig::host_port("redis.internal", 6380)
        };
        assert_eq!(
            config.url(),
            "redis://app:s3cret%40p%3Ass@redis.internal:6380/3"
        );
        let Target::Single(info) = resolve(&config).unwrap() else {
            panic!("not a cluster")
        };
        assert_eq!(info.redis_settings().password(), Some("s3cret@p:ss"));
        assert_eq!(info.redis_settings().db(), 3);
        assert_eq!(
            config.display_url(),
            "redis://app:***@redis.internal:6380/3"
        );
        assert!(!format!("{config:?}").contains("s3cret"));
    }

    #[test]
    fn cluster_urls_name_every_seed_node() {
        let config =
            RedisConfig::from_url("redis+cluster://:secret@127.0.0.1:7000,127.0.0.1:7001/");
        let Target::Cluster(nodes) = resolve(&config).unwrap() else {
            panic!("a cluster")
        };
        assert_eq!(nodes.len(), 2);
        assert!(nodes
            .iter()
            .all(|n| n.redis_settings().password() == Some("secret")));

        let flag = RedisConfig {
            cluster: true,
            ..RedisConfig::from_url("redis://127.0.0.1:7000")
        };
        assert!(matches!(resolve(&flag).unwrap(), Target::Cluster(n) if n.len() == 1));

        let db = RedisConfig::from_url("redis+cluster://127.0.0.1:7000/2");
        assert!(resolve(&db).unwrap_err().to_string().contains("database 0"));
    }

    #[test]
    fn no_password_in_what_a_url_the_client_cannot_read_says() {
        for url in [
            "redis://:s3cr/et-hunter2@cache:6379/0",
            "redis://app:a/b@c:d%e?f#g-hunter2@cache:6379/0",
            "redis+cluster://app:s3cr/et-hunter2@a:7000,b:7000",
            "rediss+cluster://:x/y-hunter2@a:7000/3",
        ] {
            let error = resolve(&RedisConfig::from_url(url))
                .unwrap_err()
                .to_string();
            assert!(!error.contains("hunter2"), "{error}");
        }
    }

    #[test]
    fn bad_options_are_config_errors() {
        let e = resolve(&RedisConfig::from_url("http://localhost")).unwrap_err();
        assert!(matches!(e, RedisError::Config(_)), "{e}");
        let e = resolve(&RedisConfig {
            pool_size: 0,
            ..RedisConfig::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("pool_size"), "{e}");
    }
}
