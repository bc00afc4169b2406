//! Event Hubs with Entra ID service principals (`ClientSecret`,
//! `ClientCertificate`) through the `backhaul` binary: `azure_identity`
//! gets a token from the authority stand-in over HTTPS, the SDK puts it on
//! the AMQP connection as a CBS `jwt`, and the events arrive.

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backhaul_chaos_tests::config::{write_eventhubs, EventHubsEdge};
use backhaul_chaos_tests::entra_authority::EntraAuthority;
use backhaul_chaos_tests::eventhubs_peer::EventHubsPeer;
use backhaul_chaos_tests::mqtt::publish_numbered;
use backhaul_chaos_tests::process::{http_get, Backhaul};
use base64::Engine;

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const CLIENT: &str = "1b2c3d4e-0000-4000-8000-00000000beef";
const SECRET: &str = "s3cr3t-Entra-client-secret-value";

fn write_config(dir: &Path, peer: &EventHubsPeer, authentication: &str) -> EventHubsEdge {
    write_eventhubs(dir, peer, authentication, "Default")
}

fn write_secret(config: &Path, name: &str, key: &str, value: &str) {
    let dir = config.join("secrets").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(key), value).unwrap();
}

/// `authentication` for a service principal of `method` at the authority.
fn principal_yaml(method: &str, settings: &str, authority: &EntraAuthority) -> String {
    format!(
        "      method: {method}\n      {settings}:\n        tenantId: {TENANT}\n        \
         clientId: {CLIENT}\n        secretRef: hub-principal\n        authorityHost: {}\n        \
         authorityCaFile: authority-ca.pem",
        authority.authority_host()
    )
}

/// Publishes 50 messages and checks they arrived with the authority's token.
async fn publish_and_check(edge: &EventHubsEdge, peer: &EventHubsPeer, authority: &EntraAuthority) {
    let backhaul = Backhaul::start(&edge.config, &edge.data, edge.metrics_port).unwrap();
    let acked = Arc::new(Mutex::new(Vec::new()));
    publish_numbered(edge.mqtt_port, "plc", "factory/line", 50, acked)
        .await
        .unwrap();
    let events = peer
        .wait_for_events(50, Duration::from_secs(60))
        .await
        .unwrap_or_else(|err| panic!("{err}\n{}", backhaul.log_text()));
    assert_eq!(events.len(), 50);
    assert!(events.iter().all(|e| e.hub == "telemetry"));

    let requests = authority.requests();
    assert!(!requests.is_empty(), "a token was requested");
    let request = &requests[0];
    assert_eq!(request.path, format!("/{TENANT}/oauth2/v2.0/token"));
    assert_eq!(request.form["client_id"], CLIENT);
    assert_eq!(request.form["grant_type"], "client_credentials");
    assert_eq!(
        request.form["scope"],
        "https://eventhubs.azure.net/.default"
    );
    let tokens = peer.tokens();
    assert!(!tokens.is_empty());
    for token in &tokens {
        assert_eq!(token.token_type, "jwt", "{token:?}");
        assert_eq!(token.status, 202);
        assert!(token.token.starts_with("entra-token-"), "{token:?}");
    }
    assert!(
        !backhaul.log_text().contains(SECRET),
        "the secret never reaches the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_secret_principal_gets_a_token_and_delivers() {
    let tmp = tempfile::tempdir().unwrap();
    let authority = EntraAuthority::start().await.unwrap();
    let peer = EventHubsPeer::start().await.unwrap();
    let authentication = principal_yaml("ClientSecret", "clientSecretSettings", &authority);
    let edge = write_config(tmp.path(), &peer, &authentication);
    std::fs::write(edge.config.join("authority-ca.pem"), authority.ca_pem()).unwrap();
    write_secret(&edge.config, "hub-principal", "clientSecret", SECRET);

    publish_and_check(&edge, &peer, &authority).await;
    assert_eq!(authority.requests()[0].form["client_secret"], SECRET);
}

/// A PKCS#12 file with a fresh RSA key and self-signed certificate, made by
/// the openssl command as an operator would.
fn pkcs12(dir: &Path, password: &str) -> Vec<u8> {
    let run = |args: &[&str]| {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("the openssl command");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "key.pem",
        "-out",
        "cert.pem",
        "-subj",
        "/CN=backhaul-test-principal",
        "-days",
        "2",
    ]);
    run(&[
        "pkcs12",
        "-export",
        "-inkey",
        "key.pem",
        "-in",
        "cert.pem",
        "-out",
        "principal.pfx",
        "-passout",
        &format!("pass:{password}"),
    ]);
    std::fs::read(dir.join("principal.pfx")).unwrap()
}

/// The decoded JSON of a JWT's header and payload.
fn jwt_parts(jwt: &str) -> (serde_json::Value, serde_json::Value) {
    let decode = |part: &str| {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part.trim_end_matches('='))
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    };
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3, "header.payload.signature");
    (decode(parts[0]), decode(parts[1]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_principal_signs_an_assertion_and_delivers() {
    let tmp = tempfile::tempdir().unwrap();
    let authority = EntraAuthority::start().await.unwrap();
    let peer = EventHubsPeer::start().await.unwrap();
    let authentication =
        principal_yaml("ClientCertificate", "clientCertificateSettings", &authority);
    let edge = write_config(tmp.path(), &peer, &authentication);
    std::fs::write(edge.config.join("authority-ca.pem"), authority.ca_pem()).unwrap();
    let pfx = pkcs12(tmp.path(), "pfx-password");
    let encoded = base64::engine::general_purpose::STANDARD.encode(pfx);
    write_secret(&edge.config, "hub-principal", "certificate", &encoded);
    write_secret(
        &edge.config,
        "hub-principal",
        "certificatePassword",
        "pfx-password",
    );

    publish_and_check(&edge, &peer, &authority).await;
    let form = &authority.requests()[0].form;
    assert_eq!(
        form["client_assertion_type"],
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    );
    assert!(!form.contains_key("client_secret"));
    let (header, claims) = jwt_parts(&form["client_assertion"]);
    assert_eq!(header["alg"], "RS256");
    assert!(header["x5t"].is_string(), "{header}");
    assert_eq!(claims["iss"], CLIENT);
    assert_eq!(claims["sub"], CLIENT);
    assert_eq!(
        claims["aud"],
        format!("{}/{TENANT}/oauth2/v2.0/token", authority.authority_host())
    );
}

/// A `ClientSecret` appliance whose secret file holds `secret`, with 20
/// messages published and its flow parked by `authority`'s refusal.
struct ParkedCase {
    _tmp: tempfile::TempDir,
    authority: EntraAuthority,
    peer: EventHubsPeer,
    edge: EventHubsEdge,
    backhaul: Backhaul,
}

const PARKED: &str = "backhaul_flow_parked{flow=\"to-hub\"}";

async fn parked_case(authority: EntraAuthority, secret: &str) -> ParkedCase {
    let tmp = tempfile::tempdir().unwrap();
    let peer = EventHubsPeer::start().await.unwrap();
    let authentication = principal_yaml("ClientSecret", "clientSecretSettings", &authority);
    let edge = write_config(tmp.path(), &peer, &authentication);
    std::fs::write(edge.config.join("authority-ca.pem"), authority.ca_pem()).unwrap();
    write_secret(&edge.config, "hub-principal", "clientSecret", secret);
    let backhaul = Backhaul::start(&edge.config, &edge.data, edge.metrics_port).unwrap();
    let acked = Arc::new(Mutex::new(Vec::new()));
    publish_numbered(edge.mqtt_port, "plc", "factory/line", 20, acked)
        .await
        .unwrap();
    backhaul
        .wait_metric(PARKED, 1.0, Duration::from_secs(10))
        .await;
    assert!(peer.events().is_empty());
    ParkedCase {
        _tmp: tmp,
        authority,
        peer,
        edge,
        backhaul,
    }
}

impl ParkedCase {
    /// All 20 messages arrive and the flow is no longer parked.
    async fn resumes(&self) {
        let events = self
            .peer
            .wait_for_events(20, Duration::from_secs(60))
            .await
            .unwrap_or_else(|err| panic!("{err}\n{}", self.backhaul.log_text()));
        assert_eq!(events.len(), 20);
        // The flow unparks once the send's confirmation reaches it.
        self.backhaul
            .wait_metric(PARKED, 0.0, Duration::from_secs(10))
            .await;
        assert!(!self.backhaul.log_text().contains(SECRET));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_principal_parks_the_flow_until_the_authority_accepts_it() {
    let authority = EntraAuthority::start().await.unwrap();
    authority.refuse(true);
    let case = parked_case(authority, SECRET).await;
    let (status, body) = http_get(case.edge.metrics_port, "/readyz").unwrap();
    assert_eq!(status, 503);
    assert!(
        body.starts_with("flow 'to-hub' parked: ") && body.contains("Invalid client secret"),
        "the reason Entra ID gave: {body}"
    );
    assert_eq!(
        case.backhaul
            .metric("backhaul_queue_messages{flow=\"to-hub\"}")
            .unwrap(),
        20.0,
        "nothing dropped while parked"
    );

    case.authority.refuse(false);
    case.resumes().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrected_secret_file_unparks_the_flow_without_a_restart() {
    let authority = EntraAuthority::start().await.unwrap();
    authority.accept_only_secret(SECRET);
    let case = parked_case(authority, "an-expired-secret").await;

    write_secret(&case.edge.config, "hub-principal", "clientSecret", SECRET);
    case.resumes().await;
    let secrets: Vec<String> = case
        .authority
        .requests()
        .iter()
        .map(|r| r.form["client_secret"].clone())
        .collect();
    assert_eq!(
        secrets.first().map(String::as_str),
        Some("an-expired-secret")
    );
    assert_eq!(secrets.last().map(String::as_str), Some(SECRET));
}
