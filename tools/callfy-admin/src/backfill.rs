//! `callfy-admin backfill --merchant ID --since T`: reads a silent period back from the
//! merchant's platform (its REST API, with the credentials stored in the merchant's secrets) and
//! applies each checkout and order through the normal ingest path (`app::backfill`). Steps
//! go on the outreach queue as a webhook's would, so the worker texts under every rule.

use callfy_shared::MerchantId;
use callfy_shared::adapters::platform_api::PlatformApi;
use callfy_shared::adapters::store::Store;
use callfy_shared::app::backfill::{Backfill, BackfillError, BackfillReport};
use callfy_shared::ports::JobQueue;
use chrono::{DateTime, Utc};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum RunError {
    #[error("no merchant {0}")]
    NoMerchant(MerchantId),
    #[error("--since {0:?}: an RFC 3339 instant such as 2026-12-01T00:00:00Z")]
    BadSince(String),
    #[error(transparent)]
    Store(#[from] callfy_shared::ports::PortError),
    #[error(transparent)]
    Backfill(#[from] BackfillError),
}

pub fn parse_since(t: &str) -> Result<DateTime<Utc>, RunError> {
    DateTime::parse_from_rfc3339(t).map(|t| t.with_timezone(&Utc)).map_err(|_| RunError::BadSince(t.to_string()))
}

/// Back-fills merchant `id` from `since`, as of `now`.
pub async fn run<Q: JobQueue>(
    store: &Store,
    queue: &Q,
    api: &PlatformApi,
    id: &MerchantId,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<BackfillReport, RunError> {
    let merchant = store.get_merchant_with_secrets(id).await?.ok_or_else(|| RunError::NoMerchant(id.clone()))?;
    Ok(Backfill { store, queue, history: api }.run(&merchant, since, now).await?)
}

/// The report as the CLI prints it.
pub fn render(id: &MerchantId, r: &BackfillReport) -> String {
    let outcomes: Vec<String> = r.outcomes.iter().map(|(k, n)| format!("{k} {n}")).collect();
    format!(
        "backfill {id}: {} item(s) read; {}\n",
        r.read,
        if outcomes.is_empty() { "nothing to apply".into() } else { outcomes.join(", ") }
    )
}
