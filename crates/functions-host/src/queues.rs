//! Azure Storage Queue operations the runtime needs, over the official `azure_storage_queue` client.

use crate::app::MessageEncoding;
use crate::connection::StorageAccount;
use azure_core::http::{ClientOptions, RetryOptions, Transport, Url};
use azure_storage_queue::models::{
    QueueClientReceiveMessagesOptions, QueueClientSendMessageOptions,
    QueueMessage as SdkQueueMessage,
};
use azure_storage_queue::{QueueClient, QueueClientOptions};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Utc};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A failed queue operation, classified for retry and logging decisions.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The service could not be reached (connection refused, reset, timed out).
    #[error("storage service at {endpoint} unreachable: {message}")]
    Unreachable {
        /// Queue endpoint.
        endpoint: String,
        /// Transport error text.
        message: String,
    },
    /// The queue does not exist.
    #[error("queue `{queue}` does not exist")]
    QueueNotFound {
        /// Queue name.
        queue: String,
    },
    /// The message is gone or the pop receipt is stale.
    #[error("message not found in queue `{queue}` (deleted, or its pop receipt is stale)")]
    MessageNotFound {
        /// Queue name.
        queue: String,
    },
    /// Any other answer from the service.
    #[error("storage service answered {status} ({code}) for queue `{queue}`")]
    Service {
        /// Queue name.
        queue: String,
        /// HTTP status.
        status: u16,
        /// Storage error code.
        code: String,
    },
    /// A client-side problem (bad URL, bad message text).
    #[error("queue `{queue}`: {message}")]
    Client {
        /// Queue name.
        queue: String,
        /// What went wrong.
        message: String,
    },
}

impl QueueError {
    /// True when the service itself could not be reached.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, QueueError::Unreachable { .. })
    }
}

/// A received message; `text` is exactly what the queue holds (still base64 when the app encodes so).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// `MessageId`.
    pub id: String,
    /// `PopReceipt`, needed to delete or update.
    pub pop_receipt: String,
    /// `DequeueCount`, including this receive.
    pub dequeue_count: i64,
    /// `MessageText` as stored.
    pub text: String,
    /// `InsertionTime`, RFC 3339.
    pub insertion_time: Option<String>,
    /// `ExpirationTime`, RFC 3339.
    pub expiration_time: Option<String>,
    /// `TimeNextVisible`, RFC 3339.
    pub next_visible_time: Option<String>,
}

/// Queue operations on one storage account, shared by every binding that uses its connection.
pub struct QueueService {
    account: StorageAccount,
    transport: Transport,
    sas: Mutex<(String, DateTime<Utc>)>,
    created: Mutex<HashSet<String>>,
    reachable: AtomicBool,
}

/// How long each derived account SAS is valid; one is re-signed well before it runs out.
const SAS_LIFETIME: chrono::Duration = chrono::Duration::hours(24);
const SAS_RENEW_BEFORE: chrono::Duration = chrono::Duration::hours(1);

impl QueueService {
    /// A service for `account`; no request is made until an operation runs.
    pub fn new(account: StorageAccount) -> Arc<Self> {
        // One HTTP client for every queue client keeps connections pooled; the SDK's own retries are off because
        // the pollers retry on their own schedule and must notice an outage quickly.
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .build()
            .expect("reqwest client without TLS builds");
        Arc::new(Self {
            account,
            transport: Transport::new(Arc::new(http)),
            sas: Mutex::new((String::new(), DateTime::<Utc>::MIN_UTC)),
            created: Mutex::new(HashSet::new()),
            reachable: AtomicBool::new(true),
        })
    }

    /// The queue service URL.
    pub fn endpoint(&self) -> &Url {
        &self.account.queue_endpoint
    }

    fn sas_query(&self) -> String {
        let mut guard = self.sas.lock().expect("sas lock");
        let now = Utc::now();
        if guard.0.is_empty() || guard.1 - now < SAS_RENEW_BEFORE {
            let expiry = now + SAS_LIFETIME;
            *guard = (self.account.sas_query(expiry), expiry);
        }
        guard.0.clone()
    }

    /// The URL of `queue`, authorized by the account SAS.
    pub fn queue_url(&self, queue: &str) -> Result<Url, QueueError> {
        let base = self.account.queue_endpoint.as_str().trim_end_matches('/');
        Url::parse(&format!("{base}/{queue}?{}", self.sas_query())).map_err(|e| {
            QueueError::Client {
                queue: queue.to_owned(),
                message: format!("bad queue URL: {e}"),
            }
        })
    }

    fn client(&self, queue: &str) -> Result<QueueClient, QueueError> {
        let options = QueueClientOptions {
            client_options: ClientOptions {
                transport: Some(self.transport.clone()),
                retry: RetryOptions::none(),
                ..Default::default()
            },
            ..Default::default()
        };
        QueueClient::new(self.queue_url(queue)?, None, Some(options)).map_err(|e| {
            QueueError::Client {
                queue: queue.to_owned(),
                message: e.to_string(),
            }
        })
    }

    fn classify(&self, queue: &str, err: azure_core::Error) -> QueueError {
        use azure_core::error::ErrorKind;
        let e = match err.kind() {
            ErrorKind::Connection | ErrorKind::Io => QueueError::Unreachable {
                endpoint: self.account.queue_endpoint.to_string(),
                message: error_chain(&err),
            },
            ErrorKind::HttpResponse {
                status, error_code, ..
            } => {
                let code = error_code.clone().unwrap_or_default();
                match (u16::from(*status), code.as_str()) {
                    (404, "QueueNotFound") => QueueError::QueueNotFound {
                        queue: queue.to_owned(),
                    },
                    (404, "MessageNotFound") => QueueError::MessageNotFound {
                        queue: queue.to_owned(),
                    },
                    (status, _) => QueueError::Service {
                        queue: queue.to_owned(),
                        status,
                        code,
                    },
                }
            }
            _ => QueueError::Client {
                queue: queue.to_owned(),
                message: error_chain(&err),
            },
        };
        self.observe(Err(&e));
        e
    }

    /// Logs the start and end of an outage once each, however many pollers see it.
    fn observe(&self, result: Result<(), &QueueError>) {
        match result {
            Ok(()) => {
                if !self.reachable.swap(true, Ordering::SeqCst) {
                    tracing::info!(endpoint = %self.account.queue_endpoint, "storage service reachable again");
                }
            }
            Err(e) if e.is_unreachable() => {
                if self.reachable.swap(false, Ordering::SeqCst) {
                    tracing::warn!("{e}; retrying until it is back");
                }
            }
            // Any answer from the service means it is reachable.
            Err(_) => {
                if !self.reachable.swap(true, Ordering::SeqCst) {
                    tracing::info!(endpoint = %self.account.queue_endpoint, "storage service reachable again");
                }
            }
        }
    }

    /// Creates `queue` if it does not exist.
    pub async fn create_queue(&self, queue: &str) -> Result<(), QueueError> {
        match self.client(queue)?.create(None).await {
            Ok(_) => {}
            // 409 QueueAlreadyExists only happens when metadata differs; the queue is there either way.
            Err(e) if e.http_status().map(u16::from) == Some(409) => {}
            Err(e) => return Err(self.classify(queue, e)),
        }
        self.observe(Ok(()));
        self.created
            .lock()
            .expect("created lock")
            .insert(queue.to_owned());
        Ok(())
    }

    async fn ensure_queue(&self, queue: &str) -> Result<(), QueueError> {
        if self.created.lock().expect("created lock").contains(queue) {
            return Ok(());
        }
        self.create_queue(queue).await
    }

    /// Adds a message whose text is already in its stored form; creates the queue first if needed.
    pub async fn send_raw(&self, queue: &str, text: &str) -> Result<(), QueueError> {
        self.ensure_queue(queue).await?;
        match self.send_once(queue, text).await {
            Err(QueueError::QueueNotFound { .. }) => {
                // Deleted behind our back (or storage was wiped): create again once.
                self.created.lock().expect("created lock").remove(queue);
                self.create_queue(queue).await?;
                self.send_once(queue, text).await
            }
            other => other,
        }
    }

    async fn send_once(&self, queue: &str, text: &str) -> Result<(), QueueError> {
        let body = SdkQueueMessage {
            message_text: Some(text.to_owned()),
        };
        let content = body
            .try_into()
            .map_err(|e: azure_core::Error| QueueError::Client {
                queue: queue.to_owned(),
                message: e.to_string(),
            })?;
        let options = QueueClientSendMessageOptions::default();
        match self
            .client(queue)?
            .send_message(content, Some(options))
            .await
        {
            Ok(_) => {
                self.observe(Ok(()));
                Ok(())
            }
            Err(e) => Err(self.classify(queue, e)),
        }
    }

    /// Adds a message, encoding it as the app's `messageEncoding` says.
    pub async fn send(
        &self,
        queue: &str,
        text: &str,
        encoding: MessageEncoding,
    ) -> Result<(), QueueError> {
        self.send_raw(queue, &encode_message(text, encoding)).await
    }

    /// Receives up to `max` messages (1-32), hiding them for `visibility`.
    pub async fn receive(
        &self,
        queue: &str,
        max: u32,
        visibility: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        let options = QueueClientReceiveMessagesOptions {
            number_of_messages: Some(max.clamp(1, 32) as i32),
            visibility_timeout: Some(visibility_seconds(visibility).max(1)),
            ..Default::default()
        };
        let response = match self.client(queue)?.receive_messages(Some(options)).await {
            Ok(r) => r,
            Err(e) => return Err(self.classify(queue, e)),
        };
        self.observe(Ok(()));
        let model = response.into_model().map_err(|e| QueueError::Client {
            queue: queue.to_owned(),
            message: format!("unreadable receive response: {e}"),
        })?;
        Ok(model
            .items
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| {
                Some(ReceivedMessage {
                    id: m.message_id?,
                    pop_receipt: m.pop_receipt?,
                    dequeue_count: m.dequeue_count.unwrap_or(1),
                    text: m.message_text.unwrap_or_default(),
                    insertion_time: m.insertion_time.as_ref().map(azure_core::time::to_rfc3339),
                    expiration_time: m.expiration_time.as_ref().map(azure_core::time::to_rfc3339),
                    next_visible_time: m
                        .time_next_visible
                        .as_ref()
                        .map(azure_core::time::to_rfc3339),
                })
            })
            .collect())
    }

    /// Deletes a received message.
    pub async fn delete(&self, queue: &str, id: &str, pop_receipt: &str) -> Result<(), QueueError> {
        match self
            .client(queue)?
            .delete_message(id, pop_receipt, None)
            .await
        {
            Ok(_) => {
                self.observe(Ok(()));
                Ok(())
            }
            Err(e) => Err(self.classify(queue, e)),
        }
    }

    /// Makes a received message visible again after `visibility`.
    pub async fn release(
        &self,
        queue: &str,
        id: &str,
        pop_receipt: &str,
        visibility: Duration,
    ) -> Result<(), QueueError> {
        match self
            .client(queue)?
            .update_message(id, pop_receipt, visibility_seconds(visibility), None)
            .await
        {
            Ok(_) => {
                self.observe(Ok(()));
                Ok(())
            }
            Err(e) => Err(self.classify(queue, e)),
        }
    }
}

fn visibility_seconds(d: Duration) -> i32 {
    // The service caps visibility at 7 days.
    d.as_secs().min(7 * 86_400) as i32
}

fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// Message text as stored for `encoding`.
pub fn encode_message(text: &str, encoding: MessageEncoding) -> String {
    match encoding {
        MessageEncoding::Base64 => B64.encode(text.as_bytes()),
        MessageEncoding::None => text.to_owned(),
    }
}

/// Message text as the function sees it; `None` when base64 is expected but the text is not base64.
pub fn decode_message(stored: &str, encoding: MessageEncoding) -> Option<String> {
    match encoding {
        MessageEncoding::Base64 => B64
            .decode(stored.trim())
            .ok()
            .map(|b| String::from_utf8_lossy(&b).into_owned()),
        MessageEncoding::None => Some(stored.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_encoding_round_trip() {
        let text = r#"{"job":"abc","n":1}"#;
        let stored = encode_message(text, MessageEncoding::Base64);
        assert_eq!(stored, "eyJqb2IiOiJhYmMiLCJuIjoxfQ==");
        assert_eq!(
            decode_message(&stored, MessageEncoding::Base64).as_deref(),
            Some(text)
        );
        assert_eq!(decode_message("not base64!", MessageEncoding::Base64), None);
        assert_eq!(encode_message(text, MessageEncoding::None), text);
    }

    #[test]
    fn queue_url_carries_the_sas() {
        let account = StorageAccount::from_connection_string(&format!(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={};QueueEndpoint=http://127.0.0.1:1/devstoreaccount1/",
            crate::connection::DEVSTORE_KEY
        ))
        .unwrap();
        let svc = QueueService::new(account);
        let url = svc.queue_url("work").unwrap();
        assert_eq!(url.path(), "/devstoreaccount1/work");
        let q = url.query().unwrap();
        assert!(
            q.starts_with("sv=2022-11-02&ss=q&srt=sco&sp=rwdlacup&se=") && q.contains("&sig="),
            "{q}"
        );
    }
}
