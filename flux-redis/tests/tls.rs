//! rediss:// through rustls: a redis-server with TLS only, its certificate
//! signed by a CA made here (with the openssl command) and trusted through
//! SSL_CERT_FILE, which the store's root certificate loading honours.

mod support;

use std::path::Path;
use std::process::Command;

use flux_core::{Policy, QuotaSpec, Store};
use flux_redis::{RedisConfig, RedisStore};
use support::RedisServer;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl must be installed for this test: run `make deps`");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_tls_only_redis_is_reached_over_rediss() {
    let dir = std::env::temp_dir().join(format!("flux-redis-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let subject = |cn: &str| format!("/CN={cn}");
    openssl(
        &dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            &subject("Flux test CA"),
        ],
    );
    openssl(
        &dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            &subject("localhost"),
        ],
    );
    std::fs::write(
        dir.join("san.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(
        &dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "san.cnf",
        ],
    );

    let file = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    // TLS only: the plain port is closed, so nothing can pass in clear text.
    let server = RedisServer::start_tls(|port| {
        [
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            &file("server.crt"),
            "--tls-key-file",
            &file("server.key"),
            "--tls-ca-cert-file",
            &file("ca.crt"),
            "--tls-auth-clients",
            "no",
        ]
        .map(str::to_owned)
        .to_vec()
    });
    let port = server.port;
    // The only environment change in this test binary, before any connection.
    std::env::set_var("SSL_CERT_FILE", file("ca.crt"));

    let store =
        RedisStore::connect(&RedisConfig::from_url(format!("rediss://127.0.0.1:{port}"))).unwrap();
    let quota = QuotaSpec::new(Policy::FixedWindow, 2, 60.0)
        .build()
        .unwrap();
    assert_eq!(store.decide("tls:a", &quota, 1).unwrap().remaining, 1);
    assert_eq!(store.decide("tls:a", &quota, 1).unwrap().remaining, 0);
    assert!(!store.decide("tls:a", &quota, 1).unwrap().allowed);

    // Plain redis:// to the TLS port fails in time, as an outage would.
    let plain = RedisStore::connect(&RedisConfig {
        timeout_ms: 300,
        ..RedisConfig::from_url(format!("redis://127.0.0.1:{port}"))
    })
    .unwrap();
    assert!(plain
        .decide("tls:a", &quota, 1)
        .unwrap_err()
        .is_unavailable());
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
