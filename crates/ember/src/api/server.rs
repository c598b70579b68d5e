//! The API thread's event loop: epoll over the listening socket and every open connection.

use super::connection::Connection;
use super::handler::Handler;
use super::http::Response;
use super::ApiError;
use std::collections::HashMap;
use std::io;
use std::os::unix::io::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Instant;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

/// Open connections served at once. A new client beyond them takes the place of the one idle
/// longest (connected but between requests, or closed by its peer and not yet reaped); only
/// when every connection is in the middle of a request is it answered 503 and closed.
pub const MAX_CONNECTIONS: usize = 16;
const LISTENER_ID: u64 = u64::MAX;
/// How often stalled requests are looked for, in milliseconds.
const TICK_MS: i32 = if cfg!(test) { 50 } else { 1000 };

pub struct Server {
    listener: UnixListener,
    epoll: Epoll,
    connections: HashMap<u64, Connection>,
    next_id: u64,
    handler: Handler,
}

impl Server {
    pub fn new(listener: UnixListener, handler: Handler) -> Result<Self, ApiError> {
        listener.set_nonblocking(true).map_err(ApiError::Epoll)?;
        let epoll = Epoll::new().map_err(ApiError::Epoll)?;
        let event = EpollEvent::new(EventSet::IN, LISTENER_ID);
        epoll
            .ctl(ControlOperation::Add, listener.as_raw_fd(), event)
            .map_err(ApiError::Epoll)?;
        Ok(Server {
            listener,
            epoll,
            connections: HashMap::new(),
            next_id: 0,
            handler,
        })
    }

    /// Serves requests until the VMM thread goes away.
    pub fn run(mut self) -> Result<(), ApiError> {
        let mut events = vec![EpollEvent::default(); MAX_CONNECTIONS + 1];
        while !self.handler.vmm_gone() {
            let ready = match self.epoll.wait(TICK_MS, &mut events) {
                Ok(ready) => ready,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(ApiError::Epoll(err)),
            };
            for event in &events[..ready] {
                match event.data() {
                    LISTENER_ID => self.accept_all(),
                    id => self.serve(id),
                }
            }
            // Only on a quiet tick: after a long VMM call, bytes a client sent meanwhile are
            // still unread and its request must not be judged stalled.
            if ready == 0 {
                self.drop_stalled();
            }
        }
        Ok(())
    }

    fn accept_all(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => self.add(stream),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) => {
                    log::warn!("API socket accept failed: {err}");
                    return;
                }
            }
        }
    }

    fn add(&mut self, stream: UnixStream) {
        let Ok(mut connection) = Connection::new(stream) else {
            return;
        };
        if self.connections.len() >= MAX_CONNECTIONS && !self.close_longest_idle() {
            let busy = Response::fault(503, "Too many open connections.").closing();
            let _ = connection.send(&busy);
            return;
        }
        let id = self.next_id;
        self.next_id += 1;
        let event = EpollEvent::new(EventSet::IN | EventSet::READ_HANG_UP, id);
        match self
            .epoll
            .ctl(ControlOperation::Add, connection.fd(), event)
        {
            Ok(()) => {
                self.connections.insert(id, connection);
            }
            Err(err) => log::warn!("API connection not watched: {err}"),
        }
    }

    fn serve(&mut self, id: u64) {
        let Some(connection) = self.connections.get_mut(&id) else {
            return;
        };
        let open = match connection.fill() {
            Ok(true) => serve_buffered(connection, &mut self.handler),
            Ok(false) | Err(_) => false,
        };
        if !open {
            self.close(id);
        }
    }

    fn drop_stalled(&mut self) {
        let now = Instant::now();
        let stalled: Vec<u64> = self
            .connections
            .iter()
            .filter(|(_, connection)| connection.is_stalled(now))
            .map(|(id, _)| *id)
            .collect();
        for id in stalled {
            if let Some(connection) = self.connections.get_mut(&id) {
                let timeout = Response::fault(408, "Timed out waiting for the request.");
                let _ = connection.send(&timeout.closing());
            }
            self.close(id);
        }
    }

    /// Closes the connection idle longest, to make room; `false` when none is idle.
    fn close_longest_idle(&mut self) -> bool {
        let idle = self
            .connections
            .iter()
            .filter_map(|(id, connection)| connection.idle_since().map(|since| (since, *id)))
            .min();
        match idle {
            Some((_, id)) => {
                self.close(id);
                true
            }
            None => false,
        }
    }

    fn close(&mut self, id: u64) {
        if let Some(connection) = self.connections.remove(&id) {
            let unused = EpollEvent::default();
            let _ = self
                .epoll
                .ctl(ControlOperation::Delete, connection.fd(), unused);
        }
    }
}

/// Answers every complete request buffered on `connection`; `false` when it must be closed.
fn serve_buffered(connection: &mut Connection, handler: &mut Handler) -> bool {
    loop {
        match connection.next_request() {
            Ok(Some(request)) => {
                let mut response = handler.handle(&request);
                if !request.keep_alive {
                    response = response.closing();
                }
                if connection.send(&response).is_err() || response.close {
                    return false;
                }
            }
            Ok(None) => return connection.send_continue_if_due().is_ok(),
            Err(err) => {
                let _ = connection.send(&Response::fault(400, &err.to_string()).closing());
                return false;
            }
        }
    }
}
