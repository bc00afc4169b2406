//! A subscription's options, carried by the subscription identifier the
//! router attaches to each message it forwards for it.
//!
//! rumqttd's router ignores No Local, Retain As Published and Retain
//! Handling, and a forwarded message does not say which of the client's
//! subscriptions it matched. The router does copy the subscription
//! identifier given in the SUBSCRIBE into each message it forwards for
//! that filter, so the connection gives the router a tag of its own
//! instead of the client's identifier: the options and the client's
//! identifier packed into one number. Being stateless, the tag still holds
//! after a takeover of the connection; the router replaces the identifier
//! on a new subscription to the same filter, as the options are replaced.
//! Each filter therefore goes to the router in a SUBSCRIBE of its own (the
//! identifier is per packet in MQTT), see [`super::suback`].

use rumqttd::protocol::{Filter, RetainForwardRule};

/// Set in every tag, so a tag is never 0 (which the router refuses).
const TAGGED: usize = 0x80;
const NO_LOCAL: usize = 0x04;
const RETAIN_AS_PUBLISHED: usize = 0x08;
const RETAIN_HANDLING_SHIFT: usize = 4;

/// The options of one subscription, as egress needs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SubscriptionTag {
    pub(crate) no_local: bool,
    pub(crate) retain_as_published: bool,
    /// Retain Handling 2: no retained messages at subscribe time.
    pub(crate) no_retained: bool,
    /// The client's own Subscription Identifier, if it gave one.
    pub(crate) client_id: Option<usize>,
}

impl SubscriptionTag {
    pub(crate) fn of(filter: &Filter, client_id: Option<usize>) -> Self {
        Self {
            no_local: filter.nolocal,
            retain_as_published: filter.preserve_retain,
            no_retained: filter.retain_forward_rule == RetainForwardRule::Never,
            client_id,
        }
    }

    /// The number the router is given as the subscription identifier.
    pub(crate) fn encode(&self) -> usize {
        let handling = if self.no_retained { 2 } else { 0 };
        let mut tag = TAGGED | (handling << RETAIN_HANDLING_SHIFT);
        if self.no_local {
            tag |= NO_LOCAL;
        }
        if self.retain_as_published {
            tag |= RETAIN_AS_PUBLISHED;
        }
        tag | (self.client_id.unwrap_or(0) << 8)
    }

    /// Reads a tag back; `None` for a number that is not one (a session
    /// the router resumed without its identifiers).
    pub(crate) fn decode(tag: usize) -> Option<Self> {
        if tag & TAGGED == 0 {
            return None;
        }
        let client_id = tag >> 8;
        Some(Self {
            no_local: tag & NO_LOCAL != 0,
            retain_as_published: tag & RETAIN_AS_PUBLISHED != 0,
            no_retained: (tag >> RETAIN_HANDLING_SHIFT) & 0b11 == 2,
            client_id: (client_id != 0).then_some(client_id),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttd::protocol::QoS;

    fn filter(nolocal: bool, preserve_retain: bool, rule: RetainForwardRule) -> Filter {
        Filter {
            path: "a/#".into(),
            qos: QoS::ExactlyOnce,
            nolocal,
            preserve_retain,
            retain_forward_rule: rule,
        }
    }

    #[test]
    fn every_option_survives_the_round_trip() {
        let cases = [
            (
                filter(false, false, RetainForwardRule::OnEverySubscribe),
                None,
            ),
            (
                filter(true, false, RetainForwardRule::OnNewSubscribe),
                Some(1),
            ),
            (
                filter(false, true, RetainForwardRule::Never),
                Some(268_435_455),
            ),
            (filter(true, true, RetainForwardRule::Never), Some(42)),
        ];
        for (filter, id) in cases {
            let tag = SubscriptionTag::of(&filter, id);
            assert_ne!(tag.encode(), 0);
            assert_eq!(SubscriptionTag::decode(tag.encode()), Some(tag));
        }
    }

    #[test]
    fn a_plain_identifier_is_not_a_tag() {
        assert_eq!(SubscriptionTag::decode(5), None);
    }
}
