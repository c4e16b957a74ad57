//! A merchant's share of the signed JSON API: one token per request from the merchant's bucket
//! (`domain::ratelimit`), kept in the store so every instance of the API draws on the same one.

use crate::domain::ids::MerchantId;
use crate::domain::ratelimit::ApiLimit;
use crate::ports::{ApiBuckets, Classify, ErrorKind, PortError};
use chrono::{DateTime, Utc};
use thiserror::Error;

/// Rounds of "no step held, yet the bucket has a token" before giving up: each one means another
/// request moved the bucket between our two steps, which only a quiet bucket turning busy does.
const MAX_ROUNDS: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Admitted,
    /// Over the merchant's limit: answer 429 with this `Retry-After`.
    Throttled {
        retry_after_seconds: u32,
    },
}

#[derive(Debug, Error)]
pub enum LimitError {
    #[error(transparent)]
    Store(#[from] PortError),
    #[error("the merchant's API bucket kept changing under concurrent requests")]
    Contention,
}

impl Classify for LimitError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Store(e) => e.kind(),
            Self::Contention => ErrorKind::Transient,
        }
    }
}

/// Takes one token for a request of merchant `m` at `now`, or says how long to wait.
pub async fn admit<S: ApiBuckets>(
    store: &S,
    m: &MerchantId,
    limit: &ApiLimit,
    now: DateTime<Utc>,
) -> Result<Admission, LimitError> {
    let steps = limit.steps(now);
    for _ in 0..MAX_ROUNDS {
        if store.take_step(m, &steps, now).await?.is_some() {
            return Ok(Admission::Admitted);
        }
        // No guard held: the bucket is past its burst, unless it moved between the two steps.
        let tat = store.bucket(m).await?;
        if let Some(retry_after_seconds) = limit.retry_after(tat, now) {
            return Ok(Admission::Throttled { retry_after_seconds });
        }
    }
    Err(LimitError::Contention)
}
