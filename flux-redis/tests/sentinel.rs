//! Redis Sentinel with real processes started by the test: a master, its
//! replica and sentinels. A limiter finds the master through the sentinels;
//! when the master dies, Sentinel promotes the replica and the limiter
//! decides there, with the counts written before the failover, while no call
//! is held beyond its time bound; when a failover demotes a live master, the
//! `READONLY` it answers sends the limiter back to the sentinels.

mod support;

use std::thread;
use std::time::{Duration, Instant};

use flux_core::config::Config;
use flux_core::{apply_batch, BatchRequest, Decision, LimitSpec, Limiter, Op, Source};
use support::{RedisSentinel, RedisServer};

const MASTER: &str = "flux-master";
const TIMEOUT_MS: u64 = 250;
/// Sentinel's side: the master is down after this long without an answer.
const DOWN_AFTER_MS: u64 = 500;

/// A master and a replica in sync, and `n` sentinels that know both and
/// (for a quorum) each other.
fn deployment(n: usize, quorum: u32) -> (RedisServer, RedisServer, Vec<RedisSentinel>) {
    let master = RedisServer::start();
    let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &master.port.to_string()]);
    wait_until("the replica in sync", Duration::from_secs(20), || {
        replica
            .cli(&["INFO", "replication"])
            .contains("master_link_status:up")
    });
    let sentinels: Vec<RedisSentinel> = (0..n)
        .map(|_| RedisSentinel::start(MASTER, master.port, quorum, DOWN_AFTER_MS, 3_000))
        .collect();
    // Sentinels learn of replicas from the master's INFO and of each other
    // from hello messages every 2 s.
    wait_until(
        "every sentinel knows the replica and the others",
        Duration::from_secs(30),
        || {
            sentinels.iter().all(|s| {
                let master = s.cli(&["SENTINEL", "master", MASTER]);
                field(&master, "num-slaves") == Some("1")
                    && field(&master, "num-other-sentinels") == Some(&(n - 1).to_string())
            })
        },
    );
    (master, replica, sentinels)
}

/// A limiter of 1000 calls per 10 minutes (fixed window, so its count shows
/// what carried over) reaching the master through `sentinels`.
fn limiter(sentinels: &[RedisSentinel], pool_size: u32) -> Limiter {
    let addresses: Vec<String> = sentinels
        .iter()
        .map(|s| format!("127.0.0.1:{}", s.port))
        .collect();
    let config = Config::from_toml_str(
        &format!(
            r#"
            [redis]
            url = "redis+sentinel://{}/{MASTER}"
            timeout_ms = {TIMEOUT_MS}
            pool_size = {pool_size}
            [flux]
            fail_silently = true
            [rate_limit]
            policy = "fixed_window"
            requests = 1000
            period = 600
            "#,
            addresses.join(",")
        ),
        None,
    )
    .unwrap();
    let opened = flux_redis::open(&config).unwrap();
    Limiter::new(
        opened.backend,
        &config,
        "failover",
        None,
        &LimitSpec::default(),
    )
    .unwrap()
}

#[test]
fn a_dead_master_is_replaced_by_the_promoted_replica_with_its_counts() {
    let (mut master, replica, sentinels) = deployment(3, 2);
    let limiter = limiter(&sentinels, 2);
    count_and_replicate(&limiter, 10, &master, &replica);

    // Watches the sentinels' answers to see when the first of them names
    // the replica: the promotion as Sentinel sees it.
    let watched: Vec<redis::Connection> = sentinels
        .iter()
        .map(|s| {
            let client = redis::Client::open(format!("redis://127.0.0.1:{}", s.port)).unwrap();
            client.get_connection().unwrap()
        })
        .collect();
    let killed = Instant::now();
    master.kill();
    let (promotion, calls) = thread::scope(|scope| {
        let watcher = scope.spawn(move || {
            let mut watched = watched;
            let deadline = killed + Duration::from_secs(60);
            while Instant::now() < deadline {
                for conn in &mut watched {
                    let address: Option<(String, u16)> = redis::cmd("SENTINEL")
                        .arg("get-master-addr-by-name")
                        .arg(MASTER)
                        .query(conn)
                        .unwrap();
                    if address.is_some_and(|(_, port)| port == replica.port) {
                        return Some(killed.elapsed());
                    }
                }
                thread::sleep(Duration::from_millis(2));
            }
            None
        });
        // One call every 20 ms until one is decided by the new master.
        let mut calls: Vec<(Duration, Duration, Decision)> = Vec::new();
        let deadline = killed + Duration::from_secs(60);
        while Instant::now() < deadline {
            let started = killed.elapsed();
            let decision = limiter.decide(b"client", 1).unwrap();
            calls.push((started, killed.elapsed() - started, decision));
            if decision.source == Source::Storage {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        (watcher.join().unwrap(), calls)
    });

    let promotion = promotion.expect("Sentinel promoted the replica within 60 s");
    let &(started, took, decided) = calls.last().unwrap();
    assert_eq!(
        decided.source,
        Source::Storage,
        "a decision on the new master"
    );
    let first_decision = started + took;
    let failed_open = calls.len() - 1;
    let slowest = calls.iter().map(|c| c.1).max().unwrap();
    println!(
        "failover timeline: master killed at 0 ms; a sentinel names the replica at {} ms; \
         first decision on it at {} ms ({} ms after); {failed_open} calls failed open \
         meanwhile, the slowest took {} ms (timeout_ms {TIMEOUT_MS})",
        promotion.as_millis(),
        first_decision.as_millis(),
        first_decision.as_millis() as i128 - promotion.as_millis() as i128,
        slowest.as_millis()
    );
    assert!(
        calls[..failed_open]
            .iter()
            .all(|c| c.2.source == Source::FailOpen),
        "until then every call failed open"
    );
    // Counted on from the 10 calls before the failover: the 11th.
    assert_eq!(decided.remaining, 1000 - 11, "the count carried over");
    assert!(
        first_decision <= promotion + Duration::from_secs(1),
        "decided on the new master {} ms after the sentinels named it",
        first_decision.saturating_sub(promotion).as_millis()
    );
    // Waiting for a pooled connection, then the call: each within timeout_ms.
    let bound = Duration::from_millis(2 * TIMEOUT_MS + 500);
    assert!(slowest <= bound, "a call took {slowest:?}");
}

#[test]
fn a_master_answering_readonly_sends_the_limiter_back_to_the_sentinels() {
    let (master, replica, sentinels) = deployment(1, 1);
    // One connection: the call that meets the demoted master is the one
    // that fails, and the next connection is made anew.
    let limiter = limiter(&sentinels, 1);
    let key = count_and_replicate(&limiter, 3, &master, &replica);

    // A failover made by hand: a failover by Sentinel also closes the old
    // master's connections, which would hide the READONLY this is about.
    let sentinel = &sentinels[0];
    assert_eq!(sentinel.cli(&["SENTINEL", "REMOVE", MASTER]), "OK");
    assert_eq!(replica.cli(&["REPLICAOF", "NO", "ONE"]), "OK");
    let replica_port = replica.port.to_string();
    assert_eq!(master.cli(&["REPLICAOF", "127.0.0.1", &replica_port]), "OK");
    let monitor = [
        "SENTINEL",
        "MONITOR",
        MASTER,
        "127.0.0.1",
        &replica_port,
        "1",
    ];
    assert_eq!(sentinel.cli(&monitor), "OK");
    assert!(master.cli(&["ROLE"]).starts_with("slave"));

    // The pooled connection still reaches the old master, now a replica;
    // a batch (one pipeline) meets it there.
    let request = |identity: &'static [u8]| BatchRequest {
        limiter: &limiter,
        endpoint: None,
        identity,
        cost: 1,
        op: Op::Decide,
    };
    for refused in apply_batch(&[request(b"client"), request(b"other")]) {
        assert_eq!(
            refused.unwrap().source,
            Source::FailOpen,
            "READONLY is Redis failing"
        );
    }
    let decided = limiter.decide(b"client", 1).unwrap();
    assert_eq!(
        (decided.source, decided.remaining),
        (Source::Storage, 1000 - 4),
        "decided on the new master, counting on"
    );
    assert_eq!(replica.cli(&["EXISTS", &key]), "1");
}

/// Waits until `replica` holds what `master` holds at `key`: replication is
/// asynchronous, and a promoted replica counts on from what it had. (`WAIT`
/// would not say so: it waits for the writes of the connection that sends
/// it, and redis-cli's has made none.)
/// Decides `calls` calls of "client", each counted by Redis, and waits for
/// the replica to hold the count; the client's key.
fn count_and_replicate(
    limiter: &Limiter,
    calls: u64,
    master: &RedisServer,
    replica: &RedisServer,
) -> String {
    for i in 1..=calls {
        let decision = limiter.decide(b"client", 1).unwrap();
        assert_eq!(
            (decision.source, decision.remaining),
            (Source::Storage, 1000 - i)
        );
    }
    let key = limiter.key(b"client");
    wait_replicated(master, replica, &key);
    key
}

fn wait_replicated(master: &RedisServer, replica: &RedisServer, key: &str) {
    let written = master.cli(&["GET", key]);
    wait_until("the replica has the count", Duration::from_secs(10), || {
        replica.cli(&["GET", key]) == written
    });
}

/// The value after `name` in redis-cli's alternate name and value lines.
fn field<'a>(reply: &'a str, name: &str) -> Option<&'a str> {
    let mut lines = reply.lines();
    while let Some(line) = lines.next() {
        let value = lines.next();
        if line == name {
            return value;
        }
    }
    None
}

fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "waited {within:?} for {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// A master without a password, and one sentinel of it that answers only
/// `user` logging in with the password "s3nt!nel" (`default`: its
/// `requirepass`; another: an ACL user, `default` off).
fn guarded_deployment(user: &str) -> (RedisServer, RedisSentinel) {
    let master = RedisServer::start();
    let sentinel = RedisSentinel::start_guarded(
        MASTER,
        master.port,
        1,
        DOWN_AFTER_MS,
        3_000,
        Some((user, "s3nt!nel")),
    );
    (master, sentinel)
}

/// A limiter on the master the sentinel at `port` names, with `extra`
/// lines under `[redis]`; decisions fail rather than admit when Redis
/// cannot be reached.
fn guarded_limiter(port: u16, extra: &str) -> Result<Limiter, String> {
    let config = Config::from_toml_str(
        &format!(
            r#"
            [redis]
            url = "redis+sentinel://127.0.0.1:{port}/{MASTER}"
            timeout_ms = 2000
            {extra}
            [flux]
            fail_silently = false
            [rate_limit]
            requests = 5
            period = 60
            "#
        ),
        None,
    )
    .map_err(|e| e.to_string())?;
    let opened = flux_redis::open(&config).map_err(|e| e.to_string())?;
    Limiter::new(
        opened.backend,
        &config,
        "guarded",
        None,
        &LimitSpec::default(),
    )
    .map_err(|e| e.to_string())
}

#[test]
fn sentinels_that_ask_for_a_password_are_given_sentinel_password() {
    let (master, sentinel) = guarded_deployment("default");

    let unguarded = guarded_limiter(sentinel.port, "").unwrap();
    let refused = unguarded.decide(b"client", 1).unwrap_err().to_string();
    assert!(refused.contains("NOAUTH"), "{refused}");
    assert!(refused.contains("sentinel_password"), "{refused}");
    let wrong = guarded_limiter(sentinel.port, r#"sentinel_password = "wrong""#).unwrap();
    let refused = wrong.decide(b"client", 1).unwrap_err().to_string();
    assert!(
        refused.contains("refused [redis] sentinel_password"),
        "{refused}"
    );
    assert!(refused.contains("WRONGPASS"), "{refused}");

    let limiter = guarded_limiter(sentinel.port, r#"sentinel_password = "s3nt!nel""#).unwrap();
    let remaining: Vec<u64> = (0..3)
        .map(|_| limiter.decide(b"client", 1).unwrap())
        .map(|d| {
            assert_eq!(d.source, Source::Storage);
            d.remaining
        })
        .collect();
    assert_eq!(remaining, [4, 3, 2]);
    // Counted on the master the sentinel named (it has no password of its own).
    assert_eq!(master.cli(&["EXISTS", &limiter.key(b"client")]), "1");
}

#[test]
fn a_sentinel_acl_user_logs_in_with_sentinel_username() {
    let (master, sentinel) = guarded_deployment("flux");

    // The password alone is the user `default`'s, which is off.
    let nameless = guarded_limiter(sentinel.port, r#"sentinel_password = "s3nt!nel""#).unwrap();
    let refused = nameless.decide(b"client", 1).unwrap_err().to_string();
    assert!(
        refused.contains("refused [redis] sentinel_password"),
        "{refused}"
    );

    let limiter = guarded_limiter(
        sentinel.port,
        r#"sentinel_username = "flux"
           sentinel_password = "s3nt!nel""#,
    )
    .unwrap();
    let decision = limiter.decide(b"client", 1).unwrap();
    assert_eq!((decision.source, decision.remaining), (Source::Storage, 4));
    assert_eq!(master.cli(&["EXISTS", &limiter.key(b"client")]), "1");
}
