//! Compiled dataset, filter and map rules, and how they read and write a
//! message (§2.1–§2.3, §2.7–§2.9).

use super::json::Json;

use super::dataset::split_key_alias;
use super::dataset_match::Matcher;
use super::error::{CompileError, LocalError};
use super::expr::{eval, Expr};
use super::last_value::LastValues;
use super::parser::parse;
use super::path::{parse_input, parse_output, OutputPath, Pattern, Root, Target};
use super::read::{enumerate, Env, Found};
use super::settings::{DatasetSettings, FilterSettings, MapSettings};
use super::value::Value;

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
    pub fn wildcard(&self) -> bool {
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
    pub matcher: Matcher,
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
            matcher: Matcher::new(inputs, expr),
        })
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
    pub fn drops(&self, env: &Env<'_>, vals: &mut Vec<Value>) -> Result<bool, String> {
        env.read_values(&self.inputs, &[], vals);
        match eval(&self.expr, vals)?.as_ref() {
            Value::Bool(b) => Ok(*b),
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
    pub fn value(
        &self,
        env: &Env<'_>,
        capture: &[String],
        vals: &mut Vec<Value>,
    ) -> Result<Option<Json>, String> {
        match &self.expr {
            None => Ok(self
                .inputs
                .first()
                .and_then(|i| env.read_input(i, capture))
                .map(Found::to_json)),
            Some(e) => {
                env.read_values(&self.inputs, capture, vals);
                eval(e, vals)?.into_owned().into_json()
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
