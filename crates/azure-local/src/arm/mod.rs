//! A local stand-in for Azure Resource Manager: the subset of the management API that Culvert's
//! control plane, its customer bootstrap and their tests use, with Azure's wire format, RBAC,
//! long-running operations and a few providers that do real work (scale sets and container
//! groups run processes).
//!
//! Request pipeline, in Resource Manager's order: injected faults, bearer authentication (401),
//! `api-version` (400 `MissingApiVersionParameter`), path parsing, subscription lookup, RBAC
//! (403), then the operation. Long-running operation status URLs need a token but no permission.
//!
//! Modules: [`ids`] (paths and actions), [`store`] (persistence), [`rbac`] (access control),
//! [`links`] (references a body makes to other resources), [`lro`] (operations),
//! [`resources`] (the generic resource engine), [`routes`] (what each path does),
//! [`providers`] (type-specific behaviour), [`processes`] and [`runner`] (child processes),
//! [`cloudinit`] (the scale-set instance contract).

pub mod auth;
pub mod clock;
pub mod cloudinit;
pub mod derive;
pub mod error;
pub mod ids;
pub mod links;
pub mod lro;
pub mod paging;
pub mod processes;
pub mod providers;
pub mod rbac;
pub mod resources;
pub mod routes;
pub mod runner;
pub mod store;

use crate::config::{ArmConfig, IdentityConfig};
use crate::faults::{FaultRule, Faults};
use crate::listener::Scheme;
use crate::state::{new_guid, now_unix};
use crate::token::TokenIssuer;
use auth::Caller;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, Request as HttpRequest, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use error::ArmError;
use processes::{Effect, Processes};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use store::ArmStore;

/// Where the fault-injection controls live (the same path as on the vault listeners).
pub const FAULTS_PATH: &str = "/_local/faults";
/// Operation names fault rules may filter on: the lowercase HTTP method.
pub const OPERATION_NAMES: &[&str] = &["get", "put", "delete", "post", "head", "patch"];
// Scale-set custom data is at most 64 KiB; nothing legitimate comes close to this.
const MAX_BODY_BYTES: usize = 4 << 20;

/// What the stand-in needs besides its store.
pub struct Settings {
    /// The tenant of issued tokens, and of subscriptions that name none.
    pub tenant_id: String,
    /// The configured identities (user-assigned identities with a matching `resource_id` use their ids).
    pub identities: Vec<IdentityConfig>,
    /// The `arm` config section.
    pub arm: ArmConfig,
}

/// Where child processes find the local Azure services.
pub struct ProcessEnv {
    /// `IDENTITY_ENDPOINT` for processes of resources that have a managed identity.
    pub identity_endpoint: String,
    /// `IDENTITY_HEADER` likewise.
    pub identity_header: String,
    /// The CA certificate, as `CULVERT_AZURE_CA_FILE`.
    pub ca_file: PathBuf,
}

/// The Resource Manager stand-in.
pub struct ArmService {
    settings: Settings,
    store: Arc<ArmStore>,
    issuer: Arc<TokenIssuer>,
    faults: Faults,
    processes: Arc<Processes>,
    http_url: String,
    https_url: String,
}

impl ArmService {
    /// Opens the state under `state_dir` and restarts the processes it describes.
    pub fn start(
        settings: Settings,
        state_dir: &std::path::Path,
        issuer: Arc<TokenIssuer>,
        env: ProcessEnv,
        http_url: String,
        https_url: String,
    ) -> Result<Arc<Self>, crate::state::StateError> {
        let store = Arc::new(ArmStore::open(state_dir)?);
        let processes = Arc::new(Processes::new(
            settings.arm.agent_binary.clone(),
            state_dir.to_owned(),
            env,
            store.clone(),
        ));
        processes.resume()?;
        Ok(Arc::new(Self {
            settings,
            store,
            issuer,
            faults: Faults::default(),
            processes,
            http_url,
            https_url,
        }))
    }

    /// The axum router: every path goes through one dispatcher.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new().fallback(dispatch).with_state(self)
    }

    /// Stops every child process (SIGTERM, then SIGKILL after a grace period).
    pub async fn shutdown(&self) {
        self.processes.shutdown().await;
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The store.
    pub fn store(&self) -> &ArmStore {
        &self.store
    }

    /// The process supervisor.
    pub fn processes(&self) -> &Arc<Processes> {
        &self.processes
    }

    /// The configured subscription `id` names (any case), as configured.
    pub fn subscription(&self, id: &str) -> Option<&crate::config::SubscriptionConfig> {
        self.settings
            .arm
            .subscriptions
            .iter()
            .find(|s| s.id.eq_ignore_ascii_case(id))
    }

    /// The tenant of subscription `id`.
    pub fn tenant_of(&self, id: &str) -> String {
        self.subscription(id)
            .and_then(|s| s.tenant_id.clone())
            .unwrap_or_else(|| self.settings.tenant_id.clone())
    }
}

/// One request, as handlers see it.
pub struct Request<'a> {
    /// The service.
    pub svc: &'a ArmService,
    /// Who is calling.
    pub caller: Caller,
    /// `https://127.0.0.1:PORT` (or `http://`), as the client addressed the stand-in.
    pub base_url: &'a str,
    /// The `api-version` query parameter.
    pub api_version: String,
    /// All query parameters, decoded, in order.
    pub query: Vec<(String, String)>,
    /// The raw body.
    pub body: Bytes,
}

impl Request<'_> {
    /// The first value of query parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as a JSON object; 400 `InvalidRequestContent` otherwise.
    pub fn json_object(&self) -> Result<serde_json::Map<String, Value>, ArmError> {
        match serde_json::from_slice::<Value>(&self.body) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(_) => Err(ArmError::invalid_content(
                "The request content was invalid and could not be deserialized: the body must be a JSON object.",
            )),
            Err(e) => Err(ArmError::invalid_content(format!(
                "The request content was invalid and could not be deserialized: '{e}'."
            ))),
        }
    }

    /// The body as JSON, or `null` when empty.
    pub fn json_or_null(&self) -> Result<Value, ArmError> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&self.body).map_err(|e| {
            ArmError::invalid_content(format!(
                "The request content was invalid and could not be deserialized: '{e}'."
            ))
        })
    }
}

/// A successful answer, plus the process changes to make once it is committed.
pub struct Reply {
    /// The status.
    pub status: StatusCode,
    /// The JSON body, if any.
    pub body: Option<Value>,
    /// Extra headers.
    pub headers: Vec<(HeaderName, String)>,
    /// Processes to reconcile.
    pub effects: Vec<Effect>,
}

impl Reply {
    /// A JSON answer.
    pub fn json(status: StatusCode, body: Value) -> Self {
        Self {
            status,
            body: Some(body),
            headers: Vec::new(),
            effects: Vec::new(),
        }
    }

    /// An answer without a body.
    pub fn empty(status: StatusCode) -> Self {
        Self {
            status,
            body: None,
            headers: Vec::new(),
            effects: Vec::new(),
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: HeaderName, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

async fn dispatch(State(svc): State<Arc<ArmService>>, req: HttpRequest) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = Query::<Vec<(String, String)>>::try_from_uri(req.uri())
        .map(|q| q.0)
        .unwrap_or_default();
    let headers = req.headers().clone();
    let base_url = match req.extensions().get::<Scheme>() {
        Some(Scheme::Https) => svc.https_url.clone(),
        _ => svc.http_url.clone(),
    };
    let body = axum::body::to_bytes(req.into_body(), MAX_BODY_BYTES).await;

    if path == FAULTS_PATH {
        return faults_control(&svc, &method, body.unwrap_or_default());
    }

    let mut oid = String::new();
    let result = async {
        if let Some(injected) = svc
            .faults
            .take(&method.as_str().to_ascii_lowercase(), &path)
        {
            return Err(ArmError::injected(injected));
        }
        let caller =
            auth::authenticate(&headers, &svc.issuer, &svc.settings.arm.owners, now_unix())?;
        oid.clone_from(&caller.oid);
        let api_version = query
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("api-version"))
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                ArmError::bad_request(
                    "MissingApiVersionParameter",
                    "The api-version query parameter (?api-version=) is required for all requests.",
                )
            })?;
        let body = body.map_err(|_| {
            ArmError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                "The request body is too large.",
            )
        })?;
        let request = Request {
            svc: &svc,
            caller,
            base_url: &base_url,
            api_version,
            query: query.clone(),
            body,
        };
        routes::route(&request, &method, &path)
    }
    .await;

    let mut response = match result {
        Ok(mut reply) => {
            svc.processes.apply(std::mem::take(&mut reply.effects));
            into_response(reply)
        }
        Err(e) => e.into_response(),
    };
    tracing::debug!(%method, path = %path, oid = %oid, status = response.status().as_u16(), "arm request");
    let headers = response.headers_mut();
    for name in ["x-ms-request-id", "x-ms-correlation-request-id"] {
        if let Ok(id) = HeaderValue::from_str(&new_guid()) {
            headers.insert(name, id);
        }
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn into_response(reply: Reply) -> Response {
    let mut response = match reply.body {
        Some(body) => (reply.status, axum::Json(body)).into_response(),
        None => reply.status.into_response(),
    };
    for (name, value) in reply.headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, v);
        }
    }
    response
}

fn faults_control(svc: &ArmService, method: &Method, body: Bytes) -> Response {
    let rules = || {
        (
            StatusCode::OK,
            axum::Json(json!({ "rules": svc.faults.snapshot() })),
        )
    };
    match *method {
        Method::POST => {
            let rule: FaultRule = match serde_json::from_slice(&body) {
                Ok(r) => r,
                Err(e) => {
                    return ArmError::invalid_content(format!("invalid fault rule: {e}"))
                        .into_response();
                }
            };
            match svc.faults.add(rule, OPERATION_NAMES) {
                Ok(()) => {
                    tracing::info!("resource manager fault rule added");
                    rules().into_response()
                }
                Err(e) => ArmError::invalid_content(e.to_string()).into_response(),
            }
        }
        Method::GET => rules().into_response(),
        Method::DELETE => {
            svc.faults.clear();
            StatusCode::NO_CONTENT.into_response()
        }
        _ => ArmError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("The requested resource does not support http method '{method}'."),
        )
        .into_response(),
    }
}
