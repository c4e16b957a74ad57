//! retention-purger: a daily EventBridge schedule runs the retention purge
//! (`callfy_shared::app::retention`). Its clock is the event: "now" is the Scheduled Event's
//! `time`, so a delayed or replayed run purges as of its own schedule. `main.rs` only wires it.

use callfy_shared::app::retention::{PurgeError, Purger, RunOptions};
use callfy_shared::domain::retention::PurgeReport;
use callfy_shared::metrics;
use chrono::{DateTime, Utc};
use std::time::Instant;
use thiserror::Error;

pub use callfy_shared::startup::PurgerApp;

#[derive(Debug, Error)]
pub enum PurgerError {
    #[error("the event has no RFC 3339 `time`: {0}")]
    BadEvent(String),
    #[error(transparent)]
    Purge(#[from] PurgeError),
}

/// The Scheduled Event's `time`: the instant this run purges as of.
pub fn event_time(event: &serde_json::Value) -> Result<DateTime<Utc>, PurgerError> {
    let time = event.get("time").and_then(|t| t.as_str()).ok_or_else(|| PurgerError::BadEvent("missing".into()))?;
    DateTime::parse_from_rfc3339(time).map(|t| t.with_timezone(&Utc)).map_err(|e| PurgerError::BadEvent(e.to_string()))
}

/// One scheduled run, stopping cleanly before `deadline` (the next run continues).
pub async fn handle(
    app: &PurgerApp,
    event: &serde_json::Value,
    deadline: Option<Instant>,
) -> Result<PurgeReport, PurgerError> {
    let as_of = event_time(event)?;
    // Silence is an alarm: the merchants whose platforms stopped delivering (a cheap read of the
    // merchant registry, before the purge can use up the run). A failure here is logged and
    // does not stop the purge; the next run checks again.
    if let Err(e) = callfy_shared::app::silence::check(&app.store, as_of).await {
        tracing::error!(error = %callfy_shared::telemetry::redact(&callfy_shared::ports::chain(&e)), "silence check failed");
    }
    let purger = Purger { store: &app.store, recordings: &app.recordings, queue: &app.queue };
    let opts = RunOptions {
        as_of,
        dry_run: false,
        deadline,
        started_at: Utc::now(),
        closure_grace_days: app.closure_grace_days,
        erasure_page: callfy_shared::app::retention::ERASURE_PAGE,
    };
    let report = purger.run(opts).await?;
    let mut by_kind = std::collections::BTreeMap::<&str, u64>::new();
    for kinds in report.deleted.values() {
        for (kind, n) in kinds {
            *by_kind.entry(kind.as_str()).or_default() += n;
        }
    }
    for (kind, n) in by_kind {
        metrics::count_by(metrics::PURGED_ITEMS, "Kind", kind, n);
    }
    // The "did not run for 26 hours" alarm watches this; a run stopped at its deadline counts
    // (the next one continues), a failed one does not.
    metrics::count(metrics::PURGE_RUNS, 1);
    Ok(report)
}

/// When a run stops taking pages: the invocation's deadline less the time its last page, the
/// audit record and the answer may take (`retention::run_deadline`).
pub fn deadline(invocation_deadline: std::time::SystemTime) -> Instant {
    let left = invocation_deadline.duration_since(std::time::SystemTime::now()).unwrap_or_default();
    callfy_shared::app::retention::run_deadline(left)
}
