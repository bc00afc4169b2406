//! The broker's security settings in the `Appliance` document: listeners
//! (TLS, authentication), `authorization` rules and `limits`, as written
//! and as validated into [`BrokerSettings`].
//!
//! Files (certificates, keys, password files) are relative to the
//! configuration directory and are read during validation, so
//! `backhaul validate` reports a missing or broken one with its field.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use backhaul_broker::authz::{self, DefaultDecision, Rule, RuleIdentity};
use backhaul_broker::passwd::PasswordFile;
use backhaul_broker::tls::{self, TlsFile, TlsFiles};
use backhaul_broker::{Authentication, Authorization, Limits, ListenerSettings, WebSocketSettings};
use serde::Deserialize;

use super::appliance::ListenerSpec;
use super::enums::ci_enum;
use super::error::{ConfigError, Origin};

/// `listeners[].tls`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListenerTlsSpec {
    /// PEM server certificate chain, leaf first.
    pub cert_file: String,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: String,
    /// PEM CA bundle; when set, every client must present a certificate
    /// signed by it.
    pub client_ca_file: Option<String>,
}

/// `listeners[].websocket`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListenerWebSocketSpec {
    /// The HTTP path of the endpoint (default `/mqtt`).
    pub path: Option<String>,
}

ci_enum!(
    /// How a listener authenticates clients.
    AuthenticationMethodSpec { Anonymous, Password, X509 }
);

/// `listeners[].authentication`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListenerAuthenticationSpec {
    pub method: AuthenticationMethodSpec,
    /// With `method: Password`: the file `backhaul passwd` manages.
    pub password_file: Option<String>,
}

ci_enum!(
    /// What a request that no rule grants gets.
    DecisionSpec { Allow, Deny }
);

/// `spec.authorization`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationSpec {
    #[serde(default)]
    pub rules: Vec<AuthorizationRuleSpec>,
    /// Default `Deny`.
    pub default: Option<DecisionSpec>,
}

/// One rule: an identity (username, certificate CN, or `*`) and the topic
/// filters it may publish and subscribe to (`%u`, `%c` substituted).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationRuleSpec {
    pub identity: String,
    #[serde(default)]
    pub publish: Vec<String>,
    #[serde(default)]
    pub subscribe: Vec<String>,
    /// Filters refused for publishing whatever grants them (like
    /// Mosquitto's `topic deny`).
    #[serde(default)]
    pub deny_publish: Vec<String>,
    /// Filters refused for subscribing whatever grants them.
    #[serde(default)]
    pub deny_subscribe: Vec<String>,
}

/// `spec.limits`: the broker's limits, each with a safe default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BrokerLimitsSpec {
    pub max_connections: Option<usize>,
    pub max_packet_size: Option<usize>,
    pub receive_maximum: Option<u16>,
    pub connect_timeout_seconds: Option<u64>,
    pub max_topic_length: Option<usize>,
    pub max_topic_levels: Option<usize>,
}

/// MQTT's largest remaining length.
const MQTT_MAX_PACKET: usize = 268_435_455;

/// A file named in the configuration: relative to the configuration
/// directory (the working directory for the built-in configuration).
fn config_path(dir: Option<&Path>, file: &str) -> PathBuf {
    let path = PathBuf::from(file);
    match dir {
        Some(dir) if path.is_relative() => dir.join(path),
        _ => path,
    }
}

/// Validates listener `i`; its `limits` inherit `broker_limits` field by
/// field.
pub(super) fn listener(
    origin: &Origin,
    i: usize,
    spec: &ListenerSpec,
    address: SocketAddr,
    broker_limits: Limits,
    dir: Option<&Path>,
    errors: &mut Vec<ConfigError>,
) -> Option<ListenerSettings> {
    let field = |name: &str| format!("spec.listeners[{i}].{name}");
    let name = spec.name.clone().unwrap_or_else(|| format!("listener-{i}"));
    let before = errors.len();
    let tls_config = spec.tls.as_ref().and_then(|tls| {
        let files = TlsFiles {
            cert_file: config_path(dir, &tls.cert_file),
            key_file: config_path(dir, &tls.key_file),
            client_ca_file: tls.client_ca_file.as_deref().map(|f| config_path(dir, f)),
        };
        tls::server_config(&files)
            .map_err(|err| {
                let which = match err.file {
                    TlsFile::Cert => "tls.certFile",
                    TlsFile::Key => "tls.keyFile",
                    TlsFile::ClientCa => "tls.clientCaFile",
                };
                errors.push(origin.error(field(which), err.message));
            })
            .ok()
    });
    let websocket = spec.websocket.as_ref().map(|ws| {
        let path = ws
            .path
            .clone()
            .unwrap_or_else(|| WebSocketSettings::default().path);
        if !path.starts_with('/') || path.contains(char::is_whitespace) {
            errors.push(origin.error(
                field("websocket.path"),
                format!("'{path}' must be an HTTP path starting with '/', such as /mqtt"),
            ));
        }
        WebSocketSettings { path }
    });
    let method = spec
        .authentication
        .as_ref()
        .map_or(AuthenticationMethodSpec::Anonymous, |a| a.method);
    let password_file = spec
        .authentication
        .as_ref()
        .and_then(|a| a.password_file.as_deref());
    if password_file.is_some() && method != AuthenticationMethodSpec::Password {
        errors.push(origin.error(
            field("authentication.passwordFile"),
            format!("only used with method Password (the method is {method})"),
        ));
    }
    let authentication = match method {
        AuthenticationMethodSpec::Anonymous => {
            if !address.ip().is_loopback() && spec.allow_anonymous != Some(true) {
                errors.push(origin.error(
                    field("authentication"),
                    format!(
                        "listener '{name}' on {address} would let any client on the network \
                         connect without authentication: set authentication.method to Password \
                         or X509, or set allowAnonymous: true to accept that"
                    ),
                ));
            }
            Authentication::Anonymous
        }
        AuthenticationMethodSpec::Password => match password_file {
            None => {
                errors.push(origin.error(
                    field("authentication.passwordFile"),
                    "required with method Password (create the file with `backhaul passwd -c FILE USERNAME`)",
                ));
                Authentication::Anonymous
            }
            Some(file) => match PasswordFile::open(&config_path(dir, file)) {
                Ok(file) => Authentication::Password(Arc::new(file)),
                Err(err) => {
                    errors
                        .push(origin.error(field("authentication.passwordFile"), err.to_string()));
                    Authentication::Anonymous
                }
            },
        },
        AuthenticationMethodSpec::X509 => {
            let has_ca = spec
                .tls
                .as_ref()
                .is_some_and(|t| t.client_ca_file.is_some());
            if !has_ca {
                errors.push(origin.error(
                    field("authentication.method"),
                    "X509 needs tls.clientCaFile: the CA bundle client certificates must be signed by",
                ));
            }
            Authentication::X509
        }
    };
    let own_limits = spec.limits.as_ref().map(|own| {
        let at = LimitsAt::Listener {
            index: i,
            name: &name,
        };
        limits(origin, at, Some(own), broker_limits, errors)
    });
    (errors.len() == before).then_some(ListenerSettings {
        name,
        address,
        tls: tls_config,
        websocket,
        authentication,
        limits: own_limits,
    })
}

/// Validates `spec.authorization`; without it everything is allowed.
pub(super) fn authorization(
    origin: &Origin,
    spec: Option<&AuthorizationSpec>,
    errors: &mut Vec<ConfigError>,
) -> Authorization {
    let Some(spec) = spec else {
        return Authorization::allow_all();
    };
    let mut rules = Vec::new();
    for (i, rule) in spec.rules.iter().enumerate() {
        let identity = match rule.identity.as_str() {
            "*" => RuleIdentity::Anyone,
            "" => {
                errors.push(origin.error(
                    format!("spec.authorization.rules[{i}].identity"),
                    "must be a username, a certificate CN, or '*' for every client",
                ));
                continue;
            }
            name => RuleIdentity::Named(name.to_string()),
        };
        let lists = [
            ("publish", &rule.publish),
            ("subscribe", &rule.subscribe),
            ("denyPublish", &rule.deny_publish),
            ("denySubscribe", &rule.deny_subscribe),
        ];
        for (kind, filters) in lists {
            for (j, filter) in filters.iter().enumerate() {
                if let Err(err) = authz::check_template(filter) {
                    errors.push(origin.error(
                        format!("spec.authorization.rules[{i}].{kind}[{j}]"),
                        err.to_string(),
                    ));
                }
            }
        }
        rules.push(Rule {
            identity,
            publish: rule.publish.clone(),
            subscribe: rule.subscribe.clone(),
            deny_publish: rule.deny_publish.clone(),
            deny_subscribe: rule.deny_subscribe.clone(),
        });
    }
    let default = match spec.default {
        Some(DecisionSpec::Allow) => DefaultDecision::Allow,
        Some(DecisionSpec::Deny) | None => DefaultDecision::Deny,
    };
    Authorization::new(rules, default)
}

/// Where a `limits` section is: the broker's, or a listener's own.
pub(super) enum LimitsAt<'a> {
    Broker,
    Listener { index: usize, name: &'a str },
}

/// Validates a `limits` section over `base`, field by field: the broker's
/// over the defaults, a listener's over the broker's. Errors name the
/// field, and the listener.
pub(super) fn limits(
    origin: &Origin,
    at: LimitsAt<'_>,
    spec: Option<&BrokerLimitsSpec>,
    base: Limits,
    errors: &mut Vec<ConfigError>,
) -> Limits {
    let Some(spec) = spec else {
        return base;
    };
    let (prefix, whose) = match at {
        LimitsAt::Broker => ("spec.limits".to_string(), String::new()),
        LimitsAt::Listener { index, name } => (
            format!("spec.listeners[{index}].limits"),
            format!("listener '{name}': "),
        ),
    };
    let mut check = |name: &str, value: Option<usize>, min: usize, max: usize| {
        if let Some(v) = value.filter(|v| !(min..=max).contains(v)) {
            errors.push(origin.error(
                format!("{prefix}.{name}"),
                format!("{whose}{v} is out of range; expected {min} to {max}"),
            ));
        }
    };
    check("maxConnections", spec.max_connections, 1, 1_000_000);
    check("maxPacketSize", spec.max_packet_size, 64, MQTT_MAX_PACKET);
    check(
        "receiveMaximum",
        spec.receive_maximum.map(usize::from),
        1,
        65_535,
    );
    check(
        "connectTimeoutSeconds",
        spec.connect_timeout_seconds
            .map(|s| usize::try_from(s).unwrap_or(usize::MAX)),
        1,
        3600,
    );
    check("maxTopicLength", spec.max_topic_length, 1, 65_535);
    check("maxTopicLevels", spec.max_topic_levels, 1, 65_535);
    Limits {
        max_connections: spec.max_connections.unwrap_or(base.max_connections),
        max_packet_size: spec.max_packet_size.unwrap_or(base.max_packet_size),
        receive_maximum: spec.receive_maximum.unwrap_or(base.receive_maximum),
        connect_timeout: spec
            .connect_timeout_seconds
            .map_or(base.connect_timeout, Duration::from_secs),
        max_topic_length: spec.max_topic_length.unwrap_or(base.max_topic_length),
        max_topic_levels: spec.max_topic_levels.unwrap_or(base.max_topic_levels),
    }
}
