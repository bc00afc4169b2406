//! Listener settings of the `Appliance` document: WebSocket listeners and
//! limits per listener, as validated into the broker's settings.

use backhaul_bridge::config::Config;

fn appliance(spec: &str) -> String {
    format!("apiVersion: backhaul.dev/v1alpha1\nkind: Appliance\nmetadata: {{name: edge}}\nspec:\n{spec}")
}

fn errors(text: &str) -> Vec<String> {
    Config::from_texts(&[("a.yaml", text)])
        .unwrap_err()
        .to_string()
        .lines()
        .map(str::to_owned)
        .collect()
}

const AT: &str = "a.yaml: document 1 (Appliance 'edge')";

#[test]
fn a_websocket_listener_has_a_path_default_mqtt() {
    let text = appliance(
        "  listeners:\n    - {name: ws, address: '127.0.0.1:9001', websocket: {}}\n    \
         - {name: dash, address: '127.0.0.1:9002', websocket: {path: /dash/mqtt}}\n    \
         - {name: tcp, address: '127.0.0.1:1883'}\n",
    );
    let config = Config::from_texts(&[("a.yaml", &text)]).unwrap();
    let paths: Vec<Option<&str>> = config
        .appliance
        .listeners
        .iter()
        .map(|l| l.websocket.as_ref().map(|ws| ws.path.as_str()))
        .collect();
    assert_eq!(paths, [Some("/mqtt"), Some("/dash/mqtt"), None]);
}

#[test]
fn a_websocket_path_must_be_an_http_path() {
    let text = appliance(
        "  listeners:\n    - {name: ws, address: '127.0.0.1:9001', websocket: {path: mqtt}}\n",
    );
    assert_eq!(
        errors(&text),
        [format!(
            "{AT}: spec.listeners[0].websocket.path: 'mqtt' must be an HTTP path starting with '/', such as /mqtt"
        )]
    );
}

#[test]
fn a_listener_limit_overrides_the_broker_one_and_inherits_the_rest() {
    let text = appliance(
        "  limits: {maxPacketSize: 65536, receiveMaximum: 20, maxConnections: 500}\n  \
         listeners:\n    - {name: plant, address: '127.0.0.1:1883'}\n    \
         - name: gateways\n      address: '127.0.0.1:1884'\n      \
         limits: {maxPacketSize: 1048576, maxConnections: 8, connectTimeoutSeconds: 3}\n",
    );
    let config = Config::from_texts(&[("a.yaml", &text)]).unwrap();
    let broker = &config.appliance.broker;
    assert_eq!(broker.limits.max_packet_size, 65536);
    assert_eq!(broker.limits.max_connections, 500);
    let listeners = &config.appliance.listeners;
    assert_eq!(listeners[0].limits, None, "plant: the broker's limits");
    let gateways = listeners[1].limits.expect("gateways has its own");
    assert_eq!(gateways.max_packet_size, 1_048_576);
    assert_eq!(gateways.max_connections, 8);
    assert_eq!(gateways.connect_timeout, std::time::Duration::from_secs(3));
    assert_eq!(gateways.receive_maximum, 20, "inherited from spec.limits");
    assert_eq!(
        gateways.max_topic_levels, 32,
        "the default, through spec.limits"
    );
}

#[test]
fn a_listener_limit_out_of_range_names_the_listener_and_field() {
    let text = appliance(
        "  listeners:\n    - name: gateways\n      address: '127.0.0.1:1884'\n      \
         limits: {maxPacketSize: 10, receiveMaximum: 0}\n",
    );
    assert_eq!(
        errors(&text),
        [
            format!("{AT}: spec.listeners[0].limits.maxPacketSize: listener 'gateways': 10 is out of range; expected 64 to 268435455"),
            format!("{AT}: spec.listeners[0].limits.receiveMaximum: listener 'gateways': 0 is out of range; expected 1 to 65535"),
        ]
    );
    let unknown = appliance(
        "  listeners:\n    - {name: g, address: '127.0.0.1:1884', limits: {maxPackets: 1}}\n",
    );
    let unknown = errors(&unknown).join("\n");
    assert!(unknown.contains("unknown field `maxPackets`"), "{unknown}");
}
