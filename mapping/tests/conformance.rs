//! Data-driven conformance suite: runs every case of `tests/conformance.yaml`.

use backhaul_mapping::{Datasets, Message, Outcome, Transform, TransformSettings};
use serde_json::Value as Json;
use serde_yaml::Value as Yaml;

fn field<'a>(v: &'a Yaml, key: &str) -> Option<&'a Yaml> {
    v.as_mapping()
        .and_then(|m| m.get(Yaml::String(key.to_string())))
}

fn to_json(v: &Yaml) -> Result<Json, String> {
    serde_yaml::from_value(v.clone()).map_err(|e| format!("bad YAML value: {e}"))
}

fn props(v: Option<&Yaml>) -> Result<Vec<(String, String)>, String> {
    match v {
        None => Ok(Vec::new()),
        Some(v) => {
            serde_yaml::from_value(v.clone()).map_err(|e| format!("bad user_properties: {e}"))
        }
    }
}

fn message(v: &Yaml) -> Result<Message, String> {
    let topic = field(v, "topic")
        .and_then(Yaml::as_str)
        .ok_or("message needs a topic")?
        .to_string();
    let payload = to_json(field(v, "payload").ok_or("message needs a payload")?)?;
    let content_type = field(v, "content_type")
        .and_then(Yaml::as_str)
        .map(str::to_string);
    Ok(Message {
        topic,
        payload: payload.into(),
        user_properties: props(field(v, "user_properties"))?,
        content_type,
    })
}

/// JSON equality where floats compare with a relative tolerance and ints
/// and floats are distinct types.
fn approx_eq(a: &Json, b: &Json) -> bool {
    match (a, b) {
        (Json::Number(x), Json::Number(y)) => {
            if x.is_f64() != y.is_f64() {
                return false;
            }
            if !x.is_f64() {
                return x == y;
            }
            let (x, y) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0)
        }
        (Json::Array(x), Json::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| approx_eq(p, q))
        }
        (Json::Object(x), Json::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| approx_eq(v, w)))
        }
        _ => a == b,
    }
}

fn check_step(t: &mut Transform, ds: &Datasets, step: &Yaml, index: usize) -> Result<(), String> {
    let input = message(field(step, "input").ok_or("missing input")?)?;
    let at = format!("step {index}");
    let got = t.apply(input.clone(), ds);
    if let Some(sub) = field(step, "expected_error") {
        let sub = sub.as_str().ok_or("expected_error must be a string")?;
        return match got {
            Err(e) if e.to_string().contains(sub) => Ok(()),
            Err(e) => Err(format!("{at}: error {e:?} does not contain {sub:?}")),
            Ok(o) => Err(format!("{at}: expected error {sub:?}, got {o:?}")),
        };
    }
    if field(step, "expected_filtered").and_then(Yaml::as_bool) == Some(true) {
        return match got {
            Ok(Outcome::Filtered) => Ok(()),
            other => Err(format!("{at}: expected Filtered, got {other:?}")),
        };
    }
    let exp = field(step, "expected").ok_or("missing expected*")?;
    let out = match got {
        Ok(Outcome::Emit(m)) => m,
        other => return Err(format!("{at}: expected a message, got {other:?}")),
    };
    let exp_msg = message(exp)?;
    if out.topic != exp_msg.topic {
        return Err(format!(
            "{at}: topic {:?} != expected {:?}",
            out.topic, exp_msg.topic
        ));
    }
    let (got, expected) = (Json::from(out.payload), Json::from(exp_msg.payload));
    if !approx_eq(&got, &expected) {
        return Err(format!(
            "{at}: payload\n  got      {}\n  expected {}",
            got, expected
        ));
    }
    let exp_props = if field(exp, "user_properties").is_some() {
        exp_msg.user_properties
    } else {
        input.user_properties
    };
    if out.user_properties != exp_props {
        return Err(format!(
            "{at}: user_properties {:?} != expected {:?}",
            out.user_properties, exp_props
        ));
    }
    let exp_ct = if field(exp, "content_type").is_some() {
        exp_msg.content_type
    } else {
        input.content_type
    };
    if out.content_type != exp_ct {
        return Err(format!(
            "{at}: content_type {:?} != expected {:?}",
            out.content_type, exp_ct
        ));
    }
    Ok(())
}

fn run_case(case: &Yaml) -> Result<(), String> {
    let settings_yaml = field(case, "settings").ok_or("missing settings")?;
    let settings: Result<TransformSettings, _> = serde_yaml::from_value(settings_yaml.clone());
    if let Some(sub) = field(case, "expected_settings_error") {
        let sub = sub
            .as_str()
            .ok_or("expected_settings_error must be a string")?;
        return match settings {
            Err(e) if e.to_string().contains(sub) => Ok(()),
            Err(e) => Err(format!("settings error {e} does not contain {sub:?}")),
            Ok(_) => Err("settings were accepted".into()),
        };
    }
    let settings = settings.map_err(|e| format!("settings: {e}"))?;
    let compiled = Transform::compile(&settings);
    if let Some(exp) = field(case, "expected_compile_error") {
        let exp = exp
            .as_str()
            .ok_or("expected_compile_error must be a string")?;
        return match compiled {
            Err(e) if e.to_string() == exp => Ok(()),
            Err(e) => Err(format!("compile error\n  got      {e}\n  expected {exp}")),
            Ok(_) => Err(format!("compiled, expected error {exp:?}")),
        };
    }
    let mut t = compiled.map_err(|e| format!("compile error: {e}"))?;
    let mut ds = Datasets::new();
    if let Some(m) = field(case, "datasets").and_then(Yaml::as_mapping) {
        for (k, v) in m {
            let key = k.as_str().ok_or("dataset key must be a string")?;
            let records: Vec<Json> =
                serde_yaml::from_value(v.clone()).map_err(|e| format!("dataset {key}: {e}"))?;
            ds.set(key, records);
        }
    }
    if let Some(m) = field(case, "datasets_jsonl").and_then(Yaml::as_mapping) {
        for (k, v) in m {
            let key = k.as_str().ok_or("dataset key must be a string")?;
            let text = v.as_str().ok_or("datasets_jsonl values are strings")?;
            ds.set_json_lines(key, text)
                .map_err(|e| format!("dataset {key}: {e}"))?;
        }
    }
    if let Some(steps) = field(case, "steps").and_then(Yaml::as_sequence) {
        for (i, s) in steps.iter().enumerate() {
            check_step(&mut t, &ds, s, i)?;
        }
        Ok(())
    } else {
        check_step(&mut t, &ds, case, 0)
    }
}

#[test]
fn conformance() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/conformance.yaml");
    let text = std::fs::read_to_string(path).expect("read conformance.yaml");
    let cases: Vec<Yaml> = serde_yaml::from_str(&text).expect("parse conformance.yaml");
    let mut names = std::collections::HashSet::new();
    let mut failures = Vec::new();
    for case in &cases {
        let name = field(case, "name")
            .and_then(Yaml::as_str)
            .unwrap_or("<unnamed>")
            .to_string();
        assert!(names.insert(name.clone()), "duplicate case name {name}");
        if let Err(e) = run_case(case) {
            failures.push(format!("FAIL {name}: {e}"));
        }
    }
    for f in &failures {
        eprintln!("{f}");
    }
    eprintln!(
        "conformance: {} passed, {} failed",
        cases.len() - failures.len(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} conformance case(s) failed",
        failures.len()
    );
    assert!(
        cases.len() >= 80,
        "expected the full suite, found {} cases",
        cases.len()
    );
}
