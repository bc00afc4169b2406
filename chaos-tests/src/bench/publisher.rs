//! The load generator: QoS 1 publishers over raw MQTT 3.1.1, each keeping
//! a window of unacknowledged messages in flight and writing many PUBLISH
//! packets per `write` (a shallow window stalls on Nagle and delayed ACKs:
//! 2.6k msg/s with 100 in flight, `shared/reference/baseline.md` §2).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use super::payload::{self, Stamp};
use super::wire;

/// Most messages put into one `write`.
const MAX_BURST: usize = 256;

/// One publisher's job.
#[derive(Debug, Clone)]
pub struct PublishSpec {
    pub port: u16,
    pub client_id: String,
    pub topic: String,
    /// Written into every payload; numbers start at 0 per publisher.
    pub publisher: u32,
    /// Messages to publish (the stop flag may end it earlier).
    pub count: u64,
    pub payload_size: usize,
    /// Unacknowledged messages allowed in flight (at most 65,535).
    pub window: usize,
    /// Messages per second, or as fast as the window allows.
    pub rate: Option<f64>,
}

/// What a publisher achieved.
#[derive(Debug, Clone, Default)]
pub struct PublishReport {
    pub sent: u64,
    pub acked: u64,
    /// [`payload::now_ns`] of the first write and of the last PUBACK.
    pub first_sent_ns: u64,
    pub last_ack_ns: u64,
    pub error: Option<String>,
}

fn packet_id(seq: u64) -> u16 {
    (seq % 65_535) as u16 + 1
}

/// Connects, publishes and waits for every PUBACK; an error (connection
/// refused or closed) ends it early with what was acknowledged so far.
pub async fn publish(spec: PublishSpec, stop: Arc<AtomicBool>) -> PublishReport {
    let mut report = PublishReport::default();
    let sent = Arc::new(AtomicU64::new(0));
    let result = run(&spec, &stop, &sent, &mut report).await;
    report.sent = sent.load(Ordering::Acquire);
    if let Err(err) = result {
        report.error = Some(format!("publisher {}: {err}", spec.client_id));
    }
    report
}

async fn run(
    spec: &PublishSpec,
    stop: &Arc<AtomicBool>,
    sent: &Arc<AtomicU64>,
    report: &mut PublishReport,
) -> std::io::Result<()> {
    let stream = TcpStream::connect(("127.0.0.1", spec.port)).await?;
    stream.set_nodelay(true)?;
    let (mut reader, mut writer) = stream.into_split();
    writer
        .write_all(&wire::connect(&spec.client_id, true))
        .await?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut filled = 0;
    loop {
        let n = reader.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Err(closed("before CONNACK"));
        }
        filled += n;
        if let Some(frame) = wire::frame(&buf[..filled]).map_err(invalid)? {
            wire::check_connack(&frame).map_err(invalid)?;
            let used = frame.len;
            buf.copy_within(used..filled, 0);
            filled -= used;
            break;
        }
    }

    let window = Arc::new(Semaphore::new(spec.window.clamp(1, 65_535)));
    let writer_done = Arc::new(AtomicBool::new(false));
    report.first_sent_ns = payload::now_ns();
    let write_task = tokio::spawn({
        let (spec, stop, sent, window, writer_done) = (
            spec.clone(),
            stop.clone(),
            sent.clone(),
            window.clone(),
            writer_done.clone(),
        );
        async move {
            let result = write_loop(&spec, &stop, &sent, &window, &mut writer).await;
            writer_done.store(true, Ordering::Release);
            result.map(|()| writer)
        }
    });

    let mut acked = 0u64;
    let read_result = loop {
        let done = writer_done.load(Ordering::Acquire);
        if done && acked >= sent.load(Ordering::Acquire) {
            break Ok(());
        }
        let n =
            match tokio::time::timeout(Duration::from_millis(50), reader.read(&mut buf[filled..]))
                .await
            {
                Err(_) => continue,
                Ok(Ok(0)) => break Err(closed(&format!("after {acked} PUBACKs"))),
                Ok(Ok(n)) => n,
                Ok(Err(err)) => break Err(err),
            };
        filled += n;
        let mut used = 0;
        let mut released = 0;
        while let Some(frame) = wire::frame(&buf[used..filled]).map_err(invalid)? {
            if frame.kind == wire::PUBACK {
                released += 1;
            }
            used += frame.len;
        }
        buf.copy_within(used..filled, 0);
        filled -= used;
        if released > 0 {
            acked += released as u64;
            report.acked = acked;
            report.last_ack_ns = payload::now_ns();
            window.add_permits(released);
        }
    };
    if read_result.is_err() {
        write_task.abort();
    }
    match write_task.await {
        Ok(Ok(_writer)) => {}
        Ok(Err(err)) => return Err(err),
        Err(_) => {}
    }
    read_result
}

async fn write_loop(
    spec: &PublishSpec,
    stop: &AtomicBool,
    sent: &AtomicU64,
    window: &Semaphore,
    writer: &mut tokio::net::tcp::OwnedWriteHalf,
) -> std::io::Result<()> {
    let mut template = payload::template(spec.payload_size);
    let mut out = Vec::with_capacity(MAX_BURST * (spec.payload_size + spec.topic.len() + 8));
    let started = tokio::time::Instant::now();
    let mut seq = 0u64;
    while seq < spec.count && !stop.load(Ordering::Relaxed) {
        let burst = match spec.rate {
            Some(rate) => {
                let due = started + Duration::from_secs_f64(seq as f64 / rate);
                tokio::time::sleep_until(due).await;
                1
            }
            None => window.available_permits().clamp(1, MAX_BURST),
        };
        let burst = burst.min((spec.count - seq) as usize);
        let permit = window
            .acquire_many(burst as u32)
            .await
            .map_err(|_| closed("window closed"))?;
        permit.forget();
        for _ in 0..burst {
            payload::stamp(
                &mut template,
                Stamp {
                    publisher: spec.publisher,
                    seq,
                    sent_ns: payload::now_ns(),
                },
            );
            wire::put_publish(&mut out, &spec.topic, packet_id(seq), &template);
            seq += 1;
        }
        writer.write_all(&out).await?;
        out.clear();
        sent.store(seq, Ordering::Release);
    }
    Ok(())
}

fn closed(when: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        format!("connection closed {when}"),
    )
}

fn invalid(err: wire::WireError) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, err)
}

/// Many publishers at once: `publishers` connections to `port`, publisher
/// ids `first_id..`, topics `factory/p<id>`, `count` messages split evenly.
#[derive(Debug, Clone)]
pub struct Load {
    pub port: u16,
    pub publishers: usize,
    pub first_id: u32,
    pub count: u64,
    pub payload_size: usize,
    pub window: usize,
    pub rate: Option<f64>,
}

impl Load {
    /// The publishers' specs; publisher `i` publishes `per[i]` messages.
    pub fn specs(&self) -> Vec<PublishSpec> {
        let n = self.publishers.max(1) as u64;
        (0..n)
            .map(|i| {
                let id = self.first_id + i as u32;
                PublishSpec {
                    port: self.port,
                    client_id: format!("bench-pub-{id}"),
                    topic: format!("factory/p{id}"),
                    publisher: id,
                    count: self.count / n + u64::from(i < self.count % n),
                    payload_size: self.payload_size,
                    window: self.window,
                    rate: self.rate.map(|r| r / n as f64),
                }
            })
            .collect()
    }
}

/// The sum of several publishers' reports.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    pub sent: u64,
    pub acked: u64,
    pub first_sent_ns: u64,
    pub last_ack_ns: u64,
    pub errors: Vec<String>,
}

impl LoadReport {
    /// PUBACKed messages per second, first write to last PUBACK.
    pub fn ack_rate(&self) -> f64 {
        let span = self.last_ack_ns.saturating_sub(self.first_sent_ns) as f64 / 1e9;
        if span > 0.0 {
            self.acked as f64 / span
        } else {
            0.0
        }
    }
}

/// Runs every publisher of `load` to the end.
pub async fn run_load(load: &Load, stop: Arc<AtomicBool>) -> LoadReport {
    let tasks: Vec<_> = load
        .specs()
        .into_iter()
        .map(|spec| tokio::spawn(publish(spec, stop.clone())))
        .collect();
    let mut total = LoadReport {
        first_sent_ns: u64::MAX,
        ..Default::default()
    };
    for task in tasks {
        let report = match task.await {
            Ok(report) => report,
            Err(err) => PublishReport {
                error: Some(format!("publisher task: {err}")),
                ..Default::default()
            },
        };
        total.sent += report.sent;
        total.acked += report.acked;
        if report.sent > 0 {
            total.first_sent_ns = total.first_sent_ns.min(report.first_sent_ns);
        }
        total.last_ack_ns = total.last_ack_ns.max(report.last_ack_ns);
        total.errors.extend(report.error);
    }
    if total.first_sent_ns == u64::MAX {
        total.first_sent_ns = 0;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_splits_counts_and_rates_evenly() {
        let load = Load {
            port: 1,
            publishers: 3,
            first_id: 10,
            count: 10,
            payload_size: 200,
            window: 100,
            rate: Some(300.0),
        };
        let specs = load.specs();
        let counts: Vec<u64> = specs.iter().map(|s| s.count).collect();
        assert_eq!(counts, vec![4, 3, 3]);
        assert_eq!(specs[2].topic, "factory/p12");
        assert_eq!(specs[2].client_id, "bench-pub-12");
        assert_eq!(specs[0].rate, Some(100.0));
        assert_eq!(packet_id(0), 1);
        assert_eq!(packet_id(65_534), 65_535);
        assert_eq!(packet_id(65_535), 1);
    }
}
