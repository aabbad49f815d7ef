//! flux.toml: what loads, what it means, and what a mistake says.

use std::fs;
use std::path::{Path, PathBuf};

use flux_core::config::{Config, ConfigError, Discovered, RedisConfig, Storage};
use flux_core::{Limit, Policy, Rate};

/// Every key of flux-limiter 0.1's flux.toml, with the values of its complete
/// example: files users already have must keep loading. flux-py's tests read
/// the same file, so Python, C and Rust are checked against one text.
const SEED_EXAMPLE: &str = include_str!("data/flux-limiter-0.1.toml");

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml_str(text, Some(Path::new("flux.toml")))
}

/// The error's full message, as a user would read it.
fn error(text: &str) -> String {
    match parse(text) {
        Ok(config) => panic!("expected an error, loaded {config:?}"),
        Err(e) => e.to_string(),
    }
}

fn limit(policy: Policy, requests: u64, period: f64) -> Limit {
    Limit {
        policy,
        rates: vec![Rate::new(requests, (period * 1e6).round() as u64)],
        ..Limit::default()
    }
}

/// A fresh directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("flux-config-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn write(&self, relative: &str, text: &str) -> PathBuf {
        let path = self.0.join(relative);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------
// What loads

#[test]
fn the_seed_example_loads_with_its_values() {
    let config = parse(SEED_EXAMPLE).unwrap();

    assert_eq!(config.redis.host, "127.0.0.1");
    assert_eq!(config.redis.port, 6379);
    assert_eq!(config.redis.pool_size, 5);
    assert_eq!(config.redis.timeout_ms, 200);
    assert_eq!(config.redis.url(), "redis://127.0.0.1:6379/0");
    assert!(!config.redis.is_cluster());

    // A [redis] table is what selected Redis in flux-limiter 0.1.
    assert_eq!(config.flux.storage, Storage::Redis);
    assert_eq!(config.flux.key_prefix, "flux:");
    assert_eq!(config.flux.log_file, Some(PathBuf::from("flux_debug.log")));
    assert!(config.flux.fail_silently);
    assert!(!config.flux.console_logging);
    assert!(config.flux.jitter_enabled);
    assert_eq!(config.flux.jitter_max_ms, 500);

    assert!(config.analytics.enabled);
    assert_eq!(config.analytics.host, "127.0.0.1");
    assert_eq!(config.analytics.port, 4444);
    assert_eq!(config.analytics.stream, "flux:events");
    assert_eq!(config.analytics.retention, 100_000);
    assert_eq!(config.analytics.sample_rate, 1.0);

    assert_eq!(config.rate_limit, limit(Policy::Gcra, 100, 60.0));
    assert_eq!(
        config.rate_limits.keys().collect::<Vec<_>>(),
        ["api_tier_1", "strict_login"]
    );
    assert_eq!(
        config.rate_limits["api_tier_1"],
        limit(Policy::Gcra, 1000, 3600.0)
    );
    assert_eq!(
        config.rate_limits["strict_login"],
        limit(Policy::TokenBucket, 5, 300.0)
    );
    assert_eq!(config.origin, Some(PathBuf::from("flux.toml")));

    let login = config
        .limit(Some("strict_login"))
        .unwrap()
        .quotas()
        .unwrap();
    assert_eq!(
        (login[0].policy(), login[0].requests(), login[0].burst()),
        (Policy::TokenBucket, 5, 5)
    );
}

#[test]
fn no_file_means_memory_storage_and_the_documented_defaults() {
    let config = Config::default();
    assert_eq!(config.flux.storage, Storage::Memory);
    assert_eq!(config.redis.url(), "redis://127.0.0.1:6379/0");
    assert_eq!((config.redis.pool_size, config.redis.timeout_ms), (5, 200));
    assert!(!config.redis.cluster);
    assert_eq!(config.flux.key_prefix, "flux:");
    assert_eq!(config.flux.log_file, None);
    assert!(config.flux.fail_silently && config.flux.jitter_enabled);
    assert!(!config.flux.console_logging);
    assert_eq!(config.flux.jitter_max_ms, 500);
    assert_eq!(config.flux.ipv6_prefix, 64);
    assert_eq!(config.flux.local_cache_size, 10_000);
    assert!(!config.analytics.enabled);
    assert_eq!(
        (config.analytics.host.as_str(), config.analytics.port),
        ("127.0.0.1", 4444)
    );
    assert_eq!(config.analytics.stream, "flux:events");
    assert_eq!(config.analytics.retention, 100_000);
    assert_eq!(config.analytics.sample_rate, 1.0);
    assert_eq!(config.rate_limit, limit(Policy::Gcra, 100, 60.0));
    assert!(config.rate_limits.is_empty());
    assert_eq!(config.origin, None);
    assert_eq!(config.limit(None).unwrap(), &limit(Policy::Gcra, 100, 60.0));

    // An empty file says nothing either.
    let empty = Config::from_toml_str("", None).unwrap();
    assert_eq!(empty, Config::default());
}

#[test]
fn storage_is_redis_only_when_redis_is_configured_or_chosen() {
    assert_eq!(parse("[flux]\n").unwrap().flux.storage, Storage::Memory);
    assert_eq!(parse("[redis]\n").unwrap().flux.storage, Storage::Redis);
    assert_eq!(
        parse("[redis]\nhost = \"cache\"\n[flux]\nstorage = \"memory\"\n")
            .unwrap()
            .flux
            .storage,
        Storage::Memory
    );
    assert_eq!(
        parse("[flux]\nstorage = \"redis\"\n").unwrap().flux.storage,
        Storage::Redis
    );
}

#[test]
fn flux_redis_url_replaces_the_address_and_defaults_storage_to_redis() {
    let mut config = parse("[redis]\nhost = \"cache\"\n[rate_limit]\nrequests = 5\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let mut memory_default = parse("").unwrap();
    for config in [&mut config, &mut memory_default] {
        config
            .apply_env(Some("rediss://:s3cret@redis.internal:6380/2".into()))
            .unwrap();
        assert_eq!(config.flux.storage, Storage::Redis);
        assert_eq!(config.redis.url(), "rediss://:s3cret@redis.internal:6380/2");
    }

    // A storage the file chose is the user's decision, not a default.
    let mut chosen = parse("[flux]\nstorage = \"memory\"\n").unwrap();
    chosen.apply_env(Some("redis://cache:6379".into())).unwrap();
    assert_eq!(chosen.flux.storage, Storage::Memory);
    assert_eq!(chosen.redis.url(), "redis://cache:6379");

    // Unset or empty changes nothing.
    let mut untouched = Config::default();
    untouched.apply_env(None).unwrap();
    untouched.apply_env(Some(String::new())).unwrap();
    assert_eq!(untouched, Config::default());

    let bad = untouched
        .apply_env(Some("http://cache:6379".into()))
        .unwrap_err();
    assert_eq!(bad.key.as_deref(), Some("FLUX_REDIS_URL"));
    assert_eq!(
        bad.to_string(),
        "FLUX_REDIS_URL: must be a URL starting with redis://, rediss://, redis+cluster://, \
         rediss+cluster://, redis+sentinel://, rediss+sentinel://, redis+unix://, unix://, got \"http://cache:6379\""
    );
    assert_eq!(untouched, Config::default(), "a refused URL is not applied");
}

#[test]
fn named_limits_inherit_what_they_leave_out_except_burst() {
    let config = parse(
        r#"
[rate_limit]
policy = "token_bucket"
requests = 10
period = 2.5
burst = 40

[rate_limits.search]
requests = 3

[rate_limits.login]
policy = "gcra"
burst = 2
"#,
    )
    .unwrap();
    assert_eq!(
        config.rate_limit,
        Limit {
            burst: Some(40),
            ..limit(Policy::TokenBucket, 10, 2.5)
        }
    );
    // burst = 40 would let a limit of 3 burst to 40: it follows the limit's own requests.
    assert_eq!(
        config.rate_limits["search"],
        limit(Policy::TokenBucket, 3, 2.5)
    );
    assert_eq!(
        config.rate_limits["login"],
        Limit {
            burst: Some(2),
            ..limit(Policy::Gcra, 10, 2.5)
        }
    );
    assert_eq!(
        config.limit(Some("search")).unwrap(),
        &limit(Policy::TokenBucket, 3, 2.5)
    );
}

#[test]
fn max_wait_is_inherited_only_by_leaky_buckets() {
    let config = parse(
        r#"
[rate_limit]
policy = "leaky_bucket"
max_wait = 1.5

[rate_limits.upload]
requests = 2

[rate_limits.api]
policy = "gcra"
"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.rate_limits["upload"].max_wait, 1.5);
    assert_eq!(config.rate_limits["api"].max_wait, 0.0);
}

#[test]
fn periods_may_be_integers_or_fractions() {
    let config = parse("[rate_limit]\nperiod = 1\n[rate_limits.fast]\nperiod = 0.25\n").unwrap();
    assert_eq!(config.rate_limit.period(), 1.0);
    assert_eq!(config.rate_limits["fast"].period(), 0.25);
}

#[test]
fn an_unknown_limit_name_lists_the_names_defined() {
    let config = parse(SEED_EXAMPLE).unwrap();
    assert_eq!(
        config.limit(Some("login")).unwrap_err().to_string(),
        "flux.toml: rate_limits.login: no limit named \"login\"; \
         defined: \"api_tier_1\", \"strict_login\""
    );
    assert_eq!(
        Config::default()
            .limit(Some("login"))
            .unwrap_err()
            .to_string(),
        "rate_limits.login: no limit named \"login\"; no limit is defined under [rate_limits]"
    );
}

// ---------------------------------------------------------------------------
// Redis addresses

#[test]
fn redis_url_is_built_from_parts_with_credentials_encoded() {
    let redis = RedisConfig {
        host: "cache.internal".into(),
        port: 6380,
        db: 3,
        username: Some("app user".into()),
        password: Some("p@ss:w/rd%".into()),
        ..RedisConfig::default()
    };
    assert_eq!(
        redis.url(),
        "redis://app%20user:p%40ss%3Aw%2Frd%25@cache.internal:6380/3"
    );

    let password_only = RedisConfig {
        password: Some("secret".into()),
        ..RedisConfig::default()
    };
    assert_eq!(password_only.url(), "redis://:secret@127.0.0.1:6379/0");

    let user_only = RedisConfig {
        username: Some("reader".into()),
        ..RedisConfig::default()
    };
    assert_eq!(user_only.url(), "redis://reader@127.0.0.1:6379/0");

    let ipv6 = RedisConfig {
        host: "::1".into(),
        ..RedisConfig::default()
    };
    assert_eq!(ipv6.url(), "redis://[::1]:6379/0");
}

#[test]
fn cluster_comes_from_the_flag_or_the_url_scheme() {
    let config = parse("[redis]\nurl = \"rediss+cluster://node1:7000\"\n").unwrap();
    assert!(config.redis.is_cluster());
    // Redis clients do not know `+cluster`; is_cluster() carries it instead.
    assert_eq!(config.redis.url(), "rediss://node1:7000");

    let flagged = parse("[redis]\nhost = \"node1\"\nport = 7000\ncluster = true\n").unwrap();
    assert!(flagged.redis.is_cluster());
    assert_eq!(flagged.redis.url(), "redis://node1:7000/0");

    let plain = parse("[redis]\nurl = \"redis://node1:7000\"\n").unwrap();
    assert!(!plain.redis.is_cluster());
    assert_eq!(plain.redis.url(), "redis://node1:7000");
}

#[test]
fn sentinel_comes_from_the_url_scheme_or_the_sentinel_keys() {
    let url =
        parse("[redis]\nurl = \"redis+sentinel://:pw@10.0.0.1:26379,10.0.0.2:26379/mymaster/2\"\n")
            .unwrap();
    assert!(url.redis.is_sentinel() && !url.redis.is_cluster());
    assert_eq!(url.flux.storage, Storage::Redis);
    let tls = parse("[redis]\nurl = \"rediss+sentinel://10.0.0.1:26379/mymaster\"\n").unwrap();
    assert!(tls.redis.is_sentinel());

    let keys = parse(
        "[redis]\nsentinel = [\"10.0.0.1:26379\", \"[::1]:26380\"]\nmaster_name = \"mymaster\"\n\
         password = \"pw\"\ndb = 2\n",
    )
    .unwrap();
    assert!(keys.redis.is_sentinel());
    assert_eq!(
        keys.redis.url(),
        "redis+sentinel://:pw@10.0.0.1:26379,[::1]:26380/mymaster/2"
    );
    assert_eq!(
        keys.redis.display_url(),
        "redis+sentinel://:***@10.0.0.1:26379,[::1]:26380/mymaster/2"
    );

    // The sentinels' own password, beside the URL or the keys; never shown.
    let guarded = parse(
        "[redis]\nurl = \"redis+sentinel://10.0.0.1:26379/mymaster\"\n\
         sentinel_password = \"s3nt!nel\"\n",
    )
    .unwrap();
    assert_eq!(guarded.redis.sentinel_password.as_deref(), Some("s3nt!nel"));
    assert!(!format!("{:?}", guarded.redis).contains("s3nt!nel"));
    assert_eq!(
        guarded.redis.url(),
        "redis+sentinel://10.0.0.1:26379/mymaster"
    );
}

#[test]
fn sentinel_keys_say_what_is_wrong() {
    let head = "[redis]\nsentinel = [\"10.0.0.1:26379\"]\n";
    for (text, says) in [
        (
            head.to_owned(),
            "flux.toml:1: redis.master_name: must be set with sentinel: the name the sentinels \
             monitor the master under (sentinel monitor NAME ...)",
        ),
        (
            "[redis]\nmaster_name = \"m\"\n".to_owned(),
            "flux.toml:2: redis.master_name: is only used with sentinel = [\"host:port\", ...] \
             (a redis+sentinel:// URL names the master in its path)",
        ),
        (
            "[redis]\nsentinel = []\nmaster_name = \"m\"\n".to_owned(),
            "flux.toml:2: redis.sentinel: must name at least one sentinel, as in \
             [\"10.0.0.1:26379\", \"10.0.0.2:26379\"]",
        ),
        (
            format!("{head}master_name = \"m\"\nhost = \"10.0.0.9\"\n"),
            "flux.toml:2: redis.sentinel: the sentinels say where the master is: leave out host \
             (db, username and password are the master's)",
        ),
        (
            "[redis]\nsentinel = [\"10.0.0.1\"]\nmaster_name = \"m\"\n".to_owned(),
            "flux.toml:2: redis.sentinel: must be a list of \"host:port\" addresses (port 1 to \
             65535), got \"10.0.0.1\"",
        ),
        (
            "[redis]\nsentinel = \"10.0.0.1:26379\"\n".to_owned(),
            "flux.toml:2: redis.sentinel: must be a list of \"host:port\" addresses of sentinels, \
             got \"10.0.0.1:26379\"",
        ),
        (
            "[redis]\nurl = \"redis+sentinel://h:26379/m\"\ncluster = true\n".to_owned(),
            "flux.toml:3: redis.cluster: Redis Sentinel watches one master, not a cluster: use \
             one or the other",
        ),
        (
            "[redis]\nhost = \"10.0.0.9\"\nsentinel_password = \"pw\"\n".to_owned(),
            "flux.toml:3: redis.sentinel_password: is for Redis Sentinel's sentinels, only used \
             with sentinel = [\"host:port\", ...] or a redis+sentinel:// url (the server's are \
             username and password)",
        ),
        (
            "[redis]\nurl = \"redis+sentinel://h:26379/m\"\nsentinel_username = \"flux\"\n"
                .to_owned(),
            "flux.toml:3: redis.sentinel_username: needs sentinel_password: a sentinel's ACL user \
             logs in with both",
        ),
        (
            "[redis]\nurl = \"redis+sentinel://h:26379/m\"\nsentinel_password = 7\n".to_owned(),
            "flux.toml:3: redis.sentinel_password: must be a string, got 7",
        ),
    ] {
        assert_eq!(error(&text), says, "{text}");
    }
}

#[test]
fn the_local_cache_size_is_a_count_of_entries() {
    let off = parse("[flux]\nlocal_cache_size = 0\n").unwrap();
    assert_eq!(off.flux.local_cache_size, 0);
    assert_eq!(
        error("[flux]\nlocal_cache_size = -1\n"),
        "flux.toml:2: flux.local_cache_size: must be a whole number of entries of at least 0 \
         (0 turns the local deny cache off), got -1"
    );
}

#[test]
fn debug_output_never_shows_a_password() {
    let config = parse("[redis]\nurl = \"redis://app:hunter2@cache:6379/0\"\n").unwrap();
    let debug = format!("{config:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
    assert!(debug.contains("redis://app:***@cache:6379/0"), "{debug}");

    let parts = RedisConfig {
        password: Some("hunter2".into()),
        ..RedisConfig::default()
    };
    assert!(!format!("{parts:?}").contains("hunter2"));
}

/// Passwords as people write them into URLs, unencoded: every character that
/// ends a URL's userinfo or authority early is in one of them.
const PASSWORDS: [&str; 6] = ["s3cr/et", "p@ss", "pa:ss", "100%sure", "a/b@c:d%e?f#g", "x"];

#[test]
fn no_password_in_any_message_or_debug_output() {
    for password in PASSWORDS {
        let secret = format!("{password}-hunter2");
        for user in ["", "app", "reader.one"] {
            let userinfo = format!("{user}:{secret}@");
            let written = [
                format!("http://{userinfo}cache:6379/0"),
                format!("{userinfo}cache:6379"),
                format!("redis//{userinfo}cache"),
            ];
            for url in &written {
                let text = format!("[redis]\nurl = {url:?}\n");
                let message = error(&text);
                assert!(!message.contains(&secret), "{message}");
                assert!(message.contains("***"), "{message}");

                let from_env = Config::default().apply_env(Some(url.clone())).unwrap_err();
                assert!(!from_env.to_string().contains(&secret), "{from_env}");
            }
            let url = format!("redis://{userinfo}cache:6379/0");
            let config = parse(&format!("[redis]\nurl = {url:?}\n")).unwrap();
            let shown = config.redis.display_url();
            assert_eq!(shown, format!("redis://{user}:***@cache:6379/0"));
            assert!(!format!("{config:?}").contains(&secret));
            assert!(!format!("{:?}", config.redis).contains(&secret));
        }
        // The password of a unix socket rides in the query: all after it is hidden.
        let unix = format!("unix:///run/redis.sock?db=1&pass={secret}&user=app");
        let config = parse(&format!("[redis]\nurl = {unix:?}\n")).unwrap();
        assert_eq!(
            config.redis.display_url(),
            "unix:///run/redis.sock?db=1&pass=***"
        );
        assert!(!format!("{config:?}").contains(&secret));
    }
}

#[test]
fn a_password_of_the_wrong_type_is_not_echoed() {
    let message = error("[redis]\npassword = 12345678\n");
    assert!(!message.contains("12345678"), "{message}");
    assert_eq!(
        message,
        "flux.toml:2: redis.password: must be a string, got a value of another type (not shown)"
    );
}

// ---------------------------------------------------------------------------
// What a mistake says

#[test]
fn requests_zero_names_file_line_key_and_what_is_allowed() {
    let text = "[rate_limits.login]\nperiod = 60\nrequests = 0\n";
    let err = parse(text).unwrap_err();
    assert_eq!(err.file, Some(PathBuf::from("flux.toml")));
    assert_eq!(err.line, Some(3));
    assert_eq!(err.key.as_deref(), Some("rate_limits.login.requests"));
    assert_eq!(
        err.to_string(),
        "flux.toml:3: rate_limits.login.requests: must be a whole number of at least 1, got 0"
    );
}

#[test]
fn an_unknown_key_lists_the_keys_its_table_allows() {
    assert_eq!(
        error("[rate_limit]\nrequests = 5\npolcy = \"gcra\"\n"),
        "flux.toml:3: rate_limit.polcy: unknown key; \
         [rate_limit] allows policy, rate, requests, period, burst, max_wait, shadow"
    );
    assert_eq!(
        error("[rate_limits.login]\nrequest = 5\n"),
        "flux.toml:2: rate_limits.login.request: unknown key; \
         [rate_limits.login] allows policy, rate, requests, period, burst, max_wait, shadow"
    );
    assert_eq!(
        error("[redis]\nhostname = \"cache\"\n"),
        "flux.toml:2: redis.hostname: unknown key; [redis] allows url, host, port, db, \
         username, password, pool_size, timeout_ms, cluster, sentinel, master_name, sentinel_password, sentinel_username"
    );
}

#[test]
fn an_unknown_section_lists_the_sections() {
    assert_eq!(
        error("[redis]\n\n[limits]\nrequests = 5\n"),
        "flux.toml:3: limits: unknown section; flux.toml has [redis], [flux], [analytics], \
         [rate_limit], [rate_limits.NAME] and [http]"
    );
}

#[test]
fn a_wrong_type_says_what_the_key_takes_and_what_was_written() {
    assert_eq!(
        error("[rate_limit]\nrequests = \"ten\"\n"),
        "flux.toml:2: rate_limit.requests: must be a whole number of at least 1, got \"ten\""
    );
    assert_eq!(
        error("[rate_limit]\nrequests = 2.5\n"),
        "flux.toml:2: rate_limit.requests: must be a whole number of at least 1, got 2.5"
    );
    assert_eq!(
        error("[flux]\nfail_silently = \"yes\"\n"),
        "flux.toml:2: flux.fail_silently: must be true or false, got \"yes\""
    );
    assert_eq!(
        error("[flux]\nstorage = \"disk\"\n"),
        "flux.toml:2: flux.storage: must be \"memory\" or \"redis\", got \"disk\""
    );
    assert_eq!(
        error("rate_limit = 5\n"),
        "flux.toml:1: rate_limit: must be a table, got 5"
    );
}

#[test]
fn an_unknown_policy_lists_the_policies() {
    assert_eq!(
        error("[rate_limits.login]\nrequests = 5\npolicy = \"sliding_log\"\n"),
        "flux.toml:3: rate_limits.login.policy: must be one of \"gcra\", \"token_bucket\", \
         \"leaky_bucket\", \"fixed_window\", \"sliding_window\", got \"sliding_log\""
    );
}

#[test]
fn a_period_must_be_more_than_zero() {
    for period in ["0", "-1", "0.0000001"] {
        let message = error(&format!("[rate_limit]\nperiod = {period}\n"));
        assert!(
            message.starts_with(
                "flux.toml:2: rate_limit.period: must be a number of seconds greater than 0"
            ),
            "{message}"
        );
    }
    assert_eq!(
        error("[rate_limit]\nperiod = -1\n"),
        "flux.toml:2: rate_limit.period: must be a number of seconds greater than 0 \
         (at least 0.000001), got -1"
    );
    assert!(error("[rate_limit]\nperiod = \"1m\"\n").starts_with(
        "flux.toml:2: rate_limit.period: must be a number of seconds greater than 0, got \"1m\""
    ));
}

#[test]
fn a_burst_must_be_at_least_one_and_only_on_bucket_policies() {
    assert_eq!(
        error("[rate_limit]\nburst = 0\n"),
        "flux.toml:2: rate_limit.burst: must be at least 1, got 0"
    );
    let window = error("[rate_limits.daily]\npolicy = \"fixed_window\"\nburst = 50\n");
    assert!(
        window.starts_with(
            "flux.toml:3: rate_limits.daily.burst: applies to gcra, token_bucket and leaky_bucket"
        ),
        "{window}"
    );
}

#[test]
fn max_wait_belongs_to_leaky_bucket() {
    assert_eq!(
        error("[rate_limit]\nmax_wait = 2\n"),
        "flux.toml:2: rate_limit.max_wait: applies to leaky_bucket only; gcra cannot delay a call"
    );
}

#[test]
fn a_limit_too_large_to_decide_exactly_points_at_its_table() {
    let message = error("[rate_limit]\nrequests = 1\n\n[rate_limits.huge]\nburst = 9007199254740991\nperiod = 86400\n");
    assert!(
        message.starts_with("flux.toml:4: rate_limits.huge: this gcra quota is too large"),
        "{message}"
    );
}

#[test]
fn out_of_range_numbers_say_the_range() {
    let cases = [
        (
            "[analytics]\nsample_rate = 1.5\n",
            "flux.toml:2: analytics.sample_rate: must be a number from 0.0 to 1.0, got 1.5",
        ),
        (
            "[analytics]\nsample_rate = -0.1\n",
            "flux.toml:2: analytics.sample_rate: must be a number from 0.0 to 1.0, got -0.1",
        ),
        (
            "[redis]\nport = 0\n",
            "flux.toml:2: redis.port: must be a port number from 1 to 65535, got 0",
        ),
        (
            "[redis]\nport = 70000\n",
            "flux.toml:2: redis.port: must be a port number from 1 to 65535, got 70000",
        ),
        (
            "[analytics]\nport = 0\n",
            "flux.toml:2: analytics.port: must be a port number from 1 to 65535, got 0",
        ),
        (
            "[redis]\npool_size = 0\n",
            "flux.toml:2: redis.pool_size: must be a whole number of connections of at least 1, got 0",
        ),
        (
            "[redis]\ntimeout_ms = 0\n",
            "flux.toml:2: redis.timeout_ms: must be a whole number of milliseconds of at least 1, got 0",
        ),
        (
            "[flux]\nipv6_prefix = 0\n",
            "flux.toml:2: flux.ipv6_prefix: must be a prefix length from 1 to 128, got 0",
        ),
        (
            "[flux]\nipv6_prefix = 129\n",
            "flux.toml:2: flux.ipv6_prefix: must be a prefix length from 1 to 128, got 129",
        ),
        (
            "[flux]\nipv6_prefix = 300\n",
            "flux.toml:2: flux.ipv6_prefix: must be a prefix length from 1 to 128, got 300",
        ),
        (
            "[redis]\ntimeout_ms = -5\n",
            "flux.toml:2: redis.timeout_ms: must be a whole number of milliseconds of at least 1, got -5",
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(error(text), expected, "for {text:?}");
    }
}

#[test]
fn a_redis_url_must_be_a_redis_url_and_stand_alone() {
    assert_eq!(
        error("[redis]\nurl = \"cache:6379\"\n"),
        "flux.toml:2: redis.url: must be a URL starting with redis://, rediss://, \
         redis+cluster://, rediss+cluster://, redis+sentinel://, rediss+sentinel://, redis+unix://, unix://, got \"cache:6379\""
    );
    assert_eq!(
        error("[redis]\nurl = \"redis://cache\"\nport = 6380\n"),
        "flux.toml:2: redis.url: set either url or host, port, db, username and password, \
         not both (found port)"
    );
    assert_eq!(
        error("[redis]\ncluster = true\ndb = 2\n"),
        "flux.toml:3: redis.db: must be 0 with Redis Cluster, which has one database, got 2"
    );
}

#[test]
fn a_syntax_error_gives_its_line() {
    let err = parse("[redis]\nport = 6379\n\n[rate_limit\nrequests = 5\n").unwrap_err();
    assert_eq!(err.line, Some(4));
    assert_eq!(err.to_string(), "flux.toml:4: unclosed table, expected `]`");

    let err = parse("[rate_limit]\nrequests = 5\nrequests = 6\n").unwrap_err();
    assert_eq!(err.to_string(), "flux.toml:3: duplicate key");
}

#[test]
fn keys_that_are_not_bare_are_quoted() {
    assert_eq!(
        error("[rate_limits.\"api.v1\"]\nrequests = 0\n"),
        "flux.toml:2: rate_limits.\"api.v1\".requests: must be a whole number of at least 1, got 0"
    );
}

#[test]
fn errors_without_a_file_leave_it_out() {
    let err = Config::from_toml_str("[rate_limit]\nrequests = 0\n", None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "line 2: rate_limit.requests: must be a whole number of at least 1, got 0"
    );
}

#[test]
fn an_unreadable_file_names_the_file_and_the_reason() {
    let dir = TempDir::new("unreadable");
    let missing = dir.0.join("nope.toml");
    let reason = fs::read_to_string(&missing).unwrap_err().to_string();
    let err = Config::load_file(&missing).unwrap_err();
    assert_eq!(err.file.as_deref(), Some(missing.as_path()));
    assert_eq!(
        err.to_string(),
        format!("{}: cannot read the file: {reason}", missing.display())
    );

    // A directory where the file should be is unreadable, not absent.
    fs::create_dir_all(dir.0.join("flux.toml")).unwrap();
    let err = Config::discover_in(&dir.0, None).unwrap_err();
    assert_eq!(err.file, Some(dir.0.join("flux.toml")));
    assert!(err.message.starts_with("cannot read the file: "), "{err}");
}

// ---------------------------------------------------------------------------
// Finding the file

#[test]
fn discovery_order_is_flux_config_then_flux_toml_then_config_dir_then_defaults() {
    let dir = TempDir::new("discovery");

    let (config, found) = Config::discover_in(&dir.0, None).unwrap();
    assert_eq!(found, Discovered::Defaults);
    assert_eq!(config, Config::default());

    let nested = dir.write("config/flux.toml", "[rate_limit]\nrequests = 3\n");
    let (config, found) = Config::discover_in(&dir.0, None).unwrap();
    assert_eq!(found, Discovered::File(nested.clone()));
    assert_eq!(config.rate_limit.requests(), 3);
    assert_eq!(config.origin, Some(nested));

    let top = dir.write("flux.toml", "[rate_limit]\nrequests = 2\n");
    let (config, found) = Config::discover_in(&dir.0, None).unwrap();
    assert_eq!(found, Discovered::File(top));
    assert_eq!(config.rate_limit.requests(), 2);

    let chosen = dir.write("elsewhere/limits.toml", "[rate_limit]\nrequests = 1\n");
    let (config, found) = Config::discover_in(&dir.0, Some(chosen.clone())).unwrap();
    assert_eq!(found, Discovered::File(chosen.clone()));
    assert_eq!(config.rate_limit.requests(), 1);

    // A relative $FLUX_CONFIG is relative to the working directory.
    let (_, found) =
        Config::discover_in(&dir.0, Some(PathBuf::from("elsewhere/limits.toml"))).unwrap();
    assert_eq!(found, Discovered::File(chosen));
}

#[test]
fn a_missing_flux_config_file_is_an_error_naming_it() {
    let dir = TempDir::new("flux-config-missing");
    dir.write("flux.toml", "");
    let missing = dir.0.join("typo.toml");
    let reason = fs::read_to_string(&missing).unwrap_err().to_string();
    let err = Config::discover_in(&dir.0, Some(missing.clone())).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: FLUX_CONFIG: names a file that cannot be read: {reason}",
            missing.display()
        )
    );
}

#[test]
fn a_file_that_does_not_load_never_falls_back() {
    let dir = TempDir::new("no-fallback");
    dir.write("config/flux.toml", "[rate_limit]\nrequests = 7\n");
    let broken = dir.write("flux.toml", "[rate_limit]\nrequests = 0\n");
    let err = Config::discover_in(&dir.0, None).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}:2: rate_limit.requests: must be a whole number of at least 1, got 0",
            broken.display()
        )
    );
}

/// The one test that sets process environment variables; every other test
/// passes their values in, so nothing here races.
#[test]
fn discover_and_load_file_read_the_environment() {
    let dir = TempDir::new("environment");
    let file = dir.write("app.toml", "[rate_limit]\nrequests = 9\n");
    std::env::set_var("FLUX_CONFIG", &file);
    std::env::set_var("FLUX_REDIS_URL", "redis://shared:6379/1");

    let discovered = Config::discover();
    let loaded = Config::load_file(&file);

    std::env::remove_var("FLUX_CONFIG");
    std::env::remove_var("FLUX_REDIS_URL");

    let (config, found) = discovered.unwrap();
    assert_eq!(found, Discovered::File(file.clone()));
    assert_eq!(config.rate_limit.requests(), 9);
    assert_eq!(config.flux.storage, Storage::Redis);
    assert_eq!(config.redis.url(), "redis://shared:6379/1");
    assert_eq!(loaded.unwrap(), config);
}

#[test]
fn a_limit_may_be_written_as_rates() {
    let config = parse(
        r#"
[rate_limit]
rate = "10/second; 1000/day"
shadow = true

[rate_limits.login]
rate = "5 per minute"
policy = "fixed_window"

[rate_limits.quiet]
shadow = false
"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config.rate_limit.rates,
        [Rate::new(10, 1_000_000), Rate::new(1000, 86_400_000_000)]
    );
    assert!(config.rate_limit.shadow);
    assert_eq!(config.rate_limit.quotas().unwrap().len(), 2);
    let login = &config.rate_limits["login"];
    assert_eq!(
        (login.policy, login.rates.as_slice(), login.shadow),
        (Policy::FixedWindow, &[Rate::new(5, 60_000_000)][..], true)
    );
    // Every part left out is inherited, rates and all.
    let quiet = &config.rate_limits["quiet"];
    assert_eq!(quiet.rates, config.rate_limit.rates);
    assert!(!quiet.shadow);
}

#[test]
fn rate_errors_name_the_key_and_the_part() {
    assert_eq!(
        error("[rate_limit]\nrate = \"10/fortnight\"\n"),
        "flux.toml:2: rate_limit.rate: invalid rate \"10/fortnight\": unknown unit \"fortnight\"; \
         a rate reads N/unit, N per unit or N/<number><unit>, as in \"10/second\", \"100 per \
         minute\", \"5/30s\" or \"1000/day\", several joined by \";\" (units: second, minute, \
         hour, day, week, or s, m, h, d, w)"
    );
    assert_eq!(
        error("[rate_limit]\nrate = 10\n"),
        "flux.toml:2: rate_limit.rate: must be a rate in quotes, as in \"10/second\", \"100 per \
         minute\" or \"10/second;1000/day\", got 10"
    );
    assert_eq!(
        error("[rate_limits.api]\nrate = \"10/second\"\nrequests = 5\n"),
        "flux.toml:2: rate_limits.api.rate: replaces requests and period: give either rate \
         (\"10/second\") or requests and period, not both"
    );
    assert_eq!(
        error("[rate_limits.api]\nrate = \"10/second;5/minute\"\nburst = 3\n"),
        "flux.toml:3: rate_limits.api.burst: applies to a limit of one rate, and this one has \
         2: leave burst out (each rate's burst is its requests)"
    );
    assert_eq!(
        error("[rate_limit]\nrate = \"10/second;5/minute\"\n[rate_limits.api]\nrequests = 3\n"),
        "flux.toml:4: rate_limits.api.requests: and period replace the rate of a limit of one \
         rate, and this one has 2: give rate (\"10/second;1000/day\") instead"
    );
}

#[test]
fn a_period_alone_keeps_the_burst_it_was_written_with() {
    let config = parse("[rate_limit]\nburst = 40\n[rate_limits.slow]\nperiod = 120\n").unwrap();
    assert_eq!(config.rate_limits["slow"].burst, Some(40));
    assert_eq!(config.rate_limits["slow"].period(), 120.0);
}

#[test]
fn json_from_a_program_gives_the_same_config_and_messages() {
    let text = r#"{
        "redis": {"url": "redis://127.0.0.1:6380/2", "pool_size": 3, "password": null},
        "flux": {"key_prefix": "app:", "fail_silently": false},
        "analytics": {"enabled": true, "sample_rate": 0.5},
        "rate_limit": {"policy": "leaky_bucket", "requests": 2, "period": 10, "max_wait": 6},
        "rate_limits": {"api": {"rate": "10/second;1000/day"}, "login": {"requests": 5}}
    }"#;
    let from_json = Config::from_json_str(text, Some(Path::new("FluxConfig"))).unwrap();
    let from_toml = parse(
        r#"
[redis]
url = "redis://127.0.0.1:6380/2"
pool_size = 3
[flux]
key_prefix = "app:"
fail_silently = false
[analytics]
enabled = true
sample_rate = 0.5
[rate_limit]
policy = "leaky_bucket"
requests = 2
period = 10
max_wait = 6
[rate_limits.api]
rate = "10/second;1000/day"
[rate_limits.login]
requests = 5
"#,
    )
    .unwrap();
    assert_eq!(
        (&from_json.redis, &from_json.flux, &from_json.analytics),
        (&from_toml.redis, &from_toml.flux, &from_toml.analytics)
    );
    assert_eq!(
        (&from_json.rate_limit, &from_json.rate_limits),
        (&from_toml.rate_limit, &from_toml.rate_limits)
    );
    assert_eq!(
        from_json.flux.storage,
        Storage::Redis,
        "a [redis] section chooses Redis"
    );
    assert_eq!(from_json.rate_limits["login"].max_wait, 6.0);

    let bad = |text: &str| {
        Config::from_json_str(text, Some(Path::new("FluxConfig")))
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        bad(r#"{"rate_limits": {"api": {"requests": 0}}}"#),
        "FluxConfig: rate_limits.api.requests: must be a whole number of at least 1, got 0"
    );
    assert_eq!(
        bad(r#"{"flux": {"fail_silently": "yes"}}"#),
        "FluxConfig: flux.fail_silently: must be true or false, got \"yes\""
    );
    assert_eq!(
        bad(r#"{"flux": {"bogus": 1}}"#),
        "FluxConfig: flux.bogus: unknown key; [flux] allows storage, key_prefix, log_file, \
         fail_silently, console_logging, jitter_enabled, jitter_max_ms, ipv6_prefix, local_cache_size"
    );
    assert_eq!(
        bad(r#"{"redis": {"url": "http://u:s3cret@host"}}"#),
        "FluxConfig: redis.url: must be a URL starting with redis://, rediss://, \
         redis+cluster://, rediss+cluster://, redis+sentinel://, rediss+sentinel://, redis+unix://, unix://, got \"http://u:***@host\""
    );
    assert!(bad("[1]").contains("must be an object of sections"));
    assert!(bad("{").contains("not valid JSON"));
}

#[test]
fn a_config_serializes_to_what_loads_it_again() {
    let config = parse(SEED_EXAMPLE).unwrap();
    let json = serde_json::to_value(&config).unwrap();
    assert_eq!(json["rate_limits"]["strict_login"]["rate"], "5/300s");
    assert_eq!(json["rate_limits"]["strict_login"]["requests"], 5);
    assert_eq!(
        json["rate_limits"]["strict_login"]["burst"],
        serde_json::Value::Null
    );
    assert_eq!(json["flux"]["storage"], "redis");
    assert_eq!(json["origin"], "flux.toml");
    // What it shows is what it was: loading it back gives the same limits.
    let mut again = json.clone();
    again.as_object_mut().unwrap().remove("origin");
    let drop_derived = |limit: &mut serde_json::Value| {
        let limit = limit.as_object_mut().unwrap();
        limit.remove("requests");
        limit.remove("period");
    };
    drop_derived(&mut again["rate_limit"]);
    for limit in again["rate_limits"].as_object_mut().unwrap().values_mut() {
        drop_derived(limit);
    }
    let reloaded = Config::from_json_str(&again.to_string(), None).unwrap();
    assert_eq!(reloaded.rate_limits, config.rate_limits);
    assert_eq!(reloaded.rate_limit, config.rate_limit);
    assert_eq!(reloaded.flux, config.flux);
}
