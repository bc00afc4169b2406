//! The `backhaul` command.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use backhaul_bridge::app;
use backhaul_bridge::config::Config;
use backhaul_bridge::passwd_cli::{self, PasswdAction};
use clap::{Parser, Subcommand};

mod allocator;
mod healthcheck;

#[derive(Parser)]
#[command(
    name = "backhaul",
    version,
    about = "Store-and-forward MQTT bridge for the plant floor",
    long_about = "Backhaul runs an MQTT broker for your devices and forwards what they publish \
                  through data flows to remote endpoints. Each flow's messages wait in a queue \
                  on disk (or in memory) until the endpoint confirms them, so link loss and \
                  restarts lose nothing.\n\nConfiguration is a directory of YAML documents: \
                  Azure IoT Operations Dataflow, DataflowEndpoint and DataflowProfile resources, \
                  plus Backhaul's own Appliance document. Without --config, a built-in example \
                  configuration runs: a broker on 127.0.0.1:1883 and a flow that writes \
                  factory/# to JSON Lines files under the data directory."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the appliance until interrupted (Ctrl-C or SIGTERM).
    Run {
        /// Configuration directory (*.yaml / *.yml). Default: the built-in example.
        #[arg(long, short, value_name = "DIR", env = "BACKHAUL_CONFIG")]
        config: Option<PathBuf>,
        /// Data directory for queues and local-storage output. Overrides the
        /// configuration's storage.path. Default: ./backhaul-data
        #[arg(long, value_name = "DIR", env = "BACKHAUL_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Check a configuration directory; print every problem and exit non-zero if any.
    Validate {
        /// Configuration directory (*.yaml / *.yml). Default: the built-in example.
        #[arg(long, short, value_name = "DIR")]
        config: Option<PathBuf>,
    },
    /// Ask a running appliance whether it is ready (GET /readyz on its metrics
    /// address); exit 0 when it answers 200, 1 otherwise. For container health
    /// checks, where no curl exists.
    Healthcheck {
        /// Configuration directory, to find the metrics address. Default: the built-in example.
        #[arg(long, short, value_name = "DIR", env = "BACKHAUL_CONFIG")]
        config: Option<PathBuf>,
        /// Metrics address to ask instead of the configuration's (IP:port).
        #[arg(long, value_name = "IP:PORT")]
        address: Option<std::net::SocketAddr>,
    },
    /// Add a user to a broker password file or change its password (like
    /// mosquitto_passwd); the password is prompted twice.
    Passwd {
        /// Create a new file, replacing any existing one.
        #[arg(short = 'c', long = "create")]
        create: bool,
        /// Delete USERNAME instead.
        #[arg(short = 'D', long = "delete", conflicts_with_all = ["create", "password_stdin"])]
        delete: bool,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        /// The password file (written atomically, mode 0600).
        file: PathBuf,
        username: String,
    },
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`). rumqttd's spans
/// are left out: its router opens one per PUBLISH with the topic as a field,
/// and formatting those took about a fifth of the broker's CPU at full
/// ingest (perf, BENCHMARKS.md); its events (errors) still show.
fn init_logging() {
    use tracing_subscriber::filter::{filter_fn, EnvFilter, FilterExt};
    use tracing_subscriber::prelude::*;
    let level = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let without_router_spans =
        filter_fn(|meta| !(meta.is_span() && meta.target().starts_with("rumqttd")));
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(level.and(without_router_spans)),
        )
        .init();
}

fn load(config: Option<&PathBuf>) -> Result<Config, String> {
    let loaded = match config {
        Some(dir) => Config::load_dir(dir),
        None => Config::embedded(),
    };
    loaded.map_err(|errors| errors.to_string())
}

fn main() -> ExitCode {
    init_logging();
    match Cli::parse().command {
        Command::Validate { config } => match load(config.as_ref()) {
            Ok(config) => {
                println!(
                    "configuration is valid: {} data flow(s), {} enabled, {} endpoint(s)",
                    config.flows.len(),
                    config.enabled_flows().count(),
                    config.endpoints.len()
                );
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                ExitCode::from(2)
            }
        },
        Command::Healthcheck { config, address } => {
            let address = match address {
                Some(address) => address,
                None => match load(config.as_ref()) {
                    Ok(config) => config.appliance.metrics_address,
                    Err(errors) => {
                        eprintln!("{errors}");
                        return ExitCode::from(2);
                    }
                },
            };
            match healthcheck::readyz(address) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("backhaul: not ready: {err:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Passwd {
            create,
            delete,
            password_stdin,
            file,
            username,
        } => {
            let action = if delete {
                PasswdAction::Delete
            } else {
                PasswdAction::Set {
                    create,
                    password_stdin,
                }
            };
            match passwd_cli::run(&file, &username, action) {
                Ok(message) => {
                    println!("{message}");
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("backhaul passwd: {err:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run { config, data_dir } => {
            let config = match load(config.as_ref()) {
                Ok(config) => config,
                Err(errors) => {
                    eprintln!("{errors}");
                    return ExitCode::from(2);
                }
            };
            let data_dir = app::data_dir(&config, data_dir.as_deref());
            match run(config, data_dir) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("backhaul: {err:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn run(config: Config, data_dir: PathBuf) -> Result<()> {
    // Before the runtime, so that its threads (and the store's) inherit it.
    let policy = config.appliance.cpu_scheduling;
    if let Err(err) = backhaul_bridge::scheduling::apply(policy) {
        tracing::warn!(%policy, %err, "cannot set spec.cpuScheduling; the threads keep the policy they started with");
    }
    let runtime = tokio::runtime::Runtime::new()?;
    let flow_runtime = backhaul_bridge::scheduling::flow_runtime()?;
    let flows = flow_runtime.handle().clone();
    let result = runtime.block_on(async {
        let shutdown = shutdown_signal()?;
        app::run(config, data_dir, flows, shutdown).await
    });
    // A task stuck on a dead part (such as rumqttd's router) must not keep
    // the process from exiting.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    flow_runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    result
}

/// Resolves on Ctrl-C or SIGTERM. The handlers are installed here, before
/// start-up, not when the future is first polled: a SIGTERM that systemd
/// sends right after READY=1 must shut down cleanly, not kill the process.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
