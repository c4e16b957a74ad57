use callfy_shared::adapters::{aws, store::Store};
use callfy_shared::{Config, SystemClock, telemetry};
use lambda_http::{Error, run, service_fn};
use sms_inbound::{InboundApp, handle};
use std::convert::Infallible;
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    let config = Config::from_env()?;
    let sdk = aws::load_config().await;
    let app = Arc::new(InboundApp {
        store: Store::new(aws::dynamodb(&sdk), &config.table_name),
        auth_token: config.require_twilio_auth_token()?.to_string(),
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
