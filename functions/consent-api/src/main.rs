//! Lambda entry point: the one builder assembles the app; `handle` answers each request.

use callfy_shared::startup;
use consent_api::{ConsentApp, handle};
use lambda_http::{Error, run, service_fn};
use std::convert::Infallible;
use std::sync::Arc;

// One thread: an invocation waits on the network, which one thread interleaves; worker
// threads would only add to init (docs/performance.md).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let app = Arc::new(startup::lambda::<ConsentApp>().await?);
    run(service_fn(move |req| {
        let app = Arc::clone(&app);
        async move { Ok::<_, Infallible>(handle(&app, req).await) }
    }))
    .await
}
