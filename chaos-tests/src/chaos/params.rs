//! The size of a scenario, from environment variables, so that a longer
//! soak runs by hand with the same code (README, "Tested failure modes").
//! The defaults are CI's: all scenarios together fit in 20 minutes on
//! 2 cores.

use std::time::Duration;

/// A number from `name`, or `default` when it is unset. A value that does
/// not parse is a mistake worth failing on, not a silent default.
pub fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(value) => value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a whole number")),
        Err(_) => default,
    }
}

/// `BACKHAUL_CHAOS_RATE`: publishes per second of the numbered stream.
pub fn rate() -> u32 {
    u32::try_from(env_u64("BACKHAUL_CHAOS_RATE", 200)).unwrap_or(u32::MAX)
}

/// Seconds from `name` (default `default`).
pub fn secs(name: &str, default: u64) -> Duration {
    Duration::from_secs(env_u64(name, default))
}

/// `BACKHAUL_CHAOS_MESSAGES`, else enough messages at [`rate`] to keep
/// traffic flowing for `flowing` (the fault and some time either side).
pub fn messages(flowing: Duration) -> u64 {
    let default = (f64::from(rate()) * flowing.as_secs_f64()).ceil() as u64;
    env_u64("BACKHAUL_CHAOS_MESSAGES", default.max(100))
}

/// `BACKHAUL_CHAOS_DRAIN_SECS`: how long the backlog may take to drain
/// before the scenario fails (a deadline, not a measurement).
pub fn drain_deadline() -> Duration {
    secs("BACKHAUL_CHAOS_DRAIN_SECS", 300)
}
