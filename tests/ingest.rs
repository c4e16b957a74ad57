//! Accept-first ingest (issue 21): a delivery is made durable on the outreach queue before
//! anything that can fail for a while, answered 200, and applied by the worker from its copy
//! when the inline attempt could not. Storage failures are injected at the SDK boundary of a
//! second webhook-ingest app over the same table and queue; the worker runs healthy against
//! moto and the Twilio sandbox.

use callfy_integration_tests::*;
use callfy_local::LocalHandle;
use callfy_shared::adapters::store::Store;
use callfy_shared::app::webhook::Replayed;
use callfy_shared::domain::cart::CartStatus;
use callfy_shared::domain::merchant::Merchant;
use callfy_shared::signature::hmac_sha256_base64;
use callfy_shared::{CartToken, ManualClock, MerchantId};
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::sync::Arc;
use webhook_ingest::IngestApp;

const WOO_PATH: &str = "/webhooks/woocommerce/snowdevil-woo";

fn t0() -> DateTime<Utc> {
    "2026-11-28T19:00:00Z".parse().unwrap()
}

fn woo() -> Merchant {
    Merchant::from_json(&read_json("events/demo-merchant-woocommerce.json").to_string()).expect("demo merchant")
}

/// callfy-local for the WooCommerce demo merchant, whose deliveries' copies are visible to the
/// worker at once (in AWS they wait a minute for the inline attempt).
async fn start(prefix: &str) -> LocalHandle {
    let clock = Arc::new(ManualClock::new(t0()));
    start_local_with(prefix, clock, &woo(), |o| o.webhook_replay_delay_seconds = 0).await
}

/// webhook-ingest as the runner assembles it, over a store whose every call goes through `fault`.
async fn ingest_over(local: &LocalHandle, fault: impl aws_sdk_dynamodb::config::Intercept + 'static) -> IngestApp {
    let conf = aws_sdk_dynamodb::config::Builder::from(&sdk().await).interceptor(fault).build();
    let i = &local.functions().ingest;
    IngestApp {
        store: Store::new(aws_sdk_dynamodb::Client::from_conf(conf), local.store().table()),
        queue: i.queue.clone(),
        webhooks: i.webhooks.clone(),
        clock: Arc::clone(&i.clock),
    }
}

fn pending_order(pad: usize) -> Vec<u8> {
    let mut o = read_json("events/woocommerce/order-pending.json");
    o["date_modified_gmt"] = "2026-11-28T18:59:00".into();
    if pad > 0 {
        // An order note long enough to push the delivery past one queue message.
        let note = serde_json::json!({ "id": 9013, "key": "_customer_note", "value": "x".repeat(pad) });
        o["meta_data"].as_array_mut().expect("meta_data").push(note);
    }
    serde_json::to_vec(&o).unwrap()
}

fn woo_request(body: &[u8], secret: &str) -> lambda_http::Request {
    lambda_http::http::Request::builder()
        .method("POST")
        .uri(WOO_PATH)
        .header("content-type", "application/json")
        .header("x-wc-webhook-source", "https://snowdevil-woo.example/")
        .header("x-wc-webhook-topic", "order.created")
        .header("x-wc-webhook-resource", "order")
        .header("x-wc-webhook-event", "created")
        .header("x-wc-webhook-id", "12")
        .header("x-wc-webhook-delivery-id", "d-1")
        .header("x-wc-webhook-signature", hmac_sha256_base64(secret.as_bytes(), body))
        .body(lambda_http::Body::Text(String::from_utf8(body.to_vec()).unwrap()))
        .unwrap()
}

async fn handled(app: &IngestApp, req: lambda_http::Request) -> (u16, Value) {
    let resp = webhook_ingest::handle(app, req).await;
    let status = resp.status().as_u16();
    let body: Value = serde_json::from_slice(resp.body().as_ref()).unwrap_or(Value::Null);
    (status, body)
}

async fn post_woo(local: &LocalHandle, body: &[u8]) -> (u16, Value) {
    let secret = woo().webhook_secret.unwrap();
    let resp = reqwest::Client::new()
        .post(format!("{}{WOO_PATH}", local.base_url))
        .header("content-type", "application/json")
        .header("x-wc-webhook-topic", "order.created")
        .header("x-wc-webhook-resource", "order")
        .header("x-wc-webhook-delivery-id", "d-1")
        .header("x-wc-webhook-signature", hmac_sha256_base64(secret.as_bytes(), body))
        .body(body.to_vec())
        .send()
        .await
        .expect("local runner answers");
    (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
}

fn ids() -> (MerchantId, CartToken) {
    (MerchantId::parse("snowdevil-woo").unwrap(), CartToken::parse("wc-727").unwrap())
}

async fn stored_bodies(local: &LocalHandle) -> Vec<String> {
    let s3 = callfy_shared::adapters::aws::s3(&sdk().await);
    let listed = s3
        .list_objects_v2()
        .bucket(&local.resources.names.bucket)
        .prefix("deliveries/")
        .send()
        .await
        .expect("S3 answers");
    listed.contents().iter().filter_map(|o| o.key().map(str::to_string)).collect()
}

#[tokio::test]
async fn a_woocommerce_delivery_while_the_store_is_unreachable_is_answered_200_and_texted_once_from_its_copy() {
    let local = start("ing-down").await;
    let down = ingest_over(&local, FailAll::on()).await;
    let body = pending_order(0);
    let secret = woo().webhook_secret.unwrap();
    // Not even the merchant can be read: the delivery is queued as it came, unverified.
    let logs = LogCapture::default();
    let guard = logs.install();
    let (status, answer) = handled(&down, woo_request(&body, &secret)).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("queued")), "{answer}");
    let (m, token) = ids();
    assert!(local.store().get_cart(&m, &token).await.unwrap().is_none(), "nothing applied yet");
    assert!(local.sandbox.messages().is_empty());

    // The worker verifies the copy with the merchant's secret and applies it; its first step
    // follows on the queue.
    let stats = local.drain().await.unwrap();
    drop(guard);
    assert_eq!((stats.received, stats.failed), (2, 0), "{stats:?}");
    let sent = local.sandbox.messages();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(sent[0].body.contains("order-pay/727"), "{}", sent[0].body);
    // The logs of the whole path name no one: the body's phone and email never appear.
    let text = logs.text();
    for personal in ["555-2671", "4155552671", "ann.lee@example.com"] {
        assert!(!text.contains(personal), "{personal} in the logs: {text}");
    }
    assert_eq!(local.store().get_cart(&m, &token).await.unwrap().unwrap().status, CartStatus::Open);

    // The same delivery again, now the store is back: applied already, nothing more is sent.
    let (status, answer) = post_woo(&local, &body).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("duplicate")), "{answer}");
    local.drain().await.unwrap();
    assert_eq!(local.sandbox.messages().len(), 1, "exactly one SMS");
    local.shutdown().await;
}

#[tokio::test]
async fn a_write_failure_while_applying_is_answered_200_and_the_copy_applies_it_once() {
    let local = start("ing-writes").await;
    let failing = ingest_over(&local, FailWrites::on()).await;
    let body = pending_order(0);
    let (status, answer) = handled(&failing, woo_request(&body, &woo().webhook_secret.unwrap())).await;
    assert_eq!(
        (status, answer["status"].as_str(), answer["topic"].as_str()),
        (200, Some("queued"), Some("order.created"))
    );
    let (m, token) = ids();
    assert!(local.store().get_cart(&m, &token).await.unwrap().is_none(), "nothing was half-written");

    let stats = local.drain().await.unwrap();
    assert_eq!((stats.received, stats.failed), (2, 0), "{stats:?}");
    assert_eq!(local.sandbox.messages().len(), 1);
    local.drain().await.unwrap();
    assert_eq!(local.sandbox.messages().len(), 1, "exactly one SMS");
    local.shutdown().await;
}

#[tokio::test]
async fn an_order_whose_write_fails_once_is_applied_before_its_answer_and_nothing_is_sent() {
    // Found by the 10 000-delivery campaign: an order left to its queued copy was applied
    // minutes later, after the cart's first text had gone. A blip is now tried again at once.
    let local = start("ing-blip").await;
    let (status, answer) = post_woo(&local, &pending_order(0)).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("accepted")), "{answer}");
    let mut paid = read_json("events/woocommerce/order-processing.json");
    paid["date_modified_gmt"] = "2026-11-28T19:05:00".into();
    let paid = serde_json::to_vec(&paid).unwrap();
    let once = FailNextWrites(Arc::new(std::sync::atomic::AtomicUsize::new(1)));
    let blip = ingest_over(&local, once.clone()).await;
    let (status, answer) = handled(&blip, woo_request(&paid, &woo().webhook_secret.unwrap())).await;
    assert_eq!(once.0.load(std::sync::atomic::Ordering::SeqCst), 0, "the first write did fail");
    assert_eq!((status, answer["status"].as_str()), (200, Some("accepted")), "applied inline: {answer}");
    let (m, token) = ids();
    let cart = local.store().get_cart(&m, &token).await.unwrap().expect("cart");
    assert!(cart.status.is_closed(), "closed before the answer: {:?}", cart.status);

    // The step queued for the pending order, and both copies: nothing goes out.
    let stats = local.drain().await.unwrap();
    assert_eq!(stats.failed, 0, "{stats:?}");
    assert!(local.sandbox.messages().is_empty(), "{:?}", local.sandbox.messages());
    local.shutdown().await;
}

#[tokio::test]
async fn the_copy_of_a_delivery_applied_inline_changes_nothing() {
    let local = start("ing-copy").await;
    let (status, answer) = post_woo(&local, &pending_order(0)).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("accepted")), "{answer}");
    // The copy and the first step: the copy finds the delivery applied, and step 0 noted as
    // queued (it queues nothing more).
    let stats = local.drain().await.unwrap();
    assert_eq!((stats.received, stats.failed), (2, 0), "{stats:?}");
    assert_eq!(local.sandbox.messages().len(), 1);
    let (m, _) = ids();
    let phone = callfy_shared::Phone::parse(PHONE, None).unwrap();
    let ledger = local.store().consent_ledger(&m, &phone, callfy_shared::domain::merchant::Channel::Sms).await;
    assert_eq!(ledger.unwrap().len(), 1, "the consent was recorded once");
    local.shutdown().await;
}

#[tokio::test]
async fn a_queued_delivery_with_a_bad_signature_is_dropped_by_the_worker() {
    let local = start("ing-forged").await;
    let down = ingest_over(&local, FailAll::on()).await;
    // Shopify signs with the app's secret: a forgery is refused before any lookup, outage or not.
    let raw = serde_json::to_string(&checkout(t0())).unwrap();
    let forged = lambda_http::http::Request::builder()
        .method("POST")
        .uri("/webhooks/shopify")
        .header("x-shopify-topic", "checkouts/create")
        .header("x-shopify-shop-domain", SHOP)
        .header("x-shopify-event-id", unique("evt"))
        .header("x-shopify-hmac-sha256", "Zm9yZ2Vk")
        .body(lambda_http::Body::Text(raw))
        .unwrap();
    assert_eq!(handled(&down, forged).await.0, 401);
    assert_eq!(local.drain().await.unwrap().received, 0, "nothing queued");

    // WooCommerce signs with the merchant's secret, which cannot be read now: the delivery is
    // queued unverified.
    let body = pending_order(0);
    let (status, answer) = handled(&down, woo_request(&body, "not-the-merchant-secret")).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("queued")), "unverifiable while the store is down");

    // The worker, with the store back, verifies the copy and drops it: a final outcome, so the
    // message is done with (not retried, not dead-lettered).
    let event = one_queued_event(&local.resources.queue_url).await;
    let processed = outreach_worker::process_record(&local.functions().worker, &event.records[0]).await.unwrap();
    assert_eq!(processed, outreach_worker::Processed::Webhook(Replayed::Dropped("bad signature")));
    let (m, token) = ids();
    assert!(local.store().get_cart(&m, &token).await.unwrap().is_none(), "nothing stored");
    let phone = callfy_shared::Phone::parse(PHONE, None).unwrap();
    let ledger = local.store().consent_ledger(&m, &phone, callfy_shared::domain::merchant::Channel::Sms).await;
    assert!(ledger.unwrap().is_empty(), "no consent recorded");
    assert!(local.sandbox.messages().is_empty(), "nothing sent");
    local.shutdown().await;
}

#[tokio::test]
async fn a_large_body_waits_in_the_bucket_and_is_deleted_once_processed() {
    let local = start("ing-large").await;
    let failing = ingest_over(&local, FailWrites::on()).await;
    // Over one queue message (256 KiB), under the route's 1 MiB.
    let body = pending_order(300 * 1024);
    let (status, answer) = handled(&failing, woo_request(&body, &woo().webhook_secret.unwrap())).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("queued")), "{answer}");
    let stored = stored_bodies(&local).await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    let s3 = callfy_shared::adapters::aws::s3(&sdk().await);
    let head = s3.head_object().bucket(&local.resources.names.bucket).key(&stored[0]).send().await.unwrap();
    assert_eq!(head.server_side_encryption().map(|s| s.as_str()), Some("aws:kms"));
    assert_eq!(head.content_length(), Some(i64::try_from(body.len()).unwrap()));

    // The worker reads the body from the bucket, applies it, and deletes it.
    let stats = local.drain().await.unwrap();
    assert_eq!((stats.received, stats.failed), (2, 0), "{stats:?}");
    assert_eq!(local.sandbox.messages().len(), 1);
    assert!(stored_bodies(&local).await.is_empty(), "the raw body does not outlive its processing");

    // Applied inline this time: the copy still carries its body through the bucket, and the
    // worker deletes it though it had nothing left to apply.
    let mut again: Value = serde_json::from_slice(&body).unwrap();
    again["id"] = 728.into();
    again["billing"]["phone"] = "(212) 555-0147".into();
    let again = serde_json::to_vec(&again).unwrap();
    let (status, answer) = post_woo(&local, &again).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("accepted")), "{answer}");
    assert_eq!(stored_bodies(&local).await.len(), 1);
    local.drain().await.unwrap();
    assert!(stored_bodies(&local).await.is_empty());
    assert_eq!(local.sandbox.messages().len(), 2);
    local.shutdown().await;
}

#[tokio::test]
async fn a_delivery_applied_by_an_attempt_that_died_before_queuing_its_first_step_still_gets_it() {
    let local = start("ing-crash").await;
    let (status, _) = post_woo(&local, &pending_order(0)).await;
    assert_eq!(status, 200);
    // The attempt "died" after its write: its step-0 job never reached the queue. Only the
    // delivery's copy is left.
    let (m, _) = ids();
    let phone = callfy_shared::Phone::parse(PHONE, None).unwrap();
    let carts = local.store().carts_for_phone(&m, &phone).await.unwrap();
    assert_eq!(carts.len(), 1);
    as_if_the_first_step_never_queued(&local, &m, &carts[0].token).await;
    // The copy finds the delivery applied and the cart's first step untaken: it queues it again.
    local.drain().await.unwrap();
    assert_eq!(local.sandbox.messages().len(), 1, "the text goes out, once");
    local.drain().await.unwrap();
    assert_eq!(local.sandbox.messages().len(), 1);
    local.shutdown().await;
}
