//! Event links: the SDK's sender links to `amqps://<ns>/<hub>` and
//! `amqps://<ns>/<hub>/Partitions/<id>`. Each transfer (one event, or a
//! batch envelope) is settled according to the fault switches, read when it
//! arrives: dropped with its connection, left unsettled, rejected, or (after
//! the settle delay) stored and accepted. Storing comes before accepting,
//! so a sender that saw `Accepted` finds its events in the store.

use std::sync::Arc;

use fe2o3_amqp::types::definitions::{AmqpError, Error, ErrorCondition};
use fe2o3_amqp::types::messaging::Body;
use fe2o3_amqp::types::primitives::{Symbol, Value};
use fe2o3_amqp::Receiver;
use tracing::debug;

use super::{batch, bump, parse_target, Shared};

pub(crate) async fn serve(
    connection: u64,
    mut receiver: Receiver,
    address: String,
    shared: Arc<Shared>,
) {
    let (hub, partition) = parse_target(&address);
    loop {
        let delivery = match receiver.recv::<Body<Value>>().await {
            Ok(delivery) => delivery,
            Err(err) => {
                debug!(%address, %err, "event link closed");
                return;
            }
        };
        let transfer = bump(&shared.counters.transfers);
        let events = batch::unpack(&delivery, &hub, partition.as_deref(), transfer, connection);
        let faults = shared.faults();
        if faults.drop_on_transfer {
            if let Ok(events) = events {
                shared.store.push_all(events);
            }
            shared.drop_connection(connection);
            return;
        }
        if faults.blackhole {
            bump(&shared.counters.blackholed);
            continue;
        }
        shared.settle_latency().await;
        if let Some(rejection) = &faults.reject {
            bump(&shared.counters.rejected);
            let _ = receiver.reject(&delivery, rejection.to_amqp()).await;
            continue;
        }
        if let Some(delay) = faults.settle_delay {
            tokio::time::sleep(delay).await;
        }
        match events {
            Ok(events) => {
                shared.store.push_all(events);
                let _ = receiver.accept(&delivery).await;
            }
            Err(err) => {
                debug!(%err, "undecodable transfer");
                let error = Error::new(AmqpError::DecodeError, Some(err), None);
                let _ = receiver.reject(&delivery, error).await;
            }
        }
    }
}

/// Why a link to this address cannot exist, as the service says it:
/// `amqp:not-found` for an unknown hub, `com.microsoft:argument-out-of-range`
/// for a partition the hub does not have.
pub(crate) fn refusal(address: &str, shared: &Shared) -> Option<Error> {
    let (hub, partition) = parse_target(address);
    let (hub, partition) = (hub.as_str(), partition.as_deref());
    if let Some(hubs) = &shared.options.hubs {
        if !hubs.iter().any(|h| h == hub) {
            return Some(Error::new(
                AmqpError::NotFound,
                Some(format!("The messaging entity '{hub}' could not be found.")),
                None,
            ));
        }
    }
    if let Some(id) = partition {
        let valid = id
            .parse::<u32>()
            .map(|p| p < shared.options.partition_count)
            .unwrap_or(false);
        if !valid {
            return Some(Error::new(
                ErrorCondition::Custom(Symbol::from("com.microsoft:argument-out-of-range")),
                Some(format!("partition '{id}' does not exist in '{hub}'")),
                None,
            ));
        }
    }
    None
}
