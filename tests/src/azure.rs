//! The local stack's Azure stand-ins seen from a test: tokens for each identity and raw
//! Key Vault calls, to check what each identity may do.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// The stand-ins of one local stack.
pub struct StandIns {
    identities: Value,
    ready: Value,
    http: reqwest::blocking::Client,
}

/// A Key Vault reply.
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Body as JSON (`Null` when empty or not JSON).
    pub body: Value,
}

impl StandIns {
    /// Read the identities and endpoints `culvert local up` wrote under `state`.
    pub fn of(state: &Path) -> StandIns {
        let read = |p: PathBuf| -> Value {
            serde_json::from_str(
                &std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
            )
            .unwrap()
        };
        StandIns {
            identities: read(state.join("azure/identities.json")),
            ready: read(state.join("azure/ready.json")),
            http: reqwest::blocking::Client::builder()
                .no_proxy()
                .build()
                .unwrap(),
        }
    }

    /// Base URL of a vault (`culvert-env`, `culvert-platform`).
    pub fn vault(&self, name: &str) -> String {
        self.ready["vaults"][name]
            .as_str()
            .expect("vault")
            .trim_end_matches('/')
            .to_string()
    }

    /// A Key Vault token for `who` (`control_plane`, `agent`, `bootstrap`).
    pub fn token(&self, who: &str) -> String {
        let reply: Value = self
            .http
            .get(self.ready["identity_endpoint"].as_str().unwrap())
            .query(&[
                ("api-version", "2019-08-01"),
                ("resource", "https://vault.azure.net"),
                (
                    "client_id",
                    self.identities[who]["client_id"].as_str().unwrap(),
                ),
            ])
            .header(
                "X-IDENTITY-HEADER",
                self.identities["header"].as_str().unwrap(),
            )
            .header("metadata", "true")
            .send()
            .unwrap()
            .json()
            .unwrap();
        reply["access_token"].as_str().expect("token").to_string()
    }

    /// `POST {vault}{path}` as `who`.
    pub fn post(&self, vault: &str, path: &str, who: &str, body: &Value) -> Reply {
        let r = self
            .http
            .post(format!("{}{path}?api-version=7.5", self.vault(vault)))
            .bearer_auth(self.token(who))
            .json(body)
            .send()
            .unwrap();
        let status = r.status().as_u16();
        Reply {
            status,
            body: r.json().unwrap_or(Value::Null),
        }
    }
}
