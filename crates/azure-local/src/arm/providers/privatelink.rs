//! Private Link: a service (`Microsoft.Network/privateLinkServices`, Culvert's own) and the
//! private endpoints customers point at it (`Microsoft.Network/privateEndpoints`).
//!
//! A private endpoint PUT naming a service in `manualPrivateLinkServiceConnections` (or
//! `privateLinkServiceConnections`) creates the connection
//! `{service}/privateEndpointConnections/{endpoint name}.{guid}` with status "Pending" ("Approved"
//! for an automatic connection from a subscription in the service's
//! `properties.autoApproval.subscriptions`). The service owner approves or rejects it with a PUT
//! on that connection; the endpoint's own connection entry always mirrors the connection's
//! current state ("Disconnected" once it is gone). Endpoints get a made-up, stable private IP
//! in `customDnsConfigs` and a network interface id.

use super::PutCx;
use crate::arm::derive;
use crate::arm::error::ArmError;
use crate::arm::ids;
use crate::arm::resources;
use crate::arm::store::{ArmData, Record};
use serde_json::{Value, json};

const SERVICES: &str = "microsoft.network/privatelinkservices";
const CONNECTIONS: &str = "microsoft.network/privatelinkservices/privateendpointconnections";
// The endpoint's two kinds of connection lists, and whether each is manual.
const LISTS: [(&str, bool); 2] = [
    ("manualPrivateLinkServiceConnections", true),
    ("privateLinkServiceConnections", false),
];

/// Sets the service's alias; its connections are listed on GET.
pub fn prepare_service(record: &mut Record) -> Result<(), ArmError> {
    let id = record.id().to_owned();
    let name = record.body["name"].as_str().unwrap_or_default().to_owned();
    let location = record.body["location"]
        .as_str()
        .unwrap_or("local")
        .to_ascii_lowercase()
        .replace(' ', "");
    let props = &mut record.body["properties"];
    props
        .as_object_mut()
        .expect("properties is an object")
        .remove("privateEndpointConnections");
    props["alias"] = json!(format!(
        "{name}.{}.{location}.azure.privatelinkservice",
        derive::guid("alias", &id)
    ));
    Ok(())
}

/// The service with its current connections.
pub fn view_service(data: &ArmData, record: &Record) -> Value {
    let mut body = record.body.clone();
    let connections: Vec<Value> = data
        .children(record.id(), CONNECTIONS)
        .map(|(_, r)| r.body.clone())
        .collect();
    body["properties"]["privateEndpointConnections"] = json!(connections);
    body
}

/// Creates the endpoint's connections on the services it names and drops those it no longer names.
pub fn prepare_endpoint(
    cx: &mut PutCx<'_, '_>,
    data: &mut ArmData,
    record: &mut Record,
) -> Result<(), ArmError> {
    let pe_id = record.id().to_owned();
    let pe_name = cx.id.name().to_owned();
    let wanted = services_named(record);
    if wanted.is_empty() {
        return Err(ArmError::invalid_content(
            "A private endpoint needs one entry in manualPrivateLinkServiceConnections or privateLinkServiceConnections, each with properties.privateLinkServiceId.",
        ));
    }
    let mut keep = Vec::new();
    for (service_id, manual, message) in &wanted {
        let service = data
            .get(service_id)
            .filter(|s| {
                s.body["type"]
                    .as_str()
                    .is_some_and(|t| t.eq_ignore_ascii_case(SERVICES))
            })
            .ok_or_else(|| ArmError::invalid_reference(service_id, &pe_id))?;
        let conn_id = connection_id(service.id(), &pe_id, &pe_name);
        keep.push(ids::key(&conn_id));
        if data.contains(&conn_id) {
            continue;
        }
        let auto_approved = !manual
            && service.body["properties"]["autoApproval"]["subscriptions"]
                .as_array()
                .is_some_and(|subs| {
                    subs.iter().any(|s| {
                        s.as_str()
                            .is_some_and(|s| s.eq_ignore_ascii_case(&cx.id.subscription))
                    })
                });
        let status = if auto_approved { "Approved" } else { "Pending" };
        let link = u32::from_str_radix(&derive::guid("link", &conn_id)[..7], 16).unwrap_or(0);
        data.insert(Record::new(json!({
            "id": conn_id,
            "name": conn_id.rsplit('/').next(),
            "type": "Microsoft.Network/privateLinkServices/privateEndpointConnections",
            "properties": {
                "privateEndpoint": {"id": pe_id},
                "privateLinkServiceConnectionState": {
                    "status": status,
                    "description": message,
                    "actionsRequired": "None",
                },
                "linkIdentifier": link.to_string(),
                "provisioningState": "Succeeded",
            },
        })));
    }
    if let Some(old) = cx.old {
        for (service_id, _, _) in services_named(old) {
            let conn = connection_id(&service_id, &pe_id, &pe_name);
            if !keep.contains(&ids::key(&conn)) {
                data.remove_tree(&conn);
            }
        }
    }
    let ip = derive::private_ip(&pe_id);
    let rg_id = ids::resource_group_id(
        &cx.id.subscription,
        cx.id.resource_group.as_deref().unwrap_or_default(),
    );
    let fqdn = data
        .get(&wanted[0].0)
        .and_then(|s| s.body["properties"]["fqdns"][0].as_str().map(str::to_owned))
        .unwrap_or_else(|| {
            let service = wanted[0].0.rsplit('/').next().unwrap_or_default();
            format!("{service}.privatelink.local")
        });
    let props = &mut record.body["properties"];
    props["networkInterfaces"] = json!([{
        "id": format!(
            "{rg_id}/providers/Microsoft.Network/networkInterfaces/{pe_name}.nic.{}",
            derive::guid("nic", &pe_id)
        )
    }]);
    props["customDnsConfigs"] = json!([{"fqdn": fqdn, "ipAddresses": [ip]}]);
    Ok(())
}

/// The endpoint with each connection entry mirroring the service-side connection's state.
pub fn view_endpoint(data: &ArmData, record: &Record) -> Value {
    let mut body = record.body.clone();
    let pe_id = record.id().to_owned();
    let pe_name = record.body["name"].as_str().unwrap_or_default().to_owned();
    for (list, _) in LISTS {
        let Some(items) = body["properties"][list].as_array_mut() else {
            continue;
        };
        for item in items {
            let Some(service) = item["properties"]["privateLinkServiceId"].as_str() else {
                continue;
            };
            let conn = connection_id(service, &pe_id, &pe_name);
            let state = data
                .get(&conn)
                .map(|c| c.body["properties"]["privateLinkServiceConnectionState"].clone())
                .unwrap_or_else(|| {
                    json!({"status": "Disconnected", "description": "The connection was removed by the service owner.", "actionsRequired": "None"})
                });
            let name = item["name"].as_str().unwrap_or("connection").to_owned();
            item["id"] = json!(format!("{pe_id}/{list}/{name}"));
            item["type"] = json!(format!("Microsoft.Network/privateEndpoints/{list}"));
            item["properties"]["privateLinkServiceConnectionState"] = state;
            item["properties"]["provisioningState"] = json!("Succeeded");
        }
    }
    body
}

/// A deleted endpoint's connections leave the services.
pub fn on_delete_endpoint(data: &mut ArmData, record: &Record) {
    let pe_name = record.body["name"].as_str().unwrap_or_default().to_owned();
    for (service, _, _) in services_named(record) {
        data.remove_tree(&connection_id(&service, record.id(), &pe_name));
    }
}

/// Approves or rejects an existing connection; the service-set fields are kept.
pub fn prepare_connection(cx: &mut PutCx<'_, '_>, record: &mut Record) -> Result<(), ArmError> {
    let old = cx.old.ok_or_else(|| resources::not_found(cx.id))?;
    let state = &record.body["properties"]["privateLinkServiceConnectionState"];
    let status = state["status"].as_str().unwrap_or_default();
    if !["Approved", "Rejected", "Pending"]
        .iter()
        .any(|s| s.eq_ignore_ascii_case(status))
    {
        return Err(ArmError::invalid_content(format!(
            "privateLinkServiceConnectionState.status '{status}' is not one of Approved, Rejected, Pending."
        )));
    }
    let mut state = state.clone();
    if state["actionsRequired"].is_null() {
        state["actionsRequired"] = json!("None");
    }
    let old_props = &old.body["properties"];
    let props = &mut record.body["properties"];
    props["privateLinkServiceConnectionState"] = state;
    props["privateEndpoint"] = old_props["privateEndpoint"].clone();
    props["linkIdentifier"] = old_props["linkIdentifier"].clone();
    Ok(())
}

// (service id, manual, request message) for each connection entry.
fn services_named(record: &Record) -> Vec<(String, bool, String)> {
    let mut out = Vec::new();
    for (list, manual) in LISTS {
        for item in record.body["properties"][list]
            .as_array()
            .into_iter()
            .flatten()
        {
            let props = &item["properties"];
            if let Some(service) = props["privateLinkServiceId"].as_str() {
                let message = props["requestMessage"].as_str().unwrap_or_default();
                out.push((service.to_owned(), manual, message.to_owned()));
            }
        }
    }
    out
}

fn connection_id(service_id: &str, pe_id: &str, pe_name: &str) -> String {
    format!(
        "{service_id}/privateEndpointConnections/{pe_name}.{}",
        derive::guid("pe-connection", pe_id)
    )
}
