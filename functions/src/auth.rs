//! Who is calling: API keys for people and scripts, agent keys for agents.
//!
//! Credentials are `cv<k|a|t>_<id>_<secret>`: the id finds the row, the secret is checked
//! against its SHA-256. The secrets are 256 random bits, so a fast hash is as strong as a
//! slow one here and keeps every request cheap.
//!
//! Every handler asks [`authorize`] for one [`Action`]; roles and per-resource permissions
//! plug in there without touching the handlers.

use axum::http::HeaderMap;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use chrono::{DateTime, Utc};
use culvert_control_api::keys::Role;
use rand::RngCore;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};
use crate::store::Sql;
use crate::store::Store;

/// Kinds of credential, by prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    /// `cvk_`: an API key.
    ApiKey,
    /// `cva_`: an agent's own key.
    Agent,
    /// `cvt_`: an environment's agent registration token.
    RegistrationToken,
    /// `cvv_`: the one-time token of one validation run in a validation container.
    ValidationToken,
}

impl CredentialKind {
    fn prefix(self) -> &'static str {
        match self {
            CredentialKind::ApiKey => "cvk",
            CredentialKind::Agent => "cva",
            CredentialKind::RegistrationToken => "cvt",
            CredentialKind::ValidationToken => "cvv",
        }
    }
}

/// A new credential for `id`: the text to hand out once and the hash to store.
pub fn new_credential(kind: CredentialKind, id: Uuid) -> (String, Vec<u8>) {
    let mut secret = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut secret);
    let secret = B64.encode(secret);
    let text = format!("{}_{}_{}", kind.prefix(), id.simple(), secret);
    (text, hash(&secret))
}

fn hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// Split a credential into id and secret, when it has the kind's shape.
pub fn parse_credential(kind: CredentialKind, text: &str) -> Option<(Uuid, &str)> {
    let rest = text.strip_prefix(kind.prefix())?.strip_prefix('_')?;
    let (id, secret) = rest.split_once('_')?;
    Some((Uuid::try_parse(id).ok()?, secret))
}

/// Whether `secret` hashes to `stored`, in constant time.
pub fn verify(secret: &str, stored: &[u8]) -> bool {
    let h = hash(secret);
    h.len() == stored.len() && h.iter().zip(stored).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// The authenticated caller.
#[derive(Debug, Clone)]
pub enum Principal {
    /// A person or script with an API key.
    User {
        /// Key id.
        key_id: Uuid,
        /// Role.
        role: Role,
    },
    /// An agent.
    Agent {
        /// Agent id.
        agent_id: Uuid,
        /// Its environment.
        environment_id: Uuid,
    },
}

impl Principal {
    /// A stable name, for idempotency records and logs.
    pub fn name(&self) -> String {
        match self {
            Principal::User { key_id, .. } => format!("key:{key_id}"),
            Principal::Agent { agent_id, .. } => format!("agent:{agent_id}"),
        }
    }
}

/// What a request does, for [`authorize`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Read resources.
    Read,
    /// Create, change or delete resources.
    Write,
    /// Manage API keys.
    ManageKeys,
    /// Add or remove the keys connector versions must be signed with.
    ManageSigningKeys,
    /// Speak the agent protocol.
    AgentProtocol,
}

/// Whether `principal` may do `action`.
pub fn authorize(principal: &Principal, action: Action) -> ApiResult<()> {
    let allowed = match (principal, action) {
        (
            Principal::User {
                role: Role::Admin, ..
            },
            a,
        ) => a != Action::AgentProtocol,
        (Principal::Agent { .. }, a) => a == Action::AgentProtocol,
    };
    if allowed {
        Ok(())
    } else {
        Err(ApiError::Forbidden(match principal {
            Principal::Agent { .. } => "agent keys may only call the agent protocol".into(),
            Principal::User { .. } => "API keys cannot call the agent protocol".into(),
        }))
    }
}

fn bearer(headers: &HeaderMap) -> ApiResult<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| {
            ApiError::Unauthorized(
                "send an API key as `Authorization: Bearer cvk_...`; `culvert local up` prints where the admin key is stored".into(),
            )
        })?
        .to_str()
        .map_err(|_| ApiError::Unauthorized("the Authorization header is not text".into()))?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .ok_or_else(|| {
            ApiError::Unauthorized("the Authorization header must be `Bearer <key>`".into())
        })
}

/// How long a verified credential is trusted without asking the store again; a revocation
/// made through another instance takes at most this long to apply.
const CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(30);

struct Cached {
    hash: Vec<u8>,
    principal: Principal,
    until: std::time::Instant,
}

static VERIFIED: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<Uuid, Cached>>> =
    std::sync::LazyLock::new(Default::default);

fn cached(id: Uuid, secret: &str) -> Option<Principal> {
    let map = VERIFIED.lock().expect("credential cache");
    let c = map.get(&id)?;
    (c.until > std::time::Instant::now() && verify(secret, &c.hash)).then(|| c.principal.clone())
}

fn remember(id: Uuid, hash: Vec<u8>, principal: &Principal, expires: Option<DateTime<Utc>>) {
    let mut until = std::time::Instant::now() + CACHE_TTL;
    if let Some(e) = expires {
        let left = (e - Utc::now()).to_std().unwrap_or_default();
        until = until.min(std::time::Instant::now() + left);
    }
    let mut map = VERIFIED.lock().expect("credential cache");
    if map.len() > 10_000 {
        map.retain(|_, c| c.until > std::time::Instant::now());
    }
    map.insert(
        id,
        Cached {
            hash,
            principal: principal.clone(),
            until,
        },
    );
}

/// Forget a credential at once (after revoking it here).
pub fn forget(id: Uuid) {
    VERIFIED.lock().expect("credential cache").remove(&id);
}

/// Authenticate a request by its bearer credential (API key or agent key).
pub async fn authenticate(store: &Store, headers: &HeaderMap) -> ApiResult<Principal> {
    let token = bearer(headers)?;
    let invalid = || ApiError::Unauthorized("the key is unknown, revoked or expired".into());
    for kind in [CredentialKind::ApiKey, CredentialKind::Agent] {
        if let Some((id, secret)) = parse_credential(kind, token)
            && let Some(p) = cached(id, secret)
        {
            return Ok(p);
        }
    }
    let conn = store.conn().await?;
    if let Some((id, secret)) = parse_credential(CredentialKind::ApiKey, token) {
        let row = conn
            .q_opt(
                "select secret_hash, role, expires_at from api_keys where id = $1 and revoked_at is null",
                &[&id],
            )
            .await?
            .ok_or_else(invalid)?;
        let expires: DateTime<Utc> = row.get(2);
        if !verify(secret, row.get(0)) || expires <= Utc::now() {
            return Err(invalid());
        }
        let role = match row.get::<_, &str>(1) {
            "admin" => Role::Admin,
            other => return Err(ApiError::Internal(format!("unknown role {other}"))),
        };
        let principal = Principal::User { key_id: id, role };
        remember(id, row.get(0), &principal, Some(expires));
        return Ok(principal);
    }
    if let Some((id, secret)) = parse_credential(CredentialKind::Agent, token) {
        let row = conn
            .q_opt(
                "select key_hash, environment_id from agents where id = $1",
                &[&id],
            )
            .await?
            .ok_or_else(invalid)?;
        if !verify(secret, row.get(0)) {
            return Err(invalid());
        }
        let principal = Principal::Agent {
            agent_id: id,
            environment_id: row.get(1),
        };
        remember(id, row.get(0), &principal, None);
        return Ok(principal);
    }
    Err(invalid())
}

/// The registration token in a request, checked against its environment.
pub async fn registration_token(store: &Store, headers: &HeaderMap) -> ApiResult<Uuid> {
    let token = bearer(headers)?;
    let invalid =
        || ApiError::Unauthorized("the agent registration token is unknown or was replaced".into());
    let (env, secret) =
        parse_credential(CredentialKind::RegistrationToken, token).ok_or_else(invalid)?;
    let conn = store.conn().await?;
    let row = conn
        .q_opt(
            "select agent_token_hash from environments where id = $1",
            &[&env],
        )
        .await?
        .ok_or_else(invalid)?;
    let stored: Option<Vec<u8>> = row.get(0);
    match stored {
        Some(h) if verify(secret, &h) => Ok(env),
        _ => Err(invalid()),
    }
}

/// The validation a request's one-time validation token is for, checked against it.
pub async fn validation_token(
    store: &Store,
    headers: &HeaderMap,
    validation: Uuid,
) -> ApiResult<()> {
    let token = bearer(headers)?;
    let invalid = || ApiError::Unauthorized("the validation token is unknown or expired".into());
    let (id, secret) =
        parse_credential(CredentialKind::ValidationToken, token).ok_or_else(invalid)?;
    if id != validation {
        return Err(invalid());
    }
    let conn = store.conn().await?;
    let row = conn
        .q_opt(
            "select runner_token_hash from validations where id = $1 and state in ('queued', 'running')",
            &[&id],
        )
        .await?
        .ok_or_else(invalid)?;
    let stored: Option<Vec<u8>> = row.get(0);
    match stored {
        Some(h) if verify(secret, &h) => Ok(()),
        _ => Err(invalid()),
    }
}

/// Create an API key; returns the text shown once.
pub async fn create_api_key(
    client: &impl deadpool_postgres::GenericClient,
    name: &str,
    role: Role,
    days: u32,
) -> Result<(culvert_control_api::keys::ApiKey, String), tokio_postgres::Error> {
    let id = Uuid::new_v4();
    let (text, hash) = new_credential(CredentialKind::ApiKey, id);
    let prefix: String = text.chars().take(12).collect();
    let role_name = match role {
        Role::Admin => "admin",
    };
    let row = client
        .q_one(
            "insert into api_keys (id, name, role, prefix, secret_hash, expires_at)
             values ($1, $2, $3, $4, $5, now() + make_interval(days => $6))
             returning created_at, expires_at",
            &[&id, &name, &role_name, &prefix, &hash, &(days as i32)],
        )
        .await?;
    Ok((
        culvert_control_api::keys::ApiKey {
            id,
            name: name.into(),
            role,
            prefix,
            created_at: row.get(0),
            expires_at: row.get(1),
        },
        text,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_round_trip_and_verify() {
        let id = Uuid::new_v4();
        let (text, hash) = new_credential(CredentialKind::ApiKey, id);
        let (parsed, secret) = parse_credential(CredentialKind::ApiKey, &text).unwrap();
        assert_eq!(parsed, id);
        assert!(verify(secret, &hash));
        assert!(!verify("other", &hash));
        assert!(parse_credential(CredentialKind::Agent, &text).is_none());
        assert!(parse_credential(CredentialKind::ApiKey, "cvk_nothex_x").is_none());
    }

    #[test]
    fn agents_only_speak_the_agent_protocol() {
        let agent = Principal::Agent {
            agent_id: Uuid::nil(),
            environment_id: Uuid::nil(),
        };
        let admin = Principal::User {
            key_id: Uuid::nil(),
            role: Role::Admin,
        };
        assert!(authorize(&agent, Action::AgentProtocol).is_ok());
        assert!(authorize(&agent, Action::Read).is_err());
        assert!(authorize(&admin, Action::Write).is_ok());
        assert!(authorize(&admin, Action::AgentProtocol).is_err());
        assert!(authorize(&admin, Action::ManageSigningKeys).is_ok());
        assert!(authorize(&agent, Action::ManageSigningKeys).is_err());
    }
}
