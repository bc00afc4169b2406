//! The secure broker from the command line: `backhaul validate` refuses an
//! unauthenticated listener on the network and names broken TLS or password
//! files, accepts examples/secure-broker, and `backhaul passwd` manages a
//! password file that a running `backhaul run` uses.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use backhaul_chaos_tests::free_port;
use backhaul_chaos_tests::process::Backhaul;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// Runs `backhaul ARGS` with `stdin`; exit code, stdout, stderr.
fn backhaul(args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_backhaul"))
        .args(args)
        .env("RUST_LOG", "off")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run backhaul");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn appliance(listeners: &str) -> String {
    format!(
        "apiVersion: backhaul.dev/v1alpha1\nkind: Appliance\nmetadata: {{name: edge}}\n\
         spec:\n  storage: {{mode: Memory}}\n  listeners:\n{listeners}"
    )
}

#[test]
fn validate_refuses_an_anonymous_listener_on_the_network() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("appliance.yaml");
    std::fs::write(
        &file,
        appliance("    - {name: plant, address: 0.0.0.0:1883}\n"),
    )
    .unwrap();
    let config = dir.path().to_str().unwrap();
    let (code, stdout, stderr) = backhaul(&["validate", "--config", config], None);
    assert_eq!(code, 2);
    assert!(stdout.is_empty());
    assert_eq!(
        stderr.trim_end(),
        format!(
            "{}: document 1 (Appliance 'edge'): spec.listeners[0].authentication: listener \
             'plant' on 0.0.0.0:1883 would let any client on the network connect without \
             authentication: set authentication.method to Password or X509, or set \
             allowAnonymous: true to accept that",
            file.display()
        )
    );
    std::fs::write(
        &file,
        appliance("    - {name: plant, address: 0.0.0.0:1883, allowAnonymous: true}\n"),
    )
    .unwrap();
    let (code, _, stderr) = backhaul(&["validate", "--config", config], None);
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn validate_names_the_field_of_a_broken_tls_or_password_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("appliance.yaml");
    std::fs::write(dir.path().join("not-a-cert.pem"), "hello\n").unwrap();
    std::fs::write(dir.path().join("passwd"), "press-01:plaintext\n").unwrap();
    std::fs::write(
        &file,
        appliance(
            "    - name: tls\n      address: 127.0.0.1:8883\n      tls: {certFile: missing.pem, keyFile: k.pem}\n\
             \x20   - name: bad-cert\n      address: 127.0.0.1:8884\n      tls: {certFile: not-a-cert.pem, keyFile: k.pem}\n\
             \x20   - name: pw\n      address: 127.0.0.1:1884\n      authentication: {method: Password, passwordFile: passwd}\n\
             \x20   - name: x509\n      address: 127.0.0.1:1885\n      authentication: {method: X509}\n",
        ),
    )
    .unwrap();
    let (code, _, stderr) = backhaul(
        &["validate", "--config", dir.path().to_str().unwrap()],
        None,
    );
    assert_eq!(code, 2);
    let d = dir.path().display();
    let at = format!(
        "{}: document 1 (Appliance 'edge'): spec.listeners",
        file.display()
    );
    assert_eq!(
        stderr.lines().collect::<Vec<_>>(),
        [
            format!("{at}[0].tls.certFile: {d}/missing.pem: cannot read: No such file or directory (os error 2)"),
            format!("{at}[1].tls.certFile: {d}/not-a-cert.pem: no CERTIFICATE block in the file"),
            format!("{at}[2].authentication.passwordFile: {d}/passwd: line 1: the hash is not a PHC string (create it with `backhaul passwd`)"),
            format!("{at}[3].authentication.method: X509 needs tls.clientCaFile: the CA bundle client certificates must be signed by"),
        ]
    );
}

/// A CA and a certificate it signed, as PEM.
fn ca_and_server() -> (String, String, String) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Example CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

#[test]
fn the_secure_broker_example_validates() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/secure-broker");
    let dir = tempfile::tempdir().unwrap();
    for name in ["appliance.yaml", "dataflows.yaml"] {
        std::fs::copy(example.join(name), dir.path().join(name)).unwrap();
    }
    let (ca, cert, key) = ca_and_server();
    std::fs::create_dir(dir.path().join("certs")).unwrap();
    std::fs::write(dir.path().join("certs/server.pem"), cert).unwrap();
    std::fs::write(dir.path().join("certs/server.key"), key).unwrap();
    std::fs::write(dir.path().join("certs/gateways-ca.pem"), ca).unwrap();
    let passwd = dir.path().join("passwd");
    let passwd = passwd.to_str().unwrap();
    let (code, _, stderr) = backhaul(
        &["passwd", "-c", "--password-stdin", passwd, "press-01"],
        Some("pw\n"),
    );
    assert_eq!(code, 0, "{stderr}");
    let (code, stdout, stderr) = backhaul(
        &["validate", "--config", dir.path().to_str().unwrap()],
        None,
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout.trim(),
        "configuration is valid: 1 data flow(s), 1 enabled, 2 endpoint(s)"
    );
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| l.split_once(':').unwrap().0.to_string())
        .collect()
}

/// CONNECTs with rumqttc (MQTT 3.1.1); the CONNACK's outcome.
async fn login(port: u16, user: &str, password: &str) -> Result<(), String> {
    let mut options = rumqttc::MqttOptions::new(format!("c-{user}"), "127.0.0.1", port);
    options.set_credentials(user, password);
    let (_client, mut events) = rumqttc::AsyncClient::new(options, 10);
    let first = tokio::time::timeout(Duration::from_secs(20), events.poll())
        .await
        .expect("an answer in time");
    match first {
        Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(ack))) => {
            assert_eq!(ack.code, rumqttc::ConnectReturnCode::Success);
            Ok(())
        }
        other => Err(format!("{other:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwd_manages_the_file_a_running_broker_uses() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    std::fs::create_dir(&config).unwrap();
    let file = config.join("passwd");
    let path = file.to_str().unwrap();
    let ok = |args: &[&str], stdin: Option<&str>| {
        let (code, stdout, stderr) = backhaul(args, stdin);
        assert_eq!(code, 0, "{stderr}");
        stdout.trim().to_string()
    };
    assert_eq!(
        ok(
            &["passwd", "-c", "--password-stdin", path, "alice"],
            Some("first-pw\n")
        ),
        format!("added user 'alice' in {path}")
    );
    assert_eq!(
        ok(
            &["passwd", "--password-stdin", path, "bob"],
            Some("bob-pw\n")
        ),
        format!("added user 'bob' in {path}")
    );
    assert_eq!(
        ok(
            &["passwd", "--password-stdin", path, "bob"],
            Some("bob-pw2\n")
        ),
        format!("updated user 'bob' in {path}")
    );
    assert_eq!(
        ok(&["passwd", "-D", path, "alice"], None),
        format!("deleted user 'alice' from {path}")
    );
    assert_eq!(lines(&file), ["bob"]);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.starts_with("bob:$argon2id$v=19$"), "{text}");
    assert!(!text.contains("bob-pw"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    assert_eq!(
        backhaul(&["passwd", "-D", path, "alice"], None),
        (
            1,
            String::new(),
            format!("backhaul passwd: {path}: no user 'alice'\n")
        )
    );

    let (mqtt, metrics) = (free_port(), free_port());
    std::fs::write(
        config.join("appliance.yaml"),
        format!(
            "apiVersion: backhaul.dev/v1alpha1\nkind: Appliance\nmetadata: {{name: edge}}\n\
             spec:\n  storage: {{mode: Memory}}\n  metrics: {{address: 127.0.0.1:{metrics}}}\n  \
             listeners:\n    - name: devices\n      address: 127.0.0.1:{mqtt}\n      \
             authentication: {{method: Password, passwordFile: passwd}}\n"
        ),
    )
    .unwrap();
    let edge = Backhaul::start(&config, &dir.path().join("data"), metrics).unwrap();
    login(mqtt, "bob", "bob-pw2").await.unwrap();
    let refused = login(mqtt, "alice", "first-pw").await.unwrap_err();
    assert!(refused.contains("BadUserNamePassword"), "{refused}");
    // A user added while the broker runs is let in without a restart.
    ok(
        &["passwd", "--password-stdin", path, "carol"],
        Some("carol-pw\n"),
    );
    login(mqtt, "carol", "carol-pw").await.unwrap();

    assert_eq!(
        edge.metric("backhaul_broker_auth_failures_total{reason=\"bad_credentials\"}")
            .unwrap(),
        1.0
    );
    assert_eq!(
        edge.metric("backhaul_broker_connections_total").unwrap(),
        3.0
    );
    let exposed = format!("{}{}", edge.metrics().unwrap(), edge.log_text());
    for secret in ["first-pw", "bob-pw2", "carol-pw", "$argon2id"] {
        assert!(!exposed.contains(secret), "{secret} leaked");
    }
}

#[test]
fn limits_and_authorization_rules_are_checked_with_their_fields() {
    let text = "apiVersion: backhaul.dev/v1alpha1\nkind: Appliance\nmetadata: {name: edge}\n\
                spec:\n  limits: {receiveMaximum: 0, maxTopicLevels: 4}\n  authorization:\n    \
                rules:\n      - {identity: '', publish: ['a/#'], denyPublish: ['a/locked']}\n      \
                - {identity: scada, subscribe: ['ok/#', 'a/#/b'], denySubscribe: ['ok/secret', 'x/#/y']}\n";
    let errors = backhaul_bridge::config::Config::from_texts(&[("a.yaml", text)])
        .unwrap_err()
        .to_string();
    let at = "a.yaml: document 1 (Appliance 'edge')";
    assert_eq!(
        errors.lines().collect::<Vec<_>>(),
        [
            // Limits come first: listeners inherit them.
            format!("{at}: spec.limits.receiveMaximum: 0 is out of range; expected 1 to 65535"),
            format!("{at}: spec.authorization.rules[0].identity: must be a username, a certificate CN, or '*' for every client"),
            format!("{at}: spec.authorization.rules[1].subscribe[1]: '#' must be the last level and stand alone (as in 'a/#') in 'a/#/b'"),
            format!("{at}: spec.authorization.rules[1].denySubscribe[1]: '#' must be the last level and stand alone (as in 'a/#') in 'x/#/y'"),
        ]
    );
    let ok = text
        .replace("receiveMaximum: 0", "receiveMaximum: 16")
        .replace("identity: ''", "identity: '*'")
        .replace(", 'a/#/b'", "")
        .replace(", 'x/#/y'", "");
    let config = backhaul_bridge::config::Config::from_texts(&[("a.yaml", &ok)]).unwrap();
    let broker = &config.appliance.broker;
    assert_eq!(broker.limits.receive_maximum, 16);
    assert_eq!(broker.limits.max_topic_levels, 4);
    assert_eq!(broker.limits.max_topic_length, 1024, "default");
    let who = |identity| backhaul_broker::authz::Requester {
        identity,
        client_id: "c",
    };
    assert!(broker
        .authorization
        .may_subscribe(who(Some("scada")), "ok/x"));
    assert!(!broker
        .authorization
        .may_subscribe(who(Some("other")), "ok/x"));
    assert!(broker.authorization.may_publish(who(None), "a/b"));
    // Denials win over the rules' grants.
    assert!(!broker
        .authorization
        .may_subscribe(who(Some("scada")), "ok/secret"));
    assert!(!broker.authorization.may_publish(who(None), "a/locked"));
}
