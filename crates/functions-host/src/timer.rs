//! Timer triggers: fire on the NCRONTAB schedule (UTC), one run at a time per function.

use crate::app::Trigger;
use crate::dispatch::Dispatcher;
use crate::invocation::{TimerStatus, timer_invocation};
use chrono::{DateTime, Utc};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Runs the timer of function `index` until `shutdown`; a run in progress is finished first.
pub async fn run(dispatcher: Arc<Dispatcher>, index: usize, shutdown: CancellationToken) {
    let function = &dispatcher.app.functions[index];
    let Trigger::Timer(timer) = &function.trigger else {
        return;
    };
    let mut last = Utc::now();
    tracing::info!(function = %function.name, schedule = %timer.schedule, "timer scheduled");
    if timer.run_on_startup {
        fire(&dispatcher, index, "Timer fired at startup", last).await;
    }
    loop {
        let Some(due) = timer.schedule.next_after(Utc::now()) else {
            tracing::warn!(function = %function.name, schedule = %timer.schedule, "schedule never fires again");
            return;
        };
        // Sleep in steps so a wall-clock change cannot make the timer fire early.
        loop {
            let wait = (due - Utc::now()).to_std().unwrap_or_default();
            if wait.is_zero() {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.cancelled() => return,
            }
        }
        if shutdown.is_cancelled() {
            return;
        }
        // Awaiting here is what keeps runs of one timer from overlapping; occurrences missed meanwhile are skipped.
        fire(&dispatcher, index, "Timer fired", last).await;
        last = due;
    }
}

async fn fire(dispatcher: &Dispatcher, index: usize, reason: &str, last: DateTime<Utc>) {
    let function = &dispatcher.app.functions[index];
    let Trigger::Timer(timer) = &function.trigger else {
        return;
    };
    let now = Utc::now();
    let next = timer.schedule.next_after(now).unwrap_or(now);
    let status = TimerStatus {
        last,
        next,
        last_updated: now,
    };
    let payload = timer_invocation(
        &function.name,
        &timer.name,
        &status,
        false,
        now,
        Uuid::new_v4(),
    );
    let id = Uuid::new_v4();
    let reason = format!(
        "{reason} at {}",
        now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    );
    if let Ok(result) = dispatcher.invoke(function, &reason, id, &payload).await
        && let Err(e) = dispatcher.write_queue_outputs(function, id, &result).await
    {
        tracing::warn!(function = %function.name, invocation_id = %id, "writing outputs failed: {e}");
    }
}
