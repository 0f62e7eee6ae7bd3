//! Resource limits applied to every connector instance.

use serde::Deserialize;

/// Caps for one connector instance.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Linear memory cap in MiB.
    #[serde(default = "default_memory_mib")]
    pub memory_mib: u64,
    /// CPU time one call may spend running guest code, in seconds.
    #[serde(default = "default_cpu_seconds")]
    pub cpu_seconds_per_call: f64,
    /// Wall-clock time one call may take, waiting included, in seconds.
    #[serde(default = "default_call_timeout")]
    pub call_timeout_seconds: f64,
}

fn default_memory_mib() -> u64 {
    512
}

fn default_cpu_seconds() -> f64 {
    60.0
}

fn default_call_timeout() -> f64 {
    600.0
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_mib: default_memory_mib(),
            cpu_seconds_per_call: default_cpu_seconds(),
            call_timeout_seconds: default_call_timeout(),
        }
    }
}

/// Milliseconds between epoch ticks; CPU budgets are counted in ticks.
pub const TICK_MS: u64 = 10;

impl Limits {
    /// CPU budget of one call in epoch ticks.
    pub fn cpu_ticks(&self) -> u64 {
        ((self.cpu_seconds_per_call * 1000.0) / TICK_MS as f64)
            .ceil()
            .max(1.0) as u64
    }

    /// Memory cap in bytes.
    pub fn memory_bytes(&self) -> usize {
        (self.memory_mib as usize).saturating_mul(1 << 20)
    }
}
