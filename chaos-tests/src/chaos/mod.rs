//! The chaos suites' kit: Backhaul and its peers in containers on networks
//! each test creates, faults injected through the Docker engine, and the
//! checks of the durability contract (`../shared/DESIGN.md`).
//!
//! - [`params`]: scenario sizes from environment variables;
//! - [`appliance`]: the Backhaul container;
//! - [`mqtt_rig`]: Backhaul → remote Mosquitto over a cuttable uplink;
//! - [`mqtt_scenario`]: one fault while a numbered stream flows;
//! - [`eventhubs_rig`]: Backhaul → the in-tree Event Hubs peer;
//! - [`backlog`]: the backlog gauge watched during a fault;
//! - [`accounting`]: received = delivered + queued + dropped;
//! - [`verdict`]: nothing lost, order kept, duplicates only as re-sends;
//! - [`scenario`]: the steps every scenario shares.

pub mod accounting;
pub mod appliance;
pub mod backlog;
pub mod eventhubs_rig;
pub mod mqtt_rig;
pub mod mqtt_scenario;
pub mod params;
pub mod scenario;
pub mod verdict;
