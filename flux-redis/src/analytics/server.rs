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
//! second such backend does not start another. A port in use is a warning
//! in the log, once per address, and nothing else happens: the limiter works
//! without it.
//!
//! One thread accepts and [`ANSWERERS`] answer, each connection whole
//! (request read, answer written) within [`REQUEST_DEADLINE`] of its
//! arrival: a client that trickles its request holds one answerer for that
//! long at most, and no scrape waits behind it. Stopping cuts the
//! connections being answered instead of waiting for them. Pages are routed
//! by path in one match ([`page`]).
//!
//! The server belongs to the process that started it. A forked child (see
//! [`flux_core::fork`]) inherits the record of it but not its threads: it never
//! serves, stops or joins it, and starts no server of its own while its
//! parent's listener is open in it too (binding the port would fail). Its
//! counters reach the Redis totals through its own flusher. Every lock here
//! is a `std::sync::Mutex`: a thread parked on a parking_lot lock when the
//! process forks leaves the child's parking table corrupt (see pool.rs).

use std::borrow::Cow;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use flux_core::analytics::{Analytics, Snapshot};

use super::flusher::Sink;
use super::json;
use flux_core::fork;
use flux_core::LOG_TARGET;

/// The Content-Type of the Prometheus text format.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How long one request may take, from accepting the connection to the
/// last byte of the answer: a client that sends (or reads) slowly is cut
/// off after it, however steadily it trickles.
const REQUEST_DEADLINE: Duration = Duration::from_secs(2);

/// A request line and headers beyond this are refused.
const MAX_REQUEST: usize = 8 * 1024;

static REGISTRY: Mutex<Registry> = Mutex::new(Registry::new());

/// A lock that a thread which panicked while holding it leaves usable: every
/// value here stays whole between statements.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

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
    let mut registry = lock(&REGISTRY);
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
                        log::warn!(
                            target: LOG_TARGET,
                            "analytics: cannot serve /metrics on {addr} ({err}); \
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
        let mut registry = lock(&REGISTRY);
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
    lock(&REGISTRY).server.as_ref().map(|s| s.addr)
}

/// Every backend's counters, live and gone, as one snapshot; and the sinks
/// whose totals to read (one per Redis and totals key).
fn process_view() -> (Snapshot, Vec<Arc<Sink>>) {
    let registry = lock(&REGISTRY);
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

/// The server: a thread that accepts connections and a few that answer
/// them, each connection whole within [`REQUEST_DEADLINE`].
struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    /// The connections being answered, to cut when the server stops.
    open: Arc<Mutex<Vec<(u64, TcpStream)>>>,
    acceptor: JoinHandle<()>,
    answerers: Vec<JoinHandle<()>>,
    /// The process generation that runs its threads.
    generation: u64,
}

/// Threads answering requests: a slow client holds one of them, never the
/// others nor the acceptor.
const ANSWERERS: usize = 4;

/// Connections accepted but not yet answered; beyond, new ones are closed
/// at once rather than queued behind slow ones.
const BACKLOG: usize = 32;

impl Server {
    fn start(host: &str, port: u16) -> io::Result<Server> {
        let listener = TcpListener::bind((host, port))?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<(u64, TcpStream)>>> = Arc::default();
        let (queue, waiting) = mpsc::sync_channel::<(TcpStream, Instant)>(BACKLOG);
        let waiting = Arc::new(Mutex::new(waiting));
        let mut answerers = Vec::with_capacity(ANSWERERS);
        for n in 0..ANSWERERS {
            let (waiting, stop, open) = (waiting.clone(), stop.clone(), open.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("flux-metrics-{n}"))
                .spawn(move || answer_queued(&waiting, &stop, &open));
            match spawned {
                Ok(handle) => answerers.push(handle),
                Err(err) if answerers.is_empty() => return Err(err),
                Err(_) => break,
            }
        }
        let stopped = stop.clone();
        let acceptor = std::thread::Builder::new()
            .name("flux-metrics".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if stopped.load(Ordering::Acquire) {
                        return;
                    }
                    // A full queue: this client is dropped, not the others.
                    if let Ok(stream) = stream {
                        let _ = queue.try_send((stream, Instant::now() + REQUEST_DEADLINE));
                    }
                }
            })?;
        Ok(Server {
            addr,
            stop,
            open,
            acceptor,
            answerers,
            generation: fork::generation(),
        })
    }

    /// Whether its threads run in this process rather than in an ancestor.
    fn is_ours(&self) -> bool {
        self.generation == fork::generation()
    }

    /// Stops accepting (waking the blocked `accept` with a connection of our
    /// own), cuts the connections being answered, and joins every thread:
    /// none waits on a client.
    fn stop(self) {
        self.stop.store(true, Ordering::Release);
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
            });
        }
        let woken = TcpStream::connect_timeout(&wake, Duration::from_secs(1)).is_ok();
        for (_, stream) in lock(&self.open).iter() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        // Joined, the acceptor has dropped the queue, so idle answerers
        // return at once. One that cannot be woken is left to the process's
        // exit, with its answerers, rather than hang here.
        if woken && self.acceptor.join().is_ok() {
            for answerer in self.answerers {
                let _ = answerer.join();
            }
        }
    }
}

/// An answerer's life: take the next connection and answer it, until the
/// acceptor is gone (its queue with it) or the server stops.
fn answer_queued(
    waiting: &Mutex<Receiver<(TcpStream, Instant)>>,
    stop: &AtomicBool,
    open: &Mutex<Vec<(u64, TcpStream)>>,
) {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    loop {
        let Ok((stream, deadline)) = lock(waiting).recv() else {
            return;
        };
        if stop.load(Ordering::Acquire) {
            return;
        }
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        if let Ok(clone) = stream.try_clone() {
            lock(open).push((id, clone));
        }
        // Registered before this check, so `stop` cuts it if it came after.
        if !stop.load(Ordering::Acquire) {
            // A client that goes away mid-answer is its own problem.
            let _ = answer(stream, deadline);
        }
        lock(open).retain(|(open_id, _)| *open_id != id);
    }
}

/// Reads one request and answers it, all by `deadline`; the connection is
/// closed after.
fn answer(mut stream: TcpStream, deadline: Instant) -> io::Result<()> {
    let mut request = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        if request.len() > MAX_REQUEST {
            let too_long = Page::text("431 Request Header Fields Too Large", "");
            return respond(&mut stream, deadline, &too_long);
        }
        stream.set_read_timeout(Some(left(deadline)?))?;
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
    let answer = match (method, page(path)) {
        ("GET", Some(page)) => page(),
        (_, Some(_)) => Page::text("405 Method Not Allowed", "use GET\n"),
        (_, None) => Page::text(
            "404 Not Found",
            "flux serves / (the dashboard), /metrics (Prometheus) and /metrics.json\n",
        ),
    };
    respond(&mut stream, deadline, &answer)
}

/// An answer: its status, content type, any headers of its own, and body.
pub(super) struct Page {
    pub(super) status: &'static str,
    pub(super) content_type: &'static str,
    /// Whole header lines, each ending in CRLF.
    pub(super) headers: &'static str,
    pub(super) body: Cow<'static, str>,
}

impl Page {
    fn text(status: &'static str, body: &'static str) -> Page {
        Page {
            status,
            content_type: "text/plain; charset=utf-8",
            headers: "",
            body: Cow::Borrowed(body),
        }
    }
}

/// Every page the server serves, by path: one line each.
fn page(path: &str) -> Option<fn() -> Page> {
    match path {
        "/" | "/dashboard" => Some(super::dashboard::page),
        "/metrics" => Some(prometheus),
        "/metrics.json" => Some(metrics_json),
        _ => None,
    }
}

fn prometheus() -> Page {
    let (snapshot, _) = process_view();
    Page {
        status: "200 OK",
        content_type: PROMETHEUS_CONTENT_TYPE,
        headers: "",
        body: Cow::Owned(snapshot.to_prometheus()),
    }
}

fn metrics_json() -> Page {
    let (snapshot, sinks) = process_view();
    Page {
        status: "200 OK",
        content_type: "application/json",
        headers: "",
        body: Cow::Owned(json::metrics(&snapshot, &sinks).to_string()),
    }
}

/// What is left until `deadline`; an error once nothing is.
fn left(deadline: Instant) -> io::Result<Duration> {
    match deadline.saturating_duration_since(Instant::now()) {
        left if left.is_zero() => Err(io::ErrorKind::TimedOut.into()),
        left => Ok(left),
    }
}

fn respond(stream: &mut TcpStream, deadline: Instant, page: &Page) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\n{}Connection: close\r\n\r\n",
        page.status,
        page.content_type,
        page.body.len(),
        page.headers,
    );
    stream.set_write_timeout(Some(left(deadline)?))?;
    stream.write_all(head.as_bytes())?;
    stream.write_all(page.body.as_bytes())?;
    stream.flush()
}
