//! One stream connection between a guest socket and a host Unix socket: its state, the
//! control packets it owes the guest, and the credit accounting both ways.
//!
//! Guest -> host: the device advertises [`CONN_BUF`] bytes of buffer and counts in
//! `fwd_cnt` what reached the host socket. Bytes the host socket does not take at once wait
//! in `to_host`, which the guest's credit keeps below `CONN_BUF`; a guest that sends past
//! its credit is reset, so a host reader that stops stalls the guest, never grows Ember.
//! Host -> guest: bytes are read from the host socket only when the guest has credit for
//! them and an RX buffer to put them in; otherwise they stay in the kernel's socket buffer.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;

use super::packet::{Op, SHUTDOWN_RCV, SHUTDOWN_SEND};

/// The receive buffer advertised to the guest for each connection, and the most bytes
/// Ember holds for one host socket that does not read.
pub const CONN_BUF: u32 = 64 << 10;
/// Forwarded bytes the guest has not heard of that trigger a CREDIT_UPDATE: the guest may
/// be waiting for them once its credit is spent.
const CREDIT_UPDATE_THRESHOLD: u32 = CONN_BUF / 4;

/// Ports identify a connection: the host side's and the guest side's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnKey {
    pub local_port: u32,
    pub peer_port: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Host-initiated: the REQUEST is queued or sent, the guest has not answered yet.
    HostConnecting,
    Established,
}

/// Why a connection must end with a RST to the guest.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("the guest sent {sent} bytes with {room} bytes of credit left")]
    CreditExceeded { sent: usize, room: usize },
    #[error("the guest sent data after shutting its sending side")]
    DataAfterShutdown,
    #[error("the guest sent {0:?} in the wrong state")]
    UnexpectedOp(Op),
    #[error("the host socket failed: {0}")]
    Host(#[source] io::Error),
    #[error("the guest closed both directions")]
    Closed,
}

/// Control packets a connection owes the guest, as bits (never more than one of each).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Owed(u8);

impl Owed {
    const REQUEST: u8 = 1;
    const RESPONSE: u8 = 2;
    const CREDIT_UPDATE: u8 = 4;
    const SHUTDOWN: u8 = 8;

    fn take(&mut self, bit: u8) -> bool {
        let had = self.0 & bit != 0;
        self.0 &= !bit;
        had
    }
}

/// What the connection gives the guest next.
#[derive(Debug, PartialEq, Eq)]
pub enum Outgoing {
    /// A control packet (`flags` for SHUTDOWN).
    Control(Op, u32),
    /// An RW packet with this many bytes of the read buffer.
    Data(usize),
}

pub struct Connection {
    pub key: ConnKey,
    pub stream: UnixStream,
    pub state: State,
    owed: Owed,
    /// Guest -> host bytes the host socket has not taken yet.
    to_host: Vec<u8>,
    /// Bytes written to the host socket (wrapping, as the protocol counts).
    fwd_cnt: u32,
    /// The `fwd_cnt` the guest last heard.
    fwd_cnt_told: u32,
    /// Host -> guest bytes sent (wrapping).
    rx_cnt: u32,
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
    /// SHUTDOWN flags the guest sent.
    peer_shutdown: u32,
    /// The host socket reached end of file.
    host_eof: bool,
    /// The guest's sending side is done and the host socket was shut for writing.
    host_write_shut: bool,
    /// Edge-triggered readiness, cleared on EAGAIN.
    pub readable: bool,
    pub writable: bool,
    credit_requested: bool,
}

impl Connection {
    /// A connection the host asked for: a REQUEST is owed to the guest.
    pub fn host_initiated(key: ConnKey, stream: UnixStream) -> Self {
        let mut conn = Connection::new(key, stream, State::HostConnecting);
        conn.owed.0 |= Owed::REQUEST;
        conn
    }

    /// A connection the guest asked for and the host socket accepted: a RESPONSE is owed.
    pub fn guest_initiated(key: ConnKey, stream: UnixStream, buf_alloc: u32, fwd: u32) -> Self {
        let mut conn = Connection::new(key, stream, State::Established);
        conn.owed.0 |= Owed::RESPONSE;
        // Registering the socket reports any bytes already there; until then there are
        // none to ask credit for.
        conn.readable = false;
        conn.set_peer_credit(buf_alloc, fwd);
        conn
    }

    fn new(key: ConnKey, stream: UnixStream, state: State) -> Self {
        Connection {
            key,
            stream,
            state,
            owed: Owed::default(),
            to_host: Vec::new(),
            fwd_cnt: 0,
            fwd_cnt_told: 0,
            rx_cnt: 0,
            peer_buf_alloc: 0,
            peer_fwd_cnt: 0,
            peer_shutdown: 0,
            host_eof: false,
            host_write_shut: false,
            // A host-initiated socket may hold bytes sent right after the CONNECT line,
            // whose readiness the handshake already consumed.
            readable: true,
            writable: true,
            credit_requested: false,
        }
    }

    /// Every guest packet carries its receive buffer and what it consumed.
    pub fn set_peer_credit(&mut self, buf_alloc: u32, fwd_cnt: u32) {
        if (buf_alloc, fwd_cnt) != (self.peer_buf_alloc, self.peer_fwd_cnt) {
            self.credit_requested = false;
        }
        self.peer_buf_alloc = buf_alloc;
        self.peer_fwd_cnt = fwd_cnt;
    }

    /// How many bytes the guest can take now. A guest whose counters make no sense (it
    /// claims to have consumed more than was sent) gets nothing until they do.
    pub fn peer_credit(&self) -> u32 {
        let in_flight = self.rx_cnt.wrapping_sub(self.peer_fwd_cnt);
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// The counters every packet to the guest carries; the guest now knows `fwd_cnt`.
    pub fn credit_for_header(&mut self) -> (u32, u32) {
        self.fwd_cnt_told = self.fwd_cnt;
        (CONN_BUF, self.fwd_cnt)
    }

    pub fn bytes_waiting_for_host(&self) -> usize {
        self.to_host.len()
    }

    /// The guest answered a host-initiated REQUEST: tell the host client which port it got.
    pub fn on_response(&mut self) -> Result<(), ConnError> {
        if self.state != State::HostConnecting {
            return Err(ConnError::UnexpectedOp(Op::Response));
        }
        self.state = State::Established;
        let reply = format!("OK {}\n", self.key.local_port);
        // The client has read nothing yet, so its socket buffer is empty and these few
        // bytes fit whole; a short write means the client is gone or hostile.
        match self.stream.write(reply.as_bytes()) {
            Ok(n) if n == reply.len() => Ok(()),
            Ok(_) => Err(ConnError::Host(io::ErrorKind::WriteZero.into())),
            Err(e) => Err(ConnError::Host(e)),
        }
    }

    /// RW data from the guest, within the credit it was given.
    pub fn on_data(&mut self, data: &[u8]) -> Result<(), ConnError> {
        if self.state != State::Established {
            return Err(ConnError::UnexpectedOp(Op::Rw));
        }
        if self.peer_shutdown & SHUTDOWN_SEND != 0 {
            return Err(ConnError::DataAfterShutdown);
        }
        let room = CONN_BUF as usize - self.to_host.len();
        if data.len() > room {
            return Err(ConnError::CreditExceeded {
                sent: data.len(),
                room,
            });
        }
        let mut data = data;
        if self.to_host.is_empty() && self.writable {
            let n = self.write_host(data)?;
            data = &data[n..];
        }
        self.to_host.extend_from_slice(data);
        self.note_forwarded();
        Ok(())
    }

    /// The host socket became writable (or may be): pass on what waits.
    pub fn flush_to_host(&mut self) -> Result<(), ConnError> {
        if !self.to_host.is_empty() && self.writable {
            // Taken out for the call, which needs `self` mutably; put back at once.
            let waiting = std::mem::take(&mut self.to_host);
            let written = self.write_host(&waiting);
            self.to_host = waiting;
            self.to_host.drain(..written?);
            self.note_forwarded();
        }
        self.finish_guest_shutdown()
    }

    /// A SHUTDOWN from the guest. Once both directions are shut and the host has every
    /// byte, the connection ends with a RST (what Linux's transport expects).
    pub fn on_shutdown(&mut self, flags: u32) -> Result<(), ConnError> {
        self.peer_shutdown |= flags & (SHUTDOWN_RCV | SHUTDOWN_SEND);
        self.finish_guest_shutdown()
    }

    fn finish_guest_shutdown(&mut self) -> Result<(), ConnError> {
        if !self.to_host.is_empty() {
            return Ok(());
        }
        if self.peer_shutdown & SHUTDOWN_SEND != 0 && !self.host_write_shut {
            self.host_write_shut = true;
            // ENOTCONN when the client is already gone: the RST below or a read error
            // ends the connection anyway.
            let _ = self.stream.shutdown(Shutdown::Write);
        }
        let both = SHUTDOWN_RCV | SHUTDOWN_SEND;
        if self.peer_shutdown & both == both {
            return Err(ConnError::Closed);
        }
        Ok(())
    }

    pub fn on_credit_request(&mut self) {
        self.owed.0 |= Owed::CREDIT_UPDATE;
    }

    /// Whether the connection has something for the guest (a control packet, or host
    /// bytes the guest has credit for).
    pub fn has_rx_work(&self) -> bool {
        self.owed.0 != 0 || self.may_read_host() || self.should_request_credit()
    }

    fn may_read_host(&self) -> bool {
        self.state == State::Established
            && self.readable
            && !self.host_eof
            && self.peer_shutdown & SHUTDOWN_RCV == 0
            && self.peer_credit() > 0
    }

    fn should_request_credit(&self) -> bool {
        self.state == State::Established
            && self.readable
            && !self.host_eof
            && self.peer_shutdown & SHUTDOWN_RCV == 0
            && self.peer_credit() == 0
            && !self.credit_requested
    }

    /// The next packet for the guest, given `room` data bytes in its RX buffer; RW data
    /// is read into `buf`. None when there is nothing to send after all.
    pub fn next_outgoing(
        &mut self,
        room: usize,
        buf: &mut [u8],
    ) -> Result<Option<Outgoing>, ConnError> {
        if self.owed.take(Owed::REQUEST) {
            return Ok(Some(Outgoing::Control(Op::Request, 0)));
        }
        if self.owed.take(Owed::RESPONSE) {
            return Ok(Some(Outgoing::Control(Op::Response, 0)));
        }
        if self.may_read_host() && room > 0 {
            let want = room.min(buf.len()).min(self.peer_credit() as usize);
            match self.stream.read(&mut buf[..want]) {
                Ok(0) => {
                    // The host is done sending: the guest reads EOF; it may still send.
                    self.host_eof = true;
                    self.owed.0 |= Owed::SHUTDOWN;
                }
                Ok(n) => {
                    self.rx_cnt = self.rx_cnt.wrapping_add(n as u32);
                    return Ok(Some(Outgoing::Data(n)));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.readable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ConnError::Host(e)),
            }
        }
        if self.owed.take(Owed::SHUTDOWN) {
            return Ok(Some(Outgoing::Control(Op::Shutdown, SHUTDOWN_SEND)));
        }
        if self.owed.take(Owed::CREDIT_UPDATE) {
            return Ok(Some(Outgoing::Control(Op::CreditUpdate, 0)));
        }
        if self.should_request_credit() {
            self.credit_requested = true;
            return Ok(Some(Outgoing::Control(Op::CreditRequest, 0)));
        }
        Ok(None)
    }

    fn write_host(&mut self, data: &[u8]) -> Result<usize, ConnError> {
        match self.stream.write(data) {
            Ok(n) => {
                self.fwd_cnt = self.fwd_cnt.wrapping_add(n as u32);
                if n < data.len() {
                    self.writable = false;
                }
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.writable = false;
                Ok(0)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
            Err(e) => Err(ConnError::Host(e)),
        }
    }

    fn note_forwarded(&mut self) {
        if self.fwd_cnt.wrapping_sub(self.fwd_cnt_told) >= CREDIT_UPDATE_THRESHOLD {
            self.owed.0 |= Owed::CREDIT_UPDATE;
        }
    }
}
