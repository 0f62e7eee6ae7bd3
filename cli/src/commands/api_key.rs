//! `culvert api-key`: credentials for people and scripts.

use anyhow::Result;
use clap::Subcommand;
use culvert_control_api::keys::{ApiKey, ApiKeyCreate, ApiKeyCreated, Role};

use crate::api::Api;
use crate::output::outln;
use crate::output::{self, Output, Table, fields};
use crate::resolve;

/// `culvert api-key ...`.
#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Create a key; its secret is printed once.
    Create {
        /// What the key is for.
        name: String,
        /// Days until it expires (1 to 365, default 90).
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
    /// List keys that are not revoked.
    List,
    /// Revoke a key.
    Revoke {
        /// Id (or name, when unique).
        id: String,
    },
}

fn role(r: Role) -> &'static str {
    match r {
        Role::Admin => "admin",
    }
}

fn list_table(items: &[ApiKey]) -> String {
    let mut t = Table::new(&["ID", "NAME", "ROLE", "PREFIX", "CREATED", "EXPIRES"]);
    for k in items {
        t.row(vec![
            k.id.to_string(),
            k.name.clone(),
            role(k.role).into(),
            k.prefix.clone(),
            output::time(k.created_at),
            output::time(k.expires_at),
        ]);
    }
    t.render()
}

/// Run an `api-key` command.
pub async fn run(api: &Api, cmd: ApiKeyCommand) -> Result<()> {
    match cmd {
        ApiKeyCommand::Create {
            name,
            expires_in_days,
        } => {
            let body = ApiKeyCreate {
                name,
                expires_in_days,
            };
            let a = api
                .create::<_, ApiKeyCreated>("/v1/api-keys", &body)
                .await?;
            api.show(&a, |k| {
                let mut out = fields(&[
                    ("id", k.key.id.to_string()),
                    ("name", k.key.name.clone()),
                    ("role", role(k.key.role).into()),
                    ("expires", output::time(k.key.expires_at)),
                ]);
                out.push_str(&format!("secret   {}\n", k.secret));
                out
            });
            eprintln!(
                "warning: this is the only time the secret is shown; store it now (for example in a file for --api-key-file)"
            );
        }
        ApiKeyCommand::List => {
            let list = api.list_all::<ApiKey>("/v1/api-keys", &[]).await?;
            api.show_list(&list, list_table);
        }
        ApiKeyCommand::Revoke { id } => {
            let id = resolve::api_key(api, &id).await?;
            api.delete(&format!("/v1/api-keys/{id}")).await?;
            if api.output == Output::Table {
                outln!("revoked API key {id}");
            }
        }
    }
    Ok(())
}
