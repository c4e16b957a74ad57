//! The next step after `hello-sdk`: the same, plus the JSON log subscriber every function installs.

use callfy_shared::adapters::aws;
use callfy_shared::telemetry;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use serde_json::Value;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let sdk = aws::load_config().await?;
    telemetry::init_with_log_key("bench-log-key");
    let clients = (aws::dynamodb(&sdk), aws::sqs(&sdk));
    run(service_fn(move |event: LambdaEvent<Value>| {
        let _ = &clients;
        async move { Ok::<_, Error>(event.payload) }
    }))
    .await
}
