//! Fault injection for retry tests: "answer the next N matching requests with status S".
//!
//! Controlled per listener (each vault, and the Resource Manager stand-in) through
//! `POST /_local/faults` (add a rule), `GET /_local/faults` (rules with their remaining counts)
//! and `DELETE /_local/faults` (clear).

use serde::{Deserialize, Serialize};
use std::sync::Mutex;

/// Statuses a rule may inject: the ones Azure clients are expected to retry.
pub const ALLOWED_STATUSES: [u16; 3] = [429, 500, 503];
// Azure always tells a throttled client how long to back off.
const DEFAULT_THROTTLE_RETRY_AFTER: u64 = 1;

/// One rule as posted: `{"status":429,"retry_after":1,"count":2,"operations":["decrypt"],"path_contains":"/keys/"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    /// The HTTP status to answer.
    pub status: u16,
    /// Seconds for the `Retry-After` header (429 always gets one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    /// How many more requests this rule answers.
    pub count: u32,
    /// Operation names this rule applies to; all operations when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operations: Option<Vec<String>>,
    /// Only requests whose path contains this text (case-insensitive) match; all paths when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_contains: Option<String>,
}

/// A fault to answer one request with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Injected {
    /// The HTTP status.
    pub status: u16,
    /// Seconds for the `Retry-After` header, if any.
    pub retry_after: Option<u64>,
}

/// A rule that cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FaultError {
    /// Status outside [`ALLOWED_STATUSES`].
    #[error("status {0} is not injectable (use 429, 500 or 503)")]
    Status(u16),
    /// A zero count would never fire.
    #[error("count must be at least 1")]
    Count,
    /// An operation name that no route has.
    #[error("unknown operation '{name}' (known: {known})")]
    Operation {
        /// The name as posted.
        name: String,
        /// The accepted names.
        known: String,
    },
}

/// The active rules of one vault, consumed in the order they were added.
#[derive(Debug, Default)]
pub struct Faults {
    rules: Mutex<Vec<FaultRule>>,
}

impl Faults {
    /// Validates and appends a rule; `known_operations` are the names routes report.
    pub fn add(&self, mut rule: FaultRule, known_operations: &[&str]) -> Result<(), FaultError> {
        if !ALLOWED_STATUSES.contains(&rule.status) {
            return Err(FaultError::Status(rule.status));
        }
        if rule.count == 0 {
            return Err(FaultError::Count);
        }
        if let Some(ops) = &mut rule.operations {
            for op in ops.iter_mut() {
                *op = op.to_ascii_lowercase();
                if !known_operations.contains(&op.as_str()) {
                    return Err(FaultError::Operation {
                        name: op.clone(),
                        known: known_operations.join(", "),
                    });
                }
            }
        }
        if rule.status == 429 && rule.retry_after.is_none() {
            rule.retry_after = Some(DEFAULT_THROTTLE_RETRY_AFTER);
        }
        self.lock().push(rule);
        Ok(())
    }

    /// Removes every rule.
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// The rules still active, with their remaining counts.
    pub fn snapshot(&self) -> Vec<FaultRule> {
        self.lock().clone()
    }

    /// If a rule matches `operation` on `path`, uses up one of its count and returns the fault to answer.
    pub fn take(&self, operation: &str, path: &str) -> Option<Injected> {
        let mut rules = self.lock();
        let path = path.to_ascii_lowercase();
        let idx = rules.iter().position(|r| {
            r.operations
                .as_ref()
                .is_none_or(|ops| ops.iter().any(|o| o == operation))
                && r.path_contains
                    .as_ref()
                    .is_none_or(|p| path.contains(&p.to_ascii_lowercase()))
        })?;
        let rule = &mut rules[idx];
        let injected = Injected {
            status: rule.status,
            retry_after: rule.retry_after,
        };
        rule.count -= 1;
        if rule.count == 0 {
            rules.remove(idx);
        }
        Some(injected)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<FaultRule>> {
        self.rules.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPS: &[&str] = &["decrypt", "encrypt", "get_key"];

    fn rule(status: u16, count: u32, ops: Option<&[&str]>) -> FaultRule {
        FaultRule {
            status,
            retry_after: None,
            count,
            operations: ops.map(|o| o.iter().map(|s| s.to_string()).collect()),
            path_contains: None,
        }
    }

    #[test]
    fn rule_fires_count_times_for_matching_operations_only() {
        let f = Faults::default();
        f.add(rule(503, 2, Some(&["decrypt"])), OPS).unwrap();
        assert_eq!(f.take("encrypt", "/keys/k/encrypt"), None);
        assert_eq!(
            f.take("decrypt", "/keys/k/decrypt"),
            Some(Injected {
                status: 503,
                retry_after: None
            })
        );
        assert!(f.take("decrypt", "/keys/k/decrypt").is_some());
        assert_eq!(f.take("decrypt", "/keys/k/decrypt"), None);
        assert!(f.snapshot().is_empty());
    }

    #[test]
    fn throttling_always_has_retry_after_and_rules_without_operations_match_all() {
        let f = Faults::default();
        f.add(rule(429, 1, None), OPS).unwrap();
        assert_eq!(
            f.take("get_key", "/keys/k"),
            Some(Injected {
                status: 429,
                retry_after: Some(1)
            })
        );
    }

    #[test]
    fn bad_rules_are_refused() {
        let f = Faults::default();
        assert_eq!(f.add(rule(404, 1, None), OPS), Err(FaultError::Status(404)));
        assert_eq!(f.add(rule(500, 0, None), OPS), Err(FaultError::Count));
        assert!(matches!(
            f.add(rule(500, 1, Some(&["frob"])), OPS),
            Err(FaultError::Operation { .. })
        ));
    }

    #[test]
    fn path_filter_is_case_insensitive() {
        let f = Faults::default();
        let mut r = rule(503, 1, None);
        r.path_contains = Some("virtualMachineScaleSets".into());
        f.add(r, OPS).unwrap();
        assert_eq!(f.take("get_key", "/providers/microsoft.network/x"), None);
        assert!(
            f.take(
                "get_key",
                "/providers/Microsoft.Compute/VIRTUALMACHINESCALESETS/s"
            )
            .is_some()
        );
    }

    #[test]
    fn clear_removes_everything() {
        let f = Faults::default();
        f.add(rule(500, 5, None), OPS).unwrap();
        f.clear();
        assert_eq!(f.take("decrypt", "/keys/k/decrypt"), None);
    }
}
