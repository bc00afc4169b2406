//! The counting subscriber at an MQTT destination: one persistent session
//! (clean session off, QoS 1) that reconnects on its own while the
//! destination is down, PUBACKs everything it reads in one write per read,
//! and records every payload in a [`SharedCollector`].
//!
//! Paced (`--subscriber-pace-ms`), it waits a fixed time after each read.
//! Unpaced, it reads whenever data came, so how often it reads, and with
//! it how many segments the destination writes to it, follows how much CPU
//! the edge under test leaves free (BENCHMARKS.md, session 8).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use super::collector::SharedCollector;
use super::payload;
use super::wire;

/// A running subscriber; it stops when dropped.
pub struct Subscriber {
    stop: Arc<AtomicBool>,
    task: JoinHandle<()>,
    connections: Arc<AtomicU64>,
}

impl Subscriber {
    /// Subscribes `client_id` to `filter` on 127.0.0.1:`port`, from a task on
    /// `runtime`, retrying every 10 ms while nothing listens.
    pub fn start(
        runtime: &tokio::runtime::Handle,
        port: u16,
        client_id: &str,
        filter: &str,
        pace: Option<Duration>,
        collector: SharedCollector,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicU64::new(0));
        let task = runtime.spawn({
            let (stop, connections) = (stop.clone(), connections.clone());
            let (client_id, filter) = (client_id.to_string(), filter.to_string());
            async move {
                while !stop.load(Ordering::Relaxed) {
                    let Ok(stream) = TcpStream::connect(("127.0.0.1", port)).await else {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    connections.fetch_add(1, Ordering::Relaxed);
                    let counting = Counting {
                        collector: &collector,
                        stop: &stop,
                        pace,
                    };
                    if let Err(err) = session(stream, &client_id, &filter, counting).await {
                        tracing::debug!(%err, "bench subscriber disconnected");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        });
        Self {
            stop,
            task,
            connections,
        }
    }

    /// TCP connections made so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.abort();
    }
}

/// Where a session records, when it stops, and how it paces its reads.
struct Counting<'a> {
    collector: &'a SharedCollector,
    stop: &'a AtomicBool,
    pace: Option<Duration>,
}

async fn session(
    stream: TcpStream,
    client_id: &str,
    filter: &str,
    counting: Counting<'_>,
) -> std::io::Result<()> {
    let Counting {
        collector,
        stop,
        pace,
    } = counting;
    stream.set_nodelay(true)?;
    let (mut reader, mut writer) = stream.into_split();
    let mut hello = wire::connect(client_id, false);
    hello.extend_from_slice(&wire::subscribe(1, filter));
    writer.write_all(&hello).await?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut filled = 0;
    let mut acks = Vec::with_capacity(16 * 1024);
    while !stop.load(Ordering::Relaxed) {
        if filled == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        let n =
            match tokio::time::timeout(Duration::from_millis(100), reader.read(&mut buf[filled..]))
                .await
            {
                Err(_) => continue,
                Ok(result) => result?,
            };
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        filled += n;
        let now = payload::now_ns();
        let mut used = 0;
        {
            let mut collector = collector.lock();
            while let Some(frame) = wire::frame(&buf[used..filled]).map_err(invalid)? {
                match frame.kind {
                    wire::CONNACK => wire::check_connack(&frame).map_err(invalid)?,
                    wire::PUBLISH => {
                        let (packet_id, body) = wire::parse_publish(&frame).map_err(invalid)?;
                        collector.record(body, now);
                        if let Some(id) = packet_id {
                            wire::put_puback(&mut acks, id);
                        }
                    }
                    _ => {}
                }
                used += frame.len;
            }
        }
        buf.copy_within(used..filled, 0);
        filled -= used;
        if !acks.is_empty() {
            writer.write_all(&acks).await?;
            acks.clear();
        }
        if let Some(pace) = pace {
            tokio::time::sleep(pace).await;
        }
    }
    Ok(())
}

fn invalid(err: wire::WireError) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, err)
}
