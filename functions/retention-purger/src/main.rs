//! Lambda entry point: the one builder assembles the purger; each scheduled run stops cleanly
//! before the invocation's deadline.

// The purge's future nests every port call of a run (day → shard → batch → item).
#![recursion_limit = "256"]

use callfy_shared::startup;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use retention_purger::{PurgerApp, deadline, handle};
use std::sync::Arc;

// One thread: an invocation waits on the network, which one thread interleaves; worker
// threads would only add to init (docs/performance.md).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let app = Arc::new(startup::lambda::<PurgerApp>().await?);
    run(service_fn(move |event: LambdaEvent<serde_json::Value>| {
        let app = Arc::clone(&app);
        async move {
            let report = handle(&app, &event.payload, Some(deadline(event.context.deadline()))).await?;
            Ok::<_, Error>(serde_json::to_value(&report)?)
        }
    }))
    .await
}
