//! The in-tree Event Hubs peer as a process, for suites and benchmarks that
//! want it outside the test process (or in a container of its own).
//!
//! ```text
//! eventhubs-peer [--listen ADDR] [--port N] [--partitions N] [--hub NAME]...
//!                [--max-message-size BYTES] [--settle-latency-ms N]
//!                [--network-latency-ms N] [--control-port N] [--quiet]
//! ```
//!
//! Listens on 127.0.0.1 (or `--listen`, e.g. 0.0.0.0 in a container; port 0
//! picks one), prints `listening <endpoint>`
//! and the connection string to use, then one line per received event:
//! `event seq=.. hub=.. partition=.. key=.. id=.. content-type=.. props={..} body=..`.
//! Fault switches are read from standard input, one command a line:
//! `refuse on|off`, `silent on|off`, `reject <condition>|off`,
//! `blackhole on|off`, `slow <ms>|off`, `drop`, `drop-on-transfer on|off`,
//! `reject-tokens on|off`, `clear`, `stats`. Each is answered `ok ...`.
//! With `--control-port`, the same commands are also read from every TCP
//! connection to that port (and answered on it): a container's standard
//! input is out of a test's reach.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use backhaul_chaos_tests::eventhubs_peer::{EventHubsPeer, PeerOptions, ReceivedEvent};
use tokio::io::{AsyncBufReadExt, BufReader};

struct Args {
    options: PeerOptions,
    quiet: bool,
    control_port: Option<u16>,
}

fn parse_args() -> Result<Args> {
    let mut options = PeerOptions::default();
    let mut quiet = false;
    let mut control_port = None;
    let mut hubs = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--listen" => {
                options.listen_address = value("--listen")?.parse().context("--listen")?
            }
            "--port" => options.port = value("--port")?.parse().context("--port")?,
            "--control-port" => {
                control_port = Some(value("--control-port")?.parse().context("--control-port")?)
            }
            "--partitions" => {
                options.partition_count = value("--partitions")?.parse().context("--partitions")?
            }
            "--hub" => hubs.push(value("--hub")?),
            "--max-message-size" => {
                options.max_message_size = value("--max-message-size")?
                    .parse()
                    .context("--max-message-size")?
            }
            "--settle-latency-ms" => {
                options.settle_latency = Duration::from_millis(
                    value("--settle-latency-ms")?
                        .parse()
                        .context("--settle-latency-ms")?,
                )
            }
            "--network-latency-ms" => {
                options.network_latency = Duration::from_millis(
                    value("--network-latency-ms")?
                        .parse()
                        .context("--network-latency-ms")?,
                )
            }
            "--quiet" => quiet = true,
            "-h" | "--help" => {
                println!(
                    "usage: eventhubs-peer [--listen ADDR] [--port N] [--partitions N] \
                     [--hub NAME]... [--max-message-size BYTES] [--settle-latency-ms N] \
                     [--network-latency-ms N] [--control-port N] [--quiet]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    if !hubs.is_empty() {
        options.hubs = Some(hubs);
    }
    Ok(Args {
        options,
        quiet,
        control_port,
    })
}

fn describe(event: &ReceivedEvent) -> String {
    let props: Vec<String> = event
        .properties
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let mut body = event.body_text().into_owned();
    if body.len() > 200 {
        let mut cut = 200;
        while !body.is_char_boundary(cut) {
            cut -= 1;
        }
        body.truncate(cut);
        body.push('…');
    }
    format!(
        "event seq={} hub={} partition={} key={} id={} content-type={} props={{{}}} body={:?}",
        event.seq,
        event.hub,
        event.partition_id.as_deref().unwrap_or("-"),
        event.partition_key.as_deref().unwrap_or("-"),
        event.message_id.as_deref().unwrap_or("-"),
        event.content_type.as_deref().unwrap_or("-"),
        props.join(","),
        body
    )
}

fn switch(word: Option<&str>) -> Result<bool> {
    match word {
        Some("on") => Ok(true),
        Some("off") => Ok(false),
        _ => bail!("expected on or off"),
    }
}

fn command(peer: &EventHubsPeer, line: &str) -> Result<String> {
    let mut words = line.split_whitespace();
    let Some(verb) = words.next() else {
        return Ok(String::new());
    };
    let arg = words.next();
    match verb {
        "refuse" => peer.refuse_connections(switch(arg)?),
        "silent" => peer.stay_silent(switch(arg)?),
        "blackhole" => peer.blackhole(switch(arg)?),
        "drop-on-transfer" => peer.drop_on_transfer(switch(arg)?),
        "reject-tokens" => peer.reject_tokens(switch(arg)?),
        "reject" => match arg {
            Some("off") => peer.reject_transfers(None),
            Some(condition) => peer.reject_transfers(Some(condition)),
            None => bail!("reject needs a condition or off"),
        },
        "slow" => match arg {
            Some("off") => peer.settle_slowly(None),
            Some(ms) => peer.settle_slowly(Some(Duration::from_millis(
                ms.parse().context("slow <ms>")?,
            ))),
            None => bail!("slow needs milliseconds or off"),
        },
        "drop" => peer.drop_connections(),
        "clear" => peer.clear_faults(),
        "stats" => return Ok(format!("ok {:?}", peer.stats())),
        other => bail!("unknown command {other:?}"),
    }
    Ok(format!("ok {line} -> {:?}", peer.faults()))
}

/// Answers fault commands on every connection to the control port.
async fn serve_control(listener: tokio::net::TcpListener, peer: std::sync::Arc<EventHubsPeer>) {
    use tokio::io::AsyncWriteExt;
    while let Ok((stream, _)) = listener.accept().await {
        let peer = peer.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let answer = match command(&peer, line.trim()) {
                    Ok(answer) => answer,
                    Err(err) => format!("error {err:#}"),
                };
                println!("control: {answer}");
                if write
                    .write_all(format!("{answer}\n").as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let listen_address = args.options.listen_address;
    let peer = std::sync::Arc::new(EventHubsPeer::start_with(args.options).await?);
    if let Some(port) = args.control_port {
        let listener = tokio::net::TcpListener::bind((listen_address, port)).await?;
        tokio::spawn(serve_control(listener, peer.clone()));
    }
    println!("listening {}", peer.endpoint());
    println!("connection-string {}", peer.connection_string(None));
    let mut events = peer.subscribe();
    let quiet = args.quiet;
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(event) if !quiet => println!("{}", describe(&event)),
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    println!("lagged {n} events not printed")
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(line)) => match command(&peer, line.trim()) {
                    Ok(answer) if answer.is_empty() => {}
                    Ok(answer) => println!("{answer}"),
                    Err(err) => println!("error {err:#}"),
                },
                // Standard input closed: keep serving until killed.
                Ok(None) | Err(_) => {
                    tokio::signal::ctrl_c().await?;
                    break;
                }
            },
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    println!("stats {:?}", peer.stats());
    Ok(())
}
