//! TCP, SASL ANONYMOUS, the AMQP connection and its sessions.
//!
//! Each accepted socket is joined to the AMQP engine through an in-memory
//! duplex pipe and a byte pump that the peer controls: freezing the pump is
//! the "silent" fault (bytes stop both ways, the sockets stay open), and
//! aborting it is a real TCP drop (the socket closes; the engine sees the
//! pipe end). Within a session, each link is routed by its node: replies
//! go out on the links the client attached to `$cbs`/`$management`, and
//! requests come in on links to those nodes; any other target is an event
//! hub.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fe2o3_amqp::acceptor::error::AcceptorAttachError;
use fe2o3_amqp::acceptor::{
    ConnectionAcceptor, LinkAcceptor, LinkEndpoint, ListenerSessionHandle, SaslAnonymousMechanism,
    SessionAcceptor,
};
use fe2o3_amqp::types::definitions::Role;
use fe2o3_amqp::types::messaging::TargetArchetype;
use fe2o3_amqp::Sender;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::debug;

use super::{bump, cbs, events, lock, management, Shared};

/// Accepts TCP connections until the peer is dropped.
pub(crate) async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                debug!(%err, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if shared.faults().refuse {
            bump(&shared.counters.refused);
            // Linger 0 makes the close a reset; with a zero timeout the
            // drop does not block.
            #[allow(deprecated)]
            let _ = tcp.set_linger(Some(Duration::ZERO));
            drop(tcp);
            continue;
        }
        let _ = tcp.set_nodelay(true);
        let id = shared.next_connection.fetch_add(1, Ordering::Relaxed);
        bump(&shared.counters.connections);
        debug!(id, %remote, "connection accepted");
        // Register under the lock so the task's own clean-up cannot run
        // before the entry exists.
        let mut connections = lock(&shared.connections);
        let task = tokio::spawn(run_connection(id, tcp, shared.clone()));
        connections.insert(id, task.abort_handle());
    }
}

/// Removes a connection's entry and stops its AMQP engine when the
/// connection task ends or is aborted.
struct ConnectionGuard {
    id: u64,
    shared: Arc<Shared>,
    engine: tokio::task::AbortHandle,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.engine.abort();
        lock(&self.shared.connections).remove(&self.id);
    }
}

async fn run_connection(id: u64, tcp: TcpStream, shared: Arc<Shared>) {
    let (outer, inner) = tokio::io::duplex(256 * 1024);
    let engine = tokio::spawn(serve_connection(id, inner, shared.clone()));
    let _guard = ConnectionGuard {
        id,
        shared: shared.clone(),
        engine: engine.abort_handle(),
    };
    pump(
        tcp,
        outer,
        shared.frozen.subscribe(),
        shared.options.network_latency,
    )
    .await;
    debug!(id, "connection closed");
}

/// Copies bytes between the socket and the engine's pipe, both ways, until
/// either side closes; passes nothing while `frozen` is true; holds every
/// chunk for `latency` (one way), as a network would.
async fn pump(
    tcp: TcpStream,
    pipe: DuplexStream,
    frozen: watch::Receiver<bool>,
    latency: Duration,
) {
    let (tcp_read, tcp_write) = tcp.into_split();
    let (pipe_read, pipe_write) = tokio::io::split(pipe);
    let up = delayed_copy(tcp_read, pipe_write, frozen.clone(), latency);
    let down = delayed_copy(pipe_read, tcp_write, frozen, latency);
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

/// One direction of the pump: a reader that stamps each chunk and a writer
/// that sends it `latency` later, so the delay does not limit throughput.
async fn delayed_copy<R, W>(
    mut reader: R,
    mut writer: W,
    frozen: watch::Receiver<bool>,
    latency: Duration,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let mut read_frozen = frozen.clone();
    let read = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            wait_thawed(&mut read_frozen).await;
            let n = tokio::select! {
                read = reader.read(&mut buf) => match read {
                    Ok(n) => n,
                    Err(_) => return,
                },
                _ = read_frozen.changed() => continue,
            };
            if n == 0
                || tx
                    .send((Instant::now() + latency, buf[..n].to_vec()))
                    .is_err()
            {
                return;
            }
        }
    };
    let mut write_frozen = frozen;
    let write = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            // Bytes read just as the freeze began wait for the thaw.
            wait_thawed(&mut write_frozen).await;
            if writer.write_all(&chunk).await.is_err() || writer.flush().await.is_err() {
                return;
            }
        }
    };
    // The writer drains what was read before the reader saw the end.
    tokio::join!(read, write);
}

async fn wait_thawed(frozen: &mut watch::Receiver<bool>) {
    while *frozen.borrow_and_update() {
        if frozen.changed().await.is_err() {
            // The peer is gone: stay frozen until aborted.
            std::future::pending::<()>().await;
        }
    }
}

/// The AMQP side of one connection: SASL ANONYMOUS, open, then a task per
/// session.
async fn serve_connection(id: u64, io: DuplexStream, shared: Arc<Shared>) {
    let acceptor = ConnectionAcceptor::builder()
        .container_id("backhaul-eventhubs-peer")
        .max_frame_size(65536)
        .sasl_acceptor(SaslAnonymousMechanism::new())
        .build();
    let mut connection = match acceptor.accept(io).await {
        Ok(connection) => connection,
        Err(err) => {
            debug!(id, %err, "AMQP open failed");
            return;
        }
    };
    let session_acceptor = SessionAcceptor::new();
    let mut sessions = JoinSet::new();
    while let Some(incoming) = connection.next_incoming_session().await {
        match session_acceptor
            .accept_incoming_session(incoming, &mut connection)
            .await
        {
            Ok(session) => {
                sessions.spawn(serve_session(id, session, shared.clone()));
            }
            Err(err) => {
                debug!(id, %err, "session refused");
                break;
            }
        }
        while sessions.try_join_next().is_some() {}
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), connection.close()).await;
}

/// The reply links of one session, by node (`$cbs`, `$management`): the
/// client attaches them as receivers, the request links wait for them. The
/// session keeps them until it ends: dropping one early would send an
/// unsolicited detach that can reach the client after it ended the session,
/// and the SDK's AMQP stack (`fe2o3-amqp` 0.16) closes the whole connection
/// when a frame arrives for a session it already dropped.
#[derive(Default)]
pub(crate) struct ReplyLinks {
    links: Mutex<HashMap<String, ReplyLink>>,
    arrived: Notify,
}

/// A reply link shared by the session and the request link answering on it.
pub(crate) type ReplyLink = Arc<tokio::sync::Mutex<Sender>>;

impl ReplyLinks {
    fn put(&self, node: String, sender: Sender) {
        lock(&self.links).insert(node, Arc::new(tokio::sync::Mutex::new(sender)));
        self.arrived.notify_waiters();
    }

    /// The reply link for `node`, waiting up to 5 s for the client to
    /// attach it.
    pub(crate) async fn get(&self, node: &str) -> Option<ReplyLink> {
        let wait = async {
            loop {
                let notified = self.arrived.notified();
                if let Some(link) = lock(&self.links).get(node) {
                    return link.clone();
                }
                notified.await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .ok()
    }
}

/// `$cbs`, `$management` or an event hub.
fn node_of(address: &str) -> &str {
    if address == "$cbs" || address.ends_with("/$cbs") {
        "$cbs"
    } else if address == "$management" || address.ends_with("/$management") {
        "$management"
    } else {
        address
    }
}

async fn serve_session(connection: u64, mut session: ListenerSessionHandle, shared: Arc<Shared>) {
    let link_acceptor = LinkAcceptor::builder()
        .max_message_size(shared.options.max_message_size)
        .build();
    let replies = Arc::new(ReplyLinks::default());
    let mut links = JoinSet::new();
    loop {
        let Some(mut attach) = session.next_incoming_attach().await else {
            debug!(connection, "session ended");
            break;
        };
        // A link to an event hub that does not exist is refused the way the
        // service refuses it: an attach with a null target, then a detach
        // carrying the error.
        let mut refusal = None;
        if attach.role == Role::Sender {
            let address = attach
                .target
                .as_ref()
                .and_then(|t| match t.as_ref() {
                    TargetArchetype::Target(t) => t.address.clone(),
                    #[allow(unreachable_patterns)]
                    _ => None,
                })
                .unwrap_or_default();
            if !matches!(node_of(&address), "$cbs" | "$management") {
                refusal = events::refusal(&address, &shared);
                if refusal.is_some() {
                    bump(&shared.counters.attaches_refused);
                    attach.target = None;
                }
            }
        }
        let link = match link_acceptor
            .accept_incoming_attach(attach, &mut session)
            .await
        {
            Ok(link) => link,
            Err(AcceptorAttachError::SessionStopped(reason)) => {
                debug!(connection, ?reason, "session ended");
                break;
            }
            Err(err) => {
                // One link failed to attach; the session and its other
                // links carry on.
                debug!(connection, %err, "link refused");
                continue;
            }
        };
        match link {
            LinkEndpoint::Sender(sender) => {
                let address = sender
                    .source()
                    .as_ref()
                    .and_then(|s| s.address.clone())
                    .unwrap_or_default();
                replies.put(node_of(&address).to_string(), sender);
            }
            LinkEndpoint::Receiver(receiver) => {
                if let Some(error) = refusal {
                    links.spawn(async move {
                        let _ = tokio::time::timeout(
                            Duration::from_secs(1),
                            receiver.close_with_error(error),
                        )
                        .await;
                    });
                    continue;
                }
                let address = receiver
                    .target()
                    .as_ref()
                    .and_then(|t| t.address.clone())
                    .unwrap_or_default();
                match node_of(&address) {
                    "$cbs" => {
                        links.spawn(cbs::serve(receiver, replies.clone(), shared.clone()));
                    }
                    "$management" => {
                        links.spawn(management::serve(receiver, replies.clone(), shared.clone()));
                    }
                    _ => {
                        links.spawn(events::serve(connection, receiver, address, shared.clone()));
                    }
                }
            }
        }
        while links.try_join_next().is_some() {}
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), session.end()).await;
}
