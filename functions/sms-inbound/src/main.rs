use callfy_shared::adapters::{aws, queue::OutreachQueue, secrets, store::Store};
use callfy_shared::config::InboundSettings;
use callfy_shared::{SystemClock, telemetry};
use lambda_http::{Error, run, service_fn};
use sms_inbound::{InboundApp, handle};
use std::convert::Infallible;
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let sdk = aws::load_config().await?;
    // Secrets come from Secrets Manager, once per process; only what this function uses.
    let config: InboundSettings = secrets::load_settings(&sdk).await?;
    // Log pseudonyms are keyed per deployment before the first line that could carry one.
    telemetry::init_with_log_key(&config.log_key);
    let app = Arc::new(InboundApp {
        store: Store::new(aws::dynamodb(&sdk), &config.table_name),
        queue: OutreachQueue::new(aws::sqs(&sdk), &config.outreach_queue_url),
        replay_delay_seconds: sms_inbound::REPLAY_DELAY_SECONDS,
        auth_token: config.twilio_auth_token.clone(),
        shared_key: config.twilio_webhook_shared_key.clone(),
        public_base_url: config.public_base_url.clone(),
        clock: Arc::new(SystemClock),
    });
    run(service_fn(move |req| {
        let app = Arc::clone(&app);
        async move { Ok::<_, Infallible>(handle(&app, req).await) }
    }))
    .await
}
