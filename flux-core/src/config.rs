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

use std::collections::BTreeMap;
use std::env;
use std::fmt::{self, Write as _};
use std::fs;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};
use thiserror::Error;
use toml::de::{DeTable, DeValue};

use crate::{Policy, QuotaError, QuotaSpec};

const FLUX_CONFIG: &str = "FLUX_CONFIG";
const FLUX_REDIS_URL: &str = "FLUX_REDIS_URL";

/// Looked for under the working directory, in this order, when `$FLUX_CONFIG` is unset.
const CANDIDATES: [&str; 2] = ["flux.toml", "config/flux.toml"];

/// The keys of a limit table, for the message when one is not a table.
const LIMIT_KEYS: &str = "policy, requests, period, burst, max_wait";

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
    pub rate_limit: LimitConfig,
    /// Limits picked by name, as in `@rate_limit(name="login")`.
    pub rate_limits: BTreeMap<String, LimitConfig>,
    /// The file this came from; `None` for defaults and for text without a file.
    pub origin: Option<PathBuf>,
    /// Whether the file chose `[flux] storage` itself: `FLUX_REDIS_URL` may only
    /// change a storage that was defaulted.
    storage_chosen: bool,
}

/// Where decisions keep their state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
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
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://`, `rediss://` (TLS), `redis+cluster://`, `rediss+cluster://`,
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
        }
    }
}

impl RedisConfig {
    /// The address to give the Redis client.
    ///
    /// Built from host, port, db and credentials when `url` is unset. A
    /// `+cluster` in the scheme is dropped, because Redis clients do not know
    /// it: [`RedisConfig::is_cluster`] carries that instead.
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
        let mut url = String::from("redis://");
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
            .finish()
    }
}

/// `[flux]`: how the limiter behaves around its store.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
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
        }
    }
}

/// `[analytics]`: the counters' Redis stream and the metrics HTTP server.
#[derive(Debug, Clone, PartialEq, Deserialize)]
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

/// `[rate_limit]` or one `[rate_limits.NAME]`: a quota as the file states it.
///
/// Every instance in a loaded [`Config`] has passed [`QuotaSpec::build`].
#[derive(Debug, Clone, PartialEq)]
pub struct LimitConfig {
    pub policy: Policy,
    /// Calls admitted per `period`.
    pub requests: u64,
    /// Seconds.
    pub period: f64,
    /// `None` means `requests`.
    pub burst: Option<u64>,
    /// Seconds; `leaky_bucket` only.
    pub max_wait: f64,
}

impl Default for LimitConfig {
    fn default() -> Self {
        Self {
            policy: Policy::Gcra,
            requests: 100,
            period: 60.0,
            burst: None,
            max_wait: 0.0,
        }
    }
}

impl LimitConfig {
    /// The quota's parameters, for [`QuotaSpec::build`].
    pub fn spec(&self) -> QuotaSpec {
        QuotaSpec {
            policy: self.policy,
            requests: self.requests,
            period: self.period,
            burst: self.burst,
            max_wait: self.max_wait,
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
    fn new(message: impl Into<String>) -> Self {
        Self {
            file: None,
            line: None,
            key: None,
            message: message.into(),
        }
    }

    fn with_key(mut self, key: impl Into<String>) -> Self {
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
        let doc = Document::parse(text).map_err(in_file)?;
        let file: ConfigFile = toml::from_str(text).map_err(|e| in_file(doc.explain(&e)))?;

        let has_redis = file.redis.is_some();
        let storage_chosen = doc.contains(&["flux", "storage"]);
        let mut flux = file.flux;
        if !storage_chosen && has_redis {
            flux.storage = Storage::Redis;
        }
        let rate_limit = file.rate_limit.over(&LimitConfig::default());
        let rate_limits = file
            .rate_limits
            .into_iter()
            .map(|(name, table)| (name, table.over(&rate_limit)))
            .collect();
        let config = Config {
            redis: file.redis.unwrap_or_default(),
            flux,
            analytics: file.analytics,
            rate_limit,
            rate_limits,
            origin: origin.map(Path::to_owned),
            storage_chosen,
        };
        config.check(&doc).map_err(in_file)?;
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

    /// The quota named `name`, or `[rate_limit]` for `None`.
    pub fn limit(&self, name: Option<&str>) -> Result<QuotaSpec, ConfigError> {
        let Some(name) = name else {
            return Ok(self.rate_limit.spec());
        };
        if let Some(limit) = self.rate_limits.get(name) {
            return Ok(limit.spec());
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
    fn check(&self, doc: &Document<'_>) -> Result<(), ConfigError> {
        let redis = &self.redis;
        if let Some(url) = &redis.url {
            if !has_redis_scheme(url) {
                return Err(doc.invalid(&["redis", "url"], redact_url(url)));
            }
            let parts = ["host", "port", "db", "username", "password"];
            if let Some(part) = parts.iter().find(|p| doc.contains(&["redis", p])) {
                return Err(doc.error(
                    &["redis", "url"],
                    format!("set either url or host, port, db, username and password, not both (found {part})"),
                ));
            }
        }
        if redis.port == 0 {
            return Err(doc.invalid(&["redis", "port"], 0));
        }
        if redis.pool_size == 0 {
            return Err(doc.invalid(&["redis", "pool_size"], 0));
        }
        if redis.timeout_ms == 0 {
            return Err(doc.invalid(&["redis", "timeout_ms"], 0));
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
            return Err(doc.invalid(&["flux", "ipv6_prefix"], self.flux.ipv6_prefix));
        }

        let analytics = &self.analytics;
        if analytics.port == 0 {
            return Err(doc.invalid(&["analytics", "port"], 0));
        }
        if analytics.retention == 0 {
            return Err(doc.invalid(&["analytics", "retention"], 0));
        }
        if !(0.0..=1.0).contains(&analytics.sample_rate) {
            return Err(doc.invalid(&["analytics", "sample_rate"], analytics.sample_rate));
        }

        check_limit(doc, &["rate_limit"], &self.rate_limit)?;
        for (name, limit) in &self.rate_limits {
            check_limit(doc, &["rate_limits", name], limit)?;
        }
        Ok(())
    }
}

/// Builds the quota, so a bad limit fails at load time rather than at its first call.
fn check_limit(doc: &Document<'_>, table: &[&str], limit: &LimitConfig) -> Result<(), ConfigError> {
    let Err(error) = limit.spec().build() else {
        return Ok(());
    };
    let message = error.to_string();
    let Some(key) = quota_key(&error) else {
        return Err(doc.error(table, message));
    };
    let mut path = table.to_vec();
    path.push(key);
    // QuotaError names its parameter first; the key already says it.
    let message = message
        .strip_prefix(key)
        .map(str::trim_start)
        .unwrap_or(&message);
    Err(doc.error(&path, message.to_owned()))
}

/// The limit key a quota error is about, if it is about one.
fn quota_key(error: &QuotaError) -> Option<&'static str> {
    match error {
        QuotaError::Requests => Some("requests"),
        QuotaError::Period(_) => Some("period"),
        QuotaError::Burst | QuotaError::BurstOnWindow { .. } => Some("burst"),
        QuotaError::MaxWait(_) | QuotaError::MaxWaitPolicy(_) => Some("max_wait"),
        QuotaError::UnknownPolicy(_) => Some("policy"),
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
}

/// A limit table with its absent keys still absent, so they can be inherited.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitTable {
    #[serde(default, deserialize_with = "policy_by_name")]
    policy: Option<Policy>,
    requests: Option<u64>,
    period: Option<f64>,
    burst: Option<u64>,
    max_wait: Option<f64>,
}

impl LimitTable {
    fn over(self, base: &LimitConfig) -> LimitConfig {
        let policy = self.policy.unwrap_or(base.policy);
        // A max_wait only means something to leaky_bucket: inheriting it into
        // another policy would make every such named limit an error.
        let inherited_wait = if policy == Policy::LeakyBucket {
            base.max_wait
        } else {
            0.0
        };
        LimitConfig {
            policy,
            requests: self.requests.unwrap_or(base.requests),
            period: self.period.unwrap_or(base.period),
            // Tied to this limit's own requests, so never inherited.
            burst: self.burst,
            max_wait: self.max_wait.unwrap_or(inherited_wait),
        }
    }
}

fn policy_by_name<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Policy>, D::Error> {
    let name = String::deserialize(de)?;
    name.parse().map(Some).map_err(serde::de::Error::custom)
}

/// The parsed document, kept to point errors at lines and keys.
struct Document<'a> {
    text: &'a str,
    root: DeTable<'a>,
}

impl<'a> Document<'a> {
    fn parse(text: &'a str) -> Result<Self, ConfigError> {
        match DeTable::parse(text) {
            Ok(root) => Ok(Self {
                text,
                root: root.into_inner(),
            }),
            Err(e) => Err(ConfigError {
                line: e.span().map(|span| line_at(text, span.start)),
                ..ConfigError::new(e.message())
            }),
        }
    }

    fn contains(&self, path: &[&str]) -> bool {
        self.spans(path).is_some()
    }

    /// The spans of the last key of `path` and of its value, if the file writes it.
    fn spans(&self, path: &[&str]) -> Option<(Range<usize>, Range<usize>)> {
        let (last, parents) = path.split_last()?;
        let mut table = &self.root;
        for name in parents {
            let (_, value) = table.iter().find(|(k, _)| k.get_ref() == name)?;
            match value.get_ref() {
                DeValue::Table(inner) => table = inner,
                _ => return None,
            }
        }
        let (key, value) = table.iter().find(|(k, _)| k.get_ref() == last)?;
        Some((key.span(), value.span()))
    }

    /// The line of `path`, or of its closest ancestor the file writes.
    fn line_of(&self, path: &[&str]) -> Option<usize> {
        (1..=path.len())
            .rev()
            .find_map(|len| self.spans(&path[..len]))
            .map(|(key, _)| line_at(self.text, key.start))
    }

    /// The path of the deepest key whose name or value covers `offset`.
    fn path_at(&self, offset: usize) -> Option<Vec<String>> {
        fn walk(table: &DeTable<'_>, offset: usize, path: &mut Vec<String>) -> bool {
            for (key, value) in table.iter() {
                path.push(key.get_ref().to_string());
                if let DeValue::Table(inner) = value.get_ref() {
                    if walk(inner, offset, path) {
                        return true;
                    }
                }
                if key.span().contains(&offset) || value.span().contains(&offset) {
                    return true;
                }
                path.pop();
            }
            false
        }
        let mut path = Vec::new();
        walk(&self.root, offset, &mut path).then_some(path)
    }

    /// The source text of a value, shortened to fit in a one-line message.
    /// A Redis URL is shown with its passwords hidden (before it is
    /// shortened, so a cut cannot keep half a password), a password not at all.
    fn snippet(&self, path: &[&str], span: Range<usize>) -> String {
        let written = self.text.get(span).unwrap_or("").trim();
        let redacted;
        let written = match path {
            ["redis", "password"] => return "a value of another type (not shown)".to_owned(),
            ["redis", "url"] => {
                redacted = redact_url(written);
                redacted.as_str()
            }
            _ => written,
        };
        let first_line = written.lines().next().unwrap_or("");
        match first_line.char_indices().nth(40) {
            Some((cut, _)) => format!("{}...", &first_line[..cut]),
            None if first_line.len() < written.len() => format!("{first_line}..."),
            None if first_line.is_empty() => "nothing".to_owned(),
            None => first_line.to_owned(),
        }
    }

    fn error(&self, path: &[&str], message: String) -> ConfigError {
        ConfigError {
            line: self.line_of(path),
            ..ConfigError::new(message).with_key(dotted(path))
        }
    }

    /// A value that has the right type but is out of range.
    fn invalid(&self, path: &[&str], got: impl fmt::Display) -> ConfigError {
        // As written, so `1.50` is not echoed back as `1.5`.
        let got = match self.spans(path) {
            Some((_, value)) => self.snippet(path, value),
            None => got.to_string(),
        };
        let expected = expected(path).unwrap_or_default();
        self.error(path, format!("must be {expected}, got {got}"))
    }

    /// Rewrites a deserialization error in the terms of the schema.
    fn explain(&self, error: &toml::de::Error) -> ConfigError {
        let raw = error.message();
        let Some(span) = error.span() else {
            return ConfigError::new(raw);
        };
        let line = Some(line_at(self.text, span.start));
        let Some(path) = self.path_at(span.start) else {
            return ConfigError {
                line,
                ..ConfigError::new(raw)
            };
        };
        let path: Vec<&str> = path.iter().map(String::as_str).collect();
        let message = if raw.starts_with("unknown field") {
            unknown_key(&path, raw)
        } else if let Some(expected) = expected(&path) {
            format!("must be {expected}, got {}", self.snippet(&path, span))
        } else {
            raw.to_owned()
        };
        ConfigError {
            line,
            ..ConfigError::new(message).with_key(dotted(&path))
        }
    }
}

/// "unknown field `x`, expected one of `a`, `b`" from serde, said for a config file.
fn unknown_key(path: &[&str], raw: &str) -> String {
    let allowed = raw
        .split_once(", expected ")
        .map(|(_, list)| list.trim_start_matches("one of ").replace('`', ""));
    match (path, allowed) {
        ([_], Some(_)) => "unknown section; flux.toml has [redis], [flux], [analytics], \
                           [rate_limit] and [rate_limits.NAME]"
            .to_owned(),
        ([.., _], Some(allowed)) => {
            let table = dotted(&path[..path.len() - 1]);
            format!("unknown key; [{table}] allows {allowed}")
        }
        _ => raw.to_owned(),
    }
}

/// What the key at `path` accepts, in the words of an error message.
fn expected(path: &[&str]) -> Option<String> {
    let (section, key) = match path {
        ["rate_limits"] => {
            return Some("a table of named limits, as in [rate_limits.login]".into())
        }
        [_] => return Some("a table".into()),
        ["rate_limits", _] => return Some(format!("a table of {LIMIT_KEYS}")),
        ["rate_limits", _, key] => ("rate_limit", *key),
        [section, key] => (*section, *key),
        _ => return None,
    };
    let words = match (section, key) {
        ("redis", "url") => return Some(expected_url()),
        ("redis" | "analytics", "host") => "a host name or IP address in quotes",
        ("redis" | "analytics", "port") => "a port number from 1 to 65535",
        ("redis", "db") => "a database number of at least 0",
        ("redis", "username" | "password") => "a string",
        ("redis", "pool_size") => "a whole number of connections of at least 1",
        ("redis", "timeout_ms") => "a whole number of milliseconds of at least 1",
        ("flux", "storage") => "\"memory\" or \"redis\"",
        ("flux", "key_prefix") | ("analytics", "stream") => "a string",
        ("flux", "log_file") => "a file path in quotes",
        ("flux", "jitter_max_ms") => "a whole number of milliseconds of at least 0",
        ("flux", "ipv6_prefix") => "a prefix length from 1 to 128",
        ("analytics", "retention") => "a whole number of events of at least 1",
        ("analytics", "sample_rate") => "a number from 0.0 to 1.0",
        ("rate_limit", "policy") => return Some(format!("one of {}", Policy::allowed_names())),
        ("rate_limit", "requests") => "a whole number of at least 1",
        ("rate_limit", "period") => "a number of seconds greater than 0",
        ("rate_limit", "burst") => "a whole number of at least 1",
        ("rate_limit", "max_wait") => "a number of seconds of at least 0",
        (_, "cluster" | "fail_silently" | "console_logging" | "jitter_enabled" | "enabled") => {
            "true or false"
        }
        _ => return None,
    };
    Some(words.to_owned())
}

const URL_SCHEMES: [&str; 6] = [
    "redis",
    "rediss",
    "redis+cluster",
    "rediss+cluster",
    "redis+unix",
    "unix",
];

fn expected_url() -> String {
    let schemes: Vec<_> = URL_SCHEMES.iter().map(|s| format!("{s}://")).collect();
    format!("a URL starting with {}", schemes.join(", "))
}

fn has_redis_scheme(url: &str) -> bool {
    url.split_once("://")
        .is_some_and(|(scheme, _)| URL_SCHEMES.iter().any(|s| s.eq_ignore_ascii_case(scheme)))
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

fn strip_suffix_ignore_case<'s>(s: &'s str, suffix: &str) -> Option<&'s str> {
    let cut = s.len().checked_sub(suffix.len())?;
    (s.is_char_boundary(cut) && s[cut..].eq_ignore_ascii_case(suffix)).then(|| &s[..cut])
}

/// Percent-encodes all but RFC 3986's unreserved characters, so any
/// username or password survives inside a URL.
fn percent_encode(s: &str) -> String {
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
fn dotted(path: &[&str]) -> String {
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
fn line_at(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}
