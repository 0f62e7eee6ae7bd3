//! Maps a method and path to a vault operation, the way Key Vault's data plane lays out its URLs.
//!
//! Parsed by hand rather than with axum routes because the SDK sends empty path segments
//! (`/keys/{name}//wrapkey`, `/keys/{name}/` for "latest"), which a route table would not match.

use super::policy::{KeyPermission, Permission, SecretPermission};
use axum::http::Method;

/// The four RSA key operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CryptoOp {
    /// `/encrypt`
    Encrypt,
    /// `/decrypt`
    Decrypt,
    /// `/wrapkey`
    WrapKey,
    /// `/unwrapkey`
    UnwrapKey,
}

impl CryptoOp {
    fn from_segment(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "encrypt" => Some(Self::Encrypt),
            "decrypt" => Some(Self::Decrypt),
            "wrapkey" => Some(Self::WrapKey),
            "unwrapkey" => Some(Self::UnwrapKey),
            _ => None,
        }
    }

    /// The JWK `key_ops` entry that must be present on the key.
    pub fn key_op(self) -> &'static str {
        match self {
            Self::Encrypt => "encrypt",
            Self::Decrypt => "decrypt",
            Self::WrapKey => "wrapKey",
            Self::UnwrapKey => "unwrapKey",
        }
    }

    /// Whether the operation uses the private key.
    pub fn is_private(self) -> bool {
        matches!(self, Self::Decrypt | Self::UnwrapKey)
    }
}

/// One data-plane operation with its path parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// `POST /keys/{name}/create`
    CreateKey {
        /// Key name.
        name: String,
    },
    /// `GET /keys/{name}[/{version}]`
    GetKey {
        /// Key name.
        name: String,
        /// Version; latest when `None`.
        version: Option<String>,
    },
    /// `GET /keys`
    ListKeys,
    /// `GET /keys/{name}/versions`
    ListKeyVersions {
        /// Key name.
        name: String,
    },
    /// `POST /keys/{name}/rotate`
    RotateKey {
        /// Key name.
        name: String,
    },
    /// `DELETE /keys/{name}`
    DeleteKey {
        /// Key name.
        name: String,
    },
    /// `POST /keys/{name}[/{version}]/{encrypt|decrypt|wrapkey|unwrapkey}`
    Crypto {
        /// Which operation.
        op: CryptoOp,
        /// Key name.
        name: String,
        /// Version; latest when `None` (also for the SDK's empty segment).
        version: Option<String>,
    },
    /// `PUT /secrets/{name}`
    SetSecret {
        /// Secret name.
        name: String,
    },
    /// `GET /secrets/{name}[/{version}]`
    GetSecret {
        /// Secret name.
        name: String,
        /// Version; latest when `None`.
        version: Option<String>,
    },
    /// `GET /secrets`
    ListSecrets,
    /// `GET /secrets/{name}/versions`
    ListSecretVersions {
        /// Secret name.
        name: String,
    },
    /// `DELETE /secrets/{name}`
    DeleteSecret {
        /// Secret name.
        name: String,
    },
}

/// Operation names, as used in logs and in fault rules' `operations`.
pub const OPERATION_NAMES: &[&str] = &[
    "create_key",
    "get_key",
    "list_keys",
    "list_key_versions",
    "rotate_key",
    "delete_key",
    "encrypt",
    "decrypt",
    "wrapkey",
    "unwrapkey",
    "set_secret",
    "get_secret",
    "list_secrets",
    "list_secret_versions",
    "delete_secret",
];

impl Operation {
    /// The operation's name (one of [`OPERATION_NAMES`]).
    pub fn name(&self) -> &'static str {
        match self {
            Self::CreateKey { .. } => "create_key",
            Self::GetKey { .. } => "get_key",
            Self::ListKeys => "list_keys",
            Self::ListKeyVersions { .. } => "list_key_versions",
            Self::RotateKey { .. } => "rotate_key",
            Self::DeleteKey { .. } => "delete_key",
            Self::Crypto { op, .. } => match op {
                CryptoOp::Encrypt => "encrypt",
                CryptoOp::Decrypt => "decrypt",
                CryptoOp::WrapKey => "wrapkey",
                CryptoOp::UnwrapKey => "unwrapkey",
            },
            Self::SetSecret { .. } => "set_secret",
            Self::GetSecret { .. } => "get_secret",
            Self::ListSecrets => "list_secrets",
            Self::ListSecretVersions { .. } => "list_secret_versions",
            Self::DeleteSecret { .. } => "delete_secret",
        }
    }

    /// The access-policy permission the operation needs, as Azure documents per operation.
    pub fn permission(&self) -> Permission {
        use KeyPermission as K;
        use SecretPermission as S;
        match self {
            Self::CreateKey { .. } => Permission::Key(K::Create),
            Self::GetKey { .. } => Permission::Key(K::Get),
            Self::ListKeys | Self::ListKeyVersions { .. } => Permission::Key(K::List),
            Self::RotateKey { .. } => Permission::Key(K::Rotate),
            Self::DeleteKey { .. } => Permission::Key(K::Delete),
            Self::Crypto { op, .. } => Permission::Key(match op {
                CryptoOp::Encrypt => K::Encrypt,
                CryptoOp::Decrypt => K::Decrypt,
                CryptoOp::WrapKey => K::WrapKey,
                CryptoOp::UnwrapKey => K::UnwrapKey,
            }),
            Self::SetSecret { .. } => Permission::Secret(S::Set),
            Self::GetSecret { .. } => Permission::Secret(S::Get),
            Self::ListSecrets | Self::ListSecretVersions { .. } => Permission::Secret(S::List),
            Self::DeleteSecret { .. } => Permission::Secret(S::Delete),
        }
    }
}

/// Why a request matched no operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// No such path.
    NotFound,
    /// The path exists but not with this method.
    MethodNotAllowed,
}

/// Resolves a request to an operation.
pub fn parse(method: &Method, path: &str) -> Result<Operation, RouteError> {
    let segs: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
    let name = |s: &str| s.to_owned();
    let version = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    let (collection, rest) = match segs.split_first() {
        Some((c, rest)) => (c.to_ascii_lowercase(), rest),
        None => return Err(RouteError::NotFound),
    };
    let m = method.clone();
    match (collection.as_str(), rest) {
        ("keys", [] | [""]) => only(&m, Method::GET, Operation::ListKeys),
        ("keys", [n]) | ("keys", [n, ""]) if !n.is_empty() => match m {
            Method::GET => Ok(Operation::GetKey {
                name: name(n),
                version: None,
            }),
            Method::DELETE if rest.len() == 1 => Ok(Operation::DeleteKey { name: name(n) }),
            _ => Err(RouteError::MethodNotAllowed),
        },
        ("keys", [n, action]) if !n.is_empty() => {
            let lower = action.to_ascii_lowercase();
            if let Some(op) = CryptoOp::from_segment(action) {
                return only(
                    &m,
                    Method::POST,
                    Operation::Crypto {
                        op,
                        name: name(n),
                        version: None,
                    },
                );
            }
            match lower.as_str() {
                "create" => only(&m, Method::POST, Operation::CreateKey { name: name(n) }),
                "rotate" => only(&m, Method::POST, Operation::RotateKey { name: name(n) }),
                "versions" => only(
                    &m,
                    Method::GET,
                    Operation::ListKeyVersions { name: name(n) },
                ),
                _ => only(
                    &m,
                    Method::GET,
                    Operation::GetKey {
                        name: name(n),
                        version: version(action),
                    },
                ),
            }
        }
        ("keys", [n, v, action]) if !n.is_empty() => match CryptoOp::from_segment(action) {
            Some(op) => only(
                &m,
                Method::POST,
                Operation::Crypto {
                    op,
                    name: name(n),
                    version: version(v),
                },
            ),
            None if action.is_empty() && !v.is_empty() => only(
                &m,
                Method::GET,
                Operation::GetKey {
                    name: name(n),
                    version: version(v),
                },
            ),
            None => Err(RouteError::NotFound),
        },
        ("secrets", [] | [""]) => only(&m, Method::GET, Operation::ListSecrets),
        ("secrets", [n]) | ("secrets", [n, ""]) if !n.is_empty() => match m {
            Method::GET => Ok(Operation::GetSecret {
                name: name(n),
                version: None,
            }),
            Method::PUT => Ok(Operation::SetSecret { name: name(n) }),
            Method::DELETE => Ok(Operation::DeleteSecret { name: name(n) }),
            _ => Err(RouteError::MethodNotAllowed),
        },
        ("secrets", [n, v]) | ("secrets", [n, v, ""]) if !n.is_empty() => {
            if v.eq_ignore_ascii_case("versions") {
                only(
                    &m,
                    Method::GET,
                    Operation::ListSecretVersions { name: name(n) },
                )
            } else {
                only(
                    &m,
                    Method::GET,
                    Operation::GetSecret {
                        name: name(n),
                        version: version(v),
                    },
                )
            }
        }
        _ => Err(RouteError::NotFound),
    }
}

fn only(method: &Method, expected: Method, op: Operation) -> Result<Operation, RouteError> {
    if *method == expected {
        Ok(op)
    } else {
        Err(RouteError::MethodNotAllowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crypto(op: CryptoOp, name: &str, version: Option<&str>) -> Operation {
        Operation::Crypto {
            op,
            name: name.into(),
            version: version.map(Into::into),
        }
    }

    #[test]
    fn sdk_empty_version_segment_means_latest() {
        assert_eq!(
            parse(&Method::POST, "/keys/k//wrapkey"),
            Ok(crypto(CryptoOp::WrapKey, "k", None))
        );
        assert_eq!(
            parse(&Method::POST, "/keys/k/abc/decrypt"),
            Ok(crypto(CryptoOp::Decrypt, "k", Some("abc")))
        );
        assert_eq!(
            parse(&Method::POST, "/keys/k/unwrapKey"),
            Ok(crypto(CryptoOp::UnwrapKey, "k", None))
        );
    }

    #[test]
    fn get_key_forms() {
        let latest = Operation::GetKey {
            name: "k".into(),
            version: None,
        };
        assert_eq!(parse(&Method::GET, "/keys/k"), Ok(latest.clone()));
        assert_eq!(parse(&Method::GET, "/keys/k/"), Ok(latest));
        assert_eq!(
            parse(&Method::GET, "/keys/k/v1"),
            Ok(Operation::GetKey {
                name: "k".into(),
                version: Some("v1".into())
            })
        );
        assert_eq!(
            parse(&Method::GET, "/keys/k/versions"),
            Ok(Operation::ListKeyVersions { name: "k".into() })
        );
        assert_eq!(parse(&Method::GET, "/keys"), Ok(Operation::ListKeys));
    }

    #[test]
    fn key_management_routes() {
        assert_eq!(
            parse(&Method::POST, "/keys/k/create"),
            Ok(Operation::CreateKey { name: "k".into() })
        );
        assert_eq!(
            parse(&Method::POST, "/keys/k/rotate"),
            Ok(Operation::RotateKey { name: "k".into() })
        );
        assert_eq!(
            parse(&Method::DELETE, "/keys/k"),
            Ok(Operation::DeleteKey { name: "k".into() })
        );
        assert_eq!(
            parse(&Method::GET, "/keys/k/create"),
            Err(RouteError::MethodNotAllowed)
        );
    }

    #[test]
    fn secret_routes() {
        assert_eq!(
            parse(&Method::PUT, "/secrets/s"),
            Ok(Operation::SetSecret { name: "s".into() })
        );
        assert_eq!(
            parse(&Method::GET, "/secrets/s/"),
            Ok(Operation::GetSecret {
                name: "s".into(),
                version: None
            })
        );
        assert_eq!(
            parse(&Method::GET, "/secrets/s/v"),
            Ok(Operation::GetSecret {
                name: "s".into(),
                version: Some("v".into())
            })
        );
        assert_eq!(parse(&Method::GET, "/secrets"), Ok(Operation::ListSecrets));
        assert_eq!(
            parse(&Method::GET, "/secrets/s/versions"),
            Ok(Operation::ListSecretVersions { name: "s".into() })
        );
        assert_eq!(
            parse(&Method::DELETE, "/secrets/s"),
            Ok(Operation::DeleteSecret { name: "s".into() })
        );
    }

    #[test]
    fn unknown_paths() {
        assert_eq!(
            parse(&Method::GET, "/certificates"),
            Err(RouteError::NotFound)
        );
        assert_eq!(
            parse(&Method::POST, "/keys/k/v/sign"),
            Err(RouteError::NotFound)
        );
    }

    #[test]
    fn every_operation_name_is_listed() {
        for (m, p) in [
            (Method::POST, "/keys/k/create"),
            (Method::GET, "/keys/k"),
            (Method::GET, "/keys"),
            (Method::GET, "/keys/k/versions"),
            (Method::POST, "/keys/k/rotate"),
            (Method::DELETE, "/keys/k"),
            (Method::POST, "/keys/k//encrypt"),
            (Method::POST, "/keys/k//decrypt"),
            (Method::POST, "/keys/k//wrapkey"),
            (Method::POST, "/keys/k//unwrapkey"),
            (Method::PUT, "/secrets/s"),
            (Method::GET, "/secrets/s"),
            (Method::GET, "/secrets"),
            (Method::GET, "/secrets/s/versions"),
            (Method::DELETE, "/secrets/s"),
        ] {
            let op = parse(&m, p).unwrap();
            assert!(OPERATION_NAMES.contains(&op.name()), "{}", op.name());
        }
    }
}
