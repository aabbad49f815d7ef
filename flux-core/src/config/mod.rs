//! The flux.toml schema: its sections, their defaults, and where the file is
//! found.
//!
//! The file is parsed and validated once, here, so Rust, C and Python share one
//! schema and one set of error messages. Every mistake is reported at load time
//! with the file, the line, the key and what the key accepts. A file that does
//! not load is an error, never a fallback to defaults: a limiter quietly
//! enforcing limits nobody wrote is worse than one that refuses to start.
//!
//! Files written for flux-limiter 0.1 load unchanged; every key is optional.

mod http;
mod words;
mod written;

use std::collections::BTreeMap;
use std::env;
use std::fmt::{self, Write as _};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

pub use http::{HttpConfig, RouteLimit};
pub use words::redact_url;
use words::{dotted, expected_url, has_redis_scheme, percent_encode, strip_suffix_ignore_case};
use written::{JsonDoc, TomlDoc, Written};

use crate::{parse_rates, Limit, LimitSpec, Policy, QuotaError, Rate};

const FLUX_CONFIG: &str = "FLUX_CONFIG";
const FLUX_REDIS_URL: &str = "FLUX_REDIS_URL";

/// Looked for under the working directory, in this order, when `$FLUX_CONFIG` is unset.
const CANDIDATES: [&str; 2] = ["flux.toml", "config/flux.toml"];

/// Everything flux.toml can say, with defaults for whatever it leaves out.
///
/// `Config::default()` is what Flux runs with when there is no file: the
/// memory store, so limits are per process.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Config {
    /// `[redis]`; its presence in a file alone selects Redis storage.
    pub redis: RedisConfig,
    /// `[flux]`
    pub flux: FluxSettings,
    /// `[analytics]`
    pub analytics: AnalyticsConfig,
    /// The limit used when none is named, and what named limits inherit from.
    pub rate_limit: Limit,
    /// Limits picked by name, as in `@rate_limit(name="login")`, each
    /// resolved over `rate_limit` by [`LimitSpec::over`].
    pub rate_limits: BTreeMap<String, Limit>,
    /// `[http]`: the limits of web-framework middlewares, for the languages that have them.
    pub http: HttpConfig,
    /// The file this came from; `None` for defaults and for text without a file.
    pub origin: Option<PathBuf>,
    /// Whether the file chose `[flux] storage` itself: `FLUX_REDIS_URL` may only
    /// change a storage that was defaulted.
    storage_chosen: bool,
}

/// Where decisions keep their state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    /// In this process only: nothing to run, but every process counts alone.
    #[default]
    Memory,
    /// Shared by every process that uses the same Redis.
    Redis,
}

impl fmt::Display for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Storage::Memory => "memory",
            Storage::Redis => "redis",
        })
    }
}

/// `[redis]`: where the shared store lives, given either as `url` or as its parts.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://`, `rediss://` (TLS), `redis+cluster://`, `rediss+cluster://`,
    /// `redis+sentinel://`, `rediss+sentinel://`,
    /// `unix://` or `redis+unix://`. Excludes host, port, db, username and password.
    pub url: Option<String>,
    pub host: String,
    pub port: u16,
    pub db: u32,
    /// For Redis 6 ACLs; leave out for a plain `requirepass`.
    pub username: Option<String>,
    pub password: Option<String>,
    /// Connections kept open per process.
    pub pool_size: u32,
    /// Upper bound on every Redis call, including connecting.
    pub timeout_ms: u64,
    /// Use the Redis Cluster protocol even though `url` does not say so.
    pub cluster: bool,
    /// Redis Sentinel: the sentinels' `host:port` addresses, asked for the
    /// master named `master_name`. Excludes `url`, `host` and `port`; `db`,
    /// `username` and `password` are the master's.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sentinel: Vec<String>,
    /// The name the sentinels monitor the master under (their `sentinel
    /// monitor NAME ...`); needed with `sentinel`, and only then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master_name: Option<String>,
    /// The sentinels' own password (their `requirepass`, or with
    /// `sentinel_username` an ACL user's), for sentinels that ask for one;
    /// the master's is `password`. Only with Sentinel.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sentinel_password: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sentinel_username: Option<String>,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: None,
            host: "127.0.0.1".to_owned(),
            port: 6379,
            db: 0,
            username: None,
            password: None,
            pool_size: 5,
            timeout_ms: 200,
            cluster: false,
            sentinel: Vec::new(),
            master_name: None,
            sentinel_password: None,
            sentinel_username: None,
        }
    }
}

impl RedisConfig {
    /// The address to give the Redis client.
    ///
    /// Built from host, port, db and credentials when `url` is unset (from
    /// `sentinel`, `master_name`, db and credentials as a
    /// `redis+sentinel://` URL when `sentinel` is set). A `+cluster` in the
    /// scheme is dropped, because Redis clients do not know it:
    /// [`RedisConfig::is_cluster`] carries that instead.
    pub fn url(&self) -> String {
        if let Some(url) = &self.url {
            return match url.split_once("://") {
                Some((scheme, rest)) => {
                    let scheme = strip_suffix_ignore_case(scheme, "+cluster").unwrap_or(scheme);
                    format!("{scheme}://{rest}")
                }
                None => url.clone(),
            };
        }
        let sentinel = !self.sentinel.is_empty();
        let mut url = String::from(if sentinel {
            "redis+sentinel://"
        } else {
            "redis://"
        });
        let username = self.username.as_deref().filter(|u| !u.is_empty());
        let password = self.password.as_deref().filter(|p| !p.is_empty());
        if let Some(username) = username {
            url.push_str(&percent_encode(username));
        }
        if let Some(password) = password {
            // Without a username this is the `requirepass` form, `:password@`.
            url.push(':');
            url.push_str(&percent_encode(password));
        }
        if username.is_some() || password.is_some() {
            url.push('@');
        }
        if sentinel {
            let master = self.master_name.as_deref().unwrap_or_default();
            let _ = write!(
                url,
                "{}/{}/{}",
                self.sentinel.join(","),
                percent_encode(master),
                self.db
            );
            return url;
        }
        if self.host.contains(':') && !self.host.starts_with('[') {
            // An IPv6 address, which a URL must bracket.
            let _ = write!(url, "[{}]", self.host);
        } else {
            url.push_str(&self.host);
        }
        let _ = write!(url, ":{}/{}", self.port, self.db);
        url
    }

    /// `[redis] url = ...` and nothing else set: the defaults around a URL.
    pub fn from_url(url: impl Into<String>) -> Self {
        RedisConfig {
            url: Some(url.into()),
            ..RedisConfig::default()
        }
    }

    /// `[redis] host = ..., port = ...` and nothing else set.
    pub fn host_port(host: impl Into<String>, port: u16) -> Self {
        RedisConfig {
            host: host.into(),
            port,
            ..RedisConfig::default()
        }
    }

    /// Whether the master is found through Redis Sentinel: `sentinel` is
    /// set, or `url` is `redis+sentinel://` or `rediss+sentinel://`.
    pub fn is_sentinel(&self) -> bool {
        !self.sentinel.is_empty()
            || self
                .url
                .as_deref()
                .and_then(|url| url.split_once("://"))
                .is_some_and(|(scheme, _)| strip_suffix_ignore_case(scheme, "+sentinel").is_some())
    }

    /// The bound on every Redis call.
    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.timeout_ms)
    }

    /// Where this connects, as written (or composed), password hidden: for messages.
    pub fn display_url(&self) -> String {
        redact_url(self.url.as_deref().unwrap_or(&self.url()))
    }

    /// Whether to speak the Redis Cluster protocol.
    pub fn is_cluster(&self) -> bool {
        self.cluster
            || self
                .url
                .as_deref()
                .and_then(|url| url.split_once("://"))
                .is_some_and(|(scheme, _)| strip_suffix_ignore_case(scheme, "+cluster").is_some())
    }
}

// By hand, so a password never reaches a log line.
impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &self.url.as_deref().map(redact_url))
            .field("host", &self.host)
            .field("port", &self.port)
            .field("db", &self.db)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("pool_size", &self.pool_size)
            .field("timeout_ms", &self.timeout_ms)
            .field("cluster", &self.cluster)
            .field("sentinel", &self.sentinel)
            .field("master_name", &self.master_name)
            .field(
                "sentinel_password",
                &self.sentinel_password.as_ref().map(|_| "***"),
            )
            .field("sentinel_username", &self.sentinel_username)
            .finish()
    }
}

/// `[flux]`: how the limiter behaves around its store.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FluxSettings {
    /// Defaults to `redis` when the file has a `[redis]` table or
    /// `FLUX_REDIS_URL` is set, else to `memory`.
    pub storage: Storage,
    /// Prepended to every key Flux writes, so several apps can share one Redis.
    pub key_prefix: String,
    /// As written: a relative path is relative to the process's working directory.
    pub log_file: Option<PathBuf>,
    /// When the store fails: `true` admits the call, `false` raises an error.
    pub fail_silently: bool,
    /// Debug logging to stdout, for development.
    pub console_logging: bool,
    /// Spreads `Retry-After` so that refused clients do not all return at once.
    pub jitter_enabled: bool,
    pub jitter_max_ms: u64,
    /// How many leading bits of an IPv6 client address identify the client
    /// by default (1 to 128): one network hands out a whole /64 (or more),
    /// so the full address would let a client rotate through its own keys.
    pub ipv6_prefix: u8,
    /// Refusals this process answers itself until their `retry_after` has
    /// passed, without asking the store; 0 turns the local deny cache off.
    pub local_cache_size: usize,
}

impl Default for FluxSettings {
    fn default() -> Self {
        Self {
            storage: Storage::Memory,
            key_prefix: "flux:".to_owned(),
            log_file: None,
            fail_silently: true,
            console_logging: false,
            jitter_enabled: true,
            jitter_max_ms: 500,
            ipv6_prefix: 64,
            local_cache_size: 10_000,
        }
    }
}

/// `[analytics]`: the counters' Redis stream and the metrics HTTP server.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnalyticsConfig {
    pub enabled: bool,
    /// Where `/metrics` is served; loopback unless the operator opens it up.
    pub host: String,
    pub port: u16,
    /// The Redis stream events are added to.
    pub stream: String,
    /// The stream's approximate maximum length, in events.
    pub retention: u64,
    /// The share of events sent to the stream, from 0.0 to 1.0.
    pub sample_rate: f64,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            host: "127.0.0.1".to_owned(),
            port: 4444,
            stream: "flux:events".to_owned(),
            retention: 100_000,
            sample_rate: 1.0,
        }
    }
}

/// Which file [`Config::discover`] used, so the caller can say so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discovered {
    /// No file: the memory store, so limits are per process.
    Defaults,
    /// The file that was loaded.
    File(PathBuf),
}

/// A configuration that cannot be used, and where it went wrong.
///
/// Displays as `flux.toml:12: rate_limits.login.requests: must be a whole
/// number of at least 1, got 0`, leaving out whatever is unknown.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{}{message}", self.location())]
pub struct ConfigError {
    pub file: Option<PathBuf>,
    /// 1-based.
    pub line: Option<usize>,
    /// Dotted, as in `rate_limits.login.requests`, or the environment variable at fault.
    pub key: Option<String>,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl ConfigError {
    pub(super) fn new(message: impl Into<String>) -> Self {
        Self {
            file: None,
            line: None,
            key: None,
            message: message.into(),
        }
    }

    pub(super) fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    fn unreadable(path: &Path, error: &io::Error) -> Self {
        Self {
            file: Some(path.to_owned()),
            ..Self::new(format!("cannot read the file: {error}"))
        }
    }

    fn location(&self) -> String {
        let mut at = match (&self.file, self.line) {
            (Some(file), Some(line)) => format!("{}:{line}: ", file.display()),
            (Some(file), None) => format!("{}: ", file.display()),
            (None, Some(line)) => format!("line {line}: "),
            (None, None) => String::new(),
        };
        if let Some(key) = &self.key {
            at.push_str(key);
            at.push_str(": ");
        }
        at
    }
}

impl Config {
    /// Parses and validates flux.toml text; `origin` names the file in errors.
    ///
    /// Reads no environment: [`Config::load_file`] and [`Config::discover`]
    /// apply `FLUX_REDIS_URL` afterwards.
    pub fn from_toml_str(text: &str, origin: Option<&Path>) -> Result<Config, ConfigError> {
        let in_file = |mut error: ConfigError| {
            error.file = origin.map(Path::to_owned);
            error
        };
        let doc = TomlDoc::parse(text).map_err(in_file)?;
        let file: ConfigFile = doc.read().map_err(in_file)?;
        Self::assemble(file, &doc, origin).map_err(in_file)
    }

    /// Parses and validates a configuration given as JSON: the sections and
    /// keys of flux.toml as objects (`{"redis": {"url": ...}, "rate_limits":
    /// {"api": {"rate": "10/second"}}}`), with the same schema, defaults and
    /// messages; a key left out or `null` takes its default. This is how a
    /// configuration built in code reaches Flux. `origin` names it in errors.
    /// Reads no environment.
    pub fn from_json_str(text: &str, origin: Option<&Path>) -> Result<Config, ConfigError> {
        let in_origin = |mut error: ConfigError| {
            error.file = origin.map(Path::to_owned);
            error
        };
        let doc = JsonDoc::parse(text).map_err(in_origin)?;
        let file: ConfigFile = doc.read().map_err(in_origin)?;
        Self::assemble(file, &doc, origin).map_err(in_origin)
    }

    /// Fills in the defaults of what `written` says, resolves the limits
    /// and checks what types cannot.
    fn assemble(
        file: ConfigFile,
        written: &dyn Written,
        origin: Option<&Path>,
    ) -> Result<Config, ConfigError> {
        let has_redis = file.redis.is_some();
        let storage_chosen = written.contains(&["flux", "storage"]);
        let mut flux = file.flux;
        if !storage_chosen && has_redis {
            flux.storage = Storage::Redis;
        }
        let rate_limit = resolve(
            written,
            &["rate_limit"],
            &file.rate_limit,
            &Limit::default(),
        )?;
        let rate_limits = file
            .rate_limits
            .iter()
            .map(|(name, table)| {
                let limit = resolve(written, &["rate_limits", name], table, &rate_limit)?;
                Ok((name.clone(), limit))
            })
            .collect::<Result<_, ConfigError>>()?;
        let mut config = Config {
            redis: file.redis.unwrap_or_default(),
            flux,
            analytics: file.analytics,
            rate_limit,
            rate_limits,
            http: HttpConfig::default(),
            origin: origin.map(Path::to_owned),
            storage_chosen,
        };
        config.check(written)?;
        // After the limits are checked, so an error is said of the limit at fault.
        config.http = http::resolve(written, file.http, &config.rate_limit, &config.rate_limits)?;
        Ok(config)
    }

    /// Loads one file, then applies `FLUX_REDIS_URL`.
    pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
        let text = fs::read_to_string(path).map_err(|e| ConfigError::unreadable(path, &e))?;
        let mut config = Self::from_toml_str(&text, Some(path))?;
        config.apply_env(redis_url_from_env()?)?;
        Ok(config)
    }

    /// Finds the configuration from the working directory (see
    /// [`Config::discover_in`]), then applies `FLUX_REDIS_URL`.
    pub fn discover() -> Result<(Config, Discovered), ConfigError> {
        let dir = env::current_dir()
            .map_err(|e| ConfigError::new(format!("cannot read the working directory: {e}")))?;
        let flux_config = env::var_os(FLUX_CONFIG)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        let (mut config, found) = Self::discover_in(&dir, flux_config)?;
        config.apply_env(redis_url_from_env()?)?;
        Ok((config, found))
    }

    /// Finds the configuration as if `dir` were the working directory and
    /// `flux_config` the value of `$FLUX_CONFIG`; reads no environment.
    ///
    /// Order: `flux_config` (relative to `dir`), which must exist; else
    /// `dir/flux.toml`; else `dir/config/flux.toml`; else the defaults. A file
    /// that exists but cannot be read or parsed is an error.
    pub fn discover_in(
        dir: &Path,
        flux_config: Option<PathBuf>,
    ) -> Result<(Config, Discovered), ConfigError> {
        if let Some(path) = flux_config {
            let path = dir.join(path);
            let text = fs::read_to_string(&path).map_err(|e| ConfigError {
                file: Some(path.clone()),
                ..ConfigError::new(format!("names a file that cannot be read: {e}"))
                    .with_key(FLUX_CONFIG)
            })?;
            let config = Self::from_toml_str(&text, Some(&path))?;
            return Ok((config, Discovered::File(path)));
        }
        for candidate in CANDIDATES {
            let path = dir.join(candidate);
            match fs::read_to_string(&path) {
                Ok(text) => {
                    let config = Self::from_toml_str(&text, Some(&path))?;
                    return Ok((config, Discovered::File(path)));
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                    ) => {}
                Err(e) => return Err(ConfigError::unreadable(&path, &e)),
            }
        }
        Ok((Config::default(), Discovered::Defaults))
    }

    /// Applies the value of `FLUX_REDIS_URL`: when non-empty it replaces the
    /// Redis address, and turns a storage the file did not choose into `redis`.
    pub fn apply_env(&mut self, redis_url: Option<String>) -> Result<(), ConfigError> {
        let Some(url) = redis_url.filter(|url| !url.is_empty()) else {
            return Ok(());
        };
        if !has_redis_scheme(&url) {
            return Err(ConfigError::new(format!(
                "must be {}, got {:?}",
                expected_url(),
                redact_url(&url)
            ))
            .with_key(FLUX_REDIS_URL));
        }
        self.redis.url = Some(url);
        if !self.storage_chosen {
            self.flux.storage = Storage::Redis;
        }
        Ok(())
    }

    /// The limit named `name`, or `[rate_limit]` for `None`.
    pub fn limit(&self, name: Option<&str>) -> Result<&Limit, ConfigError> {
        let Some(name) = name else {
            return Ok(&self.rate_limit);
        };
        if let Some(limit) = self.rate_limits.get(name) {
            return Ok(limit);
        }
        let defined = if self.rate_limits.is_empty() {
            "no limit is defined under [rate_limits]".to_owned()
        } else {
            let names: Vec<_> = self.rate_limits.keys().map(|n| format!("{n:?}")).collect();
            format!("defined: {}", names.join(", "))
        };
        Err(ConfigError {
            file: self.origin.clone(),
            ..ConfigError::new(format!("no limit named {name:?}; {defined}"))
                .with_key(dotted(&["rate_limits", name]))
        })
    }

    /// The checks a type cannot express. The first failure is reported.
    fn check(&self, doc: &dyn Written) -> Result<(), ConfigError> {
        let redis = &self.redis;
        if let Some(url) = &redis.url {
            if !has_redis_scheme(url) {
                return Err(doc.invalid(&["redis", "url"], &redact_url(url)));
            }
            let parts = ["host", "port", "db", "username", "password"];
            if let Some(part) = parts.iter().find(|p| doc.contains(&["redis", p])) {
                return Err(doc.error(
                    &["redis", "url"],
                    format!("set either url or host, port, db, username and password, not both (found {part})"),
                ));
            }
        }
        check_sentinel(doc, redis)?;
        if redis.is_sentinel() && redis.is_cluster() {
            return Err(doc.error(
                &["redis", "cluster"],
                "Redis Sentinel watches one master, not a cluster: use one or the other".to_owned(),
            ));
        }
        if redis.port == 0 {
            return Err(doc.invalid(&["redis", "port"], &0));
        }
        if redis.pool_size == 0 {
            return Err(doc.invalid(&["redis", "pool_size"], &0));
        }
        if redis.timeout_ms == 0 {
            return Err(doc.invalid(&["redis", "timeout_ms"], &0));
        }
        if redis.is_cluster() && redis.db != 0 {
            return Err(doc.error(
                &["redis", "db"],
                format!(
                    "must be 0 with Redis Cluster, which has one database, got {}",
                    redis.db
                ),
            ));
        }

        if !(1..=128).contains(&self.flux.ipv6_prefix) {
            return Err(doc.invalid(&["flux", "ipv6_prefix"], &self.flux.ipv6_prefix));
        }

        let analytics = &self.analytics;
        if analytics.port == 0 {
            return Err(doc.invalid(&["analytics", "port"], &0));
        }
        if analytics.retention == 0 {
            return Err(doc.invalid(&["analytics", "retention"], &0));
        }
        if !(0.0..=1.0).contains(&analytics.sample_rate) {
            return Err(doc.invalid(&["analytics", "sample_rate"], &analytics.sample_rate));
        }

        check_limit(doc, &["rate_limit"], &self.rate_limit)?;
        for (name, limit) in &self.rate_limits {
            check_limit(doc, &["rate_limits", name], limit)?;
        }
        Ok(())
    }
}

/// `[redis] sentinel` and `master_name`: both or neither, each address a
/// `host:port`, and nothing that names another way to reach Redis.
fn check_sentinel(doc: &dyn Written, redis: &RedisConfig) -> Result<(), ConfigError> {
    let sentinel = ["redis", "sentinel"];
    let master_name = ["redis", "master_name"];
    for (key, set) in [
        ("sentinel_password", redis.sentinel_password.is_some()),
        ("sentinel_username", redis.sentinel_username.is_some()),
    ] {
        if set && !redis.is_sentinel() {
            return Err(doc.error(
                &["redis", key],
                "is for Redis Sentinel's sentinels, only used with sentinel = [\"host:port\", \
                 ...] or a redis+sentinel:// url (the server's are username and password)"
                    .to_owned(),
            ));
        }
    }
    if redis.sentinel_username.is_some() && redis.sentinel_password.is_none() {
        return Err(doc.error(
            &["redis", "sentinel_username"],
            "needs sentinel_password: a sentinel's ACL user logs in with both".to_owned(),
        ));
    }
    if redis.sentinel.is_empty() {
        if doc.contains(&sentinel) {
            return Err(doc.error(
                &sentinel,
                "must name at least one sentinel, as in [\"10.0.0.1:26379\", \"10.0.0.2:26379\"]"
                    .to_owned(),
            ));
        }
        if redis.master_name.is_some() {
            return Err(doc.error(
                &master_name,
                "is only used with sentinel = [\"host:port\", ...] (a redis+sentinel:// URL names \
                 the master in its path)"
                    .to_owned(),
            ));
        }
        return Ok(());
    }
    let others = ["url", "host", "port"];
    if let Some(other) = others.iter().find(|o| doc.contains(&["redis", o])) {
        return Err(doc.error(
            &sentinel,
            format!(
                "the sentinels say where the master is: leave out {other} (db, username and \
                 password are the master's)"
            ),
        ));
    }
    if let Some(bad) = redis.sentinel.iter().find(|a| !is_host_port(a)) {
        return Err(doc.error(
            &sentinel,
            format!("must be a list of \"host:port\" addresses (port 1 to 65535), got {bad:?}"),
        ));
    }
    match redis.master_name.as_deref() {
        Some(name) if !name.is_empty() => Ok(()),
        _ => Err(doc.error(
            &master_name,
            "must be set with sentinel: the name the sentinels monitor the master under \
             (sentinel monitor NAME ...)"
                .to_owned(),
        )),
    }
}

/// `host:port`, or `[v6 address]:port`, with a port from 1 to 65535.
fn is_host_port(address: &str) -> bool {
    let Some((host, port)) = address.rsplit_once(':') else {
        return false;
    };
    let host_ok = match host.strip_prefix('[') {
        Some(v6) => v6.ends_with(']') && v6.len() > 1,
        None => !host.is_empty() && !host.contains([':', '/', '@', ',']),
    };
    host_ok && port.parse::<u16>().is_ok_and(|p| p > 0)
}

/// The limit `table` says over `base`, or the error naming its key.
fn resolve(
    written: &dyn Written,
    table: &[&str],
    spec: &LimitTable,
    base: &Limit,
) -> Result<Limit, ConfigError> {
    LimitSpec::from(spec.clone())
        .over(base)
        .map_err(|error| limit_error(written, table, &error))
}

/// Builds the quotas, so a bad limit fails at load time rather than at its
/// first call.
fn check_limit(written: &dyn Written, table: &[&str], limit: &Limit) -> Result<(), ConfigError> {
    match limit.quotas() {
        Ok(_) => Ok(()),
        Err(error) => Err(limit_error(written, table, &error)),
    }
}

/// A limit's error, said of the key it is about when it is about one.
fn limit_error(written: &dyn Written, table: &[&str], error: &QuotaError) -> ConfigError {
    let message = error.to_string();
    let Some(key) = quota_key(error) else {
        return written.error(table, message);
    };
    let mut path = table.to_vec();
    path.push(key);
    // QuotaError names its parameter first; the key already says it.
    let message = message
        .strip_prefix(key)
        .map(str::trim_start)
        .unwrap_or(&message);
    written.error(&path, message.to_owned())
}

/// The limit key a quota error is about, if it is about one.
fn quota_key(error: &QuotaError) -> Option<&'static str> {
    match error {
        QuotaError::Requests | QuotaError::RequestsOnSeveralRates(_) => Some("requests"),
        QuotaError::Period(_) => Some("period"),
        QuotaError::Burst
        | QuotaError::BurstOnWindow { .. }
        | QuotaError::BurstOnSeveralRates(_) => Some("burst"),
        QuotaError::MaxWait(_) | QuotaError::MaxWaitPolicy(_) => Some("max_wait"),
        QuotaError::UnknownPolicy(_) => Some("policy"),
        QuotaError::RateAndRequests | QuotaError::RateCount(_) => Some("rate"),
        _ => None,
    }
}

/// The file as written, before defaults are filled in.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    /// `Some` even when empty: a `[redis]` table alone selects Redis storage.
    redis: Option<RedisConfig>,
    #[serde(default)]
    flux: FluxSettings,
    #[serde(default)]
    analytics: AnalyticsConfig,
    #[serde(default)]
    rate_limit: LimitTable,
    #[serde(default)]
    rate_limits: BTreeMap<String, LimitTable>,
    #[serde(default)]
    http: http::HttpTable,
}

/// A limit table with its absent keys still absent, so they can be
/// inherited ([`LimitSpec::over`]).
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitTable {
    #[serde(default, deserialize_with = "policy_by_name")]
    policy: Option<Policy>,
    #[serde(default, deserialize_with = "rates_by_text")]
    rate: Option<Vec<Rate>>,
    requests: Option<u64>,
    period: Option<f64>,
    burst: Option<u64>,
    max_wait: Option<f64>,
    shadow: Option<bool>,
}

impl From<LimitTable> for LimitSpec {
    fn from(table: LimitTable) -> Self {
        LimitSpec {
            policy: table.policy,
            rate: table.rate,
            requests: table.requests,
            period: table.period,
            burst: table.burst,
            max_wait: table.max_wait,
            shadow: table.shadow,
        }
    }
}

fn policy_by_name<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Policy>, D::Error> {
    let name = String::deserialize(de)?;
    name.parse().map(Some).map_err(serde::de::Error::custom)
}

pub(super) fn rates_by_text<'de, D: Deserializer<'de>>(
    de: D,
) -> Result<Option<Vec<Rate>>, D::Error> {
    let text = String::deserialize(de)?;
    parse_rates(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

fn redis_url_from_env() -> Result<Option<String>, ConfigError> {
    match env::var_os(FLUX_REDIS_URL) {
        None => Ok(None),
        Some(value) => value
            .into_string()
            .map(Some)
            .map_err(|_| ConfigError::new("must be valid UTF-8").with_key(FLUX_REDIS_URL)),
    }
}

/// The configuration as one object with flux.toml's sections and keys, the
/// defaults filled in, and `origin` (the file, or null): how other
/// languages read what was loaded. A limit also gives its `rate` as text
/// and the `requests` and `period` of its first rate. The Redis password is
/// included as written.
impl Serialize for Config {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(7))?;
        map.serialize_entry("origin", &self.origin)?;
        map.serialize_entry("redis", &self.redis)?;
        map.serialize_entry("flux", &self.flux)?;
        map.serialize_entry("analytics", &self.analytics)?;
        map.serialize_entry("rate_limit", &LimitView(&self.rate_limit))?;
        let named: BTreeMap<&str, LimitView<'_>> = self
            .rate_limits
            .iter()
            .map(|(name, limit)| (name.as_str(), LimitView(limit)))
            .collect();
        map.serialize_entry("rate_limits", &named)?;
        map.serialize_entry("http", &self.http)?;
        map.end()
    }
}

/// A limit as [`Config`]'s serialization shows it.
struct LimitView<'a>(&'a Limit);

impl Serialize for LimitView<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let limit = self.0;
        let rate: Vec<String> = limit.rates.iter().map(Rate::to_string).collect();
        let mut map = serializer.serialize_map(Some(8))?;
        map.serialize_entry("policy", limit.policy.name())?;
        map.serialize_entry("rate", &rate.join(";"))?;
        map.serialize_entry("requests", &limit.requests())?;
        map.serialize_entry("period", &limit.period())?;
        map.serialize_entry("burst", &limit.burst)?;
        map.serialize_entry("max_wait", &limit.max_wait)?;
        map.serialize_entry("shadow", &limit.shadow)?;
        map.end()
    }
}
