//! Validation of `endpointType: EventHubs` (a Backhaul extension).

use std::path::Path;
use std::time::Duration;

use super::endpoint::{EventHubsAuthMethod, EventHubsSettings, PartitionStrategySpec};
use super::enums::Toggle;
use super::error::{ConfigError, Origin};
use super::{secrets, Endpoint, EventHubsConfig};
use crate::endpoint::eventhubs::{EventHubsEndpoint, PartitionStrategy};
use crate::flow::{TemplateError, TopicTemplate};

/// The key of a `ConnectionString` secret.
pub const CONNECTION_STRING_KEY: &str = "connectionString";
const DEFAULT_MAX_MESSAGES: u32 = 1000;
const DEFAULT_MAX_BYTES: u64 = 1_000_000;
const DEFAULT_LATENCY_MS: u32 = 5;

pub(super) fn endpoint(
    origin: &Origin,
    hubs: &EventHubsSettings,
    dir: Option<&Path>,
    errors: &mut Vec<ConfigError>,
) -> Option<Endpoint> {
    let field = |name: &str| format!("spec.eventHubsSettings.{name}");
    let before = errors.len();
    let connection_string = connection_string(origin, hubs, dir, errors);
    let namespace = hubs
        .host
        .clone()
        .or_else(|| connection_string.as_deref().and_then(endpoint_host));
    if namespace.is_none() && connection_string.is_some() {
        errors.push(origin.error(
            field("host"),
            "missing, and the connection string has no Endpoint: set NAME.servicebus.windows.net",
        ));
    }
    if let Some(custom) = &hubs.custom_endpoint {
        if !(custom.starts_with("amqp://") || custom.starts_with("amqps://")) {
            errors.push(origin.error(
                field("customEndpoint"),
                format!("'{custom}' must start with amqp:// or amqps://"),
            ));
        }
    }
    let partition_strategy = partition_strategy(origin, hubs, errors);
    let batching = hubs.batching.clone().unwrap_or_default();
    let enabled = batching.mode.unwrap_or(Toggle::Enabled) == Toggle::Enabled;
    let max_messages = if enabled {
        batching.max_messages.unwrap_or(DEFAULT_MAX_MESSAGES)
    } else {
        1
    };
    if max_messages == 0 {
        errors.push(origin.error(field("batching.maxMessages"), "must be at least 1"));
    }
    (errors.len() == before).then_some(())?;
    let mut settings = EventHubsEndpoint::new(namespace?, connection_string?);
    settings.custom_endpoint = hubs.custom_endpoint.clone();
    settings.partition_strategy = partition_strategy?;
    settings.copy_mqtt_properties =
        hubs.copy_mqtt_properties.unwrap_or(Toggle::Enabled) == Toggle::Enabled;
    settings.batch_max_messages = max_messages as usize;
    settings.batch_max_bytes = batching.max_bytes;
    if let Some(seconds) = hubs.operation_timeout_seconds {
        settings.operation_timeout = Duration::from_secs(u64::from(seconds.max(1)));
    }
    Some(Endpoint::EventHubs(EventHubsConfig {
        settings,
        max_messages: max_messages as usize,
        max_bytes: batching.max_bytes.unwrap_or(DEFAULT_MAX_BYTES) as usize,
        linger: Duration::from_millis(u64::from(if enabled {
            batching.latency_ms.unwrap_or(DEFAULT_LATENCY_MS)
        } else {
            0
        })),
    }))
}

fn connection_string(
    origin: &Origin,
    hubs: &EventHubsSettings,
    dir: Option<&Path>,
    errors: &mut Vec<ConfigError>,
) -> Option<String> {
    let field = "spec.eventHubsSettings.authentication";
    let Some(auth) = &hubs.authentication else {
        errors.push(origin.error(field, "missing; use method: ConnectionString"));
        return None;
    };
    if auth.method != EventHubsAuthMethod::ConnectionString {
        errors.push(origin.error(
            format!("{field}.method"),
            format!(
                "{} is not supported yet (supported: ConnectionString)",
                auth.method
            ),
        ));
        return None;
    }
    let Some(secret) = &auth.connection_string_settings else {
        errors.push(origin.error(
            format!("{field}.connectionStringSettings"),
            "missing: {secretRef: NAME}",
        ));
        return None;
    };
    let at = format!("{field}.connectionStringSettings.secretRef");
    let value = match secrets::resolve(dir, &secret.secret_ref, CONNECTION_STRING_KEY) {
        Ok(value) => value,
        Err(message) => {
            errors.push(origin.error(at, message));
            return None;
        }
    };
    match check_connection_string(&value) {
        Ok(()) => Some(value),
        Err(problem) => {
            errors.push(origin.error(
                at,
                format!(
                    "secret '{}' is not a usable connection string: {problem}",
                    secret.secret_ref
                ),
            ));
            None
        }
    }
}

/// Checks the parts a connection string needs, naming only the keys.
fn check_connection_string(value: &str) -> Result<(), &'static str> {
    let has = |key: &str| {
        value.split(';').any(|part| {
            part.split_once('=')
                .is_some_and(|(k, v)| k.trim().eq_ignore_ascii_case(key) && !v.trim().is_empty())
        })
    };
    if has("SharedAccessSignature") || (has("SharedAccessKeyName") && has("SharedAccessKey")) {
        Ok(())
    } else {
        Err("it needs SharedAccessKeyName and SharedAccessKey, or SharedAccessSignature")
    }
}

/// The host of the connection string's `Endpoint=sb://HOST/`.
fn endpoint_host(value: &str) -> Option<String> {
    let endpoint = value.split(';').find_map(|part| {
        let (key, v) = part.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case("Endpoint")
            .then_some(v.trim())
    })?;
    let host = endpoint.split("://").nth(1)?.split(['/', ':']).next()?;
    (!host.is_empty()).then(|| host.to_string())
}

fn partition_strategy(
    origin: &Origin,
    hubs: &EventHubsSettings,
    errors: &mut Vec<ConfigError>,
) -> Option<PartitionStrategy> {
    let field = |name: &str| format!("spec.eventHubsSettings.{name}");
    match hubs
        .partition_strategy
        .unwrap_or(PartitionStrategySpec::Default)
    {
        PartitionStrategySpec::Default => Some(PartitionStrategy::Default),
        PartitionStrategySpec::Topic => Some(PartitionStrategy::Topic),
        PartitionStrategySpec::Property => match &hubs.partition_key_property {
            Some(name) if !name.is_empty() => Some(PartitionStrategy::Property(name.clone())),
            _ => {
                errors.push(origin.error(
                    field("partitionKeyProperty"),
                    "missing: partitionStrategy Property needs the user property's name",
                ));
                None
            }
        },
        PartitionStrategySpec::Static => match &hubs.partition_id {
            Some(id) if !id.is_empty() => Some(PartitionStrategy::Static(id.clone())),
            _ => {
                errors.push(origin.error(
                    field("partitionId"),
                    "missing: partitionStrategy Static needs a partition id",
                ));
                None
            }
        },
    }
}

/// An event hub name as `dataDestination`: static, 1-256 of letters,
/// digits, `.`, `_`, `-`.
pub(super) fn hub_name(text: &str) -> Result<TopicTemplate, TemplateError> {
    let valid = !text.is_empty()
        && text.len() <= 256
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !valid {
        return Err(TemplateError::BadHubName(text.to_string()));
    }
    TopicTemplate::parse(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_strings_need_a_key_or_a_signature() {
        let key = "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey=abc=";
        assert!(check_connection_string(key).is_ok());
        assert!(check_connection_string(
            "Endpoint=sb://x/;SharedAccessSignature=SharedAccessSignature sr=x"
        )
        .is_ok());
        assert!(check_connection_string("Endpoint=sb://x/;SharedAccessKeyName=send").is_err());
        assert_eq!(
            endpoint_host(key).as_deref(),
            Some("ns.servicebus.windows.net")
        );
    }
}
