//! Field paths (§2.2, §2.3): dot notation, quoted segments, one `*`
//! wildcard, `$metadata.*`, `$context(<dataset>).*`, `$source.*` /
//! `$context.*` (dataset match inputs) and the `? $last` suffix.

use super::error::LocalError;

/// What a tree path is rooted at.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Root {
    /// The message payload (plain paths).
    Payload,
    /// `$context(<name>).…`: the matched record of a dataset (by alias).
    Context(String),
    /// `$source.…`: the message payload, inside a dataset match rule.
    Source,
    /// `$context.…`: the candidate record, inside a dataset match rule.
    Record,
}

/// A sequence of segments with at most one `*` (matching one or more segments).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Pattern {
    /// Segments before the wildcard (all segments when there is none).
    pub prefix: Vec<String>,
    /// Whether the path has a `*`.
    pub wildcard: bool,
    /// Segments after the wildcard.
    pub suffix: Vec<String>,
}

impl Pattern {
    /// The concrete segments once `capture` replaces the `*`.
    pub fn substitute(&self, capture: &[String]) -> Vec<String> {
        let mut v = self.prefix.clone();
        if self.wildcard {
            v.extend(capture.iter().cloned());
            v.extend(self.suffix.iter().cloned());
        }
        v
    }

    /// The concrete segments once `capture` replaces the `*`, borrowed.
    pub fn segments<'s>(&'s self, capture: &'s [String]) -> impl Iterator<Item = &'s String> {
        let (capture, suffix): (&[String], &[String]) = if self.wildcard {
            (capture, &self.suffix)
        } else {
            (&[], &[])
        };
        self.prefix.iter().chain(capture).chain(suffix)
    }

    /// Calls `f` with the concrete segments, copying them only for a wildcard.
    pub fn with_segments<R>(&self, capture: &[String], f: impl FnOnce(&[String]) -> R) -> R {
        if self.wildcard {
            f(&self.substitute(capture))
        } else {
            f(&self.prefix)
        }
    }
}

/// Something a path designates.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// A (possibly wildcard) path inside a JSON tree.
    Tree(Root, Pattern),
    /// `$metadata.topic`.
    Topic,
    /// `$metadata.user_property.<key>` (also `$metadata.header.<key>`).
    UserProperty(String),
    /// `$metadata.system_property.content_type`.
    ContentType,
}

/// A parsed input path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputPath {
    /// What is read.
    pub target: Target,
    /// `? $last`: fall back to the last known value when missing.
    pub last: bool,
}

impl InputPath {
    /// Whether this input has a `*`.
    pub fn has_wildcard(&self) -> bool {
        matches!(&self.target, Target::Tree(_, p) if p.wildcard)
    }
}

/// A parsed output path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputPath {
    /// `''`: nothing is written (removal).
    Discard,
    /// A payload field (possibly with `*`).
    Payload(Pattern),
    /// `$metadata.topic`.
    Topic,
    /// `$metadata.user_property.<key>`.
    UserProperty(String),
    /// `$metadata.system_property.content_type`.
    ContentType,
}

#[derive(Debug, Clone)]
struct RawSeg {
    text: String,
    quoted: bool,
    col: usize,
}

/// Splits `chars[start..end]` into segments. `col` values are 1-based.
fn split_segments(chars: &[char], start: usize, end: usize) -> Result<Vec<RawSeg>, LocalError> {
    let mut segs = Vec::new();
    let mut i = start;
    loop {
        let seg_col = i + 1;
        if i < end && chars[i] == '"' {
            let close = (i + 1..end).find(|&j| chars[j] == '"');
            let Some(close) = close else {
                return Err(LocalError::new("unterminated quoted segment", seg_col));
            };
            segs.push(RawSeg {
                text: chars[i + 1..close].iter().collect(),
                quoted: true,
                col: seg_col,
            });
            i = close + 1;
            if i < end && chars[i] != '.' {
                return Err(LocalError::new(
                    "expected '.' or end of path after quoted segment",
                    i + 1,
                ));
            }
        } else {
            let stop = (i..end).find(|&j| chars[j] == '.').unwrap_or(end);
            if stop == i {
                return Err(LocalError::new("empty path segment", seg_col));
            }
            segs.push(RawSeg {
                text: chars[i..stop].iter().collect(),
                quoted: false,
                col: seg_col,
            });
            i = stop;
        }
        if i >= end {
            return Ok(segs);
        }
        // chars[i] == '.'
        i += 1;
        if i >= end {
            return Err(LocalError::new("empty path segment", i + 1));
        }
    }
}

/// Builds a pattern from raw segments, enforcing the wildcard rules.
fn to_pattern(segs: &[RawSeg]) -> Result<Pattern, LocalError> {
    let mut p = Pattern::default();
    for s in segs {
        if !s.quoted && s.text == "*" {
            if p.wildcard {
                return Err(LocalError::new("only one '*' is allowed per path", s.col));
            }
            p.wildcard = true;
        } else {
            if !s.quoted && s.text.contains('*') {
                let off = s.text.chars().position(|c| c == '*').unwrap_or(0);
                return Err(LocalError::new(
                    "'*' must be a whole segment (quote the segment to use a literal '*')",
                    s.col + off,
                ));
            }
            if p.wildcard {
                p.suffix.push(s.text.clone());
            } else {
                p.prefix.push(s.text.clone());
            }
        }
    }
    Ok(p)
}

/// Detects `? $last` (case-insensitive, flexible whitespace) at the end.
/// Returns the end (exclusive, in chars) of the path part.
fn strip_last(chars: &[char], end: usize) -> Option<usize> {
    let mut e = end;
    while e > 0 && chars[e - 1].is_whitespace() {
        e -= 1;
    }
    if e < 5 {
        return None;
    }
    let tail: String = chars[e - 5..e].iter().collect();
    if !tail.eq_ignore_ascii_case("$last") {
        return None;
    }
    let mut q = e - 5;
    while q > 0 && chars[q - 1].is_whitespace() {
        q -= 1;
    }
    if q == 0 || chars[q - 1] != '?' {
        return None;
    }
    let mut p = q - 1;
    while p > 0 && chars[p - 1].is_whitespace() {
        p -= 1;
    }
    Some(p)
}

/// Column (1-based) of an unquoted `??` in `chars[start..end]`, if any.
fn find_default_operator(chars: &[char], start: usize, end: usize) -> Option<usize> {
    let mut in_quote = false;
    let mut seg_start = true;
    for i in start..end {
        let c = chars[i];
        if c == '"' && (seg_start || in_quote) {
            in_quote = !in_quote;
        } else if !in_quote && c == '?' && i + 1 < end && chars[i + 1] == '?' {
            return Some(i + 1);
        }
        seg_start = c == '.' && !in_quote;
    }
    None
}

fn trimmed_bounds(chars: &[char]) -> (usize, usize) {
    let mut start = 0;
    while start < chars.len() && chars[start].is_whitespace() {
        start += 1;
    }
    let mut end = chars.len();
    while end > start && chars[end - 1].is_whitespace() {
        end -= 1;
    }
    (start, end)
}

/// Parses a reference-or-plain path in `chars[start..end]`.
fn parse_target(chars: &[char], start: usize, end: usize) -> Result<Target, LocalError> {
    if start >= end {
        return Err(LocalError::new("empty path", start + 1));
    }
    let prefix = "$context(";
    let pc: Vec<char> = prefix.chars().collect();
    if end - start >= pc.len() && chars[start..start + pc.len()] == pc[..] {
        let name_start = start + pc.len();
        let Some(close) = (name_start..end).find(|&j| chars[j] == ')') else {
            return Err(LocalError::new(
                "expected ')' after dataset name",
                start + 1,
            ));
        };
        let name: String = chars[name_start..close].iter().collect();
        let name = name.trim().to_string();
        if name.is_empty() {
            return Err(LocalError::new("empty dataset name", name_start + 1));
        }
        let rest = close + 1;
        if rest >= end {
            return Err(LocalError::new(
                "expected '.<field>' or '.*' after $context(<dataset>)",
                rest + 1,
            ));
        }
        if chars[rest] != '.' {
            return Err(LocalError::new("expected '.' after ')'", rest + 1));
        }
        let segs = split_segments(chars, rest + 1, end)?;
        return Ok(Target::Tree(Root::Context(name), to_pattern(&segs)?));
    }
    let segs = split_segments(chars, start, end)?;
    let first = &segs[0];
    if first.quoted || !first.text.starts_with('$') {
        return Ok(Target::Tree(Root::Payload, to_pattern(&segs)?));
    }
    match first.text.as_str() {
        "$metadata" => parse_metadata(&segs, first.col),
        "$source" | "$context" => {
            if segs.len() < 2 {
                return Err(LocalError::new(
                    format!("expected a field after {}", first.text),
                    first.col,
                ));
            }
            let root = if first.text == "$source" {
                Root::Source
            } else {
                Root::Record
            };
            Ok(Target::Tree(root, to_pattern(&segs[1..])?))
        }
        other => Err(LocalError::new(
            format!(
                "unknown reference '{other}'; expected $metadata, $context(<dataset>), $source or $context (quote the segment for a literal '$')"
            ),
            first.col,
        )),
    }
}

fn parse_metadata(segs: &[RawSeg], col: usize) -> Result<Target, LocalError> {
    const EXPECTED: &str = "expected $metadata.topic, $metadata.user_property.<key>, $metadata.header.<key> or $metadata.system_property.content_type";
    let Some(kind) = segs.get(1) else {
        return Err(LocalError::new(EXPECTED, col));
    };
    for s in &segs[1..] {
        if !s.quoted && s.text == "*" {
            return Err(LocalError::new(
                "wildcards are not supported in $metadata paths",
                s.col,
            ));
        }
    }
    let key = |segs: &[RawSeg]| -> Result<String, LocalError> {
        match segs {
            [_, _, k] => Ok(k.text.clone()),
            [_, kind] => Err(LocalError::new(
                format!("expected a key after $metadata.{}", kind.text),
                kind.col,
            )),
            [_, _, _, extra, ..] => Err(LocalError::new(
                "unexpected segment after the key (quote keys that contain '.')",
                extra.col,
            )),
            _ => Err(LocalError::new(EXPECTED, col)),
        }
    };
    match kind.text.as_str() {
        "topic" if segs.len() == 2 => Ok(Target::Topic),
        "user_property" | "header" => key(segs).map(Target::UserProperty),
        "system_property" => match segs.get(2) {
            Some(s) if s.text == "content_type" && segs.len() == 3 => Ok(Target::ContentType),
            Some(s) => Err(LocalError::new(
                "only the system property 'content_type' is supported",
                s.col,
            )),
            None => Err(LocalError::new(
                "expected 'content_type' after $metadata.system_property",
                kind.col,
            )),
        },
        "topic" => Err(LocalError::new(
            "unexpected segment after $metadata.topic",
            segs[2].col,
        )),
        _ => Err(LocalError::new(EXPECTED, kind.col)),
    }
}

/// Parses an input path (`inputs[i]`).
pub fn parse_input(text: &str) -> Result<InputPath, LocalError> {
    let chars: Vec<char> = text.chars().collect();
    let (start, end) = trimmed_bounds(&chars);
    let (end, last) = match strip_last(&chars, end) {
        Some(e) => (e, true),
        None => (end, false),
    };
    if let Some(col) = find_default_operator(&chars, start, end) {
        return Err(LocalError::new(
            "'??' defaults are only supported in data flow graphs, not in builtInTransformation",
            col,
        ));
    }
    let target = parse_target(&chars, start, end)?;
    let input = InputPath { target, last };
    if last && input.has_wildcard() {
        return Err(LocalError::new(
            "'? $last' cannot be used with a wildcard path",
            start + 1,
        ));
    }
    Ok(input)
}

/// Parses an output path (`output`); `''` means discard.
pub fn parse_output(text: &str) -> Result<OutputPath, LocalError> {
    let chars: Vec<char> = text.chars().collect();
    let (start, end) = trimmed_bounds(&chars);
    if start >= end {
        return Ok(OutputPath::Discard);
    }
    if strip_last(&chars, end).is_some() {
        return Err(LocalError::new(
            "'? $last' is only allowed in inputs",
            start + 1,
        ));
    }
    match parse_target(&chars, start, end)? {
        Target::Tree(Root::Payload, p) => Ok(OutputPath::Payload(p)),
        Target::Tree(_, _) => Err(LocalError::new(
            "output must be a payload field or a $metadata field",
            start + 1,
        )),
        Target::Topic => Ok(OutputPath::Topic),
        Target::UserProperty(k) => Ok(OutputPath::UserProperty(k)),
        Target::ContentType => Ok(OutputPath::ContentType),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pat(prefix: &[&str], wildcard: bool, suffix: &[&str]) -> Pattern {
        Pattern {
            prefix: prefix.iter().map(|s| s.to_string()).collect(),
            wildcard,
            suffix: suffix.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn payload(text: &str) -> Pattern {
        match parse_input(text).unwrap().target {
            Target::Tree(Root::Payload, p) => p,
            other => panic!("not a payload path: {other:?}"),
        }
    }

    #[test]
    fn dot_notation_and_quotes() {
        assert_eq!(
            payload("Payload.\"Tag.10\".Value"),
            pat(&["Payload", "Tag.10", "Value"], false, &[])
        );
        assert_eq!(payload("a\"b.c"), pat(&["a\"b", "c"], false, &[]));
        assert_eq!(payload("Tag 10.x y"), pat(&["Tag 10", "x y"], false, &[]));
        assert_eq!(payload("\"*\""), pat(&["*"], false, &[]));
        assert_eq!(payload("2022.10"), pat(&["2022", "10"], false, &[]));
    }

    #[test]
    fn segments_substitute_the_capture() {
        let capture = ["x".to_string(), "y".to_string()];
        for p in [pat(&["a"], true, &["b"]), pat(&["a", "b"], false, &[])] {
            let borrowed: Vec<String> = p.segments(&capture).cloned().collect();
            assert_eq!(borrowed, p.substitute(&capture));
            assert_eq!(p.with_segments(&capture, <[String]>::to_vec), borrowed);
        }
    }

    #[test]
    fn wildcards() {
        assert_eq!(payload("*"), pat(&[], true, &[]));
        assert_eq!(payload("a.*"), pat(&["a"], true, &[]));
        assert_eq!(payload("*.Max"), pat(&[], true, &["Max"]));
        assert_eq!(payload("a.*.b.c"), pat(&["a"], true, &["b", "c"]));
        let e = parse_input("*.a.*").unwrap_err();
        assert_eq!(e.message, "only one '*' is allowed per path");
        assert_eq!(e.column, Some(5));
        let e = parse_input("a.b*").unwrap_err();
        assert_eq!(e.column, Some(4));
    }

    #[test]
    fn syntax_errors() {
        let e = parse_input("a.b.\"c").unwrap_err();
        assert_eq!(e.message, "unterminated quoted segment");
        assert_eq!(e.column, Some(5));
        assert_eq!(parse_input("a..b").unwrap_err().column, Some(3));
        assert_eq!(parse_input("a.").unwrap_err().column, Some(3));
        assert_eq!(parse_input("\"a\"b").unwrap_err().column, Some(4));
        assert_eq!(parse_input("  a..b").unwrap_err().column, Some(5));
        assert!(parse_input("$foo.bar").is_err());
        assert!(parse_input("a ?? 3").is_err());
    }

    #[test]
    fn metadata() {
        assert_eq!(
            parse_input("$metadata.topic").unwrap().target,
            Target::Topic
        );
        assert_eq!(
            parse_input("$metadata.user_property.\"weird key\"")
                .unwrap()
                .target,
            Target::UserProperty("weird key".into())
        );
        assert_eq!(
            parse_input("$metadata.header.k").unwrap().target,
            Target::UserProperty("k".into())
        );
        assert_eq!(
            parse_input("$metadata.system_property.content_type")
                .unwrap()
                .target,
            Target::ContentType
        );
        assert!(parse_input("$metadata.user_property").is_err());
        assert!(parse_input("$metadata.user_property.*").is_err());
        assert!(parse_input("$metadata.system_property.message_expiry").is_err());
        assert!(parse_input("$metadata.topic.x").is_err());
    }

    #[test]
    fn context_and_source() {
        assert_eq!(
            parse_input("$context(asset).location").unwrap().target,
            Target::Tree(
                Root::Context("asset".into()),
                pat(&["location"], false, &[])
            )
        );
        assert_eq!(
            parse_input("$context(a.b.c).*").unwrap().target,
            Target::Tree(Root::Context("a.b.c".into()), pat(&[], true, &[]))
        );
        assert_eq!(
            parse_input("$source.deviceId").unwrap().target,
            Target::Tree(Root::Source, pat(&["deviceId"], false, &[]))
        );
        assert_eq!(
            parse_input("$context.asset").unwrap().target,
            Target::Tree(Root::Record, pat(&["asset"], false, &[]))
        );
        assert!(parse_input("$context(asset)").is_err());
        assert!(parse_input("$context(asset").is_err());
    }

    #[test]
    fn last_suffix() {
        for t in [
            "temp ? $last",
            "temp?$last",
            "temp  ?  $LAST ",
            "temp ?$Last",
        ] {
            let p = parse_input(t).unwrap();
            assert!(p.last, "{t}");
            assert_eq!(
                p.target,
                Target::Tree(Root::Payload, pat(&["temp"], false, &[]))
            );
        }
        assert!(!parse_input("\"temp ? $last\"").unwrap().last);
        assert!(parse_input("* ? $last").is_err());
    }

    #[test]
    fn outputs() {
        assert_eq!(parse_output("").unwrap(), OutputPath::Discard);
        assert_eq!(parse_output("$metadata.topic").unwrap(), OutputPath::Topic);
        assert_eq!(
            parse_output("ColorProperties.*").unwrap(),
            OutputPath::Payload(pat(&["ColorProperties"], true, &[]))
        );
        assert!(parse_output("$context(a).b").is_err());
        assert!(parse_output("x ? $last").is_err());
    }
}
