//! An opt-out outlives everything (§3d): retention, `customers/redact`, a deletion request and
//! account closure keep a suppression record (a keyed hash, a date and a source, never the
//! number), every consent decision reads it, and a stale checkout afterwards sends nothing.

use callfy_integration_tests::*;
use callfy_local::LocalHandle;
use callfy_local::sandbox::InboundRequest;
use callfy_shared::domain::consent::ConsentStatus;
use callfy_shared::domain::merchant::Channel;
use callfy_shared::{ManualClock, MerchantId, Phone};
use chrono::{DateTime, Duration, Utc};
use serde_json::json;
use std::sync::Arc;

fn t0() -> DateTime<Utc> {
    "2026-11-28T19:00:00Z".parse().unwrap()
}

fn ids() -> (MerchantId, Phone) {
    (MerchantId::parse("snowdevil").unwrap(), Phone::parse(PHONE, None).unwrap())
}

async fn stop(local: &LocalHandle) {
    let req = InboundRequest {
        from: PHONE.into(),
        to: "+15005550006".into(),
        body: "STOP".into(),
        messaging_service_sid: Some("MG0123456789abcdef0123456789abcdef".into()),
    };
    local.sandbox.receive(&req).await.expect("sms-inbound answers");
}

/// Every item of the table that holds the raw number anywhere (keys or attributes).
async fn items_with_number(local: &LocalHandle) -> Vec<String> {
    let client = callfy_shared::adapters::aws::dynamodb(&sdk().await);
    let mut found = Vec::new();
    let mut start = None;
    loop {
        let out = client.scan().table_name(local.store().table()).set_exclusive_start_key(start).send().await.unwrap();
        for item in out.items() {
            let text = format!("{item:?}");
            if text.contains("4155552671") {
                let pk = item.get("pk").and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
                let sk = item.get("sk").and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
                found.push(format!("{pk} / {sk}"));
            }
        }
        start = out.last_evaluated_key().cloned();
        if start.is_none() {
            return found;
        }
    }
}

/// A checkout texted at t0, then STOP a day later.
async fn stopped(prefix: &str) -> (LocalHandle, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(t0()));
    let local = start_local(prefix, clock.clone(), &merchant(|_| {})).await;
    assert_eq!(post_shopify(&local.base_url, "checkouts/create", &unique("evt"), &checkout(t0())).await.0, 200);
    local.drain().await.unwrap();
    assert_eq!(local.sandbox.messages().len(), 1);
    clock.set(t0() + Duration::days(1));
    stop(&local).await;
    (local, clock)
}

/// The platform sends the old checkout again (its box ticked at t0, before the STOP).
async fn stale_checkout_sends_nothing(local: &LocalHandle) {
    let before = local.sandbox.messages().len();
    assert_eq!(post_shopify(&local.base_url, "checkouts/update", &unique("evt"), &checkout(t0())).await.0, 200);
    local.drain().await.unwrap();
    assert_eq!(local.sandbox.messages().len(), before, "nothing is sent after the opt-out");
    let (m, phone) = ids();
    assert_eq!(local.store().consent_state(&m, &phone, Channel::Sms).await.unwrap().status, ConsentStatus::OptedOut);
}

#[tokio::test]
async fn a_stop_survives_a_25_month_purge_and_a_stale_checkout_afterwards_sends_nothing() {
    let (local, clock) = stopped("sup-purge").await;
    let (m, phone) = ids();
    let later = t0() + Duration::days(31 * 25);
    clock.set(later);
    local.purge(later, false, None).await.unwrap();
    // The ledger is gone with everything else about the person; the opt-out is not.
    assert!(local.store().consent_ledger(&m, &phone, Channel::Sms).await.unwrap().is_empty());
    let state = local.store().consent_state(&m, &phone, Channel::Sms).await.unwrap();
    assert_eq!((state.status, state.last_occurred_at), (ConsentStatus::OptedOut, Some(t0() + Duration::days(1))));
    assert_eq!(items_with_number(&local).await, Vec::<String>::new(), "no raw number is left");
    stale_checkout_sends_nothing(&local).await;
    // A newer consent (the person checks out again and ticks the box) is honoured.
    let mut fresh = checkout(later);
    fresh["token"] = "fresh0000000000000000000000000001".into();
    fresh["id"] = 981820079255249999u64.into();
    assert_eq!(post_shopify(&local.base_url, "checkouts/create", &unique("evt"), &fresh).await.0, 200);
    local.drain().await.unwrap();
    assert_eq!(local.store().consent_state(&m, &phone, Channel::Sms).await.unwrap().status, ConsentStatus::OptedIn);
    local.shutdown().await;
}

#[tokio::test]
async fn a_stop_survives_customers_redact_and_no_raw_number_remains() {
    let (local, clock) = stopped("sup-redact").await;
    clock.set(t0() + Duration::days(2));
    let redact = json!({ "shop_id": 954889, "shop_domain": SHOP, "customer": { "id": 191167, "email": "ann.lee@example.com", "phone": PHONE }, "orders_to_redact": [] });
    assert_eq!(post_shopify(&local.base_url, "customers/redact", &unique("evt"), &redact).await.0, 200);
    local.purge(t0() + Duration::days(2), false, None).await.unwrap();
    let (m, phone) = ids();
    assert!(local.store().customer_items(&m, &phone).await.unwrap().is_empty());
    assert_eq!(items_with_number(&local).await, Vec::<String>::new(), "no raw number is left");
    for channel in [Channel::Sms, Channel::Voice] {
        assert_eq!(local.store().consent_state(&m, &phone, channel).await.unwrap().status, ConsentStatus::OptedOut);
    }
    stale_checkout_sends_nothing(&local).await;
    local.shutdown().await;
}

#[tokio::test]
async fn a_stop_survives_account_closure_and_reinstallation() {
    let (local, clock) = stopped("sup-closure").await;
    let (m, phone) = ids();
    clock.set(t0() + Duration::days(2));
    let (status, _) = post_shopify(&local.base_url, "app/uninstalled", &unique("evt"), &json!({ "id": 1 })).await;
    assert_eq!(status, 200);
    let later = t0() + Duration::days(40);
    clock.set(later);
    local.purge(later, false, None).await.unwrap();
    assert!(local.store().get_merchant(&m).await.unwrap().is_none(), "the account was erased");
    assert_eq!(items_with_number(&local).await, Vec::<String>::new(), "no raw number is left");
    // The merchant installs again: the opt-out still holds.
    local.store().put_merchant(&merchant(|_| {}), later).await.unwrap();
    assert_eq!(local.store().consent_state(&m, &phone, Channel::Sms).await.unwrap().status, ConsentStatus::OptedOut);
    stale_checkout_sends_nothing(&local).await;
    local.shutdown().await;
}

#[test]
fn durable_pseudonyms_do_not_depend_on_the_log_key() {
    // Rotating the log key must not orphan a marker: subject ids use the marker key only.
    let phone = Phone::parse(PHONE, None).unwrap();
    let before = phone.subject_id();
    assert_ne!(before, phone.log_id_with_key(b"a-rotated-log-key-0123"));
    assert_eq!(before, callfy_shared::domain::phone::marker_hash("subject", PHONE));
    assert_ne!(before, callfy_shared::domain::phone::keyed_hash("subject", PHONE));
}

#[tokio::test]
async fn deleting_a_person_who_sent_stop_leaves_only_keyed_records() {
    let (local, clock) = stopped("sup-delete").await;
    let (m, phone) = ids();
    clock.set(t0() + Duration::days(2));
    let key = callfy_shared::api_key::new_api_key(&m);
    let hash = callfy_shared::signature::sha256_hex(key.as_bytes());
    local.store().set_api_key_hash(&m, &hash).await.unwrap();
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/privacy/delete", local.base_url))
        .bearer_auth(&key)
        .json(&json!({ "phone": PHONE }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(items_with_number(&local).await, Vec::<String>::new(), "no raw number is left");
    assert_eq!(local.store().consent_state(&m, &phone, Channel::Voice).await.unwrap().status, ConsentStatus::OptedOut);
    stale_checkout_sends_nothing(&local).await;
    local.shutdown().await;
}
