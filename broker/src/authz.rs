//! Topic authorization: which identities may publish to and subscribe to
//! which topics.
//!
//! A rule names an identity (a username, a certificate CN, or `*` for every
//! client, anonymous ones included) and grants topic filters for publishing
//! and for subscribing. In a filter, `%u` stands for the client's identity
//! and `%c` for its client id; a rule whose substitution has no value (an
//! anonymous client has no `%u`), or whose value contains `+`, `#` or `/`,
//! grants nothing, so a crafted client id cannot widen a grant. A PUBLISH
//! is allowed when a granted filter matches its topic; a SUBSCRIBE filter
//! when a granted filter covers every topic it can match. What no rule
//! grants, `default` decides.
//!
//! A rule may also deny (`deny_publish`, `deny_subscribe`), like
//! Mosquitto's `topic deny`: a denial of any rule that applies to the
//! client takes precedence over every grant and the default. A PUBLISH is
//! denied when a denied filter matches its topic; a SUBSCRIBE filter when a
//! denied filter covers it, so denying `a/secret` refuses a subscription to
//! `a/secret` but not to `a/#` (whose other topics are not denied).

use crate::topic::TopicFilter;
use crate::FilterError;

/// What happens to a request no rule grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultDecision {
    Allow,
    Deny,
}

/// Which clients a rule applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleIdentity {
    Anyone,
    Named(String),
}

/// One rule of the authorization policy.
#[derive(Debug, Clone)]
pub struct Rule {
    pub identity: RuleIdentity,
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
    /// Refused for publishing whatever else grants them.
    pub deny_publish: Vec<String>,
    /// Refused for subscribing whatever else grants them.
    pub deny_subscribe: Vec<String>,
}

/// The authorization policy of the broker.
#[derive(Debug, Clone)]
pub struct Authorization {
    rules: Vec<Rule>,
    default: DefaultDecision,
}

/// Who is asking.
#[derive(Debug, Clone, Copy)]
pub struct Requester<'a> {
    /// The authenticated identity (username or certificate CN).
    pub identity: Option<&'a str>,
    pub client_id: &'a str,
}

/// Whether a filter template is usable (checked with sample values).
pub fn check_template(template: &str) -> Result<(), FilterError> {
    TopicFilter::parse(&template.replace("%u", "u").replace("%c", "c")).map(|_| ())
}

impl Authorization {
    /// Everything allowed: the policy without an `authorization` section.
    pub fn allow_all() -> Self {
        Self {
            rules: Vec::new(),
            default: DefaultDecision::Allow,
        }
    }

    /// A policy; every template must pass [`check_template`].
    pub fn new(rules: Vec<Rule>, default: DefaultDecision) -> Self {
        Self { rules, default }
    }

    pub fn may_publish(&self, who: Requester<'_>, topic: &str) -> bool {
        self.grants_for(who).may_publish(topic)
    }

    pub fn may_subscribe(&self, who: Requester<'_>, filter: &str) -> bool {
        self.grants_for(who).may_subscribe(filter)
    }

    /// What the policy grants `who`, with `%u` and `%c` substituted: a
    /// connection resolves it once, not for every packet.
    pub fn grants_for(&self, who: Requester<'_>) -> Grants {
        let resolve = |grants: fn(&Rule) -> &Vec<String>| -> Vec<TopicFilter> {
            self.rules
                .iter()
                .filter(|rule| match &rule.identity {
                    RuleIdentity::Anyone => true,
                    RuleIdentity::Named(name) => who.identity == Some(name.as_str()),
                })
                .flat_map(|rule| grants(rule).iter())
                .filter_map(|template| substitute(template, who))
                .collect()
        };
        Grants {
            publish: resolve(|rule| &rule.publish),
            subscribe: resolve(|rule| &rule.subscribe),
            deny_publish: resolve(|rule| &rule.deny_publish),
            deny_subscribe: resolve(|rule| &rule.deny_subscribe),
            allow_rest: self.default == DefaultDecision::Allow,
        }
    }
}

/// The filters one client was granted (see [`Authorization::grants_for`]).
#[derive(Debug, Clone)]
pub struct Grants {
    publish: Vec<TopicFilter>,
    subscribe: Vec<TopicFilter>,
    deny_publish: Vec<TopicFilter>,
    deny_subscribe: Vec<TopicFilter>,
    /// The policy's default is `Allow`.
    allow_rest: bool,
}

impl Grants {
    pub fn may_publish(&self, topic: &str) -> bool {
        if self.deny_publish.iter().any(|filter| filter.matches(topic)) {
            return false;
        }
        self.allow_rest || self.publish.iter().any(|filter| filter.matches(topic))
    }

    pub fn may_subscribe(&self, filter: &str) -> bool {
        let requested = strip_share(filter);
        let covered_by = |filters: &[TopicFilter]| {
            filters
                .iter()
                .any(|granted| covers(granted.as_str(), requested))
        };
        if covered_by(&self.deny_subscribe) {
            return false;
        }
        self.allow_rest || covered_by(&self.subscribe)
    }
}

/// The template with `%u` and `%c` replaced, or `None` when a value is
/// missing or would act as a wildcard or level separator.
fn substitute(template: &str, who: Requester<'_>) -> Option<TopicFilter> {
    let safe = |value: &str| !value.is_empty() && !value.contains(['+', '#', '/']);
    let mut text = template.to_string();
    if text.contains("%u") {
        let identity = who.identity.filter(|v| safe(v))?;
        text = text.replace("%u", identity);
    }
    if text.contains("%c") {
        if !safe(who.client_id) {
            return None;
        }
        text = text.replace("%c", who.client_id);
    }
    TopicFilter::parse(&text).ok()
}

/// The filter part of a shared subscription.
fn strip_share(filter: &str) -> &str {
    for prefix in ["$share/", "$shared/"] {
        if let Some((_, rest)) = filter.strip_prefix(prefix).and_then(|r| r.split_once('/')) {
            return rest;
        }
    }
    filter
}

/// Whether every topic `requested` matches is matched by `granted`.
fn covers(granted: &str, requested: &str) -> bool {
    let granted = strip_share(granted);
    let leading_wildcard = |f: &str| f.starts_with('+') || f.starts_with('#');
    if requested.starts_with('$') && leading_wildcard(granted) {
        return false;
    }
    let mut asked = requested.split('/');
    for level in granted.split('/') {
        match (level, asked.next()) {
            ("#", _) => return true,
            (_, None) => return false,
            (_, Some("#")) => return false,
            ("+", Some(_)) => {}
            (exact, Some(other)) if exact == other => {}
            _ => return false,
        }
    }
    asked.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Authorization {
        Authorization::new(
            vec![
                Rule {
                    identity: RuleIdentity::Named("press-01".into()),
                    publish: vec!["factory/press-01/#".into()],
                    subscribe: vec!["commands/press-01/+".into()],
                    deny_publish: Vec::new(),
                    deny_subscribe: Vec::new(),
                },
                Rule {
                    identity: RuleIdentity::Anyone,
                    publish: vec!["devices/%u/%c/#".into()],
                    subscribe: vec!["public/#".into()],
                    deny_publish: Vec::new(),
                    deny_subscribe: Vec::new(),
                },
            ],
            DefaultDecision::Deny,
        )
    }

    fn who<'a>(identity: Option<&'a str>, client_id: &'a str) -> Requester<'a> {
        Requester {
            identity,
            client_id,
        }
    }

    #[test]
    fn publish_needs_a_matching_grant() {
        let p = policy();
        let press = who(Some("press-01"), "c1");
        assert!(p.may_publish(press, "factory/press-01/temp"));
        assert!(!p.may_publish(press, "factory/press-02/temp"));
        assert!(p.may_publish(press, "devices/press-01/c1/x"));
        assert!(!p.may_publish(press, "devices/press-01/c2/x"));
        assert!(!p.may_publish(who(None, "c1"), "devices/%u/c1/x"));
        assert!(
            !p.may_publish(who(Some("#"), "c1"), "devices/anything/c1/x"),
            "a wildcard in the identity grants nothing"
        );
        assert!(!p.may_publish(who(Some("a"), "+"), "devices/a/b/x"));
    }

    #[test]
    fn subscribe_needs_a_covering_grant() {
        let p = policy();
        let press = who(Some("press-01"), "c1");
        assert!(p.may_subscribe(press, "commands/press-01/reset"));
        assert!(p.may_subscribe(press, "commands/press-01/+"));
        assert!(!p.may_subscribe(press, "commands/press-01/#"));
        assert!(!p.may_subscribe(press, "commands/+/reset"));
        assert!(p.may_subscribe(who(None, "x"), "public/a/#"));
        assert!(p.may_subscribe(who(None, "x"), "$share/g/public/a"));
        assert!(!p.may_subscribe(who(None, "x"), "#"));
        assert!(!covers("#", "$SYS/x"));
        assert!(covers("a/#", "a"));
    }

    #[test]
    fn the_default_decides_what_no_rule_grants() {
        let open = Authorization::new(Vec::new(), DefaultDecision::Allow);
        assert!(open.may_publish(who(None, "x"), "any/thing"));
        let closed = Authorization::new(Vec::new(), DefaultDecision::Deny);
        assert!(!closed.may_subscribe(who(Some("a"), "x"), "any/thing"));
        assert_eq!(
            check_template("a/%u/#/b").unwrap_err().to_string(),
            "'#' must be the last level and stand alone (as in 'a/#') in 'a/u/#/b'"
        );
    }

    #[test]
    fn a_denial_takes_precedence_over_grants_and_the_default() {
        let p = Authorization::new(
            vec![Rule {
                identity: RuleIdentity::Anyone,
                publish: Vec::new(),
                subscribe: Vec::new(),
                deny_publish: vec!["plant/%c/locked".into()],
                deny_subscribe: vec!["test/nosubscribe".into(), "private/#".into()],
            }],
            DefaultDecision::Allow,
        );
        let dev = who(None, "dev1");
        assert!(!p.may_publish(dev, "plant/dev1/locked"));
        assert!(p.may_publish(dev, "plant/dev2/locked"));
        assert!(!p.may_subscribe(dev, "test/nosubscribe"));
        assert!(!p.may_subscribe(dev, "$share/g/test/nosubscribe"));
        assert!(!p.may_subscribe(dev, "private/a/+"));
        assert!(p.may_subscribe(dev, "test/+"), "only partly denied");
        assert!(p.may_subscribe(dev, "#"));
        assert!(p.may_publish(dev, "test/nosubscribe"), "subscribe only");
    }
}
