//! The client's SUBACK, put together from the router's.
//!
//! Each granted filter goes to the router in a SUBSCRIBE of its own (see
//! [`super::subscription_tag`]) under the client's packet id, and a filter
//! the authorization rules deny never goes; the router answers each
//! SUBSCRIBE in order. The client gets one SUBACK with a code per filter,
//! at the filter's position, once the router has answered for all.

use std::collections::HashMap;

use rumqttd::protocol::{SubAck, SubscribeReasonCode};

/// SUBACKs still waiting for some of the router's answers, by packet id.
#[derive(Debug, Default)]
pub(crate) struct SubAckAssembly {
    pending: HashMap<u16, Vec<Option<SubscribeReasonCode>>>,
}

impl SubAckAssembly {
    /// Starts the SUBACK of `pkid`: one slot per filter, `Some` for a code
    /// known already (a denied filter), `None` for one the router answers.
    /// Returns the SUBACK at once when no slot waits for the router.
    pub(crate) fn start(
        &mut self,
        pkid: u16,
        slots: Vec<Option<SubscribeReasonCode>>,
    ) -> Option<SubAck> {
        self.pending.insert(pkid, slots);
        self.complete(pkid)
    }

    /// Takes one of the router's SUBACKs (for a single filter); returns
    /// the client's SUBACK when it is whole, or the router's as it is when
    /// it answers a SUBSCRIBE this assembly does not know.
    pub(crate) fn router_acked(&mut self, ack: SubAck) -> Option<SubAck> {
        let Some(slots) = self.pending.get_mut(&ack.pkid) else {
            return Some(ack);
        };
        for code in ack.return_codes {
            if let Some(slot) = slots.iter_mut().find(|slot| slot.is_none()) {
                *slot = Some(code);
            }
        }
        self.complete(ack.pkid)
    }

    fn complete(&mut self, pkid: u16) -> Option<SubAck> {
        if self.pending.get(&pkid)?.iter().any(Option::is_none) {
            return None;
        }
        let slots = self.pending.remove(&pkid)?;
        Some(SubAck {
            pkid,
            return_codes: slots.into_iter().flatten().collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SubscribeReasonCode::{NotAuthorized, QoS1, QoS2};

    fn ack(pkid: u16, code: SubscribeReasonCode) -> SubAck {
        SubAck {
            pkid,
            return_codes: vec![code],
        }
    }

    #[test]
    fn the_router_answers_fill_the_granted_positions_in_order() {
        let mut assembly = SubAckAssembly::default();
        assert_eq!(
            assembly.start(7, vec![None, Some(NotAuthorized), None]),
            None
        );
        assert_eq!(assembly.router_acked(ack(7, QoS1)), None);
        let whole = assembly.router_acked(ack(7, QoS2)).unwrap();
        assert_eq!(whole.pkid, 7);
        assert_eq!(whole.return_codes, vec![QoS1, NotAuthorized, QoS2]);
    }

    #[test]
    fn an_all_denied_subscribe_is_answered_at_once() {
        let mut assembly = SubAckAssembly::default();
        let whole = assembly.start(3, vec![Some(NotAuthorized)]).unwrap();
        assert_eq!(whole.return_codes, vec![NotAuthorized]);
    }

    #[test]
    fn an_unknown_router_suback_passes_through() {
        let mut assembly = SubAckAssembly::default();
        assert_eq!(assembly.router_acked(ack(9, QoS1)), Some(ack(9, QoS1)));
    }
}
