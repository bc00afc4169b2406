//! Messages the router forwards to this client: what the router does not
//! apply itself is applied here, before the message is written.
//!
//! - QoS: min(publish QoS, subscription QoS) [MQTT-3.8.4-8]; the router
//!   sends the subscription's (the publish's QoS comes from [`Origin`]).
//! - No Local: a client's own publish is not delivered to its No Local
//!   subscriptions.
//! - Retain As Published: a live copy keeps its retain flag; otherwise it is
//!   cleared, and retained messages sent at subscribe time keep theirs.
//! - Retain Handling 2: no retained messages at subscribe time.
//! - The client's Maximum Packet Size: a PUBLISH larger than it is
//!   discarded as if delivered [MQTT-3.1.2-25] and counted.
//!
//! The router gives a client's topic aliases per filter: the first message
//! carries the topic and the alias, later ones the alias only. When a
//! message that would have told the client an alias is not sent, the topic
//! is kept and put back into the next message with that alias, so the
//! client never gets an alias it does not know.
//!
//! The subscription's options come from the router's subscription
//! identifier ([`SubscriptionTag`]); whatever the client is not sent, or
//! is sent at a lower QoS, is acknowledged to the router by
//! [`RouterAcks`](super::router_acks::RouterAcks).

use std::sync::atomic::Ordering;

use bytes::Bytes;
use rumqttd::protocol::{Packet, Publish, PublishProperties};
use rumqttd::Forward;
use tracing::debug;

use super::reframe::{header_of, reframed};
use super::subscription_tag::SubscriptionTag;
use super::Connection;
use crate::broker::Shared;
use crate::origin::Origin;
use crate::ConnectionError;

/// How a forward goes to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    /// At this QoS, with this retain flag.
    Send { qos: u8, retain: bool },
    /// Not at all (acknowledged to the router as if delivered).
    Skip,
}

/// The options of the forward's subscription: the router's identifier (it
/// appends it last) is replaced by the client's own, if any.
fn take_tag(props: &mut Option<PublishProperties>) -> Option<SubscriptionTag> {
    let ids = &mut props.as_mut()?.subscription_identifiers;
    let tag = SubscriptionTag::decode(*ids.last()?)?;
    ids.pop();
    ids.extend(tag.client_id);
    Some(tag)
}

/// What a forward becomes for the client `client_id`. `router_qos` is the
/// QoS the router forwarded it at (the subscription's); `from_retained_store`
/// tells a retained message sent at subscribe time from a live copy.
fn delivery(
    client_id: &str,
    router_qos: u8,
    origin: Option<&Origin>,
    tag: Option<SubscriptionTag>,
    from_retained_store: bool,
    retain: bool,
) -> Delivery {
    let tag = tag.unwrap_or(SubscriptionTag {
        no_local: false,
        retain_as_published: false,
        no_retained: false,
        client_id: None,
    });
    let own = origin.is_some_and(|o| o.client_id == client_id);
    if (tag.no_local && own && !from_retained_store) || (tag.no_retained && from_retained_store) {
        return Delivery::Skip;
    }
    let qos = origin.map_or(router_qos, |o| o.qos.min(router_qos));
    let retain = if from_retained_store {
        retain
    } else {
        tag.retain_as_published && origin.is_some_and(|o| o.retain)
    };
    Delivery::Send { qos, retain }
}

impl Connection {
    /// Writes one forward to the client as [`delivery`] decides, and
    /// acknowledges to the router what the client will not.
    pub(super) async fn forward(
        &mut self,
        forward: Forward,
        shared: &Shared,
    ) -> Result<(), ConnectionError> {
        let Forward {
            cursor,
            publish,
            mut properties,
            ..
        } = forward;
        let router = header_of(&publish);
        let origin = Origin::take(&mut properties);
        let tag = take_tag(&mut properties);
        if properties.as_ref() == Some(&PublishProperties::default()) {
            properties = None;
        }
        let decided = delivery(
            &self.client_id,
            router.qos,
            origin.as_ref(),
            tag,
            cursor.is_none(),
            publish.retain,
        );
        let alias = properties.as_ref().and_then(|p| p.topic_alias);
        let client_qos = match decided {
            Delivery::Skip => {
                self.alias_not_sent(alias, &publish.topic);
                0
            }
            Delivery::Send { qos, retain } => {
                let mut publish = if qos != router.qos || retain != publish.retain {
                    reframed(publish, qos, router.pkid, retain)
                } else {
                    publish
                };
                self.restore_alias_topic(alias, &mut publish);
                let topic = publish.topic.clone();
                if self.write_publish(publish, properties)? {
                    qos
                } else {
                    self.alias_not_sent(alias, &topic);
                    shared
                        .stats
                        .publishes_too_large_for_client
                        .fetch_add(1, Ordering::Relaxed);
                    debug!("a publish larger than the client's Maximum Packet Size was discarded");
                    0
                }
            }
        };
        let acks = self
            .router_acks
            .forwarded(router.pkid, router.qos, client_qos);
        self.send_to_router(acks).await
    }

    /// Remembers the topic of an alias the client was not told (the
    /// message that set it was not sent).
    fn alias_not_sent(&mut self, alias: Option<u16>, topic: &Bytes) {
        if let Some(alias) = alias.filter(|_| !topic.is_empty()) {
            self.untold_aliases.insert(alias, topic.clone());
        }
    }

    /// Puts the topic back into a message that uses an alias the client
    /// was not told; a message that sets the alias makes it told.
    fn restore_alias_topic(&mut self, alias: Option<u16>, publish: &mut Publish) {
        let Some(alias) = alias else { return };
        match self.untold_aliases.remove(&alias) {
            Some(topic) if publish.topic.is_empty() => publish.topic = topic,
            _ => {}
        }
    }

    /// Writes a PUBLISH unless its encoding exceeds the client's Maximum
    /// Packet Size; `false` when it was left out.
    fn write_publish(
        &mut self,
        publish: Publish,
        properties: Option<PublishProperties>,
    ) -> Result<bool, ConnectionError> {
        let start = self.outbuf.len();
        self.codec
            .write(Packet::Publish(publish, properties), &mut self.outbuf)?;
        match self.client_max_packet_size {
            Some(max) if self.outbuf.len() - start > max => {
                self.outbuf.truncate(start);
                Ok(false)
            }
            _ => Ok(true),
        }
    }

    /// Sends the acks the ledger released to the router, in order.
    pub(super) async fn send_to_router(
        &mut self,
        packets: Vec<Packet>,
    ) -> Result<(), ConnectionError> {
        for packet in packets {
            self.link_tx.send(packet).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(qos: u8, retain: bool, client_id: &str) -> Origin {
        Origin {
            qos,
            retain,
            client_id: client_id.into(),
        }
    }

    fn tag(no_local: bool, retain_as_published: bool, no_retained: bool) -> SubscriptionTag {
        SubscriptionTag {
            no_local,
            retain_as_published,
            no_retained,
            client_id: None,
        }
    }

    #[test]
    fn the_delivered_qos_is_the_lower_of_publish_and_subscription() {
        for (published, subscribed, delivered) in [(0, 2, 0), (1, 2, 1), (2, 2, 2), (2, 1, 1)] {
            let o = origin(published, false, "other");
            assert_eq!(
                delivery("me", subscribed, Some(&o), None, false, false),
                Delivery::Send {
                    qos: delivered,
                    retain: false
                }
            );
        }
        // Without a marker the router's QoS stands.
        assert_eq!(
            delivery("me", 2, None, None, false, false),
            Delivery::Send {
                qos: 2,
                retain: false
            }
        );
    }

    #[test]
    fn no_local_skips_only_the_client_s_own_live_publishes() {
        let own = origin(1, false, "me");
        let other = origin(1, false, "other");
        let no_local = Some(tag(true, false, false));
        assert_eq!(
            delivery("me", 1, Some(&own), no_local, false, false),
            Delivery::Skip
        );
        assert!(matches!(
            delivery("me", 1, Some(&other), no_local, false, false),
            Delivery::Send { .. }
        ));
        assert!(matches!(
            delivery("me", 1, Some(&own), None, false, false),
            Delivery::Send { .. }
        ));
    }

    #[test]
    fn retain_flags_follow_retain_as_published_and_retain_handling() {
        let retained = origin(1, true, "other");
        let send = |retain| Delivery::Send { qos: 1, retain };
        // A live copy: retain cleared unless Retain As Published.
        assert_eq!(
            delivery("me", 1, Some(&retained), None, false, false),
            send(false)
        );
        let rap = Some(tag(false, true, false));
        assert_eq!(
            delivery("me", 1, Some(&retained), rap, false, false),
            send(true)
        );
        // At subscribe time: retained, unless Retain Handling 2.
        assert_eq!(
            delivery("me", 1, Some(&retained), None, true, true),
            send(true)
        );
        let rh2 = Some(tag(false, false, true));
        assert_eq!(
            delivery("me", 1, Some(&retained), rh2, true, true),
            Delivery::Skip
        );
    }
}
