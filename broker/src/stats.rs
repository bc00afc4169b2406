//! Counters of refused clients and packets, by reason.
//!
//! Each reason is a closed enum with a fixed label, so `/metrics` can show
//! every reason from the start (at 0) and a label can never carry text a
//! client chose (a username, a topic): secrets and device input stay out of
//! the metrics.

use std::sync::atomic::{AtomicU64, Ordering};

/// Declares a reason enum with its metric labels.
macro_rules! reasons {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $label:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The metric label.
            pub fn label(self) -> &'static str {
                match self { $($name::$variant => $label),+ }
            }

            fn index(self) -> usize {
                self as usize
            }
        }
    };
}

reasons!(
    /// Why a client was not let in.
    AuthFailure {
        /// Unknown user or wrong password (not told apart, as on the wire).
        BadCredentials => "bad_credentials",
        /// A password listener got a CONNECT without username or password.
        NoCredentials => "no_credentials",
        /// A listener that requires a client certificate got none.
        NoClientCertificate => "no_client_certificate",
        /// The client certificate is not signed by the listener's CA bundle.
        UnknownCa => "unknown_ca",
        ExpiredCertificate => "expired_certificate",
        /// Any other certificate problem (not yet valid, revoked, wrong
        /// usage, no subject CN).
        BadCertificate => "bad_certificate",
        /// The TLS handshake failed for another reason (such as a plain MQTT
        /// client on a TLS port).
        TlsHandshake => "tls_handshake",
    }
);

reasons!(
    /// What a client was refused by the authorization rules.
    Action {
        Publish => "publish",
        Subscribe => "subscribe",
    }
);

reasons!(
    /// Why a packet or connection was refused by a limit.
    Rejection {
        PacketTooLarge => "packet_too_large",
        TopicTooLong => "topic_too_long",
        TooManyTopicLevels => "too_many_topic_levels",
        ReceiveMaximumExceeded => "receive_maximum_exceeded",
        MaxConnections => "max_connections",
        /// No CONNECT (or TLS handshake) within the connect timeout.
        ConnectTimeout => "connect_timeout",
        /// Bytes that are not MQTT, or MQTT out of order.
        Malformed => "malformed",
        /// A WebSocket listener got no valid upgrade to the `mqtt`
        /// subprotocol on its path (such as plain MQTT on a WebSocket port).
        WebSocketHandshake => "websocket_handshake",
    }
);

/// One counter per reason.
#[derive(Debug)]
pub struct ReasonCounters<R: 'static> {
    reasons: &'static [R],
    counts: Vec<AtomicU64>,
}

/// The reasons that [`ReasonCounters`] can count.
pub trait Reason: Copy + 'static {
    const ALL: &'static [Self];
    fn label(self) -> &'static str;
    fn index(self) -> usize;
}

macro_rules! impl_reason {
    ($($name:ident),+) => {$(
        impl Reason for $name {
            const ALL: &'static [Self] = $name::ALL;
            fn label(self) -> &'static str { $name::label(self) }
            fn index(self) -> usize { $name::index(self) }
        }
    )+};
}
impl_reason!(AuthFailure, Action, Rejection);

impl<R: Reason> Default for ReasonCounters<R> {
    fn default() -> Self {
        Self {
            reasons: R::ALL,
            counts: R::ALL.iter().map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl<R: Reason> ReasonCounters<R> {
    pub fn inc(&self, reason: R) {
        self.counts[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, reason: R) -> u64 {
        self.counts[reason.index()].load(Ordering::Relaxed)
    }

    /// Every reason's label and count, in declaration order.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        self.reasons
            .iter()
            .map(|r| (r.label(), self.get(*r)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_is_listed_from_the_start() {
        let counters = ReasonCounters::<Rejection>::default();
        counters.inc(Rejection::TopicTooLong);
        counters.inc(Rejection::TopicTooLong);
        let snapshot = counters.snapshot();
        assert_eq!(snapshot.len(), Rejection::ALL.len());
        assert_eq!(snapshot[0], ("packet_too_large", 0));
        assert_eq!(snapshot[1], ("topic_too_long", 2));
    }
}
