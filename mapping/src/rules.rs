//! Compiled dataset, filter and map rules, and how they read and write a
//! message (§2.1–§2.3, §2.7–§2.9).

use std::collections::HashSet;

use serde_json::{Map, Value as Json};

use super::dataset::split_key_alias;
use super::error::{CompileError, LocalError};
use super::expr::{eval, Expr};
use super::last_value::LastValues;
use super::parser::parse;
use super::path::{parse_input, parse_output, OutputPath, Pattern, Root, Target};
use super::settings::{DatasetSettings, FilterSettings, MapSettings};
use super::transform::Message;
use super::value::{json_to_text, Value};

/// The JSON tree a path reads from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Src {
    /// The message payload.
    Payload,
    /// The matched record of dataset `n`.
    Context(usize),
    /// The candidate record of the dataset rule being evaluated.
    Record,
}

/// A resolved, checked input location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    Tree(Src, Pattern),
    Topic,
    UserProperty(String),
    ContentType,
}

/// One compiled input.
#[derive(Debug, Clone)]
pub struct Input {
    pub access: Access,
    /// Slot in the last-value store when the input has `? $last`.
    pub last: Option<usize>,
}

impl Input {
    fn wildcard(&self) -> bool {
        matches!(&self.access, Access::Tree(_, p) if p.wildcard)
    }
}

/// Where a rule is allowed to read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Map,
    Filter,
    Dataset,
}

/// What the compiler needs to know about the transform as a whole.
pub struct CompileCtx<'a> {
    /// Dataset names (aliases) in `datasets[]` order.
    pub dataset_names: &'a [String],
    /// Last-value slots.
    pub last: &'a mut LastValues<Access>,
}

fn first_col(text: &str) -> usize {
    text.chars().take_while(|c| c.is_whitespace()).count() + 1
}

fn compile_input(
    text: &str,
    loc: &str,
    scope: Scope,
    ctx: &mut CompileCtx<'_>,
) -> Result<Input, CompileError> {
    let parsed = parse_input(text).map_err(|e| e.into_compile(loc))?;
    let col = first_col(text);
    let err = |msg: String| CompileError::new(loc, msg).at(col);
    let access = match parsed.target {
        Target::Tree(Root::Payload, p) => {
            if scope == Scope::Dataset {
                return Err(err(
                    "dataset inputs must start with '$source.' (message) or '$context.' (record)"
                        .into(),
                ));
            }
            Access::Tree(Src::Payload, p)
        }
        Target::Tree(Root::Context(name), p) => {
            if scope == Scope::Dataset {
                return Err(err(
                    "'$context(<dataset>)' cannot be used in dataset inputs; use '$context.<field>' for the record".into(),
                ));
            }
            match ctx.dataset_names.iter().position(|n| *n == name) {
                Some(i) => Access::Tree(Src::Context(i), p),
                None => {
                    let known = if ctx.dataset_names.is_empty() {
                        "no datasets are defined".to_string()
                    } else {
                        format!("known datasets: {}", ctx.dataset_names.join(", "))
                    };
                    let mut e = err(format!("unknown dataset '{name}'"));
                    e.hint = Some(known);
                    return Err(e);
                }
            }
        }
        Target::Tree(Root::Source, p) => {
            if scope != Scope::Dataset {
                return Err(err(
                    "'$source.' is only allowed in dataset inputs; use the plain path".into(),
                ));
            }
            Access::Tree(Src::Payload, p)
        }
        Target::Tree(Root::Record, p) => {
            if scope != Scope::Dataset {
                return Err(err(
                    "'$context.<field>' is only allowed in dataset inputs; use '$context(<dataset>).<field>'".into(),
                ));
            }
            Access::Tree(Src::Record, p)
        }
        Target::Topic => Access::Topic,
        Target::UserProperty(k) => Access::UserProperty(k),
        Target::ContentType => Access::ContentType,
    };
    let input = Input { access, last: None };
    if input.wildcard() && scope != Scope::Map {
        let what = if scope == Scope::Filter {
            "filter"
        } else {
            "dataset"
        };
        return Err(err(format!("wildcards are not allowed in {what} inputs")));
    }
    if parsed.last {
        if scope == Scope::Dataset {
            return Err(err(
                "'? $last' is only allowed in map and filter inputs".into()
            ));
        }
        let slot = ctx.last.slot(&input.access);
        return Ok(Input {
            last: Some(slot),
            ..input
        });
    }
    Ok(input)
}

fn compile_inputs(
    inputs: &[String],
    loc: &str,
    scope: Scope,
    ctx: &mut CompileCtx<'_>,
) -> Result<Vec<Input>, CompileError> {
    inputs
        .iter()
        .enumerate()
        .map(|(k, t)| compile_input(t, &format!("{loc}.inputs[{k}]"), scope, ctx))
        .collect()
}

fn compile_expr(src: &str, n: usize, loc: &str) -> Result<Expr, CompileError> {
    parse(src, n).map_err(|e: LocalError| e.into_compile(format!("{loc}.expression")))
}

/// A compiled `datasets[i]` entry.
#[derive(Debug, Clone)]
pub struct DatasetRule {
    pub index: usize,
    /// State-store key.
    pub key: String,
    pub inputs: Vec<Input>,
    pub expr: Expr,
}

/// Dataset names (aliases) of the settings, checked for duplicates.
pub fn dataset_names(settings: &[DatasetSettings]) -> Result<Vec<String>, CompileError> {
    let mut names: Vec<String> = Vec::new();
    for (i, d) in settings.iter().enumerate() {
        let (key, name) = split_key_alias(&d.key);
        if key.is_empty() {
            return Err(CompileError::new(
                format!("datasets[{i}].key"),
                "missing dataset key",
            ));
        }
        if let Some(j) = names.iter().position(|n| *n == name) {
            return Err(CompileError::new(
                format!("datasets[{i}].key"),
                format!("dataset name '{name}' is already used by datasets[{j}]"),
            ));
        }
        names.push(name);
    }
    Ok(names)
}

impl DatasetRule {
    pub fn compile(
        index: usize,
        s: &DatasetSettings,
        ctx: &mut CompileCtx<'_>,
    ) -> Result<DatasetRule, CompileError> {
        let loc = format!("datasets[{index}]");
        let (key, _) = split_key_alias(&s.key);
        let inputs = compile_inputs(&s.inputs, &loc, Scope::Dataset, ctx)?;
        let Some(src) = &s.expression else {
            return Err(CompileError::new(
                format!("{loc}.expression"),
                "missing match condition (for example '$1 == $2')",
            ));
        };
        let expr = compile_expr(src, inputs.len(), &loc)?;
        Ok(DatasetRule {
            index,
            key,
            inputs,
            expr,
        })
    }

    /// The first record matching the condition.
    pub fn find<'d>(
        &self,
        msg: &Message,
        records: &'d [Json],
        last: &LastValues<Access>,
    ) -> Result<Option<&'d Json>, String> {
        for rec in records {
            let env = Env {
                msg,
                contexts: &[],
                record: Some(rec),
                last,
            };
            let vals = read_values(&env, &self.inputs, &[]);
            match eval(&self.expr, &vals)? {
                Value::Bool(true) => return Ok(Some(rec)),
                Value::Bool(false) | Value::Empty => {}
                other => {
                    return Err(format!(
                        "match condition must be a boolean, got {}",
                        other.type_name()
                    ))
                }
            }
        }
        Ok(None)
    }
}

/// A compiled `filter[i]` entry.
#[derive(Debug, Clone)]
pub struct FilterRule {
    pub index: usize,
    pub inputs: Vec<Input>,
    pub expr: Expr,
}

impl FilterRule {
    pub fn compile(
        index: usize,
        s: &FilterSettings,
        ctx: &mut CompileCtx<'_>,
    ) -> Result<FilterRule, CompileError> {
        let loc = format!("filter[{index}]");
        let inputs = compile_inputs(&s.inputs, &loc, Scope::Filter, ctx)?;
        let Some(src) = &s.expression else {
            return Err(CompileError::new(
                format!("{loc}.expression"),
                "missing condition",
            ));
        };
        let expr = compile_expr(src, inputs.len(), &loc)?;
        Ok(FilterRule {
            index,
            inputs,
            expr,
        })
    }

    /// Whether this rule drops the message (`true` drops; Empty keeps).
    pub fn drops(&self, env: &Env<'_>) -> Result<bool, String> {
        let vals = read_values(env, &self.inputs, &[]);
        match eval(&self.expr, &vals)? {
            Value::Bool(b) => Ok(b),
            Value::Empty => Ok(false),
            other => Err(format!(
                "filter condition must be a boolean, got {}",
                other.type_name()
            )),
        }
    }
}

/// A compiled `map[i]` entry.
#[derive(Debug, Clone)]
pub struct MapRule {
    pub index: usize,
    pub inputs: Vec<Input>,
    pub expr: Option<Expr>,
    pub output: OutputPath,
}

impl MapRule {
    pub fn compile(
        index: usize,
        s: &MapSettings,
        ctx: &mut CompileCtx<'_>,
    ) -> Result<MapRule, CompileError> {
        let loc = format!("map[{index}]");
        let inputs = compile_inputs(&s.inputs, &loc, Scope::Map, ctx)?;
        let first_wild = inputs.first().is_some_and(Input::wildcard);
        for (k, inp) in inputs.iter().enumerate().skip(1) {
            if inp.wildcard() && !first_wild {
                return Err(CompileError::new(
                    format!("{loc}.inputs[{k}]"),
                    "a wildcard here needs a wildcard in inputs[0] (whose capture is substituted)",
                )
                .at(first_col(&s.inputs[k])));
            }
        }
        let Some(out_text) = &s.output else {
            return Err(CompileError::new(
                format!("{loc}.output"),
                "missing (use '' to remove fields)",
            ));
        };
        let output = parse_output(out_text).map_err(|e| e.into_compile(format!("{loc}.output")))?;
        let out_col = first_col(out_text);
        match &output {
            OutputPath::Payload(p) if p.wildcard && !first_wild => {
                return Err(CompileError::new(
                    format!("{loc}.output"),
                    "'*' in the output needs a wildcard in inputs[0]",
                )
                .at(out_col))
            }
            OutputPath::Payload(p) if !p.wildcard && first_wild => {
                return Err(CompileError::new(
                    format!("{loc}.output"),
                    "expected a '*' in the output because inputs[0] has a wildcard",
                )
                .at(out_col))
            }
            OutputPath::Topic | OutputPath::UserProperty(_) | OutputPath::ContentType
                if first_wild =>
            {
                return Err(CompileError::new(
                    format!("{loc}.output"),
                    "a wildcard input can only be written to a payload path with '*' (or '')",
                )
                .at(out_col))
            }
            _ => {}
        }
        let expr =
            match &s.expression {
                Some(src) => Some(compile_expr(src, inputs.len(), &loc)?),
                None if inputs.is_empty() => return Err(CompileError::new(
                    format!("{loc}.expression"),
                    "missing: a rule without inputs needs an expression (for example a constant)",
                )),
                None if inputs.len() > 1 && output != OutputPath::Discard => {
                    return Err(CompileError::new(
                        format!("{loc}.expression"),
                        "missing: an expression is required when a rule has several inputs",
                    ))
                }
                None => None,
            };
        Ok(MapRule {
            index,
            inputs,
            expr,
            output,
        })
    }

    /// The resolutions of this rule on a message: one per wildcard capture
    /// (where all wildcard inputs exist), or exactly one without wildcard.
    pub fn resolve(&self, env: &Env<'_>, rule_pos: usize, out: &mut Vec<Resolution>) {
        let Some(first) = self.inputs.first() else {
            out.push(Resolution {
                rule: rule_pos,
                capture: Vec::new(),
                rank: 0,
                key: None,
                alive: true,
            });
            return;
        };
        match &first.access {
            Access::Tree(src, pat) if pat.wildcard => {
                let Some(root) = env.root(src) else { return };
                for (capture, _) in enumerate(root, pat) {
                    let all_exist = self.inputs[1..]
                        .iter()
                        .filter(|i| i.wildcard())
                        .all(|i| env.read(&i.access, &capture).is_some());
                    if all_exist {
                        out.push(Resolution {
                            rule: rule_pos,
                            rank: capture.len(),
                            key: Some(Key::of(&first.access, &capture)),
                            capture,
                            alive: true,
                        });
                    }
                }
            }
            access => out.push(Resolution {
                rule: rule_pos,
                capture: Vec::new(),
                rank: 0,
                key: Some(Key::of(access, &[])),
                alive: true,
            }),
        }
    }

    /// Computes the value for one resolution (`None`: Empty / missing).
    pub fn value(&self, env: &Env<'_>, capture: &[String]) -> Result<Option<Json>, String> {
        match &self.expr {
            None => Ok(self.inputs.first().and_then(|i| env.read_input(i, capture))),
            Some(e) => {
                let vals = read_values(env, &self.inputs, capture);
                eval(e, &vals)?.to_json()
            }
        }
    }
}

/// What a resolution read, for the specialization rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    root: KeyRoot,
    segments: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum KeyRoot {
    Tree(Src),
    Topic,
    UserProperty(String),
    ContentType,
}

impl Key {
    fn of(access: &Access, capture: &[String]) -> Key {
        match access {
            Access::Tree(src, pat) => Key {
                root: KeyRoot::Tree(src.clone()),
                segments: pat.substitute(capture),
            },
            Access::Topic => Key {
                root: KeyRoot::Topic,
                segments: Vec::new(),
            },
            Access::UserProperty(k) => Key {
                root: KeyRoot::UserProperty(k.clone()),
                segments: Vec::new(),
            },
            Access::ContentType => Key {
                root: KeyRoot::ContentType,
                segments: Vec::new(),
            },
        }
    }

    /// Whether `self` is the field `other` or inside it.
    pub fn within(&self, other: &Key) -> bool {
        self.root == other.root && self.segments.starts_with(&other.segments)
    }
}

/// One application of a map rule to a message.
#[derive(Debug, Clone)]
pub struct Resolution {
    /// Position of the rule in `map[]`.
    pub rule: usize,
    /// Segments captured by the wildcard.
    pub capture: Vec<String>,
    /// Number of captured segments (0 without wildcard).
    pub rank: usize,
    /// The field read by inputs[0] (None for `inputs: []`).
    pub key: Option<Key>,
    /// False once a later, lower-rank rule specialized it.
    pub alive: bool,
}

/// Applies the specialization rule for the resolutions of one rule
/// (`new`) against everything resolved before it (`earlier`).
pub fn specialize(earlier: &mut [Resolution], new: &[Resolution]) {
    let max_rank = earlier
        .iter()
        .filter(|e| e.alive)
        .map(|e| e.rank)
        .max()
        .unwrap_or(0);
    for n in new {
        if n.rank >= max_rank {
            continue;
        }
        let Some(nk) = &n.key else { continue };
        for e in earlier.iter_mut() {
            if !e.alive || e.rank <= n.rank {
                continue;
            }
            if e.key.as_ref().is_some_and(|ek| ek.within(nk)) {
                e.alive = false;
            }
        }
    }
}

/// What rules can read while evaluating one message.
pub struct Env<'a> {
    pub msg: &'a Message,
    /// Matched record per dataset (by position), `None` when nothing matched.
    pub contexts: &'a [Option<&'a Json>],
    /// Candidate record (dataset match rules only).
    pub record: Option<&'a Json>,
    pub last: &'a LastValues<Access>,
}

/// Reads a location (wildcard replaced by `capture`); `None` when absent.
pub fn read_raw(
    msg: &Message,
    contexts: &[Option<&Json>],
    record: Option<&Json>,
    access: &Access,
    capture: &[String],
) -> Option<Json> {
    match access {
        Access::Tree(src, pat) => {
            let root = tree_root(msg, contexts, record, src)?;
            get_path(root, &pat.substitute(capture)).cloned()
        }
        Access::Topic => Some(Json::String(msg.topic.clone())),
        Access::UserProperty(k) => msg
            .user_properties
            .iter()
            .find(|(name, _)| name == k)
            .map(|(_, v)| Json::String(v.clone())),
        Access::ContentType => msg.content_type.clone().map(Json::String),
    }
}

fn tree_root<'j>(
    msg: &'j Message,
    contexts: &[Option<&'j Json>],
    record: Option<&'j Json>,
    src: &Src,
) -> Option<&'j Json> {
    match src {
        Src::Payload => Some(&msg.payload),
        Src::Context(i) => contexts.get(*i).copied().flatten(),
        Src::Record => record,
    }
}

impl<'a> Env<'a> {
    fn root(&self, src: &Src) -> Option<&'a Json> {
        tree_root(self.msg, self.contexts, self.record, src)
    }

    /// Reads a location (wildcard replaced by `capture`); `None` when absent.
    pub fn read(&self, access: &Access, capture: &[String]) -> Option<Json> {
        read_raw(self.msg, self.contexts, self.record, access, capture)
    }

    /// Reads an input, falling back to its last known value.
    pub fn read_input(&self, input: &Input, capture: &[String]) -> Option<Json> {
        let v = self.read(&input.access, capture);
        match (v, input.last) {
            (None | Some(Json::Null), Some(slot)) => self.last.get(slot).cloned(),
            (v, _) => v,
        }
    }
}

fn read_values(env: &Env<'_>, inputs: &[Input], capture: &[String]) -> Vec<Value> {
    inputs
        .iter()
        .map(|i| {
            env.read_input(i, capture)
                .as_ref()
                .map_or(Value::Empty, Value::from_json)
        })
        .collect()
}

/// Navigates objects by key.
pub fn get_path<'j>(root: &'j Json, segments: &[String]) -> Option<&'j Json> {
    segments
        .iter()
        .try_fold(root, |node, seg| node.as_object()?.get(seg))
}

/// All matches of a wildcard pattern: (captured segments, value).
///
/// `*` at the end (or alone) captures down to the leaves (any non-object
/// value, or an empty object); `*` followed by more segments captures any
/// object path (one or more segments) under which those segments exist.
pub fn enumerate<'j>(root: &'j Json, pat: &Pattern) -> Vec<(Vec<String>, &'j Json)> {
    let mut out = Vec::new();
    let Some(start) = get_path(root, &pat.prefix) else {
        return out;
    };
    let mut path = Vec::new();
    walk(start, &pat.suffix, &mut path, &mut out);
    out
}

fn walk<'j>(
    node: &'j Json,
    suffix: &[String],
    path: &mut Vec<String>,
    out: &mut Vec<(Vec<String>, &'j Json)>,
) {
    let Some(obj) = node.as_object() else { return };
    for (k, v) in obj {
        path.push(k.clone());
        if suffix.is_empty() {
            match v.as_object() {
                Some(o) if !o.is_empty() => walk(v, suffix, path, out),
                _ => out.push((path.clone(), v)),
            }
        } else {
            if let Some(found) = get_path(v, suffix) {
                out.push((path.clone(), found));
            }
            walk(v, suffix, path, out);
        }
        path.pop();
    }
}

fn show_path(segments: &[String]) -> String {
    segments
        .iter()
        .map(|s| {
            if s.contains('.') {
                format!("\"{s}\"")
            } else {
                s.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// Writes into a JSON object tree, creating intermediate objects.
pub fn set_path(root: &mut Json, segments: &[String], value: Json) -> Result<(), String> {
    let Some((last, parents)) = segments.split_last() else {
        return Err("cannot write an empty path".to_string());
    };
    let mut node = root;
    for (i, seg) in parents.iter().enumerate() {
        let Some(obj) = node.as_object_mut() else {
            return Err(format!(
                "cannot write '{}': '{}' is not an object",
                show_path(segments),
                show_path(&segments[..i])
            ));
        };
        node = obj
            .entry(seg.clone())
            .or_insert_with(|| Json::Object(Map::new()));
    }
    match node.as_object_mut() {
        Some(obj) => {
            obj.insert(last.clone(), value);
            Ok(())
        }
        None => Err(format!(
            "cannot write '{}': '{}' is not an object",
            show_path(segments),
            show_path(parents)
        )),
    }
}

/// Writes one map result into the output message.
pub fn write_output(
    out: &mut Message,
    written_props: &mut HashSet<String>,
    output: &OutputPath,
    capture: &[String],
    value: Option<Json>,
) -> Result<(), String> {
    let value = match value {
        Some(Json::Null) if !matches!(output, OutputPath::Payload(_)) => None,
        v => v,
    };
    match output {
        OutputPath::Discard => Ok(()),
        OutputPath::Payload(pat) => match value {
            None => Ok(()),
            Some(v) => set_path(&mut out.payload, &pat.substitute(capture), v),
        },
        OutputPath::Topic => {
            let Some(v) = value else {
                return Err("$metadata.topic cannot be removed".to_string());
            };
            let t = json_to_text(&v);
            if t.is_empty() {
                return Err("$metadata.topic cannot be empty".to_string());
            }
            if t.contains(['+', '#', '\0']) {
                return Err(format!("topic '{t}' contains a wildcard or NUL character"));
            }
            out.topic = t;
            Ok(())
        }
        OutputPath::UserProperty(k) => {
            match value {
                None => {
                    out.user_properties.retain(|(name, _)| name != k);
                    written_props.remove(k);
                }
                Some(v) => {
                    if written_props.insert(k.clone()) {
                        out.user_properties.retain(|(name, _)| name != k);
                    }
                    out.user_properties.push((k.clone(), json_to_text(&v)));
                }
            }
            Ok(())
        }
        OutputPath::ContentType => {
            out.content_type = value.map(|v| json_to_text(&v));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pat(prefix: &[&str], wildcard: bool, suffix: &[&str]) -> Pattern {
        Pattern {
            prefix: prefix.iter().map(|s| s.to_string()).collect(),
            wildcard,
            suffix: suffix.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn caps(root: &Json, p: &Pattern) -> Vec<(String, Json)> {
        enumerate(root, p)
            .into_iter()
            .map(|(c, v)| (c.join("|"), v.clone()))
            .collect()
    }

    #[test]
    fn enumerate_leaves_and_suffix() {
        let doc = json!({"a": {"b": 1, "c": {"d": 2}, "e": {}}, "f": [1]});
        assert_eq!(
            caps(&doc, &pat(&[], true, &[])),
            vec![
                ("a|b".into(), json!(1)),
                ("a|c|d".into(), json!(2)),
                ("a|e".into(), json!({})),
                ("f".into(), json!([1]))
            ]
        );
        assert_eq!(
            caps(&doc, &pat(&["a"], true, &[])),
            vec![
                ("b".into(), json!(1)),
                ("c|d".into(), json!(2)),
                ("e".into(), json!({}))
            ]
        );
        assert_eq!(
            caps(&doc, &pat(&[], true, &["d"])),
            vec![("a|c".into(), json!(2))]
        );
        assert!(caps(&doc, &pat(&["zz"], true, &[])).is_empty());
    }

    #[test]
    fn set_path_creates_and_rejects() {
        let mut v = json!({});
        set_path(&mut v, &["a".into(), "b".into()], json!(1)).unwrap();
        assert_eq!(v, json!({"a": {"b": 1}}));
        let e = set_path(&mut v, &["a".into(), "b".into(), "c".into()], json!(1)).unwrap_err();
        assert_eq!(e, "cannot write 'a.b.c': 'a.b' is not an object");
    }
}
