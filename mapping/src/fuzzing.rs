//! Entry points shared by the fuzz targets (`mapping/fuzz`) and the test that
//! replays their corpus in every `cargo test`: arbitrary bytes must never make
//! the mapping language panic, only return errors.

use serde_json::{json, Value as Json};

use super::{Datasets, Message, Transform, TransformSettings};

fn sample_message() -> Message {
    let mut message = Message::new(
        "factory/line1/temp",
        json!({"a": 1, "b": 2.5, "s": "text", "t": {"Value": 21.5, "Unit": "C"}, "l": [1, 2, 3]}),
    );
    message.user_properties.push(("k".into(), "v".into()));
    message
}

fn sample_datasets() -> Datasets {
    let mut datasets = Datasets::new();
    datasets.set("d", vec![json!({"a": 1, "site": "x"}), json!({"a": 2})]);
    datasets
}

/// Compiles `data` (as UTF-8 text) as the expression of a map, a filter and
/// a dataset rule, and applies what compiles to a sample message.
pub fn expression(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let settings = json!({
        "datasets": [{"key": "d", "inputs": ["$source.a", "$context.a"], "expression": "$1 == $2"}],
        "filter": [{"inputs": ["a", "b", "s"], "expression": text}],
        "map": [
            {"inputs": ["*"], "output": "*"},
            {"inputs": ["a", "b", "s", "t.Value ? $last", "$context(d).site"], "output": "out", "expression": text}
        ]
    });
    run(settings, sample_message());
}

/// Splits `data` at the first NUL into settings (YAML) and a payload (JSON),
/// and runs the whole transformation twice (so `? $last` state is used).
pub fn message(data: &[u8]) {
    let (settings, payload) = match data.iter().position(|b| *b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &b"{}"[..]),
    };
    let Ok(settings) = serde_yaml::from_slice::<Json>(settings) else {
        return;
    };
    let Ok(payload) = crate::Json::from_slice(payload) else {
        return;
    };
    let mut message = sample_message();
    message.payload = payload;
    run(settings, message);
}

fn run(settings: Json, message: Message) {
    let Ok(settings) = serde_json::from_value::<TransformSettings>(settings) else {
        return;
    };
    let Ok(mut transform) = Transform::compile(&settings) else {
        return;
    };
    let datasets = sample_datasets();
    let _ = transform.apply(message.clone(), &datasets);
    let _ = transform.apply(message, &datasets);
}
