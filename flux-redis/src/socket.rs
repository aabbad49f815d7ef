//! A socket whose reads and writes wait on through a stop, until a deadline.
//!
//! A blocking socket read that has a receive timeout is not restarted by
//! Linux once its thread was stopped and continued: `SIGSTOP` and `SIGCONT`,
//! Ctrl-Z and `fg`, a debugger or a profiler (`py-spy` by default) attaching
//! to the process. It fails with `EINTR` though no handler ran, and no signal
//! mask holds a stop off. Without a timeout the read would be restarted, but
//! then nothing would bound it. So [`Socket`] keeps the timeout, retries a
//! read or a write that `EINTR` cut short with what is left until the
//! deadline of the call under way, and fails as a timeout only once nothing
//! is left. Redis's reply to a call that was stopped meanwhile is read, not
//! thrown away.
//!
//! A deadline bounds waiting, never taking: once it has passed, a read still
//! takes what has already arrived (a reply that came while the process was
//! stopped), and only a read that would wait fails. A write, on the other
//! hand, is not begun once it has passed: a request sent with no time left
//! to read its reply would be run by Redis and reported failed.

use std::io::{self, Read, Write};
use std::net::TcpStream;
#[cfg(unix)]
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// How far the timeout set on the socket may differ from what is left until
/// the deadline before it is set anew: a system call per read or write
/// would cost more than the call. Below the kernel's own rounding of the
/// timeout to a clock tick (1 to 10 ms).
const SLACK: Duration = Duration::from_millis(1);

/// A TCP or Unix-domain stream socket, each read and write bounded by
/// [`Socket::deadline`].
#[derive(Debug)]
pub(crate) struct Socket {
    stream: Stream,
    /// When the call under way must end (set by each request).
    pub(crate) deadline: Instant,
    /// The receive and send timeouts set on the socket; `Duration::MAX`
    /// while none is.
    read_timeout: Duration,
    write_timeout: Duration,
}

#[derive(Debug)]
enum Stream {
    Tcp(TcpStream),
    #[cfg(unix)]
    Unix(UnixStream),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Read,
    Write,
}

impl Socket {
    pub(crate) fn tcp(stream: TcpStream, deadline: Instant) -> Socket {
        Socket::new(Stream::Tcp(stream), deadline)
    }

    #[cfg(unix)]
    pub(crate) fn unix(stream: UnixStream, deadline: Instant) -> Socket {
        Socket::new(Stream::Unix(stream), deadline)
    }

    fn new(stream: Stream, deadline: Instant) -> Socket {
        Socket {
            stream,
            deadline,
            read_timeout: Duration::MAX,
            write_timeout: Duration::MAX,
        }
    }

    /// Runs `op` (one read or one write) until it is not cut short by
    /// `EINTR`, each time with the socket's timeout what is left until the
    /// deadline. A timeout that runs out is `TimedOut`.
    fn wait<T>(
        &mut self,
        direction: Direction,
        mut op: impl FnMut(&mut Stream) -> io::Result<T>,
    ) -> io::Result<T> {
        loop {
            let left = self.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return match direction {
                    Direction::Read => self.take_arrived(op),
                    Direction::Write => Err(io::ErrorKind::TimedOut.into()),
                };
            }
            let set = match direction {
                Direction::Read => &mut self.read_timeout,
                Direction::Write => &mut self.write_timeout,
            };
            if set.abs_diff(left) > SLACK {
                self.stream.set_timeout(direction, left)?;
                *set = left;
            }
            match op(&mut self.stream) {
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                result => return result.map_err(timed_out_if_would_block),
            }
        }
    }

    /// `op` (a read) on what has arrived already, without waiting.
    fn take_arrived<T>(
        &mut self,
        mut op: impl FnMut(&mut Stream) -> io::Result<T>,
    ) -> io::Result<T> {
        self.stream.set_nonblocking(true)?;
        let result = op(&mut self.stream);
        self.stream.set_nonblocking(false)?;
        result.map_err(timed_out_if_would_block)
    }
}

/// A receive or send timeout runs out as `EAGAIN`, which says nothing of time.
fn timed_out_if_would_block(err: io::Error) -> io::Error {
    if err.kind() == io::ErrorKind::WouldBlock {
        io::ErrorKind::TimedOut.into()
    } else {
        err
    }
}

impl Stream {
    fn set_timeout(&self, direction: Direction, timeout: Duration) -> io::Result<()> {
        match (self, direction) {
            (Stream::Tcp(s), Direction::Read) => s.set_read_timeout(Some(timeout)),
            (Stream::Tcp(s), Direction::Write) => s.set_write_timeout(Some(timeout)),
            #[cfg(unix)]
            (Stream::Unix(s), Direction::Read) => s.set_read_timeout(Some(timeout)),
            #[cfg(unix)]
            (Stream::Unix(s), Direction::Write) => s.set_write_timeout(Some(timeout)),
        }
    }

    fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_nonblocking(nonblocking),
            #[cfg(unix)]
            Stream::Unix(s) => s.set_nonblocking(nonblocking),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            #[cfg(unix)]
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            #[cfg(unix)]
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.wait(Direction::Read, |stream| stream.read(buf))
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.wait(Direction::Write, |stream| stream.write(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn pair(deadline: Instant) -> (Socket, UnixStream) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        (Socket::unix(ours, deadline), theirs)
    }

    #[test]
    fn past_its_deadline_a_read_takes_what_arrived_and_waits_for_nothing() {
        let (mut socket, mut peer) = pair(Instant::now());
        peer.write_all(b"+OK\r\n").unwrap();
        let mut buf = [0; 16];
        assert_eq!(socket.read(&mut buf).unwrap(), 5);
        assert_eq!(&buf[..5], b"+OK\r\n");
        let err = socket.read(&mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[test]
    fn past_its_deadline_a_write_is_not_begun() {
        let (mut socket, mut peer) = pair(Instant::now());
        let err = socket.write(b"PING\r\n").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        drop(socket);
        let mut sent = Vec::new();
        peer.read_to_end(&mut sent).unwrap();
        assert!(sent.is_empty(), "{sent:?}");
    }

    #[test]
    fn a_read_waits_until_its_deadline_and_the_next_call_until_its_own() {
        let wait = Duration::from_millis(50);
        let (mut socket, mut peer) = pair(Instant::now() + wait);
        let started = Instant::now();
        let err = socket.read(&mut [0; 8]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= wait);
        // The next call waits past the short timeout set for the last: its
        // reply comes after that would have run out.
        socket.deadline = Instant::now() + Duration::from_secs(10);
        let writer = std::thread::spawn(move || {
            std::thread::sleep(wait * 2);
            peer.write_all(b":1\r\n").unwrap();
            peer
        });
        assert_eq!(socket.read(&mut [0; 8]).unwrap(), 4);
        writer.join().unwrap();
    }
}
