//! The fast tier: every use case over its ports in memory (no moto), with a fault injected
//! through a port, asserting what changed and what did not. `cargo test -p callfy-shared`.

mod memory;

use callfy_shared::app::consent::{self, ApiAnswer, ConsentError, Idempotency};
use callfy_shared::app::ingest::{Ingest, IngestError};
use callfy_shared::app::outreach::{Outreach, OutreachError};
use callfy_shared::app::privacy::{Privacy, Subject};
use callfy_shared::app::retention::{ERASURE_PAGE, Purger, RunOptions};
use callfy_shared::app::{delivery, inbound, voice};
use callfy_shared::domain::cart::{Cart, CartItem, CheckoutSnapshot};
use callfy_shared::domain::consent::{ConsentAction, ConsentEvent, ConsentSource, ConsentStatus, Evidence};
use callfy_shared::domain::inbound::InboundMessage;
use callfy_shared::domain::merchant::{Channel, Merchant};
use callfy_shared::domain::outreach::{Direction, MerchantRecord, MerchantStatus, SmsLogEntry};
use callfy_shared::domain::subject::SubjectKey;
use callfy_shared::domain::voice::{CallLogEntry, CallRecording, KeyOptOut, RecordingCopy};
use callfy_shared::platforms::{ConsentSignal, PlatformEvent};
use callfy_shared::ports::{Classify, ErrorKind, PortError};
use callfy_shared::{CartToken, ManualClock, MerchantId, Phone};
use chrono::{DateTime, TimeZone, Utc};
use memory::{Memory, Queue, Telephony};
use std::sync::Arc;

const PHONE: &str = "+14155552671";
const CALL_SID: &str = "CA00000000000000000000000000000001";
const RECORDING_SID: &str = "RE00000000000000000000000000000001";

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 10, 17, 0, 0).unwrap()
}

fn merchant() -> Merchant {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../events/demo-merchant.json");
    Merchant::from_json(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn record() -> MerchantRecord {
    MerchantRecord {
        merchant: merchant(),
        status: MerchantStatus::Active,
        api_key_sha256: None,
        legal_hold: false,
        version: 0,
    }
}

fn phone() -> Phone {
    Phone::parse(PHONE, None).unwrap()
}

fn snapshot(token: &str, at: DateTime<Utc>) -> CheckoutSnapshot {
    CheckoutSnapshot {
        token: CartToken::parse(token).unwrap(),
        checkout_id: Some("42".into()),
        customer_id: None,
        phone: Some(phone()),
        email: Some("ann@example.com".into()),
        first_name: Some("Ann".into()),
        recovery_url: Some("https://snowdevil.myshopify.com/r/abc".into()),
        total_price: Some("1.00".into()),
        currency: Some("USD".into()),
        item_count: 1,
        items: CartItem::new("Wax Puck", 1).into_iter().collect(),
        province_code: None,
        country_code: Some("US".into()),
        locale: None,
        updated_at: at,
        completed: false,
        attributes: Vec::new(),
    }
}

fn cart(token: &str) -> Cart {
    let mut c = Cart::new(merchant().id, snapshot(token, t0()), t0());
    c.version = 1;
    c
}

fn opt_in(channel: Channel, at: DateTime<Utc>) -> ConsentEvent {
    ConsentEvent {
        channel,
        action: ConsentAction::OptIn,
        source: ConsentSource::Api,
        occurred_at: at,
        recorded_at: at,
        evidence: Evidence { consent_text: Some("Text me about my cart".into()), ..Default::default() },
    }
}

/// A checkout of cart `token` at t0 whose SMS consent box was ticked then.
fn ticked_checkout(token: &str) -> PlatformEvent {
    let signal = ConsentSignal {
        action: ConsentAction::OptIn,
        occurred_at: t0(),
        evidence: Evidence { consent_text: Some("Text me".into()), ..Default::default() },
    };
    PlatformEvent::CartUpserted { snapshot: Box::new(snapshot(token, t0())), consent: Some(signal) }
}

fn transient<E: Classify>(r: &Result<impl std::fmt::Debug, E>) -> bool {
    matches!(r, Err(e) if e.kind() == ErrorKind::Transient)
}

#[tokio::test]
async fn a_consent_write_that_fails_is_not_answered_and_its_retry_records_it_once() {
    let mem = Memory::default();
    let m = merchant();
    let event = opt_in(Channel::Sms, t0());
    let idem = Idempotency { key: Some("req-1"), request_sha256: "abc" };
    let render = |_: consent::ApiOutcome<'_>| (201, serde_json::json!({ "ok": true }));

    mem.fail("append_consent_answered", 1);
    let failed = consent::record_for_merchant(&mem, &m, &phone(), &event, idem, t0(), render).await;
    assert!(matches!(failed, Err(ConsentError::Store(ref e)) if e.is_transient()), "{failed:?}");
    assert!(mem.ledger(&m.id, &phone(), Channel::Sms).1.is_empty(), "nothing half-written");
    assert!(mem.state.lock().unwrap().idempotency.is_empty(), "no answer stored for a failed write");

    let first = consent::record_for_merchant(&mem, &m, &phone(), &event, idem, t0(), render).await.unwrap();
    assert!(matches!(first, ApiAnswer::Fresh(_)));
    let replay = consent::record_for_merchant(&mem, &m, &phone(), &event, idem, t0(), render).await.unwrap();
    assert!(matches!(replay, ApiAnswer::Replayed(_)), "the retry replays the first answer");
    assert_eq!(mem.ledger(&m.id, &phone(), Channel::Sms).1.len(), 1);
}

#[tokio::test]
async fn a_stop_landing_between_the_read_and_the_write_is_never_overwritten() {
    let mem = Memory::default();
    let m = merchant();
    let event = opt_in(Channel::Sms, t0());
    let idem = Idempotency { key: None, request_sha256: "abc" };
    let render = |_: consent::ApiOutcome<'_>| (201, serde_json::json!({ "ok": true }));
    let (id, p) = (m.id.clone(), phone());
    // The API read the ledger empty; a texted STOP is appended before its write.
    mem.before("append_consent_answered", move |mem| {
        let stop = ConsentEvent {
            action: ConsentAction::OptOut,
            source: ConsentSource::Keyword,
            ..opt_in(Channel::Sms, t0())
        };
        let append = callfy_shared::ports::ConsentAppend {
            merchant_id: id,
            phone: p,
            state: Default::default(),
            event: stop,
            purge_at: t0(),
        };
        mem.append(&append).expect("the STOP lands first");
    });
    consent::record_for_merchant(&mem, &m, &phone(), &event, idem, t0(), render).await.unwrap();
    let (state, entries) = mem.ledger(&m.id, &phone(), Channel::Sms);
    assert_eq!(entries[0].event.action, ConsentAction::OptOut, "the STOP keeps its place in the ledger");
    assert_eq!(entries.iter().map(|e| e.seq).collect::<Vec<_>>(), (1..=entries.len() as u64).collect::<Vec<_>>());
    assert_eq!(state.seq, entries.len() as u64, "the state is the head of the chain");
    assert!(mem.called("consent_state") >= 2, "the write lost its condition and was decided again");
}

#[tokio::test]
async fn an_api_opt_in_racing_the_subjects_deletion_is_decided_again_and_refused() {
    let mem = Memory::default();
    let m = merchant();
    let event = opt_in(Channel::Sms, t0());
    let idem = Idempotency { key: Some("req-del"), request_sha256: "abc" };
    let render = |o: consent::ApiOutcome<'_>| match o {
        consent::ApiOutcome::DeletedSubject { .. } => (409, serde_json::json!({ "error": "deleted_subject" })),
        _ => (201, serde_json::json!({ "ok": true })),
    };
    // The API read no deletion; the person's deletion writes its marker before the append.
    let id = m.id.clone();
    mem.before("append_consent_answered", move |mem| {
        let key = memory::marked(&id, &SubjectKey::phone(&phone()));
        mem.state.lock().unwrap().deletion_markers.insert(key, t0() + chrono::Duration::hours(1));
    });
    let answer = consent::record_for_merchant(&mem, &m, &phone(), &event, idem, t0(), render).await.unwrap();
    assert!(matches!(answer, ApiAnswer::Fresh(ref r) if r.status == 409), "{answer:?}");
    assert!(mem.ledger(&m.id, &phone(), Channel::Sms).1.is_empty(), "no consent after the deletion");
    assert_eq!(mem.called("deletion_marker"), 2, "decided again on the marker");
    // Its retry replays the refusal.
    let replay = consent::record_for_merchant(&mem, &m, &phone(), &event, idem, t0(), render).await.unwrap();
    assert!(matches!(replay, ApiAnswer::Replayed(ref r) if r.status == 409), "{replay:?}");
}

#[tokio::test]
async fn a_carrier_opt_out_report_whose_status_write_fails_changes_nothing_until_redelivered() {
    let mem = Memory::default();
    let m = merchant();
    mem.add_merchant(m.clone());
    mem.add_sms(SmsLogEntry {
        merchant_id: m.id.clone(),
        phone: phone(),
        direction: Direction::Outbound,
        message_sid: "SM1".into(),
        body: "your cart".into(),
        status: "sent".into(),
        cart_token: None,
        step: Some(0),
        segments: 1,
        created_at: t0(),
        purge_at: t0(),
        status_history: Default::default(),
        error_code: None,
        senders: Vec::new(),
    });
    let report = delivery::Report {
        message_sid: "SM1",
        status: "undelivered",
        error_code: Some(21610),
        to: Some(phone()),
        senders: ["", ""],
    };
    mem.fail("update_sms_status", 1);
    assert!(transient(&delivery::record(&mem, &report, t0()).await));
    assert_eq!(mem.ledger(&m.id, &phone(), Channel::Sms).0.status, ConsentStatus::Unknown);

    assert_eq!(delivery::record(&mem, &report, t0()).await.unwrap(), delivery::Outcome::Recorded);
    assert_eq!(mem.ledger(&m.id, &phone(), Channel::Sms).0.status, ConsentStatus::OptedOut);
}

fn stop_message() -> InboundMessage {
    InboundMessage {
        message_sid: "SMin1".into(),
        from: phone(),
        to: "+15005550006".into(),
        messaging_service_sid: "MG0123456789abcdef0123456789abcdef".into(),
        body: "STOP".into(),
        segments: 1,
        received_at: t0(),
    }
}

/// The inbound messages stored for a person at a merchant.
fn stored_inbound(mem: &Memory, m: &MerchantId) -> Vec<SmsLogEntry> {
    let s = mem.state.lock().unwrap();
    s.sms.iter().filter(|e| e.merchant_id == *m && e.direction == Direction::Inbound).cloned().collect()
}

#[tokio::test]
async fn a_stop_whose_storing_fails_is_not_classified_and_its_queued_copy_applies_it() {
    let mem = Memory::default();
    let m = merchant();
    mem.add_merchant(m.clone());
    let msg = stop_message();
    let merchants = inbound::merchants_for(&mem, &msg).await.unwrap();
    assert_eq!(merchants.len(), 1);

    mem.fail("record_inbound", 1);
    assert!(transient(&inbound::receive(&mem, &msg, &merchants).await));
    // Nothing is made of a message that is not stored: the queued copy is what applies it.
    assert!(stored_inbound(&mem, &m.id).is_empty());
    assert_eq!(mem.ledger(&m.id, &phone(), Channel::Sms).0.status, ConsentStatus::Unknown);

    let replayed = inbound::replay(&mem, &msg).await.unwrap();
    assert!(replayed.first, "the copy stores, classifies and applies it");
    assert_eq!(replayed.affected.len(), 1);
    assert_eq!(stored_inbound(&mem, &m.id).len(), 1);
    assert_eq!(mem.ledger(&m.id, &phone(), Channel::Sms).0.status, ConsentStatus::OptedOut);
    assert_eq!(mem.ledger(&m.id, &phone(), Channel::Voice).0.status, ConsentStatus::OptedOut);
    let again = inbound::replay(&mem, &msg).await.unwrap();
    assert!(!again.first && again.affected.is_empty(), "a second copy is a redelivery");
    assert_eq!(mem.ledger(&m.id, &phone(), Channel::Sms).1.len(), 1, "one ledger entry, not two");
    assert_eq!(stored_inbound(&mem, &m.id).len(), 1, "stored once");
}

#[tokio::test]
async fn a_failure_between_storing_and_classifying_loses_nothing_and_the_replay_classifies_what_was_stored() {
    let mem = Memory::default();
    let m = merchant();
    mem.add_merchant(m.clone());
    let msg = stop_message();
    let merchants = inbound::merchants_for(&mem, &msg).await.unwrap();

    assert!(inbound::receive(&mem, &msg, &merchants).await.unwrap().first, "stored as received: the first write");
    // The next step fails (the inline attempt crashes) before the message is classified.
    mem.fail("inbound_applied", 1);
    assert!(transient(&inbound::apply(&mem, &msg, &merchants).await));
    let stored = stored_inbound(&mem, &m.id);
    assert_eq!(stored.len(), 1);
    assert_eq!((stored[0].body.as_str(), stored[0].status.as_str()), ("STOP", "received"));
    assert_eq!((stored[0].phone.clone(), stored[0].created_at), (phone(), t0()));
    assert_eq!(stored[0].purge_at, t0() + chrono::Duration::days(i64::from(m.retention_days.sms_logs)));
    assert_eq!(mem.ledger(&m.id, &phone(), Channel::Sms).0.status, ConsentStatus::Unknown, "not applied yet");

    // The queued copy, taken later: what is classified and recorded is the stored message, as
    // it was received (its time, not the copy's).
    let copy = InboundMessage { received_at: t0() + chrono::Duration::minutes(1), ..msg.clone() };
    let replayed = inbound::replay(&mem, &copy).await.unwrap();
    assert!(replayed.first);
    assert_eq!(replayed.classified.rule.as_deref(), Some("keyword:stop"));
    for channel in [Channel::Sms, Channel::Voice] {
        let (state, entries) = mem.ledger(&m.id, &phone(), channel);
        assert_eq!(state.status, ConsentStatus::OptedOut, "{channel:?}");
        assert_eq!(entries[0].event.occurred_at, t0());
        assert_eq!(entries[0].event.evidence.message_sid.as_deref(), Some("SMin1"));
    }
    assert_eq!(stored_inbound(&mem, &m.id).len(), 1, "the copy stores nothing twice");
}

#[tokio::test]
async fn a_late_copy_from_before_a_deletion_stores_nothing_again_and_a_start_in_it_resubscribes_nothing() {
    let mem = Memory::default();
    let m = merchant();
    mem.add_merchant(m.clone());
    let key = memory::marked(&m.id, &SubjectKey::phone(&phone()));
    // STOP, applied; then a START at t0+1m whose inline attempt stored nothing.
    inbound::replay(&mem, &stop_message()).await.unwrap();
    let start = InboundMessage {
        message_sid: "SMstart".into(),
        body: "START".into(),
        received_at: t0() + chrono::Duration::minutes(1),
        ..stop_message()
    };
    // The person's data is deleted at t0+2m (the opt-out is kept), before the START's copy runs.
    mem.state.lock().unwrap().sms.clear();
    mem.state.lock().unwrap().deletion_markers.insert(key.clone(), t0() + chrono::Duration::minutes(2));
    let replayed = inbound::replay(&mem, &start).await.unwrap();
    assert!(replayed.affected.is_empty(), "re-subscribes nothing");
    assert!(stored_inbound(&mem, &m.id).is_empty(), "the START is not stored again");
    assert_eq!(mem.ledger(&m.id, &phone(), Channel::Sms).0.status, ConsentStatus::OptedOut);

    // A STOP's late copy is still stored, as its evidence.
    let stop = InboundMessage { message_sid: "SMstop2".into(), body: "STOP".into(), ..start.clone() };
    inbound::replay(&mem, &stop).await.unwrap();
    assert_eq!(stored_inbound(&mem, &m.id).len(), 1);

    // A START texted after the deletion is the person's own new request: honoured.
    let later = InboundMessage {
        message_sid: "SMstart2".into(),
        received_at: t0() + chrono::Duration::minutes(3),
        ..start.clone()
    };
    assert_eq!(inbound::replay(&mem, &later).await.unwrap().affected.len(), 1);
    assert_eq!(mem.ledger(&m.id, &phone(), Channel::Sms).0.status, ConsentStatus::OptedIn);
}

#[tokio::test]
async fn a_late_stop_from_before_a_deletion_still_opts_out_and_cancels() {
    let mem = Memory::default();
    let m = merchant();
    mem.add_merchant(m.clone());
    // Nothing opted out before the deletion (none kept): the STOP's copy, received before it,
    // arrives after it, and is applied all the same (an opt-out outlives the person's data).
    let key = memory::marked(&m.id, &SubjectKey::phone(&phone()));
    mem.state.lock().unwrap().deletion_markers.insert(key.clone(), t0() + chrono::Duration::minutes(2));
    let stop = InboundMessage { received_at: t0() + chrono::Duration::minutes(1), ..stop_message() };
    // A deletion moving the marker again while it is being stored does not stop it either.
    mem.before("record_inbound", move |mem| {
        mem.state.lock().unwrap().deletion_markers.insert(key, t0() + chrono::Duration::minutes(3));
    });
    let replayed = inbound::replay(&mem, &stop).await.unwrap();
    assert_eq!(replayed.affected.len(), 1);
    assert_eq!(mem.called("record_inbound"), 1, "stored at the first attempt: an opt-out is not guarded");
    for channel in [Channel::Sms, Channel::Voice] {
        assert_eq!(mem.ledger(&m.id, &phone(), channel).0.status, ConsentStatus::OptedOut, "{channel:?}");
    }
    assert!(!mem.state.lock().unwrap().cancelled.is_empty(), "queued outreach cancelled");
    assert_eq!(stored_inbound(&mem, &m.id).len(), 1);
}

#[tokio::test]
async fn a_deletion_between_reading_its_marker_and_writing_a_start_wins() {
    let mem = Memory::default();
    let m = merchant();
    mem.add_merchant(m.clone());
    let key = memory::marked(&m.id, &SubjectKey::phone(&phone()));
    inbound::replay(&mem, &stop_message()).await.unwrap();
    let start = InboundMessage {
        message_sid: "SMstart".into(),
        body: "START".into(),
        received_at: t0() + chrono::Duration::minutes(1),
        ..stop_message()
    };
    // Stored before the deletion; the opt-in's write is paused after its marker read (none),
    // and the deletion completes meanwhile.
    let merchants = inbound::merchants_for(&mem, &start).await.unwrap();
    assert!(inbound::receive(&mem, &start, &merchants).await.unwrap().first);
    let k = key.clone();
    mem.before("record_opt_in", move |mem| {
        mem.state.lock().unwrap().deletion_markers.insert(k, t0() + chrono::Duration::minutes(2));
    });
    let applied = inbound::apply(&mem, &start, &merchants).await.unwrap();
    assert!(applied.affected.is_empty(), "the write was refused, decided again on the marker, and dropped");
    assert_eq!(mem.ledger(&m.id, &phone(), Channel::Sms).0.status, ConsentStatus::OptedOut);
    assert_eq!(mem.called("record_opt_in"), 1);

    // The same race on storing: a copy paused before its write meets the deletion, and is not stored.
    let late = InboundMessage { message_sid: "SMhelp".into(), body: "HELP".into(), ..start.clone() };
    mem.state.lock().unwrap().deletion_markers.remove(&key);
    let k = key.clone();
    mem.before("record_inbound", move |mem| {
        mem.state.lock().unwrap().deletion_markers.insert(k, t0() + chrono::Duration::minutes(2));
    });
    let received = inbound::receive(&mem, &late, &merchants).await.unwrap();
    assert!(received.merchants.is_empty() && !received.first, "read again after the refused write: not stored");
    assert!(stored_inbound(&mem, &m.id).iter().all(|e| e.message_sid != "SMhelp"));
}

#[tokio::test]
async fn a_texted_stop_covers_what_its_words_name() {
    for (body, sms, voice) in [
        ("Please stop calling me", ConsentStatus::Unknown, ConsentStatus::OptedOut),
        ("stop texting me", ConsentStatus::OptedOut, ConsentStatus::Unknown),
        ("Stop all", ConsentStatus::OptedOut, ConsentStatus::OptedOut),
        ("don't contact me", ConsentStatus::OptedOut, ConsentStatus::OptedOut),
    ] {
        let mem = Memory::default();
        let m = merchant();
        mem.add_merchant(m.clone());
        let msg = InboundMessage { body: body.into(), ..stop_message() };
        let merchants = inbound::merchants_for(&mem, &msg).await.unwrap();
        inbound::receive(&mem, &msg, &merchants).await.unwrap();
        let applied = inbound::apply(&mem, &msg, &merchants).await.unwrap();
        assert_eq!(applied.affected.len(), 1, "{body}");
        assert_eq!(mem.ledger(&m.id, &phone(), Channel::Sms).0.status, sms, "{body}: texts");
        assert_eq!(mem.ledger(&m.id, &phone(), Channel::Voice).0.status, voice, "{body}: calls");
    }
}

#[tokio::test]
async fn a_stop_to_a_number_the_merchant_no_longer_texts_from_reaches_every_merchant_that_did() {
    let mem = Memory::default();
    let m = merchant();
    mem.add_merchant(m.clone());
    let old = "+15005550010";
    mem.add_sms(SmsLogEntry {
        merchant_id: m.id.clone(),
        phone: phone(),
        direction: Direction::Outbound,
        message_sid: "SMout1".into(),
        body: "your cart".into(),
        status: "delivered".into(),
        cart_token: None,
        step: Some(0),
        segments: 1,
        created_at: t0(),
        purge_at: t0(),
        status_history: Default::default(),
        error_code: None,
        senders: vec![old.into()],
    });
    // The merchant now texts from its Messaging Service; the reply goes to the old number.
    let msg = InboundMessage { to: old.into(), messaging_service_sid: String::new(), ..stop_message() };
    let merchants = inbound::merchants_for(&mem, &msg).await.unwrap();
    assert_eq!(merchants.iter().map(|r| r.merchant.id.clone()).collect::<Vec<_>>(), vec![m.id.clone()]);
    inbound::receive(&mem, &msg, &merchants).await.unwrap();
    assert_eq!(inbound::apply(&mem, &msg, &merchants).await.unwrap().affected.len(), 1);
    assert_eq!(mem.ledger(&m.id, &phone(), Channel::Sms).0.status, ConsentStatus::OptedOut);
    assert_eq!(stored_inbound(&mem, &m.id)[0].senders, vec![old.to_string()]);

    // Someone that merchant never texted from that number reaches nobody.
    let stranger = Phone::parse("+14155550199", None).unwrap();
    let msg = InboundMessage { from: stranger, message_sid: "SMin2".into(), ..msg };
    assert!(inbound::merchants_for(&mem, &msg).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_delivery_whose_transaction_fails_stores_nothing_and_queues_nothing() {
    let mem = Memory::default();
    let queue = Queue::default();
    let r = record();
    let ingest = Ingest { store: &mem, queue: &queue };
    let event = || ticked_checkout("tok-1");

    mem.fail("write_ingest", 1);
    let failed = ingest.apply(&r, "shopify#e1", event(), t0()).await;
    assert!(matches!(failed, Err(IngestError::Port(ref e)) if e.is_transient()), "{failed:?}");
    assert!(mem.state.lock().unwrap().carts.is_empty());
    assert!(queue.jobs.lock().unwrap().is_empty(), "nothing scheduled for a delivery not stored");

    // The platform's retry goes through, once.
    ingest.apply(&r, "shopify#e1", event(), t0()).await.unwrap();
    assert_eq!(mem.state.lock().unwrap().carts.len(), 1);
    let again = ingest.apply(&r, "shopify#e1", event(), t0()).await.unwrap();
    assert_eq!(again.as_str(), "duplicate");
}

#[tokio::test]
async fn an_outreach_step_whose_consent_read_fails_sends_nothing_and_claims_nothing() {
    let mem = Memory::default();
    let m = merchant();
    mem.add_merchant(m.clone());
    let c = cart("tok-2");
    mem.add_cart(c.clone());
    let job = callfy_shared::domain::flow::job_for(&m, &c, 0).expect("the demo flow has a first step");
    let twilio = Telephony::default();
    let clock = Arc::new(ManualClock::new(job.due_at + chrono::Duration::minutes(1)));
    let outreach = Outreach {
        store: mem.clone(),
        twilio: twilio.clone(),
        queue: Queue::default(),
        clock,
        public_base_url: "https://hooks.callfy.test".into(),
    };
    mem.fail("consent_state", 1);
    let failed = outreach.process_job(&job).await;
    assert!(matches!(failed, Err(OutreachError::Port(ref e)) if e.is_transient()), "{failed:?}");
    assert!(twilio.sent.lock().unwrap().is_empty() && twilio.placed.lock().unwrap().is_empty());
    assert_eq!(mem.called("claim"), 0, "no claim without a complete decision");
}

#[tokio::test]
async fn a_deletion_whose_recordings_cannot_be_deleted_keeps_the_opt_out_marker_and_the_items() {
    let mem = Memory::default();
    let files = Telephony::default();
    let r = record();
    mem.add_cart(cart("tok-3"));
    let mut recorded = call(CALL_SID);
    if let Some(rec) = recorded.recording.as_mut() {
        rec.s3_key = Some("recordings/snowdevil/2026/06/10/call.wav".into());
    }
    mem.add_call(recorded);
    files.objects.lock().unwrap().insert("recordings/snowdevil/2026/06/10/call.wav".into(), 12);
    *files.bucket_down.lock().unwrap() = true;
    let privacy = Privacy { store: &mem, recordings: &files };
    let failed = privacy.delete(&r, &Subject::Phone(phone()), "dsr_1", t0()).await;
    assert!(matches!(failed, Err(ref e) if e.kind() == ErrorKind::Transient), "{failed:?}");
    let s = mem.state.lock().unwrap();
    assert!(
        s.deletion_markers.contains_key(&memory::marked(&r.merchant.id, &SubjectKey::phone(&phone()))),
        "marker first"
    );
    assert!(s.deleted.is_empty(), "no item deleted while the recordings remain");
    assert!(s.privacy.is_empty(), "not reported done");
}

#[tokio::test]
async fn a_deletion_landing_between_the_marker_read_and_the_cart_write_keeps_the_number_out() {
    let mem = Memory::default();
    let queue = Queue::default();
    let r = record();
    let ingest = Ingest { store: &mem, queue: &queue };
    let event = ticked_checkout("tok-d");
    // The checkout read "no deletion"; the person's deletion writes its marker before the cart lands.
    let id = r.merchant.id.clone();
    mem.before("write_ingest", move |mem| {
        let key = memory::marked(&id, &SubjectKey::phone(&phone()));
        mem.state.lock().unwrap().deletion_markers.insert(key, t0() + chrono::Duration::minutes(5));
    });
    let outcome = ingest.apply(&r, "shopify#e-d", event, t0()).await.unwrap();
    assert_eq!(outcome.as_str(), "ignored", "acknowledged with only its dedupe marker");
    let s = mem.state.lock().unwrap();
    assert!(s.carts.is_empty(), "the deleted number is not stored again");
    assert!(s.consent.is_empty(), "its ticked box applies nothing");
    assert!(s.events.contains(&(r.merchant.id.to_string(), "shopify#e-d".into())));
    drop(s);
    assert!(queue.jobs.lock().unwrap().is_empty(), "nothing scheduled");
    assert_eq!(mem.called("deletion_marker"), 4, "the refused write was decided again on the markers (number, email)");
}

#[tokio::test]
async fn a_deletion_marks_what_it_erases_no_earlier_than_its_latest_checkout_and_never_moves_a_marker_back() {
    let mem = Memory::default();
    let (files, queue) = (Telephony::default(), Queue::default());
    let r = record();
    // A run dated before the checkout it erases (a retention run's `as_of`, a late schedule).
    let updated = t0() + chrono::Duration::hours(2);
    let mut c = cart("tok-l");
    c.updated_at = updated;
    c.customer_id = Some("7390".into());
    mem.add_cart(c);
    let privacy = Privacy { store: &mem, recordings: &files };
    privacy.delete(&r, &Subject::Phone(phone()), "dsr_l", t0()).await.unwrap();
    let marker =
        |k: SubjectKey| mem.state.lock().unwrap().deletion_markers.get(&memory::marked(&r.merchant.id, &k)).copied();
    for key in [SubjectKey::phone(&phone()), SubjectKey::email("ann@example.com"), SubjectKey::customer("7390")] {
        assert_eq!(marker(key.clone()), Some(updated), "{key:?}: marked at the erased checkout's time");
    }
    // A copy of that checkout, by its email with no number, is refused.
    let ingest = Ingest { store: &mem, queue: &queue };
    let mut copy = checkout_at("tok-m", None, updated);
    if let PlatformEvent::CartUpserted { snapshot, .. } = &mut copy {
        snapshot.customer_id = Some("7390".into());
    }
    assert_eq!(ingest.apply(&r, "shopify#e-m", copy, updated).await.unwrap().as_str(), "ignored");
    // A second deletion dated earlier does not move the markers back.
    privacy.delete(&r, &Subject::Phone(phone()), "dsr_l2", t0() - chrono::Duration::days(1)).await.unwrap();
    assert_eq!(marker(SubjectKey::phone(&phone())), Some(updated));
}

fn checkout_at(token: &str, phone: Option<&str>, at: DateTime<Utc>) -> PlatformEvent {
    let mut snap = snapshot(token, at);
    snap.phone = phone.map(|p| Phone::parse(p, None).unwrap());
    let signal = ConsentSignal {
        action: ConsentAction::OptIn,
        occurred_at: at,
        evidence: Evidence { consent_text: Some("Text me".into()), ..Default::default() },
    };
    PlatformEvent::CartUpserted { snapshot: Box::new(snap), consent: Some(signal) }
}

#[tokio::test]
async fn a_late_checkout_carrying_a_deleted_email_is_not_stored_whatever_its_number() {
    let mem = Memory::default();
    let (files, queue) = (Telephony::default(), Queue::default());
    let r = record();
    mem.add_cart(cart("tok-e"));
    let deleted_at = t0() + chrono::Duration::hours(1);
    let privacy = Privacy { store: &mem, recordings: &files };
    privacy.delete(&r, &Subject::Email("Ann@Example.com".into()), "dsr_e", deleted_at).await.unwrap();
    {
        let s = mem.state.lock().unwrap();
        let email_key = memory::marked(&r.merchant.id, &SubjectKey::email("ann@example.com"));
        assert_eq!(s.deletion_markers.get(&email_key), Some(&deleted_at), "the email is marked");
        let phone_key = memory::marked(&r.merchant.id, &SubjectKey::phone(&phone()));
        assert_eq!(s.deletion_markers.get(&phone_key), Some(&deleted_at), "and the number on its cart");
        let key = (format!("K#{}#tok-e", r.merchant.id), "CART".to_string());
        assert!(s.deleted.contains(&key), "the email's cart is erased");
    }

    // Retries of checkouts made before the deletion: a new number, then none at all.
    let ingest = Ingest { store: &mem, queue: &queue };
    for (token, number, key) in [("tok-f", Some("+14155550199"), "shopify#e-f"), ("tok-g", None, "shopify#e-g")] {
        let outcome = ingest.apply(&r, key, checkout_at(token, number, t0()), deleted_at).await.unwrap();
        assert_eq!(outcome.as_str(), "ignored", "{token}: only its dedupe marker");
    }
    {
        let s = mem.state.lock().unwrap();
        let tokens: Vec<&str> = s.carts.keys().map(|(_, t)| t.as_str()).collect();
        assert!(!tokens.iter().any(|t| ["tok-f", "tok-g"].contains(t)), "nothing stored again: {tokens:?}");
        assert!(s.consent.is_empty(), "no ticked box applied");
    }
    assert!(queue.jobs.lock().unwrap().is_empty());

    // A checkout the person makes after the deletion is a new one.
    let later = t0() + chrono::Duration::hours(2);
    let outcome =
        ingest.apply(&r, "shopify#e-h", checkout_at("tok-h", Some("+14155550199"), later), later).await.unwrap();
    assert_eq!(outcome.as_str(), "accepted");
    assert!(mem.state.lock().unwrap().carts.keys().any(|(_, t)| t == "tok-h"));
}

#[tokio::test]
async fn an_email_deletion_landing_between_the_marker_read_and_the_write_keeps_a_numberless_checkout_out() {
    let mem = Memory::default();
    let queue = Queue::default();
    let r = record();
    let ingest = Ingest { store: &mem, queue: &queue };
    let id = r.merchant.id.clone();
    mem.before("write_ingest", move |mem| {
        let key = memory::marked(&id, &SubjectKey::email("ann@example.com"));
        mem.state.lock().unwrap().deletion_markers.insert(key, t0() + chrono::Duration::minutes(5));
    });
    let outcome = ingest.apply(&r, "shopify#e-n", checkout_at("tok-n", None, t0()), t0()).await.unwrap();
    assert_eq!(outcome.as_str(), "ignored");
    assert!(mem.state.lock().unwrap().carts.is_empty(), "refused as read, decided again, not stored");
    assert_eq!(mem.called("write_ingest"), 2, "the first write was refused by the marker it had not seen");
}

#[tokio::test]
async fn a_checkout_committed_just_before_the_deletion_marker_is_found_and_erased() {
    let mem = Memory::default();
    let files = Telephony::default();
    let r = record();
    mem.add_cart(cart("tok-a"));
    // The deletion's first look found tok-a; a checkout for the same number commits before the
    // marker is written (after it, its write would be refused: the test above).
    let late = cart("tok-b");
    mem.before("put_deletion_marker", move |mem| mem.add_cart(late));
    let privacy = Privacy { store: &mem, recordings: &files };
    privacy.delete(&r, &Subject::Phone(phone()), "dsr_2", t0()).await.unwrap();
    let s = mem.state.lock().unwrap();
    for token in ["tok-a", "tok-b"] {
        let key = (format!("K#{}#{token}", r.merchant.id), "CART".to_string());
        assert!(s.deleted.contains(&key), "{token} erased");
    }
    assert!(s.deletion_markers.contains_key(&memory::marked(&r.merchant.id, &SubjectKey::phone(&phone()))));
}

#[tokio::test]
async fn a_purge_run_whose_index_read_fails_records_its_error() {
    let mem = Memory::default();
    let files = Telephony::default();
    let queue = Queue::default();
    let purger = Purger { store: &mem, recordings: &files, queue: &queue };
    mem.fail("due_page", 1);
    let opts = RunOptions {
        as_of: t0(),
        dry_run: false,
        deadline: None,
        started_at: t0(),
        closure_grace_days: 30,
        erasure_page: ERASURE_PAGE,
    };
    let failed = purger.run(opts).await;
    assert!(matches!(failed, Err(ref e) if e.kind() == ErrorKind::Transient), "{failed:?}");
    let s = mem.state.lock().unwrap();
    // The failed run still leaves its audit record, with the error and what it did.
    assert_eq!(s.reports.len(), 1);
    assert!(!s.reports[0].complete && s.reports[0].errors.len() == 1, "{:?}", s.reports[0]);
}

fn call(sid: &str) -> CallLogEntry {
    CallLogEntry {
        merchant_id: merchant().id,
        phone: phone(),
        call_sid: sid.into(),
        cart_token: CartToken::parse("tok-4").unwrap(),
        step: 1,
        status: "completed".into(),
        created_at: t0(),
        purge_at: t0(),
        status_history: Default::default(),
        duration_seconds: Some(30),
        answered_by: None,
        error_code: None,
        outcome: None,
        summary: None,
        recording: Some(CallRecording {
            recording_sid: RECORDING_SID.into(),
            duration_seconds: Some(30),
            s3_key: None,
            twilio_deleted: false,
            purge_at: t0(),
        }),
    }
}

#[tokio::test]
async fn a_recording_that_cannot_be_stored_stays_at_twilio_for_the_retry() {
    let mem = Memory::default();
    mem.add_merchant(merchant());
    mem.add_call(call(CALL_SID));
    let twilio = Telephony::default();
    *twilio.bucket_down.lock().unwrap() = true;
    let copy = RecordingCopy {
        merchant_id: merchant().id,
        call_sid: CALL_SID.into(),
        recording_sid: RECORDING_SID.into(),
        duration_seconds: Some(30),
    };
    let scratch = std::env::temp_dir();
    let failed = voice::copy_recording(&mem, &twilio, &twilio, &copy, &scratch).await;
    assert!(matches!(failed, Err(voice::VoiceError::Port(ref e)) if e.is_transient()), "{failed:?}");
    assert!(twilio.deleted_recordings.lock().unwrap().is_empty(), "Twilio's copy is the only one");

    *twilio.bucket_down.lock().unwrap() = false;
    voice::copy_recording(&mem, &twilio, &twilio, &copy, &scratch).await.unwrap();
    assert_eq!(twilio.deleted_recordings.lock().unwrap().as_slice(), [RECORDING_SID]);
    assert_eq!(twilio.objects.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_key_nine_whose_ledger_write_fails_is_applied_by_its_queued_replay() {
    let mem = Memory::default();
    let m = merchant();
    let o = KeyOptOut::key_9(m.id.clone(), phone(), "CA2".into(), t0());
    mem.fail("record_consent", 1);
    let failed = voice::apply_key_opt_out(&mem, &m, &o, false).await;
    assert!(matches!(failed, Err(PortError::Service { .. })), "{failed:?}");
    assert!(voice::apply_key_opt_out(&mem, &m, &o, true).await.unwrap(), "the replay records it");
    assert!(!voice::apply_key_opt_out(&mem, &m, &o, true).await.unwrap(), "and only once");
    assert_eq!(mem.ledger(&m.id, &phone(), Channel::Voice).0.status, ConsentStatus::OptedOut);
}

#[tokio::test]
async fn a_spoken_stop_whose_ledger_writes_fail_is_applied_to_calls_and_texts_by_its_queued_copy() {
    let mem = Memory::default();
    let m = merchant();
    let mut o = KeyOptOut::key_9(m.id.clone(), phone(), "CA3".into(), t0());
    o.channels = vec![Channel::Voice, Channel::Sms];
    o.spoken = Some(callfy_shared::domain::voice::SpokenOptOut {
        rule: "spoken_phrase:stop".into(),
        words: Some("Stop.".into()),
    });
    // The copy on the queue is what the worker reads: it must survive the trip.
    let wire = serde_json::to_string(&o).unwrap();
    assert_eq!(serde_json::from_str::<KeyOptOut>(&wire).unwrap(), o);
    // A copy queued before this field existed is a key 9: calls only.
    let old = r#"{"merchant_id":"snowdevil","phone":"+14155552671","call_sid":"CA4","at":"2026-11-24T19:30:00Z"}"#;
    assert_eq!(serde_json::from_str::<KeyOptOut>(old).unwrap().channels, vec![Channel::Voice]);

    mem.fail("record_consent", 1);
    assert!(voice::apply_key_opt_out(&mem, &m, &o, false).await.is_err(), "the inline attempt fails");
    assert!(voice::apply_key_opt_out(&mem, &m, &o, true).await.unwrap(), "the replay records it");
    assert!(!voice::apply_key_opt_out(&mem, &m, &o, true).await.unwrap(), "and only once");
    for channel in [Channel::Voice, Channel::Sms] {
        let (state, ledger) = mem.ledger(&m.id, &phone(), channel);
        assert_eq!(state.status, ConsentStatus::OptedOut, "{channel:?}");
        let last = &ledger.last().unwrap().event;
        assert_eq!(last.source, ConsentSource::Spoken);
        assert_eq!(last.evidence.words.as_deref(), Some("Stop."));
        assert_eq!(last.evidence.message_sid.as_deref(), Some("CA3"));
    }
}

#[tokio::test]
async fn a_merchant_over_its_api_burst_is_throttled_and_another_merchant_is_not() {
    use callfy_shared::app::limits::{Admission, admit};
    use callfy_shared::domain::ratelimit::ApiLimit;
    let mem = Memory::default();
    let (a, b) = (MerchantId::parse("merchant-a").unwrap(), MerchantId::parse("merchant-b").unwrap());
    let limit = ApiLimit { rate_per_second: 2, burst: 5 };
    let mut admitted = 0;
    for _ in 0..12 {
        match admit(&mem, &a, &limit, t0()).await.unwrap() {
            Admission::Admitted => admitted += 1,
            Admission::Throttled { retry_after_seconds } => assert_eq!(retry_after_seconds, 1),
        }
    }
    assert_eq!(admitted, 5, "the burst, then nothing until a token comes back");
    assert_eq!(admit(&mem, &b, &limit, t0()).await.unwrap(), Admission::Admitted, "b has its own bucket");
    let later = t0() + chrono::Duration::milliseconds(500);
    assert_eq!(admit(&mem, &a, &limit, later).await.unwrap(), Admission::Admitted, "one token in half a second");
    assert!(matches!(admit(&mem, &a, &limit, later).await.unwrap(), Admission::Throttled { .. }));
}

#[tokio::test]
async fn a_quiet_api_bucket_that_another_request_makes_busy_between_the_steps_still_gives_a_token() {
    use callfy_shared::app::limits::{Admission, LimitError, admit};
    use callfy_shared::domain::ratelimit::{ApiLimit, micros};
    let mem = Memory::default();
    let m = MerchantId::parse("merchant-a").unwrap();
    let limit = ApiLimit { rate_per_second: 10, burst: 3 };
    // Another instance takes the first token just before this request's "quiet" step is written.
    let (id, taken) = (m.to_string(), micros(t0()) + limit.interval());
    mem.before("bucket_step", move |mem| {
        mem.state.lock().unwrap().api_buckets.insert(id, taken);
    });
    assert_eq!(admit(&mem, &m, &limit, t0()).await.unwrap(), Admission::Admitted);
    assert_eq!(mem.state.lock().unwrap().api_buckets[m.as_str()], taken + limit.interval(), "the busy step");
    assert_eq!(mem.called("bucket"), 0, "no read was needed");
    // The store failing is a failure to retry (503), never a free pass or a 429.
    mem.fail("take_step", 1);
    assert!(matches!(admit(&mem, &m, &limit, t0()).await, Err(LimitError::Store(ref e)) if e.is_transient()));
}

#[test]
fn every_use_case_error_says_whether_to_retry() {
    let outage = || PortError::unavailable("memory", "op", "down");
    assert_eq!(ConsentError::Store(outage()).kind(), ErrorKind::Transient);
    assert_eq!(ConsentError::Contention.kind(), ErrorKind::Transient);
    assert_eq!(callfy_shared::app::limits::LimitError::Contention.kind(), ErrorKind::Transient);
    assert_eq!(OutreachError::BadMessage("x".into()).kind(), ErrorKind::Permanent);
    assert_eq!(IngestError::Port(PortError::Decode("x".into())).kind(), ErrorKind::Permanent);
    let _ = MerchantId::parse("snowdevil").unwrap();
}

mod agent {
    use super::*;
    use callfy_shared::adapters::scripted::ScriptedModel;
    use callfy_shared::app::agent::{Agent, AgentLimits};
    use callfy_shared::domain::voice::CallRef;
    use memory::Relay;

    const CONN: &str = "conn-1";

    /// A merchant, an open cart, consent to texts and calls, and the call placed for step 1.
    async fn seeded() -> (Memory, Merchant, CallRef) {
        let mem = Memory::default();
        let mut m = merchant();
        m.voice_from = Some(Phone::parse("+15005550006", None).unwrap());
        mem.add_merchant(m.clone());
        let mut cart = Cart::new(m.id.clone(), snapshot("tok-agent", t0()), t0());
        cart.phone = Some(phone());
        mem.add_cart(cart);
        for channel in [Channel::Sms, Channel::Voice] {
            let event = ConsentEvent {
                channel,
                action: ConsentAction::OptIn,
                source: ConsentSource::Checkout,
                occurred_at: t0(),
                recorded_at: t0(),
                evidence: Evidence::default(),
            };
            consent::record(&mem, &m, &phone(), &event, t0()).await.unwrap();
        }
        let mut entry = call(CALL_SID);
        entry.cart_token = CartToken::parse("tok-agent").unwrap();
        entry.recording = None;
        mem.state.lock().unwrap().calls.push(entry);
        let r = CallRef { merchant_id: m.id.clone(), cart_token: CartToken::parse("tok-agent").unwrap(), step: 1 };
        (mem, m, r)
    }

    /// The agent over the in-memory ports, the scripted agent as its model and its fallback.
    fn agent_over<'a>(
        mem: &'a Memory,
        model: &'a ScriptedModel,
        relay: &'a Relay,
        sms: &'a Telephony,
        queue: &'a Queue,
    ) -> Agent<'a, Memory, ScriptedModel, ScriptedModel, Relay, Telephony, Queue> {
        Agent {
            store: mem,
            model,
            fallback: model,
            relay,
            sms,
            outreach_queue: queue,
            public_base_url: "https://callfy.test",
            limits: AgentLimits::default(),
        }
    }

    fn setup_msg() -> String {
        serde_json::json!({ "type": "setup", "callSid": CALL_SID, "from": "+15005550006", "to": PHONE }).to_string()
    }

    fn prompt(words: &str) -> String {
        serde_json::json!({ "type": "prompt", "voicePrompt": words, "last": true }).to_string()
    }

    #[tokio::test]
    async fn a_newer_turn_landing_between_the_read_and_the_write_silences_the_older_one() {
        let (mem, _, r) = seeded().await;
        let (model, relay, sms, queue) =
            (ScriptedModel::default(), Relay::default(), Telephony::default(), Queue::default());
        let agent = agent_over(&mem, &model, &relay, &sms, &queue);
        agent.connect(CONN, &r, t0()).await.unwrap();
        agent.message(CONN, &setup_msg(), t0()).await.unwrap();
        assert!(relay.sent.lock().unwrap().is_empty(), "nothing is said after setup");
        // A newer prompt takes the turn after this one read it and before its first words.
        mem.before("say", |m| {
            let mut s = m.state.lock().unwrap();
            s.sessions.get_mut(CALL_SID).unwrap().turn += 1;
        });
        agent.message(CONN, &prompt("what is in my cart"), t0()).await.unwrap();
        assert!(relay.texts().is_empty(), "the older turn sent nothing: {:?}", relay.texts());
        // The next prompt speaks normally.
        agent.message(CONN, &prompt("what is in my cart"), t0()).await.unwrap();
        assert!(relay.texts().concat().contains("Wax Puck"), "{:?}", relay.texts());
    }

    #[tokio::test]
    async fn an_opt_out_is_heard_before_the_model_and_a_failed_write_is_queued() {
        let (mem, _, r) = seeded().await;
        let (model, relay, sms, queue) =
            (ScriptedModel::default(), Relay::default(), Telephony::default(), Queue::default());
        let agent = agent_over(&mem, &model, &relay, &sms, &queue);
        agent.connect(CONN, &r, t0()).await.unwrap();
        agent.message(CONN, &setup_msg(), t0()).await.unwrap();
        // The ledger write fails: the voice opt-out is made durable on the queue instead.
        mem.fail("record_consent", 1);
        agent.message(CONN, &prompt("Don't call me again"), t0()).await.unwrap();
        assert_eq!(queue.work.lock().unwrap().as_slice(), [CALL_SID.to_string()]);
        assert!(relay.ended().is_some_and(|h| h.contains("opted_out")));
        assert!(relay.texts().concat().contains("not receive more calls"), "{:?}", relay.texts());
        // The session ended with the opt-out: a later prompt takes no turn and says nothing.
        let said = relay.texts().len();
        agent.message(CONN, &prompt("what is in my cart"), t0()).await.unwrap();
        assert_eq!(relay.texts().len(), said);
        // Ten malformed frames end a session.
        let (mem2, _, r2) = seeded().await;
        let relay2 = Relay::default();
        let agent2 = Agent { store: &mem2, relay: &relay2, ..agent };
        agent2.connect("c2", &r2, t0()).await.unwrap();
        for _ in 0..10 {
            agent2.message("c2", "{not json", t0()).await.unwrap();
        }
        assert!(relay2.ended().is_some_and(|h| h.contains("failed")));
    }

    #[tokio::test]
    async fn a_spoken_stop_is_heard_through_a_failed_read_and_its_copy_covers_calls_and_texts() {
        let (mem, m, r) = seeded().await;
        let (model, relay, sms, queue) =
            (ScriptedModel::default(), Relay::default(), Telephony::default(), Queue::default());
        let agent = agent_over(&mem, &model, &relay, &sms, &queue);
        agent.connect(CONN, &r, t0()).await.unwrap();
        agent.message(CONN, &setup_msg(), t0()).await.unwrap();
        // The session's first read fails (a throttled call the SDK gave up on), and every
        // inline ledger write fails: nobody resends the words, so the queued copy must hold both.
        mem.fail("connection", 1);
        mem.fail("record_consent", 100);
        agent.message(CONN, &prompt("Stop."), t0()).await.unwrap();
        assert!(relay.ended().is_some_and(|h| h.contains("opted_out")), "{:?}", relay.ended());
        // Not yet in force, so not said to be: received, taking effect within minutes.
        let said = relay.texts().concat();
        assert!(said.contains("stop calling and texting you is received"), "{said}");
        assert!(!said.contains("will not call or text you again"), "{said}");
        let queued = queue.opt_outs.lock().unwrap().clone();
        assert_eq!(queued.len(), 1, "one durable copy");
        let mut channels = queued[0].channels.clone();
        channels.sort_by_key(|c| c.as_str());
        assert_eq!(channels, vec![Channel::Sms, Channel::Voice]);
        assert_eq!(queued[0].spoken.as_ref().and_then(|s| s.words.as_deref()), Some("Stop."));
        // The worker's replay, once storage is back, records both.
        mem.fail("record_consent", 0);
        assert!(voice::apply_key_opt_out(&mem, &m, &queued[0], true).await.unwrap());
        for channel in [Channel::Sms, Channel::Voice] {
            let (state, ledger) = mem.ledger(&r.merchant_id, &phone(), channel);
            assert_eq!(state.status, ConsentStatus::OptedOut, "{channel:?}");
            assert_eq!(ledger.last().unwrap().event.source, ConsentSource::Spoken);
        }
    }

    #[tokio::test]
    async fn a_setup_that_cannot_be_stored_ends_the_session_and_a_stop_said_meanwhile_still_counts() {
        let (mem, _, r) = seeded().await;
        let (model, relay, sms, queue) =
            (ScriptedModel::default(), Relay::default(), Telephony::default(), Queue::default());
        let agent = agent_over(&mem, &model, &relay, &sms, &queue);
        agent.connect(CONN, &r, t0()).await.unwrap();
        // Two storage errors are ridden out: the session opens.
        mem.fail("open_session", 2);
        agent.message(CONN, &setup_msg(), t0()).await.unwrap();
        assert!(relay.ended().is_none(), "set up on the third attempt");

        let (mem, _, r) = seeded().await;
        let relay = Relay::default();
        let agent = Agent { store: &mem, relay: &relay, ..agent };
        agent.connect(CONN, &r, t0()).await.unwrap();
        mem.fail("open_session", 3);
        assert!(agent.message(CONN, &setup_msg(), t0()).await.is_err());
        assert!(relay.ended().is_some_and(|h| h.contains("failed")), "not left open with nobody behind it");
        // Words that crossed the `end` on the wire: recorded for the number the call's cart holds.
        agent.message(CONN, &prompt("Please stop calling me"), t0()).await.unwrap();
        assert_eq!(mem.ledger(&r.merchant_id, &phone(), Channel::Voice).0.status, ConsentStatus::OptedOut);
        assert_eq!(mem.ledger(&r.merchant_id, &phone(), Channel::Sms).0.status, ConsentStatus::OptedIn);
        let queued = queue.opt_outs.lock().unwrap().clone();
        assert_eq!(queued.last().map(|o| o.call_sid.as_str()), Some(format!("ws:{CONN}").as_str()));
    }

    #[tokio::test]
    async fn key_9_is_honoured_even_when_the_cart_can_no_longer_be_read() {
        let (mem, _, r) = seeded().await;
        let (model, relay, sms, queue) =
            (ScriptedModel::default(), Relay::default(), Telephony::default(), Queue::default());
        let agent = agent_over(&mem, &model, &relay, &sms, &queue);
        agent.connect(CONN, &r, t0()).await.unwrap();
        agent.message(CONN, &setup_msg(), t0()).await.unwrap();
        // The cart went (retention, a deletion) while the call was on.
        mem.state.lock().unwrap().carts.clear();
        agent.message(CONN, r#"{"type":"dtmf","digit":"9"}"#, t0()).await.unwrap();
        assert_eq!(mem.ledger(&r.merchant_id, &phone(), Channel::Voice).0.status, ConsentStatus::OptedOut);
        assert_eq!(queue.work.lock().unwrap().as_slice(), [CALL_SID.to_string()], "made durable first");
        assert!(relay.ended().is_some_and(|h| h.contains("opted_out")));
    }
}

/// A BigCommerce store API that makes a new single-use URL per call, or is down.
#[derive(Default)]
struct StubStoreApi {
    made: std::sync::atomic::AtomicU32,
    down: std::sync::atomic::AtomicBool,
}

impl callfy_shared::ports::StorefrontCarts for StubStoreApi {
    async fn cart(
        &self,
        _: &str,
        _: &str,
        _: &str,
    ) -> Result<Option<callfy_shared::ports::storefront::StoreCart>, callfy_shared::ports::storefront::StoreApiError>
    {
        Ok(None)
    }
    async fn checkout(
        &self,
        _: &str,
        _: &str,
        _: &str,
    ) -> Result<Option<callfy_shared::ports::storefront::StoreCheckout>, callfy_shared::ports::storefront::StoreApiError>
    {
        Ok(None)
    }
    async fn fresh_redirect(
        &self,
        _: &str,
        token: &str,
        id: &str,
    ) -> Result<Option<callfy_shared::ports::storefront::RedirectUrls>, callfy_shared::ports::storefront::StoreApiError>
    {
        use std::sync::atomic::Ordering;
        if self.down.load(Ordering::SeqCst) {
            return Err(callfy_shared::ports::storefront::StoreApiError::Status(503));
        }
        assert!(!token.is_empty(), "the merchant's token is sent");
        let n = self.made.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(Some(callfy_shared::ports::storefront::RedirectUrls {
            checkout_url: Some(format!("https://store.test/checkout/{id}?t={n}")),
            cart_url: None,
        }))
    }
}

#[tokio::test]
async fn a_merchant_counting_clicks_texts_our_stored_link_and_a_retry_renders_the_same_one() {
    use callfy_shared::domain::link::LinkCode;
    use callfy_shared::ports::{ConsentStore, RecoveryLinks};
    let mem = Memory::default();
    let mut m = merchant();
    m.links.track_clicks = true;
    mem.add_merchant(m.clone());
    let c = cart("tok-links");
    mem.add_cart(c.clone());
    ConsentStore::record_consent(
        &mem,
        &m.id,
        &phone(),
        &opt_in(Channel::Sms, t0()),
        t0() + chrono::Duration::days(730),
    )
    .await
    .unwrap();
    let job = callfy_shared::domain::flow::job_for(&m, &c, 0).expect("the demo flow has a first step");
    let twilio = Telephony::default();
    let outreach = Outreach {
        store: mem.clone(),
        twilio: twilio.clone(),
        queue: Queue::default(),
        clock: Arc::new(ManualClock::new(job.due_at + chrono::Duration::minutes(1))),
        public_base_url: "https://hooks.callfy.test".into(),
    };
    // The link is stored before the claim: a store outage sends nothing.
    mem.fail("save_link", 1);
    assert!(transient(&outreach.process_job(&job).await));
    assert!(twilio.sent.lock().unwrap().is_empty());
    outreach.process_job(&job).await.unwrap();
    let body = twilio.sent.lock().unwrap()[0].body.clone();
    let code = LinkCode::for_message(&m.id, &c.token, 0, Channel::Sms);
    assert!(body.contains(&code.url("https://hooks.callfy.test")), "{body}");
    assert!(!body.contains("snowdevil.myshopify.com"), "{body}");
    let link = mem.find_link(&code).await.unwrap().unwrap();
    assert_eq!((link.step, link.channel, link.clicks), (0, Channel::Sms, 0));
    assert_eq!(mem.state.lock().unwrap().links.len(), 1, "one link however often it was tried");
}

#[tokio::test]
async fn a_bigcommerce_click_gets_a_fresh_url_each_time_and_is_counted_even_if_the_store_is_down() {
    use callfy_shared::app::links::{Click, ClickError, Clicks, message_link};
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../events/demo-merchant-bigcommerce.json");
    let m = Merchant::from_json(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mem = Memory::default();
    mem.add_merchant(m.clone());
    let mut c = Cart::new(m.id.clone(), snapshot("bc-cart-1", t0()), t0());
    c.version = 1;
    mem.add_cart(c.clone());
    let url = c.recovery_url.clone().unwrap();
    let link = message_link(&mem, "https://hooks.callfy.test", &m, &c, &url, 0, Channel::Sms, t0()).await.unwrap();
    assert!(link.starts_with("https://hooks.callfy.test/r/") && !link.contains(&url), "{link}");
    let code = link.rsplit('/').next().unwrap().to_string();

    let api = StubStoreApi::default();
    let clock: Arc<dyn callfy_shared::clock::Clock> = Arc::new(ManualClock::new(t0()));
    let clicks = Clicks { store: &mem, storefront: &api, clock: &clock };
    let first = clicks.open(&code).await.unwrap();
    let second = clicks.open(&code).await.unwrap();
    match (&first, &second) {
        (Click::Redirect(a), Click::Redirect(b)) => {
            assert_ne!(a, b);
            assert!(a.starts_with("https://store.test/checkout/bc-cart-1?t=1") && a.contains("utm_medium=sms"), "{a}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(api.made.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_eq!(mem.state.lock().unwrap().links[&code].clicks, 2);
    // Unknown and malformed codes: nothing read, nothing counted.
    assert_eq!(clicks.open("ZZZZZZZZZZZ").await.unwrap(), Click::Unknown);
    assert_eq!(clicks.open("../x").await.unwrap(), Click::Unknown);
    // A failed count never costs the shopper the cart.
    mem.fail("count_click", 1);
    assert!(matches!(clicks.open(&code).await.unwrap(), Click::Redirect(_)));
    // The store is down: a transient failure (503), the click still counted.
    api.down.store(true, std::sync::atomic::Ordering::SeqCst);
    let down = clicks.open(&code).await;
    assert!(matches!(down, Err(ClickError::StoreApi(_))) && transient(&down), "{down:?}");
    assert_eq!(mem.state.lock().unwrap().links[&code].clicks, 3);
}
