//! The running appliance: queue store, broker, data flows and the HTTP side,
//! wired together from a validated [`Config`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use backhaul_broker::{Broker, BrokerSettings, DurableGate, FlowRoute};
use backhaul_storage::keyed::RetainedStore;
use backhaul_storage::{FlowSpec, QueueStore, StorageMode};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::{error, info, warn};

/// How often dataset files are checked for changes.
const DATASET_POLL: std::time::Duration = std::time::Duration::from_secs(2);

use crate::config::{Config, Endpoint, Flow, Retry, StorageModeSpec, DEFAULT_DATA_DIR};
use crate::datasets::DatasetStore;
use crate::deadletter::DeadLetters;
use crate::endpoint::{self, SinkContext};
use crate::flow::{FlowRunner, RunnerSettings};
use crate::health::FlowHealth;
use crate::http::{self, HttpState};
use crate::metrics::Metrics;
use crate::sd_notify::Notifier;
use crate::watchdog;

/// The data directory: `--data-dir`, else the configuration's
/// `storage.path`, else `./backhaul-data`.
pub fn data_dir(config: &Config, cli: Option<&Path>) -> PathBuf {
    cli.map(Path::to_path_buf)
        .or_else(|| config.appliance.data_dir.clone())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR))
}

/// Runs the appliance until `shutdown` resolves. Under systemd
/// (`$NOTIFY_SOCKET`), it reports `READY=1` once devices can connect and
/// flows run, pings the watchdog (`$WATCHDOG_USEC`) and says `STOPPING=1`
/// when it shuts down; see [`sd_notify`] and [`watchdog`]. The flows run on
/// `flow_runtime` ([`crate::scheduling::flow_runtime`]), everything else on the
/// caller's runtime.
pub async fn run(
    config: Config,
    data_dir: PathBuf,
    flow_runtime: tokio::runtime::Handle,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let notifier = Notifier::from_env().map(Arc::new);
    if let Some(notifier) = &notifier {
        notifier.notify("STATUS=opening the queues");
    }
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    let flows: Vec<_> = config.enabled_flows().cloned().collect();
    let specs: Vec<FlowSpec> = flows
        .iter()
        .map(|f| FlowSpec {
            name: f.name.clone(),
            limits: config.appliance.limits_of(&f.name),
        })
        .collect();
    let store_limits = config.appliance.store_limits;
    let mode = match config.appliance.storage_mode {
        StorageModeSpec::Disk => StorageMode::Disk(data_dir.join("queues")),
        StorageModeSpec::Memory => StorageMode::Memory,
    };
    let store =
        tokio::task::spawn_blocking(move || QueueStore::open_with(&mode, &specs, store_limits))
            .await?
            .with_context(|| format!("cannot open the queues under {}", data_dir.display()))?;
    let store = Arc::new(store);
    for queue in store.queues() {
        let stats = queue.stats();
        info!(
            flow = queue.name(),
            queued = stats.messages,
            bytes = stats.bytes,
            "queue opened"
        );
    }

    let routes = flows
        .iter()
        .enumerate()
        .map(|(flow, f)| FlowRoute {
            flow,
            filters: f.sources.clone(),
        })
        .collect();
    let broker_settings = config.appliance.broker.clone();
    let broker = new_broker(broker_settings, DurableGate::new(store.clone(), routes));
    if config.appliance.storage_mode == StorageModeSpec::Disk {
        keep_retained(&broker, &data_dir).await?;
    }
    let listeners = broker.bind().await?;

    let metrics = Metrics::new(store.queues(), store.clone(), broker.stats());
    let metrics_address = config.appliance.metrics_address;
    let http_listener = TcpListener::bind(metrics_address)
        .await
        .with_context(|| format!("cannot bind the metrics address {metrics_address}"))?;
    let mut tasks = JoinSet::new();
    let (stop, stopped) = watch::channel(false);
    let datasets = Arc::new(DatasetStore::open(config.dir.as_deref()));
    let dead_letters = DeadLetters::new(&data_dir);
    let health = Arc::new(FlowHealth::default());
    tasks.spawn({
        let datasets = datasets.clone();
        let stopped = stopped.clone();
        async move { datasets.watch(DATASET_POLL, stopped).await }
    });
    let context = SinkContext {
        appliance_id: config.appliance.id.clone(),
        data_dir: data_dir.clone(),
    };
    let mut replays = HashMap::new();
    for (queue, flow) in store.queues().into_iter().zip(&flows) {
        let endpoint = config
            .endpoints
            .get(&flow.endpoint)
            .context("validated flows name existing endpoints")?;
        let sink = endpoint::build(endpoint, flow, &context)
            .context("validated flows have a destination endpoint")?;
        let runner = FlowRunner {
            name: flow.name.clone(),
            appliance_id: config.appliance.id.clone(),
            queue,
            destination: flow.destination.clone(),
            sink,
            metrics: metrics.flow(&flow.name, &flow.endpoint),
            settings: runner_settings(endpoint, config.appliance.retry),
            transform: flow.transform.clone(),
            datasets: datasets.clone(),
            dead_letters: dead_letters.clone(),
            health: health.clone(),
            topic_sets_destination: matches!(endpoint, Endpoint::Mqtt(_)),
            replays: {
                let (requests, receiver) = mpsc::channel(4);
                replays.insert(flow.name.clone(), requests);
                receiver
            },
        };
        warn_missing_datasets(flow, &datasets);
        tasks.spawn_on(runner.run(stopped.clone()), &flow_runtime);
    }
    let state = Arc::new(HttpState {
        metrics,
        ready: AtomicBool::new(false),
        datasets,
        dead_letters,
        health,
        replays,
    });
    let http_task = tokio::spawn(http::serve(http_listener, state.clone()));
    let mut listener_tasks = JoinSet::new();
    let mut addresses = Vec::new();
    for listener in listeners {
        addresses.push(listener.address().to_string());
        listener_tasks.spawn(listener.serve());
    }
    state.ready.store(true, Ordering::Relaxed);
    // The listeners are bound (connections queue in the kernel until the
    // accept loops run) and every flow task is spawned: devices can publish.
    let watchdog_task = notifier
        .as_ref()
        .and_then(|notifier| watchdog::ready(notifier, &store, &state.health));
    info!(
        mqtt = %addresses.join(", "),
        metrics = %format!("http://{metrics_address}/metrics"),
        data_dir = %data_dir.display(),
        flows = flows.len(),
        durable = store.is_durable(),
        "Backhaul is ready"
    );

    // A dead router serves no client while the process looks alive: end
    // with an error instead, so that systemd (Restart=on-failure) starts a
    // fresh process, which recovers the queues and retained messages.
    let router = broker.router_watch();
    let outcome = tokio::select! {
        () = shutdown => Ok(()),
        () = router.stopped() => {
            error!("the MQTT router thread has stopped (see the panic above); no client can be served: exiting to be restarted");
            Err(anyhow!("the MQTT router (rumqttd) thread has stopped"))
        }
    };
    info!("shutting down");
    if let Some(notifier) = &notifier {
        notifier.notify("STOPPING=1\nSTATUS=shutting down: finishing the batches in flight");
    }
    state.ready.store(false, Ordering::Relaxed);
    listener_tasks.abort_all();
    let _ = stop.send(true);
    while tasks.join_next().await.is_some() {}
    http_task.abort();
    if let Some(watchdog_task) = watchdog_task {
        watchdog_task.abort();
    }
    outcome
}

/// The broker. Debug builds only (the tests' binary):
/// `BACKHAUL_TEST_ROUTER_DIES_ON=<filter>` makes rumqttd's router thread
/// panic when a client subscribes to that filter, to test that the process
/// then exits.
fn new_broker(settings: BrokerSettings, gate: DurableGate) -> Broker {
    #[cfg(debug_assertions)]
    if let Ok(filter) = std::env::var("BACKHAUL_TEST_ROUTER_DIES_ON") {
        warn!(%filter, "test hook: the router dies on a subscription to this filter");
        return Broker::with_router_dying_on(settings, gate, &filter);
    }
    Broker::new(settings, gate)
}

/// Disk mode: retained messages are kept in `state/` under the data
/// directory, and the ones kept from earlier runs go back to the router
/// before any listener accepts.
async fn keep_retained(broker: &Broker, data_dir: &Path) -> Result<()> {
    let dir = data_dir.join("state");
    let opened = dir.clone();
    let store = tokio::task::spawn_blocking(move || RetainedStore::open(&opened))
        .await?
        .with_context(|| format!("cannot open the retained messages in {}", dir.display()))?;
    let restored = broker.keep_retained(store).await?;
    info!(restored, dir = %dir.display(), "retained messages restored");
    Ok(())
}

/// A flow whose datasets have no data yet enriches nothing until a file
/// appears or the API provides them: say so at start.
fn warn_missing_datasets(flow: &Flow, datasets: &DatasetStore) {
    let Some(transform) = &flow.transform else {
        return;
    };
    let loaded = datasets.read();
    for key in transform.dataset_keys() {
        if loaded.get(key).is_none() {
            warn!(flow = %flow.name, dataset = key, "dataset has no data yet: add datasets/{key}.jsonl to the configuration directory or PUT /api/v1/datasets/{key}");
        }
    }
}

/// Retry timing from the appliance; batch sizes from the endpoint's
/// batching settings, where it has them.
fn runner_settings(endpoint: &Endpoint, retry: Retry) -> RunnerSettings {
    let settings = RunnerSettings {
        initial_backoff: retry.initial_backoff,
        max_backoff: retry.max_backoff,
        parked_retry: retry.parked_retry,
        ..RunnerSettings::default()
    };
    match endpoint {
        Endpoint::EventHubs(hubs) => RunnerSettings {
            max_batch_messages: hubs.max_messages,
            max_batch_bytes: hubs.max_bytes,
            linger: hubs.linger,
            ..settings
        },
        _ => settings,
    }
}
