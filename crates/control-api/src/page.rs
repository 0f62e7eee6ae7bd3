//! Cursor pagination of list responses.

use serde::{Deserialize, Serialize};

/// One page of a list, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Page<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Largest `limit` a list accepts.
pub const MAX_LIMIT: u32 = 200;
/// `limit` when none is given.
pub const DEFAULT_LIMIT: u32 = 50;
