//! What the agent offers a connector: logging, metrics and name resolution.
//!
//! Compiled for a native target (unit tests), logs go to stderr, metrics are dropped
//! and [`resolve`] asks the system resolver, so connector code can be tested natively.

#[cfg(target_arch = "wasm32")]
use crate::bindings::source::culvert::connector::host as wit_host;

/// Log severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Very detailed tracing.
    Trace,
    /// Diagnostics for developers.
    Debug,
    /// Normal operation worth recording.
    Info,
    /// Something the operator may need to act on.
    Warn,
    /// A failure.
    Error,
}

impl Level {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

#[cfg(target_arch = "wasm32")]
impl From<Level> for wit_host::Level {
    fn from(level: Level) -> wit_host::Level {
        match level {
            Level::Trace => wit_host::Level::Trace,
            Level::Debug => wit_host::Level::Debug,
            Level::Info => wit_host::Level::Info,
            Level::Warn => wit_host::Level::Warn,
            Level::Error => wit_host::Level::Error,
        }
    }
}

/// Write a log line, attributed to this connector instance by the agent.
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    wit_host::log(level.into(), message);
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[{}] {message}", level.as_str());
}

/// Add to a counter metric owned by this connector instance.
pub fn counter_add(name: &str, value: u64) {
    #[cfg(target_arch = "wasm32")]
    wit_host::counter_add(name, value);
    #[cfg(not(target_arch = "wasm32"))]
    let _ = (name, value);
}

/// Set a gauge metric owned by this connector instance.
pub fn gauge_set(name: &str, value: f64) {
    #[cfg(target_arch = "wasm32")]
    wit_host::gauge_set(name, value);
    #[cfg(not(target_arch = "wasm32"))]
    let _ = (name, value);
}

/// Resolve a host name named in the configuration to IP addresses. The agent refuses
/// names outside the pipeline's egress allow-list; the `Err` says why.
pub fn resolve(name: &str) -> Result<Vec<String>, String> {
    #[cfg(target_arch = "wasm32")]
    {
        wit_host::resolve(name)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        use std::net::ToSocketAddrs;
        let addrs = (name, 0)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve `{name}`: {e}"))?;
        let mut ips: Vec<String> = addrs.map(|a| a.ip().to_string()).collect();
        ips.dedup();
        Ok(ips)
    }
}

/// Log at `trace` level with `format!` arguments.
#[macro_export]
macro_rules! trace {
    ($($arg:tt)+) => { $crate::host::log($crate::host::Level::Trace, &::std::format!($($arg)+)) };
}

/// Log at `debug` level with `format!` arguments.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)+) => { $crate::host::log($crate::host::Level::Debug, &::std::format!($($arg)+)) };
}

/// Log at `info` level with `format!` arguments.
#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => { $crate::host::log($crate::host::Level::Info, &::std::format!($($arg)+)) };
}

/// Log at `warn` level with `format!` arguments.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => { $crate::host::log($crate::host::Level::Warn, &::std::format!($($arg)+)) };
}

/// Log at `error` level with `format!` arguments.
#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => { $crate::host::log($crate::host::Level::Error, &::std::format!($($arg)+)) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_fallbacks_do_not_trap() {
        crate::info!("rows {}", 3);
        counter_add("rows", 3);
        gauge_set("lag", 1.5);
        let ips = resolve("127.0.0.1").unwrap();
        assert_eq!(ips, vec!["127.0.0.1".to_string()]);
    }

    #[test]
    fn levels_are_ordered() {
        assert!(Level::Trace < Level::Error);
        assert_eq!(Level::Warn.as_str(), "warn");
    }
}
