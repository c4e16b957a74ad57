use callfy_shared::adapters::bigcommerce::BigCommerceApi;
use callfy_shared::adapters::{aws, queue::OutreachQueue, secrets, store::Store};
use callfy_shared::config::IngestSettings;
use callfy_shared::platforms::custom::Custom;
use callfy_shared::platforms::shopify::Shopify;
use callfy_shared::{SystemClock, telemetry};
use lambda_http::{Error, run, service_fn};
use std::convert::Infallible;
use std::sync::Arc;
use webhook_ingest::{IngestApp, handle};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let sdk = aws::load_config().await?;
    // Secrets come from Secrets Manager, once per process; only what this function uses.
    let config: IngestSettings = secrets::load_settings(&sdk).await?;
    // Log pseudonyms are keyed per deployment before the first line that could carry one.
    telemetry::init_with_log_key(&config.log_key);
    let app = Arc::new(IngestApp {
        store: Store::new(aws::dynamodb(&sdk), &config.table_name),
        queue: OutreachQueue::new(aws::sqs(&sdk), &config.outreach_queue_url),
        shopify: Shopify { app_secret: config.shopify_api_secret.clone() },
        // BigCommerce waits for our answer; a slow store API gets 5 s of it, then a 503 retry.
        bigcommerce_api: BigCommerceApi::new(&config.bigcommerce_api_base, std::time::Duration::from_secs(5))?,
        custom: Custom { clock: Arc::new(SystemClock) },
        clock: Arc::new(SystemClock),
    });
    run(service_fn(move |req| {
        let app = Arc::clone(&app);
        async move { Ok::<_, Infallible>(handle(&app, req).await) }
    }))
    .await
}
