//! The metrics server: one per process, whatever the number of backends,
//! showing all their counters; a port in use is not a crash. One test, as
//! the server and its registry are process-wide.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;

use flux_core::config::Config;
use flux_core::{Backend, LimitSpec, Limiter};
use flux_redis::analytics::metrics_address;
use support::{free_port, open_serving_metrics, take_warnings, DeadPort};

fn toml(port: u16, enabled: bool) -> String {
    format!("[flux]\njitter_enabled = false\n[analytics]\nenabled = {enabled}\nport = {port}\n")
}

fn config(port: u16, enabled: bool) -> Config {
    Config::from_toml_str(&toml(port, enabled), None).unwrap()
}

fn limiter(backend: &Arc<Backend>, config: &Config, scope: &str, requests: u64) -> Limiter {
    let rate = LimitSpec {
        requests: Some(requests),
        period: Some(60.0),
        ..LimitSpec::default()
    };
    Limiter::new(backend.clone(), config, scope, None, &rate).unwrap()
}

/// (status line, headers, body) of one request.
fn request(port: u16, method: &str, path: &str) -> (String, String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("the server listens");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let (status, headers) = head.split_once("\r\n").unwrap();
    (status.to_owned(), headers.to_owned(), body.to_owned())
}

fn listening(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

#[test]
fn one_server_shows_every_backend_and_outlives_none() {
    // Counting goes on without the server.
    let quiet = flux_redis::open(&config(free_port(), false)).unwrap();
    assert_eq!(metrics_address(), None);

    let (first, port) = open_serving_metrics(|port| toml(port, true));
    let first_config = config(port, true);
    // A second backend with analytics does not start a second server (nor
    // could it take this port).
    let other = DeadPort::new();
    let other_port = other.port;
    let second_config = config(other_port, true);
    let second = flux_redis::open(&second_config).unwrap();
    assert_eq!(metrics_address().map(|a| a.port()), Some(port));
    assert!(!listening(other_port));

    // "login" on both backends (3 per minute each), "api" on the second,
    // and one on the backend without analytics: all this process's.
    let login = limiter(&first.backend, &first_config, "login", 3);
    for _ in 0..5 {
        login.decide(b"10.0.0.1", 1).unwrap();
    }
    limiter(&second.backend, &second_config, "login", 3)
        .decide(b"10.0.0.1", 1)
        .unwrap();
    limiter(&second.backend, &second_config, "api", 1)
        .decide(b"k", 1)
        .unwrap();
    limiter(&quiet.backend, &first_config, "quiet", 1)
        .decide(b"k", 1)
        .unwrap();

    let (status, headers, body) = request(port, "GET", "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        headers.contains("Content-Type: text/plain; version=0.0.4"),
        "{headers}"
    );
    for line in [
        "flux_requests_total{endpoint=\"login\",decision=\"allowed\"} 4\n",
        "flux_requests_total{endpoint=\"login\",decision=\"blocked\"} 2\n",
        "flux_requests_total{endpoint=\"api\",decision=\"allowed\"} 1\n",
        "flux_requests_total{endpoint=\"quiet\",decision=\"allowed\"} 1\n",
        "flux_decision_seconds_count{endpoint=\"login\"} 6\n",
        "flux_events_dropped_total 0\n",
    ] {
        assert!(body.contains(line), "{line:?} missing from\n{body}");
    }

    let (status, headers, body) = request(port, "GET", "/metrics.json");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        headers.contains("Content-Type: application/json"),
        "{headers}"
    );
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["endpoints"]["login"]["allowed"], 4);
    assert_eq!(json["endpoints"]["login"]["blocked"], 2);
    assert_eq!(json["endpoints"]["login"]["total"], 6);
    assert_eq!(json["endpoints"]["login"]["latency"]["count"], 6);
    assert_eq!(
        json["redis_totals"],
        serde_json::json!([]),
        "memory stores only"
    );

    assert_eq!(request(port, "GET", "/nothing").0, "HTTP/1.1 404 Not Found");
    assert_eq!(
        request(port, "GET", "/metrics/extra").0,
        "HTTP/1.1 404 Not Found"
    );
    assert_eq!(
        request(port, "POST", "/metrics").0,
        "HTTP/1.1 405 Method Not Allowed"
    );
    assert!(request(port, "GET", "/metrics?x=1").2.contains("login"));

    // The backend that started the server goes; the server stays for the
    // other, and what the first counted is still counted (counters never go
    // down).
    drop(login);
    drop(first);
    assert!(request(port, "GET", "/metrics")
        .2
        .contains("flux_requests_total{endpoint=\"login\",decision=\"allowed\"} 4\n"));
    // With the last backend that wanted it, the server stops.
    drop(second);
    assert_eq!(metrics_address(), None);
    assert!(!listening(port));

    // A port in use: a warning in the log, and the limiter works on.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let taken_config = config(taken_port, true);
    take_warnings();
    let backend = flux_redis::open(&taken_config).unwrap();
    assert_eq!(metrics_address(), None);
    let warnings = take_warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with(&format!(
            "analytics: cannot serve /metrics on 127.0.0.1:{taken_port} ("
        )),
        "{}",
        warnings[0]
    );
    assert!(
        limiter(&backend.backend, &taken_config, "login", 3)
            .decide(b"10.0.0.9", 1)
            .unwrap()
            .allowed
    );
    drop(quiet);
}
