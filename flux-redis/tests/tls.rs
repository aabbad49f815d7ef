//! rediss:// and rediss+cluster:// through rustls: redis-servers with TLS
//! only, their certificates signed by a CA made here (with the openssl
//! command) and trusted through SSL_CERT_FILE, which the store's root
//! certificate loading honours. A certificate from another CA, or one for
//! another host name, must not be accepted: the store then fails as an
//! unreachable Redis would, saying why.
//!
//! One test, as SSL_CERT_FILE is process-wide; the servers switch
//! certificates with CONFIG SET (over their unix sockets, in plain), and
//! each case connects anew.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use flux_core::{Policy, Quota, QuotaSpec, Store};
use flux_redis::{RedisConfig, RedisStore};
use support::{RedisCluster, RedisServer};

/// Runs openssl in `dir` with `args`, words separated by spaces.
fn openssl(dir: &Path, args: &str) {
    let out = Command::new("openssl")
        .args(args.split_whitespace())
        .current_dir(dir)
        .output()
        .expect("openssl must be installed for this test: run `make deps`");
    assert!(
        out.status.success(),
        "openssl {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A new P-256 key, quicker to make than RSA.
const NEW_KEY: &str = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";

/// The certificates: `ca` (trusted), `rogue-ca` (not), and server
/// certificates `good` (ca, for localhost and 127.0.0.1), `rogue` (rogue-ca,
/// for 127.0.0.1) and `elsewhere` (ca, for another host name only).
struct Certificates {
    dir: PathBuf,
}

impl Certificates {
    fn make() -> Certificates {
        let dir = std::env::temp_dir().join(format!("flux-redis-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for ca in ["ca", "rogue-ca"] {
            openssl(
                &dir,
                &format!(
                    "req -x509 {NEW_KEY} -keyout {ca}.key -out {ca}.crt -days 2 -subj /CN=flux-test-{ca}"
                ),
            );
        }
        for (name, ca, names) in [
            ("good", "ca", "DNS:localhost,IP:127.0.0.1"),
            ("rogue", "rogue-ca", "DNS:localhost,IP:127.0.0.1"),
            ("elsewhere", "ca", "DNS:elsewhere.test"),
        ] {
            openssl(
                &dir,
                &format!("req {NEW_KEY} -keyout {name}.key -out {name}.csr -subj /CN={name}"),
            );
            std::fs::write(
                dir.join(format!("{name}.cnf")),
                format!("subjectAltName={names}\n"),
            )
            .unwrap();
            openssl(
                &dir,
                &format!(
                    "x509 -req -in {name}.csr -CA {ca}.crt -CAkey {ca}.key -CAcreateserial \
                     -out {name}.crt -days 2 -extfile {name}.cnf"
                ),
            );
        }
        // What the servers trust of each other (a cluster's bus is TLS too,
        // and checks only the chain): both CAs.
        let both = [
            std::fs::read_to_string(dir.join("ca.crt")).unwrap(),
            std::fs::read_to_string(dir.join("rogue-ca.crt")).unwrap(),
        ]
        .concat();
        std::fs::write(dir.join("both-cas.crt"), both).unwrap();
        Certificates { dir }
    }

    fn file(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_owned()
    }

    /// A server's arguments for `port`, TLS only (the plain port closed, so
    /// nothing can pass in clear text), with the `good` certificate.
    fn server_args(&self, port: u16) -> Vec<String> {
        [
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            &self.file("good.crt"),
            "--tls-key-file",
            &self.file("good.key"),
            "--tls-ca-cert-file",
            &self.file("both-cas.crt"),
            "--tls-auth-clients",
            "no",
            "--tls-cluster",
            "yes",
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// Makes `server` present the certificate `name` to new connections.
    fn present(&self, server: &RedisServer, name: &str) {
        let (cert, key) = (
            self.file(&format!("{name}.crt")),
            self.file(&format!("{name}.key")),
        );
        assert_eq!(
            server.cli(&[
                "CONFIG",
                "SET",
                "tls-cert-file",
                &cert,
                "tls-key-file",
                &key
            ]),
            "OK"
        );
    }
}

impl Drop for Certificates {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn store(url: String) -> RedisStore {
    RedisStore::connect(&RedisConfig {
        timeout_ms: 2_000,
        ..RedisConfig::from_url(url)
    })
    .unwrap()
}

/// What a certificate that must not be accepted does to a call: it fails
/// as Redis failing, and the message says why.
fn refused(store: &RedisStore, key: &str, quota: &Quota, why: &str) {
    let err = store.decide(key, quota, 1).unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("invalid peer certificate") && message.contains(why),
        "expected an invalid certificate ({why}), got: {message}"
    );
}

const UNTRUSTED: &str = "UnknownIssuer";
const WRONG_HOST: &str = "certificate not valid for name \"127.0.0.1\"";

#[test]
fn tls_redis_and_cluster_accept_only_a_trusted_certificate_for_their_host() {
    let certs = Certificates::make();
    // The only environment change in this test binary, before any connection.
    std::env::set_var("SSL_CERT_FILE", certs.file("ca.crt"));
    let quota = QuotaSpec::new(Policy::FixedWindow, 2, 60.0)
        .build()
        .unwrap();

    let server = RedisServer::start_with_port(|port| certs.server_args(port));
    let url = format!("rediss://127.0.0.1:{}", server.port);
    let good = store(url.clone());
    assert_eq!(good.decide("tls:a", &quota, 1).unwrap().remaining, 1);
    assert_eq!(good.decide("tls:a", &quota, 1).unwrap().remaining, 0);
    assert!(!good.decide("tls:a", &quota, 1).unwrap().allowed);

    // Plain redis:// to the TLS port fails in time, as an outage would.
    let plain = RedisStore::connect(&RedisConfig {
        timeout_ms: 300,
        ..RedisConfig::from_url(format!("redis://127.0.0.1:{}", server.port))
    })
    .unwrap();
    assert!(plain
        .decide("tls:a", &quota, 1)
        .unwrap_err()
        .is_unavailable());

    certs.present(&server, "rogue");
    refused(&store(url.clone()), "tls:b", &quota, UNTRUSTED);
    certs.present(&server, "elsewhere");
    refused(&store(url.clone()), "tls:b", &quota, WRONG_HOST);
    certs.present(&server, "good");
    assert_eq!(store(url).decide("tls:b", &quota, 1).unwrap().remaining, 1);
    drop(server);

    // A cluster over TLS: the seed and every node it leads to are checked.
    let cluster = RedisCluster::start_with(
        3,
        |port| certs.server_args(port),
        &["--tls", "--cacert", &certs.file("ca.crt")],
    );
    let seed = &cluster.nodes[0];
    let url = format!("rediss+cluster://127.0.0.1:{}", seed.port);
    // A key on each node.
    let keys: Vec<String> = cluster
        .nodes
        .iter()
        .map(|node| {
            (0..)
                .map(|i| format!("tls:{i}"))
                .find(|key| {
                    seed.slot_owner_port(seed.cli(&["CLUSTER", "KEYSLOT", key]).parse().unwrap())
                        == node.port
                })
                .unwrap()
        })
        .collect();
    let store_of_cluster = store(url.clone());
    assert!(store_of_cluster.is_cluster());
    for (key, node) in keys.iter().zip(&cluster.nodes) {
        assert_eq!(
            store_of_cluster.decide(key, &quota, 1).unwrap().remaining,
            1
        );
        assert_eq!(node.cli(&["EXISTS", key]), "1", "{key} on its node");
    }

    // The seed presents a good certificate, the other nodes a bad one: the
    // calls that reach them fail, those on the seed do not.
    for (bad, why) in [("rogue", UNTRUSTED), ("elsewhere", WRONG_HOST)] {
        for node in &cluster.nodes[1..] {
            certs.present(node, bad);
        }
        let store = store(url.clone());
        let on_seed = store.decide(&keys[0], &quota, 1).unwrap();
        assert!(on_seed.allowed && on_seed.source == flux_core::Source::Storage);
        for key in &keys[1..] {
            refused(&store, key, &quota, why);
        }
        for node in &cluster.nodes[1..] {
            certs.present(node, "good");
        }
        assert_eq!(seed.cli(&["DEL", &keys[0]]), "1");
    }

    // The seed itself with a bad certificate: nothing is reached.
    certs.present(seed, "rogue");
    refused(&store(url), &keys[1], &quota, UNTRUSTED);
}
