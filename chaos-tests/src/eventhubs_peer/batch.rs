//! Transfers into events. A transfer with message format `0x80013700` is a
//! batch envelope: its body is one data section per event, each holding a
//! complete serialized AMQP message. Any other transfer is one event.

use fe2o3_amqp::types::messaging::annotations::OwnedKey;
use fe2o3_amqp::types::messaging::message::__private::Deserializable;
use fe2o3_amqp::types::messaging::{Body, Message, MessageId};
use fe2o3_amqp::types::primitives::{SimpleValue, Symbol, Value};
use fe2o3_amqp::Delivery;

use super::store::{PropertyValue, ReceivedEvent};
use super::BATCH_MESSAGE_FORMAT;

/// The annotation the SDK puts a partition key in.
pub const PARTITION_KEY_ANNOTATION: &str = "x-opt-partition-key";

/// The events a transfer carries, or why it cannot be read.
pub(crate) fn unpack(
    delivery: &Delivery<Body<Value>>,
    hub: &str,
    partition_id: Option<&str>,
    transfer: u64,
    connection: u64,
) -> Result<Vec<ReceivedEvent>, String> {
    let message = delivery.message();
    let batched = *delivery.message_format() == Some(BATCH_MESSAGE_FORMAT);
    let messages: Vec<Message<Body<Value>>> = if batched {
        let Body::Data(sections) = &message.body else {
            return Err("a batch envelope without data sections".to_string());
        };
        sections
            .iter()
            .map(|section| {
                serde_amqp::from_slice::<Deserializable<Message<Body<Value>>>>(&section.0)
                    .map(|d| d.0)
                    .map_err(|err| format!("an event in a batch envelope: {err}"))
            })
            .collect::<Result<_, _>>()?
    } else {
        vec![message.clone()]
    };
    Ok(messages
        .into_iter()
        .map(|m| ReceivedEvent {
            seq: 0,
            hub: hub.to_string(),
            partition_id: partition_id.map(str::to_string),
            partition_key: partition_key(&m),
            message_id: m
                .properties
                .as_ref()
                .and_then(|p| p.message_id.as_ref())
                .map(id_text),
            correlation_id: m
                .properties
                .as_ref()
                .and_then(|p| p.correlation_id.as_ref())
                .map(id_text),
            content_type: m
                .properties
                .as_ref()
                .and_then(|p| p.content_type.as_ref())
                .map(|s| s.0.clone()),
            properties: m
                .application_properties
                .as_ref()
                .map(|ap| {
                    ap.0.iter()
                        .map(|(k, v)| (k.clone(), property_value(v)))
                        .collect()
                })
                .unwrap_or_default(),
            body: body_bytes(&m.body),
            batched,
            transfer,
            connection,
        })
        .collect())
}

fn partition_key(message: &Message<Body<Value>>) -> Option<String> {
    let annotations = message.message_annotations.as_ref()?;
    let key = OwnedKey::Symbol(Symbol::from(PARTITION_KEY_ANNOTATION));
    match annotations.0.get(&key)? {
        Value::String(s) => Some(s.clone()),
        Value::Symbol(s) => Some(s.0.clone()),
        other => Some(format!("{other:?}")),
    }
}

fn id_text(id: &MessageId) -> String {
    match id {
        MessageId::String(s) => s.clone(),
        MessageId::Ulong(n) => n.to_string(),
        MessageId::Uuid(u) => format!("{u:?}"),
        MessageId::Binary(b) => format!("{:?}", b.as_slice()),
    }
}

fn property_value(value: &SimpleValue) -> PropertyValue {
    match value {
        SimpleValue::Null => PropertyValue::Null,
        SimpleValue::Bool(v) => PropertyValue::Bool(*v),
        SimpleValue::Ubyte(v) => PropertyValue::Uint(u64::from(*v)),
        SimpleValue::Ushort(v) => PropertyValue::Uint(u64::from(*v)),
        SimpleValue::Uint(v) => PropertyValue::Uint(u64::from(*v)),
        SimpleValue::Ulong(v) => PropertyValue::Uint(*v),
        SimpleValue::Byte(v) => PropertyValue::Int(i64::from(*v)),
        SimpleValue::Short(v) => PropertyValue::Int(i64::from(*v)),
        SimpleValue::Int(v) => PropertyValue::Int(i64::from(*v)),
        SimpleValue::Long(v) => PropertyValue::Int(*v),
        SimpleValue::Float(v) => PropertyValue::Double(f64::from(v.into_inner())),
        SimpleValue::Double(v) => PropertyValue::Double(v.into_inner()),
        SimpleValue::String(v) => PropertyValue::String(v.clone()),
        SimpleValue::Binary(v) => PropertyValue::Binary(v.to_vec()),
        other => PropertyValue::Other(format!("{other:?}")),
    }
}

fn body_bytes(body: &Body<Value>) -> Vec<u8> {
    match body {
        Body::Data(sections) => {
            let mut bytes = Vec::with_capacity(sections.iter().map(|d| d.0.len()).sum());
            for section in sections {
                bytes.extend_from_slice(&section.0);
            }
            bytes
        }
        Body::Value(value) => serde_amqp::to_vec(&value.0).unwrap_or_default(),
        Body::Sequence(_) | Body::Empty => Vec::new(),
    }
}
