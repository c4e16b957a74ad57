//! Silence is an alarm (issue 21): the delivery day stamp, the purger's daily check and its
//! `MerchantSilent` metric, and `callfy-admin backfill` reading Shopify's and WooCommerce's REST
//! APIs (stood in for by a local axum server) through the normal ingest path.

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use callfy_integration_tests::*;
use callfy_shared::adapters::platform_api::{PlatformApi, SHOPIFY_API_VERSION};
use callfy_shared::domain::cart::CartStatus;
use callfy_shared::domain::merchant::Merchant;
use callfy_shared::signature::hmac_sha256_base64;
use callfy_shared::{CartToken, Clock, ManualClock, MerchantId};
use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

fn t0() -> DateTime<Utc> {
    "2026-11-28T19:00:00Z".parse().unwrap()
}

fn demo(file: &str, mutate: impl FnOnce(&mut Value)) -> Merchant {
    let mut v = read_json(file);
    mutate(&mut v);
    Merchant::from_json(&v.to_string()).expect("valid merchant")
}

fn purge_event(at: DateTime<Utc>) -> Value {
    let mut event = read_json("events/eventbridge-purge-schedule.json");
    event["time"] = at.to_rfc3339().into();
    event
}

#[tokio::test]
async fn a_merchant_without_deliveries_for_a_day_raises_the_alert_and_a_delivering_one_does_not() {
    // Installed first: a callsite first hit with no subscriber would stay silent.
    let logs = LogCapture::default();
    let _guard = logs.install();
    let clock = Arc::new(ManualClock::new(t0()));
    let shop = merchant(|_| {});
    let local = start_local("silence", clock.clone(), &shop).await;
    // A WooCommerce merchant created at the same time, whose webhook never delivers, and a
    // custom-platform merchant with the check turned off.
    let woo = demo("events/demo-merchant-woocommerce.json", |_| {});
    local.store().put_merchant(&woo, t0()).await.unwrap();
    let quiet = demo("events/demo-merchant-custom.json", |v| v["alerts"] = json!({ "silence_hours": 0 }));
    local.store().put_merchant(&quiet, t0()).await.unwrap();

    // Newly created: no one is silent yet, though nobody delivered.
    let early = callfy_shared::app::silence::check(local.store(), t0() + Duration::hours(12)).await.unwrap();
    assert_eq!((early.checked, early.silent.len()), (3, 0), "{early:?}");

    // The Shopify store delivers the next day; its day is stamped once.
    clock.set(t0() + Duration::hours(20));
    assert_eq!(post_shopify(&local.base_url, "checkouts/create", &unique("evt"), &checkout(clock.now())).await.0, 200);
    let id = MerchantId::parse("snowdevil").unwrap();
    assert!(!local.store().stamp_delivery(&id, "2026-11-29").await.unwrap(), "stamped by the delivery already");

    // The daily run a day and a half after creation, as the schedule drives it.
    let check = callfy_shared::app::silence::check(local.store(), t0() + Duration::hours(36)).await.unwrap();
    assert_eq!(check.checked, 3);
    assert_eq!(check.silent.iter().map(|m| m.as_str()).collect::<Vec<_>>(), vec!["snowdevil-woo"], "{check:?}");
    // The early check emitted 0, this one 1 (dimension Service only).
    assert_eq!(logs.metric("MerchantSilent"), vec![(0.0, None), (1.0, None)]);
    let warning = logs.lines().into_iter().find(|l| l.to_string().contains("merchant silent")).expect("a warning");
    assert!(warning.to_string().contains("snowdevil-woo") && !warning.to_string().contains("+1415"), "{warning}");

    // The purger's scheduled run makes the same check; a merchant closed is never silent.
    local
        .store()
        .set_merchant_status(
            &MerchantId::parse("snowdevil-woo").unwrap(),
            callfy_shared::adapters::store::MerchantStatus::Closed,
        )
        .await
        .unwrap();
    retention_purger::handle(&local.functions().purger, &purge_event(t0() + Duration::hours(36)), None).await.unwrap();
    assert_eq!(logs.metric("MerchantSilent").last(), Some(&(0.0, None)));
    // Without deliveries for two days the Shopify store is silent too.
    let later = callfy_shared::app::silence::check(local.store(), t0() + Duration::days(3)).await.unwrap();
    assert_eq!(later.silent.iter().map(|m| m.as_str()).collect::<Vec<_>>(), vec!["snowdevil"]);
    local.shutdown().await;
}

// ---- a stand-in for the platforms' REST APIs ------------------------------------------------

#[derive(Default)]
struct Api {
    checkouts: Vec<Value>,
    orders: Vec<Value>,
    woo_orders: Vec<Value>,
    requests: Vec<String>,
}

const SHOPIFY_TOKEN: &str = "shpat_test_backfill_token";
const WOO_KEY: &str = "ck_test";
const WOO_SECRET: &str = "cs_test_secret";

async fn api_stand_in(api: Arc<Mutex<Api>>) -> String {
    async fn shopify(
        State((api, base)): State<(Arc<Mutex<Api>>, String)>,
        headers: HeaderMap,
        Query(q): Query<HashMap<String, String>>,
        uri: axum::http::Uri,
    ) -> Response {
        if headers.get("x-shopify-access-token").and_then(|v| v.to_str().ok()) != Some(SHOPIFY_TOKEN) {
            return StatusCode::UNAUTHORIZED.into_response();
        }
        let mut a = api.lock().unwrap();
        a.requests.push(uri.to_string());
        // Shopify's next-page URL carries only the cursor (and the limit).
        assert!(q.contains_key("updated_at_min") || q.contains_key("page_info"), "{uri}");
        let (field, items) = if uri.path().ends_with("/checkouts.json") {
            ("checkouts", a.checkouts.clone())
        } else {
            ("orders", a.orders.clone())
        };
        // Two pages: the first names the second in `Link`, as Shopify's cursor pagination does.
        match q.get("page_info").map(String::as_str) {
            None => {
                let next = format!("<{base}{}?limit=250&page_info=p2>; rel=\"next\"", uri.path());
                ([("link", next)], axum::Json(json!({ field: items }))).into_response()
            }
            Some(_) => axum::Json(json!({ field: [] })).into_response(),
        }
    }
    async fn woo(State((api, _)): State<(Arc<Mutex<Api>>, String)>, headers: HeaderMap) -> Response {
        use base64::Engine;
        let basic =
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{WOO_KEY}:{WOO_SECRET}")));
        if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(basic.as_str()) {
            return StatusCode::UNAUTHORIZED.into_response();
        }
        let a = api.lock().unwrap();
        ([("x-wp-totalpages", "1")], axum::Json(Value::Array(a.woo_orders.clone()))).into_response()
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let v = SHOPIFY_API_VERSION;
    let app = Router::new()
        .route(&format!("/admin/api/{v}/checkouts.json"), get(shopify))
        .route(&format!("/admin/api/{v}/orders.json"), get(shopify))
        .route("/wp-json/wc/v3/orders", get(woo))
        .with_state((api, base.clone()));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    base
}

#[tokio::test]
async fn backfilling_a_shopify_checkout_texts_its_shopper_once_and_again_changes_nothing() {
    let clock = Arc::new(ManualClock::new(t0()));
    let shop = merchant(|v| v["shopify"] = json!({ "admin_api_token": SHOPIFY_TOKEN }));
    let local = start_local("backfill-shop", clock.clone(), &shop).await;
    let api = Arc::new(Mutex::new(Api::default()));
    let base = api_stand_in(api.clone()).await;
    api.lock().unwrap().checkouts = vec![checkout(t0() - Duration::minutes(30))];
    let client = PlatformApi::new(Some(&base), std::time::Duration::from_secs(5)).unwrap();
    let id = MerchantId::parse("snowdevil").unwrap();
    let queue = &local.functions().ingest.queue;
    // The token is a secret: stored apart from the profile, read back for the backfill.
    assert!(
        local.store().get_merchant(&id).await.unwrap().unwrap().merchant.shopify.unwrap().admin_api_token.is_none()
    );

    let since = t0() - Duration::days(1);
    let r = callfy_admin::backfill::run(local.store(), queue, &client, &id, since, clock.now()).await.unwrap();
    assert_eq!((r.read, r.outcomes.get("accepted").copied()), (1, Some(1)), "{r:?}");
    local.drain().await.unwrap();
    let sent = local.sandbox.messages();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(sent[0].body.contains("Snowdevil"), "{}", sent[0].body);
    let token = CartToken::parse(checkout(t0())["token"].as_str().unwrap()).unwrap();
    assert_eq!(local.store().get_cart(&id, &token).await.unwrap().unwrap().status, CartStatus::Open);
    // Both listings were read, page after page.
    assert!(api.lock().unwrap().requests.iter().any(|r| r.contains("page_info=p2")));

    // Again: the same keys, nothing applied, nothing queued, nothing sent.
    let again = callfy_admin::backfill::run(local.store(), queue, &client, &id, since, clock.now()).await.unwrap();
    assert_eq!(again.outcomes.get("duplicate").copied(), Some(1), "{again:?}");
    assert_eq!(local.drain().await.unwrap().received, 0);
    assert_eq!(local.sandbox.messages().len(), 1);

    // A wrong token is the API's 401, reported, nothing applied.
    let wrong = merchant(|v| v["shopify"] = json!({ "admin_api_token": "shpat_wrong_token" }));
    local.store().put_merchant(&wrong, clock.now()).await.unwrap();
    let err = callfy_admin::backfill::run(local.store(), queue, &client, &id, since, clock.now()).await.unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");
    local.shutdown().await;
}

fn woo_order(file: &str, at: DateTime<Utc>) -> Value {
    let mut o = read_json(&format!("events/woocommerce/{file}"));
    let gmt = at.format("%Y-%m-%dT%H:%M:%S").to_string();
    o["date_created_gmt"] = gmt.clone().into();
    o["date_modified_gmt"] = gmt.into();
    o
}

#[tokio::test]
async fn a_backfilled_woocommerce_order_completes_its_cart() {
    let clock = Arc::new(ManualClock::new(t0()));
    let api = Arc::new(Mutex::new(Api::default()));
    let base = api_stand_in(api.clone()).await;
    let woo = demo("events/demo-merchant-woocommerce.json", |v| {
        v["woocommerce"]["store_url"] = base.clone().into();
        v["woocommerce"]["consumer_key"] = WOO_KEY.into();
        v["woocommerce"]["consumer_secret"] = WOO_SECRET.into();
    });
    let local = start_local("backfill-woo", clock.clone(), &woo).await;
    // The pending order arrived by webhook; the paid update never did (the webhook was disabled).
    let pending = serde_json::to_vec(&woo_order("order-pending.json", t0())).unwrap();
    let secret = woo.webhook_secret.as_deref().unwrap();
    let resp = reqwest::Client::new()
        .post(format!("{}/webhooks/woocommerce/snowdevil-woo", local.base_url))
        .header("content-type", "application/json")
        .header("x-wc-webhook-topic", "order.created")
        .header("x-wc-webhook-resource", "order")
        .header("x-wc-webhook-delivery-id", "d-1")
        .header("x-wc-webhook-signature", hmac_sha256_base64(secret.as_bytes(), &pending))
        .body(pending)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    local.drain().await.unwrap();
    assert_eq!(local.sandbox.messages().len(), 1);

    clock.advance(Duration::hours(3));
    api.lock().unwrap().woo_orders = vec![woo_order("order-processing.json", t0() + Duration::minutes(30))];
    let client = PlatformApi::new(None, std::time::Duration::from_secs(5)).unwrap();
    let id = MerchantId::parse("snowdevil-woo").unwrap();
    let queue = &local.functions().ingest.queue;
    let r = callfy_admin::backfill::run(local.store(), queue, &client, &id, t0(), clock.now()).await.unwrap();
    assert_eq!(r.outcomes.get("accepted").copied(), Some(1), "{r:?}");
    let cart = local.store().get_cart(&id, &CartToken::parse("wc-727").unwrap()).await.unwrap().unwrap();
    assert_eq!(cart.status, CartStatus::Recovered);
    assert_eq!(cart.recovery.as_ref().map(|r| r.revenue.as_str()), Some("84.00"));
    // Again: a duplicate.
    let again = callfy_admin::backfill::run(local.store(), queue, &client, &id, t0(), clock.now()).await.unwrap();
    assert_eq!(again.outcomes.get("duplicate").copied(), Some(1), "{again:?}");
    local.shutdown().await;
}
