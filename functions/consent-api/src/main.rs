use callfy_shared::adapters::{aws, secrets, store::Store};
use callfy_shared::config::ConsentApiSettings;
use callfy_shared::{SystemClock, telemetry};
use consent_api::{ConsentApp, handle};
use lambda_http::{Error, run, service_fn};
use std::convert::Infallible;
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let sdk = aws::load_config().await?;
    // Secrets come from Secrets Manager, once per process; only what this function uses.
    let config: ConsentApiSettings = secrets::load_settings(&sdk).await?;
    // Log pseudonyms are keyed per deployment before the first line that could carry one.
    telemetry::init_with_log_key(&config.log_key);
    let app = Arc::new(ConsentApp {
        store: Store::new(aws::dynamodb(&sdk), &config.table_name),
        recordings: callfy_shared::adapters::recordings::RecordingBucket::new(
            aws::s3(&sdk),
            &config.recordings_bucket,
            None,
        ),
        clock: Arc::new(SystemClock),
    });
    run(service_fn(move |req| {
        let app = Arc::clone(&app);
        async move { Ok::<_, Infallible>(handle(&app, req).await) }
    }))
    .await
}
