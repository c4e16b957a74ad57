//! Retrying a store operation at once, for callers that are never sent again (an inbound SMS, a
//! key pressed on a call) or whose answer binds us (a platform's order, answered 200): a
//! throttle or a blip usually clears within a second, while the queued copy that covers a
//! failure may wait minutes behind the queue, and a step may go out before it.

use crate::ports::{Classify, ErrorKind};
use std::time::Duration;

/// The waits before the second and third attempts.
pub const INLINE_RETRIES: [Duration; 2] = [Duration::from_millis(200), Duration::from_millis(600)];

/// Runs `op` (given the attempt's number, from 0) until it succeeds, fails for good, or has been
/// tried `1 + INLINE_RETRIES.len()` times. Only for operations that are idempotent.
pub async fn transient<T, E, F, Fut>(mut op: F) -> Result<T, E>
where
    E: Classify,
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut result = op(0).await;
    for (i, pause) in INLINE_RETRIES.into_iter().enumerate() {
        match &result {
            Err(e) if e.kind() == ErrorKind::Transient => {
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
        let once = transient(|n| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move { if n == 0 { Err(PortError::unavailable("DynamoDB", "PutItem", "slow down")) } else { Ok(n) } }
        })
        .await;
        assert_eq!((once.ok(), calls.load(Ordering::SeqCst)), (Some(1), 2));

        calls.store(0, Ordering::SeqCst);
        let lasting = transient(|_| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err::<(), _>(PortError::Invalid("bad".into())) }
        })
        .await;
        assert!(lasting.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1, "not tried again");

        calls.store(0, Ordering::SeqCst);
        let down = transient(|_| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err::<(), _>(PortError::unavailable("DynamoDB", "PutItem", "down")) }
        })
        .await;
        assert!(down.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 3, "three attempts in all");
    }
}
