//! The host side of the vsock device: the listener at `uds_path` for host-initiated
//! connections, Unix sockets at `<uds_path>_<port>` for guest-initiated ones, and the
//! connections between, keyed by ports. Host sockets are watched by an epoll of the
//! muxer's own, which the device registers with the event loop as one fd: connections
//! come and go while the guest's TX queue is processed, where the event loop is out of
//! reach.
//!
//! Everything a client or the guest can make it hold is bounded: [`MAX_CONNECTIONS`]
//! connections of at most [`super::connection::CONN_BUF`] buffered bytes each,
//! [`MAX_HANDSHAKES`] host clients that have not finished their `CONNECT` line (the oldest
//! is dropped for a new one), [`MAX_PENDING_RESETS`] RSTs owed for unknown connections.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Read};
use std::ops::Bound;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use super::connection::{ConnError, ConnKey, Connection, Outgoing, State};
use super::packet::{Header, Op, MAX_PKT_DATA, TYPE_STREAM};
use super::VsockError;

pub const MAX_CONNECTIONS: usize = 256;
pub const MAX_HANDSHAKES: usize = 64;
pub const MAX_PENDING_RESETS: usize = 256;
/// `CONNECT 4294967295\n` is 19 bytes; anything longer is not a request.
const MAX_CONNECT_LINE: usize = 24;
/// Host-initiated connections take host ports from here up, away from service ports.
const FIRST_LOCAL_PORT: u32 = 1 << 30;
/// The host's CID, as the guest addresses it.
pub const HOST_CID: u64 = 2;
const LISTENER_TOKEN: u64 = 0;
/// Readiness events taken from the muxer's epoll per pass.
const EVENTS_PER_PASS: usize = 64;

/// A host client that has connected but not sent its whole `CONNECT <port>\n` yet.
struct Handshake {
    stream: UnixStream,
    line: Vec<u8>,
}

/// What `handle_guest_packet` did, for metrics.
#[derive(Debug, PartialEq, Eq)]
pub enum GuestPacketOutcome {
    Handled,
    /// The packet ended or refused a connection (a RST is owed or the guest sent one).
    Reset,
}

pub struct Muxer {
    guest_cid: u64,
    uds_path: PathBuf,
    /// `(device, inode)` of the socket file this muxer bound, so that only that file is
    /// removed when the muxer goes.
    bound_file: Option<(u64, u64)>,
    listener: UnixListener,
    epoll: Epoll,
    conns: BTreeMap<ConnKey, (u64, Connection)>,
    tokens: BTreeMap<u64, ConnKey>,
    handshakes: BTreeMap<u64, Handshake>,
    next_token: u64,
    next_local_port: u32,
    resets: VecDeque<ConnKey>,
    /// Where the round-robin over connections resumes, for fairness.
    cursor: Option<ConnKey>,
    /// Host bytes for the RX packet being built.
    pub rx_buf: Vec<u8>,
}

impl Muxer {
    /// Binds `uds_path` (which must not exist) and sets up the epoll.
    pub fn new(guest_cid: u64, uds_path: &Path) -> Result<Muxer, VsockError> {
        let listener = UnixListener::bind(uds_path).map_err(|source| VsockError::Bind {
            path: uds_path.to_path_buf(),
            source,
        })?;
        listener.set_nonblocking(true).map_err(VsockError::Socket)?;
        let bound_file = std::fs::symlink_metadata(uds_path)
            .ok()
            .map(|meta| (meta.dev(), meta.ino()));
        let epoll = Epoll::new().map_err(VsockError::Epoll)?;
        let event = EpollEvent::new(EventSet::IN, LISTENER_TOKEN);
        epoll
            .ctl(ControlOperation::Add, listener.as_raw_fd(), event)
            .map_err(VsockError::Epoll)?;
        Ok(Muxer {
            guest_cid,
            uds_path: uds_path.to_path_buf(),
            bound_file,
            listener,
            epoll,
            conns: BTreeMap::new(),
            tokens: BTreeMap::new(),
            handshakes: BTreeMap::new(),
            next_token: LISTENER_TOKEN + 1,
            next_local_port: FIRST_LOCAL_PORT,
            resets: VecDeque::new(),
            cursor: None,
            rx_buf: vec![0u8; MAX_PKT_DATA],
        })
    }

    /// The fd the event loop watches: readable when a host socket has news.
    pub fn epoll_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    pub fn handshake_count(&self) -> usize {
        self.handshakes.len()
    }

    pub fn pending_resets(&self) -> usize {
        self.resets.len()
    }

    /// Bytes held for host sockets that have not read them, over every connection.
    pub fn buffered_bytes(&self) -> usize {
        self.conns
            .values()
            .map(|(_, c)| c.bytes_waiting_for_host())
            .sum()
    }

    /// Drops every connection and half-done handshake (the guest's transport reset).
    pub fn reset_all(&mut self) {
        self.conns.clear();
        self.tokens.clear();
        self.handshakes.clear();
        self.resets.clear();
        self.cursor = None;
    }

    fn new_token(&mut self) -> u64 {
        let token = self.next_token;
        // 2^64 tokens are never handed out in a VM's life; wrapping just skips the listener.
        self.next_token = self.next_token.wrapping_add(1).max(LISTENER_TOKEN + 1);
        token
    }

    fn watch(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let set = EventSet::IN | EventSet::OUT | EventSet::READ_HANG_UP | EventSet::EDGE_TRIGGERED;
        self.epoll
            .ctl(ControlOperation::Add, fd, EpollEvent::new(set, token))
    }

    /// Handles what the host sockets reported; returns whether the guest may have packets
    /// to receive.
    pub fn process_host_events(&mut self) -> bool {
        let mut events = [EpollEvent::default(); EVENTS_PER_PASS];
        let count = match self.epoll.wait(0, &mut events) {
            Ok(count) => count,
            Err(e) => {
                log::error!("virtio-vsock: epoll_wait failed: {e}");
                return false;
            }
        };
        for event in &events[..count] {
            let (token, set) = (event.data(), event.event_set());
            if token == LISTENER_TOKEN {
                self.accept_clients();
            } else if self.handshakes.contains_key(&token) {
                self.continue_handshake(token);
            } else if let Some(&key) = self.tokens.get(&token) {
                self.on_stream_event(key, set);
            }
        }
        self.has_rx_work()
    }

    fn accept_clients(&mut self) {
        for _ in 0..MAX_HANDSHAKES {
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    log::warn!("virtio-vsock: accept on {:?}: {e}", self.uds_path);
                    return;
                }
            };
            if let Err(e) = stream.set_nonblocking(true) {
                log::warn!("virtio-vsock: a host client dropped: {e}");
                continue;
            }
            if self.handshakes.len() >= MAX_HANDSHAKES {
                // The oldest client that has not said where it goes makes room.
                self.handshakes.pop_first();
            }
            let token = self.new_token();
            if let Err(e) = self.watch(stream.as_raw_fd(), token) {
                log::warn!("virtio-vsock: cannot watch a host client: {e}");
                continue;
            }
            let line = Vec::with_capacity(MAX_CONNECT_LINE);
            self.handshakes.insert(token, Handshake { stream, line });
            // Its line may already be there, and the edge is not reported twice.
            self.continue_handshake(token);
        }
    }

    /// Reads a client's `CONNECT` line one byte at a time, so that bytes after it stay in
    /// the socket for the guest.
    fn continue_handshake(&mut self, token: u64) {
        let Some(shake) = self.handshakes.get_mut(&token) else {
            return;
        };
        let mut byte = [0u8; 1];
        let port = loop {
            match shake.stream.read(&mut byte) {
                Ok(1) if byte[0] == b'\n' => break parse_connect(&shake.line),
                Ok(1) if shake.line.len() < MAX_CONNECT_LINE => shake.line.push(byte[0]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // End of file, an error, or a line too long: the client is dropped.
                _ => break None,
            }
        };
        let Some(shake) = self.handshakes.remove(&token) else {
            return;
        };
        let Some(peer_port) = port else {
            log::debug!("virtio-vsock: host client sent no valid CONNECT line");
            return;
        };
        if self.conns.len() >= MAX_CONNECTIONS {
            log::warn!("virtio-vsock: {MAX_CONNECTIONS} connections open, a host client dropped");
            return;
        }
        let Some(local_port) = self.allocate_local_port() else {
            return;
        };
        let key = ConnKey {
            local_port,
            peer_port,
        };
        let conn = Connection::host_initiated(key, shake.stream);
        self.tokens.insert(token, key);
        self.conns.insert(key, (token, conn));
    }

    /// A host port no connection uses.
    fn allocate_local_port(&mut self) -> Option<u32> {
        for _ in 0..=MAX_CONNECTIONS {
            let port = self.next_local_port;
            self.next_local_port = port.checked_add(1).unwrap_or(FIRST_LOCAL_PORT);
            if !self.conns.keys().any(|k| k.local_port == port) {
                return Some(port);
            }
        }
        None
    }

    fn on_stream_event(&mut self, key: ConnKey, set: EventSet) {
        let Some((_, conn)) = self.conns.get_mut(&key) else {
            return;
        };
        let gone = EventSet::HANG_UP | EventSet::ERROR | EventSet::READ_HANG_UP;
        if set.intersects(EventSet::IN | gone) {
            conn.readable = true;
        }
        if set.intersects(EventSet::OUT | gone) {
            conn.writable = true;
        }
        let result = conn.flush_to_host();
        self.settle(key, result);
    }

    /// Ends the connection with a RST when `result` says so.
    fn settle(&mut self, key: ConnKey, result: Result<(), ConnError>) -> GuestPacketOutcome {
        match result {
            Ok(()) => GuestPacketOutcome::Handled,
            Err(e) => {
                log::debug!("virtio-vsock: connection {key:?} reset: {e}");
                self.remove(key);
                self.owe_reset(key);
                GuestPacketOutcome::Reset
            }
        }
    }

    fn remove(&mut self, key: ConnKey) {
        if let Some((token, _)) = self.conns.remove(&key) {
            self.tokens.remove(&token);
        }
    }

    fn owe_reset(&mut self, key: ConnKey) {
        if self.resets.len() < MAX_PENDING_RESETS {
            self.resets.push_back(key);
        }
    }

    /// One packet from the guest; its CIDs and type were checked by the caller.
    pub fn handle_guest_packet(&mut self, hdr: &Header, data: &[u8]) -> GuestPacketOutcome {
        let key = ConnKey {
            local_port: hdr.dst_port,
            peer_port: hdr.src_port,
        };
        let op = hdr.op();
        if op == Some(Op::Rst) {
            self.remove(key);
            return GuestPacketOutcome::Reset;
        }
        if op == Some(Op::Request) && !self.conns.contains_key(&key) {
            return self.connect_to_host(key, hdr);
        }
        let Some((_, conn)) = self.conns.get_mut(&key) else {
            self.owe_reset(key);
            return GuestPacketOutcome::Reset;
        };
        conn.set_peer_credit(hdr.buf_alloc, hdr.fwd_cnt);
        let result = match op {
            Some(Op::Response) => conn.on_response(),
            Some(Op::Rw) => conn.on_data(data),
            Some(Op::Shutdown) => conn.on_shutdown(hdr.flags),
            Some(Op::CreditRequest) => {
                conn.on_credit_request();
                Ok(())
            }
            Some(Op::CreditUpdate) => Ok(()),
            Some(other) => Err(ConnError::UnexpectedOp(other)),
            None => Err(ConnError::UnexpectedOp(Op::Rst)),
        };
        self.settle(key, result)
    }

    /// A guest REQUEST to host port `key.local_port`: connect to `<uds_path>_<port>`.
    fn connect_to_host(&mut self, key: ConnKey, hdr: &Header) -> GuestPacketOutcome {
        if self.conns.len() >= MAX_CONNECTIONS {
            self.owe_reset(key);
            return GuestPacketOutcome::Reset;
        }
        let mut path = self.uds_path.clone().into_os_string();
        path.push(format!("_{}", key.local_port));
        let stream = match UnixStream::connect(&path) {
            Ok(stream) => stream,
            Err(e) => {
                log::debug!("virtio-vsock: guest connect to {path:?} refused: {e}");
                self.owe_reset(key);
                return GuestPacketOutcome::Reset;
            }
        };
        let token = self.new_token();
        let ready = stream
            .set_nonblocking(true)
            .and_then(|()| self.watch(stream.as_raw_fd(), token));
        if let Err(e) = ready {
            log::warn!("virtio-vsock: cannot watch {path:?}: {e}");
            self.owe_reset(key);
            return GuestPacketOutcome::Reset;
        }
        let conn = Connection::guest_initiated(key, stream, hdr.buf_alloc, hdr.fwd_cnt);
        self.tokens.insert(token, key);
        self.conns.insert(key, (token, conn));
        GuestPacketOutcome::Handled
    }

    /// Owes the guest a RST for the connection `hdr` is about (a socket type this
    /// device does not carry), unless it is a RST itself.
    pub fn refuse(&mut self, hdr: &Header) {
        if hdr.op() != Some(Op::Rst) {
            self.owe_reset(ConnKey {
                local_port: hdr.dst_port,
                peer_port: hdr.src_port,
            });
        }
    }

    pub fn has_rx_work(&self) -> bool {
        !self.resets.is_empty() || self.conns.values().any(|(_, c)| c.has_rx_work())
    }

    /// The next packet for the guest, given `room` data bytes in its RX buffer. Its data,
    /// if any, is `rx_buf[..header.len]`.
    pub fn next_rx_packet(&mut self, room: usize) -> Option<Header> {
        if let Some(key) = self.resets.pop_front() {
            return Some(header(self.guest_cid, key, Op::Rst));
        }
        let after = self.cursor.map_or(Bound::Unbounded, Bound::Excluded);
        let upto = self.cursor.map_or(Bound::Unbounded, Bound::Included);
        let keys: Vec<ConnKey> = self
            .conns
            .range((after, Bound::Unbounded))
            .chain(self.conns.range((Bound::Unbounded, upto)))
            .filter(|(_, (_, c))| c.has_rx_work())
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            let Some((_, conn)) = self.conns.get_mut(&key) else {
                continue;
            };
            let (op, flags, len) = match conn.next_outgoing(room, &mut self.rx_buf) {
                Ok(None) => continue,
                Ok(Some(Outgoing::Control(op, flags))) => (op, flags, 0),
                Ok(Some(Outgoing::Data(n))) => (Op::Rw, 0, n),
                Err(e) => {
                    log::debug!("virtio-vsock: connection {key:?} reset: {e}");
                    self.remove(key);
                    return Some(header(self.guest_cid, key, Op::Rst));
                }
            };
            let (buf_alloc, fwd_cnt) = conn.credit_for_header();
            self.cursor = Some(key);
            let mut packet = header(self.guest_cid, key, op);
            packet.flags = flags;
            packet.buf_alloc = buf_alloc;
            packet.fwd_cnt = fwd_cnt;
            // At most MAX_PKT_DATA.
            packet.len = len as u32;
            return Some(packet);
        }
        None
    }

    /// The state of connection `key`, for tests and metrics.
    pub fn state_of(&self, key: ConnKey) -> Option<State> {
        self.conns.get(&key).map(|(_, c)| c.state)
    }
}

impl Drop for Muxer {
    /// Removes the socket file it made (a VM that failed to build, or a device torn
    /// down), so that the same uds_path can be used again; a file someone put there since
    /// is left alone.
    fn drop(&mut self) {
        let current = std::fs::symlink_metadata(&self.uds_path)
            .ok()
            .map(|meta| (meta.dev(), meta.ino()));
        if current.is_some() && current == self.bound_file {
            let _ = std::fs::remove_file(&self.uds_path);
        }
    }
}

/// A packet from the host side of connection `key` to the guest.
fn header(guest_cid: u64, key: ConnKey, op: Op) -> Header {
    Header {
        src_cid: HOST_CID,
        dst_cid: guest_cid,
        src_port: key.local_port,
        dst_port: key.peer_port,
        kind: TYPE_STREAM,
        op: op.to_u16(),
        ..Header::default()
    }
}

/// `CONNECT <port>` (the newline already stripped) -> the port.
pub fn parse_connect(line: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(line).ok()?;
    let text = text.strip_suffix('\r').unwrap_or(text);
    let port = text.strip_prefix("CONNECT ")?;
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    port.parse().ok()
}
