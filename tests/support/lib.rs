//! Helpers for integration tests: the local AWS API (moto), signed Shopify deliveries,
//! sample payloads, and a `callfy-local` per test with its own resources.

pub mod bedrock;

use aws_config::SdkConfig;
use callfy_local::{LocalHandle, LocalOptions};
use callfy_shared::Clock;
use callfy_shared::config::local_defaults;
use callfy_shared::domain::merchant::Merchant;
use callfy_shared::signature::hmac_sha256_base64;
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;

pub const SHOP: &str = "snowdevil.myshopify.com";
pub const PHONE: &str = "+14155552671";

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// SDK config for the moto server the test command started (`AWS_ENDPOINT_URL`).
pub async fn sdk() -> SdkConfig {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
    assert!(
        endpoint.starts_with("http://127.0.0.1") || endpoint.starts_with("http://localhost"),
        "integration tests need the local AWS API: run them with scripts/test (AWS_ENDPOINT_URL={endpoint:?})"
    );
    // The functions' own HTTP stack, so every test's AWS call goes through it.
    callfy_shared::adapters::aws::local_config(&endpoint).await.expect("HTTP client")
}

pub fn read_json(relative: &str) -> Value {
    let path = root().join(relative);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The demo merchant, with a test's changes applied.
pub fn merchant(mutate: impl FnOnce(&mut Value)) -> Merchant {
    let mut v = read_json("events/demo-merchant.json");
    mutate(&mut v);
    Merchant::from_json(&v.to_string()).expect("valid test merchant")
}

/// A Shopify checkout payload from events/shopify/, timestamped at `at`.
pub fn checkout(at: chrono::DateTime<chrono::Utc>) -> Value {
    let mut c = read_json("events/shopify/checkouts-create.json");
    c["created_at"] = at.to_rfc3339().into();
    c["updated_at"] = at.to_rfc3339().into();
    c["customer"]["sms_marketing_consent"]["consent_updated_at"] = at.to_rfc3339().into();
    c
}

pub fn shopify_signature(body: &[u8]) -> String {
    hmac_sha256_base64(local_defaults::SHOPIFY_API_SECRET.as_bytes(), body)
}

/// POSTs a signed Shopify webhook; returns status and JSON answer.
pub async fn post_shopify(base_url: &str, topic: &str, event_id: &str, body: &Value) -> (u16, Value) {
    let raw = serde_json::to_vec(body).expect("json");
    let sig = shopify_signature(&raw);
    post_raw(base_url, topic, event_id, raw, &sig).await
}

pub async fn post_raw(base_url: &str, topic: &str, event_id: &str, raw: Vec<u8>, signature: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{base_url}/webhooks/shopify"))
        .header("content-type", "application/json")
        .header("x-shopify-topic", topic)
        .header("x-shopify-shop-domain", SHOP)
        .header("x-shopify-event-id", event_id)
        .header("x-shopify-hmac-sha256", signature)
        .body(raw)
        .send()
        .await
        .expect("local runner answers");
    let status = resp.status().as_u16();
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// Starts `callfy-local` on its own resources and registers `merchant`.
pub async fn start_local(prefix: &str, clock: Arc<dyn Clock>, merchant: &Merchant) -> LocalHandle {
    start_local_with(prefix, clock, merchant, |_| {}).await
}

/// `start_local` with the test's changes to the runner's options.
pub async fn start_local_with(
    prefix: &str,
    clock: Arc<dyn Clock>,
    merchant: &Merchant,
    change: impl FnOnce(&mut LocalOptions),
) -> LocalHandle {
    let sdk = sdk().await;
    let mut opts = LocalOptions::for_test(prefix, Arc::clone(&clock));
    change(&mut opts);
    let handle = callfy_local::start(&sdk, opts).await.expect("callfy-local starts");
    handle.store().put_merchant(merchant, clock.now()).await.expect("merchant stored");
    handle
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..10])
}

/// A new cart for the demo merchant's shopper, as ingest would store it (version 1).
pub fn new_cart(token: &str, at: chrono::DateTime<chrono::Utc>) -> callfy_shared::domain::cart::Cart {
    use callfy_shared::{CartToken, MerchantId, Phone};
    callfy_local::fixtures::demo_cart(
        &MerchantId::parse("snowdevil").expect("test merchant"),
        CartToken::parse(token).expect("test token"),
        Phone::parse(PHONE, None).expect("test phone"),
        at,
    )
}

/// Fails every DynamoDB write while its switch is on, at the SDK boundary, as a storage outage
/// would (reads still work).
#[derive(Debug, Clone)]
pub struct FailWrites(pub Arc<std::sync::atomic::AtomicBool>);

impl FailWrites {
    /// A switch that starts on.
    pub fn on() -> Self {
        Self(Arc::new(std::sync::atomic::AtomicBool::new(true)))
    }
}

/// Fails the next `n` DynamoDB writes at the SDK boundary, then lets every write through.
#[derive(Debug, Clone)]
pub struct FailNextWrites(pub Arc<std::sync::atomic::AtomicUsize>);

impl aws_sdk_dynamodb::config::Intercept for FailNextWrites {
    fn name(&self) -> &'static str {
        "FailNextWrites"
    }

    fn read_before_transmit(
        &self,
        context: &aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _: &aws_sdk_dynamodb::config::RuntimeComponents,
        _: &mut aws_sdk_dynamodb::config::ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        use std::sync::atomic::Ordering::SeqCst;
        if is_write(context) && self.0.fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1)).is_ok() {
            return Err("injected: storage unavailable".into());
        }
        Ok(())
    }
}

/// Answers the next DynamoDB transaction (after moto applied it) as cancelled by a concurrent
/// transaction on its last item: what DynamoDB answers under contention, which is not a
/// condition that failed.
#[derive(Debug, Clone)]
pub struct ConflictNextTransaction(pub Arc<std::sync::atomic::AtomicBool>);

impl aws_sdk_dynamodb::config::Intercept for ConflictNextTransaction {
    fn name(&self) -> &'static str {
        "ConflictNextTransaction"
    }

    fn modify_before_deserialization(
        &self,
        context: &mut aws_sdk_dynamodb::config::interceptors::BeforeDeserializationInterceptorContextMut<'_>,
        _: &aws_sdk_dynamodb::config::RuntimeComponents,
        _: &mut aws_sdk_dynamodb::config::ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        if !self.0.swap(false, std::sync::atomic::Ordering::SeqCst) {
            return Ok(());
        }
        let body = serde_json::json!({
            "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
            "Message": "Transaction cancelled, please refer cancellation reasons for specific reasons [None, TransactionConflict]",
            "CancellationReasons": [{ "Code": "None" }, { "Code": "TransactionConflict", "Message": "Transaction is ongoing for the item" }],
        });
        answer_with_error(context, body.to_string());
        Ok(())
    }
}

/// Replaces moto's answer with DynamoDB's error document `body` (HTTP 400), for a write moto
/// applied: what the caller hears when DynamoDB's answer says it was refused. Only the body
/// names the error.
pub fn answer_with_error(
    context: &mut aws_sdk_dynamodb::config::interceptors::BeforeDeserializationInterceptorContextMut<'_>,
    body: impl Into<String>,
) {
    let response = context.response_mut();
    *response.status_mut() = 400u16.try_into().expect("a status");
    response.headers_mut().remove("x-amzn-errortype");
    *response.body_mut() = aws_smithy_types::body::SdkBody::from(body.into());
}

fn is_write(context: &aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef<'_>) -> bool {
    let target = context.request().headers().get("x-amz-target").unwrap_or_default();
    ["PutItem", "UpdateItem", "TransactWriteItems", "DeleteItem", "BatchWriteItem"]
        .iter()
        .any(|op| target.ends_with(op))
}

impl aws_sdk_dynamodb::config::Intercept for FailWrites {
    fn name(&self) -> &'static str {
        "FailWrites"
    }

    fn read_before_transmit(
        &self,
        context: &aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _: &aws_sdk_dynamodb::config::RuntimeComponents,
        _: &mut aws_sdk_dynamodb::config::ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        if is_write(context) && self.0.load(std::sync::atomic::Ordering::SeqCst) {
            return Err("injected: storage unavailable".into());
        }
        Ok(())
    }
}

/// Fails every DynamoDB call while its switch is on, at the SDK boundary: the store cannot be
/// reached at all (reads fail too, so not even the merchant can be looked up).
#[derive(Debug, Clone)]
pub struct FailAll(pub Arc<std::sync::atomic::AtomicBool>);

impl FailAll {
    /// A switch that starts on.
    pub fn on() -> Self {
        Self(Arc::new(std::sync::atomic::AtomicBool::new(true)))
    }
}

impl aws_sdk_dynamodb::config::Intercept for FailAll {
    fn name(&self) -> &'static str {
        "FailAll"
    }

    fn read_before_transmit(
        &self,
        _: &aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _: &aws_sdk_dynamodb::config::RuntimeComponents,
        _: &mut aws_sdk_dynamodb::config::ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        if self.0.load(std::sync::atomic::Ordering::SeqCst) {
            return Err("injected: storage unreachable".into());
        }
        Ok(())
    }
}

/// The one message on a queue, as the SqsEvent Lambda would hand the worker.
pub async fn one_queued_event(queue_url: &str) -> aws_lambda_events::event::sqs::SqsEvent {
    let sqs = aws_sdk_sqs::Client::new(&sdk().await);
    let received =
        sqs.receive_message().queue_url(queue_url).send().await.expect("SQS answers").messages.unwrap_or_default();
    assert_eq!(received.len(), 1, "one queued message");
    serde_json::from_value(serde_json::json!({ "Records": [{
        "messageId": received[0].message_id(), "body": received[0].body(), "attributes": {}, "messageAttributes": {},
    }]}))
    .expect("an SqsEvent")
}

/// Everything a test subscriber (`telemetry::subscriber`) wrote: log and metric lines.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One capture at a time: tracing caches each callsite's interest across every live subscriber,
/// and subscribers coming and going on other threads while a callsite is first hit can leave it
/// muted for this one (a metric line missing from the capture).
static CAPTURES: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A capture in force: the subscriber on this thread and the turn among captures.
pub struct CaptureGuard {
    _subscriber: tracing::subscriber::DefaultGuard,
    _turn: std::sync::MutexGuard<'static, ()>,
}

impl LogCapture {
    /// Installs the functions' own log format on this thread, writing here, until the guard drops.
    pub fn install(&self) -> CaptureGuard {
        let turn = CAPTURES.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let writer = self.clone();
        let subscriber = tracing::subscriber::set_default(callfy_shared::telemetry::subscriber(move || writer.clone()));
        // Callsites first hit elsewhere before this subscriber existed are asked again.
        tracing::callsite::rebuild_interest_cache();
        CaptureGuard { _subscriber: subscriber, _turn: turn }
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }

    pub fn lines(&self) -> Vec<Value> {
        self.text().lines().map(|l| serde_json::from_str(l).expect("every log line is JSON")).collect()
    }

    /// The EMF metric lines named `name`: (value, breakdown value if any).
    pub fn metric(&self, name: &str) -> Vec<(f64, Option<String>)> {
        self.lines()
            .into_iter()
            .filter(|l| l.get("_aws").is_some() && l.get(name).is_some())
            .map(|l| {
                let key = l["_aws"]["CloudWatchMetrics"][0]["Dimensions"][1][1].as_str().map(str::to_string);
                (l[name].as_f64().unwrap(), key.and_then(|k| l[k.as_str()].as_str().map(str::to_string)))
            })
            .collect()
    }
}

/// As if the inline attempt that applied a cart's delivery died before queuing its step 0:
/// the step-0 job is taken off the queue (only the delivery's copy stays, visible at once) and
/// the cart's note that its first step was queued is removed.
pub async fn as_if_the_first_step_never_queued(
    local: &LocalHandle,
    m: &callfy_shared::MerchantId,
    token: &callfy_shared::CartToken,
) {
    let sqs = callfy_shared::adapters::aws::sqs(&sdk().await);
    let got =
        sqs.receive_message().queue_url(&local.resources.queue_url).max_number_of_messages(10).send().await.unwrap();
    let mut kept = 0;
    for msg in got.messages() {
        let body = msg.body().unwrap_or_default();
        let copy = serde_json::from_str::<Value>(body).is_ok_and(|v| v.get("webhook").is_some());
        let receipt = msg.receipt_handle().unwrap();
        let url = &local.resources.queue_url;
        if copy {
            kept += 1;
            sqs.change_message_visibility()
                .queue_url(url)
                .receipt_handle(receipt)
                .visibility_timeout(0)
                .send()
                .await
                .unwrap();
        } else {
            sqs.delete_message().queue_url(url).receipt_handle(receipt).send().await.unwrap();
        }
    }
    assert_eq!(kept, 1, "the delivery's copy is still queued");
    let cart = local.store().get_cart(m, token).await.unwrap().expect("the cart was stored");
    assert!(cart.outreach_scheduled && cart.first_step_queued, "the attempt noted its queued job");
    let ddb = callfy_shared::adapters::aws::dynamodb(&sdk().await);
    let s = |v: String| aws_sdk_dynamodb::types::AttributeValue::S(v);
    ddb.update_item()
        .table_name(local.store().table())
        .key("pk", s(format!("K#{m}#{token}")))
        .key("sk", s("CART".into()))
        .update_expression("REMOVE first_step_queued")
        .send()
        .await
        .unwrap();
}
