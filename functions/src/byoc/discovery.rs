//! Discovery: the database servers in an Azure environment's resource group.

use culvert_arm::{Operation, operations as ops};
use serde::Serialize;
use serde_json::Value;

use super::{Byoc, arm_error};
use crate::error::ApiResult;

/// A database server found in the resource group.
#[derive(Debug, Clone, Serialize)]
pub struct Database {
    /// `postgresql-flexible`, `postgresql-single`, `sql`, `mysql-flexible`, `mysql-single`, `mariadb`.
    pub kind: &'static str,
    /// Server name.
    pub name: String,
    /// Resource id.
    pub id: String,
    /// Host name to connect to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Default port of the engine.
    pub port: u16,
    /// Engine version, when ARM reports it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Server state, when ARM reports it (e.g. `Ready`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Region.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// The connector type that reads from it, when Culvert has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connector_type: Option<&'static str>,
}

/// What each server type is and how it is listed.
const KINDS: &[(&Operation, &str, &str, u16, Option<&str>)] = &[
    (
        &ops::discovery::POSTGRES_FLEXIBLE,
        "Microsoft.DBforPostgreSQL/flexibleServers",
        "postgresql-flexible",
        5432,
        Some("postgres-source"),
    ),
    (
        &ops::discovery::POSTGRES_SINGLE,
        "Microsoft.DBforPostgreSQL/servers",
        "postgresql-single",
        5432,
        Some("postgres-source"),
    ),
    (
        &ops::discovery::SQL,
        "Microsoft.Sql/servers",
        "sql",
        1433,
        None,
    ),
    (
        &ops::discovery::MYSQL_FLEXIBLE,
        "Microsoft.DBforMySQL/flexibleServers",
        "mysql-flexible",
        3306,
        None,
    ),
    (
        &ops::discovery::MYSQL_SINGLE,
        "Microsoft.DBforMySQL/servers",
        "mysql-single",
        3306,
        None,
    ),
    (
        &ops::discovery::MARIADB,
        "Microsoft.DBforMariaDB/servers",
        "mariadb",
        3306,
        None,
    ),
];

fn text(v: &Value) -> Option<String> {
    v.as_str().map(str::to_string)
}

/// Every database server in `resource_group_id`, sorted by kind and name.
pub async fn list(byoc: &Byoc, resource_group_id: &str) -> ApiResult<Vec<Database>> {
    let arm = byoc.arm().await?;
    let mut out = Vec::new();
    for (op, provider, kind, port, connector_type) in KINDS {
        let servers = arm
            .list(op, &format!("{resource_group_id}/providers/{provider}"))
            .await
            .map_err(arm_error)?;
        for s in servers {
            let p = &s["properties"];
            out.push(Database {
                kind,
                name: text(&s["name"]).unwrap_or_default(),
                id: text(&s["id"]).unwrap_or_default(),
                host: text(&p["fullyQualifiedDomainName"]),
                port: *port,
                version: text(&p["version"]),
                state: text(&p["state"]).or_else(|| text(&p["userVisibleState"])),
                location: text(&s["location"]),
                connector_type: *connector_type,
            });
        }
    }
    out.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
    Ok(out)
}
