//! The local Resource Manager of a `culvert local up` stack, driven as the customer's
//! administrator (the stack's bootstrap identity, an owner there): what `terraform apply`
//! and the peer's `az` commands do on Azure.

use std::path::Path;

use serde_json::{Value, json};

/// A client of the stack's Resource Manager, authenticated as its owner.
pub struct Arm {
    base: String,
    http: reqwest::blocking::Client,
    bearer: String,
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

impl Arm {
    /// The Resource Manager of the stack whose state directory is `state`.
    pub fn of_stack(state: &Path) -> Arm {
        let dir = state.join("azure");
        let ready = read_json(&dir.join("ready.json"));
        let ids = read_json(&dir.join("identities.json"));
        let pem = std::fs::read(ready["ca_certificate"].as_str().expect("ca")).expect("ca file");
        let http = reqwest::blocking::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("pem"))
            .build()
            .expect("client");
        let token: Value = http
            .get(
                ready["identity_endpoint"]
                    .as_str()
                    .expect("identity endpoint"),
            )
            .query(&[
                ("api-version", "2019-08-01"),
                ("resource", "https://management.azure.com"),
                (
                    "client_id",
                    ids["bootstrap"]["client_id"].as_str().expect("client id"),
                ),
            ])
            .header("X-IDENTITY-HEADER", ids["header"].as_str().expect("header"))
            .header("metadata", "true")
            .send()
            .expect("token endpoint")
            .json()
            .expect("token");
        Arm {
            base: ready["arm_endpoint"]
                .as_str()
                .expect("arm endpoint")
                .trim_end_matches('/')
                .to_string(),
            http,
            bearer: format!("Bearer {}", token["access_token"].as_str().expect("token")),
        }
    }

    fn url(&self, id: &str, version: &str) -> String {
        let sep = if id.contains('?') { '&' } else { '?' };
        format!("{}{id}{sep}api-version={version}", self.base)
    }

    /// PUT a resource; panics unless ARM accepts it.
    pub fn put(&self, id: &str, version: &str, body: Value) -> Value {
        let r = self
            .http
            .put(self.url(id, version))
            .header("Authorization", &self.bearer)
            .json(&body)
            .send()
            .expect("ARM PUT");
        let status = r.status();
        let v: Value = r.json().unwrap_or(Value::Null);
        assert!(status.is_success(), "PUT {id}: {status} {v}");
        v
    }

    /// GET a resource; `None` on 404.
    pub fn get(&self, id: &str, version: &str) -> Option<Value> {
        let r = self
            .http
            .get(self.url(id, version))
            .header("Authorization", &self.bearer)
            .send()
            .expect("ARM GET");
        if r.status() == 404 {
            return None;
        }
        let status = r.status();
        let v: Value = r.json().unwrap_or(Value::Null);
        assert!(status.is_success(), "GET {id}: {status} {v}");
        Some(v)
    }

    /// DELETE a resource (gone already is fine).
    pub fn delete(&self, id: &str, version: &str) {
        let r = self
            .http
            .delete(self.url(id, version))
            .header("Authorization", &self.bearer)
            .send()
            .expect("ARM DELETE");
        assert!(
            r.status().is_success() || r.status() == 404,
            "DELETE {id}: {}",
            r.status()
        );
    }

    /// A resource group.
    pub fn resource_group(&self, sub: &str, name: &str) -> String {
        let id = format!("/subscriptions/{sub}/resourceGroups/{name}");
        self.put(&id, "2021-04-01", json!({"location": "eastus2"}));
        id
    }

    /// A VNet with one subnet per `(name, prefix)`, each also PUT as a child resource.
    pub fn vnet(&self, rg: &str, name: &str, subnets: &[(&str, &str)]) -> String {
        let id = format!("{rg}/providers/Microsoft.Network/virtualNetworks/{name}");
        let list: Vec<Value> = subnets
            .iter()
            .map(|(n, p)| json!({"name": n, "properties": {"addressPrefix": p}}))
            .collect();
        self.put(
            &id,
            "2024-05-01",
            json!({"location": "eastus2", "properties": {"addressSpace": {"addressPrefixes": ["10.0.0.0/8"]}, "subnets": list}}),
        );
        for (n, p) in subnets {
            self.put(
                &format!("{id}/subnets/{n}"),
                "2024-05-01",
                json!({"properties": {"addressPrefix": p}}),
            );
        }
        id
    }

    /// A custom role at `scope` with `actions`, assignable at `assignable`, assigned to
    /// `principal` at each of `at`.
    pub fn role(
        &self,
        scope: &str,
        name: &str,
        actions: &[String],
        assignable: &[&str],
        principal: &str,
        at: &[&str],
    ) -> String {
        let def = format!(
            "{scope}/providers/Microsoft.Authorization/roleDefinitions/{}",
            uuid_of(name)
        );
        self.put(
            &def,
            "2022-04-01",
            json!({"properties": {"roleName": name, "type": "CustomRole",
                "permissions": [{"actions": actions, "notActions": [], "dataActions": [], "notDataActions": []}],
                "assignableScopes": assignable}}),
        );
        for scope in at {
            self.put(
                &format!("{scope}/providers/Microsoft.Authorization/roleAssignments/{}", uuid_of(&format!("{name}{scope}"))),
                "2022-04-01",
                json!({"properties": {"roleDefinitionId": def, "principalId": principal, "principalType": "ServicePrincipal"}}),
            );
        }
        def
    }
}

/// A stable GUID-shaped name for `text`.
pub fn uuid_of(text: &str) -> String {
    let mut h: u128 = 0x6c62272e07bb014262b821756295c58d;
    for b in text.bytes() {
        h ^= u128::from(b);
        h = h.wrapping_mul(0x0000000001000000000000000000013B);
    }
    let s = format!("{h:032x}");
    format!(
        "{}-{}-4{}-8{}-{}",
        &s[0..8],
        &s[8..12],
        &s[13..16],
        &s[17..20],
        &s[20..32]
    )
}
