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
