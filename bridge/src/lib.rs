//! Backhaul: a store-and-forward bridge for the plant floor.
//!
//! Devices publish MQTT to the embedded broker (`backhaul-broker`); each
//! data flow's messages wait in its queue (`backhaul-storage`) until the
//! flow's endpoint confirms them. This crate holds what sits around them:
//!
//! - [`config`]: the configuration directory (Azure IoT Operations resources
//!   plus Backhaul's `Appliance`), validated up front.
//! - [`flow`]: a data flow's task: read, prepare, send, acknowledge.
//! - [`endpoint`]: destinations behind the [`endpoint::Sink`] trait.
//! - [`metrics`] and [`http`]: Prometheus text, health and readiness.
//! - [`sd_notify`] and [`watchdog`]: readiness and liveness for systemd.
//! - [`scheduling`]: the threads' Linux scheduling policy.
//! - [`app`]: everything wired together; `main.rs` is the CLI around it.

pub mod app;
pub mod broker_metrics;
pub mod config;
pub mod datasets;
pub mod deadletter;
pub mod endpoint;
pub mod flow;
pub mod health;
pub mod http;
pub mod metrics;
pub mod passwd_cli;
pub mod scheduling;
pub mod sd_notify;
pub mod watchdog;

/// The mapping language lives in its own crate (`backhaul-mapping`).
pub use backhaul_mapping as mapping;
