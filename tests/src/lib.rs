//! Harness for end-to-end tests: throwaway PostgreSQL clusters on free loopback ports
//! and the real `culvert-agent` binary.

pub mod agent;
pub mod cluster;

pub use agent::Agent;
pub use cluster::Cluster;

/// Poll `f` every 200 ms until it returns true or `secs` pass.
pub fn wait_until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    panic!("timed out after {secs} s waiting for {what}");
}
