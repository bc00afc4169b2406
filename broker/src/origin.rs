//! Where a routed message came from, carried through rumqttd's router.
//!
//! The router only ever sees a QoS 0 copy of a device's PUBLISH (the
//! durable gate acknowledges it, see [`crate::connection`]), and it
//! delivers every message at the subscription's QoS, clears the retain flag
//! of live copies and ignores No Local. To deliver at min(publish QoS,
//! subscription QoS) [MQTT-3.8.4-8], honour Retain As Published and No
//! Local, the connection that forwards a message needs the publish's QoS,
//! retain flag and publisher. They travel as one private user property
//! (the router passes properties through untouched, retained copies
//! included) that [`Origin::take`] strips before the message is written to
//! a subscriber. A marker was chosen over publishing the copy at its real
//! QoS because the router overwrites the QoS of each forward with the
//! subscription's anyway; the marker is the only thing that survives.
//!
//! A device cannot forge it: [`Origin::mark`] removes any property of that
//! name a client sent before adding its own.

use rumqttd::protocol::PublishProperties;

/// The user property name of the marker; chosen so no real application
/// is likely to use it (and stripped from device publishes if one does).
const KEY: &str = "$backhaul-origin";

/// What the subscriber side needs to know about a routed message's
/// PUBLISH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    /// The QoS it was published with.
    pub(crate) qos: u8,
    /// Its retain flag as published.
    pub(crate) retain: bool,
    /// The client id of the connection that published it (empty for a
    /// retained message restored from disk).
    pub(crate) client_id: String,
}

impl Origin {
    /// `props` with the marker of this origin, replacing any the client
    /// sent. Subscription identifiers a client put into a PUBLISH (a
    /// protocol error it is not worth closing for) are dropped too: the
    /// router appends the subscriber's, which egress reads back.
    pub(crate) fn mark(&self, props: Option<PublishProperties>) -> PublishProperties {
        let mut props = props.unwrap_or_default();
        props.user_properties.retain(|(key, _)| key != KEY);
        props.subscription_identifiers.clear();
        let flag = if self.retain { 'r' } else { '-' };
        props.user_properties.push((
            KEY.to_owned(),
            format!("{}{flag}{}", self.qos, self.client_id),
        ));
        props
    }

    /// Removes the marker from `props` and returns it; `None` when the
    /// message has none (every path into the router marks its copies, so
    /// this is defensive) or the marker does not parse.
    pub(crate) fn take(props: &mut Option<PublishProperties>) -> Option<Origin> {
        let list = &mut props.as_mut()?.user_properties;
        let at = list.iter().rposition(|(key, _)| key == KEY)?;
        let (_, mut value) = list.remove(at);
        let (qos, retain) = match value.as_bytes() {
            [qos @ b'0'..=b'2', flag @ (b'r' | b'-'), ..] => (qos - b'0', *flag == b'r'),
            _ => return None,
        };
        // Both are ASCII: the rest is the client id, kept in place.
        value.replace_range(..2, "");
        Some(Origin {
            qos,
            retain,
            client_id: value,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Origin {
        Origin {
            qos: 1,
            retain: true,
            client_id: "dev:1".into(),
        }
    }

    #[test]
    fn a_marked_message_gives_back_its_origin_and_its_own_properties() {
        let props = PublishProperties {
            user_properties: vec![("a".into(), "2".into())],
            content_type: Some("text/plain".into()),
            ..PublishProperties::default()
        };
        let mut marked = Some(origin().mark(Some(props.clone())));
        assert_eq!(Origin::take(&mut marked), Some(origin()));
        assert_eq!(marked, Some(props));
    }

    #[test]
    fn a_forged_marker_is_replaced_and_client_subscription_ids_dropped() {
        let forged = PublishProperties {
            user_properties: vec![(KEY.into(), "2rsomeone".into())],
            subscription_identifiers: vec![7],
            ..PublishProperties::default()
        };
        let mut marked = Some(origin().mark(Some(forged)));
        assert_eq!(marked.as_ref().unwrap().user_properties.len(), 1);
        assert!(marked.as_ref().unwrap().subscription_identifiers.is_empty());
        assert_eq!(Origin::take(&mut marked), Some(origin()));
        assert_eq!(marked, Some(PublishProperties::default()));
    }

    #[test]
    fn an_unmarked_or_garbled_message_has_no_origin() {
        assert_eq!(Origin::take(&mut None), None);
        let mut garbled = Some(PublishProperties {
            user_properties: vec![(KEY.into(), "9x".into())],
            ..PublishProperties::default()
        });
        assert_eq!(Origin::take(&mut garbled), None);
    }
}
