//! Writing map results into the output message.

use super::json::Json;
use super::json_map::Map;

use super::path::OutputPath;
use super::transform::Message;
use super::value::json_into_text;

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

fn not_an_object(segments: &[String], parent: usize) -> String {
    format!(
        "cannot write '{}': '{}' is not an object",
        show_path(segments),
        show_path(&segments[..parent])
    )
}

/// Writes into a JSON object tree, creating intermediate objects.
pub fn set_path(root: &mut Json, segments: &[String], value: Json) -> Result<(), String> {
    let Some((last, parents)) = segments.split_last() else {
        return Err("cannot write an empty path".to_string());
    };
    let mut node = root;
    for (i, seg) in parents.iter().enumerate() {
        let Some(obj) = node.as_object_mut() else {
            return Err(not_an_object(segments, i));
        };
        node = obj.get_or_insert_with(seg, || Json::Object(Map::new()));
    }
    let Some(obj) = node.as_object_mut() else {
        return Err(not_an_object(segments, parents.len()));
    };
    obj.insert(last, value);
    Ok(())
}

/// User-property keys written so far by this message's map rules.
pub type WrittenProps<'r> = Vec<&'r str>;

/// Writes one map result into the output message.
pub fn write_output<'r>(
    out: &mut Message,
    written_props: &mut WrittenProps<'r>,
    output: &'r OutputPath,
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
            Some(v) => pat.with_segments(capture, |segs| set_path(&mut out.payload, segs, v)),
        },
        OutputPath::Topic => {
            let Some(v) = value else {
                return Err("$metadata.topic cannot be removed".to_string());
            };
            let t = json_into_text(v);
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
            write_user_property(out, written_props, k, value);
            Ok(())
        }
        OutputPath::ContentType => {
            out.content_type = value.map(json_into_text);
            Ok(())
        }
    }
}

/// The first write of `k` replaces the incoming `k` properties, later ones
/// append; Empty removes every `k`.
fn write_user_property<'r>(
    out: &mut Message,
    written_props: &mut WrittenProps<'r>,
    k: &'r str,
    value: Option<Json>,
) {
    let seen = written_props.iter().position(|w| *w == k);
    match (value, seen) {
        (None, seen) => {
            out.user_properties.retain(|(name, _)| name != k);
            if let Some(i) = seen {
                written_props.swap_remove(i);
            }
        }
        (Some(v), seen) => {
            if seen.is_none() {
                written_props.push(k);
                out.user_properties.retain(|(name, _)| name != k);
            }
            out.user_properties.push((k.to_owned(), json_into_text(v)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::json;

    #[test]
    fn set_path_creates_and_rejects() {
        let mut v = json!({});
        set_path(&mut v, &["a".into(), "b".into()], json!(1)).unwrap();
        assert_eq!(v, json!({"a": {"b": 1}}));
        set_path(&mut v, &["a".into(), "b".into()], json!(2)).unwrap();
        assert_eq!(v, json!({"a": {"b": 2}}));
        let e = set_path(&mut v, &["a".into(), "b".into(), "c".into()], json!(1)).unwrap_err();
        assert_eq!(e, "cannot write 'a.b.c': 'a.b' is not an object");
        let e = set_path(&mut json!(1), &["x".into()], json!(1)).unwrap_err();
        assert_eq!(e, "cannot write 'x': '' is not an object");
    }

    #[test]
    fn user_properties_replace_then_append_and_empty_removes() {
        let mut out = Message::new("t", json!({}));
        out.user_properties = vec![("k".into(), "old".into()), ("o".into(), "1".into())];
        let key = OutputPath::UserProperty("k".into());
        let mut written = WrittenProps::new();
        write_output(&mut out, &mut written, &key, &[], Some(json!("a"))).unwrap();
        write_output(&mut out, &mut written, &key, &[], Some(json!(2))).unwrap();
        let props = |m: &Message| m.user_properties.clone();
        let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
        assert_eq!(
            props(&out),
            vec![pair("o", "1"), pair("k", "a"), pair("k", "2")]
        );
        write_output(&mut out, &mut written, &key, &[], Some(Json::Null)).unwrap();
        assert_eq!(props(&out), vec![pair("o", "1")]);
        write_output(&mut out, &mut written, &key, &[], Some(json!("b"))).unwrap();
        assert_eq!(props(&out), vec![pair("o", "1"), pair("k", "b")]);
    }
}
