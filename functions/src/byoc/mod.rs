//! Azure (bring-your-own-cloud) environments: the bootstrap bundle, registration,
//! discovery, network steps, validation containers, agent scale sets and VNet peering, all
//! through Azure Resource Manager with Culvert's identity.

pub mod compute;
pub mod discovery;
pub mod inputs;
pub mod jobs;
pub mod network;
pub mod peering;
pub mod registration;
pub mod settings;
pub mod validation;

use std::sync::Arc;

use culvert_arm::{ArmClient, ArmError};
use tokio::sync::OnceCell;

pub use settings::ByocSettings;

use crate::error::ApiError;

/// Culvert's side of Azure environments and its ARM client, built on first use.
pub struct Byoc {
    /// Settings.
    pub settings: ByocSettings,
    /// The API base URL agents call.
    pub public_url: String,
    arm: OnceCell<Arc<ArmClient>>,
}

impl Byoc {
    /// From settings; nothing is connected yet.
    pub fn new(settings: ByocSettings, public_url: String) -> Byoc {
        Byoc {
            settings,
            public_url,
            arm: OnceCell::new(),
        }
    }

    /// The ARM client, authenticated as the control plane's identity.
    pub async fn arm(&self) -> Result<Arc<ArmClient>, ApiError> {
        self.arm
            .get_or_try_init(|| async {
                let endpoint = url::Url::parse(&self.settings.arm_endpoint).map_err(|e| {
                    ApiError::Internal(format!(
                        "CULVERT_ARM_ENDPOINT {:?}: {e}",
                        self.settings.arm_endpoint
                    ))
                })?;
                let credential = culvert_azure::identity::CredentialSource::from_env()
                    .and_then(|s| s.credential())
                    .map_err(|e| ApiError::Internal(e.to_string()))?;
                let mut client = ArmClient::new(endpoint, credential).map_err(arm_error)?;
                if let Some(floor) = self.settings.poll_interval {
                    client = client
                        .with_poll_interval(floor, floor.max(std::time::Duration::from_secs(5)));
                }
                Ok(Arc::new(client))
            })
            .await
            .cloned()
    }
}

/// An ARM failure as an API error: refusals and missing resources are the customer's to
/// fix (409 with the reason), the rest is ours (502).
pub fn arm_error(e: ArmError) -> ApiError {
    match e {
        ArmError::Authorization { .. }
        | ArmError::NotFound { .. }
        | ArmError::BadRequest { .. } => ApiError::Conflict(e.to_string()),
        other => ApiError::Unavailable(other.to_string()),
    }
}
