//! The fault switches. Each is read at the moment it matters (a new TCP
//! connection, a transfer arriving, a token put), so flipping one takes
//! effect at once on connections that are already open.

use std::time::Duration;

/// The peer's fault switches; `Faults::default()` is a healthy service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults {
    /// New TCP connections are reset at once (SO_LINGER 0).
    pub refuse: bool,
    /// No byte passes on any connection, new or open; a new connection is
    /// accepted and never answered.
    pub silent: bool,
    /// Event transfers are rejected with this condition.
    pub reject: Option<Rejection>,
    /// Event transfers are never settled (and not stored).
    pub blackhole: bool,
    /// Each event transfer is settled only after this delay.
    pub settle_delay: Option<Duration>,
    /// An event transfer is stored, then its connection is cut unsettled.
    pub drop_on_transfer: bool,
    /// CBS `put-token` answers 401.
    pub reject_tokens: bool,
}

/// The AMQP error a rejected transfer carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// E.g. `com.microsoft:server-busy`, `amqp:resource-limit-exceeded`,
    /// `amqp:unauthorized-access`, `amqp:not-found`.
    pub condition: String,
    pub description: Option<String>,
}

impl Rejection {
    pub(crate) fn to_amqp(&self) -> fe2o3_amqp::types::definitions::Error {
        use fe2o3_amqp::types::definitions::{Error, ErrorCondition};
        use fe2o3_amqp::types::primitives::Symbol;
        Error::new(
            ErrorCondition::Custom(Symbol::from(self.condition.as_str())),
            self.description.clone(),
            None,
        )
    }
}
