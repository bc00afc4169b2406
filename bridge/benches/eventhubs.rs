//! Messages per second and send latency through the Event Hubs sink to the
//! in-tree peer, for 200-byte and 2 KiB bodies and three flow batch sizes,
//! with the peer's default latencies and near none; then the flow's way of
//! sending (a window of flow batches, `send_window`) with 1 to 4 SDK
//! batches in flight. Prints figures; no assertion on time.
//!
//! Run: `cargo bench -p backhaul-bridge --bench eventhubs`
//! (`-- window` runs only the window figures).

use std::time::{Duration, Instant};

use backhaul_bridge::endpoint::eventhubs::{EventHubsEndpoint, EventHubsSink, PartitionStrategy};
use backhaul_bridge::endpoint::{OutboundMessage, Sink};
use backhaul_broker::StoredMessage;
use backhaul_chaos_tests::eventhubs_peer::{EventHubsPeer, PeerOptions};
use bytes::Bytes;

const HUB: &str = "telemetry";

fn batch(from: usize, n: usize, body: usize) -> Vec<OutboundMessage> {
    (from..from + n)
        .map(|i| OutboundMessage {
            id: format!("app/flow/{i}"),
            destination: HUB.to_string(),
            message: StoredMessage {
                topic: format!("plant/line{}/temp", i % 3),
                payload: Bytes::from(vec![b'x'; body]),
                ..Default::default()
            },
        })
        .collect()
}

async fn peer(settle_ms: u64, network_ms: u64) -> EventHubsPeer {
    EventHubsPeer::start_with(PeerOptions {
        settle_latency: Duration::from_millis(settle_ms),
        network_latency: Duration::from_millis(network_ms),
        ..Default::default()
    })
    .await
    .expect("peer starts")
}

fn sink(peer: &EventHubsPeer, in_flight: usize) -> EventHubsSink {
    let mut settings = EventHubsEndpoint::new(peer.namespace(), peer.connection_string(None));
    settings.custom_endpoint = Some(peer.endpoint());
    settings.partition_strategy = PartitionStrategy::Default;
    settings.max_in_flight_batches = in_flight;
    EventHubsSink::new(settings, "figures")
}

async fn run(settle_ms: u64, network_ms: u64, body: usize, flow_batch: usize) {
    let peer = peer(settle_ms, network_ms).await;
    let mut sink = sink(&peer, 1);
    let mut next = 0;
    let mut latencies = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        let messages = batch(next, flow_batch, body);
        next += flow_batch;
        let sent = Instant::now();
        match tokio::time::timeout(Duration::from_secs(60), sink.send(&messages)).await {
            Ok(Ok(())) => latencies.push(sent.elapsed()),
            Ok(Err(err)) => panic!("send failed: {err}"),
            Err(_) => panic!("send did not finish in 60 s"),
        }
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
    println!(
        "peer settle {settle_ms} ms, network {network_ms} ms | body {body:>4} B | \
         flow batch {flow_batch:>4} | {:>8.0} msg/s | {:>7.1} MB/s | send p50 {:>6.1?} p99 {:>6.1?} ({} sends)",
        next as f64 / elapsed.as_secs_f64(),
        (next * body) as f64 / elapsed.as_secs_f64() / 1e6,
        pct(0.5),
        pct(0.99),
        latencies.len(),
    );
    sink.close().await;
}

/// As a flow sends: a window of `read_ahead` flow batches, each call asking
/// for the front one, the window topped up after each call.
async fn run_window(body: usize, flow_batch: usize, read_ahead: usize, in_flight: usize) {
    let peer = peer(5, 2).await;
    let mut sink = sink(&peer, in_flight);
    let mut window = Vec::new();
    let mut next = 0;
    let mut calls = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        while window.len() < read_ahead * flow_batch {
            window.extend(batch(next, flow_batch, body));
            next += flow_batch;
        }
        let call = Instant::now();
        let result = sink.send_window(&window, flow_batch);
        match tokio::time::timeout(Duration::from_secs(60), result).await {
            Ok(Ok(confirmed)) => {
                window.drain(..confirmed);
            }
            Ok(Err(err)) => panic!("send failed: {err}"),
            Err(_) => panic!("send did not finish in 60 s"),
        }
        calls.push(call.elapsed());
    }
    let elapsed = started.elapsed();
    let delivered = next - window.len();
    calls.sort();
    println!(
        "window of {read_ahead} x {flow_batch} | body {body:>4} B | {in_flight} in flight | {:>8.0} msg/s | \
         call p50 {:>6.1?} ({} calls, {} connections)",
        delivered as f64 / elapsed.as_secs_f64(),
        calls[calls.len() / 2],
        calls.len(),
        peer.stats().connections,
    );
    sink.close().await;
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let only_window = std::env::args().any(|a| a == "window");
    if !only_window {
        for (settle_ms, network_ms) in [(5, 2), (1, 0)] {
            for body in [200usize, 2048] {
                for flow_batch in [1usize, 100, 1000] {
                    runtime.block_on(run(settle_ms, network_ms, body, flow_batch));
                }
            }
        }
    }
    // The flow reads one batch more than the sink has in flight
    // (`Sink::window_batches`): 5 with the default of 4 in flight.
    for (read_ahead, in_flight) in [(2, 1), (3, 2), (4, 3), (5, 4)] {
        runtime.block_on(run_window(200, 1000, read_ahead, in_flight));
    }
}
