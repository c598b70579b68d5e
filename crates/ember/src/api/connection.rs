//! One client connection: the bytes it has sent and the requests framed from them.

use super::http::{parse_request, HttpError, Parsed, Request, Response, CONTINUE};
use std::io::{self, Read, Write};
use std::os::unix::io::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// How long a client may take to send the rest of a request it has started.
pub const REQUEST_TIMEOUT: Duration = Duration::from_millis(if cfg!(test) { 300 } else { 10_000 });
/// Bound on one blocking read or write, so a stuck peer cannot hold the API thread.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
const READ_CHUNK: usize = 4096;

pub struct Connection {
    stream: UnixStream,
    buf: Vec<u8>,
    /// When the first byte of the request still being received arrived.
    pending_since: Option<Instant>,
    accepted: Instant,
    /// When the client last sent bytes or was answered.
    last_active: Instant,
    has_sent: bool,
    continue_due: bool,
    continue_sent: bool,
}

impl Connection {
    pub fn new(stream: UnixStream) -> io::Result<Self> {
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        let now = Instant::now();
        Ok(Connection {
            stream,
            buf: Vec::new(),
            pending_since: None,
            accepted: now,
            last_active: now,
            has_sent: false,
            continue_due: false,
            continue_sent: false,
        })
    }

    pub fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    /// Reads what the socket holds (call when epoll says it is readable); `false` once the
    /// peer has closed.
    pub fn fill(&mut self) -> io::Result<bool> {
        let mut chunk = [0u8; READ_CHUNK];
        match self.stream.read(&mut chunk) {
            Ok(0) => Ok(false),
            Ok(len) => {
                self.buf.extend_from_slice(&chunk[..len]);
                self.last_active = Instant::now();
                self.has_sent = true;
                self.pending_since.get_or_insert(self.last_active);
                Ok(true)
            }
            Err(err) if is_transient(&err) => Ok(true),
            Err(err) => Err(err),
        }
    }

    /// The next complete request in the buffer, if there is one.
    pub fn next_request(&mut self) -> Result<Option<Request>, HttpError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        match parse_request(&self.buf)? {
            Parsed::Complete(request, used) => {
                self.buf.drain(..used);
                self.pending_since = (!self.buf.is_empty()).then(Instant::now);
                self.continue_sent = false;
                Ok(Some(request))
            }
            Parsed::Incomplete { expects_continue } => {
                self.continue_due = expects_continue && !self.continue_sent;
                Ok(None)
            }
        }
    }

    /// Answers `Expect: 100-continue` once per request that asked for it.
    pub fn send_continue_if_due(&mut self) -> io::Result<()> {
        if self.continue_due {
            self.continue_due = false;
            self.continue_sent = true;
            self.stream.write_all(CONTINUE)?;
        }
        Ok(())
    }

    pub fn send(&mut self, response: &Response) -> io::Result<()> {
        self.last_active = Instant::now();
        self.stream.write_all(&response.to_bytes())
    }

    /// True when a started request has not been completed in time, or when the client has
    /// sent nothing at all for as long since it connected.
    pub fn is_stalled(&self, now: Instant) -> bool {
        match self.pending_since {
            Some(since) => now.duration_since(since) > REQUEST_TIMEOUT,
            None => !self.has_sent && now.duration_since(self.accepted) > REQUEST_TIMEOUT,
        }
    }

    /// Since when the connection has been between requests (nothing buffered), if it is:
    /// such a connection may be closed to make room for a new client.
    pub fn idle_since(&self) -> Option<Instant> {
        self.pending_since.is_none().then_some(self.last_active)
    }
}

fn is_transient(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}
