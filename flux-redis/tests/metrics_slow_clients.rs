//! The metrics server against clients that take their time: one that sends
//! its request a byte at a time, slower than any per-read timeout, holds up
//! neither a concurrent scrape nor the server's shutdown, and is cut off
//! once the whole request has taken its deadline. One test, as the server
//! is process-wide.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use flux_redis::analytics::metrics_address;
use support::open_serving_metrics;

/// What "at once" allows on a loaded two-core machine; the clients below
/// hold a connection for seconds.
const PROMPT: Duration = Duration::from_millis(1500);

/// A client that sends the start of a request, then one more byte every
/// 300 ms, until told to stop or the server closes the connection; it
/// returns how long the server kept it.
fn slow_loris(port: u16, stop: Arc<AtomicBool>) -> JoinHandle<Duration> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
    let started = Instant::now();
    std::thread::spawn(move || {
        stream
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut byte = [0u8; 1];
        while !stop.load(Ordering::SeqCst) {
            if stream.write_all(b"X").is_err() {
                break;
            }
            match stream.read(&mut byte) {
                // Closed by the server, with or without a word.
                Ok(_) => break,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => break,
            }
        }
        started.elapsed()
    })
}

fn scrape(port: u16) -> (Duration, String) {
    let started = Instant::now();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    (started.elapsed(), response)
}

#[test]
fn slow_clients_hold_up_neither_scrapes_nor_shutdown() {
    let (store, port) =
        open_serving_metrics(|port| format!("[analytics]\nenabled = true\nport = {port}\n"));

    // Two slow clients at once, and scrapes meanwhile.
    let stop = Arc::new(AtomicBool::new(false));
    let lorises = [
        slow_loris(port, stop.clone()),
        slow_loris(port, stop.clone()),
    ];
    std::thread::sleep(Duration::from_millis(100));
    for _ in 0..3 {
        let (took, response) = scrape(port);
        assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
        assert!(
            took < PROMPT,
            "a scrape waited {took:?} behind slow clients"
        );
    }
    // However steadily they send, the whole request has a deadline.
    for loris in lorises {
        let kept = loris.join().unwrap();
        assert!(
            kept < Duration::from_secs(6),
            "a slow client was kept {kept:?}"
        );
    }

    // Freeing the last store stops the server at once, a slow client or not.
    let loris = slow_loris(port, stop.clone());
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    drop(store);
    let took = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    loris.join().unwrap();
    assert!(took < PROMPT, "dropping the store waited {took:?}");
    assert_eq!(metrics_address(), None);
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}
