//! Throughput of a realistic transformation on one core: a pass-through plus
//! ten rules (unit conversions, arithmetic, string functions, metadata) and
//! one dataset lookup, on a 300-byte JSON message. Issue 6's goal is at
//! least 300,000 messages per second per core.
//!
//! Two variants: `apply` alone (the message already a JSON tree), and what
//! the bridge pays per message (`bridge/src/flow/runner.rs`
//! `transform_message`): parse the payload bytes, apply, serialize.
//!
//! Run: `cargo bench -p backhaul-mapping --bench transform`
//! (`BACKHAUL_MAPPING_ROUNDS=N` sets the plain timed passes, e.g. small under
//! `valgrind --tool=callgrind`; `bench_apply` / `bench_bytes` are the
//! per-message functions to read instruction counts from.)

use std::hint::black_box;

/// The allocator of the `backhaul` binary (bridge/src/main.rs), so the
/// figures are those of the appliance.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::time::Instant;

use backhaul_mapping::{Datasets, Json, Message, Outcome, Transform, TransformSettings};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::json;

const SETTINGS: &str = r#"
datasets:
  - key: assets as asset
    inputs: ['$source.deviceId', '$context.deviceId']
    expression: $1 == $2
filter:
  - inputs: [temperature.value]
    expression: $1 < -273.15
map:
  - inputs: ['*']
    output: '*'
  - inputs: [temperature.value]
    output: temperature.fahrenheit
    expression: cToF($1)
  - inputs: [pressure.value]
    output: pressure.psi
    expression: barToPsi($1)
  - inputs: [length]
    output: lengthInches
    expression: cmToIn($1)
  - inputs: [weight]
    output: weightLbs
    expression: kgToLb($1)
  - inputs: [speed]
    output: speedPercent
    expression: scale($1, 0, 3000, 0, 100)
  - inputs: [counter, previous]
    output: delta
    expression: $1 - $2
  - inputs: [vibration.x, vibration.y, vibration.z]
    output: vibration.magnitude
    expression: round_n(math::sqrt($1 * $1 + $2 * $2 + $3 * $3), 3)
  - inputs: [status]
    output: statusText
    expression: str::to_uppercase($1) + '-' + str::from(len($1))
  - inputs: ['$context(asset).site']
    output: site
  - inputs: ['$metadata.topic']
    output: '$metadata.user_property.origin'
"#;

fn message() -> Message {
    let payload = json!({
        "deviceId": "press-17",
        "temperature": {"value": 71.25, "unit": "C"},
        "pressure": {"value": 2.4, "unit": "bar"},
        "length": 120.5,
        "weight": 1250.0,
        "speed": 1480,
        "counter": 1048576,
        "previous": 1048000,
        "vibration": {"x": 0.12, "y": 0.08, "z": 0.31},
        "status": "running",
        "timestamp": "2026-11-28T08:00:00.000Z",
        "firmware": "4.2.1"
    });
    let mut message = Message::new("factory/line1/press-17/telemetry", payload);
    message.user_properties.push(("line".into(), "1".into()));
    message
}

fn datasets() -> Datasets {
    let mut datasets = Datasets::new();
    let records = (0..50)
        .map(|i| json!({"deviceId": format!("press-{i}"), "site": format!("plant-{}", i % 5)}))
        .collect();
    datasets.set("assets", records);
    datasets
}

/// One message as the bridge transforms it (`transform_message`): bytes
/// in, bytes out.
#[inline(never)]
fn bench_bytes(
    transform: &mut Transform,
    datasets: &Datasets,
    input: &Message,
    payload: &[u8],
) -> Option<Vec<u8>> {
    let message = Message {
        topic: input.topic.clone(),
        payload: Json::from_slice(payload).ok()?,
        user_properties: input.user_properties.clone(),
        content_type: input.content_type.clone(),
    };
    match transform.apply(message, datasets) {
        Ok(Outcome::Emit(out)) => {
            let mut bytes = Vec::with_capacity(payload.len() + payload.len() / 2);
            out.payload.write_to(&mut bytes);
            Some(bytes)
        }
        _ => None,
    }
}

/// One message already parsed (the copy of the input included).
#[inline(never)]
fn bench_apply(transform: &mut Transform, datasets: &Datasets, input: &Message) -> bool {
    transform.apply(input.clone(), datasets).is_ok()
}

/// Messages per second of `round` over `rounds` calls, by the clock and by
/// the CPU time of this thread (what one core does when the machine is
/// shared: other processes' time slices do not count).
fn rate(rounds: u32, mut round: impl FnMut()) -> Rate {
    let (started, cpu) = (Instant::now(), thread_cpu_ns());
    for _ in 0..rounds {
        round();
    }
    let cpu = thread_cpu_ns().zip(cpu).map(|(end, start)| end - start);
    Rate {
        wall: f64::from(rounds) / started.elapsed().as_secs_f64(),
        cpu: cpu.map(|ns| f64::from(rounds) / (ns as f64 / 1e9)),
    }
}

struct Rate {
    wall: f64,
    cpu: Option<f64>,
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.0} messages/s", self.wall)?;
        match self.cpu {
            Some(cpu) => write!(f, " by the clock, {cpu:.0} per second of CPU time"),
            None => Ok(()),
        }
    }
}

/// CPU time of this thread in nanoseconds (Linux: the first field of
/// /proc/thread-self/schedstat), if available.
fn thread_cpu_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    stat.split_whitespace().next()?.parse().ok()
}

fn bench(c: &mut Criterion) {
    let settings: TransformSettings = serde_yaml::from_str(SETTINGS).expect("settings");
    let mut transform = Transform::compile(&settings).expect("compiles");
    let datasets = datasets();
    let input = message();
    let size = serde_json::to_vec(&input.payload)
        .map(|v| v.len())
        .unwrap_or(0);
    match transform.apply(input.clone(), &datasets) {
        Ok(Outcome::Emit(out)) => assert_eq!(out.payload["site"].as_str(), Some("plant-2")),
        other => panic!("the benchmark message must pass: {other:?}"),
    }

    let payload = serde_json::to_vec(&input.payload).expect("serializes");
    let out = bench_bytes(&mut transform, &datasets, &input, &payload).expect("emits");
    println!(
        "mapping: output of the bytes variant, {} bytes: {}",
        out.len(),
        String::from_utf8_lossy(&out)
    );

    // Plain timed passes first, so the figures are printed in messages per
    // second whatever criterion's output format.
    let rounds = std::env::var("BACKHAUL_MAPPING_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(200_000);
    let applied = rate(rounds, || {
        black_box(bench_apply(&mut transform, &datasets, black_box(&input)));
    });
    println!("mapping: {size}-byte message, 1 pass-through + 10 rules + 1 dataset lookup, on one core: {applied} (apply)");
    let bytes = rate(rounds, || {
        black_box(bench_bytes(
            &mut transform,
            &datasets,
            &input,
            black_box(&payload),
        ));
    });
    let copies = rate(rounds, || drop(black_box(input.clone())));
    println!(
        "mapping: of which copying and dropping the message: {:.2} µs",
        1e6 / copies.cpu.unwrap_or(copies.wall)
    );
    println!("mapping: the same from payload bytes to payload bytes (parse, apply, serialize, as the bridge): {bytes}");

    let mut group = c.benchmark_group("mapping");
    group.throughput(Throughput::Elements(1));
    group.bench_function("passthrough_10_rules_1_dataset", |b| {
        b.iter(|| bench_apply(&mut transform, &datasets, black_box(&input)))
    });
    group.bench_function("bytes_passthrough_10_rules_1_dataset", |b| {
        b.iter(|| bench_bytes(&mut transform, &datasets, &input, black_box(&payload)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
