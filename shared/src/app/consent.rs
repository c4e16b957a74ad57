//! Recording consent, and what an opt-out sets off: written once, for every caller (the
//! consent API, inbound keywords, delivery reports, platform webhooks and the worker).

use crate::domain::consent::{ConsentAction, ConsentEvent, ConsentSource, ConsentState, LedgerEntry, Verdict};
use crate::domain::merchant::{Channel, Merchant};
use crate::domain::phone::Phone;
use crate::domain::subject::SubjectKey;
use crate::ports::{
    ConsentAppend, ConsentLedger, ConsentStore, IdempotencyRecord, IdempotencyStore, PortError, PrivacyStore,
};
use crate::signature::ct_eq;
use chrono::{DateTime, Duration, Utc};
use thiserror::Error;
use tracing::info;

/// Optimistic-concurrency retries when requests for one phone race.
const WRITE_ATTEMPTS: usize = 4;

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
) -> Result<Recorded, PortError> {
    let state = ledger.record(&merchant.id, phone, event, purge_at(merchant, now)).await?;
    let cancelled = match event.action {
        // Cancelled even when the ledger already said "out": a retry of a half-done revocation
        // must finish its cancelling.
        ConsentAction::OptOut => after_opt_out(ledger, merchant, phone, (event.channel, event.source), now).await?,
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
    (channel, source): (Channel, ConsentSource),
    now: DateTime<Utc>,
) -> Result<usize, PortError> {
    crate::metrics::count_by(crate::metrics::OPT_OUTS, "Source", source.as_str(), 1);
    let cancelled = ledger.cancel_outreach(merchant, phone, channel, now).await?;
    info!(merchant = %merchant.id, phone = %phone.log_id(), channel = channel.as_str(), cancelled, "opt-out: pending outreach cancelled");
    Ok(cancelled)
}

#[derive(Debug, Error)]
pub enum ConsentError {
    #[error(transparent)]
    Store(#[from] PortError),
    #[error("the consent state kept changing under concurrent requests")]
    Contention,
}

impl crate::ports::Classify for ConsentError {
    fn kind(&self) -> crate::ports::ErrorKind {
        match self {
            Self::Store(e) => e.kind(),
            Self::Contention => crate::ports::ErrorKind::Transient,
        }
    }
}

/// What a merchant's request came to, for the function to put into words.
#[derive(Debug, Clone, Copy)]
pub enum ApiOutcome<'a> {
    Changed {
        entry: &'a LedgerEntry,
        state: &'a ConsentState,
    },
    Unchanged {
        state: &'a ConsentState,
    },
    Refused(Verdict),
    /// An opt-in from before the person's data was deleted on request (at `at`): the deletion
    /// closed it, as it closes a checkout's ticked box from before it.
    DeletedSubject {
        at: DateTime<Utc>,
    },
}

/// Where a stored answer had the request's phone number.
const STORED_PHONE: &str = "{{phone}}";

/// The answer to a request, and whether it replays one given before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiAnswer {
    Fresh(IdempotencyRecord),
    Replayed(IdempotencyRecord),
    /// The `Idempotency-Key` was used with a different request.
    KeyReused,
    /// The `Idempotency-Key` was used more than its window ago: a new request needs a new key.
    KeyExpired,
}

/// A request's `Idempotency-Key` and the SHA-256 of its body.
#[derive(Debug, Clone, Copy)]
pub struct Idempotency<'a> {
    pub key: Option<&'a str>,
    pub request_sha256: &'a str,
}

/// Records a merchant's consent event. The answer `render` gives is stored with the ledger
/// entry in one transaction under the request's `Idempotency-Key`, so a retry replays exactly
/// what the first request was told; an opt-out then cancels queued outreach.
pub async fn record_for_merchant<S>(
    store: &S,
    merchant: &Merchant,
    phone: &Phone,
    event: &ConsentEvent,
    idem: Idempotency<'_>,
    now: DateTime<Utc>,
    render: impl Fn(ApiOutcome<'_>) -> (u16, serde_json::Value) + Sync,
) -> Result<ApiAnswer, ConsentError>
where
    S: ConsentStore + IdempotencyStore + ConsentLedger + PrivacyStore,
{
    // Stored without the number (a deletion cannot find an answer keyed by its idempotency
    // key); a replay's request has the same hash, so the same number, which is put back.
    let answer = |outcome: ApiOutcome<'_>| {
        let (status, body) = render(outcome);
        IdempotencyRecord {
            request_sha256: idem.request_sha256.to_string(),
            status,
            body: body.to_string().replace(phone.as_str(), STORED_PHONE),
            created_at: now,
        }
    };
    let restored = |mut r: IdempotencyRecord| {
        r.body = r.body.replace(STORED_PHONE, phone.as_str());
        r
    };
    for _ in 0..WRITE_ATTEMPTS {
        if let Some(key) = idem.key
            && let Some(prev) = store.get_idempotency(&merchant.id, key).await?
        {
            // Past its window a key binds nothing, but it is not free either until the store
            // forgets it: answered plainly rather than left to fail as a conflict.
            if prev.created_at + Duration::hours(crate::ports::IDEMPOTENCY_WINDOW_HOURS) <= now {
                return Ok(ApiAnswer::KeyExpired);
            }
            if ct_eq(prev.request_sha256.as_bytes(), idem.request_sha256.as_bytes()) {
                return Ok(ApiAnswer::Replayed(restored(prev)));
            }
            return Ok(ApiAnswer::KeyReused);
        }
        // An opt-in is written only while the deletion marker is as read here.
        let mut deletions_seen = Vec::new();
        let mut deleted = None;
        if event.action == ConsentAction::OptIn {
            let key = SubjectKey::phone(phone);
            let at = store.deletion_marker(&merchant.id, &key).await?;
            deleted = at.filter(|_| crate::app::privacy::predates_deletion(at, event.occurred_at));
            deletions_seen.push((key, at));
        }
        let state = store.consent_state(&merchant.id, phone, event.channel).await?;
        let verdict = state.verdict(event);
        let settled = match (deleted, verdict) {
            (Some(at), _) => Some(answer(ApiOutcome::DeletedSubject { at })),
            (None, Verdict::Accept) => None,
            (None, Verdict::Unchanged) => Some(answer(ApiOutcome::Unchanged { state: &state })),
            (None, refused) => Some(answer(ApiOutcome::Refused(refused))),
        };
        if let Some(settled) = settled {
            if let Some(key) = idem.key
                && !store.put_idempotency(&merchant.id, key, &settled).await?
            {
                continue;
            }
            return Ok(ApiAnswer::Fresh(restored(settled)));
        }
        let append = ConsentAppend {
            merchant_id: merchant.id.clone(),
            phone: phone.clone(),
            state,
            event: event.clone(),
            purge_at: purge_at(merchant, now),
        };
        let created = |entry: &LedgerEntry, next: &ConsentState| answer(ApiOutcome::Changed { entry, state: next });
        match store.append_consent_answered(&append, idem.key, &deletions_seen, created).await {
            Ok(stored) => {
                // The opt-out and its answer are stored: a failure to cancel now must not turn
                // into an error (a retry would only replay the answer). A queued step still
                // cannot go out: its claim is conditioned on the consent sequence it read.
                if event.action == ConsentAction::OptOut
                    && let Err(e) = after_opt_out(store, merchant, phone, (event.channel, event.source), now).await
                {
                    tracing::warn!(merchant = %merchant.id, phone = %phone.log_id(), error = %crate::telemetry::redact(&crate::ports::chain(&e)), "opt-out recorded; cancelling queued outreach failed");
                }
                info!(merchant = %merchant.id, phone = %phone.log_id(), channel = event.channel.as_str(), action = ?event.action, "consent recorded via API");
                return Ok(ApiAnswer::Fresh(restored(stored)));
            }
            Err(PortError::Conflict) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ConsentError::Contention)
}
