//! Where Redis is: the `[redis]` table of flux.toml resolved to the nodes to
//! connect to.
//!
//! Reached by URL: `redis://[user[:password]@]host[:port][/db]`, `rediss://`
//! for TLS, `redis+unix:///path/to.sock`, and for Redis Cluster
//! `redis+cluster://[user[:password]@]host:port[,host:port...]` (or
//! `rediss+cluster://`) naming one or more seed nodes; for Redis Sentinel
//! `redis+sentinel://[user[:password]@]host:port[,host:port...]/master[/db]`
//! (or `rediss+sentinel://`) naming the sentinels and the master's name; or
//! by host, port, db and credentials, or sentinels and a master name
//! ([`RedisConfig::url`] composes those into a URL).

use flux_core::config::{redact_url, RedisConfig};
use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo};

use crate::RedisError;

/// What a `[redis]` table resolves to: one server, a cluster's seed nodes,
/// or the sentinels that know where the master is.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    Single(Box<ConnectionInfo>),
    Cluster(Vec<ConnectionInfo>),
    Sentinel(Box<SentinelTarget>),
}

/// The sentinels to ask, the name they know the master by, and how to talk
/// to the master once they have said where it is.
#[derive(Debug, Clone)]
pub(crate) struct SentinelTarget {
    /// Without db, and without credentials but `sentinel_username` and
    /// `sentinel_password`. TLS when the scheme is `rediss+sentinel://`.
    pub(crate) sentinels: Vec<ConnectionInfo>,
    pub(crate) master_name: String,
    /// The master's settings (TLS, credentials, db) at the first sentinel's
    /// address, which [`SentinelTarget::master_at`] replaces.
    master: ConnectionInfo,
}

/// The port a sentinel listens on when its address names none.
const SENTINEL_PORT: u16 = 26379;

impl SentinelTarget {
    /// How to reach the master at `host:port`, as a sentinel named it.
    pub(crate) fn master_at(&self, host: String, port: u16) -> ConnectionInfo {
        let addr = match self.master.addr() {
            ConnectionAddr::TcpTls {
                insecure,
                tls_params,
                ..
            } => ConnectionAddr::TcpTls {
                host,
                port,
                insecure: *insecure,
                tls_params: tls_params.clone(),
            },
            _ => ConnectionAddr::Tcp(host, port),
        };
        self.master.clone().set_addr(addr)
    }
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
    if config.is_sentinel() {
        // An empty password is none, as the master's is.
        let password = config
            .sentinel_password
            .as_deref()
            .filter(|p| !p.is_empty());
        let credentials = password.map(|p| (config.sentinel_username.as_deref(), p));
        return sentinel(&url, credentials).map(|target| Target::Sentinel(Box::new(target)));
    }
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

/// `redis+sentinel://[user[:password]@]host[:port][,host[:port]...]/master[/db]`,
/// the sentinels asked with `credentials` (an ACL user name, if any, and a
/// password) when they want them.
fn sentinel(
    url: &str,
    credentials: Option<(Option<&str>, &str)>,
) -> Result<SentinelTarget, RedisError> {
    let bad = |what: &str| {
        RedisError::Config(format!(
            "{what} in {} (expected redis+sentinel://[user[:password]@]host:port[,host:port...]/master[/db], \
             or rediss+sentinel:// for TLS)",
            redact_url(url)
        ))
    };
    let (base, rest) = match url.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("redis+sentinel") => ("redis://", rest),
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("rediss+sentinel") => {
            ("rediss://", rest)
        }
        _ => return Err(bad("not a Sentinel URL")),
    };
    // user:password@ is the master's; a password may hold `/` or `@`, so
    // the userinfo ends at the last `@`.
    let (auth, rest) = match rest.rsplit_once('@') {
        Some((auth, rest)) => (format!("{auth}@"), rest),
        None => (String::new(), rest),
    };
    let (hosts, path) = rest.split_once('/').ok_or_else(|| bad("no master name"))?;
    let (master_name, db) = match path.trim_end_matches('/').split_once('/') {
        Some((name, db)) => (name, db),
        None => (path.trim_end_matches('/'), "0"),
    };
    if master_name.is_empty() {
        return Err(bad("no master name"));
    }
    let master_name =
        percent_decode(master_name).ok_or_else(|| bad("a badly encoded master name"))?;
    let db: u32 = db
        .parse()
        .map_err(|_| bad("a db that is not a whole number"))?;
    let sentinels = hosts
        .split(',')
        .filter(|h| !h.is_empty())
        .map(|host| {
            let host = match host.rsplit_once(':') {
                Some((_, port)) if !port.contains(']') => host.to_owned(),
                _ => format!("{host}:{SENTINEL_PORT}"),
            };
            let info = parse(&format!("{base}{host}"))?;
            let Some((username, password)) = credentials else {
                return Ok(info);
            };
            let mut settings = info.redis_settings().clone().set_password(password);
            if let Some(username) = username {
                settings = settings.set_username(username);
            }
            Ok(info.set_redis_settings(settings))
        })
        .collect::<Result<Vec<_>, RedisError>>()?;
    let Some(first) = sentinels.first() else {
        return Err(bad("no sentinel"));
    };
    let first = match first.addr() {
        ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
            format!("{host}:{port}")
        }
        _ => return Err(bad("a sentinel that is not host:port")),
    };
    let master = parse(&format!("{base}{auth}{first}/{db}"))?;
    Ok(SentinelTarget {
        sentinels,
        master_name,
        master,
    })
}

/// `%XX` sequences decoded; `None` when they do not make UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
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
    fn sentinel_urls_name_the_sentinels_the_master_and_its_db() {
        let config =
            RedisConfig::from_url("redis+sentinel://:s3cret@10.0.0.1:26380,10.0.0.2/my%20master/2");
        let Target::Sentinel(target) = resolve(&config).unwrap() else {
            panic!("sentinel")
        };
        let addrs: Vec<String> = target
            .sentinels
            .iter()
            .map(|s| s.addr().to_string())
            .collect();
        assert_eq!(addrs, ["10.0.0.1:26380", "10.0.0.2:26379"]);
        assert!(target
            .sentinels
            .iter()
            .all(|s| s.redis_settings().password().is_none() && s.redis_settings().db() == 0));
        assert_eq!(target.master_name, "my master");
        let master = target.master_at("10.0.0.9".into(), 6380);
        assert_eq!(master.addr().to_string(), "10.0.0.9:6380");
        assert_eq!(master.redis_settings().password(), Some("s3cret"));
        assert_eq!(master.redis_settings().db(), 2);

        // The sentinels' own password goes to the sentinels only.
        let guarded = RedisConfig {
            sentinel_password: Some("s3nt!nel".into()),
            ..RedisConfig::from_url("redis+sentinel://:m4ster@10.0.0.1:26379,10.0.0.2/m")
        };
        let Target::Sentinel(target) = resolve(&guarded).unwrap() else {
            panic!("sentinel")
        };
        assert!(target
            .sentinels
            .iter()
            .all(|s| s.redis_settings().password() == Some("s3nt!nel")));
        let master = target.master_at("10.0.0.9".into(), 6379);
        assert_eq!(master.redis_settings().password(), Some("m4ster"));
        let empty = RedisConfig {
            sentinel_password: Some(String::new()),
            ..guarded.clone()
        };
        let Target::Sentinel(target) = resolve(&empty).unwrap() else {
            panic!("sentinel")
        };
        assert!(target.sentinels[0].redis_settings().password().is_none());
        let user = RedisConfig {
            sentinel_username: Some("flux".into()),
            ..guarded
        };
        let Target::Sentinel(target) = resolve(&user).unwrap() else {
            panic!("sentinel")
        };
        let settings = target.sentinels[1].redis_settings();
        assert_eq!(
            (settings.username(), settings.password()),
            (Some("flux"), Some("s3nt!nel"))
        );
        let master = target.master_at("10.0.0.9".into(), 6379);
        assert_eq!(master.redis_settings().username(), None);

        let tls = RedisConfig::from_url("rediss+sentinel://h:26379/m");
        let Target::Sentinel(target) = resolve(&tls).unwrap() else {
            panic!("sentinel")
        };
        assert!(matches!(
            target.sentinels[0].addr(),
            ConnectionAddr::TcpTls { .. }
        ));
        let master = target.master_at("h2".into(), 6379);
        assert!(matches!(master.addr(), ConnectionAddr::TcpTls { .. }));
    }

    #[test]
    fn sentinel_keys_become_a_sentinel_url() {
        let config = RedisConfig {
            sentinel: vec!["10.0.0.1:26379".into(), "[::1]:26380".into()],
            master_name: Some("mymaster".into()),
            password: Some("p@ss".into()),
            db: 1,
            ..RedisConfig::default()
        };
        assert_eq!(
            config.url(),
            "redis+sentinel://:p%40ss@10.0.0.1:26379,[::1]:26380/mymaster/1"
        );
        let Target::Sentinel(target) = resolve(&config).unwrap() else {
            panic!("sentinel")
        };
        assert_eq!(target.sentinels.len(), 2);
        assert_eq!(target.master_name, "mymaster");
        assert_eq!(target.master_at("m".into(), 1).redis_settings().db(), 1);
    }

    #[test]
    fn sentinel_urls_without_a_master_are_config_errors() {
        for (url, says) in [
            ("redis+sentinel://h:26379", "no master name"),
            ("redis+sentinel://h:26379/", "no master name"),
            ("redis+sentinel://:hunter2@h:26379/m/x", "db"),
            ("redis+sentinel:///m", "no sentinel"),
        ] {
            let e = resolve(&RedisConfig::from_url(url))
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{url}: {e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
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
