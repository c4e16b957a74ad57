use callfy_shared::adapters::recordings::RecordingBucket;
use callfy_shared::adapters::twilio::TwilioClient;
use callfy_shared::adapters::{aws, queue::OutreachQueue, secrets, store::Store};
use callfy_shared::config::WorkerSettings;
use callfy_shared::{SystemClock, telemetry};
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use outreach_worker::{Worker, WorkerApp, handle_batch};
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let sdk = aws::load_config().await?;
    // Secrets come from Secrets Manager, once per process; only what this function uses.
    let config: WorkerSettings = secrets::load_settings(&sdk).await?;
    // Log pseudonyms are keyed per deployment before the first line that could carry one.
    telemetry::init_with_log_key(&config.log_key);
    let app = Arc::new(Worker {
        outreach: WorkerApp {
            store: Store::new(aws::dynamodb(&sdk), &config.table_name),
            queue: OutreachQueue::new(aws::sqs(&sdk), &config.outreach_queue_url),
            twilio: TwilioClient::new(&config.twilio)?,
            clock: Arc::new(SystemClock),
            public_base_url: config.public_base_url.clone(),
        },
        recordings: RecordingBucket::new(
            aws::s3(&sdk),
            &config.recordings_bucket,
            config.recordings_kms_key_id.clone(),
        ),
        scratch: std::env::temp_dir(),
    });
    run(service_fn(move |event: LambdaEvent<_>| {
        let app = Arc::clone(&app);
        async move { Ok::<_, Error>(handle_batch(&app, event.payload).await) }
    }))
    .await
}
