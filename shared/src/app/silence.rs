//! Silence is an alarm (issue 21): the retention purger's daily run asks every registered
//! merchant when its platform last delivered. One whose deliveries stopped for longer than its
//! threshold (`alerts.silence_hours`, default 24) is counted in `MerchantSilent` (dimension
//! Service only; the alarm watches it) and named in a warning: its merchant id, never a phone.

use crate::domain::ids::MerchantId;
use crate::domain::silence::{hours_between, silent_since, threshold_hours};
use crate::metrics;
use crate::ports::{PortError, WatchedMerchants};
use chrono::{DateTime, Utc};
use tracing::{info, warn};

/// What one check found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SilenceReport {
    /// Merchants read.
    pub checked: usize,
    /// Merchants silent longer than their threshold.
    pub silent: Vec<MerchantId>,
}

/// Checks every registered merchant as of `now`, logs each silent one, and emits
/// `MerchantSilent` with their number (0 included, so the metric shows the check ran).
pub async fn check<S: WatchedMerchants>(store: &S, now: DateTime<Utc>) -> Result<SilenceReport, PortError> {
    let watched = store.watched_merchants().await?;
    let mut report = SilenceReport { checked: watched.len(), silent: Vec::new() };
    for w in &watched {
        if let Some(since) = silent_since(w, now) {
            warn!(
                merchant = %w.merchant.id,
                platform = ?w.merchant.platform,
                silent_hours = hours_between(since, now),
                threshold_hours = threshold_hours(&w.merchant),
                last_delivery_day = w.last_delivery_day.map(|d| d.to_string()),
                "merchant silent: no platform delivery within its threshold (webhook disabled or app uninstalled?)"
            );
            report.silent.push(w.merchant.id.clone());
        }
    }
    metrics::count(metrics::MERCHANT_SILENT, report.silent.len() as u64);
    info!(checked = report.checked, silent = report.silent.len(), "silence check done");
    Ok(report)
}
