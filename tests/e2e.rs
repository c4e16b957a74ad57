//! End to end through `callfy-local`: signed Shopify webhooks over real HTTP, real lambda_http
//! requests, DynamoDB/SQS on moto, the worker fed real SqsEvent batches, Twilio's sandbox.

use callfy_integration_tests::*;
use callfy_shared::adapters::store::StepState;
use callfy_shared::domain::cart::CartStatus;
use callfy_shared::domain::consent::{ConsentAction, ConsentSource, ConsentStatus};
use callfy_shared::domain::flow::{OutreachJob, SkipReason};
use callfy_shared::domain::merchant::Channel;
use callfy_shared::{CartToken, ManualClock, MerchantId, Phone};
use chrono::{DateTime, Duration, Utc};
use outreach_worker::JobOutcome;
use serde_json::json;
use std::sync::Arc;

const TOKEN: &str = "cd8e6f2f1c0b4a2e9d6c7b8a9f0e1d2c";

fn t0() -> DateTime<Utc> {
    "2026-11-28T19:00:00Z".parse().unwrap()
}

fn ids() -> (MerchantId, CartToken, Phone) {
    (MerchantId::parse("snowdevil").unwrap(), CartToken::parse(TOKEN).unwrap(), Phone::parse(PHONE, None).unwrap())
}

#[tokio::test]
async fn signed_checkout_sends_exactly_one_sms_and_redeliveries_send_nothing_more() {
    let clock = Arc::new(ManualClock::new(t0()));
    let local = start_local("e2e-one", clock.clone(), &merchant(|_| {})).await;
    let body = checkout(t0());
    let event_id = unique("evt");

    let (status, answer) = post_shopify(&local.base_url, "checkouts/create", &event_id, &body).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("accepted")), "{answer}");
    let stats = local.drain().await.unwrap();
    assert_eq!((stats.succeeded, stats.failed), (1, 0));

    let sent = local.sandbox.messages();
    assert_eq!(sent.len(), 1, "{sent:?}");
    let sms = &sent[0];
    assert_eq!(sms.to, PHONE);
    assert_eq!(sms.messaging_service_sid.as_deref(), Some("MG0123456789abcdef0123456789abcdef"));
    assert_eq!(sms.from, None);
    assert!(sms.body.starts_with("Snowdevil: Hi Ann!"), "{}", sms.body);
    assert!(sms.body.contains(body["abandoned_checkout_url"].as_str().unwrap()), "{}", sms.body);
    assert!(sms.body.contains("Reply STOP to opt out"), "{}", sms.body);
    assert_eq!(sms.status_callback.as_deref(), Some(format!("{}/twilio/sms/status", local.base_url).as_str()));

    // The same delivery again, and the platform's follow-up update with a new event id.
    let (status, answer) = post_shopify(&local.base_url, "checkouts/create", &event_id, &body).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("duplicate")));
    let mut update = body.clone();
    update["updated_at"] = (t0() + Duration::seconds(5)).to_rfc3339().into();
    let (status, _) = post_shopify(&local.base_url, "checkouts/update", &unique("evt"), &update).await;
    assert_eq!(status, 200);
    local.drain().await.unwrap();
    assert_eq!(local.sandbox.messages().len(), 1, "still exactly one SMS");
    assert!(local.sandbox.violations().is_empty(), "{:?}", local.sandbox.violations());

    // What an auditor would look for: the consent entry with its evidence, the SMS log, the step.
    let (m, token, phone) = ids();
    let store = local.store();
    let ledger = store.consent_ledger(&m, &phone, Channel::Sms).await.unwrap();
    assert_eq!(ledger.len(), 1);
    let entry = &ledger[0].event;
    assert_eq!((entry.action, entry.source), (ConsentAction::OptIn, ConsentSource::Checkout));
    assert_eq!(entry.evidence.opt_in_level.as_deref(), Some("single_opt_in"));
    assert_eq!(entry.evidence.platform_event_id.as_deref(), Some(event_id.as_str()));
    assert!(entry.evidence.page_url.is_some());
    let log = store.sms_log(&m, &phone).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].message_sid, sms.sid);
    assert_eq!(log[0].purge_at, log[0].created_at + Duration::days(730));
    let step = store.get_step(&m, &token, 0).await.unwrap().unwrap();
    assert_eq!(step.state, StepState::Sent);
    assert_eq!(step.message_sid.as_deref(), Some(sms.sid.as_str()));
    let cart = store.get_cart(&m, &token).await.unwrap().unwrap();
    assert_eq!(cart.last_message_at, Some(t0()));
    local.shutdown().await;
}

#[tokio::test]
async fn order_before_the_step_is_due_means_no_sms_and_records_revenue() {
    let clock = Arc::new(ManualClock::new(t0()));
    let m30 = merchant(|v| v["flow"] = json!([{ "after_minutes": 30, "channel": "sms" }]));
    let local = start_local("e2e-order", clock.clone(), &m30).await;

    let (status, _) = post_shopify(&local.base_url, "checkouts/create", &unique("evt"), &checkout(t0())).await;
    assert_eq!(status, 200);
    // The step waits in the queue (delayed); nothing is visible yet.
    assert_eq!(local.drain().await.unwrap().received, 0);

    clock.advance(Duration::minutes(10));
    let order = read_json("events/shopify/orders-create.json");
    let (status, answer) = post_shopify(&local.base_url, "orders/create", &unique("evt"), &order).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("accepted")));

    let (m, token, _) = ids();
    let cart = local.store().get_cart(&m, &token).await.unwrap().unwrap();
    assert_eq!(cart.status, CartStatus::Recovered);
    let recovery = cart.recovery.unwrap();
    assert_eq!((recovery.revenue.as_str(), recovery.currency.as_str()), ("656.71", "USD"));
    assert_eq!(recovery.order_id, "820982911946154508");
    assert!(!recovery.attributed, "no message was sent, so Callfy gets no credit");

    // When the queued step comes due, the worker finds the cart recovered.
    clock.advance(Duration::minutes(25));
    let job = OutreachJob {
        merchant_id: m.clone(),
        cart_token: token.clone(),
        step: 0,
        due_at: t0() + Duration::minutes(30),
    };
    let outcome = outreach_worker::process_job(&local.functions().worker.outreach, &job).await.unwrap();
    assert_eq!(outcome, JobOutcome::Skipped(SkipReason::CartRecovered));
    let step = local.store().get_step(&m, &token, 0).await.unwrap().unwrap();
    assert_eq!((step.state, step.reason.as_deref()), (StepState::Skipped, Some("cart_recovered")));
    assert!(local.sandbox.messages().is_empty());
    local.shutdown().await;
}

#[tokio::test]
async fn an_order_whose_checkout_arrives_after_it_keeps_the_cart_closed_and_sends_nothing() {
    let clock = Arc::new(ManualClock::new(t0()));
    let local = start_local("e2e-order-first", clock.clone(), &merchant(|_| {})).await;
    // The order reaches us first (the checkout's inline apply failed and its copy waits, or
    // the platform retries it later).
    let order = read_json("events/shopify/orders-create.json");
    let (status, answer) = post_shopify(&local.base_url, "orders/create", &unique("evt"), &order).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("accepted")), "{answer}");
    let (m, token, _) = ids();
    let cart = local.store().get_cart(&m, &token).await.unwrap().expect("kept, closed");
    assert_eq!((cart.status, cart.phone.as_ref()), (CartStatus::Recovered, None));
    // Then its checkout, with the box ticked: filled in, never opened, nothing queued or sent.
    clock.advance(Duration::minutes(1));
    let (status, answer) = post_shopify(&local.base_url, "checkouts/create", &unique("evt"), &checkout(t0())).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("accepted")), "{answer}");
    let cart = local.store().get_cart(&m, &token).await.unwrap().unwrap();
    assert_eq!(cart.status, CartStatus::Recovered);
    assert!(cart.phone.is_some() && !cart.outreach_scheduled, "{cart:?}");
    assert_eq!(local.drain().await.unwrap().received, 0, "no step queued");
    assert!(local.sandbox.messages().is_empty());
    local.shutdown().await;
}

#[tokio::test]
async fn order_that_arrives_before_the_queue_is_polled_stops_an_immediate_step() {
    let clock = Arc::new(ManualClock::new(t0()));
    let local = start_local("e2e-order0", clock.clone(), &merchant(|_| {})).await;
    post_shopify(&local.base_url, "checkouts/create", &unique("evt"), &checkout(t0())).await;
    let order = read_json("events/shopify/orders-create.json");
    let (status, _) = post_shopify(&local.base_url, "orders/create", &unique("evt"), &order).await;
    assert_eq!(status, 200);
    let stats = local.drain().await.unwrap();
    assert_eq!((stats.received, stats.failed), (1, 0));
    assert!(local.sandbox.messages().is_empty());
    local.shutdown().await;
}

#[tokio::test]
async fn forged_or_missing_signature_is_401_and_stores_nothing() {
    let clock = Arc::new(ManualClock::new(t0()));
    let local = start_local("e2e-forged", clock, &merchant(|_| {})).await;
    let raw = serde_json::to_vec(&checkout(t0())).unwrap();
    let forged = callfy_shared::signature::hmac_sha256_base64(b"not-the-secret", &raw);
    let (status, answer) = post_raw(&local.base_url, "checkouts/create", &unique("evt"), raw.clone(), &forged).await;
    assert_eq!(status, 401);
    assert_eq!(answer["error"], "invalid_signature");
    assert!(answer["message"].as_str().unwrap().contains("X-Shopify-Hmac-Sha256"));

    // Tampering with one byte of a correctly signed body fails too.
    let good = shopify_signature(&raw);
    let mut tampered = raw.clone();
    tampered[10] ^= 1;
    let (status, _) = post_raw(&local.base_url, "checkouts/create", &unique("evt"), tampered, &good).await;
    assert_eq!(status, 401);

    let resp = reqwest::Client::new()
        .post(format!("{}/webhooks/shopify", local.base_url))
        .header("x-shopify-topic", "checkouts/create")
        .header("x-shopify-shop-domain", SHOP)
        .body(raw)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);

    let (m, token, phone) = ids();
    assert!(local.store().get_cart(&m, &token).await.unwrap().is_none());
    assert_eq!(local.store().consent_state(&m, &phone, Channel::Sms).await.unwrap().seq, 0);
    assert_eq!(local.drain().await.unwrap().received, 0);
    local.shutdown().await;
}

#[tokio::test]
async fn checkout_without_sms_consent_sends_nothing() {
    let clock = Arc::new(ManualClock::new(t0()));
    let local = start_local("e2e-noconsent", clock, &merchant(|_| {})).await;
    let mut body = checkout(t0());
    body["buyer_accepts_sms_marketing"] = false.into();
    body["customer"]["sms_marketing_consent"]["state"] = "not_subscribed".into();
    body["buyer_accepts_marketing"] = true.into(); // email consent is not SMS consent
    let (status, answer) = post_shopify(&local.base_url, "checkouts/create", &unique("evt"), &body).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("accepted")));

    let (m, token, phone) = ids();
    let cart = local.store().get_cart(&m, &token).await.unwrap().unwrap();
    assert!(!cart.outreach_scheduled);
    assert_eq!(local.store().consent_state(&m, &phone, Channel::Sms).await.unwrap().status, ConsentStatus::Unknown);
    assert_eq!(local.drain().await.unwrap().received, 0);
    assert!(local.sandbox.messages().is_empty());
    local.shutdown().await;
}

#[tokio::test]
async fn malformed_json_is_400_and_changes_nothing() {
    let clock = Arc::new(ManualClock::new(t0()));
    let local = start_local("e2e-malformed", clock, &merchant(|_| {})).await;
    let event_id = unique("evt");
    let raw = b"{\"token\": \"abc\", ".to_vec();
    let sig = shopify_signature(&raw);
    let (status, answer) = post_raw(&local.base_url, "checkouts/create", &event_id, raw, &sig).await;
    assert_eq!(status, 400);
    assert_eq!(answer["error"], "malformed_json");
    assert!(answer["message"].as_str().unwrap().contains("checkouts/create"));

    // A token we cannot key on is refused with a reason, too.
    let (status, answer) =
        post_shopify(&local.base_url, "checkouts/create", &unique("evt"), &json!({ "token": "a b" })).await;
    assert_eq!((status, answer["error"].as_str()), (422, Some("invalid_payload")));

    // Nothing was remembered: the platform's corrected retry of the same event is processed.
    let (status, answer) = post_shopify(&local.base_url, "checkouts/create", &event_id, &checkout(t0())).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("accepted")));
    local.shutdown().await;
}

#[tokio::test]
async fn unknown_shop_is_404_unknown_topic_is_ignored_and_other_routes_are_404() {
    let clock = Arc::new(ManualClock::new(t0()));
    let local = start_local("e2e-routes", clock, &merchant(|_| {})).await;
    let raw = serde_json::to_vec(&checkout(t0())).unwrap();
    let resp = reqwest::Client::new()
        .post(format!("{}/webhooks/shopify", local.base_url))
        .header("x-shopify-topic", "checkouts/create")
        .header("x-shopify-shop-domain", "stranger.myshopify.com")
        .header("x-shopify-event-id", unique("evt"))
        .header("x-shopify-hmac-sha256", shopify_signature(&raw))
        .body(raw)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    let answer: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(answer["error"], "unknown_merchant");

    let (status, answer) = post_shopify(&local.base_url, "products/update", &unique("evt"), &json!({ "id": 1 })).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("ignored")));

    let resp = reqwest::get(format!("{}/nope", local.base_url)).await.unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    let resp = reqwest::get(format!("{}/webhooks/shopify", local.base_url)).await.unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    local.shutdown().await;
}

#[tokio::test]
async fn deleted_checkout_is_never_contacted() {
    let clock = Arc::new(ManualClock::new(t0()));
    let local = start_local("e2e-delete", clock, &merchant(|_| {})).await;
    post_shopify(&local.base_url, "checkouts/create", &unique("evt"), &checkout(t0())).await;
    // Shopify's delete payload may carry only the checkout id.
    let (status, _) =
        post_shopify(&local.base_url, "checkouts/delete", &unique("evt"), &json!({ "id": 981820079255243537u64 }))
            .await;
    assert_eq!(status, 200);
    let (m, token, _) = ids();
    assert_eq!(local.store().get_cart(&m, &token).await.unwrap().unwrap().status, CartStatus::Deleted);
    local.drain().await.unwrap();
    assert!(local.sandbox.messages().is_empty());
    local.shutdown().await;
}

#[tokio::test]
async fn background_poller_delivers_without_help() {
    let clock = Arc::new(ManualClock::new(t0()));
    let sdk = sdk().await;
    let mut opts = callfy_local::LocalOptions::for_test("e2e-poller", clock.clone());
    opts.auto_poll = true;
    let local = callfy_local::start(&sdk, opts).await.unwrap();
    local.store().put_merchant(&merchant(|_| {}), t0()).await.unwrap();
    post_shopify(&local.base_url, "checkouts/create", &unique("evt"), &checkout(t0())).await;
    let mut messages = Vec::new();
    for _ in 0..100 {
        let resp: Vec<serde_json::Value> =
            reqwest::get(format!("{}/sandbox/messages", local.base_url)).await.unwrap().json().await.unwrap();
        if !resp.is_empty() {
            messages = resp;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(messages.len(), 1, "the poller ran the worker");
    assert_eq!(messages[0]["to"], PHONE);
    local.shutdown().await;
}

#[tokio::test]
async fn a_queue_outage_answers_503_and_the_platform_retry_schedules_the_step() {
    let clock = Arc::new(ManualClock::new(t0()));
    let local = start_local("e2e-outage", clock.clone(), &merchant(|_| {})).await;
    let sqs = aws_sdk_sqs::Client::new(&sdk().await);
    let broken = webhook_ingest::IngestApp {
        store: local.store().clone(),
        queue: callfy_shared::adapters::queue::OutreachQueue::new(sqs, format!("{}-gone", local.resources.queue_url)),
        webhooks: local.functions().ingest.webhooks.clone(),
        clock,
    };
    let event_id = unique("evt");
    let raw = serde_json::to_string(&checkout(t0())).unwrap();
    let request = |raw: &str| {
        lambda_http::http::Request::builder()
            .method("POST")
            .uri("/webhooks/shopify")
            .header("x-shopify-topic", "checkouts/create")
            .header("x-shopify-shop-domain", SHOP)
            .header("x-shopify-event-id", event_id.as_str())
            .header("x-shopify-hmac-sha256", shopify_signature(raw.as_bytes()))
            .body(lambda_http::Body::Text(raw.to_string()))
            .unwrap()
    };
    let resp = webhook_ingest::handle(&broken, request(&raw)).await;
    assert_eq!(resp.status(), 503);
    let (m, token, _) = ids();
    let cart = local.store().get_cart(&m, &token).await.unwrap().unwrap();
    assert!(!cart.outreach_scheduled, "the failed scheduling was undone");

    // Shopify retries the same event: it is processed again, not taken for a duplicate.
    let (status, answer) = post_shopify(&local.base_url, "checkouts/create", &event_id, &checkout(t0())).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("accepted")), "{answer}");
    local.drain().await.unwrap();
    assert_eq!(local.sandbox.messages().len(), 1);
    local.shutdown().await;
}

#[tokio::test]
async fn privacy_topics_and_uninstall_are_stored_for_their_handling() {
    let clock = Arc::new(ManualClock::new(t0()));
    let local = start_local("e2e-privacy", clock.clone(), &merchant(|_| {})).await;
    let (m, _, phone) = ids();
    let data_request = json!({ "shop_id": 954889, "shop_domain": SHOP, "orders_requested": [299938],
        "customer": { "id": 191167, "email": "ann.lee@example.com", "phone": "(415) 555-2671" },
        "data_request": { "id": 9999 } });
    let redact = json!({ "shop_id": 954889, "shop_domain": SHOP, "customer": { "id": 191167, "email": "ann.lee@example.com" },
        "orders_to_redact": [299938] });
    let event_id = unique("evt");
    for (topic, body, id) in [
        ("customers/data_request", &data_request, event_id.clone()),
        ("customers/redact", &redact, unique("evt")),
        ("shop/redact", &json!({ "shop_id": 954889, "shop_domain": SHOP }), unique("evt")),
        ("app/uninstalled", &json!({ "id": 954889, "domain": SHOP }), unique("evt")),
    ] {
        let (status, answer) = post_shopify(&local.base_url, topic, &id, body).await;
        assert_eq!((status, answer["status"].as_str()), (200, Some("recorded")), "{topic}: {answer}");
        clock.advance(Duration::seconds(1));
    }
    // A redelivery is a duplicate; a forged privacy webhook is refused (Shopify's requirement).
    let (status, answer) = post_shopify(&local.base_url, "customers/data_request", &event_id, &data_request).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("duplicate")));
    let raw = serde_json::to_vec(&data_request).unwrap();
    let (status, _) = post_raw(&local.base_url, "customers/redact", &unique("evt"), raw, "Zm9yZ2Vk").await;
    assert_eq!(status, 401);

    let stored = local.store().platform_requests(&m).await.unwrap();
    let kinds: Vec<&str> = stored.iter().map(|r| r.kind.as_str()).collect();
    assert_eq!(kinds, ["data_request", "customer_redact", "shop_redact", "app_uninstalled"]);
    // The record that stays names no one; whom it is about waits with the request itself.
    let first = stored[0].privacy.as_ref().unwrap();
    assert_eq!((first.phone.as_ref(), first.email.as_deref()), (None, None));
    assert_eq!((first.request_id.as_deref(), first.customer_id.as_deref()), (Some("9999"), Some("191167")));
    let pending = local.store().pending_privacy(&format!("V#{m}"), "PRIVACY#9999").await.unwrap().unwrap();
    assert_eq!(pending.phone.as_ref(), Some(&phone), "the phone normalised to E.164");
    assert_eq!((pending.action.as_str(), pending.email.as_deref()), ("export", Some("ann.lee@example.com")));
    local.shutdown().await;
}

#[tokio::test]
async fn a_closed_merchant_gets_no_carts_but_opt_outs_and_privacy_requests_still_count() {
    let clock = Arc::new(ManualClock::new(t0()));
    let local = start_local("e2e-closed", clock.clone(), &merchant(|_| {})).await;
    let (m, token, phone) = ids();
    local.store().set_merchant_status(&m, callfy_shared::adapters::store::MerchantStatus::Closed).await.unwrap();
    let (status, answer) = post_shopify(&local.base_url, "checkouts/create", &unique("evt"), &checkout(t0())).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("ignored")));
    assert!(local.store().get_cart(&m, &token).await.unwrap().is_none());

    let update = read_json("events/shopify/customers-marketing-consent-update.json");
    let (status, answer) =
        post_shopify(&local.base_url, "customers_marketing_consent/update", &unique("evt"), &update).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("accepted")), "{answer}");
    assert_eq!(local.store().consent_state(&m, &phone, Channel::Sms).await.unwrap().status, ConsentStatus::OptedOut);
    let redact = json!({ "shop_id": 954889, "shop_domain": SHOP });
    let (status, answer) = post_shopify(&local.base_url, "shop/redact", &unique("evt"), &redact).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("recorded")));
    local.shutdown().await;
}

#[tokio::test]
async fn a_repeated_shopify_event_id_is_acknowledged_and_changes_nothing() {
    let clock = Arc::new(ManualClock::new(t0()));
    let local = start_local("e2e-event-id", clock.clone(), &merchant(|_| {})).await;
    let event_id = unique("evt");
    let (status, answer) = post_shopify(&local.base_url, "checkouts/create", &event_id, &checkout(t0())).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("accepted")));
    // Another delivery of that event (another subscription, or a retry whose payload we would
    // read differently): acknowledged, applied once.
    let mut again = checkout(t0() + Duration::seconds(30));
    again["total_price"] = "1.00".into();
    let (status, answer) = post_shopify(&local.base_url, "checkouts/update", &event_id, &again).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("duplicate")), "{answer}");
    let (m, token, phone) = ids();
    let cart = local.store().get_cart(&m, &token).await.unwrap().unwrap();
    assert_eq!((cart.total_price.as_deref(), cart.version, cart.updated_at), (Some("593.92"), 1, t0()));
    assert_eq!(local.store().consent_ledger(&m, &phone, Channel::Sms).await.unwrap().len(), 1);
    local.drain().await.unwrap();
    assert_eq!(local.sandbox.messages().len(), 1);
    local.shutdown().await;
}

#[tokio::test]
async fn a_privacy_or_uninstall_topic_with_another_topics_body_is_refused_with_422_and_changes_nothing() {
    let clock = Arc::new(ManualClock::new(t0()));
    let local = start_local("e2e-shapes", clock.clone(), &merchant(|_| {})).await;
    let (m, token, _) = ids();
    let data_request = read_json("events/shopify/customers-data-request.json");
    let redact = read_json("events/shopify/customers-redact.json");
    let shop_redact = read_json("events/shopify/shop-redact.json");
    let mut other_shop = shop_redact.clone();
    other_shop["shop_domain"] = "someone-else.myshopify.com".into();
    for (topic, body) in [
        ("customers/redact", &data_request),
        ("customers/data_request", &redact),
        ("shop/redact", &redact),
        ("shop/redact", &other_shop),
        ("app/uninstalled", &checkout(t0())),
        ("app/uninstalled", &shop_redact),
        ("customers/redact", &checkout(t0())),
    ] {
        let (status, answer) = post_shopify(&local.base_url, topic, &unique("evt"), body).await;
        assert_eq!((status, answer["error"].as_str()), (422, Some("wrong_topic_shape")), "{topic}: {answer}");
    }
    assert!(local.store().platform_requests(&m).await.unwrap().is_empty(), "nothing recorded");
    let record = local.store().get_merchant(&m).await.unwrap().unwrap();
    assert_eq!(record.status, callfy_shared::adapters::store::MerchantStatus::Active, "not uninstalled");
    assert!(local.store().get_cart(&m, &token).await.unwrap().is_none());
    assert_eq!(local.drain().await.unwrap().received, 0, "nothing queued");

    // Each body under its own topic is what it says.
    for (topic, body) in [("customers/data_request", &data_request), ("customers/redact", &redact)] {
        let (status, answer) = post_shopify(&local.base_url, topic, &unique("evt"), body).await;
        assert_eq!((status, answer["status"].as_str()), (200, Some("recorded")), "{topic}: {answer}");
    }
    local.shutdown().await;
}

#[tokio::test]
async fn a_day_late_checkout_update_is_applied_and_an_older_one_changes_nothing() {
    let clock = Arc::new(ManualClock::new(t0()));
    let one_step = merchant(|v| v["flow"] = json!([{ "after_minutes": 0, "channel": "sms" }]));
    let local = start_local("e2e-late", clock.clone(), &one_step).await;
    let (m, token, phone) = ids();
    let (day_ago, later) = (t0() - Duration::hours(25), t0() - Duration::hours(24));
    // The checkout, delivered a day after it happened (Shopify retries for hours, and a
    // backlog can hold a delivery longer): never stale, applied and texted.
    let (status, answer) = post_shopify(&local.base_url, "checkouts/create", &unique("evt"), &checkout(day_ago)).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("accepted")), "{answer}");
    // Its update, a day late too: applied.
    let mut update = checkout(day_ago);
    update["updated_at"] = later.to_rfc3339().into();
    update["total_price"] = "648.92".into();
    let (status, answer) = post_shopify(&local.base_url, "checkouts/update", &unique("evt"), &update).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("accepted")), "{answer}");
    let cart = local.store().get_cart(&m, &token).await.unwrap().unwrap();
    assert_eq!((cart.total_price.as_deref(), cart.updated_at), (Some("648.92"), later));

    // An update older than the one stored, arriving after it: timestamps only order updates.
    let mut older = checkout(day_ago);
    older["updated_at"] = (later - Duration::minutes(30)).to_rfc3339().into();
    older["total_price"] = "1.00".into();
    older["line_items"] = json!([{ "title": "Wax Puck", "quantity": 9, "price": "0.11" }]);
    let (status, answer) = post_shopify(&local.base_url, "checkouts/update", &unique("evt"), &older).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("accepted")), "{answer}");
    let after = local.store().get_cart(&m, &token).await.unwrap().unwrap();
    assert_eq!(
        (after.total_price.as_deref(), after.updated_at, &after.items, after.status),
        (Some("648.92"), later, &cart.items, CartStatus::Open),
        "the older update changed nothing"
    );
    assert_eq!(local.store().consent_ledger(&m, &phone, Channel::Sms).await.unwrap().len(), 1);

    local.drain().await.unwrap();
    let sent = local.sandbox.messages();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(sent[0].body.contains("Freeride Snowboard 158"), "{}", sent[0].body);
    local.shutdown().await;
}
