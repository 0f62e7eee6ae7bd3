//! Key Vault list paging: `maxresults` (1-25, default 25) and an opaque `$skiptoken` in `nextLink`.

use super::Params;
use super::error::VaultError;
use serde_json::{Value, json};

const MAX_PAGE: usize = 25;

/// Cuts one page out of `items` and builds the `{"value":[...],"nextLink":...}` answer.
///
/// `list_url` is the absolute URL of the list (e.g. `http://127.0.0.1:PORT/keys`); `nextLink`
/// is absolute, as Azure's is, and carries the api-version and page size forward.
pub fn page(
    items: Vec<Value>,
    params: &Params,
    list_url: &str,
    api_version: &str,
) -> Result<Value, VaultError> {
    let max = match params.get("maxresults") {
        None => None,
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => Some(n),
            _ => {
                return Err(VaultError::BadParameter(format!(
                    "maxresults must be an integer between 1 and {MAX_PAGE}, got '{s}'."
                )));
            }
        },
    };
    let skip = match params.get("$skiptoken") {
        None => 0,
        Some(s) => s
            .parse::<usize>()
            .map_err(|_| VaultError::BadParameter(format!("The $skiptoken '{s}' is not valid.")))?,
    };
    let total = items.len();
    let end = skip.saturating_add(max.unwrap_or(MAX_PAGE)).min(total);
    let value: Vec<Value> = items
        .into_iter()
        .skip(skip)
        .take(end.saturating_sub(skip))
        .collect();
    let next_link = if end < total {
        let mut link = format!("{list_url}?api-version={api_version}&$skiptoken={end}");
        if let Some(m) = max {
            link.push_str(&format!("&maxresults={m}"));
        }
        Value::String(link)
    } else {
        Value::Null
    };
    Ok(json!({ "value": value, "nextLink": next_link }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        Params(
            pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        )
    }

    fn items(n: usize) -> Vec<Value> {
        (0..n).map(|i| json!(i)).collect()
    }

    #[test]
    fn single_page_has_null_next_link() {
        let p = page(items(3), &params(&[]), "http://x/keys", "7.5").unwrap();
        assert_eq!(p, json!({"value": [0, 1, 2], "nextLink": null}));
    }

    #[test]
    fn pages_follow_skiptoken() {
        let p = page(
            items(5),
            &params(&[("maxresults", "2")]),
            "http://x/keys",
            "7.5",
        )
        .unwrap();
        assert_eq!(p["value"], json!([0, 1]));
        assert_eq!(
            p["nextLink"],
            json!("http://x/keys?api-version=7.5&$skiptoken=2&maxresults=2")
        );
        let p = page(
            items(5),
            &params(&[("maxresults", "2"), ("$skiptoken", "4")]),
            "http://x/keys",
            "7.5",
        )
        .unwrap();
        assert_eq!(p, json!({"value": [4], "nextLink": null}));
    }

    #[test]
    fn bad_maxresults_is_refused() {
        assert!(page(items(1), &params(&[("maxresults", "26")]), "u", "7.5").is_err());
        assert!(page(items(1), &params(&[("maxresults", "x")]), "u", "7.5").is_err());
    }
}
