//! The process's metrics: every backend's counters in one registry, and the
//! one HTTP server that shows them.
//!
//! Each [`Backend`](crate::Backend) registers its `Analytics` for as long
//! as it lives; when it goes, its last counts are kept in the registry, so
//! the counters the server shows never go down (Prometheus reads a drop as a
//! restart). Endpoints with the same name in several backends are added
//! together: `/metrics` is this process's view, whatever number of stores
//! it made.
//!
//! The server runs while at least one backend with `[analytics] enabled`
//! lives, on the `host:port` of the first of them that could bind it; a
//! second such backend does not start another. A port in use is reported
//! once on stderr and nothing else happens: the limiter works without it.
//!
//! The server belongs to the process that started it. A forked child (see
//! [`crate::fork`]) inherits the record of it but not its thread: it never
//! serves, stops or joins it, and starts no server of its own while its
//! parent's listener is open in it too (binding the port would fail). Its
//! counters reach the Redis totals through its own flusher.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use flux_core::analytics::{Analytics, Snapshot};
use parking_lot::{const_mutex, Mutex};

use super::flusher::Sink;
use super::json;
use crate::fork;

/// The Content-Type of the Prometheus text format.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How long a client may take to send its request, or to read the answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);

/// A request line and headers beyond this are refused.
const MAX_REQUEST: usize = 8 * 1024;

static REGISTRY: Mutex<Registry> = const_mutex(Registry::new());

struct Registry {
    next_id: u64,
    members: Vec<Member>,
    /// What backends that are gone had counted.
    retired: Snapshot,
    server: Option<Server>,
    /// Live backends that asked for the server.
    holders: usize,
    /// Addresses already reported as unusable, so each is reported once.
    warned: Vec<String>,
}

struct Member {
    id: u64,
    analytics: Arc<Analytics>,
    /// Only read in the process generation that registered it: a child
    /// must not use its parent's connection.
    sink: Option<Arc<Sink>>,
    generation: u64,
}

impl Registry {
    const fn new() -> Self {
        Registry {
            next_id: 0,
            members: Vec::new(),
            retired: Snapshot {
                endpoints: std::collections::BTreeMap::new(),
                events_dropped: 0,
            },
            server: None,
            holders: 0,
            warned: Vec::new(),
        }
    }
}

/// A backend's place in the registry; dropping it keeps the backend's
/// counts and releases its hold on the server.
#[derive(Debug)]
pub(crate) struct Registration {
    id: u64,
    /// Whether it holds the server of the process it was made in.
    holds_server: bool,
    generation: u64,
}

/// Registers `analytics` (with the sink its totals are read from, on Redis)
/// and, when `serve` gives an address, makes sure the server runs.
pub(crate) fn register(
    analytics: Arc<Analytics>,
    sink: Option<Arc<Sink>>,
    serve: Option<(&str, u16)>,
) -> Registration {
    let mut registry = REGISTRY.lock();
    let id = registry.next_id;
    registry.next_id += 1;
    registry.members.push(Member {
        id,
        analytics,
        sink,
        generation: fork::generation(),
    });
    let mut holds_server = false;
    // An ancestor's server: this process does not serve (see above).
    let inherited = registry.server.as_ref().is_some_and(|s| !s.is_ours());
    if let Some((host, port)) = serve.filter(|_| !inherited) {
        if registry.server.is_none() {
            match Server::start(host, port) {
                Ok(server) => registry.server = Some(server),
                Err(err) => {
                    let addr = format!("{host}:{port}");
                    if !registry.warned.contains(&addr) {
                        eprintln!(
                            "flux: analytics: cannot serve /metrics on {addr} ({err}); \
                             rate limiting goes on without it. Free the port or set \
                             [analytics] port to another."
                        );
                        registry.warned.push(addr);
                    }
                }
            }
        }
        if registry.server.is_some() {
            registry.holders += 1;
            holds_server = true;
        }
    }
    Registration {
        id,
        holds_server,
        generation: fork::generation(),
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut registry = REGISTRY.lock();
        if let Some(i) = registry.members.iter().position(|m| m.id == self.id) {
            let member = registry.members.swap_remove(i);
            registry.retired.merge(&member.analytics.snapshot());
        }
        let mut stopping = None;
        // A hold taken before a fork is on the parent's server.
        if self.holds_server && self.generation == fork::generation() {
            registry.holders -= 1;
            if registry.holders == 0 {
                stopping = registry.server.take();
            }
        }
        // Joined without the lock: the server thread may be waiting for it.
        drop(registry);
        if let Some(server) = stopping {
            server.stop();
        }
    }
}

/// Where the server listens, if it runs.
pub fn metrics_address() -> Option<SocketAddr> {
    REGISTRY.lock().server.as_ref().map(|s| s.addr)
}

/// Every backend's counters, live and gone, as one snapshot; and the sinks
/// whose totals to read (one per Redis and totals key).
fn process_view() -> (Snapshot, Vec<Arc<Sink>>) {
    let registry = REGISTRY.lock();
    let mut snapshot = registry.retired.clone();
    let mut sinks: Vec<Arc<Sink>> = Vec::new();
    for member in &registry.members {
        snapshot.merge(&member.analytics.snapshot());
        let sink = member.sink.as_ref();
        if let Some(sink) = sink.filter(|_| member.generation == fork::generation()) {
            if !sinks
                .iter()
                .any(|s| s.redis == sink.redis && s.totals_key == sink.totals_key)
            {
                sinks.push(sink.clone());
            }
        }
    }
    (snapshot, sinks)
}

struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    handle: JoinHandle<()>,
    /// The process generation that runs its thread.
    generation: u64,
}

impl Server {
    fn start(host: &str, port: u16) -> io::Result<Server> {
        let listener = TcpListener::bind((host, port))?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let handle = std::thread::Builder::new()
            .name("flux-metrics".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if stopped.load(Ordering::Acquire) {
                        return;
                    }
                    if let Ok(stream) = stream {
                        // A client that goes away mid-answer is its own problem.
                        let _ = answer(stream);
                    }
                }
            })?;
        Ok(Server {
            addr,
            stop,
            handle,
            generation: fork::generation(),
        })
    }

    /// Whether its thread runs in this process rather than in an ancestor.
    fn is_ours(&self) -> bool {
        self.generation == fork::generation()
    }

    /// Wakes the blocked `accept` with a connection of our own, then joins.
    fn stop(self) {
        self.stop.store(true, Ordering::Release);
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
            });
        }
        if TcpStream::connect_timeout(&wake, CLIENT_TIMEOUT).is_ok() {
            let _ = self.handle.join();
        }
        // Else the thread is left to the process's exit rather than hang here.
    }
}

/// Reads one request and answers it; the connection is closed after.
fn answer(mut stream: TcpStream) -> io::Result<()> {
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let mut request = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        if request.len() > MAX_REQUEST {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                "",
            );
        }
        match stream.read(&mut chunk)? {
            0 => break,
            n => request.extend_from_slice(&chunk[..n]),
        }
    }
    let line = request.split(|&b| b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET", "/metrics") => {
            let (snapshot, _) = process_view();
            ("200 OK", PROMETHEUS_CONTENT_TYPE, snapshot.to_prometheus())
        }
        ("GET", "/metrics.json") => {
            let (snapshot, sinks) = process_view();
            let body = json::metrics(&snapshot, &sinks).to_string();
            ("200 OK", "application/json", body)
        }
        (_, "/metrics" | "/metrics.json") => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "use GET\n".to_owned(),
        ),
        _ => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "flux serves /metrics (Prometheus) and /metrics.json\n".to_owned(),
        ),
    };
    respond(&mut stream, status, content_type, &body)
}

fn respond(stream: &mut TcpStream, status: &str, content_type: &str, body: &str) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    stream.flush()
}
