use callfy_shared::adapters::recordings::RecordingBucket;
use callfy_shared::adapters::{aws, secrets, store::Store};
use callfy_shared::config::PurgerSettings;
use callfy_shared::telemetry;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use retention_purger::{PurgerApp, handle};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Left for the audit record and the answer after the last batch.
const SAFETY: Duration = Duration::from_secs(20);

#[tokio::main]
async fn main() -> Result<(), Error> {
    let sdk = aws::load_config().await?;
    // Secrets come from Secrets Manager, once per process; only what this function uses.
    let config: PurgerSettings = secrets::load_settings(&sdk).await?;
    telemetry::init_with_log_key(&config.log_key);
    let app = Arc::new(PurgerApp {
        store: Store::new(aws::dynamodb(&sdk), &config.table_name),
        recordings: RecordingBucket::new(aws::s3(&sdk), &config.recordings_bucket, None),
        closure_grace_days: config.closure_grace_days,
    });
    run(service_fn(move |event: LambdaEvent<serde_json::Value>| {
        let app = Arc::clone(&app);
        async move {
            let left = event.context.deadline().duration_since(SystemTime::now()).unwrap_or_default();
            let deadline = Instant::now() + left.saturating_sub(SAFETY);
            let report = handle(&app, &event.payload, Some(deadline)).await?;
            Ok::<_, Error>(serde_json::to_value(&report)?)
        }
    }))
    .await
}
