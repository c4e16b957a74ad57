//! Retrying a store operation at once, for callers that are never sent again (an inbound SMS, a
//! key pressed on a call) or whose answer binds us (a platform's order, answered 200): a
//! throttle or a blip usually clears within a second, while the queued copy that covers a
//! failure may wait minutes behind the queue, and a step may go out before it.

use crate::ports::Classify;
use std::time::Duration;
use tokio::time::Instant;

/// The waits before the second and third attempts.
pub const INLINE_RETRIES: [Duration; 2] = [Duration::from_millis(200), Duration::from_millis(600)];

/// No attempt starts after this much of a request's time, for every caller alike: Shopify stops
/// waiting at 5 s, Twilio at 15 s, and a function's timeout (webhook-ingest's is 10 s) must
/// never be what answers, since WooCommerce counts that towards disabling the webhook. Later
/// failures are left to the request's queued copy.
pub const INLINE_BUDGET: Duration = Duration::from_secs(3);

/// The deadline of a request's inline attempts: taken once, before its first. (webhook-ingest
/// takes it on arrival, since its platform's wait starts then; sms-inbound and key 9 once their
/// copy is queued, since Twilio waits 15 s and without a copy the attempts are all there is.)
pub fn deadline() -> Instant {
    Instant::now() + INLINE_BUDGET
}

/// Runs `op` (given the attempt's number, from 0) until it succeeds, fails for good, has been
/// tried `1 + INLINE_RETRIES.len()` times, or would start its next attempt at or past
/// `deadline`. Only for operations that are idempotent.
pub async fn transient<T, E, F, Fut>(deadline: Instant, mut op: F) -> Result<T, E>
where
    E: Classify,
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut result = op(0).await;
    for (i, pause) in INLINE_RETRIES.into_iter().enumerate() {
        match &result {
            Err(e) if e.is_transient() => {
                if Instant::now() + pause >= deadline {
                    break;
                }
                tokio::time::sleep(pause).await;
                result = op(i + 1).await;
            }
            _ => break,
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::PortError;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn a_transient_failure_is_tried_again_and_a_lasting_one_is_not() {
        let calls = AtomicUsize::new(0);
        let once = transient(deadline(), |n| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move { if n == 0 { Err(PortError::unavailable("DynamoDB", "PutItem", "slow down")) } else { Ok(n) } }
        })
        .await;
        assert_eq!((once.ok(), calls.load(Ordering::SeqCst)), (Some(1), 2));

        calls.store(0, Ordering::SeqCst);
        let lasting = transient(deadline(), |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err::<(), _>(PortError::Invalid("bad".into())) }
        })
        .await;
        assert!(lasting.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1, "not tried again");

        calls.store(0, Ordering::SeqCst);
        let down = transient(deadline(), |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err::<(), _>(PortError::unavailable("DynamoDB", "PutItem", "down")) }
        })
        .await;
        assert!(down.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 3, "three attempts in all");
    }

    #[tokio::test]
    async fn no_attempt_starts_past_the_deadline() {
        let calls = AtomicUsize::new(0);
        let started = Instant::now();
        let slow = transient(started + Duration::from_millis(250), |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                Err::<(), _>(PortError::unavailable("DynamoDB", "GetItem", "slow down"))
            }
        })
        .await;
        assert!(slow.is_err());
        // The first attempt ends at 100 ms; a second would start at 300 ms, past the deadline.
        assert_eq!(calls.load(Ordering::SeqCst), 1, "tried once");
        assert!(started.elapsed() < Duration::from_millis(250), "{:?}", started.elapsed());

        calls.store(0, Ordering::SeqCst);
        let roomy = transient(Instant::now() + Duration::from_secs(5), |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err::<(), _>(PortError::unavailable("DynamoDB", "GetItem", "down")) }
        })
        .await;
        assert!(roomy.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 3, "room for every attempt");
    }
}
