//! MQTT topic filters as data flows use them to pick messages.
//!
//! A data flow's `dataSources` are ordinary MQTT filters (`+`, `#`), optionally
//! shared: `$share/<group>/<filter>` (MQTT 5) or `$shared/<group>/<filter>`
//! (Azure IoT Operations' spelling). On an appliance there is one reader per
//! flow, so the group only matters to device subscribers; the gate matches the
//! filter part.

use std::fmt;

/// A validated topic filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicFilter {
    text: String,
    levels: Vec<Level>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    Exact(String),
    SingleWildcard,
    MultiWildcard,
}

/// Why a filter was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("a topic filter must not be empty")]
    Empty,
    #[error("'#' must be the last level and stand alone (as in 'a/#') in '{0}'")]
    MisplacedMultiWildcard(String),
    #[error("'+' must occupy a whole level (as in 'a/+/c') in '{0}'")]
    MisplacedSingleWildcard(String),
    #[error("shared subscription '{0}' needs a group and a filter: '$share/<group>/<filter>'")]
    IncompleteShare(String),
}

impl TopicFilter {
    /// Parses and validates `text`.
    pub fn parse(text: &str) -> Result<Self, FilterError> {
        let filter = strip_share(text)?;
        if filter.is_empty() {
            return Err(FilterError::Empty);
        }
        let parts: Vec<&str> = filter.split('/').collect();
        let mut levels = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let level = match *part {
                "#" if i + 1 == parts.len() => Level::MultiWildcard,
                "+" => Level::SingleWildcard,
                p if p.contains('#') => {
                    return Err(FilterError::MisplacedMultiWildcard(text.to_string()))
                }
                p if p.contains('+') => {
                    return Err(FilterError::MisplacedSingleWildcard(text.to_string()))
                }
                p => Level::Exact(p.to_string()),
            };
            levels.push(level);
        }
        Ok(Self {
            text: text.to_string(),
            levels,
        })
    }

    /// Whether a message published to `topic` matches. Per MQTT, topics that
    /// start with `$` are not matched by a leading wildcard.
    pub fn matches(&self, topic: &str) -> bool {
        if topic.starts_with('$')
            && matches!(
                self.levels.first(),
                Some(Level::SingleWildcard | Level::MultiWildcard)
            )
        {
            return false;
        }
        let mut topic_levels = topic.split('/');
        for level in &self.levels {
            match level {
                Level::MultiWildcard => return true,
                Level::SingleWildcard => {
                    if topic_levels.next().is_none() {
                        return false;
                    }
                }
                Level::Exact(expected) => match topic_levels.next() {
                    Some(actual) if actual == expected => {}
                    _ => return false,
                },
            }
        }
        topic_levels.next().is_none()
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

fn strip_share(text: &str) -> Result<&str, FilterError> {
    for prefix in ["$share/", "$shared/"] {
        if let Some(rest) = text.strip_prefix(prefix) {
            return match rest.split_once('/') {
                Some((group, filter)) if !group.is_empty() && !filter.is_empty() => Ok(filter),
                _ => Err(FilterError::IncompleteShare(text.to_string())),
            };
        }
    }
    Ok(text)
}

impl fmt::Display for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(filter: &str, topic: &str) -> bool {
        TopicFilter::parse(filter).unwrap().matches(topic)
    }

    #[test]
    fn exact_and_single_level() {
        assert!(m("factory/line1/temp", "factory/line1/temp"));
        assert!(!m("factory/line1/temp", "factory/line1/temp/x"));
        assert!(m("factory/+/temp", "factory/line1/temp"));
        assert!(!m("factory/+/temp", "factory/line1/pressure"));
        assert!(!m("factory/+", "factory"));
        assert!(m("factory/+", "factory/"), "an empty level is a level");
        assert!(m("+/+", "/x"));
    }

    #[test]
    fn multi_level() {
        assert!(m("factory/#", "factory/line1/temp"));
        assert!(
            m("factory/#", "factory"),
            "'#' also matches the parent level"
        );
        assert!(!m("factory/#", "factories/x"));
        assert!(m("#", "anything/at/all"));
    }

    #[test]
    fn dollar_topics_need_an_explicit_first_level() {
        assert!(!m("#", "$SYS/uptime"));
        assert!(!m("+/uptime", "$SYS/uptime"));
        assert!(m("$SYS/#", "$SYS/uptime"));
    }

    #[test]
    fn shared_prefixes_are_stripped() {
        assert!(m("$share/g1/factory/+", "factory/a"));
        assert!(m("$shared/g1/factory/#", "factory/a/b"));
        assert_eq!(
            TopicFilter::parse("$share/g1").unwrap_err().to_string(),
            "shared subscription '$share/g1' needs a group and a filter: '$share/<group>/<filter>'"
        );
    }

    #[test]
    fn invalid_filters_are_refused_with_reasons() {
        assert_eq!(TopicFilter::parse("").unwrap_err(), FilterError::Empty);
        assert_eq!(
            TopicFilter::parse("a/#/b").unwrap_err().to_string(),
            "'#' must be the last level and stand alone (as in 'a/#') in 'a/#/b'"
        );
        assert!(matches!(
            TopicFilter::parse("a/b#").unwrap_err(),
            FilterError::MisplacedMultiWildcard(_)
        ));
        assert!(matches!(
            TopicFilter::parse("a/b+/c").unwrap_err(),
            FilterError::MisplacedSingleWildcard(_)
        ));
    }
}
