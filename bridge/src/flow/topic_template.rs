//! `dataDestination` with the variables of Azure IoT Operations:
//! `${inputTopic}` (the whole source topic) and `${inputTopic.N}` (its Nth
//! level, from 1; leading and trailing `/` ignored). A message whose
//! variable cannot be resolved is dropped and counted, as in AIO.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicTemplate {
    text: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    WholeTopic,
    Level(usize),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("must not be empty")]
    Empty,
    #[error("'{0}' has a '${{' without its closing '}}'")]
    Unclosed(String),
    #[error(
        "unknown variable '${{{0}}}'; expected ${{inputTopic}} or ${{inputTopic.N}} with N from 1"
    )]
    UnknownVariable(String),
    #[error("'{0}' contains '+' or '#': destination topics cannot have wildcards")]
    Wildcard(String),
    #[error("'{0}' must be a relative folder without '..' or variables")]
    BadFolder(String),
    #[error("'{0}' is not an event hub name: 1-256 letters, digits, '.', '_' or '-'")]
    BadHubName(String),
}

impl TopicTemplate {
    /// Parses an MQTT destination topic.
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        if text.is_empty() {
            return Err(TemplateError::Empty);
        }
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            push_literal(&mut parts, &rest[..start], text)?;
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| TemplateError::Unclosed(text.to_string()))?;
            parts.push(variable(&after[..end])?);
            rest = &after[end + 1..];
        }
        push_literal(&mut parts, rest, text)?;
        Ok(Self {
            text: text.to_string(),
            parts,
        })
    }

    /// A static folder name (local-storage destinations).
    pub fn folder(text: &str) -> Result<Self, TemplateError> {
        let path = std::path::Path::new(text);
        let bad = text.is_empty()
            || text.contains("${")
            || path.is_absolute()
            || path
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)));
        if bad {
            return Err(TemplateError::BadFolder(text.to_string()));
        }
        Ok(Self {
            text: text.to_string(),
            parts: vec![Part::Literal(text.to_string())],
        })
    }

    /// The destination for a message from `topic`, or `None` if a level the
    /// template names does not exist.
    pub fn render(&self, topic: &str) -> Option<String> {
        let mut out = String::with_capacity(self.text.len() + topic.len());
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::WholeTopic => out.push_str(topic),
                Part::Level(n) => out.push_str(
                    topic
                        .trim_matches('/')
                        .split('/')
                        .nth(n - 1)
                        .filter(|level| !level.is_empty())?,
                ),
            }
        }
        Some(out)
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

fn push_literal(parts: &mut Vec<Part>, literal: &str, whole: &str) -> Result<(), TemplateError> {
    if literal.contains(['+', '#']) {
        return Err(TemplateError::Wildcard(whole.to_string()));
    }
    if !literal.is_empty() {
        parts.push(Part::Literal(literal.to_string()));
    }
    Ok(())
}

fn variable(name: &str) -> Result<Part, TemplateError> {
    if name == "inputTopic" {
        return Ok(Part::WholeTopic);
    }
    name.strip_prefix("inputTopic.")
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|n| *n >= 1)
        .map(Part::Level)
        .ok_or_else(|| TemplateError::UnknownVariable(name.to_string()))
}

impl fmt::Display for TopicTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(template: &str, topic: &str) -> Option<String> {
        TopicTemplate::parse(template).unwrap().render(topic)
    }

    #[test]
    fn renders_the_documented_examples() {
        assert_eq!(
            render("processed/factory/${inputTopic.2}", "factory/1/data").as_deref(),
            Some("processed/factory/1")
        );
        assert_eq!(
            render("out/${inputTopic}", "a/b").as_deref(),
            Some("out/a/b")
        );
        assert_eq!(
            render("${inputTopic.1}-${inputTopic.3}", "/x/y/z/").as_deref(),
            Some("x-z"),
            "leading and trailing '/' are ignored"
        );
        assert_eq!(
            render("static/topic", "any").as_deref(),
            Some("static/topic")
        );
    }

    #[test]
    fn unresolvable_levels_give_none() {
        assert_eq!(render("out/${inputTopic.4}", "a/b/c"), None);
    }

    #[test]
    fn rejects_bad_templates_with_reasons() {
        let err = |t: &str| TopicTemplate::parse(t).unwrap_err().to_string();
        assert_eq!(err(""), "must not be empty");
        assert_eq!(
            err("out/${topic}"),
            "unknown variable '${topic}'; expected ${inputTopic} or ${inputTopic.N} with N from 1"
        );
        assert_eq!(
            err("out/${inputTopic.0}"),
            "unknown variable '${inputTopic.0}'; expected ${inputTopic} or ${inputTopic.N} with N from 1"
        );
        assert_eq!(
            err("out/${inputTopic"),
            "'out/${inputTopic' has a '${' without its closing '}'"
        );
        assert_eq!(
            err("out/+/x"),
            "'out/+/x' contains '+' or '#': destination topics cannot have wildcards"
        );
    }

    #[test]
    fn folders_are_static_and_relative() {
        assert!(TopicTemplate::folder("factory/line1").is_ok());
        for bad in ["", "/etc", "../up", "a/${inputTopic}"] {
            assert!(TopicTemplate::folder(bad).is_err(), "{bad}");
        }
    }
}
