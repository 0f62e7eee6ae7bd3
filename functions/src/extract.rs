//! Reading requests: JSON bodies, ids, paging, `If-Match`; writing JSON replies with `ETag`.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use culvert_control_api::FieldError;
use culvert_control_api::page::{DEFAULT_LIMIT, MAX_LIMIT};
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};

/// Largest request body accepted.
pub const MAX_BODY: usize = 1 << 20;

/// Parse a JSON body, pointing at the field that is wrong.
pub fn json_body<T: DeserializeOwned>(headers: &HeaderMap, body: &[u8]) -> ApiResult<T> {
    if body.len() > MAX_BODY {
        return Err(ApiError::BadRequest(format!(
            "the body is {} bytes; the limit is {MAX_BODY}",
            body.len()
        )));
    }
    let json_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            let essence = v
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            essence == "application/json" || essence.ends_with("+json")
        });
    if json_type != Some(true) {
        return Err(ApiError::UnsupportedMediaType(
            "send the body as JSON with `Content-Type: application/json`".into(),
        ));
    }
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("the body is not valid JSON: {e}")))?;
    serde_path_to_error::deserialize(value).map_err(|e| {
        let pointer = pointer_of(e.path());
        let message = e.into_inner().to_string();
        ApiError::Invalid {
            detail: format!(
                "{}: {message}",
                if pointer.is_empty() { "/" } else { &pointer }
            ),
            errors: vec![FieldError { pointer, message }],
        }
    })
}

fn pointer_of(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("/{index}")),
            Segment::Map { key } => {
                out.push_str(&format!("/{}", key.replace('~', "~0").replace('/', "~1")))
            }
            Segment::Enum { variant } => out.push_str(&format!("/{variant}")),
            Segment::Unknown => {}
        }
    }
    out
}

/// Parse a path id.
pub fn parse_id(kind: &str, raw: &str) -> ApiResult<Uuid> {
    Uuid::try_parse(raw)
        .map_err(|_| ApiError::NotFound(format!("no {kind} with id {raw:?} (ids are UUIDs)")))
}

/// `?limit=&cursor=` of a list.
#[derive(Debug, Clone, Copy)]
pub struct Paging {
    /// Items per page.
    pub limit: i64,
    /// Return items after this sequence number.
    pub after: i64,
}

/// Parse paging from the query string.
pub fn paging(query: &std::collections::HashMap<String, String>) -> ApiResult<Paging> {
    let limit = match query.get("limit") {
        None => DEFAULT_LIMIT as i64,
        Some(v) => match v.parse::<u32>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n as i64,
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "`limit` must be a whole number from 1 to {MAX_LIMIT}"
                )));
            }
        },
    };
    let after = match query.get("cursor") {
        None => 0,
        Some(v) => v
            .strip_prefix('c')
            .and_then(|n| n.parse::<i64>().ok())
            .filter(|n| *n >= 0)
            .ok_or_else(|| {
                ApiError::BadRequest(
                    "`cursor` must be a `next_cursor` value from a previous page".into(),
                )
            })?,
    };
    Ok(Paging { limit, after })
}

/// The page of `items` (fetched with `limit + 1`) and its next cursor.
pub fn page<T>(mut items: Vec<(i64, T)>, paging: Paging) -> culvert_control_api::Page<T> {
    let more = items.len() as i64 > paging.limit;
    items.truncate(paging.limit as usize);
    let next_cursor = if more {
        items.last().map(|(seq, _)| format!("c{seq}"))
    } else {
        None
    };
    culvert_control_api::Page {
        items: items.into_iter().map(|(_, t)| t).collect(),
        next_cursor,
    }
}

/// The version `If-Match` requires, if the header is present (`*` matches any).
pub fn if_match(headers: &HeaderMap) -> ApiResult<Option<i64>> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = v.to_str().unwrap_or("").trim();
    if text == "*" {
        return Ok(None);
    }
    let bare = text.trim_start_matches("W/").trim_matches('"');
    bare.parse::<i64>().map(Some).map_err(|_| {
        ApiError::PreconditionFailed(format!(
            "If-Match {text:?} is not an ETag of this resource; send the ETag of the last GET"
        ))
    })
}

/// Fail with 412 when `If-Match` names another version.
pub fn check_version(expected: Option<i64>, current: i64) -> ApiResult<()> {
    match expected {
        Some(v) if v != current => Err(ApiError::PreconditionFailed(format!(
            "the resource changed (version {current}, If-Match says {v}); GET it again and retry"
        ))),
        _ => Ok(()),
    }
}

/// A JSON reply with an optional `ETag` (the resource version).
pub fn reply<T: Serialize>(status: StatusCode, body: &T, version: Option<i64>) -> Response {
    let mut resp = (status, axum::Json(body)).into_response();
    if let Some(v) = version
        && let Ok(h) = HeaderValue::from_str(&format!("\"{v}\""))
    {
        resp.headers_mut().insert(header::ETAG, h);
    }
    resp
}

/// An empty 204 reply.
pub fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        items: Vec<u32>,
    }

    fn json_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        h
    }

    #[test]
    fn errors_point_at_the_field() {
        let e = json_body::<Body>(&json_headers(), br#"{"name":"a","items":[1,"x"]}"#).unwrap_err();
        let p = e.problem();
        assert_eq!(p.status, 422);
        assert_eq!(p.errors[0].pointer, "/items/1");
        let e =
            json_body::<Body>(&json_headers(), br#"{"name":"a","items":[],"nmae":1}"#).unwrap_err();
        assert!(
            e.problem().errors[0]
                .message
                .contains("unknown field `nmae`"),
            "{e}"
        );
        assert_eq!(
            json_body::<Body>(&json_headers(), b"{")
                .unwrap_err()
                .problem()
                .status,
            400
        );
        assert_eq!(
            json_body::<Body>(&HeaderMap::new(), b"{}")
                .unwrap_err()
                .problem()
                .status,
            415
        );
    }

    #[test]
    fn paging_and_if_match() {
        let q = [
            ("limit".to_string(), "2".to_string()),
            ("cursor".to_string(), "c7".to_string()),
        ]
        .into_iter()
        .collect();
        let p = paging(&q).unwrap();
        assert_eq!((p.limit, p.after), (2, 7));
        let pg = page(vec![(8, 'a'), (9, 'b'), (10, 'c')], p);
        assert_eq!(pg.items, vec!['a', 'b']);
        assert_eq!(pg.next_cursor.as_deref(), Some("c9"));
        let bad = [("limit".to_string(), "0".to_string())]
            .into_iter()
            .collect();
        assert!(paging(&bad).is_err());
        let mut h = HeaderMap::new();
        h.insert(header::IF_MATCH, HeaderValue::from_static("\"3\""));
        assert_eq!(if_match(&h).unwrap(), Some(3));
        assert!(check_version(Some(3), 4).is_err());
        assert!(check_version(None, 4).is_ok());
    }
}
