//! One credential abstraction for every Azure call: which identity a process uses is a
//! setting, never a key in an environment variable where an identity can do.

use std::sync::Arc;

use azure_core::credentials::{Secret, TokenCredential};
use azure_identity::{
    AzureCliCredential, ClientSecretCredential, ManagedIdentityCredential,
    ManagedIdentityCredentialOptions, UserAssignedId, WorkloadIdentityCredential,
};

/// Setting that names the credential source.
pub const CREDENTIAL_VAR: &str = "CULVERT_AZURE_CREDENTIAL";
/// Setting that names a user-assigned managed identity by client id.
pub const CLIENT_ID_VAR: &str = "CULVERT_AZURE_CLIENT_ID";

/// Why no credential could be built.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The setting names no known source.
    #[error(
        "{CREDENTIAL_VAR}=`{0}` is not a credential source; use managed-identity, workload-identity, client-secret or azure-cli"
    )]
    UnknownSource(String),
    /// The source is known but its inputs are missing or wrong.
    #[error("cannot use the {source_name} credential: {detail}")]
    Unusable {
        /// Which source.
        source_name: &'static str,
        /// What is missing, without secrets.
        detail: String,
    },
}

/// Where tokens come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    /// A managed identity (VM Scale Sets, Container Instances, Functions); user-assigned when a client id is given.
    ManagedIdentity {
        /// Client id of a user-assigned identity.
        client_id: Option<String>,
    },
    /// Workload identity federation (`AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_FEDERATED_TOKEN_FILE`).
    WorkloadIdentity,
    /// A service principal secret (`AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET`), for
    /// a control plane that runs where no identity can be attached.
    ClientSecret,
    /// The developer's `az login`.
    AzureCli,
}

impl CredentialSource {
    /// Parse a source name; a managed identity may carry its client id.
    pub fn parse(name: &str, client_id: Option<String>) -> Result<Self, IdentityError> {
        let client_id = client_id.filter(|c| !c.trim().is_empty());
        match name.trim() {
            "" | "managed-identity" => Ok(CredentialSource::ManagedIdentity { client_id }),
            "workload-identity" => Ok(CredentialSource::WorkloadIdentity),
            "client-secret" => Ok(CredentialSource::ClientSecret),
            "azure-cli" => Ok(CredentialSource::AzureCli),
            other => Err(IdentityError::UnknownSource(other.to_string())),
        }
    }

    /// The source the process settings name (a managed identity when unset).
    pub fn from_env() -> Result<Self, IdentityError> {
        Self::parse(
            &std::env::var(CREDENTIAL_VAR).unwrap_or_default(),
            std::env::var(CLIENT_ID_VAR).ok(),
        )
    }

    /// Build the credential.
    pub fn credential(&self) -> Result<Arc<dyn TokenCredential>, IdentityError> {
        let unusable = |source_name: &'static str| {
            move |e: azure_core::Error| IdentityError::Unusable {
                source_name,
                detail: e.to_string(),
            }
        };
        Ok(match self {
            CredentialSource::ManagedIdentity { client_id } => {
                let options = ManagedIdentityCredentialOptions {
                    user_assigned_id: client_id.clone().map(UserAssignedId::ClientId),
                    ..Default::default()
                };
                ManagedIdentityCredential::new(Some(options))
                    .map_err(unusable("managed identity"))?
            }
            CredentialSource::WorkloadIdentity => {
                WorkloadIdentityCredential::new(None).map_err(unusable("workload identity"))?
            }
            CredentialSource::ClientSecret => {
                let var = |name: &str| {
                    std::env::var(name).map_err(|_| IdentityError::Unusable {
                        source_name: "client secret",
                        detail: format!("{name} is not set"),
                    })
                };
                let tenant = var("AZURE_TENANT_ID")?;
                let client = var("AZURE_CLIENT_ID")?;
                let secret = Secret::new(var("AZURE_CLIENT_SECRET")?);
                ClientSecretCredential::new(&tenant, client, secret, None)
                    .map_err(unusable("client secret"))?
            }
            CredentialSource::AzureCli => {
                AzureCliCredential::new(None).map_err(unusable("Azure CLI"))?
            }
        })
    }
}

impl std::fmt::Display for CredentialSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CredentialSource::ManagedIdentity { client_id: None } => {
                f.write_str("system-assigned managed identity")
            }
            CredentialSource::ManagedIdentity {
                client_id: Some(id),
            } => {
                write!(f, "managed identity {id}")
            }
            CredentialSource::WorkloadIdentity => f.write_str("workload identity"),
            CredentialSource::ClientSecret => f.write_str("service principal (client secret)"),
            CredentialSource::AzureCli => f.write_str("Azure CLI login"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_unknown_ones_say_what_is_allowed() {
        assert_eq!(
            CredentialSource::parse("managed-identity", Some("abc".into())).unwrap(),
            CredentialSource::ManagedIdentity {
                client_id: Some("abc".into())
            }
        );
        assert_eq!(
            CredentialSource::parse("", Some(" ".into())).unwrap(),
            CredentialSource::ManagedIdentity { client_id: None }
        );
        assert_eq!(
            CredentialSource::parse("azure-cli", None).unwrap(),
            CredentialSource::AzureCli
        );
        let e = CredentialSource::parse("keyfile", None).unwrap_err();
        assert!(e.to_string().contains("managed-identity"), "{e}");
    }
}
