//! Which data flows are parked, and why: a flow whose endpoint refuses it
//! for good (authorization, a missing event hub, bad settings) keeps its
//! data and retries slowly; `/readyz` and `backhaul_flow_parked` say so.

use std::collections::BTreeMap;
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct FlowHealth {
    parked: Mutex<BTreeMap<String, String>>,
}

impl FlowHealth {
    pub fn park(&self, flow: &str, reason: &str) {
        self.lock().insert(flow.to_string(), reason.to_string());
    }

    pub fn unpark(&self, flow: &str) {
        self.lock().remove(flow);
    }

    /// Parked flows and the error that parked each.
    pub fn parked(&self) -> Vec<(String, String)> {
        self.lock()
            .iter()
            .map(|(flow, reason)| (flow.clone(), reason.clone()))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        self.parked.lock().unwrap_or_else(|p| p.into_inner())
    }
}
