//! Data-subject requests through the merchant API and Shopify's privacy topics: an export holds
//! every kind of record of a customer seeded with all of them; a deletion leaves only the
//! opt-out marker and a proof, and a later checkout with the old ticked box sends nothing; a
//! legal hold defers a deletion until it lifts.

use callfy_integration_tests::*;
use callfy_local::LocalHandle;
use callfy_shared::api_key::new_api_key;
use callfy_shared::domain::merchant::Channel;
use callfy_shared::domain::subject::SubjectKey;
use callfy_shared::signature::sha256_hex;
use callfy_shared::{ManualClock, MerchantId, Phone};
use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};
use std::sync::Arc;

fn t0() -> DateTime<Utc> {
    "2026-11-28T19:00:00Z".parse().unwrap()
}

/// The voice demo merchant with a text and a recorded call for one shopper, and an API key.
async fn seeded(prefix: &str) -> (LocalHandle, Arc<ManualClock>, String, String) {
    let clock = Arc::new(ManualClock::new(t0()));
    let mut v = read_json("events/demo-merchant-voice.json");
    v["flow"] = json!([{ "after_minutes": 0, "channel": "sms" }, { "after_minutes": 1, "channel": "voice" }]);
    let m = callfy_shared::domain::merchant::Merchant::from_json(&v.to_string()).unwrap();
    let local = start_local(prefix, clock.clone(), &m).await;
    let mut body = checkout(t0());
    body["note_attributes"] = json!([{ "name": "callfy_voice_consent", "value": "yes" }]);
    assert_eq!(post_shopify(&local.base_url, "checkouts/create", &unique("evt"), &body).await.0, 200);
    local.drain().await.unwrap();
    clock.set(t0() + Duration::minutes(1));
    let job = callfy_shared::domain::flow::OutreachJob {
        merchant_id: m.id.clone(),
        cart_token: callfy_shared::CartToken::parse("cd8e6f2f1c0b4a2e9d6c7b8a9f0e1d2c").unwrap(),
        step: 1,
        due_at: t0(),
    };
    outreach_worker::process_job(&local.functions().worker.outreach, &job).await.unwrap();
    let sid = local.sandbox.calls()[0].sid.clone();
    local.sandbox.answer_call(&sid, "human").await.unwrap();
    local.sandbox.end_call(&sid, "completed", 12).await.unwrap();
    assert_eq!(local.poll_recordings(0).await.unwrap().succeeded, 1);
    let key = new_api_key(&m.id);
    local.store().set_api_key_hash(&m.id, &sha256_hex(key.as_bytes())).await.unwrap();
    (local, clock, key, sid)
}

async fn api(local: &LocalHandle, key: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let client = reqwest::Client::new();
    let url = format!("{}{path}", local.base_url);
    let mut req = if method == "GET" { client.get(url) } else { client.post(url) };
    req = req.bearer_auth(key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn ids() -> (MerchantId, Phone) {
    (MerchantId::parse("snowdevil").unwrap(), Phone::parse(PHONE, None).unwrap())
}

#[tokio::test]
async fn an_export_holds_every_kind_of_record_with_recordings_as_links() {
    let (local, _, key, sid) = seeded("dsr-export").await;
    for subject in [json!({ "phone": "(415) 555-2671" }), json!({ "email": "ANN.LEE@example.com" })] {
        let (status, doc) = api(&local, &key, "POST", "/v1/privacy/export", Some(subject.clone())).await;
        assert_eq!(status, 200, "{doc}");
        assert_eq!(doc["carts"].as_array().unwrap().len(), 1, "{subject}: {doc}");
        let person = &doc["phones"][0];
        assert_eq!(person["phone"], PHONE);
        assert!(!person["consent"]["sms"]["entries"].as_array().unwrap().is_empty());
        assert!(person["consent"]["sms"]["entries"][0]["event"]["evidence"].is_object());
        assert!(!person["consent"]["voice"]["entries"].as_array().unwrap().is_empty());
        assert_eq!(person["sms_log"].as_array().unwrap().len(), 1);
        assert_eq!(person["call_log"][0]["call_sid"], sid.as_str());
        let url = person["recordings"][0]["url"].as_str().unwrap();
        let wav = reqwest::get(url).await.unwrap();
        assert_eq!(wav.status().as_u16(), 200, "the link works for an hour");
        assert_eq!(&wav.bytes().await.unwrap()[..4], b"RIFF");
    }
    // Bad requests change nothing and say why.
    let (status, answer) = api(&local, &key, "POST", "/v1/privacy/export", Some(json!({ "phone": "12" }))).await;
    assert_eq!((status, answer["field"].as_str()), (422, Some("phone")));
    let (status, _) =
        api(&local, &key, "POST", "/v1/privacy/export", Some(json!({ "phone": PHONE, "email": "a@b.c" }))).await;
    assert_eq!(status, 422);
    let (status, _) =
        api(&local, "cfy_live_snowdevil_nope", "POST", "/v1/privacy/export", Some(json!({ "phone": PHONE }))).await;
    assert_eq!(status, 401);
    local.shutdown().await;
}

#[tokio::test]
async fn a_deletion_leaves_only_the_marker_and_the_proof_and_an_old_checkout_sends_and_stores_nothing() {
    let (local, clock, key, sid) = seeded("dsr-delete").await;
    let (m, phone) = ids();
    clock.set(t0() + Duration::hours(2));
    let (status, answer) = api(&local, &key, "POST", "/v1/privacy/delete", Some(json!({ "phone": PHONE }))).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("done")), "{answer}");
    let counts = &answer["counts"];
    assert_eq!((counts["cart"].as_u64(), counts["recording"].as_u64()), (Some(1), Some(1)), "{answer}");
    assert!(counts["sms_log"].as_u64().unwrap() >= 1 && counts["consent_entry"].as_u64().unwrap() >= 2, "{answer}");
    let store = local.store();
    assert!(store.customer_items(&m, &phone).await.unwrap().is_empty(), "the person's partition is empty");
    assert!(store.carts_for_phone(&m, &phone).await.unwrap().is_empty());
    let s3 = callfy_shared::adapters::aws::s3(&sdk().await);
    let object = format!("recordings/snowdevil/2026/11/{sid}.wav");
    assert!(s3.head_object().bucket(&local.resources.names.bucket).key(&object).send().await.is_err());
    assert!(store.deletion_marker(&m, &SubjectKey::phone(&phone)).await.unwrap().is_some());
    // The proof: counts, time, the subject's HMAC, never the number.
    let id = answer["id"].as_str().unwrap();
    let (status, proof) = api(&local, &key, "GET", &format!("/v1/privacy/requests/{id}"), None).await;
    assert_eq!((status, proof["status"].as_str()), (200, Some("done")), "{proof}");
    assert!(!proof.to_string().contains("4155552671"));

    // The platform resends the old checkout, box still ticked from before the deletion.
    clock.set(t0() + Duration::hours(3));
    let messages = local.sandbox.messages().len();
    assert_eq!(post_shopify(&local.base_url, "checkouts/update", &unique("evt"), &checkout(t0())).await.0, 200);
    local.drain().await.unwrap();
    assert_eq!(local.sandbox.messages().len(), messages, "nothing is sent");
    assert_eq!(
        store.consent_state(&m, &phone, Channel::Sms).await.unwrap().status,
        callfy_shared::domain::consent::ConsentStatus::Unknown
    );
    // A late copy of deleted data is not stored again: no cart, no email pointer, no number.
    assert!(store.carts_for_phone(&m, &phone).await.unwrap().is_empty());
    let held = items_holding(&local, PHONE).await;
    assert!(held.is_empty(), "items holding the deleted number after an old checkout's copy: {held:?}");
    // A checkout made after the deletion is a new one; its box, ticked before it, still
    // does not bring back the opt-in the deletion closed.
    let mut newer = checkout(t0());
    newer["updated_at"] = (t0() + Duration::hours(3)).to_rfc3339().into();
    assert_eq!(post_shopify(&local.base_url, "checkouts/update", &unique("evt"), &newer).await.0, 200);
    let cart = store.carts_for_phone(&m, &phone).await.unwrap();
    assert_eq!(cart.len(), 1);
    assert_eq!(cart[0].consent_note.as_deref(), Some("deleted_subject"));
    local.drain().await.unwrap();
    assert_eq!(local.sandbox.messages().len(), messages, "still nothing is sent");
    local.shutdown().await;
}

#[tokio::test]
async fn a_late_checkout_carrying_a_deleted_email_is_not_stored_even_with_a_new_number() {
    let (local, clock, key, _) = seeded("dsr-email").await;
    let (m, _) = ids();
    clock.set(t0() + Duration::hours(2));
    let (status, answer) =
        api(&local, &key, "POST", "/v1/privacy/delete", Some(json!({ "email": "Ann.Lee@example.com" }))).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("done")), "{answer}");
    let store = local.store();
    assert!(store.deletion_marker(&m, &SubjectKey::email("ann.lee@example.com")).await.unwrap().is_some());

    // The platform retries the checkout from before the deletion; the number on it has changed.
    clock.set(t0() + Duration::hours(3));
    let new_number = "+14155550177";
    let old: Value = serde_json::from_str(&checkout(t0()).to_string().replace(PHONE, new_number)).unwrap();
    assert_eq!(post_shopify(&local.base_url, "checkouts/update", &unique("evt"), &old).await.0, 200);
    local.drain().await.unwrap();
    for needle in ["ann.lee@example.com", new_number] {
        let held = items_holding(&local, needle).await;
        assert!(held.is_empty(), "items holding {needle} after a copy from before the deletion: {held:?}");
    }
    // One made after the deletion is a new checkout, stored.
    let mut newer = old.clone();
    newer["updated_at"] = (t0() + Duration::hours(3)).to_rfc3339().into();
    assert_eq!(post_shopify(&local.base_url, "checkouts/update", &unique("evt"), &newer).await.0, 200);
    let number = Phone::parse(new_number, None).unwrap();
    assert_eq!(store.carts_for_phone(&m, &number).await.unwrap().len(), 1);
    local.shutdown().await;
}

/// Every item of the table whose attributes hold `needle`, as `pk / sk`.
async fn items_holding(local: &LocalHandle, needle: &str) -> Vec<String> {
    let ddb = callfy_shared::adapters::aws::dynamodb(&sdk().await);
    let (mut held, mut start) = (Vec::new(), None);
    loop {
        let page =
            ddb.scan().table_name(local.store().table()).set_exclusive_start_key(start.take()).send().await.unwrap();
        for item in page.items() {
            if format!("{item:?}").contains(needle) {
                let s = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
                held.push(format!("{} / {}", s("pk"), s("sk")));
            }
        }
        match page.last_evaluated_key() {
            Some(k) if !k.is_empty() => start = Some(k.clone()),
            _ => return held,
        }
    }
}

#[tokio::test]
async fn a_consent_api_answer_is_stored_without_the_number_and_a_deletion_leaves_none() {
    let (local, clock, key, _) = seeded("dsr-idem").await;
    clock.set(t0() + Duration::hours(1));
    let opt_out =
        json!({ "phone": PHONE, "channel": "voice", "action": "opt_out", "occurred_at": "2026-11-28T19:30:00Z" });
    let post = |body: Value| {
        let (url, key) = (format!("{}/v1/consents", local.base_url), key.clone());
        async move {
            let resp = reqwest::Client::new()
                .post(url)
                .bearer_auth(key)
                .header("idempotency-key", "dsr-idem-1")
                .json(&body)
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
    };
    let first = post(opt_out.clone()).await;
    assert!(first.0 < 300 && first.1.contains(PHONE), "{first:?}");
    // The stored answer does not hold the number; its replay, to the same request, does.
    assert!(items_holding(&local, PHONE).await.iter().all(|k| !k.starts_with("I#")));
    assert_eq!(post(opt_out).await, first, "a retry is told exactly the same");

    let (status, answer) = api(&local, &key, "POST", "/v1/privacy/delete", Some(json!({ "phone": PHONE }))).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("done")), "{answer}");
    let held = items_holding(&local, PHONE).await;
    assert!(held.is_empty(), "items still holding the deleted number: {held:?}");
    local.shutdown().await;
}

#[tokio::test]
async fn a_deletion_under_a_legal_hold_waits_for_it_to_lift() {
    let (local, clock, key, _) = seeded("dsr-hold").await;
    let (m, phone) = ids();
    local.store().set_legal_hold(&m, true).await.unwrap();
    let (status, answer) = api(&local, &key, "POST", "/v1/privacy/delete", Some(json!({ "phone": PHONE }))).await;
    assert_eq!((status, answer["status"].as_str()), (202, Some("held")), "{answer}");
    assert!(!local.store().customer_items(&m, &phone).await.unwrap().is_empty(), "kept under the hold");
    let r = local.purge(t0() + Duration::days(1), false, None).await.unwrap();
    assert!(r.held.contains_key("snowdevil"), "{r:?}");
    assert!(!local.store().customer_items(&m, &phone).await.unwrap().is_empty());
    local.store().set_legal_hold(&m, false).await.unwrap();
    clock.set(t0() + Duration::days(2));
    local.purge(t0() + Duration::days(2), false, None).await.unwrap();
    assert!(local.store().customer_items(&m, &phone).await.unwrap().is_empty(), "carried out once lifted");
    let id = answer["id"].as_str().unwrap();
    let (_, status) = api(&local, &key, "GET", &format!("/v1/privacy/requests/{id}"), None).await;
    assert_eq!(status["status"].as_str(), Some("done"), "{status}");
    local.shutdown().await;
}

#[tokio::test]
async fn shopify_data_requests_are_exported_and_redactions_carried_out() {
    let (local, _, key, _) = seeded("dsr-shopify").await;
    let (m, phone) = ids();
    let request = json!({ "shop_id": 954889, "shop_domain": SHOP, "orders_requested": [],
        "customer": { "id": 191167, "email": "ann.lee@example.com", "phone": PHONE }, "data_request": { "id": 9999 } });
    assert_eq!(post_shopify(&local.base_url, "customers/data_request", &unique("evt"), &request).await.0, 200);
    local.purge(t0() + Duration::hours(1), false, None).await.unwrap();
    let (status, answer) = api(&local, &key, "GET", "/v1/privacy/requests/9999", None).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("done")), "{answer}");
    let url = answer["export_url"].as_str().unwrap();
    let doc: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
    assert_eq!(doc["phones"][0]["phone"], PHONE);
    let s3 = callfy_shared::adapters::aws::s3(&sdk().await);
    let head =
        s3.head_object().bucket(&local.resources.names.bucket).key("exports/snowdevil/9999.json").send().await.unwrap();
    assert_eq!(head.server_side_encryption().map(|s| s.as_str()), Some("aws:kms"));

    let redact = json!({ "shop_id": 954889, "shop_domain": SHOP, "customer": { "id": 191167, "email": "ann.lee@example.com", "phone": PHONE }, "orders_to_redact": [] });
    assert_eq!(post_shopify(&local.base_url, "customers/redact", &unique("evt"), &redact).await.0, 200);
    local.purge(t0() + Duration::hours(2), false, None).await.unwrap();
    assert!(local.store().customer_items(&m, &phone).await.unwrap().is_empty());
    assert!(local.store().deletion_marker(&m, &SubjectKey::phone(&phone)).await.unwrap().is_some());
    // The export file made for the person goes with them.
    let gone = s3.head_object().bucket(&local.resources.names.bucket).key("exports/snowdevil/9999.json").send().await;
    assert!(gone.is_err(), "the export file was deleted with the person");
    local.shutdown().await;
}

#[tokio::test]
async fn a_shopify_redaction_answers_at_once_and_is_carried_out_when_received() {
    let (local, clock, key, _sid) = seeded("dsr-shopify-now").await;
    let (m, phone) = ids();
    clock.set(t0() + Duration::hours(2));
    let redact = json!({ "shop_id": 954889, "shop_domain": SHOP, "customer": { "id": 191167, "email": "ann.lee@example.com", "phone": PHONE }, "orders_to_redact": [] });
    let redact_id = unique("evt");
    assert_eq!(post_shopify(&local.base_url, "customers/redact", &redact_id, &redact).await.0, 200);
    // The status answers from the moment the request is accepted (no purge run needed); a
    // redaction has no request id of Shopify's, so it is named after its delivery.
    let pending_id = format!("shopify-{redact_id}");
    let (status, answer) = api(&local, &key, "GET", &format!("/v1/privacy/requests/{pending_id}"), None).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("accepted")), "{answer}");
    // The worker carries it out from the queue: no nightly run in between.
    local.drain().await.unwrap();
    let (status, answer) = api(&local, &key, "GET", &format!("/v1/privacy/requests/{pending_id}"), None).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("done")), "{answer}");
    assert!(answer["counts"]["recording"].as_u64() == Some(1), "{answer}");
    assert!(local.store().customer_items(&m, &phone).await.unwrap().is_empty());
    assert!(local.store().carts_for_phone(&m, &phone).await.unwrap().is_empty());
    local.shutdown().await;
}

#[tokio::test]
async fn a_deletion_redacts_twilios_copies_at_once_and_the_purger_retries_what_failed() {
    let (local, clock, key, _) = seeded("dsr-twilio").await;
    clock.set(t0() + Duration::hours(2));
    let sent = local.sandbox.messages();
    assert_eq!(sent.len(), 1);
    assert!(!sent[0].body.is_empty());
    // Twilio refuses the first redaction (a 500): the copy stays recorded, never skipped.
    local.sandbox.inject(callfy_local::sandbox::Fault { status: 500, code: 20500, count: 1, accept_then_hang_ms: 0 });
    let (status, answer) = api(&local, &key, "POST", "/v1/privacy/delete", Some(json!({ "phone": PHONE }))).await;
    assert_eq!((status, answer["counts"]["twilio_message"].as_u64()), (200, Some(1)), "{answer}");
    let id = answer["id"].as_str().unwrap().to_string();
    // The status answers at once, with what Twilio still holds.
    let path = format!("/v1/privacy/requests/{id}");
    let (_, st) = api(&local, &key, "GET", &path, None).await;
    assert_eq!(st["provider_copies_pending"]["twilio_message"].as_u64(), Some(1), "{st}");
    local.drain().await.unwrap();
    assert!(!local.sandbox.messages()[0].body.is_empty(), "the injected failure kept the body");
    let (_, st) = api(&local, &key, "GET", &path, None).await;
    assert_eq!(st["provider_copies_pending"]["twilio_message"].as_u64(), Some(1), "{st}");
    // The purger queues it again; the worker redacts it; nothing is left pending.
    let r = local.purge(t0() + Duration::hours(3), false, None).await.unwrap();
    assert_eq!(r.provider_copies_requeued, 1, "{r:?}");
    local.drain().await.unwrap();
    assert_eq!(local.sandbox.messages()[0].body, "", "Twilio's copy of the text is redacted");
    let (_, st) = api(&local, &key, "GET", &path, None).await;
    assert_eq!(st["provider_copies_pending"], json!({}), "{st}");
    assert!(local.sandbox.violations().is_empty(), "{:?}", local.sandbox.violations());
    let r = local.purge(t0() + Duration::days(2), false, None).await.unwrap();
    assert_eq!(r.provider_copies_requeued, 0, "{r:?}");
    local.shutdown().await;
}

#[tokio::test]
async fn a_legal_hold_keeps_recordings_out_of_the_lifecycle_rule_and_release_brings_them_back() {
    let (local, _, key, sid) = seeded("dsr-heldrec").await;
    let (m, _) = ids();
    let s3 = callfy_shared::adapters::aws::s3(&sdk().await);
    let bucket = &local.resources.names.bucket;
    let live = format!("recordings/snowdevil/2026/11/{sid}.wav");
    let held = format!("held/{live}");
    let exists = |k: String| {
        let s3 = s3.clone();
        async move { s3.head_object().bucket(bucket).key(k).send().await.is_ok() }
    };
    assert!(exists(live.clone()).await);
    let files = &local.functions().purger.recordings;
    let moved = callfy_shared::app::retention::set_legal_hold(local.store(), files, &m, true).await.unwrap();
    assert_eq!(moved, 1);
    assert!(!exists(live.clone()).await && exists(held.clone()).await, "no lifecycle rule covers held/");
    assert!(local.store().get_merchant(&m).await.unwrap().unwrap().legal_hold);
    // An export under the hold still links the recording where the hold keeps it.
    let (status, doc) = api(&local, &key, "POST", "/v1/privacy/export", Some(json!({ "phone": PHONE }))).await;
    assert_eq!(status, 200);
    let url = doc["phones"][0]["recordings"][0]["url"].as_str().unwrap();
    assert_eq!(reqwest::get(url).await.unwrap().status().as_u16(), 200, "{url}");
    // Released: back under recordings/, where retention and the lifecycle rule apply again.
    callfy_shared::app::retention::set_legal_hold(local.store(), files, &m, false).await.unwrap();
    assert!(exists(live.clone()).await && !exists(held).await);
    assert!(!local.store().get_merchant(&m).await.unwrap().unwrap().legal_hold);
    local.shutdown().await;
}

#[tokio::test]
async fn a_shopify_redaction_reaches_carts_by_customer_id_too() {
    let (local, clock, _key, _sid) = seeded("dsr-customer-id").await;
    let m = MerchantId::parse("snowdevil").unwrap();
    // The same Shopify customer, another number and email: only the customer id links them.
    let mut other = checkout(t0());
    other["token"] = "0123456789abcdef0123456789abcdef".into();
    other["id"] = 981820079255243999_u64.into();
    other["email"] = "a.lee.work@example.com".into();
    other["phone"] = "+14155550199".into();
    other["customer"]["id"] = 191167.into();
    other["customer"]["email"] = "a.lee.work@example.com".into();
    other["customer"]["phone"] = "+14155550199".into();
    other["sms_marketing_phone"] = "+14155550199".into();
    assert_eq!(post_shopify(&local.base_url, "checkouts/create", &unique("evt"), &other).await.0, 200);
    let token = callfy_shared::CartToken::parse("0123456789abcdef0123456789abcdef").unwrap();
    assert!(local.store().get_cart(&m, &token).await.unwrap().is_some());
    clock.set(t0() + Duration::hours(2));
    let redact = json!({ "shop_id": 954889, "shop_domain": SHOP, "customer": { "id": 191167, "email": "ann.lee@example.com", "phone": PHONE }, "orders_to_redact": [] });
    assert_eq!(post_shopify(&local.base_url, "customers/redact", &unique("evt"), &redact).await.0, 200);
    let stats = local.drain().await.unwrap();
    assert!(local.store().get_cart(&m, &token).await.unwrap().is_none(), "found by the customer id: {stats:?}");
    let other_phone = Phone::parse("+14155550199", None).unwrap();
    assert!(local.store().carts_for_phone(&m, &other_phone).await.unwrap().is_empty());
    local.shutdown().await;
}

/// An account closure (after its grace period) or a `shop/redact` of the uninstalled shop: the
/// texts the erasure deletes are redacted at Twilio too, through the worker, as for a person's
/// deletion.
async fn erasure_redacts_twilios_copies(prefix: &str, redact: bool) {
    let (local, clock, _key, _sid) = seeded(prefix).await;
    let (m, phone) = ids();
    assert!(!local.sandbox.messages()[0].body.is_empty());
    assert_eq!(post_shopify(&local.base_url, "app/uninstalled", &unique("evt"), &json!({ "id": 1 })).await.0, 200);
    let as_of = if redact {
        let body = json!({ "shop_id": 954889, "shop_domain": SHOP });
        assert_eq!(post_shopify(&local.base_url, "shop/redact", &unique("evt"), &body).await.0, 200);
        t0() + Duration::hours(2)
    } else {
        t0() + Duration::days(31)
    };
    local.drain().await.unwrap();
    clock.set(as_of);
    let r = local.purge(as_of, false, None).await.unwrap();
    assert!(r.of_kind(callfy_shared::domain::retention::PurgeKind::Erasure) >= 4, "{r:?}");
    assert!(local.store().sms_log(&m, &phone).await.unwrap().is_empty());
    local.drain().await.unwrap();
    assert_eq!(local.sandbox.messages()[0].body, "", "Twilio's copy of the text is redacted");
    assert!(local.sandbox.violations().is_empty(), "{:?}", local.sandbox.violations());
    // Crossed off: the next runs queue nothing again.
    let r = local.purge(as_of + Duration::days(1), false, None).await.unwrap();
    assert_eq!(r.provider_copies_requeued, 0, "{r:?}");
    assert_eq!(local.store().get_merchant(&m).await.unwrap().is_some(), redact, "a redaction keeps the account");
    local.shutdown().await;
}

#[tokio::test]
async fn an_account_closure_redacts_twilios_copies_of_the_texts_it_erases() {
    erasure_redacts_twilios_copies("erase-twilio-close", false).await;
}

#[tokio::test]
async fn a_shop_redaction_redacts_twilios_copies_of_the_texts_it_erases() {
    erasure_redacts_twilios_copies("erase-twilio-redact", true).await;
}

/// The `lookup` index lags the table: a checkout committed a moment before a deletion may not be
/// in it when the deletion looks. The cart's phone pointer is read consistently, so the deletion
/// finds and erases it all the same (the lag is made here by taking the cart out of the index).
#[tokio::test]
async fn a_cart_not_yet_in_the_lookup_index_is_found_and_erased_by_a_deletion() {
    let (local, clock, key, _) = seeded("dsr-lag").await;
    let (m, phone) = ids();
    let token = callfy_shared::CartToken::parse("cd8e6f2f1c0b4a2e9d6c7b8a9f0e1d2c").unwrap();
    let ddb = callfy_shared::adapters::aws::dynamodb(&sdk().await);
    ddb.update_item()
        .table_name(local.store().table())
        .key("pk", aws_sdk_dynamodb::types::AttributeValue::S(format!("K#{m}#{token}")))
        .key("sk", aws_sdk_dynamodb::types::AttributeValue::S("CART".into()))
        .update_expression("REMOVE gsi1pk, gsi1sk")
        .send()
        .await
        .unwrap();
    let found = local.store().carts_for_phone(&m, &phone).await.unwrap();
    assert_eq!(found.len(), 1, "found through its pointer");
    clock.set(t0() + Duration::hours(2));
    let (status, answer) = api(&local, &key, "POST", "/v1/privacy/delete", Some(json!({ "phone": PHONE }))).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("done")), "{answer}");
    assert_eq!(answer["counts"]["cart"].as_u64(), Some(1), "{answer}");
    assert!(local.store().get_cart(&m, &token).await.unwrap().is_none(), "the cart is erased");
    let held = items_holding(&local, "4155552671").await;
    assert!(held.is_empty(), "items holding the deleted number: {held:?}");
    local.shutdown().await;
}

/// A cart whose number changed keeps the old number's pointer until that number's deletion,
/// which removes it and leaves the cart (now another person's number) alone.
#[tokio::test]
async fn a_deletion_removes_a_stale_pointer_and_leaves_the_cart_that_moved_to_another_number() {
    let (local, clock, key, _) = seeded("dsr-moved").await;
    let (m, _) = ids();
    let token = callfy_shared::CartToken::parse("cd8e6f2f1c0b4a2e9d6c7b8a9f0e1d2c").unwrap();
    let later = t0() + Duration::minutes(30);
    clock.set(later);
    let moved: Value =
        serde_json::from_str(&checkout(later).to_string().replace("+14155552671", "+14155550199")).unwrap();
    assert_eq!(post_shopify(&local.base_url, "checkouts/update", &unique("evt"), &moved).await.0, 200);
    let cart = local.store().get_cart(&m, &token).await.unwrap().unwrap();
    assert_eq!(cart.phone.as_ref().map(Phone::as_str), Some("+14155550199"));
    assert!(!items_holding(&local, "N#snowdevil#+14155552671").await.is_empty(), "the old number's pointer");
    clock.set(t0() + Duration::hours(2));
    let (status, answer) = api(&local, &key, "POST", "/v1/privacy/delete", Some(json!({ "phone": PHONE }))).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("done")), "{answer}");
    let held = items_holding(&local, "4155552671").await;
    assert!(held.is_empty(), "items holding the deleted number: {held:?}");
    let kept = local.store().get_cart(&m, &token).await.unwrap().expect("the other number's cart stays");
    assert_eq!(kept.phone.as_ref().map(Phone::as_str), Some("+14155550199"));
    local.shutdown().await;
}

/// The consent API holds to the deletion as a checkout does: an opt-in from before it is refused
/// with the reason (nothing stored), one made after it is recorded.
#[tokio::test]
async fn an_api_opt_in_from_before_a_deletion_is_refused_and_one_after_it_is_recorded() {
    let (local, clock, key, _) = seeded("dsr-api-optin").await;
    let (m, phone) = ids();
    clock.set(t0() + Duration::hours(2));
    let (status, answer) = api(&local, &key, "POST", "/v1/privacy/delete", Some(json!({ "phone": PHONE }))).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("done")), "{answer}");
    let opt_in = |at: DateTime<Utc>| {
        json!({ "phone": PHONE, "channel": "sms", "action": "opt_in", "occurred_at": at.to_rfc3339(),
                "evidence": { "consent_text": "Send me cart reminders by text. Reply STOP to opt out." } })
    };
    clock.set(t0() + Duration::hours(3));
    let (status, answer) = api(&local, &key, "POST", "/v1/consents", Some(opt_in(t0() + Duration::hours(1)))).await;
    assert_eq!((status, answer["error"].as_str()), (409, Some("deleted_subject")), "{answer}");
    let state = local.store().consent_state(&m, &phone, Channel::Sms).await.unwrap();
    assert_eq!(state.seq, 0, "nothing stored: {state:?}");
    let (status, answer) =
        api(&local, &key, "POST", "/v1/consents", Some(opt_in(t0() + Duration::hours(2) + Duration::minutes(5)))).await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(
        local.store().consent_state(&m, &phone, Channel::Sms).await.unwrap().status,
        callfy_shared::domain::consent::ConsentStatus::OptedIn
    );
    local.shutdown().await;
}

#[tokio::test]
async fn a_late_copy_of_a_start_from_before_a_deletion_stores_nothing_and_resubscribes_nothing() {
    use callfy_shared::app::inbound;
    use callfy_shared::domain::consent::ConsentStatus;
    use callfy_shared::ports::ConsentLedger;
    let (local, clock, key, _) = seeded("dsr-late-start").await;
    let (m, phone) = ids();
    let store = local.store();
    let text = |sid: &str, body: &str, at: DateTime<Utc>| callfy_shared::domain::inbound::InboundMessage {
        message_sid: sid.into(),
        from: phone.clone(),
        to: "+15005550006".into(),
        messaging_service_sid: "MG0123456789abcdef0123456789abcdef".into(),
        body: body.into(),
        segments: 1,
        received_at: at,
    };
    inbound::replay(store, &text("SMstop", "STOP", t0() + Duration::minutes(30))).await.unwrap();
    assert_eq!(store.consent_state(&m, &phone, Channel::Sms).await.unwrap().status, ConsentStatus::OptedOut);
    // A START at t0+90m whose inline attempt stored nothing; the deletion runs before its copy.
    let start = text("SMstart", "START", t0() + Duration::minutes(90));
    clock.set(t0() + Duration::hours(2));
    let (status, answer) = api(&local, &key, "POST", "/v1/privacy/delete", Some(json!({ "phone": PHONE }))).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("done")), "{answer}");
    let deleted_at = store.deletion_marker(&m, &SubjectKey::phone(&phone)).await.unwrap();
    assert!(deleted_at.is_some());

    // DynamoDB's side of the guard: a write made on a marker read before the deletion is refused.
    let entry = start.log_entry(&store.get_merchant(&m).await.unwrap().unwrap());
    let stale =
        store.record_inbound(&[(entry, callfy_shared::ports::MarkerGuard::AsRead(None))], start.received_at).await;
    assert!(matches!(stale, Err(callfy_shared::ports::PortError::Conflict)), "{stale:?}");
    let newer = text("SMstart0", "START", t0() + Duration::hours(3));
    let classified = callfy_shared::domain::keywords::classify("START");
    let event = newer.event(&classified, callfy_shared::domain::consent::ConsentAction::OptIn, Channel::Sms);
    let stale = store.record_opt_in(&m, &phone, &event, t0() + Duration::days(730), None).await;
    assert!(matches!(stale, Err(callfy_shared::ports::PortError::Conflict)), "{stale:?}");

    // The copy: nothing stored, the opt-out kept through the deletion stands.
    clock.set(t0() + Duration::hours(2) + Duration::minutes(1));
    let replayed = inbound::replay(store, &start).await.unwrap();
    assert!(replayed.affected.is_empty());
    assert_eq!(store.consent_state(&m, &phone, Channel::Sms).await.unwrap().status, ConsentStatus::OptedOut);
    let held = items_holding(&local, PHONE).await;
    assert!(held.is_empty(), "items holding the deleted number after a late START: {held:?}");
    // A revocation's late copy is kept as its evidence, unguarded, and applied.
    let late_stop = text("SMstopcalls", "Please stop calling me", t0() + Duration::minutes(100));
    inbound::replay(store, &late_stop).await.unwrap();
    assert!(store.inbound_sms(&m, &phone, "SMstopcalls").await.unwrap().is_some());
    assert_eq!(store.consent_state(&m, &phone, Channel::Voice).await.unwrap().status, ConsentStatus::OptedOut);

    // A START texted after the deletion is the person's own: honoured.
    let later = text("SMstart2", "START", t0() + Duration::hours(3));
    assert_eq!(inbound::replay(store, &later).await.unwrap().affected.len(), 1);
    assert_eq!(store.consent_state(&m, &phone, Channel::Sms).await.unwrap().status, ConsentStatus::OptedIn);
    local.shutdown().await;
}

type Action = Box<dyn FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send>;

/// The recordings bucket, with a hand on the moment a deletion removes the person's objects:
/// after it read their records, before the batch that deletes them.
struct PausedFiles {
    inner: callfy_shared::adapters::recordings::RecordingBucket,
    during_delete: std::sync::Mutex<Option<Action>>,
}

impl callfy_shared::ports::RecordingFiles for PausedFiles {
    async fn presign_get(&self, key: &str, valid_for: std::time::Duration) -> Result<String, PortError> {
        self.inner.presign_get(key, valid_for).await
    }
    async fn put_json(&self, key: &str, body: Vec<u8>) -> Result<(), PortError> {
        self.inner.put_json(key, body).await
    }
    async fn delete_prefix_page(&self, prefix: &str) -> Result<(usize, bool), PortError> {
        self.inner.delete_prefix_page(prefix).await
    }
    async fn move_prefix(&self, from: &str, to: &str) -> Result<usize, PortError> {
        self.inner.move_prefix(from, to).await
    }
    async fn delete_keys(&self, keys: &[String]) -> Result<(), PortError> {
        let action = self.during_delete.lock().unwrap().take();
        if let Some(action) = action {
            action().await;
        }
        self.inner.delete_keys(keys).await
    }
    async fn put_file(&self, key: &str, path: &std::path::Path, metadata: &[(&str, String)]) -> Result<(), PortError> {
        self.inner.put_file(key, path, metadata).await
    }
}

use callfy_shared::ports::PortError;

fn consent_body(action: &str, at: DateTime<Utc>) -> Value {
    json!({ "phone": PHONE, "channel": "sms", "action": action, "occurred_at": at.to_rfc3339(),
            "evidence": { "consent_text": "Send me cart reminders by text. Reply STOP to opt out." } })
}

#[tokio::test]
async fn an_opt_out_during_a_deletion_leaves_no_entry_behind_and_the_next_opt_out_is_still_recorded() {
    use callfy_shared::app::privacy::{Deletion, Privacy, Subject};
    use callfy_shared::domain::consent::ConsentStatus;
    let (local, clock, key, _) = seeded("dsr-stop-race").await;
    let (m, phone) = ids();
    let record = local.store().get_merchant(&m).await.unwrap().unwrap();
    assert_eq!(local.store().consent_state(&m, &phone, Channel::Sms).await.unwrap().status, ConsentStatus::OptedIn);
    clock.set(t0() + Duration::hours(2));
    // Between the deletion's read of the person's records and its deletes, they opt out (an
    // opt-out is never refused, not even during a deletion).
    let during = Arc::new(std::sync::Mutex::new(None));
    let (seen, base, api_key) = (during.clone(), local.base_url.clone(), key.clone());
    let action: Action = Box::new(move || {
        Box::pin(async move {
            let client = reqwest::Client::new();
            let resp = client
                .post(format!("{base}/v1/consents"))
                .bearer_auth(api_key)
                .json(&consent_body("opt_out", t0() + Duration::hours(2)))
                .send()
                .await
                .unwrap();
            *seen.lock().unwrap() = Some(resp.status().as_u16());
        })
    });
    let files = PausedFiles {
        inner: local.functions().consent.recordings.clone(),
        during_delete: std::sync::Mutex::new(Some(action)),
    };
    let privacy = Privacy { store: local.store(), recordings: &files };
    let done = privacy
        .delete(&record, &Subject::Phone(phone.clone()), "race-delete", t0() + Duration::hours(2))
        .await
        .unwrap();
    assert!(matches!(done, Deletion::Done { .. }), "{done:?}");
    let status = during.lock().unwrap().expect("the opt-out was made during the deletion");
    // Either recorded at once, or (the ledger's old entries not yet deleted) refused as a
    // conflict to be tried again, as its sender or queued copy does.
    assert!(status == 201 || status == 503, "{status}");
    if status == 503 {
        let again = Some(consent_body("opt_out", t0() + Duration::hours(2)));
        let (status, answer) = api(&local, &key, "POST", "/v1/consents", again).await;
        assert!(status == 201 || status == 200, "{status} {answer}");
    }
    assert_eq!(
        local.store().consent_state(&m, &phone, Channel::Sms).await.unwrap().status,
        ConsentStatus::OptedOut,
        "the opt-out holds ({status} during the deletion)"
    );
    // The person opts in again, then out: both are recorded. A state deleted regardless of the
    // opt-out that came meanwhile left its entry behind, under no state, and an append reaching
    // that sequence collided with it for ever.
    clock.set(t0() + Duration::hours(3));
    for (action, at, expect) in [
        ("opt_in", t0() + Duration::hours(3), ConsentStatus::OptedIn),
        ("opt_out", t0() + Duration::hours(3) + Duration::minutes(1), ConsentStatus::OptedOut),
        ("opt_in", t0() + Duration::hours(3) + Duration::minutes(2), ConsentStatus::OptedIn),
        ("opt_out", t0() + Duration::hours(3) + Duration::minutes(3), ConsentStatus::OptedOut),
    ] {
        let (status, answer) = api(&local, &key, "POST", "/v1/consents", Some(consent_body(action, at))).await;
        assert_eq!(status, 201, "{action} at {at}: {answer}");
        assert_eq!(local.store().consent_state(&m, &phone, Channel::Sms).await.unwrap().status, expect);
    }
    let ledger = local.store().consent_ledger(&m, &phone, Channel::Sms).await.unwrap();
    let seqs: Vec<u64> = ledger.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "one unbroken ledger: {seqs:?}");
    local.shutdown().await;
}
