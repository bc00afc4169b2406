//! The TCP socket under each SDK client: found when the client opens, given
//! `TCP_NODELAY`, and watched while a batch waits for its settlement.
//!
//! The SDK's AMQP stack (fe2o3-amqp 0.16) exposes neither. Two things go
//! wrong without them:
//! - **Nagle.** The stack connects without `TCP_NODELAY`. A batch leaves
//!   as frames of up to the frame size; the tail of the last one is
//!   shorter than a segment, and Nagle's algorithm holds it until the peer
//!   acknowledges what went before, which a receiver that delays its
//!   acknowledgements does up to 40 ms later.
//! - **A connection that dies under a batch.** The stack keeps a sent,
//!   unsettled transfer's outcome in the link's map, which outlives the
//!   connection: when the peer goes away after the transfer was written,
//!   the send never completes and waits for the sink's operation time-out
//!   (30 s by default), long after the destination is back (issue 4: the
//!   replay started 25 s after the destination returned in 1 of 3 runs).
//!   The stack does close the socket at once, so the batch task watches it
//!   ([`ClientSocket::closed`]) and gives up when it is gone.
//!
//! A client's socket is the TCP connection to the endpoint's port that
//! appeared while the client opened (`/proc/self/fd`, `getpeername`). Two
//! sinks opening to the same port at the same moment cannot tell their
//! sockets apart; each then watches both, so one's connection dying can
//! fail the other's batch once (sent again, duplicates keep their ids). Off
//! Linux nothing is found: no `TCP_NODELAY`, and only the time-out.

use std::os::fd::{BorrowedFd, RawFd};
use std::time::Duration;

use socket2::{SockRef, Type};

/// How often a batch task looks at its connection's socket.
const WATCH_INTERVAL: Duration = Duration::from_millis(50);

/// One TCP socket, known by its descriptor and the inode behind it (a
/// descriptor number is reused once closed; the inode is not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SocketId {
    fd: RawFd,
    inode: u64,
}

/// The sockets of one client (usually one).
#[derive(Debug, Clone, Default)]
pub(super) struct ClientSocket {
    sockets: Vec<SocketId>,
}

/// The TCP sockets to a port before a client opens.
#[derive(Debug, Default)]
pub(super) struct Before {
    port: u16,
    sockets: Vec<SocketId>,
}

impl Before {
    pub fn look(port: u16) -> Self {
        Self {
            port,
            sockets: connected_to(port),
        }
    }

    /// The sockets to the port that appeared since, with `TCP_NODELAY` set.
    pub fn new_client(&self) -> ClientSocket {
        let sockets: Vec<SocketId> = connected_to(self.port)
            .into_iter()
            .filter(|s| !self.sockets.contains(s))
            .filter(|s| with_fd(s.fd, |socket| socket.set_tcp_nodelay(true).is_ok()))
            .collect();
        ClientSocket { sockets }
    }
}

impl ClientSocket {
    /// Whether the client's socket was found.
    pub fn known(&self) -> bool {
        !self.sockets.is_empty()
    }

    /// Whether the client's socket is known and every one is closed or no
    /// longer established (the peer closed or reset it).
    pub fn is_closed(&self) -> bool {
        self.known() && self.sockets.iter().all(|s| !s.is_established())
    }

    /// Resolves once the client's connection is gone; never if its socket
    /// is not known.
    pub async fn closed(&self) {
        if !self.known() {
            return std::future::pending().await;
        }
        loop {
            tokio::time::sleep(WATCH_INTERVAL).await;
            if self.is_closed() {
                return;
            }
        }
    }
}

impl SocketId {
    fn is_established(&self) -> bool {
        inode_of(self.fd) == Some(self.inode) && with_fd(self.fd, tcp_established)
    }
}

/// The TCP port of an `amqp://` / `amqps://` endpoint, or of the namespace
/// (AMQPS, 5671).
pub(super) fn endpoint_port(custom_endpoint: Option<&str>) -> u16 {
    custom_endpoint
        .and_then(|endpoint| url::Url::parse(endpoint).ok())
        .and_then(|url| {
            url.port().or(match url.scheme() {
                "amqp" => Some(5672),
                _ => Some(5671),
            })
        })
        .unwrap_or(5671)
}

/// This process's TCP sockets whose remote port is `port`.
fn connected_to(port: u16) -> Vec<SocketId> {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<RawFd>().ok())
        .filter_map(|fd| {
            Some(SocketId {
                fd,
                inode: inode_of(fd)?,
            })
        })
        .filter(|s| with_fd(s.fd, |socket| stream_to(socket, port)))
        .collect()
}

/// The inode of the socket behind `fd` (`socket:[INODE]`), if it is one.
fn inode_of(fd: RawFd) -> Option<u64> {
    let target = std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
    let target = target.to_str()?;
    target
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Runs `check` on the socket `fd`, just seen to be a socket.
fn with_fd(fd: RawFd, check: impl FnOnce(&SockRef<'_>) -> bool) -> bool {
    // SAFETY: `fd` was a socket of this process a moment ago. If another
    // thread closed it since, the calls fail with EBADF; if the number was
    // reused, the checks look at the new descriptor, and only change it if
    // it is again a TCP connection of the same kind.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    check(&SockRef::from(&fd))
}

fn stream_to(socket: &SockRef<'_>, port: u16) -> bool {
    socket.r#type().is_ok_and(|t| t == Type::STREAM)
        && socket
            .peer_addr()
            .ok()
            .and_then(|addr| addr.as_socket())
            .is_some_and(|addr| addr.port() == port)
}

/// Whether TCP says the connection is established (not closing, closed or
/// reset).
fn tcp_established(socket: &SockRef<'_>) -> bool {
    use std::os::fd::AsRawFd;
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` and `len` are valid for writes of a `tcp_info`.
    let done = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    done == 0 && info.tcpi_state == TCP_ESTABLISHED
}

/// `TCP_ESTABLISHED` of Linux's `tcp_states.h`.
const TCP_ESTABLISHED: u8 = 1;

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};

    use super::*;

    #[test]
    fn ports_of_endpoints() {
        assert_eq!(endpoint_port(None), 5671);
        assert_eq!(endpoint_port(Some("amqp://127.0.0.1:41234")), 41234);
        assert_eq!(endpoint_port(Some("amqp://gateway")), 5672);
        assert_eq!(endpoint_port(Some("amqps://gateway")), 5671);
    }

    #[test]
    fn a_new_connection_to_the_port_gets_nodelay_and_is_watched() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let other = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let earlier = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let before = Before::look(port);
        let client = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let elsewhere = TcpStream::connect(other.local_addr().unwrap()).unwrap();
        let found = before.new_client();

        assert_eq!(found.sockets.len(), 1, "{found:?}");
        assert!(client.nodelay().unwrap(), "the new connection to the port");
        assert!(!earlier.nodelay().unwrap(), "not one that was there before");
        assert!(!elsewhere.nodelay().unwrap(), "not one to another port");

        let (_earlier_served, _) = listener.accept().unwrap();
        let (_client_served, _) = listener.accept().unwrap();
        assert!(!found.is_closed());
        drop(client);
        assert!(found.is_closed(), "closed on this side");

        // Closed by the peer: the socket is still open here, in CLOSE_WAIT.
        let before = Before::look(port);
        let client = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let found = before.new_client();
        let (peer_side, _) = listener.accept().unwrap();
        assert!(!found.is_closed());
        drop(peer_side);
        let mut buf = [0u8; 1];
        assert_eq!((&client).read(&mut buf).unwrap(), 0, "end of stream");
        assert!(found.is_closed(), "closed by the peer");
    }

    #[tokio::test]
    async fn an_unknown_socket_is_never_reported_closed() {
        let unknown = ClientSocket::default();
        let waited = tokio::time::timeout(Duration::from_millis(200), unknown.closed()).await;
        assert!(waited.is_err());
    }
}
