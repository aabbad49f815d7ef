//! The dashboard page on the metrics server: same listener as `/metrics`,
//! at `/` and `/dashboard`, with headers that keep it to itself. What the
//! page shows is checked in a real browser (flux-py/tests/test_dashboard.py).

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;

use flux_redis::analytics::metrics_address;
use support::open_serving_metrics;

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

fn header<'a>(headers: &'a str, name: &str) -> Option<&'a str> {
    headers.split("\r\n").find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

#[test]
fn the_metrics_server_serves_the_dashboard_beside_metrics() {
    let (backend, port) =
        open_serving_metrics(|port| format!("[analytics]\nenabled = true\nport = {port}\n"));

    for path in ["/", "/dashboard", "/?endpoint=login", "/dashboard?x=1"] {
        let (status, headers, body) = request(port, "GET", path);
        assert_eq!(status, "HTTP/1.1 200 OK", "{path}");
        assert_eq!(
            header(&headers, "Content-Type"),
            Some("text/html; charset=utf-8")
        );
        assert_eq!(header(&headers, "Cache-Control"), Some("no-store"));
        assert_eq!(header(&headers, "X-Content-Type-Options"), Some("nosniff"));
        let length: usize = header(&headers, "Content-Length").unwrap().parse().unwrap();
        assert_eq!(length, body.len());
        assert!(body.starts_with("<!doctype html>"), "{path}");
        assert!(
            body.contains("metrics.json"),
            "the page reads /metrics.json"
        );

        // Only its own inline script and style (by hash), fetches to its
        // own origin, nothing else: no 'unsafe-inline', no other source.
        let policy = header(&headers, "Content-Security-Policy").expect("a CSP");
        let directives: Vec<&str> = policy.split(';').map(str::trim).collect();
        assert!(directives.contains(&"default-src 'none'"), "{policy}");
        assert!(directives.contains(&"connect-src 'self'"), "{policy}");
        for kind in ["script-src", "style-src"] {
            let sources = directives
                .iter()
                .find_map(|d| d.strip_prefix(kind))
                .unwrap_or_else(|| panic!("no {kind} in {policy}"));
            let sources: Vec<&str> = sources.split_whitespace().collect();
            assert_eq!(sources.len(), 1, "{kind}: {sources:?}");
            assert!(sources[0].starts_with("'sha256-"), "{kind}: {sources:?}");
        }
    }

    // Read-only, like /metrics; anything else is still a 404.
    for method in ["POST", "PUT", "DELETE"] {
        assert_eq!(
            request(port, method, "/").0,
            "HTTP/1.1 405 Method Not Allowed"
        );
        assert_eq!(
            request(port, method, "/dashboard").0,
            "HTTP/1.1 405 Method Not Allowed"
        );
    }
    assert_eq!(
        request(port, "GET", "/dashboard/x").0,
        "HTTP/1.1 404 Not Found"
    );
    assert_eq!(
        request(port, "GET", "/index.html").0,
        "HTTP/1.1 404 Not Found"
    );

    // The page and /metrics share the one listener.
    assert_eq!(request(port, "GET", "/metrics.json").0, "HTTP/1.1 200 OK");
    drop(backend);
    assert_eq!(metrics_address(), None);
}
