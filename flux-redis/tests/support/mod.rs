//! redis-server processes for tests: each on a port of its own with its own
//! temp dir, no persistence, killed by pid when dropped.
//!
//! A port found free may be taken by another process before redis-server
//! binds it (tests run in parallel). So each server also listens on a unix
//! socket in its own directory, which no other process can answer on: it is
//! ready when that socket answers PING, and a server that exits first (its
//! port was taken) is started again on another port.

#![allow(dead_code)] // each test binary uses its own part of this module

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A redis-server started by this test process.
#[derive(Debug)]
pub struct RedisServer {
    child: Child,
    pub port: u16,
    dir: PathBuf,
    /// Every argument after the common ones, the port included.
    args: Vec<String>,
    cpu: Option<usize>,
}

/// A port nothing listens on right now, for a server about to bind it. A
/// server must be ready to find it taken meanwhile, as [`RedisServer`] is;
/// for a port that must stay dead, see [`DeadPort`].
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

/// A port on 127.0.0.1 held bound but never listening: connecting to it is
/// refused at once for as long as this lives, and no server can take it
/// meanwhile (as one could a port merely found free).
#[derive(Debug)]
pub struct DeadPort {
    _socket: socket2::Socket,
    pub port: u16,
}

impl DeadPort {
    pub fn new() -> DeadPort {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("a socket");
        socket
            .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .expect("bind a port");
        let port = socket
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .expect("a bound address")
            .port();
        DeadPort {
            _socket: socket,
            port,
        }
    }

    /// `redis://` to this port.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

fn temp_dir() -> PathBuf {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "flux-redis-test-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("create a temp dir");
    dir
}

/// Attempts at a free port before giving up.
const ATTEMPTS: usize = 20;

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts with extra arguments (e.g. cluster flags) on a port chosen here.
    pub fn start_with(extra: &[&str]) -> Self {
        Self::launch(None, |port| {
            let mut args = vec!["--port".to_owned(), port.to_string()];
            args.extend(extra.iter().map(|s| s.to_string()));
            args
        })
    }

    /// Starts with the arguments `args` gives for a port chosen here (which
    /// they must make the server listen on): TLS, where `--port 0` closes
    /// the plain port and `--tls-port` opens this one.
    pub fn start_with_port(args: impl Fn(u16) -> Vec<String>) -> Self {
        Self::launch(None, args)
    }

    /// Starts pinned to one CPU (with `taskset`), for benches that keep the
    /// client on another.
    pub fn start_on_cpu(cpu: usize) -> Self {
        Self::launch(Some(cpu), |port| {
            vec!["--port".to_owned(), port.to_string()]
        })
    }

    fn launch(cpu: Option<usize>, args: impl Fn(u16) -> Vec<String>) -> Self {
        let dir = temp_dir();
        for _ in 0..ATTEMPTS {
            let port = free_port();
            let args = args(port);
            let mut child = spawn(&dir, &args, cpu);
            if wait_ready(&mut child, &dir) {
                return RedisServer {
                    child,
                    port,
                    dir,
                    args,
                    cpu,
                };
            }
            // It exited: its port was taken since it was found free.
        }
        panic!("redis-server did not start in {ATTEMPTS} attempts on free ports");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `redis+unix://` to the server's unix socket.
    pub fn unix_url(&self) -> String {
        format!("redis+unix://{}", socket_path(&self.dir).display())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn dir(&self) -> &PathBuf {
        &self.dir
    }

    /// Kills the server (SIGKILL) and reaps it; the port is free again.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A new redis-server on the same port, as after a crash and restart.
    /// Another process may take the port meanwhile; then it tries again
    /// until that one lets go, for at most 10 s.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            self.child = spawn(&self.dir, &self.args, self.cpu);
            if wait_ready(&mut self.child, &self.dir) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server could not listen on {} again",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGSTOP: the process stays, its sockets accept, nothing answers.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after `pause`.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {}", self.pid());
    }

    /// Runs redis-cli against this server (on its unix socket, plain even
    /// when the port speaks TLS) and returns its output.
    /// The port of the cluster node that owns `slot`, by this node's
    /// `CLUSTER NODES`.
    pub fn slot_owner_port(&self, slot: u16) -> u16 {
        let nodes = self.cli(&["CLUSTER", "NODES"]);
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let owns = fields
                .iter()
                .skip(8)
                .any(|range| match range.split_once('-') {
                    Some((a, b)) => {
                        (a.parse().unwrap_or(u16::MAX)..=b.parse().unwrap_or(0)).contains(&slot)
                    }
                    None => range.parse::<u16>() == Ok(slot),
                });
            if owns {
                return fields[1].split(['@', ':']).nth(1).unwrap().parse().unwrap();
            }
        }
        panic!("no owner for slot {slot}");
    }

    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .arg("-s")
            .arg(socket_path(&self.dir))
            .args(args)
            .output()
            .expect("redis-cli must be installed for these tests: run `make deps`");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs redis-cli against whatever listens on `port` of the loopback (a
/// server not started as a `RedisServer`: a sentinel, one under valgrind).
pub fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli must be installed for these tests: run `make deps`");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn socket_path(dir: &Path) -> PathBuf {
    dir.join("redis.sock")
}

fn spawn(dir: &Path, args: &[String], cpu: Option<usize>) -> Child {
    // taskset execs redis-server, so the child's pid stays the server's.
    let mut command = match cpu {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.args(["-c", &cpu.to_string(), "redis-server"]);
            c
        }
        None => Command::new("redis-server"),
    };
    let _ = std::fs::remove_file(socket_path(dir));
    command
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .arg("--unixsocket")
        .arg(socket_path(dir))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server must be installed for these tests: run `make deps`")
}

/// Whether `child` answers PING on its unix socket within 10 s; false as
/// soon as it exits (a port it could not bind). redis-server binds every
/// port before the unix socket, so an answer there means they are all its.
fn wait_ready(child: &mut Child, dir: &Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if child.try_wait().expect("wait on redis-server").is_some() {
            return false;
        }
        if let Ok(stream) = UnixStream::connect(socket_path(dir)) {
            if pongs(stream) {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("redis-server in {} did not answer PING", dir.display());
}

/// Whether the sentinel `child` came to listen on `port`: its own pid
/// answers there (another test's server may hold a port found free, and
/// would answer a `PING` as well), or false once it has exited.
fn sentinel_ready(child: &mut Child, port: u16, login: Option<(&str, &str)>) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    let ours = format!("process_id:{}", child.id());
    let mut ask = vec![];
    if let Some((user, password)) = login {
        ask.extend(["--no-auth-warning", "--user", user, "--pass", password]);
    }
    ask.extend(["INFO", "server"]);
    loop {
        if child.try_wait().expect("poll redis-server").is_some() {
            return false;
        }
        if cli(port, &ask).lines().any(|l| l == ours) {
            return true;
        }
        assert!(
            Instant::now() < deadline,
            "sentinel on {port} did not answer"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn pongs(mut stream: impl Read + Write) -> bool {
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}

/// A Redis Cluster of `n` primaries, no replicas, all slots assigned.
#[derive(Debug)]
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start(n: usize) -> Self {
        Self::start_with(n, |port| vec!["--port".to_owned(), port.to_string()], &[])
    }

    /// A cluster of nodes started with `args` for their port (see
    /// [`RedisServer::start_with_port`]), made one by `redis-cli --cluster create`
    /// with `cli_args` (`--tls` and its certificates for TLS nodes).
    pub fn start_with(n: usize, args: impl Fn(u16) -> Vec<String>, cli_args: &[&str]) -> Self {
        let nodes: Vec<RedisServer> = (0..n)
            .map(|_| {
                // The cluster bus listens on the port + 10000: a node that
                // cannot bind it exits, and is started on another port.
                RedisServer::start_with_port(|port| {
                    let mut node = args(port);
                    node.extend(
                        [
                            "--cluster-enabled",
                            "yes",
                            "--cluster-config-file",
                            "nodes.conf",
                            "--cluster-node-timeout",
                            "5000",
                        ]
                        .map(str::to_owned),
                    );
                    node
                })
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let mut create = vec!["--cluster", "create"];
        create.extend(addrs.iter().map(String::as_str));
        create.extend(["--cluster-replicas", "0", "--cluster-yes"]);
        let out = Command::new("redis-cli")
            .args(cli_args)
            .args(&create)
            .output()
            .expect("redis-cli");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let cluster = RedisCluster { nodes };
        cluster.wait_ok();
        cluster
    }

    /// `redis+cluster://` URL naming every node.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    fn wait_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self
                .nodes
                .iter()
                .all(|n| n.cli(&["cluster", "info"]).contains("cluster_state:ok"))
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("cluster did not reach cluster_state:ok");
    }
}

/// A tiny deterministic RNG (xorshift64*), so traces replay from their seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }
}

/// A TCP proxy in front of a server, for trouble Redis does not make by
/// itself: every reply held back for a while (a slow Redis), or a
/// connection dropped after Redis answered but before the answer is passed
/// on (a reset mid-call, with the call already run).
#[derive(Debug)]
pub struct Proxy {
    pub port: u16,
    state: std::sync::Arc<ProxyState>,
}

#[derive(Debug, Default)]
struct ProxyState {
    delay_ms: std::sync::atomic::AtomicU64,
    drop_reply: std::sync::atomic::AtomicBool,
    stop: std::sync::atomic::AtomicBool,
    accepted: std::sync::atomic::AtomicUsize,
    sockets: std::sync::Mutex<Vec<TcpStream>>,
}

impl Proxy {
    pub fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().unwrap().port();
        let state = std::sync::Arc::new(ProxyState::default());
        let shared = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if shared.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                shared.accepted.fetch_add(1, Ordering::SeqCst);
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                {
                    let mut sockets = shared.sockets.lock().unwrap();
                    sockets.push(client.try_clone().unwrap());
                    sockets.push(server.try_clone().unwrap());
                }
                let (c, s) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || pump(c, s, None));
                let state = shared.clone();
                std::thread::spawn(move || pump(server, client, Some(state)));
            }
        });
        Proxy { port, state }
    }

    /// Holds every reply back for `delay` from now on.
    pub fn set_delay(&self, delay: Duration) {
        self.state
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// The next reply from the server closes its connection (both sides)
    /// instead of reaching the client.
    pub fn drop_next_reply(&self) {
        self.state.drop_reply.store(true, Ordering::SeqCst);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }
}

/// Copies `from` to `to` until either closes; replies (`state` given) are
/// delayed or dropped as the proxy says.
fn pump(mut from: TcpStream, mut to: TcpStream, state: Option<std::sync::Arc<ProxyState>>) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(state) = &state {
            if state.drop_reply.swap(false, Ordering::SeqCst) {
                break;
            }
            let delay = state.delay_ms.load(Ordering::SeqCst);
            if delay > 0 {
                std::thread::sleep(Duration::from_millis(delay));
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(std::net::Shutdown::Both);
    let _ = to.shutdown(std::net::Shutdown::Both);
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        for socket in self.state.sockets.lock().unwrap().drain(..) {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
        // Wakes the accepting thread, which then sees `stop`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// The warnings Flux logged (target `flux`) in this test process since the
/// last call, as the host's logger would get them. The first call installs
/// the capturing logger.
pub fn take_warnings() -> Vec<String> {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        log::set_logger(&Capture).expect("no other logger in tests");
        log::set_max_level(log::LevelFilter::Warn);
    });
    std::mem::take(&mut *CAPTURED.lock().unwrap())
}

static CAPTURED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.target() == flux_core::LOG_TARGET && metadata.level() <= log::Level::Warn
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            CAPTURED.lock().unwrap().push(record.args().to_string());
        }
    }

    fn flush(&self) {}
}

/// A `redis-server --sentinel` started by this test process, watching one
/// master under `name` with a quorum of `quorum`; killed by pid when dropped.
#[derive(Debug)]
pub struct RedisSentinel {
    child: Child,
    pub port: u16,
    dir: PathBuf,
}

impl RedisSentinel {
    /// Marks the master down after `down_after_ms` without an answer; a
    /// failover that has not finished within `failover_timeout_ms` is tried
    /// again.
    pub fn start(
        name: &str,
        master_port: u16,
        quorum: u32,
        down_after_ms: u64,
        failover_timeout_ms: u64,
    ) -> Self {
        Self::start_guarded(
            name,
            master_port,
            quorum,
            down_after_ms,
            failover_timeout_ms,
            None,
        )
    }

    /// [`RedisSentinel::start`], answering only clients that log in as
    /// `login` (user name, password) when there is one: the user `default`
    /// by its `requirepass`, any other as an ACL user, `default` then off.
    pub fn start_guarded(
        name: &str,
        master_port: u16,
        quorum: u32,
        down_after_ms: u64,
        failover_timeout_ms: u64,
        login: Option<(&str, &str)>,
    ) -> Self {
        let dir = temp_dir();
        let guard = match login {
            None => String::new(),
            Some(("default", password)) => format!("requirepass {password}\n"),
            Some((user, password)) => {
                format!("user default off\nuser {user} on >{password} ~* &* +@all\n")
            }
        };
        for _ in 0..ATTEMPTS {
            let port = free_port();
            // Sentinel rewrites its file (what it learns), so it gets its own.
            let conf = dir.join("sentinel.conf");
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                     sentinel monitor {name} 127.0.0.1 {master_port} {quorum}\n\
                     sentinel down-after-milliseconds {name} {down_after_ms}\n\
                     sentinel failover-timeout {name} {failover_timeout_ms}\n\
                     sentinel parallel-syncs {name} 1\n{guard}",
                    dir = dir.display()
                ),
            )
            .expect("write sentinel.conf");
            let mut child = Command::new("redis-server")
                .arg(&conf)
                .arg("--sentinel")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server must be installed for these tests: run `make deps`");
            if sentinel_ready(&mut child, port, login) {
                return RedisSentinel { child, port, dir };
            }
            // It exited: its port was taken since it was found free.
        }
        panic!("redis-server --sentinel did not start in {ATTEMPTS} attempts on free ports");
    }

    pub fn cli(&self, args: &[&str]) -> String {
        cli(self.port, args)
    }
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `flux_redis::open` of the configuration `toml` gives for a metrics port,
/// serving `/metrics` on a free port: when something takes the port between
/// finding it free and the server binding it (the library then warns and
/// serves nothing), it is tried again on another. Returns the backend and
/// its port.
pub fn open_serving_metrics(toml: impl Fn(u16) -> String) -> (flux_redis::Opened, u16) {
    for _ in 0..ATTEMPTS {
        let port = free_port();
        let config = flux_core::config::Config::from_toml_str(&toml(port), None)
            .expect("a valid configuration");
        let opened = flux_redis::open(&config).expect("open");
        match flux_redis::analytics::metrics_address() {
            Some(address) if address.port() == port => return (opened, port),
            Some(address) => panic!("a metrics server was already running on {address}"),
            None => {} // the port was taken meanwhile
        }
    }
    panic!("no free port for the metrics server in {ATTEMPTS} attempts");
}
