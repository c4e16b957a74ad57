//! A step between the hello-world baseline and a function, to show what init is spent on:
//! the baseline plus the process's HTTPS client, the SDK configuration and DynamoDB/SQS clients,
//! built as every function builds them (no call is made).

use callfy_shared::adapters::aws;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use serde_json::Value;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let sdk = aws::load_config().await?;
    let clients = (aws::dynamodb(&sdk), aws::sqs(&sdk));
    run(service_fn(move |event: LambdaEvent<Value>| {
        let _ = &clients;
        async move { Ok::<_, Error>(event.payload) }
    }))
    .await
}
