//! The acknowledgements the router is owed for what it forwards, in the
//! order it wants them.
//!
//! The router counts each QoS 1/2 forward in flight until it gets the
//! PUBACK (or PUBREC) for it, strictly in forwarding order (an ack out of
//! order disconnects the link), and likewise wants the PUBCOMPs in the
//! order of its PUBRELs; at 100 in flight it stops forwarding. A forward
//! the connection delivers at a lower QoS than the router's (min(publish
//! QoS, subscription QoS)) or drops (No Local, Retain Handling, the
//! client's Maximum Packet Size) gets no ack, or not the right one, from
//! the client, so the connection acknowledges it itself. Those acks wait
//! here behind the ones the client still owes for earlier forwards, and the
//! client's acks go through here too, so the router sees one ordered
//! stream and never waits for an ack that will not come.
//!
//! Packet ids are the router's: a forward delivered at QoS 1 or 2 keeps its
//! id, so the client's ack names it.

use std::collections::VecDeque;

use rumqttd::protocol::{
    Packet, PubAck, PubAckReason, PubComp, PubCompReason, PubRec, PubRecReason,
};

/// A forward the router counts in flight.
#[derive(Debug)]
struct InFlight {
    pkid: u16,
    /// The router's QoS for it (1 or 2): it wants PUBACK or PUBREC.
    router_qos: u8,
    /// The QoS it went to the client with (0 when dropped).
    client_qos: u8,
    /// Whether the router's ack may go (the client acked, or owes none).
    done: bool,
}

/// A QoS 2 forward the router has been sent PUBREC for.
#[derive(Debug)]
struct Release {
    pkid: u16,
    /// The client got it at QoS 2 and sends the PUBCOMP itself.
    client_completes: bool,
    done: bool,
}

#[derive(Debug, Default)]
pub(crate) struct RouterAcks {
    in_flight: VecDeque<InFlight>,
    releases: VecDeque<Release>,
}

/// What to do with a client's ack or a router's PUBREL.
#[derive(Debug, PartialEq)]
pub(crate) enum Route {
    /// Pass it on unchanged: it is not one this ledger knows (a session the
    /// router resumed resends state of an earlier connection).
    PassThrough,
    /// Send these to the router (possibly none yet).
    ToRouter(Vec<Packet>),
}

impl RouterAcks {
    /// Records a forward the router sent at `router_qos` with `pkid`, which
    /// went to the client at `client_qos` (0: the client owes nothing).
    /// Returns the acks that may go to the router now.
    pub(crate) fn forwarded(&mut self, pkid: u16, router_qos: u8, client_qos: u8) -> Vec<Packet> {
        if router_qos == 0 {
            return Vec::new();
        }
        self.in_flight.push_back(InFlight {
            pkid,
            router_qos,
            client_qos,
            done: client_qos == 0,
        });
        self.drain()
    }

    /// The client's PUBACK or PUBREC for `pkid`.
    pub(crate) fn client_acked(&mut self, pkid: u16) -> Route {
        let owed = self
            .in_flight
            .iter_mut()
            .find(|f| f.pkid == pkid && f.client_qos > 0 && !f.done);
        match owed {
            Some(forward) => {
                forward.done = true;
                Route::ToRouter(self.drain())
            }
            None => Route::PassThrough,
        }
    }

    /// The router's PUBREL for `pkid`: `true` when it goes on to the
    /// client; otherwise the PUBCOMP is the connection's to send, and goes
    /// out with [`RouterAcks::completions`].
    pub(crate) fn router_released(&mut self, pkid: u16) -> bool {
        let release = self
            .releases
            .iter_mut()
            .find(|r| r.pkid == pkid && !r.done && !r.client_completes);
        match release {
            Some(release) => {
                release.done = true;
                false
            }
            None => true,
        }
    }

    /// The client's PUBCOMP for `pkid`.
    pub(crate) fn client_completed(&mut self, pkid: u16) -> Route {
        let release = self
            .releases
            .iter_mut()
            .find(|r| r.pkid == pkid && !r.done && r.client_completes);
        match release {
            Some(release) => {
                release.done = true;
                Route::ToRouter(self.completions())
            }
            None => Route::PassThrough,
        }
    }

    /// The PUBCOMPs that may go to the router now, in its order.
    pub(crate) fn completions(&mut self) -> Vec<Packet> {
        let mut out = Vec::new();
        while self.releases.front().is_some_and(|r| r.done) {
            let Some(release) = self.releases.pop_front() else {
                break;
            };
            let comp = PubComp {
                pkid: release.pkid,
                reason: PubCompReason::Success,
            };
            out.push(Packet::PubComp(comp, None));
        }
        out
    }

    /// Pops the forwards at the front whose ack may go, as the router's
    /// PUBACKs/PUBRECs.
    fn drain(&mut self) -> Vec<Packet> {
        let mut out = Vec::new();
        while self.in_flight.front().is_some_and(|f| f.done) {
            let Some(forward) = self.in_flight.pop_front() else {
                break;
            };
            if forward.router_qos == 1 {
                let ack = PubAck {
                    pkid: forward.pkid,
                    reason: PubAckReason::Success,
                };
                out.push(Packet::PubAck(ack, None));
            } else {
                self.releases.push_back(Release {
                    pkid: forward.pkid,
                    client_completes: forward.client_qos == 2,
                    done: false,
                });
                let rec = PubRec {
                    pkid: forward.pkid,
                    reason: PubRecReason::Success,
                };
                out.push(Packet::PubRec(rec, None));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(packets: &[Packet]) -> Vec<String> {
        packets
            .iter()
            .map(|p| match p {
                Packet::PubAck(a, _) => format!("puback {}", a.pkid),
                Packet::PubRec(r, _) => format!("pubrec {}", r.pkid),
                Packet::PubComp(c, _) => format!("pubcomp {}", c.pkid),
                other => format!("{other:?}"),
            })
            .collect()
    }

    fn to_router(route: Route) -> Vec<String> {
        match route {
            Route::ToRouter(packets) => names(&packets),
            Route::PassThrough => vec!["pass".into()],
        }
    }

    #[test]
    fn a_downgraded_forward_is_acked_at_once_when_nothing_is_owed_before_it() {
        let mut acks = RouterAcks::default();
        assert_eq!(names(&acks.forwarded(1, 1, 0)), ["puback 1"]);
        assert_eq!(names(&acks.forwarded(2, 2, 0)), ["pubrec 2"]);
        assert!(!acks.router_released(2));
        assert_eq!(names(&acks.completions()), ["pubcomp 2"]);
    }

    #[test]
    fn the_connection_s_acks_wait_behind_the_client_s() {
        let mut acks = RouterAcks::default();
        assert!(acks.forwarded(1, 1, 1).is_empty());
        assert!(acks.forwarded(2, 1, 0).is_empty());
        assert!(acks.forwarded(3, 2, 1).is_empty());
        assert_eq!(to_router(acks.client_acked(1)), ["puback 1", "puback 2"]);
        assert_eq!(to_router(acks.client_acked(3)), ["pubrec 3"]);
        // The client got 3 at QoS 1: the PUBREL is not for it.
        assert!(!acks.router_released(3));
        assert_eq!(names(&acks.completions()), ["pubcomp 3"]);
    }

    #[test]
    fn a_qos_2_delivery_is_completed_by_the_client_in_order() {
        let mut acks = RouterAcks::default();
        assert!(acks.forwarded(1, 2, 2).is_empty());
        assert_eq!(names(&acks.forwarded(2, 2, 0)), Vec::<String>::new());
        assert_eq!(to_router(acks.client_acked(1)), ["pubrec 1", "pubrec 2"]);
        assert!(acks.router_released(1));
        assert!(!acks.router_released(2));
        // 2's PUBCOMP waits for the client's PUBCOMP of 1.
        assert!(acks.completions().is_empty());
        assert_eq!(
            to_router(acks.client_completed(1)),
            ["pubcomp 1", "pubcomp 2"]
        );
    }

    #[test]
    fn acks_it_does_not_know_pass_through() {
        let mut acks = RouterAcks::default();
        assert_eq!(acks.client_acked(5), Route::PassThrough);
        assert_eq!(acks.client_completed(5), Route::PassThrough);
        assert!(acks.router_released(5));
    }

    mod model {
        use super::*;
        use proptest::prelude::*;

        /// What the router checks: each PUBACK/PUBREC names the oldest
        /// forward in flight, each PUBCOMP the oldest PUBREL, and every
        /// forward is acknowledged in the end.
        #[derive(Default)]
        struct Router {
            in_flight: VecDeque<(u16, u8)>,
            released: VecDeque<u16>,
            /// PUBRELs it has sent and not yet handed to the ledger.
            to_release: Vec<u16>,
        }

        impl Router {
            fn take(&mut self, packets: Vec<Packet>) {
                for packet in packets {
                    match packet {
                        Packet::PubAck(ack, _) => {
                            assert_eq!(self.in_flight.pop_front(), Some((ack.pkid, 1)));
                        }
                        Packet::PubRec(rec, _) => {
                            assert_eq!(self.in_flight.pop_front(), Some((rec.pkid, 2)));
                            self.released.push_back(rec.pkid);
                            self.to_release.push(rec.pkid);
                        }
                        Packet::PubComp(comp, _) => {
                            assert_eq!(self.released.pop_front(), Some(comp.pkid));
                        }
                        other => panic!("unexpected {other:?}"),
                    }
                }
            }
        }

        proptest! {
            /// Forwards at router QoS 1/2 delivered at any QoS up to it (or
            /// dropped), the client acking each one at some later point in
            /// order: the router sees a valid ack stream and ends with
            /// nothing in flight.
            #[test]
            fn the_router_always_gets_its_acks_in_order(
                forwards in proptest::collection::vec((1u8..=2, 0u8..=2, 0usize..4), 1..60)
            ) {
                let mut acks = RouterAcks::default();
                let mut router = Router::default();
                // Deliveries the client still has to ack (pkid, client QoS).
                let mut client: VecDeque<(u16, u8)> = VecDeque::new();
                let mut client_comps: VecDeque<u16> = VecDeque::new();
                for (i, (router_qos, client_qos, client_acks)) in forwards.into_iter().enumerate() {
                    let pkid = (i % 100) as u16 + 1;
                    let client_qos = client_qos.min(router_qos);
                    router.in_flight.push_back((pkid, router_qos));
                    let out = acks.forwarded(pkid, router_qos, client_qos);
                    router.take(out);
                    if client_qos > 0 {
                        client.push_back((pkid, client_qos));
                    }
                    for _ in 0..client_acks {
                        let Some((pkid, qos)) = client.pop_front() else { break };
                        if let Route::ToRouter(out) = acks.client_acked(pkid) {
                            router.take(out);
                        } else {
                            panic!("the ledger knows {pkid}");
                        }
                        if qos == 2 {
                            client_comps.push_back(pkid);
                        }
                    }
                    for pkid in std::mem::take(&mut router.to_release) {
                        if !acks.router_released(pkid) {
                            let comps = acks.completions();
                            router.take(comps);
                        }
                    }
                    while let Some(pkid) = client_comps.pop_front() {
                        if let Route::ToRouter(out) = acks.client_completed(pkid) {
                            router.take(out);
                        }
                    }
                }
                while let Some((pkid, qos)) = client.pop_front() {
                    if let Route::ToRouter(out) = acks.client_acked(pkid) {
                        router.take(out);
                    }
                    for released in std::mem::take(&mut router.to_release) {
                        if !acks.router_released(released) {
                            let comps = acks.completions();
                            router.take(comps);
                        }
                    }
                    if qos == 2 {
                        if let Route::ToRouter(out) = acks.client_completed(pkid) {
                            router.take(out);
                        }
                    }
                }
                prop_assert!(router.in_flight.is_empty());
                prop_assert!(router.released.is_empty());
            }
        }
    }
}
