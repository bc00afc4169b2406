//! The Grafana dashboard (`packaging/grafana/backhaul.json`) checked
//! against the `/metrics` of a running appliance, and each of its queries
//! evaluated by a real Prometheus (from Debian) that scrapes it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use backhaul_chaos_tests::config::{write_local_files, TestAppliance};
use backhaul_chaos_tests::free_port;
use backhaul_chaos_tests::process::Backhaul;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bridge/ is in the repository")
        .to_path_buf()
}

/// Every `backhaul_*` name in `text`.
fn metric_names(text: &str, into: &mut BTreeSet<String>) {
    let mut rest = text;
    while let Some(start) = rest.find("backhaul_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        into.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
}

/// The PromQL of every panel (rows included) and of the template variables.
fn dashboard_queries(dashboard: &serde_json::Value) -> Vec<String> {
    fn panels(list: &serde_json::Value, out: &mut Vec<String>) {
        for panel in list.as_array().into_iter().flatten() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"].as_str().expect("every target has expr");
                assert!(!expr.is_empty(), "empty expr in '{}'", panel["title"]);
                out.push(expr.to_string());
            }
            panels(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    panels(&dashboard["panels"], &mut out);
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(query) = variable["query"]["query"].as_str() {
            out.push(query.to_string());
        }
    }
    out
}

#[test]
fn the_dashboard_shows_exactly_the_metrics_a_running_appliance_exports() {
    let path = repo().join("packaging/grafana/backhaul.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(dashboard["uid"], "backhaul-appliance");
    let ids: Vec<u64> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_u64().expect("panel id"))
        .collect();
    assert_eq!(
        ids.iter().collect::<BTreeSet<_>>().len(),
        ids.len(),
        "panel ids are unique"
    );
    let mut used = BTreeSet::new();
    for query in dashboard_queries(&dashboard) {
        metric_names(&query, &mut used);
    }

    let tmp = tempfile::tempdir().unwrap();
    let (backhaul, _) = running_appliance(tmp.path());
    let exposition = backhaul.metrics().unwrap();
    let samples: BTreeSet<String> = exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect();
    let families: BTreeSet<String> = exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect();

    let unknown: Vec<&String> = used.difference(&samples).collect();
    assert_eq!(
        unknown,
        Vec::<&String>::new(),
        "the dashboard queries series /metrics does not have"
    );
    // Every family is on the dashboard (a histogram through its buckets).
    let unshown: Vec<&String> = families
        .iter()
        .filter(|f| !used.contains(*f) && !used.contains(&format!("{f}_bucket")))
        .collect();
    assert_eq!(
        unshown,
        Vec::<&String>::new(),
        "metrics /metrics exports that no panel shows"
    );
    assert!(families.contains("backhaul_queue_messages"), "{exposition}");
}

/// The built-in example flow running under `dir` on free ports.
fn running_appliance(dir: &Path) -> (Backhaul, TestAppliance) {
    let appliance = TestAppliance {
        mqtt_port: free_port(),
        metrics_port: free_port(),
        storage: "Disk",
    };
    write_local_files(&dir.join("config"), &appliance);
    let backhaul = Backhaul::start(
        &dir.join("config"),
        &dir.join("data"),
        appliance.metrics_port,
    )
    .unwrap();
    (backhaul, appliance)
}

/// `expr` with the dashboard's variables as Grafana fills them when all
/// appliances and flows are selected.
fn instantiate(expr: &str) -> String {
    expr.replace("$__rate_interval", "10s")
        .replace("$instance", ".*")
        .replace("$flow", ".*")
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One instant query through Prometheus's HTTP API (HTTP/1.0: the answer
/// is not chunked).
fn prometheus_query(port: u16, expr: &str) -> serde_json::Value {
    try_prometheus_query(port, expr).unwrap_or_else(|response| panic!("{response}"))
}

/// [`prometheus_query`], or the whole response when it is not JSON (while
/// Prometheus starts it answers 503 Service Unavailable).
fn try_prometheus_query(port: u16, expr: &str) -> Result<serde_json::Value, String> {
    use std::io::{Read, Write};
    let mut stream =
        std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|err| err.to_string())?;
    write!(
        stream,
        "GET /api/v1/query?query={} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n",
        percent_encode(expr)
    )
    .map_err(|err| err.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|err| err.to_string())?;
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).map_err(|err| format!("{err}: {response}"))
}

/// A Prometheus server from Debian, killed when dropped.
struct Prometheus {
    child: std::process::Child,
    port: u16,
}

impl Prometheus {
    fn scraping(dir: &Path, metrics_port: u16) -> Self {
        std::fs::write(
            dir.join("prometheus.yml"),
            format!(
                "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
                 scrape_configs:\n  - job_name: backhaul\n    \
                 static_configs: [{{targets: ['127.0.0.1:{metrics_port}']}}]\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|err| {
                panic!("prometheus cannot run ({err}): apt-get install prometheus (scripts/test.sh does)")
            });
        Self { child, port }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn every_dashboard_query_evaluates_in_prometheus_against_a_running_appliance() {
    let path = repo().join("packaging/grafana/backhaul.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (_backhaul, appliance) = running_appliance(tmp.path());
    let prometheus = Prometheus::scraping(tmp.path(), appliance.metrics_port);

    // Rates need two scrapes in their window: wait for four (bounded).
    let mut scrapes = 0.0;
    for _ in 0..600 {
        let answer = try_prometheus_query(
            prometheus.port,
            "count_over_time(backhaul_broker_connections[1m])",
        );
        if let Ok(answer) = answer {
            scrapes = answer["data"]["result"][0]["value"][1]
                .as_str()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0);
            if scrapes >= 4.0 {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        scrapes >= 4.0,
        "Prometheus did not scrape the appliance: {}",
        std::fs::read_to_string(tmp.path().join("prometheus.log")).unwrap_or_default()
    );

    let mut queries = dashboard_queries(&dashboard);
    // label_values(<selector>, flow) as the series query Grafana makes of it.
    for query in queries.iter_mut() {
        if let Some(args) = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
        {
            let (selector, label) = args.rsplit_once(',').unwrap();
            *query = format!("group by ({}) ({selector})", label.trim());
        }
    }
    let mut failures = Vec::new();
    for query in &queries {
        let answer = prometheus_query(prometheus.port, &instantiate(query));
        let results = answer["data"]["result"].as_array().map_or(0, Vec::len);
        // Only the "parked" series is empty while no flow is parked.
        let may_be_empty = query.contains("== 1");
        if answer["status"] != "success" || (results == 0 && !may_be_empty) {
            failures.push(format!("{query}: {answer}"));
        }
    }
    assert_eq!(failures, Vec::<String>::new());
    assert_eq!(
        queries.len(),
        45,
        "every target and both variables: {queries:#?}"
    );
}
