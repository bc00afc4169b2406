//! Validation of `endpointType: EventHubs` (a Backhaul extension).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::endpoint::{
    EventHubsAuthMethod, EventHubsSettings, PartitionStrategySpec, ServicePrincipalSettings,
};
use super::enums::Toggle;
use super::error::{ConfigError, Origin};
use super::{secrets, Endpoint, EventHubsConfig};
use crate::endpoint::entra::{self, PrincipalProof, ServicePrincipal};
use crate::endpoint::eventhubs::{
    CredentialSource, EventHubsCredential, EventHubsEndpoint, PartitionStrategy,
};
use crate::flow::{TemplateError, TopicTemplate};

/// The key of a `ConnectionString` secret.
pub const CONNECTION_STRING_KEY: &str = "connectionString";
/// The key of a `ClientSecret` secret.
pub const CLIENT_SECRET_KEY: &str = "clientSecret";
/// The keys of a `ClientCertificate` secret: a PKCS#12 file in base64, and
/// its password (optional).
pub const CERTIFICATE_KEY: &str = "certificate";
pub const CERTIFICATE_PASSWORD_KEY: &str = "certificatePassword";
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
    let credential = credential(origin, hubs, dir, errors);
    let namespace = hubs.host.clone().or_else(|| match &credential {
        Some(EventHubsCredential::ConnectionString(cs)) => endpoint_host(cs),
        _ => None,
    });
    match (&namespace, &credential) {
        (None, Some(EventHubsCredential::ConnectionString(_))) => errors.push(origin.error(
            field("host"),
            "missing, and the connection string has no Endpoint: set NAME.servicebus.windows.net",
        )),
        (None, Some(EventHubsCredential::Entra(_))) => errors.push(origin.error(
            field("host"),
            "missing: Entra ID authentication needs NAME.servicebus.windows.net",
        )),
        _ => {}
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
    if hubs.max_in_flight_batches == Some(0) {
        errors.push(origin.error(field("maxInFlightBatches"), "must be at least 1"));
    }
    (errors.len() == before).then_some(())?;
    let mut settings = EventHubsEndpoint::with_credential(namespace?, credential?);
    settings.reload_credential = Some(credential_source(origin, hubs, dir));
    settings.custom_endpoint = hubs.custom_endpoint.clone();
    settings.partition_strategy = partition_strategy?;
    settings.copy_mqtt_properties =
        hubs.copy_mqtt_properties.unwrap_or(Toggle::Enabled) == Toggle::Enabled;
    settings.batch_max_messages = max_messages as usize;
    settings.batch_max_bytes = batching.max_bytes;
    if let Some(batches) = hubs.max_in_flight_batches {
        settings.max_in_flight_batches = batches as usize;
    }
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

const AUTHENTICATION: &str = "spec.eventHubsSettings.authentication";

/// Reads the endpoint's secrets (and certificate files) again, as at load
/// time: a flow parked by refused credentials picks up corrected ones
/// without a restart.
fn credential_source(
    origin: &Origin,
    hubs: &EventHubsSettings,
    dir: Option<&Path>,
) -> CredentialSource {
    let (origin, hubs) = (origin.clone(), hubs.clone());
    let dir = dir.map(Path::to_path_buf);
    Arc::new(move || {
        let mut errors = Vec::new();
        credential(&origin, &hubs, dir.as_deref(), &mut errors).ok_or_else(|| {
            let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
            messages.join("; ")
        })
    })
}

fn credential(
    origin: &Origin,
    hubs: &EventHubsSettings,
    dir: Option<&Path>,
    errors: &mut Vec<ConfigError>,
) -> Option<EventHubsCredential> {
    let Some(auth) = &hubs.authentication else {
        errors.push(origin.error(
            AUTHENTICATION,
            "missing; use method: ConnectionString, ClientSecret or ClientCertificate",
        ));
        return None;
    };
    let (settings, name) = match auth.method {
        EventHubsAuthMethod::ConnectionString => {
            return connection_string(origin, auth, dir, errors)
                .map(EventHubsCredential::ConnectionString)
        }
        EventHubsAuthMethod::ClientSecret => (&auth.client_secret_settings, "clientSecretSettings"),
        EventHubsAuthMethod::ClientCertificate => (
            &auth.client_certificate_settings,
            "clientCertificateSettings",
        ),
    };
    let Some(settings) = settings else {
        errors.push(origin.error(
            format!("{AUTHENTICATION}.{name}"),
            format!(
                "missing for method {}: {{tenantId, clientId, secretRef}}",
                auth.method
            ),
        ));
        return None;
    };
    let field = format!("{AUTHENTICATION}.{name}");
    let principal = service_principal(origin, &field, auth.method, settings, dir, errors)?;
    match entra::credential(principal) {
        Ok(credential) => Some(EventHubsCredential::Entra(credential)),
        Err(problem) => {
            errors.push(origin.error(field, problem));
            None
        }
    }
}

/// The principal's secrets and files, read; errors name the field.
fn service_principal(
    origin: &Origin,
    field: &str,
    method: EventHubsAuthMethod,
    settings: &ServicePrincipalSettings,
    dir: Option<&Path>,
    errors: &mut Vec<ConfigError>,
) -> Option<ServicePrincipal> {
    let before = errors.len();
    let secret = |key: &str, errors: &mut Vec<ConfigError>| {
        secrets::resolve(dir, &settings.secret_ref, key)
            .map_err(|message| errors.push(origin.error(format!("{field}.secretRef"), message)))
            .ok()
    };
    let proof = if method == EventHubsAuthMethod::ClientSecret {
        secret(CLIENT_SECRET_KEY, errors).map(PrincipalProof::ClientSecret)
    } else {
        let password = secrets::resolve(dir, &settings.secret_ref, CERTIFICATE_PASSWORD_KEY).ok();
        secret(CERTIFICATE_KEY, errors).and_then(|encoded| {
            use base64::Engine;
            let compact: String = encoded.split_whitespace().collect();
            match base64::engine::general_purpose::STANDARD.decode(compact) {
                Ok(pkcs12) => Some(PrincipalProof::Certificate { pkcs12, password }),
                Err(_) => {
                    errors.push(origin.error(
                        format!("{field}.secretRef"),
                        format!(
                            "secret '{}' key '{CERTIFICATE_KEY}' is not base64 (a PKCS#12 file, \
                             e.g. `base64 -w0 principal.pfx`)",
                            settings.secret_ref
                        ),
                    ));
                    None
                }
            }
        })
    };
    let authority_ca_pem = settings.authority_ca_file.as_ref().and_then(|file| {
        let path = dir.map_or_else(|| Path::new(file).to_path_buf(), |d| d.join(file));
        std::fs::read(&path)
            .map_err(|err| {
                errors.push(origin.error(
                    format!("{field}.authorityCaFile"),
                    format!("cannot read {}: {err}", path.display()),
                ))
            })
            .ok()
    });
    if errors.len() != before {
        return None;
    }
    Some(ServicePrincipal {
        tenant_id: settings.tenant_id.clone(),
        client_id: settings.client_id.clone(),
        proof: proof?,
        authority_host: settings.authority_host.clone(),
        authority_ca_pem,
    })
}

fn connection_string(
    origin: &Origin,
    auth: &super::endpoint::EventHubsAuthentication,
    dir: Option<&Path>,
    errors: &mut Vec<ConfigError>,
) -> Option<String> {
    let field = AUTHENTICATION;
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
