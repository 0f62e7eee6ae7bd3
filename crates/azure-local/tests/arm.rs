//! The Resource Manager stand-in over real HTTPS, with tokens from the real token endpoint:
//! RBAC, linked authorization, long-running operations, paging, peering, Private Link,
//! container groups, scale-set processes, fault injection and persistence.
//!
//! Scale-set instances run this very test binary as their agent: it is started as
//! `{exe} agent`, which libtest reads as a name filter selecting [`fake_agent_process`]. No other
//! test here may have "agent" in its name.

mod common;

use base64::Engine as _;
use common::{ADMIN, AGENT, CONTROL, Ident, LocalAzure, token};
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const SUB: &str = "00000000-0000-4000-8000-0000000000c1";
const CP_SUB: &str = "00000000-0000-4000-8000-0000000000c2";
const ARM: &str = "https://management.azure.com/";
const API: &str = "2024-05-01";

fn rg(sub: &str, name: &str) -> String {
    format!("/subscriptions/{sub}/resourceGroups/{name}")
}

fn arm_config(agent_binary: Option<&Path>) -> Value {
    let mut c = common::config();
    c["arm"] = json!({
        "listen": "127.0.0.1:0",
        "owners": [ADMIN.object_id],
        "subscriptions": [{"id": SUB}, {"id": CP_SUB, "tenant_id": "22222222-2222-4222-8222-222222222222"}],
        "page_size": 2,
        "lro_polls": 2,
    });
    if let Some(bin) = agent_binary {
        c["arm"]["agent_binary"] = json!(bin);
    }
    c
}

struct Arm {
    server: LocalAzure,
    base: String,
    http: reqwest::Client,
}

struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .unwrap()
    }

    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }
}

impl Arm {
    fn start(dir: &Path, agent_binary: Option<&Path>) -> Self {
        let server = LocalAzure::start_with(dir, &arm_config(agent_binary));
        let ready: Value =
            serde_json::from_slice(&std::fs::read(dir.join("ready.json")).unwrap()).unwrap();
        let base = ready["arm_endpoint"].as_str().unwrap().to_owned();
        assert!(base.starts_with("https://127.0.0.1:"), "{base}");
        let ca = std::fs::read(&server.ca_certificate).unwrap();
        let http = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
            .build()
            .unwrap();
        Self { server, base, http }
    }

    async fn token(&self, who: &Ident) -> String {
        token(&self.server, who, ARM).await
    }

    /// `path` may carry a query; `api-version` is added when it has none.
    async fn call(&self, method: Method, path: &str, token: &str, body: Option<Value>) -> Answer {
        let url = if path.starts_with("https://") {
            path.to_owned()
        } else if path.contains("api-version=") {
            format!("{}{path}", self.base)
        } else {
            let sep = if path.contains('?') { '&' } else { '?' };
            format!("{}{path}{sep}api-version={API}", self.base)
        };
        let mut req = self.http.request(method, &url).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn put(&self, path: &str, token: &str, body: Value) -> Answer {
        self.call(Method::PUT, path, token, Some(body)).await
    }

    async fn get(&self, path: &str, token: &str) -> Answer {
        self.call(Method::GET, path, token, None).await
    }

    async fn delete(&self, path: &str, token: &str) -> Answer {
        self.call(Method::DELETE, path, token, None).await
    }

    async fn post(&self, path: &str, token: &str, body: Option<Value>) -> Answer {
        self.call(Method::POST, path, token, body).await
    }

    /// PUT that must succeed (200 or 201); returns the body.
    async fn ensure(&self, path: &str, token: &str, body: Value) -> Value {
        let a = self.put(path, token, body).await;
        assert!(
            matches!(a.status, 200 | 201),
            "PUT {path}: {} {}",
            a.status,
            a.body
        );
        a.body
    }

    /// Polls a `Location` URL until it stops answering 202; returns the final status and how
    /// many 202s came first.
    async fn wait_location(&self, url: &str, token: &str) -> (u16, usize) {
        let mut accepted = 0;
        loop {
            let a = self.get(url, token).await;
            if a.status != 202 {
                return (a.status, accepted);
            }
            assert_eq!(a.header("retry-after"), "0");
            accepted += 1;
            assert!(accepted < 10, "operation never finished");
        }
    }

    /// A custom role with `actions` assigned to `who` at `scope`; returns the assignment id.
    async fn grant(
        &self,
        admin: &str,
        who: &Ident,
        scope: &str,
        role: &str,
        actions: &[&str],
    ) -> String {
        let def_guid = guid(role);
        let def_id = format!(
            "/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{def_guid}"
        );
        self.ensure(
            &format!("{scope}/providers/Microsoft.Authorization/roleDefinitions/{def_guid}"),
            admin,
            json!({"properties": {
                "roleName": role,
                "permissions": [{"actions": actions, "notActions": [], "dataActions": [], "notDataActions": []}],
                "assignableScopes": [scope],
            }}),
        )
        .await;
        let assignment = format!(
            "{scope}/providers/Microsoft.Authorization/roleAssignments/{}",
            guid(&format!("{role}/{}", who.object_id))
        );
        self.ensure(
            &assignment,
            admin,
            json!({"properties": {"roleDefinitionId": def_id, "principalId": who.object_id, "principalType": "ServicePrincipal"}}),
        )
        .await;
        assignment
    }
}

// A GUID-shaped name derived from `seed`, so tests read naturally and ids stay unique.
fn guid(seed: &str) -> String {
    let mut h: u128 = 0xcbf2_9ce4_8422_2325_cbf2_9ce4_8422_2325;
    for b in seed.bytes() {
        h = (h ^ u128::from(b)).wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b);
    }
    let x = format!("{h:032x}");
    format!(
        "{}-{}-4{}-8{}-{}",
        &x[0..8],
        &x[8..12],
        &x[13..16],
        &x[17..20],
        &x[20..32]
    )
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn nsg_body() -> Value {
    json!({"location": "eastus", "properties": {"securityRules": [{"name": "https", "properties": {
        "priority": 100, "direction": "Outbound", "access": "Allow", "protocol": "Tcp",
        "sourcePortRange": "*", "destinationPortRange": "443",
        "sourceAddressPrefix": "VirtualNetwork", "destinationAddressPrefix": "*"}}]}})
}

/// A resource group with a VNet (subnet "agents" with an NSG) and a user-assigned identity.
struct Network {
    group: String,
    vnet: String,
    subnet: String,
    nsg: String,
    identity: String,
}

async fn network(arm: &Arm, admin: &str, sub: &str, name: &str) -> Network {
    let group = rg(sub, name);
    arm.ensure(&group, admin, json!({"location": "eastus"}))
        .await;
    let nsg = format!("{group}/providers/Microsoft.Network/networkSecurityGroups/nsg");
    arm.ensure(&nsg, admin, nsg_body()).await;
    let vnet = format!("{group}/providers/Microsoft.Network/virtualNetworks/vnet");
    arm.ensure(
        &vnet,
        admin,
        json!({"location": "eastus", "properties": {
            "addressSpace": {"addressPrefixes": ["10.1.0.0/16"]},
            "subnets": [{"name": "agents", "properties": {"addressPrefix": "10.1.0.0/24", "networkSecurityGroup": {"id": nsg}}}]
        }}),
    )
    .await;
    let identity =
        format!("{group}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/workers");
    arm.ensure(&identity, admin, json!({"location": "eastus"}))
        .await;
    Network {
        subnet: format!("{vnet}/subnets/agents"),
        group,
        vnet,
        nsg,
        identity,
    }
}

fn scale_set_body(net: &Network, capacity: u32, custom_data: Option<String>) -> Value {
    let mut body = json!({
        "location": "eastus",
        "sku": {"name": "Standard_D2s_v5", "tier": "Standard", "capacity": capacity},
        "identity": {"type": "UserAssigned", "userAssignedIdentities": {net.identity.clone(): {}}},
        "properties": {
            "orchestrationMode": "Uniform",
            "upgradePolicy": {"mode": "Manual"},
            "virtualMachineProfile": {
                "osProfile": {"computerNamePrefix": "culvert", "adminUsername": "culvert"},
                "networkProfile": {"networkInterfaceConfigurations": [{"name": "nic", "properties": {
                    "primary": true,
                    "networkSecurityGroup": {"id": net.nsg},
                    "ipConfigurations": [{"name": "ip", "properties": {"subnet": {"id": net.subnet}}}]
                }}]}
            }
        }
    });
    if let Some(cd) = custom_data {
        body["properties"]["virtualMachineProfile"]["osProfile"]["customData"] = json!(cd);
    }
    body
}

#[tokio::test]
async fn rbac_allows_and_denies_with_azure_messages() {
    let dir = tempfile::tempdir().unwrap();
    let arm = Arm::start(dir.path(), None);
    let admin = arm.token(&ADMIN).await;
    let control = arm.token(&CONTROL).await;
    let net = network(&arm, &admin, SUB, "customer").await;

    // Authentication and api-version come first.
    let a = arm.get(&net.vnet, "").await;
    assert_eq!((a.status, a.code()), (401, "InvalidAuthenticationToken"));
    assert!(
        a.header("www-authenticate")
            .starts_with("Bearer authorization_uri=")
    );
    let vault_token = token(&arm.server, &CONTROL, "https://vault.azure.net").await;
    assert_eq!(arm.get(&net.vnet, &vault_token).await.status, 401);
    let a = arm.get(&format!("{}?api-version=", net.vnet), &admin).await;
    assert_eq!((a.status, a.code()), (400, "MissingApiVersionParameter"));
    let a = arm
        .get("/subscriptions/nope/resourceGroups/x", &admin)
        .await;
    assert_eq!((a.status, a.code()), (404, "SubscriptionNotFound"));

    // Without an assignment the control plane may do nothing.
    let a = arm.get(&net.nsg, &control).await;
    assert_eq!((a.status, a.code()), (403, "AuthorizationFailed"));
    assert_eq!(
        a.body["error"]["message"],
        format!(
            "The client '{}' with object id '{}' does not have authorization to perform action 'Microsoft.Network/networkSecurityGroups/read' over scope '{}' or the scope is invalid. If access was recently granted, please refresh your credentials.",
            CONTROL.client_id, CONTROL.object_id, net.nsg
        )
    );

    arm.grant(
        &admin,
        &CONTROL,
        &net.group,
        "culvert-control-plane",
        &["*/read", "Microsoft.Compute/*"],
    )
    .await;
    assert_eq!(arm.get(&net.nsg, &control).await.status, 200);
    assert_eq!(
        arm.get(&format!("{}/subnets/agents", net.vnet), &control)
            .await
            .status,
        200
    );
    // Reading is granted, writing a network security group is not.
    let a = arm.put(&net.nsg, &control, nsg_body()).await;
    assert_eq!(a.status, 403);
    assert!(
        a.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!(
                "perform action 'Microsoft.Network/networkSecurityGroups/write' over scope '{}'",
                net.nsg
            )),
        "{}",
        a.body
    );
    // The assignment is scoped to the resource group, not the subscription.
    let a = arm
        .get(
            &format!("/subscriptions/{SUB}/providers/Microsoft.Network/networkSecurityGroups"),
            &control,
        )
        .await;
    assert_eq!(a.status, 403);
    assert!(
        a.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("over scope '/subscriptions/{SUB}'"))
    );

    // Listing the control plane's assignments, as registration does.
    let filter = format!(
        "{}/providers/Microsoft.Authorization/roleAssignments?$filter=principalId%20eq%20'{}'",
        net.group, CONTROL.object_id
    );
    let a = arm.get(&filter, &control).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let list = a.body["value"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["properties"]["principalId"], CONTROL.object_id);
    assert_eq!(list[0]["properties"]["scope"], net.group);
    let none = format!(
        "{}/providers/Microsoft.Authorization/roleAssignments?$filter=principalId%20eq%20'{}'",
        net.group, AGENT.object_id
    );
    assert_eq!(arm.get(&none, &control).await.body["value"], json!([]));

    // An assignment outside the definition's assignable scopes is refused.
    let def_guid = guid("culvert-control-plane");
    let other = rg(SUB, "other");
    arm.ensure(&other, &admin, json!({"location": "eastus"}))
        .await;
    let a = arm
        .put(
            &format!("{other}/providers/Microsoft.Authorization/roleAssignments/{}", guid("x")),
            &admin,
            json!({"properties": {"roleDefinitionId": format!("/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{def_guid}"), "principalId": AGENT.object_id}}),
        )
        .await;
    assert_eq!(
        (a.status, a.code()),
        (400, "InvalidCreateRoleAssignmentRequest"),
        "{}",
        a.body
    );

    // notActions subtract.
    let rg2 = rg(SUB, "narrow");
    arm.ensure(&rg2, &admin, json!({"location": "eastus"}))
        .await;
    let def = guid("narrow");
    arm.ensure(
        &format!("{rg2}/providers/Microsoft.Authorization/roleDefinitions/{def}"),
        &admin,
        json!({"properties": {"roleName": "narrow", "assignableScopes": [rg2],
            "permissions": [{"actions": ["Microsoft.Resources/*"], "notActions": ["*/delete"]}]}}),
    )
    .await;
    arm.ensure(
        &format!(
            "{rg2}/providers/Microsoft.Authorization/roleAssignments/{}",
            guid("narrow-a")
        ),
        &admin,
        json!({"properties": {"roleDefinitionId": def, "principalId": AGENT.object_id}}),
    )
    .await;
    let agent_token = arm.token(&AGENT).await;
    assert_eq!(arm.get(&rg2, &agent_token).await.status, 200);
    let a = arm.delete(&rg2, &agent_token).await;
    assert_eq!(a.status, 403);
    assert!(
        a.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("'Microsoft.Resources/subscriptions/resourceGroups/delete'")
    );
}

#[tokio::test]
async fn linked_authorization_guards_identity_assignment() {
    let dir = tempfile::tempdir().unwrap();
    let arm = Arm::start(dir.path(), None);
    let admin = arm.token(&ADMIN).await;
    let control = arm.token(&CONTROL).await;
    let net = network(&arm, &admin, SUB, "customer").await;
    let vmss = format!(
        "{}/providers/Microsoft.Compute/virtualMachineScaleSets/workers",
        net.group
    );

    arm.grant(
        &admin,
        &CONTROL,
        &net.group,
        "scale-sets-only",
        &[
            "Microsoft.Compute/virtualMachineScaleSets/*",
            "Microsoft.Network/virtualNetworks/subnets/join/action",
            "Microsoft.Network/networkSecurityGroups/join/action",
        ],
    )
    .await;
    let a = arm
        .put(&vmss, &control, scale_set_body(&net, 1, None))
        .await;
    assert_eq!(
        (a.status, a.code()),
        (403, "LinkedAuthorizationFailed"),
        "{}",
        a.body
    );
    assert_eq!(
        a.body["error"]["message"],
        format!(
            "The client '{}' with object id '{}' has permission to perform action 'Microsoft.Compute/virtualMachineScaleSets/write' on scope '{vmss}'; however, it does not have permission to perform action(s) 'Microsoft.ManagedIdentity/userAssignedIdentities/assign/action' on the linked scope(s) '{}' (respectively) or the linked scope(s) are invalid.",
            CONTROL.client_id, CONTROL.object_id, net.identity
        )
    );

    // Granting assign/action on the identity itself is enough.
    arm.grant(
        &admin,
        &CONTROL,
        &net.group,
        "assign-identity",
        &["Microsoft.ManagedIdentity/userAssignedIdentities/assign/action"],
    )
    .await;
    let a = arm
        .put(&vmss, &control, scale_set_body(&net, 1, None))
        .await;
    assert_eq!(a.status, 201, "{}", a.body);
    let identity = arm.get(&net.identity, &admin).await.body;
    assert_eq!(
        a.body["identity"]["userAssignedIdentities"][&net.identity]["principalId"],
        identity["properties"]["principalId"]
    );

    // A reference to an identity that does not exist.
    let missing = format!(
        "{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/nope",
        net.group
    );
    let mut body = scale_set_body(&net, 1, None);
    body["identity"]["userAssignedIdentities"] = json!({missing.clone(): {}});
    let a = arm.put(&vmss, &admin, body).await;
    assert_eq!((a.status, a.code()), (400, "InvalidResourceReference"));
    assert!(
        a.body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with(&format!(
                "Resource {missing} referenced by resource {vmss} was not found."
            ))
    );
}

#[tokio::test]
async fn scale_set_create_polls_then_actions_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let arm = Arm::start(dir.path(), None);
    let admin = arm.token(&ADMIN).await;
    let net = network(&arm, &admin, SUB, "customer").await;
    let vmss = format!(
        "{}/providers/Microsoft.Compute/virtualMachineScaleSets/workers",
        net.group
    );

    let a = arm.put(&vmss, &admin, scale_set_body(&net, 2, None)).await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(a.body["properties"]["provisioningState"], "Creating");
    assert_eq!(a.header("retry-after"), "0");
    let op = a.header("azure-asyncoperation").to_owned();
    assert!(
        op.starts_with(&format!(
            "{}/subscriptions/{SUB}/providers/Microsoft.Compute/locations/eastus/operations/",
            arm.base
        )),
        "{op}"
    );
    for _ in 0..2 {
        let s = arm.get(&op, &admin).await;
        assert_eq!(
            (s.status, s.body["status"].as_str()),
            (200, Some("InProgress"))
        );
    }
    let s = arm.get(&op, &admin).await;
    assert_eq!(s.body["status"], "Succeeded");
    assert!(s.body["endTime"].is_string());
    let got = arm.get(&vmss, &admin).await.body;
    assert_eq!(got["properties"]["provisioningState"], "Succeeded");
    assert_eq!(
        got["properties"]["virtualMachineProfile"]["osProfile"]["computerNamePrefix"],
        "culvert"
    );

    let view = arm.get(&format!("{vmss}/instanceView"), &admin).await;
    assert_eq!(view.status, 200, "{}", view.body);
    let summary = &view.body["virtualMachine"]["statusesSummary"];
    assert!(
        summary
            .as_array()
            .unwrap()
            .contains(&json!({"code": "ProvisioningState/succeeded", "count": 2})),
        "{summary}"
    );
    assert_eq!(view.body["statuses"][1]["code"], "PowerState/running");

    // An update answers 200 "Updating".
    let a = arm.put(&vmss, &admin, scale_set_body(&net, 3, None)).await;
    assert_eq!(
        (a.status, a.body["properties"]["provisioningState"].as_str()),
        (200, Some("Updating"))
    );

    let a = arm.post(&format!("{vmss}/deallocate"), &admin, None).await;
    assert_eq!(a.status, 202, "{}", a.body);
    assert_eq!(a.header("retry-after"), "0");
    let (status, accepted) = arm.wait_location(a.header("location"), &admin).await;
    assert_eq!((status, accepted), (204, 2));
    let view = arm.get(&format!("{vmss}/instanceView"), &admin).await.body;
    assert_eq!(view["statuses"][1]["code"], "PowerState/deallocated");
    assert!(
        view["virtualMachine"]["statusesSummary"]
            .as_array()
            .unwrap()
            .contains(&json!({"code": "PowerState/deallocated", "count": 3}))
    );
    let a = arm
        .post(
            &format!("{vmss}/start"),
            &admin,
            Some(json!({"instanceIds": ["0"]})),
        )
        .await;
    assert_eq!(a.status, 202);
    let view = arm.get(&format!("{vmss}/instanceView"), &admin).await.body;
    assert_eq!(view["statuses"][1]["code"], "PowerState/running");
    let a = arm.post(&format!("{vmss}/frobnicate"), &admin, None).await;
    assert_eq!(a.status, 400);

    let a = arm.delete(&vmss, &admin).await;
    assert_eq!(a.status, 202);
    assert_eq!(
        arm.wait_location(a.header("location"), &admin).await,
        (204, 2)
    );
    let a = arm.get(&vmss, &admin).await;
    assert_eq!((a.status, a.code()), (404, "ResourceNotFound"));
    assert_eq!(arm.delete(&vmss, &admin).await.status, 204);
    let a = arm
        .get(
            &format!(
                "{}/providers/Microsoft.Compute/virtualMachineScaleSets/x",
                rg(SUB, "none")
            ),
            &admin,
        )
        .await;
    assert_eq!((a.status, a.code()), (404, "ResourceGroupNotFound"));
}

#[tokio::test]
async fn resource_groups_in_any_case_and_deleted_with_their_resources() {
    let dir = tempfile::tempdir().unwrap();
    let arm = Arm::start(dir.path(), None);
    let admin = arm.token(&ADMIN).await;
    let a = arm
        .put(
            &format!("/subscriptions/{SUB}/resourcegroups/Mixed"),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!((a.status, a.code()), (400, "LocationRequired"));
    let a = arm
        .put(
            &format!("/subscriptions/{SUB}/resourcegroups/Mixed"),
            &admin,
            json!({"location": "eastus", "tags": {"a": "b"}}),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(a.body["id"], rg(SUB, "Mixed"));
    let got = arm
        .get(
            &format!("/subscriptions/{SUB}/RESOURCEGROUPS/mixed"),
            &admin,
        )
        .await;
    assert_eq!(
        (got.status, got.body["tags"]["a"].as_str()),
        (200, Some("b"))
    );
    let nsg = format!(
        "{}/providers/Microsoft.Network/networkSecurityGroups/n",
        rg(SUB, "mixed")
    );
    arm.ensure(&nsg, &admin, nsg_body()).await;
    let a = arm.put(&nsg, &admin, json!({"location": "westus"})).await;
    assert_eq!((a.status, a.code()), (400, "InvalidResourceLocation"));
    let a = arm.get(&format!("/subscriptions/{SUB}"), &admin).await;
    assert_eq!(a.body["tenantId"], common::TENANT);
    let a = arm.get(&format!("/subscriptions/{CP_SUB}"), &admin).await;
    assert_eq!(a.body["tenantId"], "22222222-2222-4222-8222-222222222222");

    let a = arm.delete(&rg(SUB, "MIXED"), &admin).await;
    assert_eq!(a.status, 202);
    assert_eq!(
        arm.wait_location(a.header("location"), &admin).await,
        (204, 2)
    );
    let a = arm.get(&nsg, &admin).await;
    assert_eq!((a.status, a.code()), (404, "ResourceGroupNotFound"));
    assert_eq!(arm.delete(&rg(SUB, "mixed"), &admin).await.status, 404);
}

#[tokio::test]
async fn lists_page_with_absolute_next_links() {
    let dir = tempfile::tempdir().unwrap();
    let arm = Arm::start(dir.path(), None);
    let admin = arm.token(&ADMIN).await;
    let group = rg(SUB, "servers");
    arm.ensure(&group, &admin, json!({"location": "westeurope"}))
        .await;
    for i in 0..5 {
        arm.ensure(
            &format!("{group}/providers/Microsoft.DBforPostgreSQL/flexibleServers/pg{i}"),
            &admin,
            json!({"location": "westeurope", "properties": {"fullyQualifiedDomainName": format!("pg{i}.postgres.database.azure.com"), "version": "16", "state": "Ready"}}),
        )
        .await;
    }
    for scope in [group.clone(), format!("/subscriptions/{SUB}")] {
        let mut next = format!(
            "{scope}/providers/Microsoft.DBforPostgreSQL/flexibleServers?api-version=2024-08-01"
        );
        let mut names = Vec::new();
        let mut pages = 0;
        loop {
            let a = arm.get(&next, &admin).await;
            assert_eq!(a.status, 200, "{}", a.body);
            pages += 1;
            let value = a.body["value"].as_array().unwrap();
            assert!(value.len() <= 2);
            names.extend(value.iter().map(|v| v["name"].as_str().unwrap().to_owned()));
            assert_eq!(value[0]["properties"]["provisioningState"], "Succeeded");
            match a.body["nextLink"].as_str() {
                Some(link) => {
                    assert!(link.starts_with(&arm.base), "{link}");
                    assert!(link.contains("api-version=2024-08-01"), "{link}");
                    next = link.to_owned();
                }
                None => break,
            }
        }
        assert_eq!(pages, 3);
        assert_eq!(names, ["pg0", "pg1", "pg2", "pg3", "pg4"]);
    }
}

#[tokio::test]
async fn peering_goes_initiated_then_connected_and_subnets_stay_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let arm = Arm::start(dir.path(), None);
    let admin = arm.token(&ADMIN).await;
    let ours = network(&arm, &admin, SUB, "customer").await;
    let theirs = network(&arm, &admin, CP_SUB, "database").await;
    let peering =
        |from: &Network, name: &str| format!("{}/virtualNetworkPeerings/{name}", from.vnet);
    let body = |remote: &str| json!({"properties": {"allowVirtualNetworkAccess": true, "remoteVirtualNetwork": {"id": remote}}});

    // A subnet PUT shows up in the VNet, and the VNet's subnet shows up as a child.
    arm.ensure(
        &format!("{}/subnets/extra", ours.vnet),
        &admin,
        json!({"properties": {"addressPrefix": "10.1.1.0/24"}}),
    )
    .await;
    let vnet = arm.get(&ours.vnet, &admin).await.body;
    let subnets: Vec<&str> = vnet["properties"]["subnets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(subnets, ["agents", "extra"]);
    let agents = arm.get(&ours.subnet, &admin).await.body;
    assert_eq!(agents["properties"]["networkSecurityGroup"]["id"], ours.nsg);

    let a = arm
        .put(&peering(&ours, "to-db"), &admin, body(&theirs.vnet))
        .await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(a.body["properties"]["peeringState"], "Initiated");
    assert!(a.headers.contains_key("azure-asyncoperation"));

    let a = arm
        .put(&peering(&theirs, "to-customer"), &admin, body(&ours.vnet))
        .await;
    assert_eq!(a.body["properties"]["peeringState"], "Connected");
    let a = arm.get(&peering(&ours, "to-db"), &admin).await;
    assert_eq!(a.body["properties"]["peeringState"], "Connected");
    assert_eq!(
        a.body["properties"]["remoteAddressSpace"]["addressPrefixes"][0],
        "10.1.0.0/16"
    );
    let list = arm
        .get(&format!("{}/virtualNetworkPeerings", ours.vnet), &admin)
        .await;
    assert_eq!(list.body["value"].as_array().unwrap().len(), 1);

    let a = arm.delete(&peering(&theirs, "to-customer"), &admin).await;
    assert_eq!(a.status, 202);
    let a = arm.get(&peering(&ours, "to-db"), &admin).await;
    assert_eq!(a.body["properties"]["peeringState"], "Disconnected");

    let missing = format!(
        "{}/providers/Microsoft.Network/virtualNetworks/nope",
        theirs.group
    );
    let a = arm
        .put(&peering(&ours, "bad"), &admin, body(&missing))
        .await;
    assert_eq!((a.status, a.code()), (400, "InvalidResourceReference"));
    assert_eq!(
        a.body["error"]["message"]
            .as_str()
            .unwrap()
            .split(" Please")
            .next()
            .unwrap(),
        format!(
            "Resource {missing} referenced by resource {} was not found.",
            peering(&ours, "bad")
        )
    );
}

#[tokio::test]
async fn private_endpoint_connection_pending_then_approved() {
    let dir = tempfile::tempdir().unwrap();
    let arm = Arm::start(dir.path(), None);
    let admin = arm.token(&ADMIN).await;
    let control = arm.token(&CONTROL).await;
    let customer = network(&arm, &admin, SUB, "customer").await;
    let cp = network(&arm, &admin, CP_SUB, "control-plane").await;
    let pls = format!(
        "{}/providers/Microsoft.Network/privateLinkServices/metadata",
        cp.group
    );
    arm.ensure(
        &pls,
        &admin,
        json!({"location": "eastus", "properties": {
        "ipConfigurations": [{"name": "ip", "properties": {"subnet": {"id": cp.subnet}}}]}}),
    )
    .await;
    let pe = format!(
        "{}/providers/Microsoft.Network/privateEndpoints/culvert-metadata",
        customer.group
    );
    let pe_body = |service: &str| {
        json!({"location": "eastus", "properties": {
        "subnet": {"id": customer.subnet},
        "manualPrivateLinkServiceConnections": [{"name": "metadata", "properties": {
            "privateLinkServiceId": service, "requestMessage": "culvert environment e1"}}]}})
    };

    let a = arm.put(&pe, &admin, pe_body(&pls)).await;
    assert_eq!(a.status, 201, "{}", a.body);
    let conn = &a.body["properties"]["manualPrivateLinkServiceConnections"][0]["properties"];
    assert_eq!(
        conn["privateLinkServiceConnectionState"]["status"],
        "Pending"
    );
    let ip = a.body["properties"]["customDnsConfigs"][0]["ipAddresses"][0]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(ip.starts_with("10."), "{ip}");
    assert!(
        a.body["properties"]["networkInterfaces"][0]["id"]
            .as_str()
            .unwrap()
            .contains("/networkInterfaces/")
    );

    // The control plane approves it on its own service.
    arm.grant(
        &admin,
        &CONTROL,
        &cp.group,
        "approver",
        &["Microsoft.Network/privateLinkServices/privateEndpointConnections/*"],
    )
    .await;
    let list = arm
        .get(&format!("{pls}/privateEndpointConnections"), &control)
        .await;
    assert_eq!(list.status, 200, "{}", list.body);
    let c = &list.body["value"][0];
    assert_eq!(c["properties"]["privateEndpoint"]["id"], pe);
    assert_eq!(
        c["properties"]["privateLinkServiceConnectionState"]["description"],
        "culvert environment e1"
    );
    let conn_id = c["id"].as_str().unwrap().to_owned();
    assert!(
        conn_id.starts_with(&format!(
            "{pls}/privateEndpointConnections/culvert-metadata."
        )),
        "{conn_id}"
    );
    let a = arm
        .put(&conn_id, &control, json!({"properties": {"privateLinkServiceConnectionState": {"status": "Approved", "description": "ok", "actionsRequired": "None"}}}))
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["properties"]["provisioningState"], "Updating");
    assert_eq!(a.body["properties"]["privateEndpoint"]["id"], pe);
    let got = arm.get(&pe, &admin).await.body;
    assert_eq!(
        got["properties"]["manualPrivateLinkServiceConnections"][0]["properties"]["privateLinkServiceConnectionState"]
            ["status"],
        "Approved"
    );
    assert_eq!(
        got["properties"]["customDnsConfigs"][0]["ipAddresses"][0],
        ip
    );
    // Re-applying the endpoint keeps the approval.
    arm.ensure(&pe, &admin, pe_body(&pls)).await;
    let got = arm.get(&pls, &admin).await.body;
    assert_eq!(
        got["properties"]["privateEndpointConnections"][0]["properties"]["privateLinkServiceConnectionState"]
            ["status"],
        "Approved"
    );

    let missing = format!(
        "{}/providers/Microsoft.Network/privateLinkServices/nope",
        cp.group
    );
    let a = arm.put(&format!("{pe}-2"), &admin, pe_body(&missing)).await;
    assert_eq!((a.status, a.code()), (400, "InvalidResourceReference"));

    assert_eq!(arm.delete(&pe, &admin).await.status, 202);
    let list = arm
        .get(&format!("{pls}/privateEndpointConnections"), &control)
        .await;
    assert_eq!(list.body["value"], json!([]));
}

fn container_group_body(net: &Network, command: &[&str]) -> Value {
    json!({
        "location": "eastus",
        "identity": {"type": "UserAssigned", "userAssignedIdentities": {net.identity.clone(): {}}},
        "properties": {
            "osType": "Linux", "restartPolicy": "Never", "sku": "Standard",
            "subnetIds": [{"id": net.subnet}],
            "containers": [{"name": "validate", "properties": {
                "image": "registry.local/culvert:1",
                "command": command,
                "environmentVariables": [
                    {"name": "PLAIN", "value": "visible"},
                    {"name": "CONTAINER_EXIT_CODE", "secureValue": "3"}
                ],
                "resources": {"requests": {"cpu": 1.0, "memoryInGB": 1.5}}
            }}]
        }
    })
}

#[tokio::test]
async fn container_group_without_binary_runs_until_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let arm = Arm::start(dir.path(), None);
    let admin = arm.token(&ADMIN).await;
    let net = network(&arm, &admin, SUB, "customer").await;
    let group = format!(
        "{}/providers/Microsoft.ContainerInstance/containerGroups/validate-1",
        net.group
    );

    let a = arm
        .put(
            &group,
            &admin,
            container_group_body(&net, &["culvert-agent", "validate"]),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert!(!a.body.to_string().contains("secureValue"), "{}", a.body);
    assert_eq!(a.body["properties"]["instanceView"]["state"], "Pending");
    let op = a.header("azure-asyncoperation").to_owned();
    while arm.get(&op, &admin).await.body["status"] == "InProgress" {}
    let got = arm.get(&group, &admin).await.body;
    assert_eq!(got["properties"]["instanceView"]["state"], "Running");
    let container = &got["properties"]["containers"][0]["properties"];
    assert_eq!(
        container["instanceView"]["currentState"]["state"],
        "Running"
    );
    assert_eq!(
        container["environmentVariables"][0],
        json!({"name": "PLAIN", "value": "visible"})
    );
    assert_eq!(
        container["environmentVariables"][1],
        json!({"name": "CONTAINER_EXIT_CODE"})
    );
    let logs = arm
        .get(&format!("{group}/containers/validate/logs"), &admin)
        .await;
    assert_eq!((logs.status, &logs.body), (200, &json!({"content": ""})));
    assert_eq!(
        arm.get(&format!("{group}/containers/other/logs"), &admin)
            .await
            .status,
        404
    );

    let a = arm.delete(&group, &admin).await;
    assert_eq!(a.status, 202);
    assert_eq!(arm.get(&group, &admin).await.status, 404);

    let mut bad = container_group_body(&net, &["x"]);
    bad["properties"]["subnetIds"] = json!([{"id": format!("{}/subnets/missing", net.vnet)}]);
    let a = arm.put(&group, &admin, bad).await;
    assert_eq!((a.status, a.code()), (400, "InvalidResourceReference"));
}

#[tokio::test]
async fn injected_throttling_then_success() {
    let dir = tempfile::tempdir().unwrap();
    let arm = Arm::start(dir.path(), None);
    let admin = arm.token(&ADMIN).await;
    let group = rg(SUB, "throttled");
    arm.ensure(&group, &admin, json!({"location": "eastus"}))
        .await;
    let rule = arm
        .http
        .post(format!("{}/_local/faults", arm.base))
        .json(&json!({"status": 429, "count": 1, "retry_after": 0, "operations": ["get"], "path_contains": "/resourcegroups/THROTTLED"}))
        .send()
        .await
        .unwrap();
    assert_eq!(rule.status().as_u16(), 200);
    // Other paths and methods are not affected.
    assert_eq!(arm.get(&rg(SUB, "absent"), &admin).await.status, 404);
    let a = arm.get(&group, &admin).await;
    assert_eq!((a.status, a.code()), (429, "TooManyRequests"));
    assert_eq!(a.header("retry-after"), "0");
    let a = arm.get(&group, &admin).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body["properties"]["provisioningState"], "Succeeded");
}

#[tokio::test]
async fn state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let vnet = format!(
        "{}/providers/Microsoft.Network/virtualNetworks/kept",
        rg(SUB, "kept")
    );
    let identity = {
        let arm = Arm::start(dir.path(), None);
        let admin = arm.token(&ADMIN).await;
        let net = network(&arm, &admin, SUB, "kept").await;
        arm.ensure(&vnet, &admin, json!({"location": "eastus", "properties": {"addressSpace": {"addressPrefixes": ["10.9.0.0/16"]}}})).await;
        let id = arm.get(&net.identity, &admin).await.body;
        assert!(arm.server.stop().success());
        id
    };
    let arm = Arm::start(dir.path(), None);
    let admin = arm.token(&ADMIN).await;
    let a = arm.get(&vnet, &admin).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        a.body["properties"]["addressSpace"]["addressPrefixes"][0],
        "10.9.0.0/16"
    );
    let again = arm.get(identity["id"].as_str().unwrap(), &admin).await.body;
    assert_eq!(
        again["properties"]["principalId"],
        identity["properties"]["principalId"]
    );
}

/// A stand-in that runs this test binary as its agent, an admin token, and a network.
async fn with_processes(dir: &Path) -> (Arm, String, Network) {
    let exe = std::env::current_exe().unwrap();
    let arm = Arm::start(dir, Some(&exe));
    let admin = arm.token(&ADMIN).await;
    let net = network(&arm, &admin, SUB, "customer").await;
    (arm, admin, net)
}

/// The (new) directory the fake processes write their reports to.
fn reports_dir(dir: &Path) -> PathBuf {
    let reports = dir.join("reports");
    std::fs::create_dir_all(&reports).unwrap();
    reports
}

/// The process id a report is named after.
fn pid_of(report: &Path) -> String {
    report.file_stem().unwrap().to_str().unwrap().to_owned()
}

/// Waits until `dir` holds a report written by a fake process other than those in `seen`.
fn wait_for_report(dir: &Path, seen: &[PathBuf]) -> PathBuf {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(p) = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .find(|p| !seen.contains(p) && p.extension().is_some_and(|e| e == "done"))
        {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "no process reported in {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn process_gone(pid: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{pid}")).exists() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

#[tokio::test]
async fn scale_set_instances_run_the_configured_binary() {
    let dir = tempfile::tempdir().unwrap();
    let reports = reports_dir(dir.path());
    let (arm, admin, net) = with_processes(dir.path()).await;
    let vmss = format!(
        "{}/providers/Microsoft.Compute/virtualMachineScaleSets/workers",
        net.group
    );
    let env_file = format!(
        "FAKE_PROCESS_REPORTS={}\nCULVERT_STATE_DIR=var/lib/culvert\n",
        reports.display()
    );
    let cloud_config = format!(
        "#cloud-config\nwrite_files:\n  - path: /etc/culvert/agent.env\n    permissions: '0600'\n    encoding: b64\n    content: {}\nruncmd:\n  - [systemctl, start, culvert-agent]\n",
        b64(&env_file)
    );
    let a = arm
        .put(
            &vmss,
            &admin,
            scale_set_body(&net, 1, Some(b64(&cloud_config))),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.body);

    let first = wait_for_report(&reports, &[]);
    let report = std::fs::read_to_string(&first).unwrap();
    let root = dir.path().join("state/vmss/workers/0/root");
    assert!(
        report.contains(&format!("cwd={}\n", root.canonicalize().unwrap().display())),
        "{report}"
    );
    assert!(report.contains("state_dir=var/lib/culvert\n"), "{report}");
    assert!(report.contains("identity=http://127.0.0.1:"), "{report}");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(root.join("etc/culvert/agent.env"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let pid = pid_of(&first);

    let a = arm.post(&format!("{vmss}/deallocate"), &admin, None).await;
    assert_eq!(a.status, 202);
    assert!(
        process_gone(&pid),
        "deallocate did not stop the instance's process"
    );
    let a = arm.post(&format!("{vmss}/start"), &admin, None).await;
    assert_eq!(a.status, 202);
    let second = wait_for_report(&reports, std::slice::from_ref(&first));
    let pid2 = pid_of(&second);
    assert_ne!(pid, pid2);
    let view = arm.get(&format!("{vmss}/instanceView"), &admin).await.body;
    assert!(
        view["virtualMachine"]["statusesSummary"]
            .as_array()
            .unwrap()
            .contains(&json!({"code": "ProvisioningState/succeeded", "count": 1})),
        "{view}"
    );

    let a = arm.delete(&vmss, &admin).await;
    assert_eq!(a.status, 202);
    assert!(
        process_gone(&pid2),
        "deleting the scale set did not stop its process"
    );

    // Processes do not outlive a stand-in that is killed outright.
    arm.ensure(
        &vmss,
        &admin,
        scale_set_body(&net, 1, Some(b64(&cloud_config))),
    )
    .await;
    let third = wait_for_report(&reports, &[first, second]);
    let pid3 = pid_of(&third);
    drop(arm);
    assert!(
        process_gone(&pid3),
        "the instance's process outlived the killed stand-in"
    );
}

#[tokio::test]
async fn scale_set_instance_that_exits_is_failed_and_restarted_later() {
    let dir = tempfile::tempdir().unwrap();
    let reports = reports_dir(dir.path());
    let (arm, admin, net) = with_processes(dir.path()).await;
    let vmss = format!(
        "{}/providers/Microsoft.Compute/virtualMachineScaleSets/flaky",
        net.group
    );
    let env_file = format!(
        "FAKE_PROCESS_REPORTS={}\nFAKE_EXIT_AFTER_REPORT=1\n",
        reports.display()
    );
    let cloud_config = format!(
        "#cloud-config\nwrite_files:\n- path: /etc/culvert/agent.env\n  encoding: b64\n  content: {}\n",
        b64(&env_file)
    );
    arm.ensure(
        &vmss,
        &admin,
        scale_set_body(&net, 1, Some(b64(&cloud_config))),
    )
    .await;
    let first = wait_for_report(&reports, &[]);
    let started = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let view = arm.get(&format!("{vmss}/instanceView"), &admin).await.body;
        let summary = view["virtualMachine"]["statusesSummary"]
            .as_array()
            .unwrap()
            .clone();
        if summary.contains(&json!({"code": "ProvisioningState/failed", "count": 1})) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the exited instance never reported failure: {view}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let second = wait_for_report(&reports, std::slice::from_ref(&first));
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "restarted after {:?}",
        started.elapsed()
    );
    assert_ne!(first, second);
    assert_eq!(arm.delete(&vmss, &admin).await.status, 202);
}

#[tokio::test]
async fn container_group_runs_the_binary_and_reports_its_exit() {
    let dir = tempfile::tempdir().unwrap();
    let (arm, admin, net) = with_processes(dir.path()).await;
    let group = format!(
        "{}/providers/Microsoft.ContainerInstance/containerGroups/validate-2",
        net.group
    );
    let body = container_group_body(
        &net,
        &[
            "/usr/local/bin/culvert-agent",
            "fake_container_process",
            "--exact",
            "--nocapture",
        ],
    );
    let a = arm.put(&group, &admin, body).await;
    assert_eq!(a.status, 201, "{}", a.body);
    let deadline = Instant::now() + Duration::from_secs(15);
    let got = loop {
        let got = arm.get(&group, &admin).await.body;
        if got["properties"]["containers"][0]["properties"]["instanceView"]["currentState"]["state"]
            == "Terminated"
        {
            break got;
        }
        assert!(
            Instant::now() < deadline,
            "the container never terminated: {got}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let current = &got["properties"]["containers"][0]["properties"]["instanceView"]["currentState"];
    assert_eq!(current["exitCode"], 3, "{got}");
    assert!(current["finishTime"].is_string());
    assert_eq!(got["properties"]["instanceView"]["state"], "Failed");
    let logs = arm
        .get(&format!("{group}/containers/validate/logs"), &admin)
        .await
        .body;
    let content = logs["content"].as_str().unwrap();
    assert!(
        content.contains("container says PLAIN=visible"),
        "{content}"
    );
    assert_eq!(arm.delete(&group, &admin).await.status, 202);
}

/// Not a test of its own: the process scale-set instances run when this binary is the
/// stand-in's agent binary (started as `{exe} agent`). It reports its working directory and
/// environment in `$FAKE_PROCESS_REPORTS/{pid}.done`, then waits to be stopped.
#[test]
fn fake_agent_process() {
    let Ok(reports) = std::env::var("FAKE_PROCESS_REPORTS") else {
        return;
    };
    let report = format!(
        "cwd={}\nstate_dir={}\nidentity={}\n",
        std::env::current_dir().unwrap().display(),
        std::env::var("CULVERT_STATE_DIR").unwrap_or_default(),
        std::env::var("IDENTITY_ENDPOINT").unwrap_or_default(),
    );
    let tmp = PathBuf::from(&reports).join(format!("{}.tmp", std::process::id()));
    std::fs::write(&tmp, report).unwrap();
    std::fs::rename(&tmp, tmp.with_extension("done")).unwrap();
    if std::env::var_os("FAKE_EXIT_AFTER_REPORT").is_some() {
        std::process::exit(1);
    }
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Not a test of its own: the process a container group runs (as
/// `{exe} fake_container_process --exact --nocapture`). Prints a line and exits with
/// `$CONTAINER_EXIT_CODE`.
#[test]
fn fake_container_process() {
    let Ok(code) = std::env::var("CONTAINER_EXIT_CODE") else {
        return;
    };
    println!(
        "container says PLAIN={}",
        std::env::var("PLAIN").unwrap_or_default()
    );
    std::process::exit(code.parse().unwrap());
}
