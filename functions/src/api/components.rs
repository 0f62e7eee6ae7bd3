//! `components` and `agent-components`: connector components stored by SHA-256 digest.
//!
//! A component is only accepted when its bytes hash to the digest in the path and it is a
//! WebAssembly component exporting one of the connector worlds, so every digest a version
//! can pin names a loadable connector.

use std::sync::Arc;

use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use culvert_control_api::connectors::ConnectorKind;
use culvert_control_api::registry::{Component, MAX_COMPONENT_BYTES, WASM_MEDIA_TYPE, is_digest};
use deadpool_postgres::GenericClient;
use sha2::{Digest, Sha256};
use tokio_postgres::Row;

use super::{Outcome, Req, method_not_allowed};
use crate::app::{App, Ctx};
use crate::auth::Action;
use crate::error::{ApiError, ApiResult};
use crate::extract::reply;
use crate::store::Sql;

/// The export a source component provides.
pub const SOURCE_EXPORT: &str = "culvert:connector/source-connector@0.1.0";
/// The export a destination component provides.
pub const DESTINATION_EXPORT: &str = "culvert:connector/destination-connector@0.1.0";

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Which connector world `bytes` implement; the error says what the bytes are instead and
/// how to build a component.
pub fn inspect(bytes: &[u8]) -> Result<ConnectorKind, String> {
    use wasmparser::{Encoding, Parser, Payload};
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(
            "the body is not WebAssembly (it does not start with \\0asm); upload the .wasm file the connector's build wrote".into(),
        );
    }
    let mut depth = 0i32;
    let mut exports = Vec::new();
    for payload in Parser::new(0).parse_all(bytes) {
        let payload =
            payload.map_err(|e| format!("the component is not valid WebAssembly: {e}"))?;
        match payload {
            Payload::Version {
                encoding: Encoding::Module,
                ..
            } if depth == 0 => {
                return Err("this is a core WebAssembly module, not a component; build a component for wasm32-wasip2 (for example `cargo build --target wasm32-wasip2`, componentize-py or jco componentize) against the `source` or `destination` world of wit/connector.wit".into());
            }
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth -= 1,
            Payload::ComponentExportSection(section) if depth == 0 => {
                for export in section {
                    let export =
                        export.map_err(|e| format!("the component's exports do not parse: {e}"))?;
                    exports.push(export.name.name.to_string());
                }
            }
            _ => {}
        }
    }
    let source = exports.iter().any(|e| e == SOURCE_EXPORT);
    let destination = exports.iter().any(|e| e == DESTINATION_EXPORT);
    let kind = match (source, destination) {
        (true, false) => ConnectorKind::Source,
        (false, true) => ConnectorKind::Target,
        (true, true) => {
            return Err(format!(
                "the component exports both {SOURCE_EXPORT} and {DESTINATION_EXPORT}; a connector is one or the other"
            ));
        }
        (false, false) => {
            let found = if exports.is_empty() {
                "nothing".to_string()
            } else {
                exports.join(", ")
            };
            return Err(format!(
                "the component exports neither {SOURCE_EXPORT} nor {DESTINATION_EXPORT} (it exports {found}); build it against the `source` or `destination` world of wit/connector.wit"
            ));
        }
    };
    // Every function body too: a truncated or corrupt component fails here, not on an agent.
    wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all())
        .validate_all(bytes)
        .map_err(|e| format!("the component is not valid WebAssembly: {e}"))?;
    Ok(kind)
}

fn check_digest(raw: &str) -> ApiResult<String> {
    if is_digest(raw) {
        Ok(raw.to_string())
    } else {
        Err(ApiError::BadRequest(format!(
            "{raw:?} is not a component digest: write the lowercase hex SHA-256 of the bytes (64 characters, `sha256sum FILE`)"
        )))
    }
}

fn component_from(digest: &str, r: &Row) -> Component {
    Component {
        digest: digest.to_string(),
        size: r.get::<_, i64>(0) as u64,
        kind: if r.get::<_, &str>(1) == "source" {
            ConnectorKind::Source
        } else {
            ConnectorKind::Target
        },
        created_at: r.get(2),
    }
}

/// A stored component's metadata, if it is stored.
pub async fn find(client: &impl GenericClient, digest: &str) -> ApiResult<Option<Component>> {
    Ok(client
        .q_opt(
            "select size, kind, created_at from components where digest = $1",
            &[&digest],
        )
        .await?
        .map(|r| component_from(digest, &r)))
}

/// `components`: `GET` a component's metadata, `PUT` its bytes.
pub async fn handle(app: Arc<App>, req: Req) -> ApiResult<Outcome> {
    let digest = check_digest(req.param("digest").unwrap_or_default())?;
    match req.method {
        Method::GET => {
            let ctx = Ctx::new(&app, &req.headers, Action::Read).await?;
            let c = find(&ctx.conn().await?, &digest)
                .await?
                .ok_or_else(|| ApiError::NotFound(format!("no component with digest {digest}")))?;
            Ok(reply(StatusCode::OK, &c, None).into())
        }
        Method::PUT => put(app, req, digest).await,
        _ => Err(method_not_allowed(&req)),
    }
}

async fn put(app: Arc<App>, req: Req, digest: String) -> ApiResult<Outcome> {
    let ctx = Ctx::new(&app, &req.headers, Action::Write).await?;
    let media = req
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    if !matches!(
        media.as_deref(),
        Some(WASM_MEDIA_TYPE | "application/octet-stream")
    ) {
        return Err(ApiError::UnsupportedMediaType(format!(
            "send the component's bytes with `Content-Type: {WASM_MEDIA_TYPE}`"
        )));
    }
    if req.body.is_empty() {
        return Err(ApiError::BadRequest(
            "the body is empty; send the component's bytes".into(),
        ));
    }
    if req.body.len() > MAX_COMPONENT_BYTES {
        return Err(ApiError::BadRequest(format!(
            "the component is {} bytes; the registry takes at most {MAX_COMPONENT_BYTES} (100 MiB)",
            req.body.len()
        )));
    }
    let body = Arc::new(req.body);
    let hashed = body.clone();
    let actual = tokio::task::spawn_blocking(move || sha256_hex(&hashed))
        .await
        .map_err(|e| ApiError::Internal(format!("hashing: {e}")))?;
    if actual != digest {
        return Err(ApiError::BadRequest(format!(
            "digest mismatch: the path names {digest} but the body's SHA-256 is {actual}; the body was altered or the wrong file was sent"
        )));
    }
    let conn = ctx.conn().await?;
    if let Some(c) = find(&conn, &digest).await? {
        return Ok(reply(StatusCode::OK, &c, None).into());
    }
    let inspected = body.clone();
    let kind = tokio::task::spawn_blocking(move || inspect(&inspected))
        .await
        .map_err(|e| ApiError::Internal(format!("inspecting: {e}")))?
        .map_err(ApiError::BadRequest)?;
    let size = body.len() as i64;
    let inserted = conn
        .exec(
            "insert into components (digest, bytes, size, kind) values ($1, $2, $3, $4)
             on conflict (digest) do nothing",
            &[&digest, &body.as_slice(), &size, &kind.as_str()],
        )
        .await?;
    let c = find(&conn, &digest)
        .await?
        .ok_or_else(|| ApiError::Internal("component just stored".into()))?;
    // A concurrent upload of the same bytes may have stored it first: same outcome.
    let status = if inserted == 1 {
        tracing::info!(%digest, size, kind = kind.as_str(), "component stored");
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(reply(status, &c, None).into())
}

/// `agent-components`: the bytes of a component, for agents.
pub async fn download(app: Arc<App>, req: Req) -> ApiResult<Outcome> {
    let digest = check_digest(req.param("digest").unwrap_or_default())?;
    let ctx = Ctx::new(&app, &req.headers, Action::AgentProtocol).await?;
    let row = ctx
        .conn()
        .await?
        .q_opt("select bytes from components where digest = $1", &[&digest])
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no component with digest {digest}")))?;
    let bytes: Vec<u8> = row.get(0);
    let mut resp: Response = (StatusCode::OK, bytes).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(WASM_MEDIA_TYPE),
    );
    Ok(resp.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_and_garbage_are_refused_with_a_reason() {
        let e = inspect(b"hello world, not wasm").unwrap_err();
        assert!(e.contains("not WebAssembly"), "{e}");
        let core = b"\0asm\x01\0\0\0";
        let e = inspect(core).unwrap_err();
        assert!(e.contains("core WebAssembly module"), "{e}");
        assert!(e.contains("wasm32-wasip2"), "{e}");
        // An empty component: the right header, no exports.
        let empty = b"\0asm\x0d\0\x01\0";
        let e = inspect(empty).unwrap_err();
        assert!(e.contains("exports neither"), "{e}");
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
