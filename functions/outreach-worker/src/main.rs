//! Lambda entry point: the one builder assembles the worker; each SQS batch is handled with
//! partial batch failures.

use callfy_shared::startup;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use outreach_worker::{Worker, handle_batch};
use std::sync::Arc;

// One thread: an invocation waits on the network, which one thread interleaves; worker
// threads would only add to init (docs/performance.md).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let app = Arc::new(startup::lambda::<Worker>().await?);
    run(service_fn(move |event: LambdaEvent<_>| {
        let app = Arc::clone(&app);
        async move { Ok::<_, Error>(handle_batch(&app, event.payload).await) }
    }))
    .await
}
