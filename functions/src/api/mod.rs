//! The HTTP functions: one module per resource, one entry per `function.json`.

pub mod agent_service;
pub mod agents;
pub mod byoc;
pub mod components;
pub mod connector_types;
pub mod connectors;
pub mod environments;
pub mod keys;
pub mod listing;
pub mod openapi;
pub mod pipelines;
pub mod registry;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::http::{HeaderMap, Method};
use axum::response::Response;
use serde_json::Value;

use crate::app::App;
use crate::error::{ApiError, ApiResult};

/// A request, whichever way the host delivered it.
pub struct Req {
    /// Method.
    pub method: Method,
    /// Headers.
    pub headers: HeaderMap,
    /// Route parameters.
    pub params: HashMap<String, String>,
    /// Query parameters.
    pub query: HashMap<String, String>,
    /// Body.
    pub body: Vec<u8>,
}

impl Req {
    /// A route parameter, if the route matched it.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .get(name)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }
}

/// A response plus the queue messages to send through output bindings.
pub struct Outcome {
    /// The HTTP response.
    pub response: Response,
    /// `(output binding, message)`.
    pub messages: Vec<(&'static str, Value)>,
}

impl From<Response> for Outcome {
    fn from(response: Response) -> Outcome {
        Outcome {
            response,
            messages: Vec::new(),
        }
    }
}

/// A boxed handler future.
pub type Reply = Pin<Box<dyn Future<Output = ApiResult<Outcome>> + Send>>;
/// An HTTP function.
pub type Handler = fn(Arc<App>, Req) -> Reply;

macro_rules! handler {
    ($f:path) => {{
        fn boxed(app: Arc<App>, req: Req) -> Reply {
            Box::pin($f(app, req))
        }
        boxed as Handler
    }};
}

/// The handler of an HTTP function, by `function.json` folder name.
pub fn handler(function: &str) -> Option<Handler> {
    Some(match function {
        "openapi" => handler!(openapi::serve),
        "environments" => handler!(environments::handle),
        "connectors" => handler!(connectors::handle),
        "connector-validate" => handler!(connectors::validate),
        "connector-types" => handler!(connector_types::handle),
        "pipelines" => handler!(pipelines::handle),
        "pipeline-actions" => handler!(pipelines::action),
        "pipeline-status" => handler!(pipelines::status),
        "agents" => handler!(agents::handle),
        "api-keys" => handler!(keys::handle),
        "agent-register" => handler!(agent_service::register),
        "agent-heartbeat" => handler!(agent_service::heartbeat),
        "agent-reports" => handler!(agent_service::report),
        "agent-components" => handler!(components::download),
        "components" => handler!(components::handle),
        "connector-type-versions" => handler!(registry::versions),
        "connector-type-version" => handler!(registry::version),
        "signing-keys" => handler!(registry::signing_keys),
        "signing-key" => handler!(registry::signing_key),
        "agent-validation" => handler!(agent_service::validation),
        "environment-bootstrap" => handler!(byoc::bootstrap),
        "environment-databases" => handler!(byoc::databases),
        "environment-compute" => handler!(byoc::compute),
        "connector-network" => handler!(byoc::connector_network),
        "network-connections" | "network-connection" => handler!(byoc::network_connections),
        _ => return None,
    })
}

/// 405 for a method the function declares but this resource shape does not take.
pub fn method_not_allowed(req: &Req) -> ApiError {
    ApiError::MethodNotAllowed(format!("{} is not supported on this path", req.method))
}

/// A name of lowercase letters, digits and `sep`, starting with a letter, up to 48 characters.
pub fn check_name(pointer: &str, name: &str, sep: char) -> ApiResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 48
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == sep);
    if ok {
        Ok(())
    } else {
        Err(ApiError::field(
            pointer,
            format!("must be 1 to 48 lowercase letters, digits or `{sep}`, starting with a letter"),
        ))
    }
}
