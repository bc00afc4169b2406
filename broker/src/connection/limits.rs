//! The limits on what a connected client sends, and what an error that
//! ends a connection is counted as and tells an MQTT 5 client.

use std::sync::atomic::Ordering;

use rumqttd::protocol::{DisconnectReasonCode, Error as CodecError};

use crate::broker::{ListenerContext, Shared};
use crate::limits::Limits;
use crate::stats::Rejection;
use crate::ConnectionError;

/// Whether a new client (already counted) is one too many, for the
/// broker's limit (all listeners) or its listener's own.
pub(super) fn too_many_connections(shared: &Shared, listener: &ListenerContext) -> bool {
    let open = shared.stats.connections_active.load(Ordering::Relaxed);
    let on_listener = listener.connections.load(Ordering::Relaxed);
    open > shared.settings.limits.max_connections as u64
        || on_listener > listener.limits.max_connections as u64
}

/// Applies the topic length and level limits to a topic or filter.
pub(super) fn check_topic(
    topic: &str,
    filter: bool,
    settings: &Limits,
) -> Result<(), ConnectionError> {
    if topic.len() > settings.max_topic_length {
        return Err(ConnectionError::TopicTooLong {
            filter,
            length: topic.len(),
            max: settings.max_topic_length,
        });
    }
    let levels = topic.split('/').count();
    if levels > settings.max_topic_levels {
        return Err(ConnectionError::TooManyTopicLevels {
            filter,
            levels,
            max: settings.max_topic_levels,
        });
    }
    Ok(())
}

/// The limit an error stands for, if any.
pub(super) fn rejection(err: &ConnectionError) -> Option<Rejection> {
    Some(match err {
        ConnectionError::Codec(CodecError::PayloadSizeLimitExceeded(_)) => {
            Rejection::PacketTooLarge
        }
        ConnectionError::Codec(_)
        | ConnectionError::NotConnect
        | ConnectionError::SecondConnect
        | ConnectionError::InvalidWill(_)
        | ConnectionError::UnknownTopicAlias(_) => Rejection::Malformed,
        ConnectionError::ConnectTimeout => Rejection::ConnectTimeout,
        ConnectionError::WebSocketHandshake(_) => Rejection::WebSocketHandshake,
        ConnectionError::TopicTooLong { .. } => Rejection::TopicTooLong,
        ConnectionError::TooManyTopicLevels { .. } => Rejection::TooManyTopicLevels,
        ConnectionError::ReceiveMaximumExceeded(_) => Rejection::ReceiveMaximumExceeded,
        _ => return None,
    })
}

pub(super) fn count_rejection(shared: &Shared, err: &ConnectionError) {
    if let Some(reason) = rejection(err) {
        shared.stats.packets_rejected.inc(reason);
    }
}

/// The MQTT 5 DISCONNECT reason for an error, if the client should hear it.
pub(super) fn disconnect_reason(err: &ConnectionError) -> Option<DisconnectReasonCode> {
    Some(match err {
        ConnectionError::Codec(CodecError::PayloadSizeLimitExceeded(_)) => {
            DisconnectReasonCode::PacketTooLarge
        }
        ConnectionError::Codec(_) => DisconnectReasonCode::MalformedPacket,
        ConnectionError::SecondConnect => DisconnectReasonCode::ProtocolError,
        ConnectionError::UnknownTopicAlias(_) => DisconnectReasonCode::TopicAliasInvalid,
        ConnectionError::KeepAliveTimeout => DisconnectReasonCode::KeepAliveTimeout,
        ConnectionError::TakenOver => DisconnectReasonCode::SessionTakenOver,
        ConnectionError::TopicTooLong { filter: false, .. }
        | ConnectionError::TooManyTopicLevels { filter: false, .. } => {
            DisconnectReasonCode::TopicNameInvalid
        }
        ConnectionError::TopicTooLong { filter: true, .. }
        | ConnectionError::TooManyTopicLevels { filter: true, .. } => {
            DisconnectReasonCode::TopicFilterInvalid
        }
        ConnectionError::ReceiveMaximumExceeded(_) => DisconnectReasonCode::ReceiveMaximumExceeded,
        _ => return None,
    })
}
