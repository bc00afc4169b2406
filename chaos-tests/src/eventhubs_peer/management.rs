//! The `$management` node: `READ` of an event hub (`com.microsoft:eventhub`)
//! and of one of its partitions (`com.microsoft:partition`), answered with
//! status 200 and the attribute map the SDK requires
//! (`azure_messaging_eventhubs` `src/common/management.rs`; it panics on a
//! value of the wrong AMQP type, so the types here are exact).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use fe2o3_amqp::link::SendError;
use fe2o3_amqp::types::messaging::{ApplicationProperties, Body, Message, Properties};
use fe2o3_amqp::types::primitives::{Array, OrderedMap, SimpleValue, Timestamp, Value};
use fe2o3_amqp::{Receiver, Sendable, Sender};
use tracing::debug;

use super::connection::ReplyLinks;
use super::{bump, Shared};

pub(crate) async fn serve(mut receiver: Receiver, replies: Arc<ReplyLinks>, shared: Arc<Shared>) {
    let mut reply_link = None;
    loop {
        let delivery = match receiver.recv::<Body<Value>>().await {
            Ok(delivery) => delivery,
            Err(err) => {
                debug!(%err, "$management link closed");
                return;
            }
        };
        shared.settle_latency().await;
        let _ = receiver.accept(&delivery).await;
        let request = delivery.message();
        bump(&shared.counters.management_reads);
        let (status, description, body) = answer(request, &shared);
        if reply_link.is_none() {
            reply_link = replies.get("$management").await;
        }
        let Some(link) = reply_link.as_ref() else {
            debug!("no $management reply link attached");
            return;
        };
        if let Err(err) = reply(&mut *link.lock().await, request, status, &description, body).await
        {
            debug!(%err, "$management reply failed");
            return;
        }
    }
}

fn answer(request: &Message<Body<Value>>, shared: &Shared) -> (u16, String, Value) {
    let operation = string_property(request, "operation").unwrap_or_default();
    let kind = string_property(request, "type").unwrap_or_default();
    let hub = string_property(request, "name").unwrap_or_default();
    if operation != "READ" {
        return (
            400,
            format!("unsupported operation {operation:?}"),
            Value::Null,
        );
    }
    if let Some(hubs) = &shared.options.hubs {
        if !hubs.contains(&hub) {
            return (404, format!("event hub {hub:?} not found"), Value::Null);
        }
    }
    let count = shared.options.partition_count;
    let now = now_timestamp();
    let mut map: OrderedMap<String, Value> = OrderedMap::new();
    match kind.as_str() {
        "com.microsoft:eventhub" => {
            let ids: Vec<Value> = (0..count).map(|p| Value::String(p.to_string())).collect();
            map.insert("name".into(), Value::String(hub));
            map.insert("type".into(), Value::String(kind));
            map.insert("created_at".into(), Value::Timestamp(now));
            map.insert("partition_count".into(), Value::Int(count as i32));
            map.insert("partition_ids".into(), Value::Array(Array::from(ids)));
        }
        "com.microsoft:partition" => {
            let partition = string_property(request, "partition").unwrap_or_default();
            if !partition.parse::<u32>().map(|p| p < count).unwrap_or(false) {
                return (
                    404,
                    format!("partition {partition:?} of {hub:?} not found"),
                    Value::Null,
                );
            }
            let stored = shared.store.count_in_partition(&hub, &partition) as i64;
            map.insert("type".into(), Value::String(kind));
            map.insert("name".into(), Value::String(hub));
            map.insert("partition".into(), Value::String(partition));
            map.insert("begin_sequence_number".into(), Value::Long(0));
            map.insert(
                "last_enqueued_sequence_number".into(),
                Value::Long(stored - 1),
            );
            map.insert("last_enqueued_sequence_number_epoch".into(), Value::Long(0));
            map.insert(
                "last_enqueued_offset".into(),
                Value::String((stored - 1).to_string()),
            );
            map.insert("last_enqueued_time_utc".into(), Value::Timestamp(now));
            map.insert("is_partition_empty".into(), Value::Bool(stored == 0));
        }
        other => return (400, format!("unsupported type {other:?}"), Value::Null),
    }
    (200, "OK".to_string(), Value::Map(into_value_map(map)))
}

fn into_value_map(map: OrderedMap<String, Value>) -> OrderedMap<Value, Value> {
    map.into_iter()
        .map(|(k, v)| (Value::String(k), v))
        .collect()
}

fn now_timestamp() -> Timestamp {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    Timestamp::from_milliseconds(ms)
}

/// A string application property of a request.
pub(crate) fn string_property(message: &Message<Body<Value>>, key: &str) -> Option<String> {
    match message.application_properties.as_ref()?.get(key)? {
        SimpleValue::String(s) => Some(s.clone()),
        SimpleValue::Symbol(s) => Some(s.0.clone()),
        other => Some(format!("{other:?}")),
    }
}

/// Answers `request` on `link`: `status-code`, `status-description`,
/// `correlation-id` = the request's message id, an amqp-value body. Sent
/// pre-settled, so a client that never settles cannot stall the node.
pub(crate) async fn reply(
    link: &mut Sender,
    request: &Message<Body<Value>>,
    status: u16,
    description: &str,
    body: Value,
) -> Result<(), SendError> {
    let correlation_id = request
        .properties
        .as_ref()
        .and_then(|p| p.message_id.clone());
    let to = request.properties.as_ref().and_then(|p| p.reply_to.clone());
    let properties = Properties {
        correlation_id,
        to,
        ..Default::default()
    };
    let application_properties = ApplicationProperties::builder()
        .insert("status-code", SimpleValue::Int(i32::from(status)))
        .insert(
            "status-description",
            SimpleValue::String(description.into()),
        )
        .build();
    let message = Message::builder()
        .properties(properties)
        .application_properties(application_properties)
        .value(body)
        .build();
    let sendable = Sendable::builder().message(message).settled(true).build();
    link.send(sendable).await.map(|_| ())
}
