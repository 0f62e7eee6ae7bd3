//! One invocation on the payload path: call the handler, log its `Logs`, write its queue outputs.

use crate::app::{App, FunctionDef, MessageEncoding, OutputBinding};
use crate::connection::{ConnectionStringError, StorageAccount};
use crate::handler_client::{HandlerClient, InvokeError};
use crate::invocation::{InvocationRequest, InvocationResult, queue_messages};
use crate::queues::{QueueError, QueueService};
use crate::settings::AppSettings;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use uuid::Uuid;

/// A storage connection that could not be set up from the app settings.
#[derive(Debug, thiserror::Error)]
pub enum StorageConfigError {
    /// The setting named by `connection` is absent.
    #[error(
        "function `{function}`: connection setting `{connection}` is not set (nor `AzureWebJobs{connection}`)"
    )]
    Missing {
        /// Function name.
        function: String,
        /// Connection setting name.
        connection: String,
    },
    /// The setting is not a usable connection string.
    #[error("function `{function}`: app setting `{connection}`: {source}")]
    Invalid {
        /// Function name.
        function: String,
        /// Connection setting name.
        connection: String,
        /// Parse error.
        #[source]
        source: ConnectionStringError,
    },
}

/// Queue services by connection setting name.
#[derive(Default, Clone)]
pub struct Storage {
    by_connection: HashMap<String, Arc<QueueService>>,
}

impl Storage {
    /// Resolves every connection the app's bindings use.
    pub fn from_app(app: &App, settings: &AppSettings) -> Result<Self, StorageConfigError> {
        let mut by_connection = HashMap::new();
        for f in &app.functions {
            for connection in f.connections() {
                if by_connection.contains_key(connection) {
                    continue;
                }
                let text = settings.connection_string(connection).ok_or_else(|| {
                    StorageConfigError::Missing {
                        function: f.name.clone(),
                        connection: connection.to_owned(),
                    }
                })?;
                let account = StorageAccount::from_connection_string(text).map_err(|source| {
                    StorageConfigError::Invalid {
                        function: f.name.clone(),
                        connection: connection.to_owned(),
                        source,
                    }
                })?;
                by_connection.insert(connection.to_owned(), QueueService::new(account));
            }
        }
        Ok(Self { by_connection })
    }

    /// The queue service for a connection setting name.
    pub fn get(&self, connection: &str) -> Option<&Arc<QueueService>> {
        self.by_connection.get(connection)
    }
}

/// Everything an invocation needs, shared by the HTTP front, queue listeners and timers.
pub struct Dispatcher {
    /// The app.
    pub app: Arc<App>,
    /// Client for the handler.
    pub handler: HandlerClient,
    /// Queue services.
    pub storage: Storage,
}

impl Dispatcher {
    /// Queue message encoding from host.json.
    pub fn encoding(&self) -> MessageEncoding {
        self.app.host.queues.message_encoding
    }

    /// POSTs `payload` to the handler for `function`, logging start, end and the handler's `Logs`.
    pub async fn invoke(
        &self,
        function: &FunctionDef,
        reason: &str,
        id: Uuid,
        payload: &InvocationRequest,
    ) -> Result<InvocationResult, InvokeError> {
        tracing::info!(function = %function.name, invocation_id = %id, "Executing 'Functions.{}' (Reason='{reason}', Id={id})", function.name);
        let started = Instant::now();
        let result = self.handler.invoke(&function.name, id, payload).await;
        let ms = started.elapsed().as_millis();
        match &result {
            Ok(r) => {
                for line in &r.logs {
                    tracing::info!(function = %function.name, invocation_id = %id, "{line}");
                }
                tracing::info!(function = %function.name, invocation_id = %id, "Executed 'Functions.{}' (Succeeded, Id={id}, Duration={ms}ms)", function.name);
            }
            Err(e) => {
                tracing::warn!(function = %function.name, invocation_id = %id, "Executed 'Functions.{}' (Failed, Id={id}, Duration={ms}ms): {e}", function.name);
            }
        }
        result
    }

    /// Sends each `queue` output value of `result` to its queue.
    pub async fn write_queue_outputs(
        &self,
        function: &FunctionDef,
        id: Uuid,
        result: &InvocationResult,
    ) -> Result<(), QueueError> {
        for output in &function.outputs {
            match output {
                OutputBinding::Queue {
                    name,
                    queue_name,
                    connection,
                } => {
                    let Some(value) = result.output(name) else {
                        continue;
                    };
                    let Some(service) = self.storage.get(connection) else {
                        continue;
                    };
                    for message in queue_messages(value) {
                        service.send(queue_name, &message, self.encoding()).await?;
                        tracing::debug!(function = %function.name, invocation_id = %id, queue = %queue_name, "queued output message");
                    }
                }
                OutputBinding::Unsupported { name, binding_type } => {
                    if result.output(name).is_some() {
                        tracing::warn!(function = %function.name, invocation_id = %id,
                            "output `{name}` of type `{binding_type}` is not supported by the local runtime; value dropped");
                    }
                }
                OutputBinding::Http { .. } => {}
            }
        }
        Ok(())
    }
}
