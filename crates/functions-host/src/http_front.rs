//! The public HTTP endpoint: routes `/{routePrefix}/{route}` to HTTP-triggered functions.

use crate::app::{FunctionDef, Trigger};
use crate::dispatch::Dispatcher;
use crate::handler_client::is_hop_by_hop;
use crate::invocation::{HttpOutput, HttpRequestData, http_invocation};
use crate::routes::{RouteMatch, RouteTable};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::sync::Arc;
use std::time::Instant;
use uuid::Uuid;

/// Largest request body accepted, as on Azure.
const MAX_BODY: usize = 100 * 1024 * 1024;

/// Routing state for the front end.
pub struct Front {
    dispatcher: Arc<Dispatcher>,
    routes: RouteTable<usize>,
    prefix: String,
}

impl Front {
    /// Builds the route table from the app's HTTP triggers.
    pub fn new(dispatcher: Arc<Dispatcher>) -> Self {
        let mut routes = RouteTable::new();
        for (i, f) in dispatcher.app.functions.iter().enumerate() {
            if let Trigger::Http(h) = &f.trigger {
                routes.add(h.route.clone(), h.methods.clone(), i);
            }
        }
        let prefix = dispatcher.app.host.route_prefix.clone();
        Self {
            dispatcher,
            routes,
            prefix,
        }
    }

    /// The part of `path` after the route prefix, if it is under it.
    fn strip_prefix<'p>(&self, path: &'p str) -> Option<&'p str> {
        if self.prefix.is_empty() {
            return Some(path);
        }
        let want = format!("/{}", self.prefix);
        let head = path.get(..want.len())?;
        let rest = &path[want.len()..];
        (head.eq_ignore_ascii_case(&want) && (rest.is_empty() || rest.starts_with('/')))
            .then_some(rest)
    }
}

/// The axum router serving every path through [`handle`].
pub fn router(front: Arc<Front>) -> axum::Router {
    axum::Router::new().fallback(handle).with_state(front)
}

/// An RFC 9457 problem response.
pub fn problem(
    status: StatusCode,
    detail: impl Into<String>,
    invocation_id: Option<Uuid>,
) -> Response {
    let mut body = json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail.into(),
    });
    if let Some(id) = invocation_id {
        body["invocationId"] = json!(id.to_string());
    }
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        body.to_string(),
    )
        .into_response()
}

async fn handle(State(front): State<Arc<Front>>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    // Core Tools exposes the host status too; `culvert local up` can poll it.
    if path.eq_ignore_ascii_case("/admin/host/status") && method == Method::GET {
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            json!({"state": "Running"}).to_string(),
        )
            .into_response();
    }
    let Some(relative) = front.strip_prefix(&path) else {
        return problem(
            StatusCode::NOT_FOUND,
            format!("no function is served at {path}"),
            None,
        );
    };
    match front.routes.find(method.as_str(), relative) {
        RouteMatch::NotFound => problem(
            StatusCode::NOT_FOUND,
            format!("no function matches {method} {path}"),
            None,
        ),
        RouteMatch::MethodNotAllowed { allowed } => {
            let mut resp = problem(
                StatusCode::METHOD_NOT_ALLOWED,
                format!(
                    "{method} is not allowed on {path}; allowed: {}",
                    allowed.join(", ")
                ),
                None,
            );
            if let Ok(v) = HeaderValue::from_str(&allowed.join(", ")) {
                resp.headers_mut().insert(header::ALLOW, v);
            }
            resp
        }
        RouteMatch::Found { value, params } => {
            let function = &front.dispatcher.app.functions[*value];
            let id = Uuid::new_v4();
            if front.dispatcher.app.host.enable_forwarding_http_request
                && function.is_http_in_and_out()
            {
                forward(&front.dispatcher, function, id, req).await
            } else {
                invoke_with_payload(&front.dispatcher, function, id, req, params).await
            }
        }
    }
}

async fn read_body(body: Body, id: Uuid) -> Result<bytes::Bytes, Response> {
    axum::body::to_bytes(body, MAX_BODY).await.map_err(|e| {
        problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("cannot read the request body: {e}"),
            Some(id),
        )
    })
}

async fn forward(
    dispatcher: &Dispatcher,
    function: &FunctionDef,
    id: Uuid,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    let body = match read_body(body, id).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    tracing::info!(function = %function.name, invocation_id = %id, "Executing 'Functions.{}' (Reason='This function was programmatically called via the host APIs.', Id={id})", function.name);
    let started = Instant::now();
    let result = dispatcher
        .handler
        .forward(
            id,
            parts.method.clone(),
            &path_and_query,
            &parts.headers,
            body,
        )
        .await;
    let ms = started.elapsed().as_millis();
    match result {
        Ok(resp) => {
            tracing::info!(function = %function.name, invocation_id = %id, status = resp.status().as_u16(),
                "Executed 'Functions.{}' (Succeeded, Id={id}, Duration={ms}ms)", function.name);
            let mut out = Response::builder().status(resp.status());
            if let Some(headers) = out.headers_mut() {
                for (name, value) in resp.headers() {
                    if !is_hop_by_hop(name) {
                        headers.append(name.clone(), value.clone());
                    }
                }
            }
            out.body(Body::from_stream(resp.bytes_stream()))
                .unwrap_or_else(|e| {
                    problem(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("bad handler response: {e}"),
                        Some(id),
                    )
                })
        }
        Err(e) => {
            tracing::warn!(function = %function.name, invocation_id = %id, "Executed 'Functions.{}' (Failed, Id={id}, Duration={ms}ms): {e}", function.name);
            problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("function `{}` failed: {e}", function.name),
                Some(id),
            )
        }
    }
}

fn request_data(
    parts: &axum::http::request::Parts,
    body: bytes::Bytes,
    params: std::collections::BTreeMap<String, String>,
) -> HttpRequestData {
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost")
        .to_owned();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let query = parts
        .uri
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let headers = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    HttpRequestData {
        url: format!("http://{host}{path_and_query}"),
        method: parts.method.as_str().to_owned(),
        query,
        headers,
        params,
        body: Some(body.to_vec()),
    }
}

async fn invoke_with_payload(
    dispatcher: &Dispatcher,
    function: &FunctionDef,
    id: Uuid,
    req: Request,
    params: std::collections::BTreeMap<String, String>,
) -> Response {
    let Trigger::Http(trigger) = &function.trigger else {
        return problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "not an HTTP function",
            Some(id),
        );
    };
    let (parts, body) = req.into_parts();
    let body = match read_body(body, id).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let data = request_data(&parts, body, params);
    let payload = http_invocation(
        &function.name,
        &trigger.name,
        &data,
        chrono::Utc::now(),
        Uuid::new_v4(),
    );
    let result = match dispatcher
        .invoke(
            function,
            "This function was programmatically called via the host APIs.",
            id,
            &payload,
        )
        .await
    {
        Ok(r) => r,
        Err(e) => {
            return problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("function `{}` failed: {e}", function.name),
                Some(id),
            );
        }
    };
    if let Err(e) = dispatcher.write_queue_outputs(function, id, &result).await {
        tracing::warn!(function = %function.name, invocation_id = %id, "writing outputs failed: {e}");
        return problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "function `{}` failed writing its outputs: {e}",
                function.name
            ),
            Some(id),
        );
    }
    let Some(out_name) = function.http_output() else {
        return StatusCode::OK.into_response();
    };
    let output = match result.output(out_name).map(HttpOutput::from_value) {
        // The host answers 200 with no body when the function set no response.
        None => return StatusCode::OK.into_response(),
        Some(Ok(o)) => o,
        Some(Err(e)) => {
            return problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("function `{}`: {e}", function.name),
                Some(id),
            );
        }
    };
    let mut headers = HeaderMap::new();
    for (k, v) in &output.headers {
        match (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            (Ok(name), Ok(value)) if !is_hop_by_hop(&name) && name != header::CONTENT_LENGTH => {
                headers.append(name, value);
            }
            _ => {
                tracing::warn!(function = %function.name, invocation_id = %id, "dropping invalid response header `{k}`")
            }
        }
    }
    let status = StatusCode::from_u16(output.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, headers, output.body).into_response()
}
