//! The retention purge against moto, its clock driven by the run's `as_of` (as the scheduled
//! event's `time` drives it in AWS): per kind, what is older than its retention goes and what is
//! younger stays; the consent hash chain still verifies after old entries go; a legal hold keeps
//! everything until it lifts; a recording's object goes with its log reference; an interrupted
//! run resumes without deleting anything twice.

use callfy_integration_tests::*;
use callfy_local::LocalHandle;
use callfy_local::sandbox::InboundRequest;
use callfy_shared::domain::consent::{ConsentStatus, verify_chain};
use callfy_shared::domain::merchant::Channel;
use callfy_shared::domain::retention::PurgeKind;
use callfy_shared::{CartToken, ManualClock, MerchantId, Phone};
use chrono::{DateTime, Duration, Utc};
use serde_json::json;
use std::sync::Arc;

fn t0() -> DateTime<Utc> {
    "2026-11-28T19:00:00Z".parse().unwrap()
}

fn ids() -> (MerchantId, CartToken, Phone) {
    (
        MerchantId::parse("snowdevil").unwrap(),
        CartToken::parse("cd8e6f2f1c0b4a2e9d6c7b8a9f0e1d2c").unwrap(),
        Phone::parse(PHONE, None).unwrap(),
    )
}

/// Short retention, so each kind's clock is visible in days.
fn short() -> serde_json::Value {
    json!({ "sms_logs": 30, "consent_records": 60, "recordings": 20, "carts": 10 })
}

async fn text_in(local: &LocalHandle, body: &str) {
    let req = InboundRequest {
        from: PHONE.into(),
        to: "+15005550006".into(),
        body: body.into(),
        messaging_service_sid: Some("MG0123456789abcdef0123456789abcdef".into()),
    };
    local.sandbox.receive(&req).await.expect("sms-inbound answers");
}

#[tokio::test]
async fn each_kind_goes_after_its_own_retention_and_the_chain_still_verifies() {
    let clock = Arc::new(ManualClock::new(t0()));
    let local = start_local("ret-kinds", clock.clone(), &merchant(|v| v["retention_days"] = short())).await;
    let (m, token, phone) = ids();
    let store = local.store();
    // Day 0: a checkout (opt-in, entry 1) and its text. Day 1: STOP (entry 2). Day 40: START (entry 3).
    assert_eq!(post_shopify(&local.base_url, "checkouts/create", &unique("evt"), &checkout(t0())).await.0, 200);
    local.drain().await.unwrap();
    clock.set(t0() + Duration::days(1));
    text_in(&local, "STOP").await;
    clock.set(t0() + Duration::days(40));
    text_in(&local, "START").await;
    assert_eq!(store.consent_ledger(&m, &phone, Channel::Sms).await.unwrap().len(), 3);
    let sms_before = store.sms_log(&m, &phone).await.unwrap().len();
    assert_eq!(sms_before, 3, "the text, and the STOP and START received");

    // Nothing is due on day 5; a dry run on day 12 names the cart and deletes nothing.
    let r = local.purge(t0() + Duration::days(5), false, None).await.unwrap();
    assert_eq!(r.total(), r.of_kind(PurgeKind::Working), "only the day-old send counter: {r:?}");
    let dry = local.purge(t0() + Duration::days(12), true, None).await.unwrap();
    assert_eq!(dry.of_kind(PurgeKind::Cart), 1, "{dry:?}");
    assert!(store.get_cart(&m, &token).await.unwrap().is_some(), "a dry run deletes nothing");

    // Day 12: the cart (10 days after its last update) with its steps and its checkout pointer.
    let r = local.purge(t0() + Duration::days(12), false, None).await.unwrap();
    assert_eq!(r.of_kind(PurgeKind::Cart), 1, "{r:?}");
    assert!(store.get_cart(&m, &token).await.unwrap().is_none());
    assert!(store.get_step(&m, &token, 0).await.unwrap().is_none());
    assert!(store.cart_token_for_checkout(&m, "981820079255243537").await.unwrap().is_none());
    assert_eq!(store.sms_log(&m, &phone).await.unwrap().len(), sms_before, "logs are younger than 30 days");

    // Day 32: the first text (day 0) and the STOP (day 1) are over 30 days old.
    let r = local.purge(t0() + Duration::days(32), false, None).await.unwrap();
    assert_eq!(r.of_kind(PurgeKind::SmsLog), 2, "{r:?}");
    let left = store.sms_log(&m, &phone).await.unwrap();
    assert!(left.iter().all(|e| e.created_at >= t0() + Duration::days(40)), "{left:?}");

    // Day 62: entry 1 was superseded on day 1 (60 days ago): it goes, entries 2 and 3 stay,
    // and the chain verifies from the checkpoint the purge left.
    let r = local.purge(t0() + Duration::days(62), false, None).await.unwrap();
    assert_eq!(r.of_kind(PurgeKind::ConsentEntry), 1, "{r:?}");
    let entries = store.consent_ledger(&m, &phone, Channel::Sms).await.unwrap();
    assert_eq!(entries.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![2, 3]);
    let state = store.consent_state(&m, &phone, Channel::Sms).await.unwrap();
    assert_eq!((state.first_seq, state.status), (2, ConsentStatus::OptedIn));
    assert_eq!(verify_chain(&entries, &state), Ok(3));
    // The voice ledger (STOP's) had nothing happen since day 1, but the phone had activity on
    // day 40 (START): its ledger is kept and looked at again later.
    assert_eq!(store.consent_state(&m, &phone, Channel::Voice).await.unwrap().status, ConsentStatus::OptedOut);
    assert!(r.deferred >= 1, "{r:?}");

    // Tampering after the checkpoint is still caught.
    let mut tampered = entries.clone();
    tampered[1].event.occurred_at = t0();
    assert!(verify_chain(&tampered, &state).is_err());
    assert!(verify_chain(&entries[1..], &state).is_err(), "a removed entry after the checkpoint is caught");

    // Day 101: nothing has happened for 60 days since day 40: the whole ledger goes.
    let r = local.purge(t0() + Duration::days(101), false, None).await.unwrap();
    assert!(r.of_kind(PurgeKind::ConsentLedger) >= 2, "{r:?}");
    assert!(store.consent_ledger(&m, &phone, Channel::Sms).await.unwrap().is_empty());
    assert_eq!(store.consent_state(&m, &phone, Channel::Sms).await.unwrap().status, ConsentStatus::Unknown);

    // Every run left an audit record with counts and no personal data.
    let reports = store.purge_reports().await.unwrap();
    assert!(reports.len() >= 5);
    let text = serde_json::to_string(&reports).unwrap();
    assert!(!text.contains("4155552671") && !text.contains("Ann"), "{text}");
    local.shutdown().await;
}

#[tokio::test]
async fn a_legal_hold_keeps_everything_until_it_lifts() {
    let clock = Arc::new(ManualClock::new(t0()));
    let local = start_local("ret-hold", clock.clone(), &merchant(|v| v["retention_days"] = short())).await;
    let (m, token, phone) = ids();
    assert_eq!(post_shopify(&local.base_url, "checkouts/create", &unique("evt"), &checkout(t0())).await.0, 200);
    local.drain().await.unwrap();
    local.store().set_legal_hold(&m, true).await.unwrap();
    let r = local.purge(t0() + Duration::days(45), false, None).await.unwrap();
    assert_eq!(r.total(), 0, "{r:?}");
    assert!(r.held.get("snowdevil").copied().unwrap_or(0) >= 2, "{r:?}");
    assert!(local.store().get_cart(&m, &token).await.unwrap().is_some());
    assert_eq!(local.store().sms_log(&m, &phone).await.unwrap().len(), 1);
    // Lifted: the next day's run purges what was held.
    local.store().set_legal_hold(&m, false).await.unwrap();
    let r = local.purge(t0() + Duration::days(46), false, None).await.unwrap();
    assert!(r.of_kind(PurgeKind::Cart) == 1 && r.of_kind(PurgeKind::SmsLog) == 1, "{r:?}");
    assert!(local.store().get_cart(&m, &token).await.unwrap().is_none());
    local.shutdown().await;
}

#[tokio::test]
async fn an_interrupted_run_resumes_and_deletes_nothing_twice() {
    let clock = Arc::new(ManualClock::new(t0()));
    let local = start_local("ret-resume", clock.clone(), &merchant(|v| v["retention_days"] = short())).await;
    assert_eq!(post_shopify(&local.base_url, "checkouts/create", &unique("evt"), &checkout(t0())).await.0, 200);
    local.drain().await.unwrap();
    let as_of = t0() + Duration::days(45);
    let due = local.purge(as_of, true, None).await.unwrap().total();
    assert!(due >= 3, "the cart, the text, the counter: {due}");
    // A run out of time stops cleanly before its first batch and records where it stands.
    let stopped = local.purge(as_of, false, Some(std::time::Instant::now())).await.unwrap();
    assert!(!stopped.complete && stopped.total() == 0 && stopped.index_queries == 0, "{stopped:?}");
    // The next run does it all; a re-run finds nothing left.
    let resumed = local.purge(as_of, false, None).await.unwrap();
    assert!(resumed.complete);
    assert_eq!(resumed.total(), due);
    assert_eq!(local.purge(as_of, false, None).await.unwrap().total(), 0);
    local.shutdown().await;
}

#[tokio::test]
async fn a_recording_goes_with_its_log_reference_after_its_own_retention() {
    let clock = Arc::new(ManualClock::new(t0()));
    let mut v = read_json("events/demo-merchant-voice.json");
    v["flow"] = json!([{ "after_minutes": 0, "channel": "voice" }]);
    v["retention_days"] = short();
    let voice = callfy_shared::domain::merchant::Merchant::from_json(&v.to_string()).unwrap();
    let local = start_local("ret-rec", clock.clone(), &voice).await;
    let mut body = checkout(t0());
    body["note_attributes"] = json!([{ "name": "callfy_voice_consent", "value": "yes" }]);
    assert_eq!(post_shopify(&local.base_url, "checkouts/create", &unique("evt"), &body).await.0, 200);
    local.drain().await.unwrap();
    let sid = local.sandbox.calls()[0].sid.clone();
    local.sandbox.answer_call(&sid, "human").await.unwrap();
    local.sandbox.end_call(&sid, "completed", 10).await.unwrap();
    assert_eq!(local.poll_recordings(0).await.unwrap().succeeded, 1);
    let (m, _, phone) = ids();
    let key = format!("recordings/snowdevil/2026/11/{sid}.wav");
    let s3 = callfy_shared::adapters::aws::s3(&sdk().await);
    let bucket = local.resources.names.bucket.clone();
    assert!(s3.head_object().bucket(&bucket).key(&key).send().await.is_ok());

    // Day 19: kept. Day 21: the object and its reference go; the call log (30 days) stays.
    assert_eq!(local.purge(t0() + Duration::days(19), false, None).await.unwrap().of_kind(PurgeKind::Recording), 0);
    let r = local.purge(t0() + Duration::days(21), false, None).await.unwrap();
    assert_eq!(r.of_kind(PurgeKind::Recording), 1, "{r:?}");
    assert!(s3.head_object().bucket(&bucket).key(&key).send().await.is_err(), "the object is gone");
    let log = local.store().call_log(&m, &phone).await.unwrap();
    assert_eq!(log.len(), 1);
    assert!(log[0].recording.is_none(), "the log no longer points at it");
    let r = local.purge(t0() + Duration::days(31), false, None).await.unwrap();
    assert_eq!(r.of_kind(PurgeKind::CallLog), 1, "{r:?}");
    assert!(local.store().call_log(&m, &phone).await.unwrap().is_empty());
    local.shutdown().await;
}

#[tokio::test]
async fn the_scheduled_event_drives_the_purger_as_lambda_would() {
    let clock = Arc::new(ManualClock::new(t0()));
    let local = start_local("ret-event", clock.clone(), &merchant(|v| v["retention_days"] = short())).await;
    assert_eq!(post_shopify(&local.base_url, "checkouts/create", &unique("evt"), &checkout(t0())).await.0, 200);
    local.drain().await.unwrap();
    let mut event = read_json("events/eventbridge-purge-schedule.json");
    // Its clock is the event: a run scheduled 45 days later purges as of then, whenever it runs.
    event["time"] = (t0() + Duration::days(45)).to_rfc3339().into();
    let report = retention_purger::handle(&local.functions().purger, &event, None).await.unwrap();
    assert_eq!(report.as_of, Some(t0() + Duration::days(45)));
    assert!(
        report.complete && report.of_kind(PurgeKind::Cart) == 1 && report.of_kind(PurgeKind::SmsLog) == 1,
        "{report:?}"
    );
    let bad = json!({ "detail-type": "Scheduled Event" });
    assert!(retention_purger::handle(&local.functions().purger, &bad, None).await.is_err(), "no time, no run");
    local.shutdown().await;
}

#[tokio::test]
async fn a_closed_account_is_erased_after_its_grace_period_and_not_before() {
    let clock = Arc::new(ManualClock::new(t0()));
    let local = start_local("ret-close", clock.clone(), &merchant(|_| {})).await;
    let (m, token, phone) = ids();
    assert_eq!(post_shopify(&local.base_url, "checkouts/create", &unique("evt"), &checkout(t0())).await.0, 200);
    local.drain().await.unwrap();
    // Shopify's app/uninstalled closes the account.
    let (status, _) = post_shopify(&local.base_url, "app/uninstalled", &unique("evt"), &json!({ "id": 1 })).await;
    assert_eq!(status, 200);
    let record = local.store().get_merchant(&m).await.unwrap().unwrap();
    assert_eq!(record.status, callfy_shared::adapters::store::MerchantStatus::Closed);
    // Day 29: within the 30-day grace period, nothing is erased.
    let r = local.purge(t0() + Duration::days(29), false, None).await.unwrap();
    assert_eq!(r.of_kind(PurgeKind::Erasure), 0, "{r:?}");
    assert!(local.store().get_cart(&m, &token).await.unwrap().is_some());
    // A legal hold taken meanwhile keeps it past the grace period …
    local.store().set_legal_hold(&m, true).await.unwrap();
    let r = local.purge(t0() + Duration::days(31), false, None).await.unwrap();
    assert_eq!(r.of_kind(PurgeKind::Erasure), 0, "{r:?}");
    assert!(local.store().get_merchant(&m).await.unwrap().is_some());
    // … and when it lifts, the next run erases everything: carts, logs, ledgers, the profile.
    local.store().set_legal_hold(&m, false).await.unwrap();
    let r = local.purge(t0() + Duration::days(32), false, None).await.unwrap();
    assert!(r.of_kind(PurgeKind::Erasure) >= 5, "{r:?}");
    assert!(local.store().get_cart(&m, &token).await.unwrap().is_none());
    assert!(local.store().sms_log(&m, &phone).await.unwrap().is_empty());
    assert!(local.store().consent_ledger(&m, &phone, Channel::Sms).await.unwrap().is_empty());
    assert!(local.store().get_merchant(&m).await.unwrap().is_none(), "the account itself is gone");
    assert!(local.store().merchant_by_shop_domain(SHOP).await.unwrap().is_none());
    local.shutdown().await;
}

#[tokio::test]
async fn shop_redact_erases_an_uninstalled_shops_customer_data_at_the_next_run_and_never_a_live_shops() {
    let clock = Arc::new(ManualClock::new(t0()));
    let local = start_local("ret-redact", clock.clone(), &merchant(|_| {})).await;
    let (m, token, phone) = ids();
    assert_eq!(post_shopify(&local.base_url, "checkouts/create", &unique("evt"), &checkout(t0())).await.0, 200);
    local.drain().await.unwrap();
    let body = json!({ "shop_id": 954889, "shop_domain": SHOP });
    // The app is installed: a shop/redact (captured, replayed, mis-addressed) erases nothing,
    // now or at the next run.
    assert_eq!(post_shopify(&local.base_url, "shop/redact", &unique("evt"), &body).await.0, 200);
    let r = local.purge(t0() + Duration::hours(1), false, None).await.unwrap();
    assert_eq!(r.of_kind(PurgeKind::Erasure), 0, "{r:?}");
    assert!(local.store().get_cart(&m, &token).await.unwrap().is_some());
    // Uninstalled (Shopify sends shop/redact 48 hours later): the shop's customer data goes.
    assert_eq!(post_shopify(&local.base_url, "app/uninstalled", &unique("evt"), &json!({ "id": 1 })).await.0, 200);
    assert_eq!(post_shopify(&local.base_url, "shop/redact", &unique("evt"), &body).await.0, 200);
    let r = local.purge(t0() + Duration::hours(1), false, None).await.unwrap();
    assert!(r.of_kind(PurgeKind::Erasure) >= 4, "{r:?}");
    assert!(local.store().get_cart(&m, &token).await.unwrap().is_none());
    assert!(local.store().sms_log(&m, &phone).await.unwrap().is_empty());
    assert!(local.store().consent_ledger(&m, &phone, Channel::Sms).await.unwrap().is_empty());
    assert!(local.store().get_merchant(&m).await.unwrap().is_some(), "the account stays");
    local.shutdown().await;
}

#[tokio::test]
async fn data_due_long_ago_is_purged_however_old_its_date() {
    // Written by a clock set years early (or imported): due long before any run of ours.
    let early: DateTime<Utc> = "2019-03-01T19:00:00Z".parse().unwrap();
    let clock = Arc::new(ManualClock::new(early));
    let local = start_local("ret-old", clock.clone(), &merchant(|v| v["retention_days"] = short())).await;
    let (m, token, phone) = ids();
    assert_eq!(post_shopify(&local.base_url, "checkouts/create", &unique("evt"), &checkout(early)).await.0, 200);
    local.drain().await.unwrap();
    assert_eq!(local.store().sms_log(&m, &phone).await.unwrap().len(), 1);
    clock.set(t0());
    let r = local.purge(t0(), false, None).await.unwrap();
    assert!(r.complete && r.of_kind(PurgeKind::Cart) == 1 && r.of_kind(PurgeKind::SmsLog) == 1, "{r:?}");
    assert!(local.store().get_cart(&m, &token).await.unwrap().is_none());
    assert!(local.store().sms_log(&m, &phone).await.unwrap().is_empty());
    local.shutdown().await;
}

#[tokio::test]
async fn closing_an_account_cancels_its_queued_steps_at_once_and_its_erasure_reads_it_alone() {
    let clock = Arc::new(ManualClock::new(t0()));
    let two_texts = json!([{ "after_minutes": 0, "channel": "sms" }, { "after_minutes": 120, "channel": "sms" }]);
    let local = start_local("ret-cancel", clock.clone(), &merchant(|v| v["flow"] = two_texts)).await;
    let (m, token, phone) = ids();
    assert_eq!(post_shopify(&local.base_url, "checkouts/create", &unique("evt"), &checkout(t0())).await.0, 200);
    local.drain().await.unwrap();
    assert_eq!(local.sandbox.messages().len(), 1);
    // Another merchant's customer in the same table.
    let other = merchant(|v| {
        v["id"] = "othershop".into();
        v["shop_domain"] = "othershop.myshopify.com".into();
    });
    local.store().put_merchant(&other, t0()).await.unwrap();
    let opt_in = callfy_shared::domain::consent::ConsentEvent {
        channel: Channel::Sms,
        action: callfy_shared::domain::consent::ConsentAction::OptIn,
        source: callfy_shared::domain::consent::ConsentSource::Api,
        occurred_at: t0(),
        recorded_at: t0(),
        evidence: Default::default(),
    };
    local.store().record_consent(&other.id, &phone, &opt_in, t0() + Duration::days(730)).await.unwrap();

    // Uninstalled: the second text, due in two hours, is cancelled now, not when it comes due.
    assert_eq!(post_shopify(&local.base_url, "app/uninstalled", &unique("evt"), &json!({ "id": 1 })).await.0, 200);
    local.drain().await.unwrap();
    let step = local.store().get_step(&m, &token, 1).await.unwrap().expect("the step is recorded at once");
    assert_eq!(step.reason.as_deref(), Some("merchant_closed"), "{step:?}");
    clock.set(t0() + Duration::hours(3));
    local.drain().await.unwrap();
    assert_eq!(local.sandbox.messages().len(), 1, "nothing more is sent");

    // After the grace period the account goes; the other merchant's customer stays.
    let r = local.purge(t0() + Duration::days(31), false, None).await.unwrap();
    assert!(r.of_kind(PurgeKind::Erasure) >= 5, "{r:?}");
    assert!(local.store().get_cart(&m, &token).await.unwrap().is_none());
    assert!(local.store().get_merchant(&m).await.unwrap().is_none());
    let kept = local.store().consent_state(&other.id, &phone, Channel::Sms).await.unwrap();
    assert_eq!(kept.status, ConsentStatus::OptedIn, "another merchant's data is out of scope");
    assert!(local.store().get_merchant(&other.id).await.unwrap().is_some());
    local.shutdown().await;
}

#[tokio::test]
async fn a_shortened_retention_applies_to_data_already_stored() {
    let clock = Arc::new(ManualClock::new(t0()));
    let local = start_local("ret-shorten", clock.clone(), &merchant(|_| {})).await;
    let (m, _, phone) = ids();
    assert_eq!(post_shopify(&local.base_url, "checkouts/create", &unique("evt"), &checkout(t0())).await.0, 200);
    local.drain().await.unwrap();
    assert_eq!(local.store().sms_log(&m, &phone).await.unwrap().len(), 1);
    // Kept for the default 24 months: nothing of the log is due after 40 days.
    let r = local.purge(t0() + Duration::days(40), false, None).await.unwrap();
    assert_eq!(r.of_kind(PurgeKind::SmsLog), 0, "{r:?}");
    // The merchant shortens its SMS log retention to 30 days: the stored text is now past due.
    let shorter = merchant(|v| v["retention_days"] = json!({ "sms_logs": 30 }));
    let moved =
        callfy_shared::app::retention::save_merchant(local.store(), &shorter, t0() + Duration::days(40)).await.unwrap();
    assert!(moved >= 1, "{moved}");
    let r = local.purge(t0() + Duration::days(41), false, None).await.unwrap();
    assert_eq!(r.of_kind(PurgeKind::SmsLog), 1, "{r:?}");
    assert!(local.store().sms_log(&m, &phone).await.unwrap().is_empty());
    // Consent records keep their own (unchanged) retention.
    assert!(!local.store().consent_ledger(&m, &phone, Channel::Sms).await.unwrap().is_empty());
    local.shutdown().await;
}

#[tokio::test]
async fn the_index_migration_tags_and_reshards_items_an_earlier_version_wrote() {
    let clock = Arc::new(ManualClock::new(t0()));
    let local = start_local("ret-migrate", clock.clone(), &merchant(|_| {})).await;
    let (m, _, _) = ids();
    let ddb = callfy_shared::adapters::aws::dynamodb(&sdk().await);
    let s = |v: &str| aws_sdk_dynamodb::types::AttributeValue::S(v.into());
    // A cart as an earlier version wrote it: no tag, a purge entry in a day bucket, long due.
    ddb.put_item()
        .table_name(local.store().table())
        .item("pk", s("K#snowdevil#0000000000000000000000000000beef"))
        .item("sk", s("CART"))
        .item("purge_bucket", s("2026-03-01#5"))
        .item("purge_at", s("2026-03-01T00:00:00.000Z"))
        .send()
        .await
        .unwrap();
    let before = local.store().tenant_items(&m).await.unwrap();
    assert!(!before.iter().any(|(pk, _)| pk.ends_with("beef")));
    assert!(local.store().migrate_indexes().await.unwrap() >= 1);
    let after = local.store().tenant_items(&m).await.unwrap();
    assert!(after.iter().any(|(pk, _)| pk.ends_with("beef")), "{after:?}");
    assert_eq!(local.store().migrate_indexes().await.unwrap(), 0, "nothing changes twice");
    // The purger now reads it where it is.
    let r = local.purge(t0(), false, None).await.unwrap();
    assert_eq!(r.of_kind(PurgeKind::Cart), 1, "{r:?}");
    local.shutdown().await;
}

#[tokio::test]
async fn the_index_migration_writes_the_phone_pointer_an_earlier_version_did_not() {
    let clock = Arc::new(ManualClock::new(t0()));
    let local = start_local("ret-pointers", clock.clone(), &merchant(|_| {})).await;
    let (m, _, phone) = ids();
    assert_eq!(post_shopify(&local.base_url, "checkouts/create", &unique("evt"), &checkout(t0())).await.0, 200);
    let store = local.store();
    let pointers = store.phone_pointer_keys(&m, &phone).await.unwrap();
    assert_eq!(pointers.len(), 1, "{pointers:?}");
    // As an earlier version left the table: the cart without its pointer.
    let ddb = callfy_shared::adapters::aws::dynamodb(&sdk().await);
    let s = |v: &str| aws_sdk_dynamodb::types::AttributeValue::S(v.into());
    let (pk, sk) = &pointers[0];
    ddb.delete_item().table_name(store.table()).key("pk", s(pk)).key("sk", s(sk)).send().await.unwrap();
    assert!(store.phone_pointer_keys(&m, &phone).await.unwrap().is_empty());

    // And without its customer-id pointer (a version before those).
    let customer = ddb
        .scan()
        .table_name(store.table())
        .filter_expression("begins_with(pk, :q) AND sk = :c")
        .expression_attribute_values(":q", s("Q#snowdevil#"))
        .expression_attribute_values(":c", s(&format!("CART#{}", ids().1)))
        .send()
        .await
        .unwrap();
    let customer_keys: Vec<(String, String)> =
        customer.items().iter().map(|i| (i["pk"].as_s().unwrap().clone(), i["sk"].as_s().unwrap().clone())).collect();
    assert_eq!(customer_keys.len(), 2, "the email's and the customer id's pointers: {customer_keys:?}");
    let (by_customer, _) = customer_keys
        .iter()
        .find(|(pk, _)| pk.ends_with(&callfy_shared::domain::phone::marker_hash("email", "customer:207119551")))
        .expect("the customer id's pointer");
    ddb.delete_item().table_name(store.table()).key("pk", s(by_customer)).key("sk", s(sk)).send().await.unwrap();

    assert!(store.migrate_indexes().await.unwrap() >= 2, "both pointers written back");
    assert_eq!(store.phone_pointer_keys(&m, &phone).await.unwrap(), pointers, "where it belongs");
    let item = ddb.get_item().table_name(store.table()).key("pk", s(pk)).key("sk", s(sk)).send().await.unwrap();
    let item = item.item().unwrap();
    assert!(item.contains_key("purge_at") && item.contains_key("tenant"), "purged with the cart: {item:?}");
    let back =
        ddb.get_item().table_name(store.table()).key("pk", s(by_customer)).key("sk", s(sk)).send().await.unwrap();
    assert!(back.item().is_some(), "the customer id's pointer is back");
    assert_eq!(store.migrate_indexes().await.unwrap(), 0, "nothing changes twice");

    // A cart the scan read and a deletion erased since gets no pointer back.
    let cart_pk = format!("K#snowdevil#{}", ids().1);
    let scanned =
        ddb.get_item().table_name(store.table()).key("pk", s(&cart_pk)).key("sk", s("CART")).send().await.unwrap();
    let scanned = scanned.item().unwrap().clone();
    ddb.delete_item().table_name(store.table()).key("pk", s(pk)).key("sk", s(sk)).send().await.unwrap();
    ddb.delete_item().table_name(store.table()).key("pk", s(&cart_pk)).key("sk", s("CART")).send().await.unwrap();
    assert_eq!(store.backfill_pointers(&cart_pk, &scanned).await.unwrap(), 0);
    assert!(store.phone_pointer_keys(&m, &phone).await.unwrap().is_empty(), "no pointer to an erased cart");
    local.shutdown().await;
}

/// Every item of the table whose key names merchant `m`, as `pk / sk`.
async fn items_of(local: &LocalHandle, m: &str) -> Vec<String> {
    let client = callfy_shared::adapters::aws::dynamodb(&sdk().await);
    let (mut found, mut start) = (Vec::new(), None);
    loop {
        let out = client.scan().table_name(local.store().table()).set_exclusive_start_key(start).send().await.unwrap();
        for item in out.items() {
            let pk = item.get("pk").and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
            let sk = item.get("sk").and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
            if pk.contains(m) || sk.contains(m) {
                found.push(format!("{pk} / {sk}"));
            }
        }
        start = out.last_evaluated_key().cloned();
        if start.is_none() {
            found.sort();
            return found;
        }
    }
}

#[tokio::test]
async fn a_closed_accounts_erasure_goes_page_by_page_over_several_runs_and_keeps_only_suppression_records() {
    let clock = Arc::new(ManualClock::new(t0()));
    let local = start_local("ret-pages", clock.clone(), &merchant(|_| {})).await;
    let (m, token, phone) = ids();
    assert_eq!(post_shopify(&local.base_url, "checkouts/create", &unique("evt"), &checkout(t0())).await.0, 200);
    local.drain().await.unwrap();
    clock.set(t0() + Duration::hours(1));
    text_in(&local, "STOP").await;
    assert_eq!(post_shopify(&local.base_url, "app/uninstalled", &unique("evt"), &json!({ "id": 1 })).await.0, 200);
    local.drain().await.unwrap();
    let before = items_of(&local, m.as_str()).await;

    // One index entry per page and a deadline already past: each run does one page, then stops
    // with the erasure still due; the account itself goes only with the last run.
    let p = &local.functions().purger;
    let purger = callfy_shared::app::retention::Purger { store: &p.store, recordings: &p.recordings, queue: &p.queue };
    let as_of = t0() + Duration::days(31);
    let due = callfy_shared::ports::DueItem {
        pk: format!("M#{m}"),
        sk: "CLOSURE".into(),
        purge_at: t0().to_rfc3339(),
        merchant: Some(m.to_string()),
        attrs: [("requested_at".to_string(), t0().to_rfc3339())].into(),
    };
    let mut runs = 0;
    loop {
        let opts = callfy_shared::app::retention::RunOptions {
            as_of,
            dry_run: false,
            deadline: Some(std::time::Instant::now()),
            started_at: as_of,
            closure_grace_days: 30,
            erasure_page: 1,
        };
        let r = purger.erase_due(due.clone(), &opts).await.unwrap();
        runs += 1;
        assert!(r.of_kind(PurgeKind::Erasure) >= 1, "each run makes progress: {r:?}");
        if r.complete {
            break;
        }
        assert!(local.store().get_merchant(&m).await.unwrap().is_some(), "the profile goes last");
        assert!(runs < 100, "the erasure never finished");
    }
    assert!(runs >= 3, "one page a run: {runs} runs");
    assert!(local.store().get_cart(&m, &token).await.unwrap().is_none());
    assert!(local.store().sms_log(&m, &phone).await.unwrap().is_empty());
    assert!(local.store().get_merchant(&m).await.unwrap().is_none(), "the account itself is gone");
    // Only the opt-out's suppression records, the Twilio copies the worker still has to remove
    // and the dedupe and rate-window markers that expire on their own within days are left.
    let left = items_of(&local, m.as_str()).await;
    let kept = |k: &String| ["U#", "E#", "G#"].iter().any(|p| k.starts_with(p)) || k.contains("/ TWILIO#");
    assert!(left.iter().all(kept), "{left:#?}\nbefore: {before:#?}");
    assert!(left.iter().any(|k| k.starts_with("U#")) && before.len() > left.len() + 15, "{left:#?}");
    assert!(local.store().suppression(&m, &phone, Channel::Sms).await.unwrap().is_some());
    // The next scheduled run finds nothing left of it.
    let r = local.purge(as_of, false, None).await.unwrap();
    assert_eq!(r.of_kind(PurgeKind::Erasure), 0, "{r:?}");
    local.shutdown().await;
}

/// The purge date stored on the first item of partition `pk` whose sort key starts with `prefix`.
async fn purge_at_of(local: &LocalHandle, pk: &str, prefix: &str) -> Option<String> {
    let client = callfy_shared::adapters::aws::dynamodb(&sdk().await);
    let s = |v: &str| aws_sdk_dynamodb::types::AttributeValue::S(v.into());
    let out = client
        .query()
        .table_name(local.store().table())
        .key_condition_expression("pk = :pk AND begins_with(sk, :p)")
        .expression_attribute_values(":pk", s(pk))
        .expression_attribute_values(":p", s(prefix))
        .send()
        .await
        .unwrap();
    out.items().first().and_then(|i| i.get("purge_at")).and_then(|v| v.as_s().ok()).cloned()
}

#[tokio::test]
async fn a_shortened_retention_moves_sender_items_and_platform_requests_too() {
    let clock = Arc::new(ManualClock::new(t0()));
    let local = start_local("ret-shorten-kinds", clock.clone(), &merchant(|_| {})).await;
    let m = ids().0;
    assert_eq!(post_shopify(&local.base_url, "checkouts/create", &unique("evt"), &checkout(t0())).await.0, 200);
    local.drain().await.unwrap();
    let request = json!({ "shop_id": 954889, "shop_domain": SHOP, "orders_requested": [],
        "customer": { "id": 191167, "email": "ann.lee@example.com", "phone": PHONE }, "data_request": { "id": 9999 } });
    assert_eq!(post_shopify(&local.base_url, "customers/data_request", &unique("evt"), &request).await.0, 200);
    local.drain().await.unwrap();
    let customer = format!("C#{m}#{PHONE}");
    assert!(purge_at_of(&local, &customer, "SENDER#").await.is_some());
    assert!(purge_at_of(&local, &format!("V#{m}"), "REQ#").await.is_some());
    // Texts kept 30 days, consent records (and platform requests with them) 60.
    let shorter = merchant(|v| v["retention_days"] = json!({ "sms_logs": 30, "consent_records": 60 }));
    callfy_shared::app::retention::save_merchant(local.store(), &shorter, t0() + Duration::days(40)).await.unwrap();
    let r = local.purge(t0() + Duration::days(41), false, None).await.unwrap();
    assert_eq!(r.of_kind(PurgeKind::SmsLog), 1, "{r:?}");
    assert_eq!(purge_at_of(&local, &customer, "SENDER#").await, None, "the sender item went with the SMS log");
    let r = local.purge(t0() + Duration::days(61), false, None).await.unwrap();
    assert!(r.of_kind(PurgeKind::PlatformRequest) >= 1, "{r:?}");
    assert_eq!(purge_at_of(&local, &format!("V#{m}"), "REQ#").await, None);
    local.shutdown().await;
}

#[tokio::test]
async fn a_shortened_retention_left_part_way_is_finished_by_the_next_run_and_moves_nothing_twice() {
    let clock = Arc::new(ManualClock::new(t0()));
    let local = start_local("ret-shorten-resume", clock.clone(), &merchant(|_| {})).await;
    let m = ids().0;
    assert_eq!(post_shopify(&local.base_url, "checkouts/create", &unique("evt"), &checkout(t0())).await.0, 200);
    local.drain().await.unwrap();
    let customer = format!("C#{m}#{PHONE}");
    let at = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let stored = purge_at_of(&local, &customer, "SMS#OUT#").await.unwrap();
    assert_eq!(stored, at(t0() + Duration::days(730)));
    // A save that stopped after recording its re-dating and saving the settings, before moving
    // any date (a crash, a timeout).
    let old = merchant(|_| {});
    let shorter = merchant(|v| v["retention_days"] = json!({ "sms_logs": 30 }));
    let job =
        callfy_shared::domain::retention::Redate::new("rd_1".into(), &old.retention_days, &shorter.retention_days)
            .unwrap();
    let store = local.store();
    callfy_shared::ports::PurgeStore::put_redate(store, &m, &job, t0()).await.unwrap();
    store.put_merchant(&shorter, t0()).await.unwrap();
    // A save that never landed: its re-dating no longer applies and is dropped.
    let never = merchant(|v| v["retention_days"] = json!({ "consent_records": 60 }));
    let dropped =
        callfy_shared::domain::retention::Redate::new("rd_2".into(), &old.retention_days, &never.retention_days)
            .unwrap();
    callfy_shared::ports::PurgeStore::put_redate(store, &m, &dropped, t0()).await.unwrap();
    let ledger = purge_at_of(&local, &customer, "CONSENT#sms").await.unwrap();

    // The next run finishes the first (the text now falls due 700 days earlier) and drops the second.
    local.purge(t0() + Duration::days(1), false, None).await.unwrap();
    assert_eq!(purge_at_of(&local, &customer, "SMS#OUT#").await, Some(at(t0() + Duration::days(30))));
    assert_eq!(purge_at_of(&local, &customer, "CONSENT#sms").await, Some(ledger), "nothing moved by a dropped one");
    assert_eq!(purge_at_of(&local, &format!("M#{m}"), "REDATE#").await, None, "both records are gone");
    // Run again (a retried save, a replayed run), the same re-dating moves nothing twice.
    assert_eq!(callfy_shared::ports::PurgeStore::redate(store, &m, &job, None, 500, None).await.unwrap(), (0, None));
    assert_eq!(purge_at_of(&local, &customer, "SMS#OUT#").await, Some(at(t0() + Duration::days(30))));
    let r = local.purge(t0() + Duration::days(31), false, None).await.unwrap();
    assert_eq!(r.of_kind(PurgeKind::SmsLog), 1, "{r:?}");
    local.shutdown().await;
}

#[tokio::test]
async fn a_re_dating_stopped_by_the_deadline_notes_where_and_goes_on_from_there() {
    let clock = Arc::new(ManualClock::new(t0()));
    let local = start_local("ret-shorten-deadline", clock.clone(), &merchant(|_| {})).await;
    let m = ids().0;
    assert_eq!(post_shopify(&local.base_url, "checkouts/create", &unique("evt"), &checkout(t0())).await.0, 200);
    local.drain().await.unwrap();
    let customer = format!("C#{m}#{PHONE}");
    let at_ms = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let old = merchant(|_| {});
    let shorter = merchant(|v| v["retention_days"] = json!({ "sms_logs": 30, "carts": 20 }));
    let job =
        callfy_shared::domain::retention::Redate::new("rd_d".into(), &old.retention_days, &shorter.retention_days)
            .unwrap();
    let store = local.store();
    callfy_shared::ports::PurgeStore::put_redate(store, &m, &job, t0()).await.unwrap();
    // One index entry a page, the deadline already past: one page, then it stops, and notes where.
    let (first, stopped) =
        callfy_shared::ports::PurgeStore::redate(store, &m, &job, None, 1, Some(std::time::Instant::now()))
            .await
            .unwrap();
    let at = stopped.expect("stopped between two pages");
    assert!(first <= 2, "one page moved: {first}");
    callfy_shared::ports::PurgeStore::redate_stopped_at(store, &m, "rd_d", &at).await.unwrap();
    let (_, read_job, from) =
        callfy_shared::ports::PurgeStore::redate_job(store, &format!("M#{m}"), "REDATE#rd_d").await.unwrap().unwrap();
    assert_eq!((read_job.id.as_str(), from.as_ref()), ("rd_d", Some(&at)), "the record says where it stopped");
    // The next run goes on from there and finishes.
    let (rest, stopped) = callfy_shared::ports::PurgeStore::redate(store, &m, &job, from, 1, None).await.unwrap();
    assert!(stopped.is_none());
    assert_eq!(purge_at_of(&local, &customer, "SMS#OUT#").await, Some(at_ms(t0() + Duration::days(30))));
    // Each item moved once, whichever run moved it.
    let (again, _) = callfy_shared::ports::PurgeStore::redate(store, &m, &job, None, 500, None).await.unwrap();
    assert_eq!(again, 0);
    assert!(first + rest >= 2, "the text and the cart: {first} + {rest}");
    local.shutdown().await;
}

#[tokio::test]
async fn an_erasure_deletes_a_large_accounts_objects_a_page_at_a_time_within_its_deadline() {
    let clock = Arc::new(ManualClock::new(t0()));
    let local = start_local("ret-s3-pages", clock.clone(), &merchant(|_| {})).await;
    let m = ids().0;
    assert_eq!(post_shopify(&local.base_url, "checkouts/create", &unique("evt"), &checkout(t0())).await.0, 200);
    local.drain().await.unwrap();
    assert_eq!(post_shopify(&local.base_url, "app/uninstalled", &unique("evt"), &json!({ "id": 1 })).await.0, 200);
    local.drain().await.unwrap();
    // More recordings than one listing page holds.
    let sdk = sdk().await;
    let s3 = aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&sdk).force_path_style(true).build());
    let bucket = local.resources.names.bucket.clone();
    let puts = (0..1_001).map(|i| {
        let (s3, bucket) = (s3.clone(), bucket.clone());
        let key = format!("recordings/{m}/RE{i:032}.mp3");
        async move { s3.put_object().bucket(bucket).key(key).body(vec![0u8; 8].into()).send().await.map(|_| ()) }
    });
    use futures::{StreamExt, TryStreamExt};
    futures::stream::iter(puts).buffer_unordered(16).try_collect::<Vec<()>>().await.unwrap();
    let count = || async {
        let mut n = 0;
        let mut pages = s3.list_objects_v2().bucket(&bucket).prefix(format!("recordings/{m}/")).into_paginator().send();
        while let Some(page) = pages.next().await {
            n += page.unwrap().contents().len();
        }
        n
    };
    let p = &local.functions().purger;
    let purger = callfy_shared::app::retention::Purger { store: &p.store, recordings: &p.recordings, queue: &p.queue };
    let as_of = t0() + Duration::days(31);
    let due = callfy_shared::ports::DueItem {
        pk: format!("M#{m}"),
        sk: "CLOSURE".into(),
        purge_at: t0().to_rfc3339(),
        merchant: Some(m.to_string()),
        attrs: [("requested_at".to_string(), t0().to_rfc3339())].into(),
    };
    let opts = |deadline| callfy_shared::app::retention::RunOptions {
        as_of,
        dry_run: false,
        deadline,
        started_at: as_of,
        closure_grace_days: 30,
        erasure_page: callfy_shared::app::retention::ERASURE_PAGE,
    };
    let r = purger.erase_due(due.clone(), &opts(Some(std::time::Instant::now()))).await.unwrap();
    assert!(!r.complete, "stopped after one page of objects: {r:?}");
    assert_eq!(count().await, 1, "one page of objects went");
    assert!(local.store().get_merchant(&m).await.unwrap().is_some(), "the account waits for its objects");
    let r = purger.erase_due(due, &opts(None)).await.unwrap();
    assert!(r.complete, "{r:?}");
    assert_eq!(count().await, 0);
    assert!(local.store().get_merchant(&m).await.unwrap().is_none(), "the account itself is gone");
    local.shutdown().await;
}

#[tokio::test]
async fn a_legal_hold_set_while_a_run_goes_on_is_honoured_from_its_next_page() {
    let clock = Arc::new(ManualClock::new(t0()));
    let local = start_local("ret-hold-midrun", clock.clone(), &merchant(|v| v["retention_days"] = short())).await;
    let m = ids().0;
    assert_eq!(post_shopify(&local.base_url, "checkouts/create", &unique("evt"), &checkout(t0())).await.0, 200);
    local.drain().await.unwrap();
    let as_of = t0() + Duration::days(45);
    let due = local.purge(as_of, true, None).await.unwrap().total();
    assert!(due >= 3, "the cart, the text, the counter: {due}");
    // The hold is set as soon as the run has deleted something (between two shards, so two
    // pages): what it reads afterwards is held, not deleted.
    let p = &local.functions().purger;
    let purger = callfy_shared::app::retention::Purger { store: &p.store, recordings: &p.recordings, queue: &p.queue };
    let opts = callfy_shared::app::retention::RunOptions {
        as_of,
        dry_run: false,
        deadline: None,
        started_at: as_of,
        closure_grace_days: 30,
        erasure_page: callfy_shared::app::retention::ERASURE_PAGE,
    };
    let store = local.store().clone();
    let set = std::sync::atomic::AtomicBool::new(false);
    let progress = |pr: callfy_shared::app::retention::Progress| {
        if pr.items > 0 && !set.swap(true, std::sync::atomic::Ordering::SeqCst) {
            let (store, m) = (store.clone(), m.clone());
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                rt.block_on(store.set_legal_hold(&m, true)).unwrap();
            })
            .join()
            .unwrap();
        }
    };
    let r = purger.run_with_progress(opts, progress).await.unwrap();
    assert!(r.total() >= 1 && r.total() < due, "{r:?}");
    assert_eq!(r.held.get(m.as_str()).copied().unwrap_or(0), due - r.total(), "{r:?}");
    local.shutdown().await;
}

#[tokio::test]
async fn a_save_conditioned_on_the_version_it_read_never_overwrites_a_concurrent_one() {
    let clock = Arc::new(ManualClock::new(t0()));
    let local = start_local("ret-save-version", clock.clone(), &merchant(|_| {})).await;
    let m = ids().0;
    let store = local.store();
    let read = store.get_merchant(&m).await.unwrap().unwrap().version;
    // Another save lands between this one's read and its write …
    let theirs = merchant(|v| v["retention_days"] = json!({ "sms_logs": 300 }));
    callfy_shared::app::retention::save_merchant(store, &theirs, t0()).await.unwrap();
    assert_eq!(store.get_merchant(&m).await.unwrap().unwrap().version, read + 1);
    // … so this write, conditioned on what it read, is refused and writes nothing.
    let ours = merchant(|v| v["retention_days"] = json!({ "sms_logs": 30 }));
    let lost = callfy_shared::ports::MerchantStore::put_merchant_if(store, &ours, t0(), Some(read), None).await;
    assert!(matches!(lost, Err(callfy_shared::ports::PortError::Conflict)), "{lost:?}");
    let kept = store.get_merchant(&m).await.unwrap().unwrap();
    assert_eq!((kept.merchant.retention_days.sms_logs, kept.version), (300, read + 1));
    // A save that reads first goes through; a new merchant is created only if none exists.
    callfy_shared::app::retention::save_merchant(store, &ours, t0()).await.unwrap();
    assert_eq!(store.get_merchant(&m).await.unwrap().unwrap().merchant.retention_days.sms_logs, 30);
    let twice = callfy_shared::ports::MerchantStore::put_merchant_if(store, &ours, t0(), None, None).await;
    assert!(matches!(twice, Err(callfy_shared::ports::PortError::Conflict)), "{twice:?}");
    let e = callfy_shared::app::retention::SaveError::Concurrent(m.clone()).to_string();
    assert!(e.contains("read it again and retry"), "{e}");
    local.shutdown().await;
}
