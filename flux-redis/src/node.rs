//! A connection of our own to one Redis server: over TCP, TLS or a Unix
//! socket, each request and its replies bounded by a deadline that a stop of
//! the process does not cut short (see socket.rs).
//!
//! The redis crate's connection takes a read that `EINTR` cut short for a
//! reply that did not come: the call fails, and the reply, when it comes, is
//! skipped. A call Redis decided would be reported failed (or failed open)
//! though Redis counted it. So every connection the pool, Sentinel and a
//! cluster's batches use is a [`Node`]: the crate packs the commands
//! ([`redis::Cmd`]); sending, reading the replies (resp.rs) and setting up
//! the connection (TLS, `AUTH`, `SELECT`) are done here. Only a cluster's own connection (slot maps, script loads, scans)
//! stays the crate's: it sends those commands, all of them safe to repeat,
//! again by itself after such an error.
//!
//! A request's replies must come within the connection's timeout of the
//! request being sent, or within what [`Node::within`] leaves of a call's
//! deadline. A request whose time ran out (or whose socket failed) may
//! leave replies unread: the connection says it is no longer open, and the
//! pool drops it.

use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::{
    ConnectionAddr, ConnectionInfo, ConnectionLike, ErrorKind, RedisConnectionInfo, RedisResult,
    ServerError, Value,
};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use crate::resp::Replies;
use crate::socket::Socket;

/// One connection to one Redis server.
pub(crate) struct Node {
    stream: Stream,
    replies: Replies,
    /// How long a request's replies may take.
    timeout: Duration,
    /// The deadline [`Node::within`] sets for every request until it returns.
    within: Option<Instant>,
    db: i64,
    open: bool,
}

enum Stream {
    Plain(Socket),
    Tls(Box<StreamOwned<ClientConnection, Socket>>),
}

impl Stream {
    fn socket(&mut self) -> &mut Socket {
        match self {
            Stream::Plain(socket) => socket,
            Stream::Tls(tls) => &mut tls.sock,
        }
    }

    fn io(&mut self) -> &mut dyn ReadWrite {
        match self {
            Stream::Plain(socket) => socket,
            Stream::Tls(tls) => &mut **tls,
        }
    }
}

trait ReadWrite: std::io::Read + Write {}
impl<T: std::io::Read + Write> ReadWrite for T {}

impl Node {
    /// A connection to `info`, made and set up (TLS, credentials, database)
    /// by `deadline`; each of its requests may then take `timeout`.
    pub(crate) fn connect(
        info: &ConnectionInfo,
        timeout: Duration,
        deadline: Instant,
    ) -> RedisResult<Node> {
        let stream = match info.addr() {
            ConnectionAddr::Tcp(host, port) => Stream::Plain(tcp(host, *port, deadline)?),
            ConnectionAddr::TcpTls {
                host,
                port,
                insecure,
                tls_params,
            } => {
                if *insecure || tls_params.is_some() {
                    return Err(redis::RedisError::from((
                        ErrorKind::InvalidClientConfig,
                        "TLS is verified against the system's root certificates: a URL may not \
                         turn verification off (#insecure) or name certificates",
                    )));
                }
                Stream::Tls(Box::new(tls(host, *port, deadline)?))
            }
            #[cfg(unix)]
            ConnectionAddr::Unix(path) => Stream::Plain(Socket::unix(
                std::os::unix::net::UnixStream::connect(path)?,
                deadline,
            )),
            other => {
                return Err(redis::RedisError::from((
                    ErrorKind::InvalidClientConfig,
                    "an address Flux cannot connect to",
                    other.to_string(),
                )))
            }
        };
        let mut node = Node {
            stream,
            replies: Replies::default(),
            timeout,
            within: None,
            db: info.redis_settings().db(),
            open: true,
        };
        node.within(deadline, |node| node.set_up(info.redis_settings()))?;
        Ok(node)
    }

    /// Sends the credentials and selects the database, in one round trip.
    /// Flux's connections speak RESP2, whatever the URL's `protocol` says:
    /// its scripts answer the same integers in both.
    fn set_up(&mut self, settings: &RedisConnectionInfo) -> RedisResult<()> {
        let mut packed = Vec::new();
        let mut count = 0;
        if let Some(password) = settings.password() {
            let mut auth = redis::cmd("AUTH");
            if let Some(username) = settings.username() {
                auth.arg(username);
            }
            auth.arg(password).write_packed_command(&mut packed);
            count += 1;
        }
        if settings.db() != 0 {
            redis::cmd("SELECT")
                .arg(settings.db())
                .write_packed_command(&mut packed);
            count += 1;
        }
        if count == 0 {
            return Ok(());
        }
        let mut replies = self.req_packed_commands(&packed, 0, count)?.into_iter();
        if settings.password().is_some() {
            if let Some(Value::ServerError(err)) = replies.next() {
                return Err(redis::RedisError::from((
                    ErrorKind::AuthenticationFailed,
                    "Redis refused the credentials",
                    reply(&err),
                )));
            }
        }
        if let Some(Value::ServerError(err)) = replies.next() {
            return Err(redis::RedisError::from((
                ErrorKind::InvalidClientConfig,
                "Redis refused to select the configured database",
                reply(&err),
            )));
        }
        Ok(())
    }

    /// Runs `f` with every request it makes ending by `deadline` (or
    /// earlier, by the connection's own timeout); a timeout error if
    /// `deadline` has passed.
    pub(crate) fn within<T>(
        &mut self,
        deadline: Instant,
        f: impl FnOnce(&mut Node) -> RedisResult<T>,
    ) -> RedisResult<T> {
        if deadline <= Instant::now() {
            return Err(timed_out());
        }
        let outer = self.within;
        self.within = Some(outer.map_or(deadline, |outer| outer.min(deadline)));
        let result = f(self);
        self.within = outer;
        result
    }

    /// Sends `cmd` (one or more packed commands) without reading a reply;
    /// the replies that follow must come by the deadline it sets.
    pub(crate) fn send_packed_command(&mut self, cmd: &[u8]) -> RedisResult<()> {
        let by_timeout = Instant::now() + self.timeout;
        self.stream.socket().deadline = self.within.map_or(by_timeout, |d| d.min(by_timeout));
        let io = self.stream.io();
        let sent = io.write_all(cmd).and_then(|()| io.flush());
        sent.map_err(|err| self.failed(err.into()))
    }

    /// The next reply, by the deadline of the last request sent.
    pub(crate) fn recv_response(&mut self) -> RedisResult<Value> {
        match self.replies.next(self.stream.io()) {
            Ok(value) => Ok(value),
            Err(err) => Err(self.failed(err)),
        }
    }

    /// A socket error or a reply that cannot be read: the connection may
    /// hold replies unread, or none will come.
    fn failed(&mut self, err: redis::RedisError) -> redis::RedisError {
        self.open = false;
        err
    }
}

impl ConnectionLike for Node {
    fn req_packed_command(&mut self, cmd: &[u8]) -> RedisResult<Value> {
        self.send_packed_command(cmd)?;
        self.recv_response()
    }

    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        self.send_packed_command(cmd)?;
        let mut replies = Vec::with_capacity(count);
        for i in 0..offset + count {
            let reply = self.recv_response()?;
            if i >= offset {
                replies.push(reply);
            }
        }
        Ok(replies)
    }

    fn get_db(&self) -> i64 {
        self.db
    }

    fn check_connection(&mut self) -> bool {
        redis::cmd("PING").query::<()>(self).is_ok()
    }

    fn is_open(&self) -> bool {
        self.open
    }
}

/// An error reply as Redis wrote it: its code, then its text.
fn reply(err: &ServerError) -> String {
    match err.details() {
        Some(details) => format!("{} {details}", err.code()),
        None => err.code().to_owned(),
    }
}

/// The error of a call that ran out of time.
pub(crate) fn timed_out() -> redis::RedisError {
    std::io::Error::from(std::io::ErrorKind::TimedOut).into()
}

/// What is left until `deadline`, or a timeout error when nothing is.
pub(crate) fn left(deadline: Instant) -> RedisResult<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(timed_out());
    }
    Ok(left)
}

/// A TCP connection to the first address of `host` that takes one by
/// `deadline`. A request and its reply are each one write: nothing for
/// Nagle's algorithm to hold back.
fn tcp(host: &str, port: u16, deadline: Instant) -> RedisResult<Socket> {
    let mut last_error = None;
    for addr in (host, port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, left(deadline)?) {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                return Ok(Socket::tcp(stream, deadline));
            }
            Err(err) => last_error = Some(err),
        }
    }
    Err(match last_error {
        Some(err) => err.into(),
        None => redis::RedisError::from((
            ErrorKind::InvalidClientConfig,
            "the host name resolves to no address",
            host.to_owned(),
        )),
    })
}

/// A TLS connection to `host`, its certificate verified against the
/// system's root certificates (or those of the file `SSL_CERT_FILE` names),
/// handshake done by `deadline`.
fn tls(
    host: &str,
    port: u16,
    deadline: Instant,
) -> RedisResult<StreamOwned<ClientConnection, Socket>> {
    let name = ServerName::try_from(host.to_owned()).map_err(|_| {
        redis::RedisError::from((
            ErrorKind::InvalidClientConfig,
            "not a host name a TLS certificate can be for",
            host.to_owned(),
        ))
    })?;
    let mut conn = ClientConnection::new(tls_config()?, name).map_err(tls_error)?;
    let mut socket = tcp(host, port, deadline)?;
    while conn.is_handshaking() {
        conn.complete_io(&mut socket)?;
    }
    Ok(StreamOwned::new(conn, socket))
}

/// Read anew for each connection, as the file `SSL_CERT_FILE` names may
/// change.
fn tls_config() -> RedisResult<Arc<ClientConfig>> {
    let found = rustls_native_certs::load_native_certs();
    if let Some(err) = found.errors.into_iter().next() {
        return Err(redis::RedisError::from((
            ErrorKind::Io,
            "cannot read the root certificates",
            err.to_string(),
        )));
    }
    let mut roots = RootCertStore::empty();
    for cert in found.certs {
        roots.add(cert).map_err(tls_error)?;
    }
    let config = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn tls_error(err: rustls::Error) -> redis::RedisError {
    std::io::Error::new(std::io::ErrorKind::InvalidData, err).into()
}
