//! The client against a scripted ARM on loopback, over TLS with a CA made here.
//!
//! The client trusts a local CA only through `CULVERT_AZURE_CA_FILE`, read from the process
//! environment, which a test cannot set safely (edition 2024 makes `set_var` unsafe and the
//! workspace denies unsafe code). So the scenarios are ignored tests that
//! `scenarios_run_against_a_tls_stand_in` runs in a child process (this binary again) with the
//! variable set; the first scenario to need the CA writes it to that path.

use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::Response;
use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use azure_core::time::OffsetDateTime;
use culvert_arm::operations::{container_groups, discovery, role_assignments, vmss};
use culvert_arm::{ArmClient, ArmError};
use culvert_azure::transport::CA_FILE_VAR;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};

const SCENARIOS: usize = 9;
const TOKEN: &str = "test-token";
const RG: &str = "/subscriptions/0000/resourceGroups/rg-env";

#[test]
fn scenarios_run_against_a_tls_stand_in() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["scenario_", "--ignored", "--test-threads=8"])
        .env(CA_FILE_VAR, &ca)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("test result: ok. {SCENARIOS} passed")),
        "{stdout}"
    );
    assert!(ca.exists(), "the scenarios did not use the CA file");
}

// ---- the stand-in ----

fn acceptor() -> &'static tokio_rustls::TlsAcceptor {
    static ACCEPTOR: OnceLock<tokio_rustls::TlsAcceptor> = OnceLock::new();
    ACCEPTOR.get_or_init(|| {
        let path = std::env::var(CA_FILE_VAR)
            .expect("scenarios run through scenarios_run_against_a_tls_stand_in");
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "arm test CA");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        std::fs::write(&path, ca_cert.pem()).unwrap();
        let issuer = rcgen::Issuer::new(ca, ca_key);

        let mut leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
        leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(
            rustls::pki_types::PrivatePkcs8KeyDer::from(leaf_key.serialize_der()),
        );
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![leaf_cert.der().clone(), ca_cert.der().clone()], key)
            .unwrap();
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    })
}

struct TlsListener {
    tcp: TcpListener,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.tcp.accept().await else {
                continue;
            };
            if let Ok(tls) = acceptor().accept(stream).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// A request as the stand-in saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    query: String,
    authorization: Option<String>,
    body: Vec<u8>,
}

/// A scripted answer.
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Option<Value>,
}

fn reply(status: u16, body: Option<Value>) -> Reply {
    Reply {
        status,
        headers: Vec::new(),
        body,
    }
}

impl Reply {
    fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

fn arm_error(status: u16, code: &str, message: &str) -> Reply {
    reply(
        status,
        Some(json!({"error": {"code": code, "message": message}})),
    )
}

/// Answers a request given the stand-in's base URL and how many times this method and path
/// were asked before.
type Script = dyn Fn(&Seen, usize, &str) -> Reply + Send + Sync;

struct Shared {
    base: String,
    script: Box<Script>,
    seen: Mutex<Vec<Seen>>,
}

struct Stand {
    base: String,
    shared: Arc<Shared>,
}

impl Stand {
    async fn start(script: impl Fn(&Seen, usize, &str) -> Reply + Send + Sync + 'static) -> Stand {
        acceptor();
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("https://127.0.0.1:{}", tcp.local_addr().unwrap().port());
        let shared = Arc::new(Shared {
            base: base.clone(),
            script: Box::new(script),
            seen: Mutex::new(Vec::new()),
        });
        let router = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        tokio::spawn(async move { axum::serve(TlsListener { tcp }, router).await });
        Stand { base, shared }
    }

    fn client(&self) -> ArmClient {
        ArmClient::new(self.base.parse().unwrap(), Arc::new(StaticToken))
            .unwrap()
            .with_poll_interval(Duration::from_millis(10), Duration::from_millis(50))
            .with_retries(3, Duration::from_millis(10))
    }

    fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// `METHOD path` of every request so far.
    fn calls(&self) -> Vec<String> {
        self.seen()
            .iter()
            .map(|s| format!("{} {}", s.method, s.path))
            .collect()
    }
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap().to_vec();
    let seen = Seen {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or_default().to_owned(),
        authorization: parts
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body,
    };
    let count = {
        let mut all = shared.seen.lock().unwrap();
        let count = all
            .iter()
            .filter(|s| s.method == seen.method && s.path == seen.path)
            .count();
        all.push(seen.clone());
        count
    };
    let answer = if seen.authorization.as_deref() != Some(&format!("Bearer {TOKEN}")) {
        arm_error(401, "AuthenticationFailed", "no or wrong bearer token")
    } else if !seen.query.contains("api-version=") {
        arm_error(400, "MissingApiVersionParameter", "api-version is required")
    } else {
        (shared.script)(&seen, count, &shared.base)
    };
    let mut response = Response::builder().status(answer.status);
    for (name, value) in answer.headers {
        response = response.header(name, value);
    }
    match answer.body {
        Some(body) => response
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap(),
        None => response.body(Body::empty()).unwrap(),
    }
}

#[derive(Debug)]
struct StaticToken;

#[async_trait::async_trait]
impl TokenCredential for StaticToken {
    async fn get_token(
        &self,
        scopes: &[&str],
        _: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        assert_eq!(scopes, [culvert_arm::MANAGEMENT_SCOPE]);
        Ok(AccessToken::new(
            TOKEN,
            OffsetDateTime::now_utc() + azure_core::time::Duration::hours(1),
        ))
    }
}

fn vmss_id(name: &str) -> String {
    format!("{RG}/providers/Microsoft.Compute/virtualMachineScaleSets/{name}")
}

// ---- the scenarios ----

#[tokio::test]
#[ignore = "run by scenarios_run_against_a_tls_stand_in, with the stand-in's CA trusted"]
async fn scenario_put_follows_azure_async_operation() {
    let id = vmss_id("pool");
    let op_path =
        "/subscriptions/0000/providers/Microsoft.Compute/locations/eastus/operations/op-1";
    let (id2, op2) = (id.clone(), op_path.to_owned());
    let stand =
        Stand::start(
            move |seen, n, base| match (seen.method.as_str(), seen.path.as_str()) {
                ("PUT", p) if p == id2 => reply(
                    201,
                    Some(json!({"name": "pool", "properties": {"provisioningState": "Creating"}})),
                )
                .header(
                    "azure-asyncoperation",
                    format!("{base}{op2}?api-version=2024-07-01"),
                )
                // Clamped to the 50 ms ceiling the test set.
                .header("retry-after", "10"),
                ("GET", p) if p == op2 && n < 2 => {
                    reply(200, Some(json!({"status": "InProgress"}))).header("retry-after", "10")
                }
                ("GET", p) if p == op2 => reply(200, Some(json!({"status": "Succeeded"}))),
                ("GET", p) if p == id2 => reply(
                    200,
                    Some(json!({"name": "pool", "properties": {"provisioningState": "Succeeded"}})),
                ),
                _ => arm_error(404, "ResourceNotFound", "unexpected"),
            },
        )
        .await;
    let body = json!({"location": "eastus", "sku": {"capacity": 1}});
    let started = Instant::now();
    let resource = stand
        .client()
        .put(&vmss::CREATE_OR_UPDATE, &id, &body)
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "Retry-After was not clamped"
    );
    assert_eq!(resource["properties"]["provisioningState"], "Succeeded");
    assert_eq!(
        stand.calls(),
        [
            format!("PUT {id}"),
            format!("GET {op_path}"),
            format!("GET {op_path}"),
            format!("GET {op_path}"),
            format!("GET {id}"),
        ]
    );
    let seen = stand.seen();
    assert_eq!(
        serde_json::from_slice::<Value>(&seen[0].body).unwrap(),
        body
    );
    assert_eq!(seen[0].query, "api-version=2024-07-01");
    for s in &seen {
        assert_eq!(
            s.authorization.as_deref(),
            Some("Bearer test-token"),
            "{s:?}"
        );
    }
}

#[tokio::test]
#[ignore = "run by scenarios_run_against_a_tls_stand_in, with the stand-in's CA trusted"]
async fn scenario_delete_and_post_follow_location() {
    let id = vmss_id("pool");
    let (id2, deallocate) = (id.clone(), format!("{id}/deallocate"));
    let dealloc2 = deallocate.clone();
    let gone = vmss_id("gone");
    let missing = vmss_id("missing");
    let (gone2, missing2) = (gone.clone(), missing.clone());
    let stand =
        Stand::start(
            move |seen, n, base| {
                match (seen.method.as_str(), seen.path.as_str()) {
            ("DELETE", p) if p == id2 => reply(202, None)
                .header(
                    "location",
                    format!(
                        "{base}/subscriptions/0000/operationResults/del-1?api-version=2024-07-01"
                    ),
                )
                .header("retry-after", "0"),
            ("GET", "/subscriptions/0000/operationResults/del-1") if n < 1 => reply(202, None),
            ("GET", "/subscriptions/0000/operationResults/del-1") => reply(204, None),
            ("DELETE", p) if p == gone2 => reply(204, None),
            ("DELETE", p) if p == missing2 => {
                arm_error(404, "ResourceNotFound", "no such scale set")
            }
            ("POST", p) if p == dealloc2 => reply(202, None).header(
                "location",
                format!("{base}/subscriptions/0000/operationResults/post-1?api-version=2024-07-01"),
            ),
            ("GET", "/subscriptions/0000/operationResults/post-1") if n < 2 => reply(202, None),
            ("GET", "/subscriptions/0000/operationResults/post-1") => {
                reply(200, Some(json!({"deallocated": true})))
            }
            _ => arm_error(400, "Unexpected", "unexpected"),
        }
            },
        )
        .await;
    let client = stand.client();
    client.delete(&vmss::DELETE, &id).await.unwrap();
    client.delete(&vmss::DELETE, &gone).await.unwrap();
    client.delete(&vmss::DELETE, &missing).await.unwrap();
    let result = client
        .post(&vmss::DEALLOCATE, &deallocate, None)
        .await
        .unwrap();
    assert_eq!(result, Some(json!({"deallocated": true})));
    assert_eq!(
        stand.calls(),
        [
            format!("DELETE {id}"),
            "GET /subscriptions/0000/operationResults/del-1".to_owned(),
            "GET /subscriptions/0000/operationResults/del-1".to_owned(),
            format!("DELETE {gone}"),
            format!("DELETE {missing}"),
            format!("POST {deallocate}"),
            "GET /subscriptions/0000/operationResults/post-1".to_owned(),
            "GET /subscriptions/0000/operationResults/post-1".to_owned(),
            "GET /subscriptions/0000/operationResults/post-1".to_owned(),
        ]
    );
}

#[tokio::test]
#[ignore = "run by scenarios_run_against_a_tls_stand_in, with the stand-in's CA trusted"]
async fn scenario_throttling_waits_for_retry_after() {
    let stand = Stand::start(|_, n, _| match n {
        0 => arm_error(429, "TooManyRequests", "slow down").header("retry-after", "1"),
        _ => reply(200, Some(json!({"name": "pool"}))),
    })
    .await;
    let started = Instant::now();
    let got = stand
        .client()
        .get(&vmss::GET, &vmss_id("pool"))
        .await
        .unwrap();
    let waited = started.elapsed();
    assert_eq!(got, Some(json!({"name": "pool"})));
    assert!(
        waited >= Duration::from_secs(1),
        "retried after {waited:?}, before Retry-After"
    );
    assert_eq!(stand.seen().len(), 2);
}

#[tokio::test]
#[ignore = "run by scenarios_run_against_a_tls_stand_in, with the stand-in's CA trusted"]
async fn scenario_server_errors_are_retried_then_reported() {
    let flaky = vmss_id("flaky");
    let down = vmss_id("down");
    let flaky2 = flaky.clone();
    let stand = Stand::start(move |seen, n, _| {
        if seen.path == flaky2 && n >= 2 {
            reply(200, Some(json!({"name": "flaky"})))
        } else {
            arm_error(503, "ServiceUnavailable", "try later")
        }
    })
    .await;
    let got = stand.client().get(&vmss::GET, &flaky).await.unwrap();
    assert_eq!(got, Some(json!({"name": "flaky"})));
    assert_eq!(stand.seen().len(), 3);

    let client = stand.client().with_retries(1, Duration::from_millis(10));
    let e = client.get(&vmss::GET, &down).await.unwrap_err();
    assert_eq!(
        e,
        ArmError::Transient {
            status: 503,
            message: "try later".into()
        }
    );
    assert!(e.is_transient());
    assert_eq!(stand.seen().len(), 5, "one attempt and one retry");
}

#[tokio::test]
#[ignore = "run by scenarios_run_against_a_tls_stand_in, with the stand-in's CA trusted"]
async fn scenario_lists_follow_next_link_on_the_same_host_only() {
    let servers = format!("{RG}/providers/Microsoft.DBforPostgreSQL/flexibleServers");
    let assignments = format!("{RG}/providers/Microsoft.Authorization/roleAssignments");
    let (servers2, assignments2) = (servers.clone(), assignments.clone());
    let stand = Stand::start(move |seen, _, base| {
        if seen.path == assignments2 {
            assert!(seen.query.contains("principalId"), "{}", seen.query);
            return reply(200, Some(json!({"value": [{"id": "a1"}], "nextLink": "https://example.invalid/next?api-version=2022-04-01"})));
        }
        assert_eq!(seen.path, servers2);
        let next = |token: u32| format!("{base}{servers2}?api-version=2024-08-01&$skiptoken={token}");
        if seen.query.ends_with("skiptoken=3") {
            reply(200, Some(json!({"value": [{"name": "s5"}]})))
        } else if seen.query.ends_with("skiptoken=2") {
            reply(200, Some(json!({"value": [{"name": "s3"}, {"name": "s4"}], "nextLink": next(3)})))
        } else {
            reply(200, Some(json!({"value": [{"name": "s1"}, {"name": "s2"}], "nextLink": next(2)})))
        }
    })
    .await;
    let client = stand.client();
    let items = client
        .list(&discovery::POSTGRES_FLEXIBLE, &servers)
        .await
        .unwrap();
    let names: Vec<&str> = items.iter().map(|v| v["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["s1", "s2", "s3", "s4", "s5"]);
    let queries: Vec<String> = stand.seen().into_iter().map(|s| s.query).collect();
    assert_eq!(
        queries,
        [
            "api-version=2024-08-01",
            "api-version=2024-08-01&$skiptoken=2",
            "api-version=2024-08-01&$skiptoken=3"
        ]
    );

    let e = client
        .list(
            &role_assignments::LIST,
            &format!("{assignments}?$filter=principalId eq 'p-1'"),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ArmError::Protocol(m) if m.contains("refusing to follow nextLink to https://example.invalid")),
        "{e}"
    );
    assert_eq!(stand.seen().len(), 4);
}

#[tokio::test]
#[ignore = "run by scenarios_run_against_a_tls_stand_in, with the stand-in's CA trusted"]
async fn scenario_refusals_name_the_missing_action() {
    let pool = vmss_id("pool");
    let job = format!("{RG}/providers/Microsoft.ContainerInstance/containerGroups/job");
    let subnet = format!("{RG}/providers/Microsoft.Network/virtualNetworks/vnet/subnets/aci");
    let (pool2, subnet2) = (pool.clone(), subnet.clone());
    let stand = Stand::start(move |seen, _, _| {
        if seen.path == pool2 {
            arm_error(403, "AuthorizationFailed", &format!(
                "The client 'app-1' with object id 'oid-1' does not have authorization to perform action 'Microsoft.Compute/virtualMachineScaleSets/write' over scope '{pool2}' or the scope is invalid. If access was recently granted, please refresh your credentials."
            ))
        } else {
            arm_error(403, "LinkedAuthorizationFailed", &format!(
                "The client 'app-1' with object id 'oid-1' has permission to perform action 'Microsoft.ContainerInstance/containerGroups/write' on scope '{}'; however, it does not have permission to perform action(s) 'Microsoft.Network/virtualNetworks/subnets/join/action' on the linked scope(s) '{subnet2}' (respectively) or the linked scope(s) are invalid.",
                seen.path
            ))
        }
    })
    .await;
    let client = stand.client();
    let e = client
        .put(&vmss::CREATE_OR_UPDATE, &pool, &json!({}))
        .await
        .unwrap_err();
    match &e {
        ArmError::Authorization { action, scope, .. } => {
            assert_eq!(action, "Microsoft.Compute/virtualMachineScaleSets/write");
            assert_eq!(scope, &pool);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        e.to_string()
            .contains("the Culvert role in resource group rg-env lacks it"),
        "{e}"
    );

    let e = client
        .put(&container_groups::CREATE, &job, &json!({}))
        .await
        .unwrap_err();
    match &e {
        ArmError::Authorization { action, scope, .. } => {
            assert_eq!(
                action,
                "Microsoft.Network/virtualNetworks/subnets/join/action"
            );
            assert_eq!(scope, &subnet);
        }
        other => panic!("{other:?}"),
    }
    // Refusals are final: not retried.
    assert_eq!(stand.seen().len(), 2);
}

#[tokio::test]
#[ignore = "run by scenarios_run_against_a_tls_stand_in, with the stand-in's CA trusted"]
async fn scenario_failed_operations_and_missing_resources() {
    let failing = vmss_id("failing");
    let failing2 = failing.clone();
    let stand = Stand::start(move |seen, _, base| match seen.method.as_str() {
        "PUT" if seen.path == failing2 => reply(201, Some(json!({"properties": {"provisioningState": "Creating"}})))
            .header("azure-asyncoperation", format!("{base}/subscriptions/0000/operations/f-1?api-version=2024-07-01")),
        "GET" if seen.path == "/subscriptions/0000/operations/f-1" => reply(200, Some(json!({
            "status": "Failed",
            "error": {"code": "OSProvisioningTimedOut", "message": "The VM did not report ready\nin time."}
        }))),
        _ => arm_error(404, "ResourceNotFound", "The Resource 'x' under resource group 'rg-env' was not found."),
    })
    .await;
    let client = stand.client();
    let e = client
        .put(&vmss::CREATE_OR_UPDATE, &failing, &json!({}))
        .await
        .unwrap_err();
    assert_eq!(
        e,
        ArmError::OperationFailed {
            code: "OSProvisioningTimedOut".into(),
            message: "The VM did not report ready in time.".into()
        }
    );
    assert_eq!(
        client.get(&vmss::GET, &vmss_id("absent")).await.unwrap(),
        None
    );
    assert_eq!(stand.seen().len(), 3);
}

#[tokio::test]
#[ignore = "run by scenarios_run_against_a_tls_stand_in, with the stand-in's CA trusted"]
async fn scenario_operations_that_never_finish_time_out() {
    let id = vmss_id("slow");
    let stand = Stand::start(move |seen, _, base| match seen.method.as_str() {
        "PUT" => reply(201, None).header(
            "azure-asyncoperation",
            format!("{base}/subscriptions/0000/operations/slow?api-version=2024-07-01"),
        ),
        _ => reply(200, Some(json!({"status": "InProgress"}))),
    })
    .await;
    let client = stand
        .client()
        .with_operation_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let e = client
        .put(&vmss::CREATE_OR_UPDATE, &id, &json!({}))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ArmError::Timeout { what } if what.contains("vmss.create_or_update of") && what.contains("/slow")),
        "{e}"
    );
    assert!(e.is_transient());
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(stand.seen().len() >= 3, "{:?}", stand.calls());
}

#[tokio::test]
#[ignore = "run by scenarios_run_against_a_tls_stand_in, with the stand-in's CA trusted"]
async fn scenario_put_without_an_operation_header_polls_the_resource() {
    let id = vmss_id("updating");
    let stand = Stand::start(move |seen, n, _| match (seen.method.as_str(), n) {
        ("PUT", _) => reply(
            200,
            Some(json!({"properties": {"provisioningState": "Updating"}})),
        ),
        ("GET", 0) => reply(
            200,
            Some(json!({"properties": {"provisioningState": "Updating"}})),
        ),
        _ => reply(
            200,
            Some(json!({"name": "updating", "properties": {"provisioningState": "Succeeded"}})),
        ),
    })
    .await;
    let resource = stand
        .client()
        .put(&vmss::CREATE_OR_UPDATE, &id, &json!({}))
        .await
        .unwrap();
    assert_eq!(resource["name"], "updating");
    assert_eq!(
        stand.calls(),
        [
            format!("PUT {id}"),
            format!("GET {id}"),
            format!("GET {id}")
        ]
    );
}
