//! From resources as written to the validated [`Config`]: references,
//! supported features and values.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use backhaul_broker::{BrokerSettings, Limits, ListenerSettings, TopicFilter};

use super::appliance::{
    ApplianceSpec, CpuSchedulingSpec, OverflowSpec, QueueLimitsSpec, RetrySpec, StorageModeSpec,
};
use super::dataflow::{DataflowSpec, OperationSpec, OperationType};
use super::document::{parse_required_spec, parse_spec, RawResource};
use super::endpoint::{
    AuthMethod, DataflowEndpointSpec, EndpointType, LocalStorageSettings, MqttProtocol,
    MqttSettings, RetainPolicy,
};
use super::enums::Toggle;
use super::error::{ConfigError, Origin};
use super::event_hubs;
use super::profile::DataflowProfileSpec;
use super::security;
use super::{
    Appliance, Config, Endpoint, Flow, LocalStorageEndpoint, MqttEndpoint, Retry, DEFAULT_LISTENER,
    DEFAULT_METRICS,
};
use crate::flow::TopicTemplate;
use crate::mapping::{SerializationFormat, Transform, TransformSettings};
use backhaul_storage::{Overflow, QueueLimits, StoreLimits};

/// The endpoint name Azure IoT Operations gives its local broker; it need
/// not be declared.
pub const LOCAL_BROKER_ENDPOINT: &str = "default";
const DEFAULT_MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;
/// Free space kept on the data directory's filesystem by default.
const DEFAULT_MIN_FREE_BYTES: u64 = 100 * 1024 * 1024;

pub(super) fn validate(
    resources: &[RawResource],
    dir: Option<&Path>,
    errors: &mut Vec<ConfigError>,
) -> Option<Config> {
    check_unique_names(resources, errors);
    let of_kind = |kind: &'static str| resources.iter().filter(move |r| r.kind == kind);

    let appliances: Vec<_> = of_kind("Appliance").collect();
    for extra in appliances.iter().skip(1) {
        errors.push(extra.origin.error(
            "",
            format!(
                "only one Appliance document is allowed; the first is {}",
                describe(&appliances[0].origin)
            ),
        ));
    }
    let appliance = appliance(appliances.first().copied(), dir, errors);

    let profiles: Vec<&str> = of_kind("DataflowProfile")
        .filter(|r| {
            parse_spec::<DataflowProfileSpec>(r, errors)
                .is_some_and(|spec| check_profile(r, &spec, errors))
        })
        .map(|r| r.name.as_str())
        .collect();

    let mut endpoints = BTreeMap::new();
    for resource in of_kind("DataflowEndpoint") {
        if let Some(spec) = parse_required_spec::<DataflowEndpointSpec>(resource, errors) {
            if let Some(endpoint) = endpoint(resource, &spec, dir, errors) {
                endpoints.insert(resource.name.clone(), endpoint);
            }
        }
    }
    endpoints
        .entry(LOCAL_BROKER_ENDPOINT.to_string())
        .or_insert(Endpoint::LocalBroker);

    let flows: Vec<Flow> = of_kind("Dataflow")
        .filter_map(|r| {
            let spec = parse_required_spec::<DataflowSpec>(r, errors)?;
            dataflow(r, &spec, &endpoints, &profiles, errors)
        })
        .collect();

    let appliance = appliance?;
    check_queue_flow_names(appliances.first().copied(), &appliance, &flows, errors);
    Some(Config {
        appliance,
        endpoints,
        flows,
        dir: None,
    })
}

/// `queues.flows` may only name data flows that exist.
fn check_queue_flow_names(
    resource: Option<&RawResource>,
    appliance: &Appliance,
    flows: &[Flow],
    errors: &mut Vec<ConfigError>,
) {
    let Some(resource) = resource else {
        return;
    };
    for name in appliance.queue_limits.keys() {
        if !flows.iter().any(|f| &f.name == name) {
            errors.push(resource.origin.error(
                format!("spec.queues.flows.{name}"),
                format!("no Dataflow named '{name}'"),
            ));
        }
    }
}

fn describe(origin: &Origin) -> String {
    format!("document {} of {}", origin.document, origin.file)
}

fn check_unique_names(resources: &[RawResource], errors: &mut Vec<ConfigError>) {
    let mut seen: BTreeMap<(&str, &str), &Origin> = BTreeMap::new();
    for resource in resources {
        let key = (resource.kind.as_str(), resource.name.as_str());
        if let Some(first) = seen.get(&key) {
            errors.push(resource.origin.error(
                "metadata.name",
                format!("duplicate name; the first is {}", describe(first)),
            ));
        } else {
            seen.insert(key, &resource.origin);
        }
        if !is_resource_name(&resource.name) {
            errors.push(resource.origin.error(
                "metadata.name",
                format!(
                    "'{}' is not a valid name: use 1-63 lowercase letters, digits and '-', \
                     starting and ending with a letter or digit",
                    resource.name
                ),
            ));
        }
    }
}

fn is_resource_name(name: &str) -> bool {
    let valid_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    (1..=63).contains(&name.len())
        && name.chars().all(valid_char)
        && !name.starts_with('-')
        && !name.ends_with('-')
}

fn parse_address(
    origin: &Origin,
    field: &str,
    text: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<SocketAddr> {
    match text.parse() {
        Ok(address) => Some(address),
        Err(_) => {
            errors.push(origin.error(
                field,
                format!("'{text}' is not an IP:port address (such as 127.0.0.1:1883)"),
            ));
            None
        }
    }
}

fn appliance(
    resource: Option<&RawResource>,
    dir: Option<&Path>,
    errors: &mut Vec<ConfigError>,
) -> Option<Appliance> {
    let defaults = Origin {
        file: "<defaults>".into(),
        document: 0,
        resource: "Appliance".into(),
    };
    let (origin, spec, name) = match resource {
        Some(r) => (
            r.origin.clone(),
            parse_spec::<ApplianceSpec>(r, errors)?,
            r.name.clone(),
        ),
        None => (defaults, ApplianceSpec::default(), "backhaul".to_string()),
    };
    let before = errors.len();
    let broker_limits = security::limits(
        &origin,
        security::LimitsAt::Broker,
        spec.limits.as_ref(),
        Limits::default(),
        errors,
    );
    let listeners = match &spec.listeners {
        Some(list) if list.is_empty() => {
            errors.push(origin.error("spec.listeners", "at least one listener is needed"));
            Vec::new()
        }
        Some(list) => list
            .iter()
            .enumerate()
            .filter_map(|(i, l)| {
                let field = format!("spec.listeners[{i}].address");
                let address = parse_address(&origin, &field, &l.address, errors)?;
                security::listener(&origin, i, l, address, broker_limits, dir, errors)
            })
            .collect(),
        None => vec![ListenerSettings::plain(
            "default",
            DEFAULT_LISTENER.parse().ok()?,
        )],
    };
    let authorization = security::authorization(&origin, spec.authorization.as_ref(), errors);
    let broker = BrokerSettings {
        listeners: listeners.clone(),
        limits: broker_limits,
        authorization: std::sync::Arc::new(authorization),
    };
    let storage = spec.storage.clone().unwrap_or_default();
    let metrics = spec.metrics.as_ref().and_then(|m| m.address.clone());
    let metrics_address = parse_address(
        &origin,
        "spec.metrics.address",
        metrics.as_deref().unwrap_or(DEFAULT_METRICS),
        errors,
    );
    let id = spec.appliance_id.clone().unwrap_or(name);
    if id.is_empty() || id.contains(char::is_whitespace) {
        errors.push(origin.error(
            "spec.applianceId",
            format!("'{id}' must be non-empty and without spaces"),
        ));
    }
    let retry = retry(&origin, spec.retry.clone().unwrap_or_default(), errors);
    let mode = storage.mode.unwrap_or(StorageModeSpec::Disk);
    let store_limits = StoreLimits {
        max_disk_bytes: storage.max_disk_bytes,
        min_free_bytes: match mode {
            StorageModeSpec::Disk => Some(storage.min_free_bytes.unwrap_or(DEFAULT_MIN_FREE_BYTES)),
            StorageModeSpec::Memory => None,
        },
    };
    let queues = spec.queues.clone().unwrap_or_default();
    let defaults = queue_limits(QueueLimits::default(), queues.defaults.as_ref());
    let queue_limits = queues
        .flows
        .iter()
        .map(|(flow, limits)| (flow.clone(), queue_limits(defaults, Some(limits))))
        .collect();
    (errors.len() == before).then_some(())?;
    Some(Appliance {
        retry,
        store_limits,
        queue_limits,
        default_queue_limits: defaults,
        id,
        listeners,
        broker,
        storage_mode: mode,
        cpu_scheduling: spec.cpu_scheduling.unwrap_or(CpuSchedulingSpec::Batch),
        data_dir: storage.path.map(PathBuf::from),
        metrics_address: metrics_address?,
    })
}

/// `spec` over `base`, field by field.
fn queue_limits(base: QueueLimits, spec: Option<&QueueLimitsSpec>) -> QueueLimits {
    let Some(spec) = spec else {
        return base;
    };
    QueueLimits {
        max_messages: spec.max_messages.or(base.max_messages),
        max_bytes: spec.max_bytes.or(base.max_bytes),
        overflow: match spec.overflow {
            Some(OverflowSpec::DropOldest) => Overflow::DropOldest,
            Some(OverflowSpec::RejectNew) => Overflow::RejectNew,
            None => base.overflow,
        },
        ttl: spec
            .message_ttl_seconds
            .map(std::time::Duration::from_secs)
            .or(base.ttl),
    }
}

fn retry(origin: &Origin, spec: RetrySpec, errors: &mut Vec<ConfigError>) -> Retry {
    use std::time::Duration;
    let retry = Retry {
        initial_backoff: Duration::from_millis(spec.initial_backoff_ms.unwrap_or(200)),
        max_backoff: Duration::from_secs(spec.max_backoff_seconds.unwrap_or(30)),
        parked_retry: Duration::from_secs(spec.parked_retry_seconds.unwrap_or(60)),
    };
    if retry.initial_backoff.is_zero() || retry.initial_backoff > retry.max_backoff {
        errors.push(origin.error(
            "spec.retry.initialBackoffMs",
            "must be at least 1 and at most maxBackoffSeconds",
        ));
    }
    if retry.parked_retry.is_zero() {
        errors.push(origin.error("spec.retry.parkedRetrySeconds", "must be at least 1"));
    }
    retry
}

fn check_profile(
    resource: &RawResource,
    spec: &DataflowProfileSpec,
    errors: &mut Vec<ConfigError>,
) -> bool {
    match spec.instance_count {
        Some(n) if !(1..=20).contains(&n) => {
            errors.push(resource.origin.error(
                "spec.instanceCount",
                format!("{n} is out of range; expected 1 to 20"),
            ));
            false
        }
        _ => true,
    }
}

fn not_supported(what: impl std::fmt::Display) -> String {
    format!("{what} is not supported yet")
}

fn endpoint(
    resource: &RawResource,
    spec: &DataflowEndpointSpec,
    dir: Option<&Path>,
    errors: &mut Vec<ConfigError>,
) -> Option<Endpoint> {
    let origin = &resource.origin;
    let settings_field = match spec.endpoint_type {
        EndpointType::Mqtt => "mqttSettings",
        EndpointType::LocalStorage => "localStorageSettings",
        EndpointType::EventHubs => "eventHubsSettings",
        other => {
            errors.push(origin.error(
                "spec.endpointType",
                format!(
                    "{} (supported: Mqtt, LocalStorage, EventHubs)",
                    not_supported(other)
                ),
            ));
            return None;
        }
    };
    let present = settings_blocks(spec);
    if let Some(extra) = present.iter().find(|name| **name != settings_field) {
        errors.push(origin.error(
            format!("spec.{extra}"),
            format!(
                "does not belong to endpointType {}; use spec.{settings_field}",
                spec.endpoint_type
            ),
        ));
        return None;
    }
    match spec.endpoint_type {
        EndpointType::Mqtt => match &spec.mqtt_settings {
            Some(mqtt) => mqtt_endpoint(origin, spec.host_type.as_deref(), resource, mqtt, errors),
            None => missing(origin, "spec.mqttSettings", errors),
        },
        EndpointType::EventHubs => match &spec.event_hubs_settings {
            Some(hubs) => event_hubs::endpoint(origin, hubs, dir, errors),
            None => missing(origin, "spec.eventHubsSettings", errors),
        },
        _ => match &spec.local_storage_settings {
            Some(local) => local_storage_endpoint(origin, local, errors),
            None => missing(origin, "spec.localStorageSettings", errors),
        },
    }
}

fn missing<T>(origin: &Origin, field: &str, errors: &mut Vec<ConfigError>) -> Option<T> {
    errors.push(origin.error(field, "missing"));
    None
}

fn settings_blocks(spec: &DataflowEndpointSpec) -> Vec<&'static str> {
    let blocks = [
        ("mqttSettings", spec.mqtt_settings.is_some()),
        (
            "localStorageSettings",
            spec.local_storage_settings.is_some(),
        ),
        ("kafkaSettings", spec.kafka_settings.is_some()),
        (
            "dataLakeStorageSettings",
            spec.data_lake_storage_settings.is_some(),
        ),
        (
            "fabricOneLakeSettings",
            spec.fabric_one_lake_settings.is_some(),
        ),
        (
            "dataExplorerSettings",
            spec.data_explorer_settings.is_some(),
        ),
        (
            "openTelemetrySettings",
            spec.open_telemetry_settings.is_some(),
        ),
        ("eventHubsSettings", spec.event_hubs_settings.is_some()),
        ("httpSettings", spec.http_settings.is_some()),
    ];
    blocks
        .into_iter()
        .filter(|(_, present)| *present)
        .map(|(name, _)| name)
        .collect()
}

/// Whether an MQTT endpoint means Azure IoT Operations' local broker, which
/// on an appliance is Backhaul's embedded broker.
fn is_local_broker(name: &str, host_type: Option<&str>, host: Option<&str>) -> bool {
    name == LOCAL_BROKER_ENDPOINT
        || host_type.is_some_and(|t| t.eq_ignore_ascii_case("LocalBroker"))
        || host.is_some_and(|h| h.starts_with("aio-broker"))
}

fn mqtt_endpoint(
    origin: &Origin,
    host_type: Option<&str>,
    resource: &RawResource,
    mqtt: &MqttSettings,
    errors: &mut Vec<ConfigError>,
) -> Option<Endpoint> {
    if is_local_broker(&resource.name, host_type, mqtt.host.as_deref()) {
        return Some(Endpoint::LocalBroker);
    }
    let field = |name: &str| format!("spec.mqttSettings.{name}");
    let before = errors.len();
    let Some(host) = &mqtt.host else {
        return missing(origin, &field("host"), errors);
    };
    let (host_name, port) = match host.rsplit_once(':').map(|(h, p)| (h, p.parse::<u16>())) {
        Some((h, Ok(port))) if !h.is_empty() => (h.trim_matches(['[', ']']).to_string(), port),
        _ => {
            errors.push(origin.error(
                field("host"),
                format!("'{host}' must be host:port (such as broker.example.com:1883)"),
            ));
            return None;
        }
    };
    if mqtt.protocol == Some(MqttProtocol::WebSockets) {
        errors.push(origin.error(field("protocol"), not_supported("WebSockets")));
    }
    let tls = mqtt.tls.clone().unwrap_or_default();
    if tls.mode.unwrap_or(Toggle::Enabled) == Toggle::Enabled {
        errors.push(origin.error(
            field("tls.mode"),
            format!(
                "{} (Azure IoT Operations enables TLS unless told otherwise); \
                 set tls: {{mode: Disabled}} for a plain MQTT broker",
                not_supported("TLS towards MQTT endpoints")
            ),
        ));
    }
    match mqtt.authentication.as_ref().map(|a| a.method) {
        Some(AuthMethod::Anonymous) => {}
        Some(method) => errors.push(origin.error(
            field("authentication.method"),
            format!("{} (supported: Anonymous)", not_supported(method)),
        )),
        None => errors.push(origin.error(
            field("authentication"),
            "missing; Backhaul supports method: Anonymous for now",
        )),
    }
    let qos = mqtt.qos.unwrap_or(1);
    if qos > 1 {
        errors.push(origin.error(
            field("qos"),
            format!("{qos} is not allowed; expected 0 or 1"),
        ));
    }
    if mqtt.cloud_event_attributes.is_some() {
        errors.push(origin.error(field("cloudEventAttributes"), not_supported("CloudEvents")));
    }
    let max_inflight = mqtt.max_inflight_messages.unwrap_or(100);
    if max_inflight == 0 {
        errors.push(origin.error(field("maxInflightMessages"), "must be at least 1"));
    }
    (errors.len() == before).then_some(())?;
    Some(Endpoint::Mqtt(MqttEndpoint {
        host: host_name,
        port,
        client_id_prefix: mqtt.client_id_prefix.clone(),
        qos,
        retain: mqtt.retain.unwrap_or(RetainPolicy::Keep),
        keep_alive_seconds: mqtt.keep_alive_seconds.unwrap_or(60),
        max_inflight_messages: max_inflight,
    }))
}

fn local_storage_endpoint(
    origin: &Origin,
    local: &LocalStorageSettings,
    errors: &mut Vec<ConfigError>,
) -> Option<Endpoint> {
    let volume = &local.persistent_volume_claim_ref;
    if !is_resource_name(volume) {
        errors.push(origin.error(
            "spec.localStorageSettings.persistentVolumeClaimRef",
            format!("'{volume}' is not a valid volume name (lowercase letters, digits, '-')"),
        ));
        return None;
    }
    let max_file_bytes = local.max_file_bytes.unwrap_or(DEFAULT_MAX_FILE_BYTES);
    if max_file_bytes < 1024 {
        errors.push(origin.error(
            "spec.localStorageSettings.maxFileBytes",
            format!("{max_file_bytes} is too small; use at least 1024"),
        ));
        return None;
    }
    Some(Endpoint::LocalStorage(LocalStorageEndpoint {
        volume: volume.clone(),
        path: local.path.as_ref().map(PathBuf::from),
        max_file_bytes,
    }))
}

fn dataflow(
    resource: &RawResource,
    spec: &DataflowSpec,
    endpoints: &BTreeMap<String, Endpoint>,
    profiles: &[&str],
    errors: &mut Vec<ConfigError>,
) -> Option<Flow> {
    let origin = &resource.origin;
    let before = errors.len();
    if spec.profile_ref != "default" && !profiles.contains(&spec.profile_ref.as_str()) {
        errors.push(origin.error(
            "spec.profileRef",
            format!(
                "no DataflowProfile named '{}' (the profile 'default' always exists)",
                spec.profile_ref
            ),
        ));
    }
    let mut source = None;
    let mut destination = None;
    let mut transform = None;
    for (i, operation) in spec.operations.iter().enumerate() {
        let field = format!("spec.operations[{i}]");
        match operation.operation_type {
            OperationType::Source if source.is_some() => {
                errors.push(origin.error(field, "a data flow has exactly one Source operation"));
            }
            OperationType::Source => source = Some((i, operation)),
            OperationType::Destination if destination.is_some() => errors
                .push(origin.error(field, "a data flow has exactly one Destination operation")),
            OperationType::Destination => destination = Some((i, operation)),
            OperationType::BuiltInTransformation if transform.is_some() => {
                errors.push(origin.error(
                    field,
                    "a data flow has at most one BuiltInTransformation operation",
                ))
            }
            OperationType::BuiltInTransformation => transform = Some((i, operation)),
        }
    }
    let transform = transform.and_then(|(i, op)| compile_transform(origin, i, op, errors));
    let sources = match source {
        Some((i, op)) => sources(origin, i, op, endpoints, errors),
        None => {
            errors.push(origin.error("spec.operations", "a Source operation is required"));
            None
        }
    };
    let target = match destination {
        Some((i, op)) => destination_of(origin, i, op, endpoints, errors),
        None => {
            errors.push(origin.error("spec.operations", "a Destination operation is required"));
            None
        }
    };
    (errors.len() == before).then_some(())?;
    let (endpoint, template) = target?;
    Some(Flow {
        name: resource.name.clone(),
        enabled: spec.mode.unwrap_or(Toggle::Enabled) == Toggle::Enabled,
        sources: sources?,
        endpoint,
        destination: template,
        transform,
        origin: origin.clone(),
    })
}

/// Parses and compiles `builtInTransformationSettings`, so every rule error
/// surfaces at load time with its place in the file.
fn compile_transform(
    origin: &Origin,
    index: usize,
    operation: &OperationSpec,
    errors: &mut Vec<ConfigError>,
) -> Option<Transform> {
    let field = format!("spec.operations[{index}].builtInTransformationSettings");
    let Some(value) = &operation.built_in_transformation_settings else {
        return missing(origin, &field, errors);
    };
    let settings: TransformSettings = match serde_path_to_error::deserialize(value.clone()) {
        Ok(settings) => settings,
        Err(err) => {
            let path = err.path().to_string();
            let at = if path == "." {
                field
            } else {
                format!("{field}.{path}")
            };
            let message = err.into_inner().to_string();
            let message = message.split(" at line ").next().unwrap_or_default();
            errors.push(origin.error(at, message));
            return None;
        }
    };
    if settings.serialization_format != SerializationFormat::Json {
        errors.push(origin.error(
            format!("{field}.serializationFormat"),
            format!(
                "{} (supported: Json)",
                not_supported(format!("{:?}", settings.serialization_format))
            ),
        ));
        return None;
    }
    match Transform::compile(&settings) {
        Ok(transform) => Some(transform),
        Err(err) => {
            errors.push(origin.error(format!("{field}.{}", err.location), {
                let mut text = err.to_string();
                text.drain(..err.location.len() + 2);
                text
            }));
            None
        }
    }
}

fn sources(
    origin: &Origin,
    index: usize,
    operation: &OperationSpec,
    endpoints: &BTreeMap<String, Endpoint>,
    errors: &mut Vec<ConfigError>,
) -> Option<Vec<TopicFilter>> {
    let field = format!("spec.operations[{index}].sourceSettings");
    let Some(settings) = &operation.source_settings else {
        return missing(origin, &field, errors);
    };
    match endpoints.get(&settings.endpoint_ref) {
        Some(Endpoint::LocalBroker) => {}
        Some(_) => {
            errors.push(origin.error(
                format!("{field}.endpointRef"),
                format!(
                    "'{}' is not the local broker; {} (use 'default' or an Mqtt endpoint \
                     with hostType: LocalBroker)",
                    settings.endpoint_ref,
                    not_supported("reading data flows from another endpoint")
                ),
            ));
            return None;
        }
        None => {
            errors.push(origin.error(
                format!("{field}.endpointRef"),
                format!("no DataflowEndpoint named '{}'", settings.endpoint_ref),
            ));
            return None;
        }
    }
    if settings.data_sources.is_empty() {
        errors.push(origin.error(
            format!("{field}.dataSources"),
            "at least one topic filter is needed",
        ));
        return None;
    }
    let filters: Vec<_> = settings
        .data_sources
        .iter()
        .enumerate()
        .filter_map(|(i, text)| match TopicFilter::parse(text) {
            Ok(filter) => Some(filter),
            Err(err) => {
                errors.push(origin.error(format!("{field}.dataSources[{i}]"), err.to_string()));
                None
            }
        })
        .collect();
    (filters.len() == settings.data_sources.len()).then_some(filters)
}

fn destination_of(
    origin: &Origin,
    index: usize,
    operation: &OperationSpec,
    endpoints: &BTreeMap<String, Endpoint>,
    errors: &mut Vec<ConfigError>,
) -> Option<(String, TopicTemplate)> {
    let field = format!("spec.operations[{index}].destinationSettings");
    let Some(settings) = &operation.destination_settings else {
        return missing(origin, &field, errors);
    };
    let endpoint = match endpoints.get(&settings.endpoint_ref) {
        Some(endpoint) => endpoint,
        None => {
            errors.push(origin.error(
                format!("{field}.endpointRef"),
                format!("no DataflowEndpoint named '{}'", settings.endpoint_ref),
            ));
            return None;
        }
    };
    if settings.headers.is_some() {
        errors.push(origin.error(format!("{field}.headers"), not_supported("headers")));
        return None;
    }
    let data_field = format!("{field}.dataDestination");
    let template = match endpoint {
        Endpoint::LocalBroker => {
            errors.push(origin.error(
                format!("{field}.endpointRef"),
                not_supported("the local broker as a destination"),
            ));
            return None;
        }
        Endpoint::Mqtt(_) => TopicTemplate::parse(&settings.data_destination),
        Endpoint::EventHubs(_) => event_hubs::hub_name(&settings.data_destination),
        Endpoint::LocalStorage(_) => TopicTemplate::folder(&settings.data_destination),
    };
    match template {
        Ok(template) => Some((settings.endpoint_ref.clone(), template)),
        Err(err) => {
            errors.push(origin.error(data_field, err.to_string()));
            None
        }
    }
}
