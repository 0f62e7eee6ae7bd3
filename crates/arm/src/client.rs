//! The ARM REST client: azure_core's pipeline (bearer token for ARM, retries honouring
//! Retry-After, the transport `culvert_azure::transport` chooses) plus what ARM adds on top:
//! `api-version` from the operation catalogue, long-running operations, paging and ARM's
//! error bodies.

use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use azure_core::error::ErrorKind;
use azure_core::http::headers::{ACCEPT, CONTENT_TYPE, HeaderName, Headers, RETRY_AFTER};
use azure_core::http::policies::auth::BearerTokenAuthorizationPolicy;
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{
    ClientOptions, Context, ExponentialRetryOptions, Pipeline, PipelineSendOptions, Request,
    RetryOptions, Url,
};
use serde_json::Value;
use tokio::time::Instant;

use crate::error::{self, ArmError};
use crate::ids::request_action;
use crate::operations::{Method, Operation};

/// The token scope of Azure Resource Manager.
pub const MANAGEMENT_SCOPE: &str = "https://management.azure.com/.default";
/// Azure Resource Manager in the public cloud.
pub const PUBLIC_ENDPOINT: &str = "https://management.azure.com";

const AZURE_ASYNC_OPERATION: HeaderName = HeaderName::from_static("azure-asyncoperation");
const LOCATION: HeaderName = HeaderName::from_static("location");

const DEFAULT_POLL_MIN: Duration = Duration::from_secs(1);
const DEFAULT_POLL_MAX: Duration = Duration::from_secs(60);
// How long to wait between polls when ARM gives no Retry-After (then clamped to the bounds).
const POLL_WITHOUT_RETRY_AFTER: Duration = Duration::from_secs(5);
const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(30 * 60);
const DEFAULT_MAX_RETRIES: u32 = 6;
const DEFAULT_RETRY_DELAY: Duration = Duration::from_millis(500);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);
const MAX_RETRY_ELAPSED: Duration = Duration::from_secs(5 * 60);
// A list that pages on beyond this is a loop, not a resource group's worth of servers.
const MAX_PAGES: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct RetrySettings {
    max_retries: u32,
    initial_delay: Duration,
}

/// A client of Azure Resource Manager for the calls in [`crate::operations`].
#[derive(Debug, Clone)]
pub struct ArmClient {
    endpoint: Url,
    credential: Arc<dyn TokenCredential>,
    options: ClientOptions,
    retry: RetrySettings,
    pipeline: Pipeline,
    poll_min: Duration,
    poll_max: Duration,
    operation_timeout: Duration,
}

// What the pipeline returned, buffered.
struct Reply {
    status: u16,
    headers: Headers,
    body: azure_core::Bytes,
}

impl Reply {
    fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    fn header(&self, name: &HeaderName) -> Option<&str> {
        self.headers
            .get_optional_str(name)
            .map(str::trim)
            .filter(|v| !v.is_empty())
    }

    // Retry-After in seconds; ARM sends seconds (an HTTP date is treated as absent).
    fn retry_after(&self) -> Option<Duration> {
        self.header(&RETRY_AFTER)?
            .parse::<u64>()
            .ok()
            .map(Duration::from_secs)
    }

    fn json(&self) -> Result<Option<Value>, ArmError> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        serde_json::from_slice(&self.body)
            .map(Some)
            .map_err(|e| ArmError::Protocol(format!("response body is not JSON: {e}")))
    }

    fn error(&self, op: &Operation, path: &str) -> ArmError {
        error::from_status(self.status, &self.body, op, path)
    }
}

// How a long-running operation is watched.
enum Watch {
    AsyncOperation(Url),
    Location(Url),
}

impl ArmClient {
    /// A client of the ARM endpoint (`https://management.azure.com`, or a stand-in on loopback)
    /// authenticating with `credential` for [`MANAGEMENT_SCOPE`].
    pub fn new(endpoint: Url, credential: Arc<dyn TokenCredential>) -> Result<Self, ArmError> {
        // The bearer policy refuses plain HTTP anyway; saying so here gives a clearer error.
        if endpoint.scheme() != "https" || endpoint.host_str().is_none() {
            return Err(ArmError::Transport(format!(
                "{endpoint} is not an https:// endpoint, and tokens are only sent over TLS"
            )));
        }
        let options = culvert_azure::transport::client_options_for(&endpoint)
            .map_err(|e| ArmError::Transport(e.to_string()))?;
        let retry = RetrySettings {
            max_retries: DEFAULT_MAX_RETRIES,
            initial_delay: DEFAULT_RETRY_DELAY,
        };
        let pipeline = build_pipeline(&options, &credential, retry);
        Ok(ArmClient {
            endpoint,
            credential,
            options,
            retry,
            pipeline,
            poll_min: DEFAULT_POLL_MIN,
            poll_max: DEFAULT_POLL_MAX,
            operation_timeout: DEFAULT_OPERATION_TIMEOUT,
        })
    }

    /// Bounds of the wait between polls of a long-running operation; ARM's Retry-After is
    /// clamped into them.
    pub fn with_poll_interval(mut self, min: Duration, max: Duration) -> Self {
        self.poll_min = min;
        self.poll_max = max.max(min);
        self
    }

    /// How long a call may wait for its long-running operation (30 minutes by default).
    pub fn with_operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = timeout;
        self
    }

    /// Retries of throttled (429), failing (408, 5xx) or unreachable requests: at most
    /// `max_retries` after the first attempt, backing off exponentially from `initial_delay`
    /// with jitter, never sooner than Retry-After.
    pub fn with_retries(mut self, max_retries: u32, initial_delay: Duration) -> Self {
        self.retry = RetrySettings {
            max_retries,
            initial_delay,
        };
        self.pipeline = build_pipeline(&self.options, &self.credential, self.retry);
        self
    }

    /// The endpoint requests go to.
    pub fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    /// GET a resource (or a view of it, such as `instanceView`); `None` when it does not exist.
    pub async fn get(&self, op: &Operation, id: &str) -> Result<Option<Value>, ArmError> {
        check_call(op, Method::Get, id);
        let reply = self
            .send(Method::Get, self.url_for(id, op.api_version)?, None)
            .await?;
        match reply.status {
            404 => Ok(None),
            _ if reply.is_success() => Ok(Some(reply.json()?.unwrap_or(Value::Null))),
            _ => Err(reply.error(op, id)),
        }
    }

    /// PUT a resource and wait until it is provisioned; returns the resource as ARM then has it.
    pub async fn put(&self, op: &Operation, id: &str, body: &Value) -> Result<Value, ArmError> {
        check_call(op, Method::Put, id);
        let deadline = Instant::now() + self.operation_timeout;
        let url = self.url_for(id, op.api_version)?;
        let reply = self.send(Method::Put, url.clone(), Some(body)).await?;
        if !reply.is_success() {
            return Err(reply.error(op, id));
        }
        match self.watch_of(&reply, op)? {
            Some(watch) => {
                self.wait(op, id, watch, &reply, deadline).await?;
            }
            None => {
                let resource = reply.json()?;
                let state = resource.as_ref().and_then(provisioning_state);
                match state.as_deref().map(str::to_ascii_lowercase).as_deref() {
                    // No state means no provisioning to wait for.
                    None | Some("succeeded") if reply.status != 202 => {
                        if let Some(resource) = resource {
                            return Ok(resource);
                        }
                    }
                    Some("failed" | "canceled") => {
                        return Err(error::operation_failed(
                            state.as_deref().unwrap_or_default(),
                            None,
                        ));
                    }
                    // Still creating, and nothing to poll but the resource itself.
                    _ => return self.wait_provisioned(op, id, &url, &reply, deadline).await,
                }
            }
        }
        // ARM's final state of a PUT is the resource at its own URL.
        let reply = self.send(Method::Get, url, None).await?;
        if !reply.is_success() {
            return Err(reply.error(op, id));
        }
        Ok(reply.json()?.unwrap_or(Value::Null))
    }

    /// DELETE a resource and wait until it is gone; a resource that does not exist is no error.
    pub async fn delete(&self, op: &Operation, id: &str) -> Result<(), ArmError> {
        check_call(op, Method::Delete, id);
        let deadline = Instant::now() + self.operation_timeout;
        let reply = self
            .send(Method::Delete, self.url_for(id, op.api_version)?, None)
            .await?;
        match reply.status {
            404 | 204 | 200 => Ok(()),
            201 | 202 => match self.watch_of(&reply, op)? {
                Some(watch) => self.wait(op, id, watch, &reply, deadline).await.map(drop),
                None => Err(no_watch(op, id)),
            },
            _ => Err(reply.error(op, id)),
        }
    }

    /// POST an action (`{id}/deallocate`) and wait for it; returns its result body, if any.
    pub async fn post(
        &self,
        op: &Operation,
        action_path: &str,
        body: Option<&Value>,
    ) -> Result<Option<Value>, ArmError> {
        check_call(op, Method::Post, action_path);
        let deadline = Instant::now() + self.operation_timeout;
        let reply = self
            .send(
                Method::Post,
                self.url_for(action_path, op.api_version)?,
                body,
            )
            .await?;
        match reply.status {
            201 | 202 => match self.watch_of(&reply, op)? {
                Some(watch) => self.wait(op, action_path, watch, &reply, deadline).await,
                None => Err(no_watch(op, action_path)),
            },
            _ if reply.is_success() => reply.json(),
            _ => Err(reply.error(op, action_path)),
        }
    }

    /// GET a collection (`…/providers/Microsoft.Sql/servers`, optionally with a query such as
    /// `$filter`) and every page after it; returns the items of `value`.
    pub async fn list(&self, op: &Operation, path: &str) -> Result<Vec<Value>, ArmError> {
        check_call(op, Method::Get, path);
        let mut url = self.url_for(path, op.api_version)?;
        let mut items = Vec::new();
        for _ in 0..MAX_PAGES {
            let reply = self.send(Method::Get, url, None).await?;
            if !reply.is_success() {
                return Err(reply.error(op, path));
            }
            let Some(Value::Object(mut page)) = reply.json()? else {
                return Err(ArmError::Protocol(format!(
                    "a page of {} is not a JSON object",
                    op.name
                )));
            };
            match page.remove("value") {
                Some(Value::Array(values)) => items.extend(values),
                None | Some(Value::Null) => {}
                Some(_) => {
                    return Err(ArmError::Protocol(format!(
                        "`value` of a page of {} is not an array",
                        op.name
                    )));
                }
            }
            match page.get("nextLink").and_then(Value::as_str) {
                Some(link) if !link.is_empty() => {
                    url = self.follow(link, op.api_version, "nextLink")?;
                }
                _ => return Ok(items),
            }
        }
        Err(ArmError::Protocol(format!(
            "{} returned more than {MAX_PAGES} pages",
            op.name
        )))
    }

    async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
    ) -> Result<Reply, ArmError> {
        let mut request = Request::new(url, core_method(method));
        request.insert_header(ACCEPT, "application/json");
        if let Some(body) = body {
            let bytes = serde_json::to_vec(body)
                .map_err(|e| ArmError::Protocol(format!("request body: {e}")))?;
            request.insert_header(CONTENT_TYPE, "application/json");
            request.set_body(bytes);
        }
        let options = PipelineSendOptions {
            skip_checks: true,
            ..Default::default()
        };
        let response = self
            .pipeline
            .send(&Context::new(), &mut request, Some(options))
            .await
            .map_err(from_core_error)?;
        let (status, headers, body) = response.deconstruct();
        Ok(Reply {
            status: u16::from(status),
            headers,
            body: body.into(),
        })
    }

    // `path` (with an optional query) under the endpoint, plus `api-version`.
    fn url_for(&self, path: &str, api_version: &str) -> Result<Url, ArmError> {
        let (path, query) = match path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path, None),
        };
        if !path.starts_with('/') {
            return Err(ArmError::BadRequest {
                code: "InvalidResourcePath".into(),
                message: format!("`{path}` is not an absolute ARM path"),
            });
        }
        let mut url = self.endpoint.clone();
        let base = url.path().trim_end_matches('/').to_owned();
        url.set_path(&format!("{base}{path}"));
        url.set_query(query.filter(|q| !q.is_empty()));
        url.query_pairs_mut()
            .append_pair("api-version", api_version);
        Ok(url)
    }

    // A URL ARM handed back (nextLink, operation status). The token goes wherever the
    // request goes, so only the endpoint's own origin is followed.
    fn follow(&self, link: &str, api_version: &str, what: &str) -> Result<Url, ArmError> {
        let mut url = self
            .endpoint
            .join(link)
            .map_err(|e| ArmError::Protocol(format!("{what} `{link}` is not a URL: {e}")))?;
        if url.origin() != self.endpoint.origin() {
            return Err(ArmError::Protocol(format!(
                "refusing to follow {what} to {}, which is not {}",
                url.origin().ascii_serialization(),
                self.endpoint.origin().ascii_serialization()
            )));
        }
        if !url.query_pairs().any(|(k, _)| k == "api-version") {
            url.query_pairs_mut()
                .append_pair("api-version", api_version);
        }
        Ok(url)
    }

    fn watch_of(&self, reply: &Reply, op: &Operation) -> Result<Option<Watch>, ArmError> {
        if let Some(link) = reply.header(&AZURE_ASYNC_OPERATION) {
            let url = self.follow(link, op.api_version, "Azure-AsyncOperation")?;
            return Ok(Some(Watch::AsyncOperation(url)));
        }
        if let Some(link) = reply.header(&LOCATION) {
            let url = self.follow(link, op.api_version, "Location")?;
            return Ok(Some(Watch::Location(url)));
        }
        Ok(None)
    }

    fn poll_delay(&self, reply: &Reply) -> Duration {
        reply
            .retry_after()
            .unwrap_or(POLL_WITHOUT_RETRY_AFTER)
            .clamp(self.poll_min, self.poll_max)
    }

    async fn pause(
        &self,
        op: &Operation,
        target: &str,
        reply: &Reply,
        deadline: Instant,
    ) -> Result<(), ArmError> {
        let delay = self.poll_delay(reply);
        if Instant::now() + delay > deadline {
            return Err(ArmError::Timeout {
                what: format!(
                    "{} of {} to finish (waited {} s)",
                    op.name,
                    strip_query(target),
                    self.operation_timeout.as_secs()
                ),
            });
        }
        tokio::time::sleep(delay).await;
        Ok(())
    }

    // Polls until the operation ends. Returns the final body a Location poll (or, after an
    // Azure-AsyncOperation, the Location the first reply named) answers with.
    async fn wait(
        &self,
        op: &Operation,
        target: &str,
        watch: Watch,
        first: &Reply,
        deadline: Instant,
    ) -> Result<Option<Value>, ArmError> {
        match watch {
            Watch::AsyncOperation(url) => {
                let mut last = None;
                loop {
                    self.pause(op, target, last.as_ref().unwrap_or(first), deadline)
                        .await?;
                    let reply = self.send(Method::Get, url.clone(), None).await?;
                    if !reply.is_success() {
                        return Err(poll_error(&reply, op, target));
                    }
                    let status_body = reply.json()?.unwrap_or(Value::Null);
                    let Some(status) = status_body.get("status").and_then(Value::as_str) else {
                        return Err(ArmError::Protocol(format!(
                            "the status of {} on {} has no `status`",
                            op.name,
                            strip_query(target)
                        )));
                    };
                    match status.to_ascii_lowercase().as_str() {
                        "succeeded" => break,
                        "failed" | "canceled" | "cancelled" => {
                            return Err(error::operation_failed(status, status_body.get("error")));
                        }
                        // A poll without Retry-After keeps the pace the last one set.
                        _ if reply.retry_after().is_some() => last = Some(reply),
                        _ => {}
                    }
                }
                // A POST's result, if any, is at the Location the first reply named.
                if op.method != Method::Post {
                    return Ok(None);
                }
                let Some(link) = first.header(&LOCATION) else {
                    return Ok(None);
                };
                let reply = self
                    .send(
                        Method::Get,
                        self.follow(link, op.api_version, "Location")?,
                        None,
                    )
                    .await?;
                if !reply.is_success() {
                    return Err(poll_error(&reply, op, target));
                }
                reply.json()
            }
            Watch::Location(url) => {
                let mut last = None;
                loop {
                    self.pause(op, target, last.as_ref().unwrap_or(first), deadline)
                        .await?;
                    let reply = self.send(Method::Get, url.clone(), None).await?;
                    match reply.status {
                        202 if reply.retry_after().is_some() => last = Some(reply),
                        202 => {}
                        _ if reply.is_success() => return reply.json(),
                        _ => return Err(poll_error(&reply, op, target)),
                    }
                }
            }
        }
    }

    // A PUT answered with a provisioning state but no operation to poll: poll the resource.
    async fn wait_provisioned(
        &self,
        op: &Operation,
        id: &str,
        url: &Url,
        first: &Reply,
        deadline: Instant,
    ) -> Result<Value, ArmError> {
        let mut last = None;
        loop {
            self.pause(op, id, last.as_ref().unwrap_or(first), deadline)
                .await?;
            let reply = self.send(Method::Get, url.clone(), None).await?;
            if !reply.is_success() {
                return Err(reply.error(op, id));
            }
            let resource = reply.json()?.unwrap_or(Value::Null);
            let state = provisioning_state(&resource);
            match state.as_deref().map(str::to_ascii_lowercase).as_deref() {
                None | Some("succeeded") => return Ok(resource),
                Some("failed" | "canceled") => {
                    let state = state.as_deref().unwrap_or_default();
                    return Err(error::operation_failed(state, None));
                }
                _ if reply.retry_after().is_some() => last = Some(reply),
                _ => {}
            }
        }
    }
}

fn build_pipeline(
    options: &ClientOptions,
    credential: &Arc<dyn TokenCredential>,
    retry: RetrySettings,
) -> Pipeline {
    let mut options = options.clone();
    // ARM PUTs and DELETEs are idempotent and the POST actions used here (start, deallocate,
    // manualUpgrade) converge on a state, so every method is retried, not only reads.
    options.retry = RetryOptions::exponential(ExponentialRetryOptions {
        initial_delay: time_duration(retry.initial_delay),
        max_retries: retry.max_retries,
        max_total_elapsed: time_duration(MAX_RETRY_ELAPSED),
        max_delay: time_duration(MAX_RETRY_DELAY),
    });
    let credential: Arc<dyn TokenCredential> = Arc::new(TaggedCredential(credential.clone()));
    let auth = BearerTokenAuthorizationPolicy::new(credential, [MANAGEMENT_SCOPE]);
    Pipeline::new(
        Some(env!("CARGO_PKG_NAME")),
        Some(env!("CARGO_PKG_VERSION")),
        options,
        Vec::new(),
        // Per try, after the retry policy: each attempt gets a fresh token check and a trace line.
        vec![Arc::new(auth), Arc::new(TracePolicy)],
        None,
    )
}

fn time_duration(d: Duration) -> azure_core::time::Duration {
    azure_core::time::Duration::try_from(d).unwrap_or(azure_core::time::Duration::MAX)
}

fn core_method(method: Method) -> azure_core::http::Method {
    match method {
        Method::Get => azure_core::http::Method::Get,
        Method::Put => azure_core::http::Method::Put,
        Method::Delete => azure_core::http::Method::Delete,
        Method::Post => azure_core::http::Method::Post,
    }
}

fn strip_query(path: &str) -> &str {
    path.split('?').next().unwrap_or_default()
}

fn provisioning_state(resource: &Value) -> Option<String> {
    resource
        .get("properties")?
        .get("provisioningState")?
        .as_str()
        .map(str::to_owned)
}

fn no_watch(op: &Operation, target: &str) -> ArmError {
    ArmError::Protocol(format!(
        "{} on {} was accepted without an Azure-AsyncOperation or Location header to follow",
        op.name,
        strip_query(target)
    ))
}

// A failed poll: throttling, outages and tokens keep their meaning; any other refusal of the
// operation's status is the operation failing.
fn poll_error(reply: &Reply, op: &Operation, target: &str) -> ArmError {
    match error::from_status(reply.status, &reply.body, op, target) {
        ArmError::BadRequest { code, message }
        | ArmError::Conflict { code, message }
        | ArmError::Forbidden { code, message } => ArmError::OperationFailed { code, message },
        ArmError::NotFound { message } => ArmError::OperationFailed {
            code: "NotFound".into(),
            message,
        },
        other => other,
    }
}

// Context azure_core's retry policy wraps errors in; it says nothing about the cause.
const RETRY_CONTEXT: [&str; 2] = [
    "non-transport error occurred which will not be retried",
    "retry policy expired and the request will no longer be retried",
];

// Every message of an error and its sources, without repeats.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        let text = error::one_line(&err.to_string());
        if !text.is_empty()
            && parts.last() != Some(&text)
            && !RETRY_CONTEXT.contains(&text.as_str())
        {
            parts.push(text);
        }
        next = err.source();
    }
    parts.join(": ")
}

fn from_core_error(e: azure_core::Error) -> ArmError {
    match e.kind() {
        ErrorKind::Credential => ArmError::Credential(chain(&e)),
        _ => ArmError::Transport(chain(&e)),
    }
}

/// Whether a call's method and path are the ones its catalogue entry grants; a mismatch means
/// the catalogue (and so the customer's role) drifted from the code.
pub fn check_operation(op: &Operation, method: Method, path: &str) -> Result<(), String> {
    if op.method != method {
        return Err(format!(
            "{} is a {} operation but was sent as {method}",
            op.name, op.method
        ));
    }
    match request_action(method, path) {
        Some(action) if action.eq_ignore_ascii_case(op.action) => Ok(()),
        Some(action) => Err(format!(
            "{} grants {} but {method} {} needs {action}",
            op.name,
            op.action,
            strip_query(path)
        )),
        None => Err(format!(
            "{} was sent to {}, which names no provider resource",
            op.name,
            strip_query(path)
        )),
    }
}

fn check_call(op: &Operation, method: Method, path: &str) {
    debug_assert_eq!(check_operation(op, method, path), Ok(()));
    // Release builds still say so, once per call, rather than fail a customer's request.
    #[cfg(not(debug_assertions))]
    if let Err(drift) = check_operation(op, method, path) {
        tracing::warn!(%drift, "ARM call does not match the operation catalogue");
    }
}

/// Marks every failure of the credential as a credential error, so it is reported as such and
/// not as an unreachable ARM.
#[derive(Debug)]
struct TaggedCredential(Arc<dyn TokenCredential>);

#[async_trait::async_trait]
impl TokenCredential for TaggedCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        self.0.get_token(scopes, options).await.map_err(|e| {
            let text = chain(&e);
            azure_core::Error::with_error(ErrorKind::Credential, e, text)
        })
    }
}

/// One debug line per attempt: method, path and status; never the query or headers, so
/// neither tokens nor SAS-like parameters reach the log.
#[derive(Debug)]
struct TracePolicy;

#[async_trait::async_trait]
impl Policy for TracePolicy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        let result = next[0].send(ctx, request, &next[1..]).await;
        let method = request.method();
        let path = request.url().path();
        match &result {
            Ok(response) => {
                tracing::debug!(%method, path, status = u16::from(response.status()), "ARM request");
            }
            Err(e) => tracing::debug!(%method, path, error = %e, "ARM request failed"),
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operations::{self, ALL, container_groups, discovery, pls, role_assignments, vmss};

    const RG: &str = "/subscriptions/0000/resourceGroups/rg";

    // One example call per catalogue entry: the paths the control plane sends.
    fn example_path(op: &Operation) -> String {
        let vmss = format!("{RG}/providers/Microsoft.Compute/virtualMachineScaleSets/pool");
        let cg = format!("{RG}/providers/Microsoft.ContainerInstance/containerGroups/job");
        let vnet = format!("{RG}/providers/Microsoft.Network/virtualNetworks/vnet");
        let pls = format!("{RG}/providers/Microsoft.Network/privateLinkServices/pls");
        match op.name {
            "identities.get" => {
                format!("{RG}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/uami")
            }
            "role_assignments.list" => format!(
                "{RG}/providers/Microsoft.Authorization/roleAssignments?$filter=principalId eq 'p'"
            ),
            "vmss.get" | "vmss.create_or_update" | "vmss.delete" => vmss,
            "vmss.deallocate" => format!("{vmss}/deallocate"),
            "vmss.start" => format!("{vmss}/start"),
            "vmss.instance_view" => format!("{vmss}/instanceView"),
            "vmss.manual_upgrade" => format!("{vmss}/manualUpgrade"),
            "container_groups.get" | "container_groups.create" | "container_groups.delete" => cg,
            "container_groups.logs" => format!("{cg}/containers/main/logs"),
            "nsg.get" => format!("{RG}/providers/Microsoft.Network/networkSecurityGroups/nsg"),
            "private_endpoints.get" => {
                format!("{RG}/providers/Microsoft.Network/privateEndpoints/culvert-metadata")
            }
            "subnets.get" => format!("{vnet}/subnets/agents"),
            "vnets.get" => vnet,
            "peerings.get" | "peerings.create" | "peerings.delete" => {
                format!("{vnet}/virtualNetworkPeerings/to-hub")
            }
            "discovery.postgres_flexible" => {
                format!("{RG}/providers/Microsoft.DBforPostgreSQL/flexibleServers")
            }
            "discovery.postgres_single" => {
                format!("{RG}/providers/Microsoft.DBforPostgreSQL/servers")
            }
            "discovery.sql" => "/subscriptions/0000/providers/Microsoft.Sql/servers".to_owned(),
            "discovery.mysql_flexible" => {
                format!("{RG}/providers/Microsoft.DBforMySQL/flexibleServers")
            }
            "discovery.mysql_single" => format!("{RG}/providers/Microsoft.DBforMySQL/servers"),
            "discovery.mariadb" => format!("{RG}/providers/Microsoft.DBforMariaDB/servers"),
            "pls.connections.list" => format!("{pls}/privateEndpointConnections"),
            "pls.connections.approve" => format!("{pls}/privateEndpointConnections/pe-1"),
            other => panic!("no example call for {other}; add one"),
        }
    }

    #[test]
    fn every_catalogue_entry_matches_the_path_it_is_called_with() {
        for op in ALL {
            let path = example_path(op);
            assert_eq!(check_operation(op, op.method, &path), Ok(()), "{}", op.name);
        }
    }

    #[test]
    fn drift_between_call_and_catalogue_is_caught() {
        let vmss_id = format!("{RG}/providers/Microsoft.Compute/virtualMachineScaleSets/pool");
        // The wrong entry for the resource.
        let e = check_operation(&container_groups::GET, Method::Get, &vmss_id).unwrap_err();
        assert!(
            e.contains("Microsoft.Compute/virtualMachineScaleSets/read"),
            "{e}"
        );
        // The wrong method for the entry.
        let e = check_operation(&vmss::GET, Method::Put, &vmss_id).unwrap_err();
        assert!(e.contains("is a GET operation"), "{e}");
        // An action entry used for another action.
        let e =
            check_operation(&vmss::START, Method::Post, &format!("{vmss_id}/restart")).unwrap_err();
        assert!(e.contains("restart/action"), "{e}");
        // A list at the wrong provider.
        let e = check_operation(
            &discovery::SQL,
            Method::Get,
            &format!("{RG}/providers/Microsoft.Sql/managedInstances"),
        )
        .unwrap_err();
        assert!(e.contains("managedInstances/read"), "{e}");
        assert!(check_operation(&role_assignments::LIST, Method::Get, RG).is_err());
        // Ids echoed in another case still match.
        assert_eq!(
            check_operation(&vmss::GET, Method::Get, &vmss_id.to_ascii_lowercase()),
            Ok(())
        );
        assert_eq!(
            operations::by_name("pls.connections.list"),
            Some(&pls::CONNECTIONS_LIST)
        );
    }

    struct NoToken;
    impl std::fmt::Debug for NoToken {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("NoToken")
        }
    }
    #[async_trait::async_trait]
    impl TokenCredential for NoToken {
        async fn get_token(
            &self,
            _: &[&str],
            _: Option<TokenRequestOptions<'_>>,
        ) -> azure_core::Result<AccessToken> {
            Err(azure_core::Error::with_message(
                ErrorKind::Io,
                "identity endpoint unreachable",
            ))
        }
    }

    fn client(endpoint: &str) -> ArmClient {
        ArmClient::new(endpoint.parse().unwrap(), Arc::new(NoToken)).unwrap()
    }

    #[test]
    fn urls_carry_the_api_version_and_keep_the_endpoint_path() {
        let c = client("https://management.azure.com");
        let url = c.url_for(&format!("{RG}/providers/Microsoft.Authorization/roleAssignments?$filter=principalId eq 'p'"), "2022-04-01").unwrap();
        assert_eq!(
            url.path(),
            "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.Authorization/roleAssignments"
        );
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("$filter".to_owned(), "principalId eq 'p'".to_owned()),
                ("api-version".to_owned(), "2022-04-01".to_owned())
            ]
        );
        let prefixed = client("https://127.0.0.1:8443/arm/");
        let url = prefixed.url_for("/subscriptions/s", "2024-05-01").unwrap();
        assert_eq!(
            url.as_str(),
            "https://127.0.0.1:8443/arm/subscriptions/s?api-version=2024-05-01"
        );
        assert!(c.url_for("subscriptions/s", "v").is_err());
    }

    #[test]
    fn links_to_other_origins_are_refused() {
        let c = client("https://management.azure.com");
        let same = c
            .follow(
                "https://management.azure.com/subscriptions/s/op?api-version=2024-05-01",
                "x",
                "nextLink",
            )
            .unwrap();
        assert_eq!(same.query(), Some("api-version=2024-05-01"));
        let added = c
            .follow("/subscriptions/s/op", "2024-07-01", "Location")
            .unwrap();
        assert_eq!(
            added.as_str(),
            "https://management.azure.com/subscriptions/s/op?api-version=2024-07-01"
        );
        for foreign in [
            "https://evil.example/subscriptions/s",
            "http://management.azure.com/subscriptions/s",
            "https://management.azure.com:444/subscriptions/s",
        ] {
            let e = c.follow(foreign, "v", "nextLink").unwrap_err();
            assert!(
                matches!(&e, ArmError::Protocol(m) if m.contains("refusing to follow nextLink")),
                "{foreign}: {e}"
            );
        }
    }

    #[test]
    fn plain_http_endpoints_are_refused() {
        let e =
            ArmClient::new("http://127.0.0.1:1".parse().unwrap(), Arc::new(NoToken)).unwrap_err();
        assert!(
            matches!(e, ArmError::Transport(ref m) if m.contains("not an https:// endpoint")),
            "{e}"
        );
    }

    #[tokio::test]
    async fn credential_failures_are_reported_as_such() {
        // Never connects: the token is fetched before the request is sent.
        let c = client("https://127.0.0.1:1").with_retries(0, Duration::from_millis(1));
        let id = format!("{RG}/providers/Microsoft.Compute/virtualMachineScaleSets/pool");
        let e = c.get(&vmss::GET, &id).await.unwrap_err();
        match &e {
            ArmError::Credential(m) => assert!(m.contains("identity endpoint unreachable"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(
            e.to_string()
                .starts_with("cannot authenticate to Azure Resource Manager"),
            "{e}"
        );
    }

    #[test]
    fn poll_delays_honour_retry_after_within_bounds() {
        let c = client("https://management.azure.com")
            .with_poll_interval(Duration::from_millis(50), Duration::from_secs(2));
        let reply = |retry_after: Option<&str>| {
            let mut headers = Headers::new();
            if let Some(v) = retry_after {
                headers.insert(RETRY_AFTER, v.to_owned());
            }
            Reply {
                status: 202,
                headers,
                body: azure_core::Bytes::new(),
            }
        };
        assert_eq!(c.poll_delay(&reply(Some("1"))), Duration::from_secs(1));
        assert_eq!(c.poll_delay(&reply(Some("600"))), Duration::from_secs(2));
        assert_eq!(c.poll_delay(&reply(Some("0"))), Duration::from_millis(50));
        assert_eq!(c.poll_delay(&reply(None)), Duration::from_secs(2));
        assert_eq!(c.poll_delay(&reply(Some("soon"))), Duration::from_secs(2));
    }
}
