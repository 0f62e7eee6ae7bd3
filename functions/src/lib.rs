//! The Culvert control plane as an Azure Functions custom handler.
//!
//! One axum server answers the Functions host: forwarded HTTP requests on the routes the
//! `function.json` files declare, and invocation payloads on `POST /{functionName}` for
//! functions with queue outputs and for queue and timer triggers.

pub mod api;
pub mod app;
pub mod auth;
pub mod bindings;
pub mod byoc;
pub mod compute;
pub mod env_keys;
pub mod error;
pub mod extract;
pub mod idempotency;
pub mod jobs;
pub mod master_keys;
pub mod openapi_doc;
pub mod protocol;
pub mod scheduler;
pub mod settings;
pub mod specs;
pub mod store;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use serde_json::{Map, Value};

use crate::api::{Handler, Outcome, Req};
use crate::app::App;
use crate::bindings::FunctionDef;
use crate::error::ApiError;
use crate::protocol::{Invocation, InvocationResult, http_output};

/// The handler's router, built from the `function.json` files.
pub fn router(app: Arc<App>) -> Router {
    let prefix = bindings::route_prefix();
    // The host's readiness probe: any answer means "started".
    let mut router = Router::new().route("/", get(|| async { "culvert-functions" }));
    for f in bindings::all() {
        if f.forwarded() {
            let handler = api::handler(f.name).unwrap_or_else(|| {
                panic!("function {} has a function.json but no handler", f.name)
            });
            let trigger = f
                .http_trigger()
                .expect("forwarded functions have an HTTP trigger");
            let route = trigger.route.clone().unwrap_or_else(|| f.name.to_string());
            let methods: Vec<Method> = trigger
                .methods
                .iter()
                .filter_map(|m| m.to_ascii_uppercase().parse().ok())
                .collect();
            for path in bindings::axum_paths(&prefix, &route) {
                let methods = methods.clone();
                router = router.route(
                    &path,
                    any(
                        move |State(app): State<Arc<App>>,
                              method: Method,
                              params: Option<Path<HashMap<String, String>>>,
                              Query(query): Query<HashMap<String, String>>,
                              headers: HeaderMap,
                              body: Bytes| async move {
                            if !methods.is_empty() && !methods.contains(&method) {
                                return ApiError::MethodNotAllowed(format!(
                                    "{method} is not supported on this path"
                                ))
                                .into_response();
                            }
                            let req = Req {
                                method,
                                headers,
                                params: params.map(|p| p.0).unwrap_or_default(),
                                query,
                                body: body.to_vec(),
                            };
                            forwarded(handler, app, req).await
                        },
                    ),
                );
            }
        } else {
            let def = f.clone();
            router = router.route(
                &format!("/{}", f.name),
                post(move |State(app): State<Arc<App>>, body: Bytes| invoke(def, app, body)),
            );
        }
    }
    router
        .fallback(|| async { ApiError::NotFound("no such path; see /api/openapi.json".into()) })
        // Components are up to 100 MiB; the handlers bound every other body themselves.
        .layer(axum::extract::DefaultBodyLimit::max(
            culvert_control_api::registry::MAX_COMPONENT_BYTES + (1 << 20),
        ))
        .with_state(app)
}

async fn forwarded(handler: Handler, app: Arc<App>, req: Req) -> Response {
    match handler(app, req).await {
        Ok(outcome) => {
            if !outcome.messages.is_empty() {
                // function.json gives this function no queue output: a bug, not a user error.
                tracing::error!("a forwarded function produced queue messages; they were dropped");
                return ApiError::Internal("queue messages from a forwarded function".into())
                    .into_response();
            }
            outcome.response
        }
        Err(e) => e.into_response(),
    }
}

fn payload_reply(status: StatusCode, result: InvocationResult) -> Response {
    (status, axum::Json(result)).into_response()
}

fn query_of(v: &Value) -> HashMap<String, String> {
    let obj = match protocol::unwrap_json(v) {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    obj.into_iter()
        .map(|(k, v)| {
            let s = match v {
                Value::String(s) => s,
                other => other.to_string(),
            };
            (k, s)
        })
        .collect()
}

/// Answer one invocation payload.
async fn invoke(def: FunctionDef, app: Arc<App>, body: Bytes) -> Response {
    let inv = match Invocation::parse(&body) {
        Ok(inv) => inv,
        Err(e) => {
            tracing::error!(function = def.name, error = %e, "invocation");
            let result = InvocationResult {
                logs: vec![e.to_string()],
                ..Default::default()
            };
            return payload_reply(StatusCode::BAD_REQUEST, result);
        }
    };
    let Some(trigger) = def.trigger().cloned() else {
        return payload_reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            InvocationResult::default(),
        );
    };
    match trigger.kind.as_str() {
        "httpTrigger" => http_invocation(&def, &trigger.name, app, inv).await,
        "queueTrigger" | "timerTrigger" => job_invocation(&def, &trigger.name, app, inv).await,
        other => {
            tracing::error!(function = def.name, trigger = other, "unsupported trigger");
            payload_reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                InvocationResult::default(),
            )
        }
    }
}

async fn http_invocation(
    def: &FunctionDef,
    binding: &str,
    app: Arc<App>,
    inv: Invocation,
) -> Response {
    let http_out = def
        .bindings
        .iter()
        .find(|b| b.direction == "out" && b.kind == "http")
        .map(|b| b.name.clone())
        .unwrap_or_else(|| "res".into());
    let data = match inv.http_request(binding) {
        Ok(d) => d,
        Err(e) => {
            let result = InvocationResult {
                logs: vec![e.to_string()],
                ..Default::default()
            };
            return payload_reply(StatusCode::BAD_REQUEST, result);
        }
    };
    let method = data
        .method
        .to_ascii_uppercase()
        .parse()
        .unwrap_or(Method::GET);
    let req = Req {
        method,
        headers: data.header_map(),
        params: data
            .params
            .keys()
            .filter_map(|k| data.param(k).map(|v| (k.clone(), v)))
            .collect(),
        query: query_of(&data.query),
        body: data.body_bytes(),
    };
    let handler = api::handler(def.name).expect("every HTTP function has a handler");
    let outcome = match handler(app, req).await {
        Ok(o) => o,
        Err(e) => Outcome::from(e.into_response()),
    };
    let status = outcome.response.status().as_u16();
    let headers = outcome.response.headers().clone();
    let body = axum::body::to_bytes(outcome.response.into_body(), 16 << 20)
        .await
        .unwrap_or_default();
    let mut outputs = Map::new();
    outputs.insert(http_out, http_output(status, &headers, &body));
    let mut grouped: HashMap<&str, Vec<Value>> = HashMap::new();
    for (binding, msg) in outcome.messages {
        grouped.entry(binding).or_default().push(msg);
    }
    for (binding, msgs) in grouped {
        if !def.queue_outputs().contains(&binding) {
            tracing::error!(
                function = def.name,
                binding,
                "no such queue output in function.json"
            );
            return payload_reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                InvocationResult::default(),
            );
        }
        // JSON objects, never bare strings: the host base64-decodes strings that look like base64.
        outputs.insert(binding.to_string(), Value::Array(msgs));
    }
    let result = InvocationResult {
        outputs,
        logs: vec![format!("{} answered {status}", def.name)],
        return_value: Value::Null,
    };
    payload_reply(StatusCode::OK, result)
}

async fn job_invocation(
    def: &FunctionDef,
    binding: &str,
    app: Arc<App>,
    inv: Invocation,
) -> Response {
    let dequeue_count = inv.dequeue_count();
    let outcome = match def.name {
        "housekeeping" => jobs::housekeeping(&app).await,
        "azure-poller" => jobs::azure_poller(&app).await,
        name => match inv.queue_message(binding) {
            Err(e) => Err(jobs::JobError::Malformed(e.to_string())),
            Ok(msg) => match name {
                "provision" => jobs::provision(&app, &msg, dequeue_count).await,
                "validate" => jobs::validate(&app, &msg, dequeue_count).await,
                other => Err(jobs::JobError::Malformed(format!("no job named {other}"))),
            },
        },
    };
    match outcome {
        Ok(line) => {
            if matches!(def.name, "housekeeping" | "azure-poller") {
                tracing::debug!(function = def.name, "{line}");
            } else {
                tracing::info!(function = def.name, "{line}");
            }
            payload_reply(
                StatusCode::OK,
                InvocationResult {
                    logs: vec![line],
                    ..Default::default()
                },
            )
        }
        Err(e) => {
            tracing::warn!(function = def.name, dequeue_count, error = %e, "job failed; the host retries it");
            payload_reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                InvocationResult {
                    logs: vec![e.to_string()],
                    ..Default::default()
                },
            )
        }
    }
}
