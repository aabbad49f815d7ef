//! How a store connects to one Redis: with the URL's credentials (a
//! password, or an ACL user and its password), to the URL's database, over
//! TCP or a Unix socket. Credentials Redis refuses, or a database it does
//! not have, fail every call as an unreachable Redis would, saying why and
//! never showing the password.

mod support;

use flux_core::{Policy, Quota, QuotaSpec, Store};
use flux_redis::{RedisConfig, RedisStore};
use support::RedisServer;

fn store(url: String) -> RedisStore {
    RedisStore::connect(&RedisConfig {
        timeout_ms: 2_000,
        ..RedisConfig::from_url(url)
    })
    .unwrap()
}

fn quota() -> Quota {
    QuotaSpec::new(Policy::FixedWindow, 2, 60.0)
        .build()
        .unwrap()
}

/// Two calls on `key` through `store`: the limit of 2 is counted there.
fn decides(store: &RedisStore, key: &str) {
    let quota = quota();
    assert_eq!(store.decide(key, &quota, 1).unwrap().remaining, 1);
    assert_eq!(store.decide(key, &quota, 1).unwrap().remaining, 0);
}

/// A call through `store` fails as Redis failing, its message saying `why`
/// and not `secret`.
fn refused(store: &RedisStore, why: &str, secret: &str) {
    let err = store.decide("never", &quota(), 1).unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    let message = err.to_string();
    assert!(message.contains(why), "expected {why:?} in: {message}");
    assert!(!message.contains(secret), "{message}");
    assert!(!format!("{err:?}").contains(secret), "{err:?}");
}

#[test]
fn an_acl_user_and_a_database() {
    let server = RedisServer::start();
    assert_eq!(
        server.cli(&["ACL", "SETUSER", "app", "on", ">app-secret", "~*", "+@all"]),
        "OK"
    );
    let port = server.port;
    decides(
        &store(format!("redis://app:app-secret@127.0.0.1:{port}/3")),
        "connect:acl",
    );
    assert_eq!(server.cli(&["-n", "3", "EXISTS", "connect:acl"]), "1");
    assert_eq!(server.cli(&["EXISTS", "connect:acl"]), "0");

    refused(
        &store(format!("redis://app:hunter2@127.0.0.1:{port}")),
        "Redis refused the credentials - AuthenticationFailed: WRONGPASS",
        "hunter2",
    );
    refused(
        &store(format!("redis://nobody:hunter2@127.0.0.1:{port}")),
        "WRONGPASS",
        "hunter2",
    );
    // redis-server has 16 databases.
    refused(
        &store(format!("redis://127.0.0.1:{port}/16")),
        "Redis refused to select the configured database",
        "hunter2",
    );
}

#[test]
fn a_password_over_tcp_and_a_unix_socket() {
    let server = RedisServer::start();
    assert_eq!(
        server.cli(&["CONFIG", "SET", "requirepass", "s3cret"]),
        "OK"
    );
    let cli = |args: &[&str]| {
        let mut all = vec!["--no-auth-warning", "-a", "s3cret"];
        all.extend(args);
        server.cli(&all)
    };
    decides(
        &store(format!("redis://:s3cret@127.0.0.1:{}/1", server.port)),
        "connect:tcp",
    );
    assert_eq!(cli(&["-n", "1", "EXISTS", "connect:tcp"]), "1");

    let unix = server.unix_url();
    decides(&store(format!("{unix}?pass=s3cret&db=2")), "connect:unix");
    assert_eq!(cli(&["-n", "2", "EXISTS", "connect:unix"]), "1");

    refused(
        &store(format!("redis://:hunter2@127.0.0.1:{}", server.port)),
        "WRONGPASS",
        "hunter2",
    );
}
