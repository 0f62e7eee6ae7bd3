//! The connector registry from the command line: `culvert connector publish`, `versions`
//! and `keygen`, and `culvert signing-key add/list/remove`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use axum::http::Method;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use clap::Subcommand;
use culvert_control_api::client::{ClientError, Options};
use culvert_control_api::connectors::ConnectorType;
use culvert_control_api::registry::{
    Component, ConnectorLimits, ConnectorTypeVersion, SigningKey, SigningKeyPut, VersionPublish,
    VersionSignature, WASM_MEDIA_TYPE, signed_message,
};
use ed25519_dalek::Signer;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::api::Api;
use crate::exit::{Failure, Kind};
use crate::output::{self, Output, Table, fields, outln};

/// `culvert connector publish`.
#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    /// The component, for example dist/NAME.wasm.
    pub component: PathBuf,
    /// Connector type name: 2 to 63 lowercase letters, digits or `-`, starting with a letter.
    #[arg(long)]
    pub name: String,
    /// Semantic version, for example 1.2.0; published versions never change.
    #[arg(long = "version", value_name = "SEMVER")]
    pub type_version: String,
    /// A `host:port` the connector needs besides those its configuration names. Repeat.
    #[arg(long, value_name = "HOST:PORT")]
    pub egress: Vec<String>,
    /// Linear memory cap in MiB (16 to 4096).
    #[arg(long)]
    pub memory_mib: Option<u64>,
    /// CPU seconds one call may spend (0.1 to 600).
    #[arg(long)]
    pub cpu_seconds_per_call: Option<f64>,
    /// Wall-clock seconds one call may take (1 to 3600).
    #[arg(long)]
    pub call_timeout_seconds: Option<f64>,
    /// What this version is or changes.
    #[arg(long)]
    pub description: Option<String>,
    /// Sign the version with this ed25519 private key (PKCS#8 PEM, see `culvert connector keygen`).
    #[arg(long, value_name = "FILE")]
    pub sign_key: Option<PathBuf>,
    /// The signing key's id [default: the configured key whose public half matches]
    #[arg(long, value_name = "KEY_ID", requires = "sign_key")]
    pub sign_key_id: Option<String>,
    /// The configuration's JSON Schema [default: the component's own `spec` export]
    #[arg(long, value_name = "FILE.json")]
    pub spec: Option<PathBuf>,
}

/// `culvert signing-key ...`.
#[derive(Debug, Subcommand)]
pub enum SigningKeyCommand {
    /// Add a public key; from then on every published connector version must be signed.
    Add {
        /// Key id: letters, digits, `.`, `_` and `-`.
        key_id: String,
        /// File with the public key: base64 of the 32 bytes (`culvert connector keygen`
        /// writes FILE.pub) or a PEM `PUBLIC KEY`.
        #[arg(long, value_name = "FILE")]
        public_key: PathBuf,
    },
    /// List the signing keys.
    List,
    /// Remove a signing key.
    Remove {
        /// Key id.
        key_id: String,
    },
}

fn invalid(message: impl Into<String>) -> anyhow::Error {
    Failure::new(Kind::Invalid, message).into()
}

/// Lowercase hex SHA-256, as the registry names components.
pub fn digest_of(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The configuration schema the component itself declares (its `spec` export), read in the
/// agent's sandbox with no network.
async fn component_spec(path: &Path) -> Result<Value> {
    let cache = super::connector_dev::cache_dir();
    let (_, spec) = culvert_agent_host::conformance::describe(path, &cache)
        .await
        .with_context(|| {
            format!(
                "cannot read the spec of {} (give it with --spec FILE.json)",
                path.display()
            )
        })?;
    serde_json::from_str(&spec).map_err(|e| {
        invalid(format!(
            "the spec {} returns is not JSON ({e}); fix its `spec` export or give --spec FILE.json",
            path.display()
        ))
    })
}

fn read_spec(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read --spec {}", path.display()))?;
    match serde_json::from_str::<Value>(&text) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(invalid(format!(
            "--spec {}: must hold a JSON Schema object",
            path.display()
        ))),
        Err(e) => Err(invalid(format!(
            "--spec {}: not valid JSON: {e}",
            path.display()
        ))),
    }
}

/// An ed25519 private key from a PKCS#8 PEM file.
pub fn read_private_key(path: &Path) -> Result<ed25519_dalek::SigningKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the signing key {}", path.display()))?;
    ed25519_dalek::SigningKey::from_pkcs8_pem(&text).map_err(|e| {
        invalid(format!(
            "{} is not an ed25519 private key in PKCS#8 PEM ({e}); create one with `culvert connector keygen --out FILE`",
            path.display()
        ))
    })
}

/// The base64 of a 32-byte ed25519 public key from a file holding that base64 or a PEM
/// `PUBLIC KEY`.
pub fn read_public_key(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the public key {}", path.display()))?;
    let text = text.trim();
    if text.contains("PRIVATE KEY") {
        return Err(invalid(format!(
            "{} holds a private key; give its public half (the .pub file `culvert connector keygen` wrote)",
            path.display()
        )));
    }
    if text.starts_with("-----BEGIN PUBLIC KEY-----") {
        let key = ed25519_dalek::VerifyingKey::from_public_key_pem(text).map_err(|e| {
            invalid(format!(
                "{} is not an ed25519 public key ({e})",
                path.display()
            ))
        })?;
        return Ok(B64.encode(key.to_bytes()));
    }
    match B64.decode(text) {
        Ok(b) if b.len() == 32 => Ok(B64.encode(b)),
        _ => Err(invalid(format!(
            "{} must hold the base64 of a 32-byte ed25519 public key or a PEM PUBLIC KEY",
            path.display()
        ))),
    }
}

/// The signature of a version, and the id of the configured key it is by.
async fn sign(
    api: &Api,
    args: &PublishArgs,
    key_file: &Path,
    digest: &str,
) -> Result<VersionSignature> {
    let key = read_private_key(key_file)?;
    let public = B64.encode(key.verifying_key().to_bytes());
    let key_id = match &args.sign_key_id {
        Some(id) => id.clone(),
        None => {
            let keys = api.get::<Vec<SigningKey>>("/v1/signing-keys").await?.value;
            keys.into_iter()
                .find(|k| k.public_key == public)
                .map(|k| k.key_id)
                .ok_or_else(|| {
                    invalid(format!(
                        "the public half of {} ({public}) is not a configured signing key; add it with `culvert signing-key add KEY_ID --public-key {}.pub`",
                        key_file.display(),
                        key_file.display()
                    ))
                })?
        }
    };
    let message = signed_message(&args.name, &args.type_version, digest);
    Ok(VersionSignature {
        key_id,
        value: B64.encode(key.sign(message.as_bytes()).to_bytes()),
    })
}

fn limits_text(l: &Option<ConnectorLimits>) -> String {
    let Some(l) = l else {
        return "agent defaults".into();
    };
    let mut parts = Vec::new();
    if let Some(m) = l.memory_mib {
        parts.push(format!("memory {m} MiB"));
    }
    if let Some(c) = l.cpu_seconds_per_call {
        parts.push(format!("cpu {c}s/call"));
    }
    if let Some(t) = l.call_timeout_seconds {
        parts.push(format!("timeout {t}s/call"));
    }
    if parts.is_empty() {
        "agent defaults".into()
    } else {
        parts.join(", ")
    }
}

fn version_detail(v: &ConnectorTypeVersion) -> String {
    fields(&[
        ("name", v.name.clone()),
        ("version", v.version.clone()),
        ("kind", v.kind.as_str().into()),
        ("digest", format!("sha256:{}", v.digest)),
        ("size", output::bytes(v.size)),
        ("egress", output::or_dash(Some(v.egress.join(", ")))),
        ("limits", limits_text(&v.limits)),
        ("signed by", output::or_dash(v.signed_by.clone())),
        ("description", output::or_dash(v.description.clone())),
        ("published", output::time(v.created_at)),
    ])
}

/// `culvert connector publish`: upload the component (unless stored), then register the version.
pub async fn publish(api: &Api, args: PublishArgs) -> Result<()> {
    let bytes = std::fs::read(&args.component)
        .with_context(|| format!("cannot read the component {}", args.component.display()))?;
    let digest = digest_of(&bytes);
    let spec = match &args.spec {
        Some(path) => read_spec(path)?,
        None => component_spec(&args.component).await?,
    };
    let signature = match &args.sign_key {
        Some(file) => Some(sign(api, &args, file, &digest).await?),
        None => None,
    };
    let path = format!("/v1/components/{digest}");
    let size = bytes.len();
    match api.get::<Component>(&path).await {
        Ok(_) => {
            if api.output == Output::Table {
                eprintln!("component sha256:{digest} is already stored");
            }
        }
        Err(e) if e.status() == Some(404) => {
            let (status, _) = api
                .put_bytes::<Component>(&path, WASM_MEDIA_TYPE, bytes)
                .await?;
            if api.output == Output::Table {
                let what = if status == 201 {
                    "uploaded"
                } else {
                    "already stored"
                };
                eprintln!(
                    "component sha256:{digest} {what} ({})",
                    output::bytes(size as u64)
                );
            }
        }
        Err(e) => return Err(e.into()),
    }
    let limits = ConnectorLimits {
        memory_mib: args.memory_mib,
        cpu_seconds_per_call: args.cpu_seconds_per_call,
        call_timeout_seconds: args.call_timeout_seconds,
    };
    let body = VersionPublish {
        version: args.type_version.clone(),
        digest,
        spec,
        egress: args.egress.clone(),
        limits: (limits != ConnectorLimits::default()).then_some(limits),
        description: args.description.clone(),
        signature,
    };
    let a = api
        .post::<_, ConnectorTypeVersion>(
            &format!("/v1/connector-types/{}/versions", args.name),
            &body,
        )
        .await?;
    api.show(&a, version_detail);
    if api.output == Output::Table {
        eprintln!(
            "use it: culvert connector create NAME --env ENV --type {}@{} ...",
            a.value.name, a.value.version
        );
    }
    Ok(())
}

fn short(digest: &str) -> String {
    format!("sha256:{}", &digest[..digest.len().min(12)])
}

fn versions_table(t: &ConnectorType) -> String {
    if t.first_party {
        return format!(
            "{} is built into the agent; it has no registered versions\n",
            t.name
        );
    }
    let mut table = Table::new(&[
        "VERSION",
        "KIND",
        "DIGEST",
        "SIZE",
        "EGRESS",
        "SIGNED BY",
        "PUBLISHED",
    ]);
    for v in &t.versions {
        let mut version = v.version.clone();
        if t.latest_version.as_deref() == Some(v.version.as_str()) {
            version.push_str(" (latest)");
        }
        table.row(vec![
            version,
            v.kind.as_str().into(),
            short(&v.digest),
            output::bytes(v.size),
            output::or_dash(Some(v.egress.join(","))),
            output::or_dash(v.signed_by.clone()),
            output::time(v.created_at),
        ]);
    }
    table.render()
}

/// `culvert connector versions NAME`.
pub async fn versions(api: &Api, name: &str) -> Result<()> {
    let a = api
        .get::<ConnectorType>(&format!("/v1/connector-types/{name}"))
        .await?;
    api.show(&a, versions_table);
    Ok(())
}

fn write_new(path: &Path, text: &str, mode: u32) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Failure::new(
                    Kind::Conflict,
                    format!(
                        "{} exists; choose another --out or remove it (a key is never overwritten)",
                        path.display()
                    ),
                )
                .into()
            } else {
                anyhow::Error::new(e).context(format!("cannot write {}", path.display()))
            }
        })?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// `culvert connector keygen --out FILE`: a new ed25519 key pair; the private key in `FILE`
/// (PKCS#8 PEM, mode 0600), the public key's base64 in `FILE.pub` and on stdout.
pub fn keygen(out: &Path, output: Output) -> Result<()> {
    use rand::RngCore;
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    seed.fill(0);
    let pem = key
        .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .map_err(|e| anyhow::anyhow!("cannot encode the private key: {e}"))?;
    let public = B64.encode(key.verifying_key().to_bytes());
    let mut pub_path = out.as_os_str().to_owned();
    pub_path.push(".pub");
    let pub_path = PathBuf::from(pub_path);
    if pub_path.exists() {
        return Err(Failure::new(
            Kind::Conflict,
            format!(
                "{} exists; choose another --out or remove it",
                pub_path.display()
            ),
        )
        .into());
    }
    write_new(out, &pem, 0o600)?;
    write_new(&pub_path, &format!("{public}\n"), 0o644)?;
    match output {
        Output::Json => outln!(
            "{}",
            json!({"public_key": public, "private_key_file": out, "public_key_file": pub_path})
        ),
        Output::Table => {
            outln!("{public}");
            eprintln!(
                "private key written to {} (keep it secret); public key to {}",
                out.display(),
                pub_path.display()
            );
            eprintln!(
                "trust it: culvert signing-key add KEY_ID --public-key {}",
                pub_path.display()
            );
            eprintln!(
                "sign with it: culvert connector publish COMPONENT.wasm ... --sign-key {}",
                out.display()
            );
        }
    }
    Ok(())
}

fn keys_table(keys: &[SigningKey]) -> String {
    if keys.is_empty() {
        return "no signing keys: connector versions need no signature (add one with `culvert signing-key add`)\n".into();
    }
    let mut t = Table::new(&["KEY ID", "PUBLIC KEY", "ADDED"]);
    for k in keys {
        t.row(vec![
            k.key_id.clone(),
            k.public_key.clone(),
            output::time(k.created_at),
        ]);
    }
    t.render()
}

/// Run a `signing-key` command.
pub async fn run_signing_key(api: &Api, cmd: SigningKeyCommand) -> Result<()> {
    match cmd {
        SigningKeyCommand::Add { key_id, public_key } => {
            let body = SigningKeyPut {
                public_key: read_public_key(&public_key)?,
            };
            let a = api
                .call::<_, SigningKey>(
                    Method::PUT,
                    &format!("/v1/signing-keys/{key_id}"),
                    Some(&body),
                    Options::default(),
                )
                .await?;
            api.show(&a, |k| {
                fields(&[
                    ("key id", k.key_id.clone()),
                    ("public key", k.public_key.clone()),
                    ("added", output::time(k.created_at)),
                ])
            });
            if api.output == Output::Table {
                eprintln!(
                    "from now on every published connector version must be signed by a configured key"
                );
            }
        }
        SigningKeyCommand::List => {
            let a = api.get::<Vec<SigningKey>>("/v1/signing-keys").await?;
            api.show(&a, |k| keys_table(k));
        }
        SigningKeyCommand::Remove { key_id } => {
            match api.delete(&format!("/v1/signing-keys/{key_id}")).await {
                Ok(()) => {}
                Err(ClientError::Api(p)) if p.status == 404 => {
                    return Err(Failure::new(Kind::NotFound, p.message()).into());
                }
                Err(e) => return Err(e.into()),
            }
            if api.output == Output::Table {
                outln!("removed signing key {key_id}");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::Verifier;

    #[test]
    fn keygen_writes_a_private_pem_and_a_public_file_that_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("release.key");
        keygen(&out, Output::Json).unwrap();
        let mode = std::fs::metadata(&out).unwrap().permissions();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.mode() & 0o777, 0o600);
        let key = read_private_key(&out).unwrap();
        let public = read_public_key(&dir.path().join("release.key.pub")).unwrap();
        assert_eq!(public, B64.encode(key.verifying_key().to_bytes()));
        let e = keygen(&out, Output::Json).unwrap_err();
        assert_eq!(crate::exit::code(&e), crate::exit::CONFLICT);
        let e = read_public_key(&out).unwrap_err();
        assert!(e.to_string().contains("holds a private key"), "{e}");
        let msg = signed_message("acme", "1.0.0", &digest_of(b"x"));
        let sig = key.sign(msg.as_bytes());
        key.verifying_key().verify(msg.as_bytes(), &sig).unwrap();
        assert_eq!(
            digest_of(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
