//! The `$cbs` node: claims-based security. The SDK puts a token for every
//! path it uses (`$management`, the hub, each partition) before it uses it;
//! `fe2o3-amqp-cbs` accepts only status 202. The token itself is not
//! checked; while [`super::Faults::reject_tokens`] is on the answer is 401.

use std::sync::Arc;

use fe2o3_amqp::types::messaging::{Body, Message};
use fe2o3_amqp::types::primitives::Value;
use fe2o3_amqp::Receiver;
use tracing::debug;

use super::connection::ReplyLinks;
use super::management::{reply, string_property};
use super::{bump, lock, CbsToken, Shared};

pub(crate) async fn serve(mut receiver: Receiver, replies: Arc<ReplyLinks>, shared: Arc<Shared>) {
    let mut reply_link = None;
    loop {
        let delivery = match receiver.recv::<Body<Value>>().await {
            Ok(delivery) => delivery,
            Err(err) => {
                debug!(%err, "$cbs link closed");
                return;
            }
        };
        shared.settle_latency().await;
        let _ = receiver.accept(&delivery).await;
        let request: &Message<Body<Value>> = delivery.message();
        let operation = string_property(request, "operation").unwrap_or_default();
        let (status, description) = if operation != "put-token" {
            (400, format!("unsupported $cbs operation {operation:?}"))
        } else if shared.faults().reject_tokens {
            (401, "the test peer rejects every token".to_string())
        } else {
            (202, "Accepted".to_string())
        };
        if operation == "put-token" {
            bump(&shared.counters.put_tokens);
            lock(&shared.tokens).push(CbsToken {
                audience: string_property(request, "name").unwrap_or_default(),
                token_type: string_property(request, "type").unwrap_or_default(),
                token: match &request.body {
                    Body::Value(value) => match &value.0 {
                        Value::String(token) => token.clone(),
                        _ => String::new(),
                    },
                    _ => String::new(),
                },
                status,
            });
        }
        if reply_link.is_none() {
            reply_link = replies.get("$cbs").await;
        }
        let Some(link) = reply_link.as_ref() else {
            debug!("no $cbs reply link attached");
            return;
        };
        if let Err(err) = reply(
            &mut *link.lock().await,
            request,
            status,
            &description,
            Value::Null,
        )
        .await
        {
            debug!(%err, "$cbs reply failed");
            return;
        }
    }
}
