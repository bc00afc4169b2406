//! Reading YAML documents into typed resources, with errors that name the
//! file, the document and the field.

use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::error::{ConfigError, Origin};

pub const AIO_API_VERSIONS: &[&str] = &[
    "connectivity.iotoperations.azure.com/v1",
    "connectivity.iotoperations.azure.com/v1beta1",
];
pub const BACKHAUL_API_VERSION: &str = "backhaul.dev/v1alpha1";

/// The kinds a configuration may hold, with their API versions.
pub const KINDS: &[(&str, &[&str])] = &[
    ("Appliance", &[BACKHAUL_API_VERSION]),
    ("Dataflow", AIO_API_VERSIONS),
    ("DataflowEndpoint", AIO_API_VERSIONS),
    ("DataflowProfile", AIO_API_VERSIONS),
];

/// One YAML document whose envelope (apiVersion, kind, metadata) is valid.
#[derive(Debug, Clone)]
pub struct RawResource {
    pub origin: Origin,
    pub kind: String,
    pub name: String,
    pub spec: serde_yaml::Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    api_version: Option<String>,
    kind: Option<String>,
    metadata: Option<Metadata>,
    spec: Option<serde_yaml::Value>,
}

#[derive(Deserialize)]
struct Metadata {
    name: Option<String>,
}

/// Splits `text` (the file `file`) into resources, adding errors to `errors`.
pub fn read_documents(file: &str, text: &str, errors: &mut Vec<ConfigError>) -> Vec<RawResource> {
    let mut resources = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let number = index + 1;
        let at = |field: Option<&str>, resource: Option<String>, message: String| ConfigError {
            file: file.to_string(),
            document: Some(number),
            resource,
            field: field.map(str::to_string),
            message,
        };
        let value = match serde_yaml::Value::deserialize(document) {
            Ok(serde_yaml::Value::Null) => continue,
            Ok(value) => value,
            Err(err) => {
                errors.push(at(None, None, format!("invalid YAML: {err}")));
                // A syntax error ends the stream: later documents cannot be read.
                break;
            }
        };
        let envelope: Envelope = match serde_yaml::from_value(value) {
            Ok(envelope) => envelope,
            Err(err) => {
                errors.push(at(None, None, format!("not a resource: {err}")));
                continue;
            }
        };
        let Some(kind) = envelope.kind else {
            errors.push(at(Some("kind"), None, missing_kind()));
            continue;
        };
        let Some((_, versions)) = KINDS.iter().find(|(k, _)| *k == kind) else {
            errors.push(at(
                Some("kind"),
                None,
                format!("unknown kind '{kind}'; {}", missing_kind()),
            ));
            continue;
        };
        let name = envelope.metadata.and_then(|m| m.name).unwrap_or_default();
        let resource = if name.is_empty() {
            kind.clone()
        } else {
            format!("{kind} '{name}'")
        };
        match envelope.api_version.as_deref() {
            Some(v) if versions.contains(&v) => {}
            other => {
                errors.push(at(
                    Some("apiVersion"),
                    Some(resource),
                    format!(
                        "{} for kind {kind}; expected {}",
                        other.map_or("missing".to_string(), |v| format!("'{v}' is not valid")),
                        versions.join(" or ")
                    ),
                ));
                continue;
            }
        }
        if name.is_empty() {
            errors.push(at(Some("metadata.name"), Some(resource), "missing".into()));
            continue;
        }
        resources.push(RawResource {
            origin: Origin {
                file: file.to_string(),
                document: number,
                resource,
            },
            kind,
            name,
            spec: envelope.spec.unwrap_or(serde_yaml::Value::Null),
        });
    }
    resources
}

fn missing_kind() -> String {
    let kinds: Vec<&str> = KINDS.iter().map(|(k, _)| *k).collect();
    format!("expected one of: {}", kinds.join(", "))
}

/// Deserializes a resource's spec, naming the failing field.
pub fn parse_spec<T: DeserializeOwned + Default>(
    resource: &RawResource,
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    if resource.spec.is_null() {
        return Some(T::default());
    }
    parse_required_spec(resource, errors)
}

/// Like [`parse_spec`] for kinds whose spec has required fields.
pub fn parse_required_spec<T: DeserializeOwned>(
    resource: &RawResource,
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    let spec = if resource.spec.is_null() {
        serde_yaml::Value::Mapping(Default::default())
    } else {
        resource.spec.clone()
    };
    match serde_path_to_error::deserialize::<_, T>(spec) {
        Ok(spec) => Some(spec),
        Err(err) => {
            let path = err.path().to_string();
            let field = if path == "." {
                "spec".to_string()
            } else {
                format!("spec.{path}")
            };
            errors.push(
                resource
                    .origin
                    .error(field, clean_message(&err.into_inner().to_string())),
            );
            None
        }
    }
}

/// serde_yaml appends " at line N column M" relative to the re-serialized
/// value, which would point at the wrong place in the user's file.
fn clean_message(message: &str) -> String {
    match message.find(" at line ") {
        Some(at) => message[..at].to_string(),
        None => message.to_string(),
    }
}
