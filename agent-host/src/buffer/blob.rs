//! Segments as block blobs in an Azure Storage container.
//!
//! `https://ACCOUNT.blob.core.windows.net/CONTAINER/prefix` authenticates with an Entra
//! token of the agent's identity. The Storage SDK refuses tokens over plain http, so the
//! emulator form `http://127.0.0.1:PORT/devstoreaccount1/CONTAINER/prefix` carries an
//! account SAS signed with the emulator's published key instead, renewed before it expires.
//!
//! Failures come back as [`StoreFault`]s that say whether retrying can help and, when not,
//! which resource refused and what to grant.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use azure_core::credentials::TokenCredential;
use azure_core::error::ErrorKind;
use azure_core::http::{ClientOptions, RequestContent, RetryOptions, StatusCode, Url};
use azure_storage_blob::models::BlobContainerClientListBlobsOptions;
use azure_storage_blob::{BlobContainerClient, BlobContainerClientOptions, StorageError};
use culvert_azure::sas::{AccountSas, DEVSTORE_ACCOUNT};
use futures::TryStreamExt;

use super::StoreFault;

/// One request (or one page of a listing) may take this long before it counts as a
/// transient failure; without it a silently dropped connection would hang an append.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Lifetime of an emulator SAS; it is replaced once less than [`SAS_RENEW_BEFORE`] is left.
const SAS_LIFETIME: Duration = Duration::from_secs(60 * 60);
const SAS_RENEW_BEFORE: Duration = Duration::from_secs(10 * 60);

enum Auth {
    /// An Entra token of the agent's identity.
    Token {
        credential: Arc<dyn TokenCredential>,
        identity: String,
    },
    /// An account SAS derived from the account key (the emulator).
    AccountKey { key: Vec<u8>, permissions: String },
}

struct Client {
    container: BlobContainerClient,
    /// When the SAS in the client's URL needs replacing (never for tokens).
    renew_at: Option<Instant>,
}

/// A container (and name prefix) holding `{prefix}/{seq:020}.seg` blobs.
pub struct BlobStore {
    account: String,
    container_name: String,
    prefix: String,
    container_url: Url,
    auth: Auth,
    client: RwLock<Arc<Client>>,
    page_size: Option<i32>,
}

/// The parts of a blob buffer URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobLocation {
    /// Storage account name.
    pub account: String,
    /// Container name.
    pub container: String,
    /// Blob name prefix without slashes at either end (may be empty).
    pub prefix: String,
    /// The container's URL, without query.
    pub container_url: Url,
    /// Whether this is the emulator's path-style account.
    pub emulator: bool,
}

impl BlobLocation {
    /// Split a buffer URL into account, container and prefix.
    pub fn parse(url: &str) -> Result<BlobLocation> {
        let parsed = Url::parse(url).with_context(|| format!("buffer url `{url}` is not a URL"))?;
        if parsed.query().is_some() || parsed.fragment().is_some() {
            bail!(
                "buffer url `{url}` must not carry a query or fragment (credentials come from the agent's identity)"
            );
        }
        let segments: Vec<&str> = parsed
            .path_segments()
            .map(|s| s.filter(|s| !s.is_empty()).collect())
            .unwrap_or_default();
        let emulator = segments.first() == Some(&DEVSTORE_ACCOUNT);
        let (account, rest) = if emulator {
            (DEVSTORE_ACCOUNT.to_string(), &segments[1..])
        } else {
            if parsed.scheme() != "https" {
                bail!(
                    "buffer url `{url}` must use https; plain http is only for the storage emulator's account `{DEVSTORE_ACCOUNT}` \
                     (http://127.0.0.1:PORT/{DEVSTORE_ACCOUNT}/CONTAINER/prefix)"
                );
            }
            let host = parsed.host_str().unwrap_or_default();
            let account = host.split('.').next().unwrap_or_default().to_string();
            (account, &segments[..])
        };
        let Some((container, prefix)) = rest.split_first() else {
            bail!(
                "buffer url `{url}` names no container; expected https://ACCOUNT.blob.core.windows.net/CONTAINER/prefix"
            );
        };
        let valid_container = (3..=63).contains(&container.len())
            && container
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !container.starts_with('-')
            && !container.ends_with('-')
            && !container.contains("--");
        if !valid_container {
            bail!(
                "buffer url `{url}`: `{container}` is not a valid container name (3 to 63 lowercase letters, digits and single hyphens)"
            );
        }
        if account.is_empty() {
            bail!("buffer url `{url}` names no storage account");
        }
        let mut container_url = parsed.clone();
        container_url.set_path("");
        {
            let mut path = container_url
                .path_segments_mut()
                .map_err(|_| anyhow::anyhow!("buffer url `{url}` cannot name a container"))?;
            if emulator {
                path.push(DEVSTORE_ACCOUNT);
            }
            path.push(container);
        }
        Ok(BlobLocation {
            account,
            container: container.to_string(),
            prefix: prefix.join("/"),
            container_url,
            emulator,
        })
    }
}

impl BlobStore {
    /// Open the store a buffer URL names: the emulator's account with its well-known key,
    /// any other account with the identity the agent's settings name.
    pub fn open(url: &str) -> Result<BlobStore> {
        let location = BlobLocation::parse(url)?;
        if location.emulator {
            return Self::with_account_key(url, culvert_azure::sas::devstore_key(), "rwdlac");
        }
        let source = culvert_azure::identity::CredentialSource::from_env()
            .context("choosing the identity for the buffer's storage account")?;
        let credential = source
            .credential()
            .context("building the credential for the buffer's storage account")?;
        Self::build(
            location,
            Auth::Token {
                credential,
                identity: source.to_string(),
            },
        )
    }

    /// Open with an account SAS of `permissions` signed by `key` (the emulator, and tests
    /// that need a wrong key or too few permissions).
    pub fn with_account_key(url: &str, key: Vec<u8>, permissions: &str) -> Result<BlobStore> {
        let location = BlobLocation::parse(url)?;
        Self::build(
            location,
            Auth::AccountKey {
                key,
                permissions: permissions.to_string(),
            },
        )
    }

    /// Open with a token credential (for callers that already hold one).
    pub fn with_credential(
        url: &str,
        credential: Arc<dyn TokenCredential>,
        identity: &str,
    ) -> Result<BlobStore> {
        let location = BlobLocation::parse(url)?;
        Self::build(
            location,
            Auth::Token {
                credential,
                identity: identity.to_string(),
            },
        )
    }

    fn build(location: BlobLocation, auth: Auth) -> Result<BlobStore> {
        let client = make_client(&location.container_url, &location.account, &auth)?;
        Ok(BlobStore {
            account: location.account,
            container_name: location.container,
            prefix: location.prefix,
            container_url: location.container_url,
            auth,
            client: RwLock::new(Arc::new(client)),
            page_size: None,
        })
    }

    /// List at most `n` blobs per request (the service's default is 5000), so the paging
    /// can be exercised without thousands of segments.
    pub fn with_list_page_size(mut self, n: i32) -> BlobStore {
        self.page_size = Some(n.max(1));
        self
    }

    /// The container as named in messages.
    pub fn describe(&self) -> String {
        if self.prefix.is_empty() {
            format!(
                "container `{}` of storage account `{}`",
                self.container_name, self.account
            )
        } else {
            format!(
                "container `{}` (prefix `{}/`) of storage account `{}`",
                self.container_name, self.prefix, self.account
            )
        }
    }

    fn blob_name(&self, seq: u64) -> String {
        if self.prefix.is_empty() {
            format!("{seq:020}.seg")
        } else {
            format!("{}/{seq:020}.seg", self.prefix)
        }
    }

    fn list_prefix(&self) -> Option<String> {
        (!self.prefix.is_empty()).then(|| format!("{}/", self.prefix))
    }

    /// The container client, with a fresh SAS when the current one is about to expire.
    fn client(&self) -> Result<Arc<Client>> {
        let current = self.client.read().expect("client lock").clone();
        if current.renew_at.is_none_or(|at| Instant::now() < at) {
            return Ok(current);
        }
        let fresh = Arc::new(make_client(&self.container_url, &self.account, &self.auth)?);
        *self.client.write().expect("client lock") = fresh.clone();
        Ok(fresh)
    }

    async fn timed<T>(
        &self,
        op: &str,
        fut: impl Future<Output = azure_core::Result<T>>,
    ) -> Result<T, azure_core::Error> {
        match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
            Ok(r) => r,
            Err(_) => Err(azure_core::Error::with_message(
                ErrorKind::Io,
                format!("{op} timed out after {}s", REQUEST_TIMEOUT.as_secs()),
            )),
        }
    }

    /// Create the container unless it exists.
    pub async fn prepare(&self) -> Result<()> {
        let client = self.client()?;
        let exists = self
            .timed("checking the container", client.container.exists())
            .await
            .map_err(|e| self.fault("open", None, e))?;
        if exists {
            return Ok(());
        }
        match self
            .timed("creating the container", client.container.create(None))
            .await
        {
            Ok(_) => {
                tracing::info!(container = %self.describe(), "created the buffer container");
                Ok(())
            }
            Err(e) if error_code(&e).as_deref() == Some("ContainerAlreadyExists") => Ok(()),
            Err(e) => Err(self.fault("create the container", None, e)),
        }
    }

    /// Upload a segment; returns once the service has committed it.
    pub async fn put(&self, seq: u64, bytes: &[u8]) -> Result<()> {
        let name = self.blob_name(seq);
        let client = self.client()?;
        let blob = client.container.blob_client(&name);
        let content = RequestContent::from(bytes.to_vec());
        self.timed("uploading a segment", blob.upload(content, None))
            .await
            .map_err(|e| self.fault("write", Some(&name), e))?;
        Ok(())
    }

    /// Download a segment.
    pub async fn get(&self, seq: u64) -> Result<Vec<u8>> {
        let name = self.blob_name(seq);
        let client = self.client()?;
        let blob = client.container.blob_client(&name);
        let body = self
            .timed("downloading a segment", async {
                blob.download(None).await?.body.collect().await
            })
            .await
            .map_err(|e| self.fault("read", Some(&name), e))?;
        Ok(body.to_vec())
    }

    /// Delete a segment (already gone is fine).
    pub async fn delete(&self, seq: u64) -> Result<()> {
        let name = self.blob_name(seq);
        let client = self.client()?;
        let blob = client.container.blob_client(&name);
        match self.timed("deleting a segment", blob.delete(None)).await {
            Ok(_) => Ok(()),
            Err(e) if e.http_status() == Some(StatusCode::NotFound) => {
                if error_code(&e).as_deref() == Some("ContainerNotFound") {
                    Err(self.fault("delete", Some(&name), e))
                } else {
                    Ok(())
                }
            }
            Err(e) => Err(self.fault("delete", Some(&name), e)),
        }
    }

    /// Sequence numbers of the segments under the prefix, over every page of the listing.
    pub async fn list(&self) -> Result<Vec<u64>> {
        let client = self.client()?;
        let options = BlobContainerClientListBlobsOptions {
            prefix: self.list_prefix(),
            maxresults: self.page_size,
            ..Default::default()
        };
        let mut pages = client
            .container
            .list_blobs(Some(options))
            .map_err(|e| self.fault("list the segments in", None, e))?
            .into_pages();
        let strip = self.list_prefix().unwrap_or_default();
        let mut out = Vec::new();
        loop {
            let page = self
                .timed("listing segments", pages.try_next())
                .await
                .map_err(|e| self.fault("list the segments in", None, e))?;
            let Some(page) = page else { break };
            let page = page
                .into_model()
                .map_err(|e| self.fault("list the segments in", None, e))?;
            for item in page.blob_items {
                let seq = item
                    .name
                    .as_deref()
                    .and_then(|n| n.strip_prefix(strip.as_str()))
                    .and_then(|n| n.strip_suffix(".seg"))
                    .filter(|n| !n.contains('/'))
                    .and_then(|n| n.parse::<u64>().ok());
                out.extend(seq);
            }
        }
        Ok(out)
    }

    fn identity(&self) -> String {
        match &self.auth {
            Auth::Token { identity, .. } => identity.clone(),
            Auth::AccountKey { .. } => "the account SAS".into(),
        }
    }

    /// Turn an SDK error into a [`StoreFault`] naming what failed and, when retrying
    /// cannot help, what to change.
    fn fault(&self, op: &str, blob: Option<&str>, e: azure_core::Error) -> anyhow::Error {
        let what = match blob {
            Some(b) => format!("{op} blob `{b}` in {}", self.describe()),
            None => format!("{op} {}", self.describe()),
        };
        let transient = |detail: String, retry_after: Option<Duration>| {
            anyhow::Error::new(StoreFault {
                transient: true,
                retry_after,
                message: format!("cannot {what}: {detail}"),
            })
        };
        let permanent = |message: String| {
            anyhow::Error::new(StoreFault {
                transient: false,
                retry_after: None,
                message,
            })
        };
        match e.kind() {
            ErrorKind::Connection | ErrorKind::Io => transient(
                format!("{} unreachable ({})", self.endpoint(), chain(&e)),
                None,
            ),
            ErrorKind::Credential => {
                if credential_fault_is_transient(&e) {
                    transient(
                        format!("cannot get a token for {}: {}", self.identity(), chain(&e)),
                        None,
                    )
                } else {
                    permanent(format!(
                        "cannot {what}: authentication of {} failed: {}",
                        self.identity(),
                        chain(&e)
                    ))
                }
            }
            ErrorKind::HttpResponse { status, .. } => {
                let status = *status;
                let retry_after = retry_after(&e);
                let code = error_code(&e).unwrap_or_default();
                let storage = StorageError::try_from(e).ok();
                let message = storage
                    .as_ref()
                    .and_then(|s| s.message.as_deref())
                    .map(|m| {
                        m.lines()
                            .next()
                            .unwrap_or(m)
                            .trim_end_matches('.')
                            .to_string()
                    })
                    .unwrap_or_else(|| status.to_string());
                let detail = storage
                    .as_ref()
                    .and_then(|s| s.authentication_error_detail.clone())
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default();
                let status_code = u16::from(status);
                if status_code == 408
                    || status_code == 429
                    || status_code >= 500
                    || code == "ContainerBeingDeleted"
                {
                    return transient(
                        format!("storage answered {status_code} {code}: {message}"),
                        retry_after,
                    );
                }
                let hint = self.permission_hint(status_code, &code);
                let hint = if hint.is_empty() {
                    hint
                } else {
                    format!(". {hint}")
                };
                permanent(format!(
                    "cannot {what}: storage answered {status_code} {code}: {message}{detail}{hint}"
                ))
            }
            _ => permanent(format!("cannot {what}: {}", chain(&e))),
        }
    }

    fn endpoint(&self) -> String {
        let mut u = self.container_url.clone();
        u.set_path("");
        u.to_string().trim_end_matches('/').to_string()
    }

    fn permission_hint(&self, status: u16, code: &str) -> String {
        let container = &self.container_name;
        let account = &self.account;
        match (status, code, &self.auth) {
            (404, "ContainerNotFound", _) => format!(
                "The container `{container}` does not exist (it was deleted while the agent ran?); \
                 recreate it or restart the agent to create it"
            ),
            (404, "BlobNotFound", _) => {
                "The segment disappeared from the buffer; something else deletes blobs under this prefix".into()
            }
            (404, _, _) | (400, "InvalidUri" | "InvalidResourceName", _) => format!(
                "Check that storage account `{account}` exists and has a container `{container}`"
            ),
            (401 | 403, "AuthenticationFailed" | "InvalidAuthenticationInfo" | "NoAuthenticationInformation", Auth::AccountKey { .. }) => format!(
                "The account SAS of `{account}` is not valid (wrong account key or expired)"
            ),
            (401 | 403, "AuthenticationFailed" | "InvalidAuthenticationInfo" | "NoAuthenticationInformation", Auth::Token { identity, .. }) => format!(
                "The token of {identity} was not accepted; check the identity belongs to the tenant of storage account `{account}`"
            ),
            (403, "AuthorizationFailure", Auth::AccountKey { .. }) => format!(
                "The account SAS of `{account}` was refused: its signature does not verify (wrong account key), \
                 it expired, or the account's network rules do not admit this agent"
            ),
            (403, _, Auth::AccountKey { .. }) => format!(
                "The account SAS lacks a permission; it needs read, write, delete, list, add and create (sp=rwdlac) on blob service `{account}`"
            ),
            (403, "AuthorizationFailure", Auth::Token { identity, .. }) => format!(
                "Grant {identity} the `Storage Blob Data Contributor` role on container `{container}` of storage account `{account}`, \
                 and check the account's network rules admit this agent"
            ),
            (401 | 403, _, Auth::Token { identity, .. }) => format!(
                "Grant {identity} the `Storage Blob Data Contributor` role on container `{container}` of storage account `{account}` \
                 (on the account itself if the container is to be created by the agent)"
            ),
            _ => String::new(),
        }
    }
}

fn make_client(container_url: &Url, account: &str, auth: &Auth) -> Result<Client> {
    let options = BlobContainerClientOptions {
        client_options: ClientOptions {
            // The buffer retries every transient fault itself, with its own backoff, warning
            // and unavailability gauge; retries hidden inside the SDK would delay all three.
            retry: RetryOptions::none(),
            ..Default::default()
        },
        ..Default::default()
    };
    match auth {
        Auth::Token { credential, .. } => {
            let container = BlobContainerClient::new(
                container_url.clone(),
                Some(credential.clone()),
                Some(options),
            )
            .with_context(|| format!("buffer container url {container_url}"))?;
            Ok(Client {
                container,
                renew_at: None,
            })
        }
        Auth::AccountKey { key, permissions } => {
            let expiry = chrono::Utc::now()
                + chrono::Duration::from_std(SAS_LIFETIME).expect("an hour fits");
            let mut sas = AccountSas::for_blobs(expiry);
            sas.permissions = permissions.clone();
            let mut url = container_url.clone();
            url.set_query(Some(&sas.to_query(account, key)));
            let container = BlobContainerClient::new(url, None, Some(options))
                .with_context(|| format!("buffer container url {container_url}"))?;
            Ok(Client {
                container,
                renew_at: Some(Instant::now() + SAS_LIFETIME - SAS_RENEW_BEFORE),
            })
        }
    }
}

/// The service's error code (`x-ms-error-code`), if any.
fn error_code(e: &azure_core::Error) -> Option<String> {
    match e.kind() {
        ErrorKind::HttpResponse { error_code, .. } => error_code.clone(),
        _ => None,
    }
}

/// How long the service asked us to wait, from `x-ms-retry-after-ms`, `retry-after-ms` or
/// `Retry-After` (seconds).
fn retry_after(e: &azure_core::Error) -> Option<Duration> {
    let ErrorKind::HttpResponse {
        raw_response: Some(raw),
        ..
    } = e.kind()
    else {
        return None;
    };
    let headers = raw.headers();
    for name in [
        azure_core::http::headers::X_MS_RETRY_AFTER_MS,
        azure_core::http::headers::RETRY_AFTER_MS,
    ] {
        if let Some(ms) = headers
            .get_optional_str(&name)
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            return Some(Duration::from_millis(ms));
        }
    }
    headers
        .get_optional_str(&azure_core::http::headers::RETRY_AFTER)
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// A token request that failed because the token service was unreachable or overloaded
/// (as opposed to refusing this identity) may succeed later.
fn credential_fault_is_transient(e: &azure_core::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(inner) = s.downcast_ref::<azure_core::Error>() {
            match inner.kind() {
                ErrorKind::Connection | ErrorKind::Io => return true,
                ErrorKind::HttpResponse { status, .. } => {
                    let code = u16::from(*status);
                    return code == 408 || code == 429 || code >= 500;
                }
                _ => {}
            }
        }
        if s.downcast_ref::<std::io::Error>().is_some() {
            return true;
        }
        source = s.source();
    }
    false
}

/// The error and its causes on one line, with URL queries removed: transport errors
/// quote the request URL, and an emulator URL carries a SAS signature.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    redact_queries(&out)
}

/// Replace the query of every URL in `text` with `?…`.
fn redact_queries(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("http") {
        let (before, url_on) = rest.split_at(start);
        out.push_str(before);
        let end = url_on
            .find(|c: char| c.is_whitespace() || matches!(c, ')' | '"' | '\'' | '>' | ','))
            .unwrap_or(url_on.len());
        let (url, after) = url_on.split_at(end);
        match url.find('?') {
            Some(q) => {
                out.push_str(&url[..q]);
                out.push_str("?…");
            }
            None => out.push_str(url),
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_account_container_prefix() {
        let l =
            BlobLocation::parse("https://acct.blob.core.windows.net/buffers/orders/eu").unwrap();
        assert_eq!(l.account, "acct");
        assert_eq!(l.container, "buffers");
        assert_eq!(l.prefix, "orders/eu");
        assert!(!l.emulator);
        assert_eq!(
            l.container_url.as_str(),
            "https://acct.blob.core.windows.net/buffers"
        );

        let l = BlobLocation::parse("http://127.0.0.1:10000/devstoreaccount1/buf/p").unwrap();
        assert_eq!(l.account, "devstoreaccount1");
        assert_eq!(l.container, "buf");
        assert_eq!(l.prefix, "p");
        assert!(l.emulator);
        assert_eq!(
            l.container_url.as_str(),
            "http://127.0.0.1:10000/devstoreaccount1/buf"
        );

        let l = BlobLocation::parse("https://acct.blob.core.windows.net/buf").unwrap();
        assert_eq!(l.prefix, "");

        for (bad, says) in [
            ("http://acct.blob.core.windows.net/buf/p", "must use https"),
            ("https://acct.blob.core.windows.net/", "names no container"),
            (
                "https://acct.blob.core.windows.net/Bad_Name/p",
                "not a valid container",
            ),
            ("https://acct.blob.core.windows.net/buf/p?sv=x", "query"),
        ] {
            let e = BlobLocation::parse(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn urls_in_errors_lose_their_query() {
        assert_eq!(
            redact_queries(
                "error sending request for url (http://127.0.0.1:1/a/b?sv=1&sig=SECRET): refused; see https://x/y"
            ),
            "error sending request for url (http://127.0.0.1:1/a/b?…): refused; see https://x/y"
        );
        assert_eq!(redact_queries("no urls"), "no urls");
    }

    #[test]
    fn blob_names_and_endpoint() {
        let s = BlobStore::with_account_key(
            "http://127.0.0.1:1/devstoreaccount1/buf/pipe",
            culvert_azure::sas::devstore_key(),
            "rwdlac",
        )
        .unwrap();
        assert_eq!(s.blob_name(7), "pipe/00000000000000000007.seg");
        assert_eq!(s.endpoint(), "http://127.0.0.1:1");
        let url = s.client().unwrap().container.url().clone();
        assert!(url.query().unwrap().contains("sig="), "{url}");
    }
}
