#![recursion_limit = "256"]
//! Lambda entry point: the one builder assembles the agent over API Gateway's `@connections`;
//! each WebSocket event ($connect, $default, $disconnect) is one invocation.

use callfy_shared::adapters::relay::ApiGatewayRelay;
use callfy_shared::startup::{self, AgentApp};
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use std::sync::Arc;

// One thread: an invocation waits on the network, which one thread interleaves; worker
// threads would only add to init (docs/performance.md).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let app = Arc::new(startup::lambda::<AgentApp<ApiGatewayRelay>>().await?);
    run(service_fn(move |event: LambdaEvent<_>| {
        let app = Arc::clone(&app);
        async move { Ok::<_, Error>(voice_agent::handle(&app, event.payload).await) }
    }))
    .await
}
