//! Recording consent, and what an opt-out sets off: written once, for every caller (the
//! consent API, inbound keywords, delivery reports, platform webhooks and the worker).

use crate::adapters::dynamo::StoreError;
use crate::domain::consent::{ConsentAction, ConsentEvent, ConsentState};
use crate::domain::merchant::Merchant;
use crate::domain::phone::Phone;
use crate::ports::ConsentLedger;
use chrono::{DateTime, Duration, Utc};
use tracing::info;

/// What recording one event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// The new state, or `None` when the ledger already said this (or refused it).
    pub state: Option<ConsentState>,
    /// Queued steps an opt-out cancelled.
    pub cancelled: usize,
}

/// When a consent entry recorded now is purged (merchant's `retention_days.consent_records`).
pub fn purge_at(merchant: &Merchant, now: DateTime<Utc>) -> DateTime<Utc> {
    now + Duration::days(i64::from(merchant.retention_days.consent_records))
}

/// Appends `event` if the ledger accepts it. An opt-out then cancels every step not yet
/// claimed; a claim in flight fails on the consent sequence it was decided from.
pub async fn record<L: ConsentLedger>(
    ledger: &L,
    merchant: &Merchant,
    phone: &Phone,
    event: &ConsentEvent,
    now: DateTime<Utc>,
) -> Result<Recorded, StoreError> {
    let state = ledger.record(&merchant.id, phone, event, purge_at(merchant, now)).await?;
    let cancelled = match event.action {
        // Cancelled even when the ledger already said "out": a retry of a half-done revocation
        // must finish its cancelling.
        ConsentAction::OptOut => after_opt_out(ledger, merchant, phone, now).await?,
        ConsentAction::OptIn => 0,
    };
    Ok(Recorded { state, cancelled })
}

/// Cancels queued outreach after an opt-out that was written some other way (with a webhook's
/// dedupe marker or an API idempotency record in the same transaction).
pub async fn after_opt_out<L: ConsentLedger>(
    ledger: &L,
    merchant: &Merchant,
    phone: &Phone,
    now: DateTime<Utc>,
) -> Result<usize, StoreError> {
    let cancelled = ledger.cancel_outreach(merchant, phone, now).await?;
    info!(merchant = %merchant.id, phone = %phone.log_id(), cancelled, "opt-out: pending outreach cancelled");
    Ok(cancelled)
}
