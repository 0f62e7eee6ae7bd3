//! Queue trigger listener: poll, invoke, then delete, retry later, or move to `<queue>-poison`.

use crate::app::{FunctionDef, QueuesConfig, Trigger};
use crate::dispatch::Dispatcher;
use crate::handler_client::InvokeError;
use crate::invocation::{QueueMessageData, queue_invocation};
use crate::queues::{QueueError, QueueService, ReceivedMessage, decode_message};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

/// Shortest wait between polls, where the backoff starts.
pub const MIN_POLLING_INTERVAL: Duration = Duration::from_millis(100);

/// Lock taken on received messages: the function timeout plus a margin, or 10 minutes when unbounded.
///
/// The host renews its lock while a function runs; a lock that outlasts the function serves the same purpose here.
pub fn message_lock(function_timeout: Option<Duration>) -> Duration {
    match function_timeout {
        Some(t) => (t + Duration::from_secs(60)).min(Duration::from_secs(7 * 86_400)),
        None => Duration::from_secs(600),
    }
}

/// The next backoff delay after an empty or failed poll.
pub fn next_delay(current: Duration, max: Duration) -> Duration {
    (current * 2).clamp(MIN_POLLING_INTERVAL, max.max(MIN_POLLING_INTERVAL))
}

/// Why a message failed, for the log.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Invoke(#[from] InvokeError),
    #[error("writing outputs failed: {0}")]
    Outputs(#[from] QueueError),
    #[error("message is not valid base64 (host.json messageEncoding is \"base64\")")]
    Encoding,
}

/// Polls the function's queue until `shutdown`; message work is spawned on `tracker` so shutdown can wait for it.
pub async fn listen(
    dispatcher: Arc<Dispatcher>,
    index: usize,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let function = &dispatcher.app.functions[index];
    let Trigger::Queue(trigger) = &function.trigger else {
        return;
    };
    let Some(service) = dispatcher.storage.get(&trigger.connection).cloned() else {
        return;
    };
    let config = dispatcher.app.host.queues.clone();
    let lock = message_lock(dispatcher.app.host.function_timeout);
    let active = Arc::new(AtomicUsize::new(0));
    let idle = Arc::new(Notify::new());
    let mut delay = MIN_POLLING_INTERVAL;
    tracing::info!(function = %function.name, queue = %trigger.queue_name, "listening on queue");
    loop {
        // A new batch is fetched only once the running ones drop to newBatchThreshold, as WebJobs does.
        while active.load(Ordering::SeqCst) > config.new_batch_threshold as usize {
            tokio::select! {
                _ = idle.notified() => {}
                _ = shutdown.cancelled() => return,
            }
        }
        if shutdown.is_cancelled() {
            return;
        }
        match service
            .receive(&trigger.queue_name, config.batch_size, lock)
            .await
        {
            Ok(messages) if !messages.is_empty() => {
                delay = MIN_POLLING_INTERVAL;
                for message in messages {
                    active.fetch_add(1, Ordering::SeqCst);
                    let (dispatcher, service, active, idle, config) = (
                        dispatcher.clone(),
                        service.clone(),
                        active.clone(),
                        idle.clone(),
                        config.clone(),
                    );
                    tracker.spawn(async move {
                        let function = &dispatcher.app.functions[index];
                        process(&dispatcher, function, &service, &config, message).await;
                        active.fetch_sub(1, Ordering::SeqCst);
                        idle.notify_one();
                    });
                }
                continue;
            }
            Ok(_) => delay = next_delay(delay, config.max_polling_interval),
            Err(QueueError::QueueNotFound { .. }) => {
                // Like the host, an absent queue is an empty one; creating it lets producers start using it.
                if let Err(e) = service.create_queue(&trigger.queue_name).await
                    && !e.is_unreachable()
                {
                    tracing::warn!(function = %function.name, "cannot create queue: {e}");
                }
                delay = next_delay(delay, config.max_polling_interval);
            }
            // Logged once per outage by the service.
            Err(e) if e.is_unreachable() => delay = next_delay(delay, config.max_polling_interval),
            Err(e) => {
                tracing::warn!(function = %function.name, "polling failed: {e}");
                delay = next_delay(delay, config.max_polling_interval);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

async fn process(
    dispatcher: &Dispatcher,
    function: &FunctionDef,
    service: &QueueService,
    config: &QueuesConfig,
    message: ReceivedMessage,
) {
    let Trigger::Queue(trigger) = &function.trigger else {
        return;
    };
    let queue = trigger.queue_name.as_str();
    let max = i64::from(config.max_dequeue_count);
    if message.dequeue_count > max {
        poison(function, service, queue, &message, max).await;
        return;
    }
    let id = Uuid::new_v4();
    let outcome = run(
        dispatcher,
        function,
        trigger.name.as_str(),
        queue,
        id,
        &message,
    )
    .await;
    match outcome {
        Ok(()) => {
            if let Err(e) = service
                .delete(queue, &message.id, &message.pop_receipt)
                .await
            {
                tracing::warn!(function = %function.name, invocation_id = %id, "cannot delete processed message {}: {e}", message.id);
            }
        }
        Err(failure) => {
            if !matches!(failure, Failure::Invoke(_)) {
                tracing::warn!(function = %function.name, invocation_id = %id, "message {} failed: {failure}", message.id);
            }
            if message.dequeue_count >= max {
                poison(function, service, queue, &message, max).await;
            } else if let Err(e) = service
                .release(
                    queue,
                    &message.id,
                    &message.pop_receipt,
                    config.visibility_timeout,
                )
                .await
            {
                // The lock runs out on its own; the message comes back then.
                tracing::warn!(function = %function.name, invocation_id = %id, "cannot release message {}: {e}", message.id);
            }
        }
    }
}

async fn run(
    dispatcher: &Dispatcher,
    function: &FunctionDef,
    trigger: &str,
    queue: &str,
    id: Uuid,
    message: &ReceivedMessage,
) -> Result<(), Failure> {
    let text = decode_message(&message.text, dispatcher.encoding()).ok_or(Failure::Encoding)?;
    let data = QueueMessageData {
        text,
        dequeue_count: message.dequeue_count,
        id: message.id.clone(),
        pop_receipt: message.pop_receipt.clone(),
        insertion_time: message.insertion_time.clone(),
        expiration_time: message.expiration_time.clone(),
        next_visible_time: message.next_visible_time.clone(),
    };
    let payload = queue_invocation(
        &function.name,
        trigger,
        &data,
        chrono::Utc::now(),
        Uuid::new_v4(),
    );
    let reason = format!("New queue message detected on '{queue}'.");
    let result = dispatcher.invoke(function, &reason, id, &payload).await?;
    dispatcher
        .write_queue_outputs(function, id, &result)
        .await?;
    Ok(())
}

async fn poison(
    function: &FunctionDef,
    service: &QueueService,
    queue: &str,
    message: &ReceivedMessage,
    max: i64,
) {
    let poison_queue = format!("{queue}-poison");
    tracing::warn!(function = %function.name,
        "Message has reached MaxDequeueCount of {max}. Moving message {} to queue '{poison_queue}'.", message.id);
    // The stored text is copied unchanged, so it keeps the app's encoding.
    match service.send_raw(&poison_queue, &message.text).await {
        Ok(()) => {
            if let Err(e) = service
                .delete(queue, &message.id, &message.pop_receipt)
                .await
            {
                tracing::warn!(function = %function.name, "cannot delete poisoned message {}: {e}", message.id);
            }
        }
        Err(e) => {
            tracing::warn!(function = %function.name, "cannot move message {} to '{poison_queue}': {e}", message.id)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let max = Duration::from_secs(1);
        let mut d = MIN_POLLING_INTERVAL;
        let mut seen = vec![];
        for _ in 0..6 {
            d = next_delay(d, max);
            seen.push(d.as_millis());
        }
        assert_eq!(seen, vec![200, 400, 800, 1000, 1000, 1000]);
        assert_eq!(
            next_delay(MIN_POLLING_INTERVAL, Duration::from_millis(50)),
            MIN_POLLING_INTERVAL
        );
    }

    #[test]
    fn lock_covers_the_function_timeout() {
        assert_eq!(
            message_lock(Some(Duration::from_secs(300))),
            Duration::from_secs(360)
        );
        assert_eq!(message_lock(None), Duration::from_secs(600));
    }
}
