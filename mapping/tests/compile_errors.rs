//! Compile errors: exact messages (rule, field, column, what was expected).

use backhaul_mapping::{
    CompileError, MapSettings, SerializationFormat, Transform, TransformSettings,
};

fn compile_yaml(yaml: &str) -> Result<Transform, CompileError> {
    let s: TransformSettings = serde_yaml::from_str(yaml).expect("settings parse");
    Transform::compile(&s)
}

fn err(yaml: &str) -> String {
    match compile_yaml(yaml) {
        Ok(_) => panic!("compiled: {yaml}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn brief_examples() {
    let e = err(r#"
map:
  - {inputs: [a], output: a}
  - {inputs: [b], output: b}
  - {inputs: [c], output: c}
  - {inputs: [d], output: d, expression: 'ctoF($1)'}
"#);
    assert_eq!(
        e,
        "map[3].expression: unknown function 'ctoF' at column 1; did you mean 'cToF'?"
    );
    let e = err(r#"
filter:
  - inputs: [a, 'a.b."c']
    expression: $1 > $2
"#);
    assert_eq!(
        e,
        "filter[0].inputs[1]: unterminated quoted segment at column 5"
    );
}

#[test]
fn error_structure() {
    let e = compile_yaml("map: [{inputs: [x], output: y, expression: 'sqroot($1)'}]")
        .expect_err("error");
    assert_eq!(e.location, "map[0].expression");
    assert_eq!(e.message, "unknown function 'sqroot'");
    assert_eq!(e.column, Some(1));
    assert_eq!(e.hint.as_deref(), Some("did you mean 'sqrt'?"));
}

#[test]
fn path_errors() {
    let cases = [
        (
            "map: [{inputs: ['a..b'], output: c}]",
            "map[0].inputs[0]: empty path segment at column 3",
        ),
        (
            "map: [{inputs: ['\"a\"b'], output: c}]",
            "map[0].inputs[0]: expected '.' or end of path after quoted segment at column 4",
        ),
        (
            "map: [{inputs: [a], output: 'x.'}]",
            "map[0].output: empty path segment at column 3",
        ),
        (
            "map: [{inputs: ['a*'], output: c}]",
            "map[0].inputs[0]: '*' must be a whole segment (quote the segment to use a literal '*') at column 2",
        ),
        (
            "map: [{inputs: ['*'], output: c}]",
            "map[0].output: expected a '*' in the output because inputs[0] has a wildcard at column 1",
        ),
        (
            "map: [{inputs: ['*'], output: '$metadata.topic'}]",
            "map[0].output: a wildcard input can only be written to a payload path with '*' (or '') at column 1",
        ),
        (
            "map: [{inputs: [a, '*.b'], output: c, expression: '$1'}]",
            "map[0].inputs[1]: a wildcard here needs a wildcard in inputs[0] (whose capture is substituted) at column 1",
        ),
        (
            "map: [{inputs: ['* ? $last'], output: '*'}]",
            "map[0].inputs[0]: '? $last' cannot be used with a wildcard path at column 1",
        ),
        (
            "map: [{inputs: ['$metadata.user_property'], output: c}]",
            "map[0].inputs[0]: expected a key after $metadata.user_property at column 11",
        ),
        (
            "map: [{inputs: ['$metadata.system_property.message_expiry'], output: c}]",
            "map[0].inputs[0]: only the system property 'content_type' is supported at column 27",
        ),
        (
            "map: [{inputs: ['$payload.x'], output: c}]",
            "map[0].inputs[0]: unknown reference '$payload'; expected $metadata, $context(<dataset>), $source or $context (quote the segment for a literal '$') at column 1",
        ),
        (
            "map: [{inputs: ['$source.x'], output: c}]",
            "map[0].inputs[0]: '$source.' is only allowed in dataset inputs; use the plain path at column 1",
        ),
        (
            "map: [{inputs: ['$context.x'], output: c}]",
            "map[0].inputs[0]: '$context.<field>' is only allowed in dataset inputs; use '$context(<dataset>).<field>' at column 1",
        ),
        (
            "map: [{inputs: ['$context(ds).x'], output: c}]",
            "map[0].inputs[0]: unknown dataset 'ds' at column 1; no datasets are defined",
        ),
        (
            "map: [{inputs: [a], output: '$context(ds).x'}]",
            "map[0].output: output must be a payload field or a $metadata field at column 1",
        ),
        (
            "datasets: [{key: ds, inputs: [id, '$context.id'], expression: '$1 == $2'}]",
            "datasets[0].inputs[0]: dataset inputs must start with '$source.' (message) or '$context.' (record) at column 1",
        ),
        (
            "datasets: [{key: 'a as x', inputs: ['$source.id'], expression: 'true'}, {key: 'b as x', inputs: [], expression: 'true'}]",
            "datasets[1].key: dataset name 'x' is already used by datasets[0]",
        ),
        (
            "datasets: [{key: ds, inputs: ['$source.id']}]",
            "datasets[0].expression: missing match condition (for example '$1 == $2')",
        ),
        (
            "filter: [{inputs: [a]}]",
            "filter[0].expression: missing condition",
        ),
        (
            "map: [{inputs: [], output: c}]",
            "map[0].expression: missing: a rule without inputs needs an expression (for example a constant)",
        ),
    ];
    for (yaml, expected) in cases {
        assert_eq!(err(yaml), expected, "{yaml}");
    }
}

#[test]
fn expression_errors() {
    let cases = [
        ("$1 +", "expected an expression, found end of expression at column 5"),
        ("$1 = 2", "expected '==' (single '=' is not an operator) at column 4"),
        ("1 2", "unexpected '2' (expected an operator or end of expression) at column 3"),
        ("\"abc", "unterminated string at column 1"),
        ("$0", "expected an input reference $1, $2, ... (paths belong in 'inputs') at column 1"),
        ("$2", "$2 out of range: the rule has 1 input at column 1"),
        ("cToF", "expected '(' after 'cToF', found end of expression at column 5"),
        ("abs(1, 2)", "function 'abs' takes 1 argument, got 2 at column 1"),
        ("min()", "function 'min' takes at least 1 argument, got 0 at column 1"),
        ("to_lowercase($1)", "unknown function 'to_lowercase' at column 1; did you mean 'str::to_lowercase'?"),
        ("Round($1)", "unknown function 'Round' at column 1; did you mean 'round'?"),
        ("$1 ?? 0", "'?' is not an operator in expressions; write '<path> ? $last' in inputs ('??' is data-flow-graph only) at column 4"),
        ("average($1)", "function 'average' is only available in data flow graphs at column 1"),
        ("   ", "empty expression at column 1"),
        ("(1, 2", "expected ',' or ')', found end of expression at column 6"),
    ];
    for (expr, expected) in cases {
        let s = TransformSettings {
            map: vec![MapSettings {
                inputs: vec!["x".into()],
                expression: Some(expr.into()),
                output: Some("y".into()),
                ..Default::default()
            }],
            ..Default::default()
        };
        let e = Transform::compile(&s).err().map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some(format!("map[0].expression: {expected}").as_str()),
            "{expr}"
        );
    }
}

#[test]
fn settings_field_names() {
    // camelCase ARM/YAML names, `conversion` alias, JSON as well as YAML.
    let json = r#"{
        "datasets": [{"key": "k as a", "description": "d", "schemaRef": "aio-sr://ns/s:1",
                      "inputs": ["$source.id", "$context.id"], "expression": "$1 == $2"}],
        "filter": [{"type": "Filter", "description": "f", "inputs": ["t"], "expression": "$1 > 1"}],
        "map": [{"type": "Compute", "description": "m", "inputs": ["t"], "conversion": "cToF($1)", "output": "f"}],
        "serializationFormat": "Delta",
        "schemaRef": "aio-sr://ns/out:1"
    }"#;
    let s: TransformSettings = serde_json::from_str(json).expect("parse");
    assert_eq!(s.map[0].expression.as_deref(), Some("cToF($1)"));
    assert_eq!(s.serialization_format, SerializationFormat::Delta);
    assert_eq!(s.datasets[0].schema_ref.as_deref(), Some("aio-sr://ns/s:1"));
    let t = Transform::compile(&s).expect("compile");
    assert_eq!(t.serialization_format(), SerializationFormat::Delta);
    assert_eq!(t.schema_ref(), Some("aio-sr://ns/out:1"));
    assert_eq!(t.dataset_keys(), vec!["k"]);
    // Round trip through serde.
    let back: TransformSettings =
        serde_json::from_str(&serde_json::to_string(&s).expect("ser")).expect("de");
    assert_eq!(back, s);
}

#[test]
fn settings_rejections() {
    let e =
        serde_yaml::from_str::<TransformSettings>("map: [{inputs: [a], output: b, expresion: x}]")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
    assert!(e.contains("unknown field `expresion`"), "{e}");
    // A fractional YAML number is not accepted as a path (2022.10 would become 2022.1).
    let e = serde_yaml::from_str::<TransformSettings>("map: [{inputs: [2022.10], output: b}]")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("quote paths"), "{e}");
    // Integers and booleans are fine as paths, numbers and booleans as expressions.
    let s: TransformSettings =
        serde_yaml::from_str("map: [{inputs: [2022], output: true, expression: 1.5}]").expect("ok");
    assert_eq!(s.map[0].inputs, vec!["2022".to_string()]);
    assert_eq!(s.map[0].output.as_deref(), Some("true"));
    assert_eq!(s.map[0].expression.as_deref(), Some("1.5"));
}

#[test]
fn transform_is_send_and_sync() {
    fn check<T: Send + Sync + 'static>() {}
    check::<Transform>();
    check::<backhaul_mapping::Datasets>();
    check::<backhaul_mapping::Message>();
}
