//! The OpenAPI 3.1 document: component schemas derived from the API types, operations
//! listed once here next to the `function.json` routes they document.

use culvert_control_api::{agents, connectors, environments, keys, pipelines, problem, registry};
use serde_json::{Value, json};
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(components(schemas(
    problem::Problem,
    problem::FieldError,
    environments::Environment,
    environments::EnvironmentCreate,
    environments::EnvironmentUpdate,
    environments::AzureSettings,
    environments::Provider,
    environments::EnvironmentState,
    connectors::Connector,
    connectors::ConnectorCreate,
    connectors::ConnectorUpdate,
    connectors::ConnectorType,
    connectors::ConnectorKind,
    connectors::Validation,
    connectors::ValidationState,
    connectors::CheckOutcome,
    pipelines::Pipeline,
    pipelines::PipelineCreate,
    pipelines::PipelineUpdate,
    pipelines::PipelineStatus,
    pipelines::PipelineProgress,
    pipelines::TableProgress,
    pipelines::DesiredState,
    pipelines::ResyncRequest,
    pipelines::PipelineConnectors,
    pipelines::ConnectorRun,
    agents::Agent,
    agents::AgentHealth,
    agents::AgentRegister,
    agents::AgentRegistered,
    agents::Heartbeat,
    agents::HeartbeatReply,
    agents::RunningPipeline,
    agents::Assignment,
    agents::ConnectorDefinition,
    agents::PipelineCommand,
    agents::ValidationTask,
    agents::ValidationReport,
    agents::AgentReport,
    keys::ApiKey,
    keys::ApiKeyCreate,
    keys::ApiKeyCreated,
    keys::Role,
    registry::Component,
    registry::ComponentRef,
    registry::ConnectorLimits,
    registry::ConnectorTypeVersion,
    registry::VersionPublish,
    registry::VersionSignature,
    registry::SigningKey,
    registry::SigningKeyPut,
)))]
struct Schemas;

fn schema(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn array_of(name: &str) -> Value {
    json!({"type": "array", "items": schema(name)})
}

/// The body or reply of an operation that carries component bytes rather than JSON.
const WASM: &str = "wasm";

fn wasm_schema() -> Value {
    json!({"type": "string", "contentMediaType": "application/wasm"})
}

fn page_of(name: &str) -> Value {
    json!({
        "type": "object",
        "required": ["items"],
        "properties": {
            "items": {"type": "array", "items": schema(name)},
            "next_cursor": {"type": "string", "description": "Pass as `cursor` for the next page"}
        }
    })
}

const ERRORS: &[(u16, &str)] = &[
    (400, "The request is malformed"),
    (401, "No valid credential"),
    (403, "The credential may not do this"),
    (404, "No such resource"),
    (405, "Method not allowed on this path"),
    (409, "Conflicts with the current state"),
    (412, "If-Match does not match the current version"),
    (415, "The body is not JSON"),
    (422, "Some fields are wrong; `errors` points at them"),
    (503, "The control store is unreachable; retry"),
];

struct Op {
    path: &'static str,
    method: &'static str,
    id: &'static str,
    summary: &'static str,
    tag: &'static str,
    body: Option<&'static str>,
    status: u16,
    reply: Option<Value>,
    kind: Kind,
}

#[derive(PartialEq)]
enum Kind {
    /// Plain call.
    Plain,
    /// A list with paging.
    List,
    /// A list with paging, filterable by environment.
    ListByEnvironment,
    /// A create with an idempotency key.
    Create,
    /// An update or delete with `If-Match`.
    Conditional,
    /// Public: no credential.
    Public,
}

fn ops() -> Vec<Op> {
    use Kind::*;
    let op = |path, method, id, summary, tag, body, status, reply: Option<Value>, kind| Op {
        path,
        method,
        id,
        summary,
        tag,
        body,
        status,
        reply,
        kind,
    };
    vec![
        op(
            "/openapi.json",
            "get",
            "getOpenApi",
            "This document",
            "meta",
            None,
            200,
            Some(json!({"type": "object"})),
            Public,
        ),
        op(
            "/v1/environments",
            "get",
            "listEnvironments",
            "List environments",
            "environments",
            None,
            200,
            Some(page_of("Environment")),
            List,
        ),
        op(
            "/v1/environments",
            "post",
            "createEnvironment",
            "Create an environment (Azure BYOC inputs, or local)",
            "environments",
            Some("EnvironmentCreate"),
            201,
            Some(schema("Environment")),
            Create,
        ),
        op(
            "/v1/environments/{id}",
            "get",
            "getEnvironment",
            "Get an environment and its state",
            "environments",
            None,
            200,
            Some(schema("Environment")),
            Plain,
        ),
        op(
            "/v1/environments/{id}",
            "patch",
            "updateEnvironment",
            "Change the agent count",
            "environments",
            Some("EnvironmentUpdate"),
            200,
            Some(schema("Environment")),
            Conditional,
        ),
        op(
            "/v1/environments/{id}",
            "delete",
            "deleteEnvironment",
            "Delete an environment without connectors",
            "environments",
            None,
            204,
            None,
            Conditional,
        ),
        op(
            "/v1/connector-types",
            "get",
            "listConnectorTypes",
            "Connector types and their configuration schemas",
            "connectors",
            None,
            200,
            Some(json!({"type": "array", "items": schema("ConnectorType")})),
            Plain,
        ),
        op(
            "/v1/connector-types/{name}",
            "get",
            "getConnectorType",
            "One connector type",
            "connectors",
            None,
            200,
            Some(schema("ConnectorType")),
            Plain,
        ),
        op(
            "/v1/connector-types/{name}/versions",
            "get",
            "listConnectorTypeVersions",
            "Every version of a registered connector type, with specs",
            "registry",
            None,
            200,
            Some(array_of("ConnectorTypeVersion")),
            Plain,
        ),
        op(
            "/v1/connector-types/{name}/versions",
            "post",
            "publishConnectorTypeVersion",
            "Publish a version pinning an uploaded component (201; 200 when identical; 409 when the version exists otherwise)",
            "registry",
            Some("VersionPublish"),
            201,
            Some(schema("ConnectorTypeVersion")),
            Plain,
        ),
        op(
            "/v1/connector-types/{name}/versions/{version}",
            "get",
            "getConnectorTypeVersion",
            "One version of a registered connector type",
            "registry",
            None,
            200,
            Some(schema("ConnectorTypeVersion")),
            Plain,
        ),
        op(
            "/v1/components/{digest}",
            "get",
            "getComponent",
            "A stored component's size and kind",
            "registry",
            None,
            200,
            Some(schema("Component")),
            Plain,
        ),
        op(
            "/v1/components/{digest}",
            "put",
            "putComponent",
            "Store a connector component by its SHA-256 (201; 200 when already stored)",
            "registry",
            Some(WASM),
            201,
            Some(schema("Component")),
            Plain,
        ),
        op(
            "/v1/signing-keys",
            "get",
            "listSigningKeys",
            "The keys connector versions must be signed with",
            "registry",
            None,
            200,
            Some(array_of("SigningKey")),
            Plain,
        ),
        op(
            "/v1/signing-keys/{key_id}",
            "get",
            "getSigningKey",
            "One signing key",
            "registry",
            None,
            200,
            Some(schema("SigningKey")),
            Plain,
        ),
        op(
            "/v1/signing-keys/{key_id}",
            "put",
            "putSigningKey",
            "Add an ed25519 signing key; from then on every published version must be signed",
            "registry",
            Some("SigningKeyPut"),
            201,
            Some(schema("SigningKey")),
            Plain,
        ),
        op(
            "/v1/signing-keys/{key_id}",
            "delete",
            "deleteSigningKey",
            "Remove a signing key",
            "registry",
            None,
            204,
            None,
            Plain,
        ),
        op(
            "/v1/connectors",
            "get",
            "listConnectors",
            "List connectors",
            "connectors",
            None,
            200,
            Some(page_of("Connector")),
            ListByEnvironment,
        ),
        op(
            "/v1/connectors",
            "post",
            "createConnector",
            "Create a source or target; secrets are sealed for the environment's agents",
            "connectors",
            Some("ConnectorCreate"),
            201,
            Some(schema("Connector")),
            Create,
        ),
        op(
            "/v1/connectors/{id}",
            "get",
            "getConnector",
            "Get a connector (never its secrets)",
            "connectors",
            None,
            200,
            Some(schema("Connector")),
            Plain,
        ),
        op(
            "/v1/connectors/{id}",
            "patch",
            "updateConnector",
            "Change a connector's configuration (JSON merge patch)",
            "connectors",
            Some("ConnectorUpdate"),
            200,
            Some(schema("Connector")),
            Conditional,
        ),
        op(
            "/v1/connectors/{id}",
            "delete",
            "deleteConnector",
            "Delete a connector no pipeline uses",
            "connectors",
            None,
            204,
            None,
            Conditional,
        ),
        op(
            "/v1/connectors/{id}/validate",
            "post",
            "validateConnector",
            "Check reachability, credentials and permissions from inside the environment",
            "connectors",
            None,
            202,
            Some(schema("Validation")),
            Plain,
        ),
        op(
            "/v1/pipelines",
            "get",
            "listPipelines",
            "List pipelines",
            "pipelines",
            None,
            200,
            Some(page_of("Pipeline")),
            List,
        ),
        op(
            "/v1/pipelines",
            "post",
            "createPipeline",
            "Create a pipeline from a source, a target and tables",
            "pipelines",
            Some("PipelineCreate"),
            201,
            Some(schema("Pipeline")),
            Create,
        ),
        op(
            "/v1/pipelines/{id}",
            "get",
            "getPipeline",
            "Get a pipeline",
            "pipelines",
            None,
            200,
            Some(schema("Pipeline")),
            Plain,
        ),
        op(
            "/v1/pipelines/{id}",
            "patch",
            "updatePipeline",
            "Change the table selection or batch size",
            "pipelines",
            Some("PipelineUpdate"),
            200,
            Some(schema("Pipeline")),
            Conditional,
        ),
        op(
            "/v1/pipelines/{id}",
            "delete",
            "deletePipeline",
            "Delete a pipeline that is not running",
            "pipelines",
            None,
            204,
            None,
            Conditional,
        ),
        op(
            "/v1/pipelines/{id}/deploy",
            "post",
            "deployPipeline",
            "Run the pipeline on the environment's agents",
            "pipelines",
            None,
            200,
            Some(schema("Pipeline")),
            Plain,
        ),
        op(
            "/v1/pipelines/{id}/pause",
            "post",
            "pausePipeline",
            "Stop the pipeline; the slot keeps its place",
            "pipelines",
            None,
            200,
            Some(schema("Pipeline")),
            Plain,
        ),
        op(
            "/v1/pipelines/{id}/resume",
            "post",
            "resumePipeline",
            "Run a paused pipeline again",
            "pipelines",
            None,
            200,
            Some(schema("Pipeline")),
            Plain,
        ),
        op(
            "/v1/pipelines/{id}/resync",
            "post",
            "resyncPipeline",
            "Copy tables again while changes keep streaming",
            "pipelines",
            Some("ResyncRequest"),
            202,
            Some(schema("PipelineCommand")),
            Plain,
        ),
        op(
            "/v1/pipelines/{id}/status",
            "get",
            "getPipelineStatus",
            "Phase, progress, lag and the last error",
            "pipelines",
            None,
            200,
            Some(schema("PipelineStatus")),
            Plain,
        ),
        op(
            "/v1/agents",
            "get",
            "listAgents",
            "List agents",
            "agents",
            None,
            200,
            Some(page_of("Agent")),
            ListByEnvironment,
        ),
        op(
            "/v1/agents/{id}",
            "get",
            "getAgent",
            "Get an agent",
            "agents",
            None,
            200,
            Some(schema("Agent")),
            Plain,
        ),
        op(
            "/v1/api-keys",
            "get",
            "listApiKeys",
            "List API keys (never their secrets)",
            "api-keys",
            None,
            200,
            Some(page_of("ApiKey")),
            List,
        ),
        op(
            "/v1/api-keys",
            "post",
            "createApiKey",
            "Create an API key; the secret is shown once",
            "api-keys",
            Some("ApiKeyCreate"),
            201,
            Some(schema("ApiKeyCreated")),
            Plain,
        ),
        op(
            "/v1/api-keys/{id}",
            "get",
            "getApiKey",
            "Get an API key (never its secret)",
            "api-keys",
            None,
            200,
            Some(schema("ApiKey")),
            Plain,
        ),
        op(
            "/v1/api-keys/{id}",
            "delete",
            "revokeApiKey",
            "Revoke an API key",
            "api-keys",
            None,
            204,
            None,
            Plain,
        ),
        op(
            "/v1/agent/register",
            "post",
            "registerAgent",
            "Agent: trade the registration token for an agent key",
            "agent-protocol",
            Some("AgentRegister"),
            201,
            Some(schema("AgentRegistered")),
            Plain,
        ),
        op(
            "/v1/agent/heartbeat",
            "post",
            "agentHeartbeat",
            "Agent: report progress, renew leases, get assignments",
            "agent-protocol",
            Some("Heartbeat"),
            200,
            Some(schema("HeartbeatReply")),
            Plain,
        ),
        op(
            "/v1/agent/reports",
            "post",
            "agentReport",
            "Agent: report validation results",
            "agent-protocol",
            Some("AgentReport"),
            200,
            Some(json!({"type": "object", "properties": {"accepted": {"type": "integer"}}})),
            Plain,
        ),
        op(
            "/v1/agent/validations/{id}",
            "get",
            "getAgentValidation",
            "Validation container: the one validation its token is for",
            "agent-protocol",
            None,
            200,
            Some(schema("ValidationTask")),
            Plain,
        ),
        op(
            "/v1/agent/validations/{id}",
            "post",
            "reportAgentValidation",
            "Validation container: report the checks of its validation",
            "agent-protocol",
            Some("ValidationReport"),
            200,
            Some(json!({"type": "object", "properties": {"accepted": {"type": "integer"}}})),
            Plain,
        ),
        op(
            "/v1/environments/{id}/bootstrap",
            "get",
            "getEnvironmentBootstrap",
            "The Terraform bundle that bootstraps an Azure environment, and the resources it creates",
            "environments",
            None,
            200,
            Some(
                json!({"type": "object", "required": ["files", "resources"], "properties": {
                "environment": {"type": "string"},
                "files": {"type": "object", "additionalProperties": {"type": "string"}},
                "resources": {"type": "object", "additionalProperties": {"type": "string"}},
                "role": {"type": "object", "description": "The control plane's custom role as the bundle creates it",
                    "required": ["name", "actions", "assignable_scopes", "assignment_scopes"], "properties": {
                    "name": {"type": "string"},
                    "actions": {"type": "array", "items": {"type": "string"}},
                    "assignable_scopes": {"type": "array", "items": {"type": "string"}},
                    "assignment_scopes": {"type": "array", "items": {"type": "string"}}}},
                "fixes": {"type": "array", "items": {"type": "string"}}}}),
            ),
            Plain,
        ),
        op(
            "/v1/environments/{id}/databases",
            "get",
            "listEnvironmentDatabases",
            "Database servers in an Azure environment's resource group",
            "environments",
            None,
            200,
            Some(
                json!({"type": "object", "required": ["items"], "properties": {"items": {"type": "array", "items": {
                "type": "object", "required": ["kind", "name", "id", "port"], "properties": {
                    "kind": {"type": "string"}, "name": {"type": "string"}, "id": {"type": "string"},
                    "host": {"type": "string"}, "port": {"type": "integer"}, "version": {"type": "string"},
                    "state": {"type": "string"}, "location": {"type": "string"}, "connector_type": {"type": "string"}}}}}}),
            ),
            Plain,
        ),
        op(
            "/v1/environments/{id}/pause",
            "post",
            "pauseEnvironment",
            "Deallocate an Azure environment's agents",
            "environments",
            None,
            202,
            Some(json!({"type": "object"})),
            Plain,
        ),
        op(
            "/v1/environments/{id}/resume",
            "post",
            "resumeEnvironment",
            "Start (or create) an Azure environment's agents",
            "environments",
            None,
            202,
            Some(json!({"type": "object"})),
            Plain,
        ),
        op(
            "/v1/environments/{id}/upgrade",
            "post",
            "upgradeEnvironment",
            "Move an Azure environment's agents to an agent version (`{\"version\": \"1.2.3\"}`, default the current one)",
            "environments",
            None,
            202,
            Some(json!({"type": "object"})),
            Plain,
        ),
        op(
            "/v1/connectors/{id}/network",
            "get",
            "getConnectorNetworkSteps",
            "The NSG steps that let agents reach a connector's database, and which rules are missing",
            "connectors",
            None,
            200,
            Some(
                json!({"type": "object", "properties": {"script": {"type": "string"}, "rules": {"type": "array"}, "missing": {"type": "array", "items": {"type": "string"}}}}),
            ),
            Plain,
        ),
        op(
            "/v1/connectors/{id}/network",
            "put",
            "putConnectorNetwork",
            "Record where a connector's database sits (its NSG and subnet prefix)",
            "connectors",
            Some("DatabaseNetwork"),
            200,
            Some(schema("DatabaseNetwork")),
            Plain,
        ),
        op(
            "/v1/environments/{id}/network-connections",
            "get",
            "listNetworkConnections",
            "An environment's VNet peering connections",
            "network-connections",
            None,
            200,
            Some(
                json!({"type": "object", "required": ["items"], "properties": {"items": {"type": "array", "items": schema("NetworkConnection")}}}),
            ),
            Plain,
        ),
        op(
            "/v1/environments/{id}/network-connections",
            "post",
            "createNetworkConnection",
            "Ask for a VNet peering with a database's VNet",
            "network-connections",
            Some("NetworkConnectionCreate"),
            201,
            Some(schema("NetworkConnection")),
            Plain,
        ),
        op(
            "/v1/environments/{id}/network-connections/{name}",
            "get",
            "getNetworkConnection",
            "A VNet peering connection: state, reason and the peer's steps",
            "network-connections",
            None,
            200,
            Some(schema("NetworkConnection")),
            Plain,
        ),
        op(
            "/v1/environments/{id}/network-connections/{name}",
            "delete",
            "deleteNetworkConnection",
            "Delete a VNet peering connection and Culvert's side of the peering",
            "network-connections",
            None,
            204,
            None,
            Plain,
        ),
        op(
            "/v1/agent/components/{digest}",
            "get",
            "getAgentComponent",
            "Agent: a component's bytes; refuse them unless they hash to the digest",
            "agent-protocol",
            None,
            200,
            Some(wasm_schema()),
            Plain,
        ),
    ]
}

/// Operations that answer 200 instead of their usual status when the request repeats what
/// is stored (idempotent puts and publications).
const ALSO_200: &[&str] = &[
    "putComponent",
    "publishConnectorTypeVersion",
    "putSigningKey",
];

fn parameters(op: &Op) -> Vec<Value> {
    let mut params = Vec::new();
    for seg in op.path.split('/') {
        if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            let schema = if name == "id" {
                json!({"type": "string", "format": "uuid"})
            } else {
                json!({"type": "string"})
            };
            params.push(json!({"name": name, "in": "path", "required": true, "schema": schema}));
        }
    }
    if matches!(op.kind, Kind::List | Kind::ListByEnvironment) {
        params.push(json!({"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}}));
        params.push(json!({"name": "cursor", "in": "query", "schema": {"type": "string", "pattern": "^c[0-9]+$"}, "description": "`next_cursor` of the previous page"}));
    }
    if op.kind == Kind::ListByEnvironment {
        params.push(json!({"name": "environment_id", "in": "query", "schema": {"type": "string", "format": "uuid"}}));
    }
    if op.kind == Kind::Create {
        params.push(json!({"name": "Idempotency-Key", "in": "header", "schema": {"type": "string", "minLength": 1, "maxLength": 200},
            "description": "Retries with the same key and body return the first answer"}));
    }
    if op.kind == Kind::Conditional {
        params.push(json!({"name": "If-Match", "in": "header", "schema": {"type": "string"},
            "description": "The ETag of the last read; the change fails with 412 if the resource changed since"}));
    }
    params
}

/// The whole document.
pub fn document() -> Value {
    let mut doc = serde_json::to_value(Schemas::openapi()).expect("schemas serialize");
    doc["openapi"] = json!("3.1.0");
    doc["info"] = json!({
        "title": "Culvert control plane",
        "version": env!("CARGO_PKG_VERSION"),
        "description": "Environments, connectors, pipelines and agents. Errors are application/problem+json."
    });
    doc["servers"] = json!([{"url": "/api"}]);
    // Azure-environment bodies, written out here: they live in the handler, not the client crate.
    let id_pattern = "^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft.Network/networkSecurityGroups/[^/]+$";
    doc["components"]["schemas"]["DatabaseNetwork"] = json!({
        "type": "object", "additionalProperties": false, "required": ["db_nsg_id", "db_subnet_prefix"],
        "properties": {
            "db_nsg_id": {"type": "string", "pattern": id_pattern, "description": "Resource id of the database's network security group"},
            "db_subnet_prefix": {"type": "string", "description": "IPv4 prefix of the database's subnet, e.g. 10.0.2.0/24"}}});
    let guid = json!({"type": "string", "format": "uuid"});
    let name = json!({"type": "string", "pattern": "^[a-z][a-z0-9-]{0,47}$"});
    let azure_name = json!({"type": "string", "pattern": "^[A-Za-z0-9_.()-]{1,90}$"});
    doc["components"]["schemas"]["NetworkConnectionCreate"] = json!({
        "type": "object", "additionalProperties": false,
        "required": ["name", "peer_subscription_id", "peer_tenant_id", "peer_resource_group", "peer_vnet", "peer_app_id"],
        "properties": {"name": name, "peer_subscription_id": guid, "peer_tenant_id": guid,
            "peer_resource_group": azure_name, "peer_vnet": azure_name, "peer_app_id": guid}});
    doc["components"]["schemas"]["NetworkConnection"] = json!({
        "type": "object",
        "required": ["id", "name", "state", "peer_steps"],
        "properties": {"id": guid, "name": {"type": "string"},
            "peer_subscription_id": {"type": "string"}, "peer_tenant_id": {"type": "string"},
            "peer_resource_group": {"type": "string"}, "peer_vnet": {"type": "string"}, "peer_app_id": {"type": "string"},
            "state": {"type": "string", "enum": ["APPROVED", "PENDING_PEER", "ACTIVE", "INVALID_SPECIFICATION", "REJECTED_BY_PEER", "DELETING"]},
            "reason": {"type": ["string", "null"]},
            "created_at": {"type": "string", "format": "date-time"}, "updated_at": {"type": "string", "format": "date-time"},
            "peer_steps": {"type": "string", "description": "The az commands the peer runs, pre-filled"}}});
    doc["components"]["securitySchemes"] = json!({"bearer": {"type": "http", "scheme": "bearer",
        "description": "An API key (cvk_...), an agent key (cva_...), or for registration the environment's token (cvt_...)"}});
    let mut paths = serde_json::Map::new();
    for op in ops() {
        let mut responses = serde_json::Map::new();
        let mut ok = json!({"description": "Success"});
        if let Some(r) = &op.reply {
            let media = r["contentMediaType"].as_str().unwrap_or("application/json");
            ok["content"] = json!({media: {"schema": r}});
        }
        if matches!(op.method, "get" | "patch") && op.path.ends_with("{id}")
            || op.kind == Kind::Create
        {
            ok["headers"] = json!({"ETag": {"schema": {"type": "string"}, "description": "The resource version, for If-Match"}});
        }
        if ALSO_200.contains(&op.id) {
            let mut same = ok.clone();
            same["description"] = json!("Already stored; nothing changed");
            responses.insert("200".into(), same);
        }
        responses.insert(op.status.to_string(), ok);
        if op.kind != Kind::Public {
            for (code, text) in ERRORS {
                responses.insert(
                    code.to_string(),
                    json!({"description": text, "content": {"application/problem+json": {"schema": schema("Problem")}}}),
                );
            }
        }
        let mut operation = json!({
            "operationId": op.id,
            "summary": op.summary,
            "tags": [op.tag],
            "parameters": parameters(&op),
            "responses": responses,
        });
        if op.kind == Kind::Public {
            operation["security"] = json!([]);
        } else {
            operation["security"] = json!([{"bearer": []}]);
        }
        if op.body == Some(WASM) {
            // application/octet-stream is accepted too, for clients that know no wasm type.
            operation["requestBody"] = json!({"required": true, "content": {
                "application/wasm": {"schema": wasm_schema()},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}});
        } else if let Some(body) = op.body {
            operation["requestBody"] = json!({"required": op.path != "/v1/pipelines/{id}/resync",
                "content": {"application/json": {"schema": schema(body)}}});
        }
        paths
            .entry(op.path.to_string())
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("path item")
            .insert(op.method.to_string(), operation);
    }
    doc["paths"] = Value::Object(paths);
    doc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings;

    /// Every documented operation is served by a function route, and every HTTP function
    /// route and method is documented.
    #[test]
    fn document_matches_the_function_routes() {
        let doc = document();
        let prefix = bindings::route_prefix();
        let mut served = Vec::new();
        for f in bindings::all() {
            let Some(t) = f.http_trigger() else { continue };
            let route = t.route.clone().unwrap_or_else(|| f.name.to_string());
            for path in bindings::axum_paths(&prefix, &route) {
                for m in &t.methods {
                    served.push((
                        path.trim_start_matches(&format!("/{prefix}")).to_string(),
                        m.to_ascii_lowercase(),
                    ));
                }
            }
        }
        let actions = ["deploy", "pause", "resume", "resync", "upgrade"];
        let generic = |p: &str| {
            actions.iter().fold(p.to_string(), |acc, a| {
                acc.replace(&format!("/{a}"), "/{action}")
            })
        };
        let paths = doc["paths"].as_object().unwrap();
        for (path, item) in paths {
            for method in item.as_object().unwrap().keys() {
                assert!(
                    served
                        .iter()
                        .any(|(p, m)| (p == path || *p == generic(path)) && m == method),
                    "{method} {path} is documented but no function.json serves it"
                );
            }
        }
        for (path, method) in &served {
            let documented = paths
                .iter()
                .any(|(p, item)| (p == path || generic(p) == *path) && item.get(method).is_some());
            // Optional-id routes declare every method for both shapes; the handlers answer
            // 405 to the shapes that mean nothing (PATCH a collection, POST to an item).
            let collection_only =
                !path.ends_with('}') && ["patch", "delete"].contains(&method.as_str());
            let item_only = path.ends_with("{id}") && method == "post";
            assert!(
                documented || collection_only || item_only,
                "{method} {path} is served but not documented"
            );
        }
        assert_eq!(doc["openapi"], "3.1.0");
        assert!(doc["components"]["schemas"]["Problem"].is_object());
    }
}
