//! List paging: `{"value":[...],"nextLink":"<absolute url>"}` with `page_size` items per page and
//! the position carried in `$skiptoken`; `nextLink` is absent on the last page.

use super::Request;
use super::error::ArmError;
use serde_json::{Value, json};

/// Cuts the page the request asks for out of `items`; `path` is the list's path.
pub fn page(req: &Request<'_>, path: &str, items: Vec<Value>) -> Result<Value, ArmError> {
    let size = req.svc.settings().arm.page_size;
    let skip = match req.param("$skiptoken") {
        None => 0,
        Some(t) => t.parse::<usize>().map_err(|_| {
            ArmError::bad_request(
                "InvalidSkipToken",
                format!("The $skiptoken '{t}' is not valid."),
            )
        })?,
    };
    let total = items.len();
    let end = skip.saturating_add(size).min(total);
    let value: Vec<Value> = items
        .into_iter()
        .skip(skip)
        .take(end.saturating_sub(skip))
        .collect();
    let mut body = json!({ "value": value });
    if end < total {
        let mut link = format!("{}{path}?", req.base_url);
        for (k, v) in req.query.iter().filter(|(k, _)| k != "$skiptoken") {
            link.push_str(&format!("{}={}&", encode(k), encode(v)));
        }
        link.push_str(&format!("$skiptoken={end}"));
        body["nextLink"] = json!(link);
    }
    Ok(body)
}

/// Percent-encodes a query component (everything but RFC 3986 unreserved characters and `$`,
/// which Azure leaves bare in `$filter` and `$skiptoken`).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'$') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_keeps_unreserved_and_dollar() {
        assert_eq!(
            encode("principalId eq 'a-b'"),
            "principalId%20eq%20%27a-b%27"
        );
        assert_eq!(encode("$filter"), "$filter");
    }
}
