//! AI voice calls end to end through `callfy-local` and the Twilio sandbox: consent to calls
//! from the checkout, the call behind the same claim as a text, what the call says, the keys,
//! the call log, and the recording's copy to S3 before Twilio's is deleted.

use callfy_integration_tests::*;
use callfy_local::LocalHandle;
use callfy_shared::adapters::recordings::RecordingBucket;
use callfy_shared::adapters::store::StepState;
use callfy_shared::domain::consent::{ConsentSource, ConsentStatus};
use callfy_shared::domain::flow::{OutreachJob, SkipReason};
use callfy_shared::domain::merchant::{Channel, Merchant};
use callfy_shared::twilio_signature;
use callfy_shared::{CartToken, ManualClock, MerchantId, Phone};
use chrono::{DateTime, Duration, Utc};
use outreach_worker::{JobOutcome, Worker};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

const TOKEN: &str = "cd8e6f2f1c0b4a2e9d6c7b8a9f0e1d2c";

pub(crate) fn t0() -> DateTime<Utc> {
    // 11:00 in San Francisco (the shopper's area code), 14:00 for the merchant.
    "2026-11-28T19:00:00Z".parse().unwrap()
}

pub(crate) fn ids() -> (MerchantId, CartToken, Phone) {
    (MerchantId::parse("snowdevil").unwrap(), CartToken::parse(TOKEN).unwrap(), Phone::parse(PHONE, None).unwrap())
}

/// The voice demo merchant with the key menu (`voice.agent = "keypad"`; the agent has its own
/// tests): text now, call at +60 min, text with a code at +120 min.
pub(crate) fn voice_merchant(mutate: impl FnOnce(&mut Value)) -> Merchant {
    let mut v = read_json("events/demo-merchant-voice.json");
    v["flow"] = json!([{ "after_minutes": 0, "channel": "sms" }, { "after_minutes": 60, "channel": "voice" },
                       { "after_minutes": 120, "channel": "sms", "discount_code": "COMEBACK10" }]);
    v["voice"]["agent"] = "keypad".into();
    mutate(&mut v);
    Merchant::from_json(&v.to_string()).expect("valid voice merchant")
}

/// A checkout whose shopper ticked SMS consent and, when `calls`, the merchant's call-consent box.
pub(crate) async fn checkout_with(local: &LocalHandle, calls: bool) {
    let mut body = checkout(t0());
    if calls {
        body["note_attributes"] = json!([{ "name": "callfy_voice_consent", "value": "yes" }]);
    }
    let (status, answer) = post_shopify(&local.base_url, "checkouts/create", &unique("evt"), &body).await;
    assert_eq!(status, 200, "{answer}");
    let stats = local.drain().await.unwrap();
    assert_eq!(stats.failed, 0);
}

fn job(step: u8) -> OutreachJob {
    let (m, token, _) = ids();
    OutreachJob { merchant_id: m, cart_token: token, step, due_at: t0() }
}

pub(crate) async fn run(local: &LocalHandle, step: u8) -> JobOutcome {
    outreach_worker::process_job(&local.functions().worker.outreach, &job(step)).await.unwrap()
}

pub(crate) async fn setup(prefix: &str, merchant: Merchant, calls: bool) -> (LocalHandle, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(t0()));
    let local = start_local(prefix, clock.clone(), &merchant).await;
    checkout_with(&local, calls).await;
    (local, clock)
}

/// Places the call of step 1 (at +60 min) and returns its SID.
pub(crate) async fn place_call(local: &LocalHandle, clock: &ManualClock) -> String {
    clock.set(t0() + Duration::minutes(60));
    let JobOutcome::Called { call_sid } = run(local, 1).await else { panic!("the call step places a call") };
    call_sid
}

#[tokio::test]
async fn a_flow_texts_calls_then_texts_with_its_code_at_the_right_times() {
    let (local, clock) = setup("voice-flow", voice_merchant(|_| {}), true).await;
    let (m, token, phone) = ids();
    let store = local.store();

    // The checkout's call-consent box is in the voice ledger, with the merchant's wording.
    let ledger = store.consent_ledger(&m, &phone, Channel::Voice).await.unwrap();
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].event.source, ConsentSource::Checkout);
    assert!(ledger[0].event.evidence.consent_text.as_deref().unwrap().contains("automated assistant"));

    // Step 0 went out at once: the item, the tracked link, the STOP line.
    let sent = local.sandbox.messages();
    assert_eq!(sent.len(), 1);
    let first = &sent[0].body;
    assert!(first.contains("Freeride Snowboard 158"), "{first}");
    assert!(
        first.contains("recover?key=9a6d3e1f27b4c5d8&utm_source=callfy&utm_medium=sms&utm_campaign=cart_recovery"),
        "{first}"
    );

    // The call is not due before +60 min, then it is placed, once.
    clock.set(t0() + Duration::minutes(59));
    assert_eq!(run(&local, 1).await, JobOutcome::Waiting { until: t0() + Duration::minutes(60) });
    assert!(local.sandbox.calls().is_empty());
    let sid = place_call(&local, &clock).await;
    assert_eq!(run(&local, 1).await, JobOutcome::Duplicate, "a redelivery places no second call");
    let calls = local.sandbox.calls();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!((call.to.as_str(), call.from.as_str()), (PHONE, "+15005550006"));
    assert!(call.url.starts_with(&format!("{}/twilio/voice/answer?m=snowdevil&c={TOKEN}&s=1", local.base_url)));
    for url in [&call.url, call.status_callback.as_ref().unwrap(), call.recording_callback.as_ref().unwrap()] {
        assert!(!url.contains("4155552671") && !url.contains("Ann"), "no personal data in {url}");
    }
    assert!(call.record && call.machine_detection.as_deref() == Some("Enable") && call.time_limit == Some(300));
    let step = store.get_step(&m, &token, 1).await.unwrap().unwrap();
    assert_eq!((step.state, step.message_sid.as_deref()), (StepState::Sent, Some(sid.as_str())));

    // The answer names the merchant, says it is automated and recorded, and offers the keys.
    let turn = local.sandbox.answer_call(&sid, "human").await.unwrap();
    assert_eq!(turn.status, 200);
    let opening = &turn.said[0];
    assert!(opening.contains("Hello Ann, this is an automated assistant calling on behalf of Snowdevil"), "{opening}");
    assert!(opening.contains("This call is recorded."), "{opening}");
    assert!(turn.said[1].contains("press 1") && turn.said[1].contains("press 9"), "{:?}", turn.said);
    assert!(turn.gather_action.is_some());

    // Key 1 texts the link once, however often it is pressed.
    let pressed = local.sandbox.press(&sid, "1").await.unwrap();
    assert!(pressed.said[0].contains("texted you the link") && pressed.hangup, "{:?}", pressed.said);
    local.sandbox.answer_call(&sid, "human").await.unwrap();
    let again = local.sandbox.press(&sid, "1").await.unwrap();
    assert!(again.said[0].contains("already texted"), "{:?}", again.said);
    let sent = local.sandbox.messages();
    assert_eq!(sent.len(), 2, "one link text: {sent:?}");
    assert!(sent[1].body.contains("utm_medium=voice"), "{}", sent[1].body);

    // The call ends: its log moves forward, a late "ringing" changes nothing.
    let (status_code, recording_code) = local.sandbox.end_call(&sid, "completed", 42).await.unwrap();
    assert_eq!((status_code, recording_code), (200, Some(200)));
    let log = store.call_log(&m, &phone).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!((log[0].status.as_str(), log[0].duration_seconds), ("completed", Some(42)));
    assert!(log[0].status_history.contains_key("in-progress"));
    assert_eq!(log[0].purge_at, log[0].created_at + Duration::days(730));

    // The recording is copied to S3, encrypted, under its key; then Twilio's copy is deleted.
    let stats = local.poll_recordings(0).await.unwrap();
    assert_eq!((stats.succeeded, stats.failed), (1, 0));
    let key = format!("recordings/snowdevil/2026/11/{sid}.wav");
    let s3 = callfy_shared::adapters::aws::s3(&sdk().await);
    let head = s3.head_object().bucket(&local.resources.names.bucket).key(&key).send().await.expect("object stored");
    assert_eq!(head.server_side_encryption().map(|s| s.as_str()), Some("aws:kms"));
    assert_eq!(head.metadata().and_then(|m| m.get("call-sid")).map(String::as_str), Some(sid.as_str()));
    assert_eq!(local.sandbox.call(&sid).unwrap().recording_events, vec!["fetched", "deleted"]);
    let log = store.call_log(&m, &phone).await.unwrap();
    let rec = log[0].recording.as_ref().unwrap();
    assert_eq!((rec.s3_key.as_deref(), rec.twilio_deleted), (Some(key.as_str()), true));

    // The last step, at +120 min, is a follow-up text with the step's code.
    clock.set(t0() + Duration::minutes(119));
    assert!(matches!(run(&local, 2).await, JobOutcome::Waiting { .. }));
    clock.set(t0() + Duration::minutes(120));
    assert!(matches!(run(&local, 2).await, JobOutcome::Sent { .. }));
    let sent = local.sandbox.messages();
    assert_eq!(sent.len(), 3);
    assert!(sent[2].body.contains("COMEBACK10"), "{}", sent[2].body);

    // An order now is credited to that last text (step 2, SMS).
    clock.set(t0() + Duration::hours(3));
    let order = read_json("events/shopify/orders-create.json");
    assert_eq!(post_shopify(&local.base_url, "orders/create", &unique("evt"), &order).await.0, 200);
    let recovery = store.get_cart(&m, &token).await.unwrap().unwrap().recovery.unwrap();
    assert!(recovery.attributed);
    let touch = recovery.touch.unwrap();
    assert_eq!((touch.step, touch.channel), (2, Channel::Sms));
    assert!(local.sandbox.violations().is_empty(), "{:?}", local.sandbox.violations());
    local.shutdown().await;
}

#[tokio::test]
async fn without_consent_to_calls_there_is_no_call_and_the_flow_goes_on() {
    let (local, clock) = setup("voice-noconsent", voice_merchant(|_| {}), false).await;
    let (m, token, _) = ids();
    clock.set(t0() + Duration::minutes(60));
    assert_eq!(run(&local, 1).await, JobOutcome::Skipped(SkipReason::NoVoiceConsent));
    assert!(local.sandbox.calls().is_empty());
    let step = local.store().get_step(&m, &token, 1).await.unwrap().unwrap();
    assert_eq!((step.state, step.reason.as_deref()), (StepState::Skipped, Some("no_voice_consent")));
    // A redelivery says why again, and schedules the next step rather than ending the flow.
    assert_eq!(run(&local, 1).await, JobOutcome::Skipped(SkipReason::NoVoiceConsent));
    clock.set(t0() + Duration::minutes(120));
    assert!(matches!(run(&local, 2).await, JobOutcome::Sent { .. }));
    assert_eq!(local.sandbox.messages().len(), 2);
    local.shutdown().await;
}

#[tokio::test]
async fn a_merchant_file_with_its_own_agent_url_is_refused_naming_voice_agent() {
    let mut v = read_json("events/demo-merchant-voice.json");
    v["ai_agent_url"] = "wss://agent.snowdevil.test/relay".into();
    let err = Merchant::from_json(&v.to_string()).unwrap_err().to_string();
    assert!(err.contains("ai_agent_url") && err.contains("voice.agent"), "{err}");
}

#[tokio::test]
async fn key_9_stops_calls_and_leaves_texts() {
    let (local, clock) = setup("voice-key9", voice_merchant(|_| {}), true).await;
    let (m, _, phone) = ids();
    let sid = place_call(&local, &clock).await;
    local.sandbox.answer_call(&sid, "human").await.unwrap();
    let turn = local.sandbox.press(&sid, "9").await.unwrap();
    assert!(turn.said[0].contains("You will not receive more calls from Snowdevil") && turn.hangup, "{:?}", turn.said);
    let voice = local.store().consent_state(&m, &phone, Channel::Voice).await.unwrap();
    assert_eq!(voice.status, ConsentStatus::OptedOut);
    let last = local.store().consent_ledger(&m, &phone, Channel::Voice).await.unwrap().pop().unwrap().event;
    assert_eq!((last.source, last.evidence.message_sid.as_deref()), (ConsentSource::KeyPress, Some(sid.as_str())));
    assert_eq!(local.store().consent_state(&m, &phone, Channel::Sms).await.unwrap().status, ConsentStatus::OptedIn);
    // The checkout's call-consent box is still ticked on its next update: it is no new consent.
    let mut update = checkout(t0() + Duration::minutes(61));
    update["note_attributes"] = json!([{ "name": "callfy_voice_consent", "value": "yes" }]);
    clock.set(t0() + Duration::minutes(62));
    assert_eq!(post_shopify(&local.base_url, "checkouts/update", &unique("evt"), &update).await.0, 200);
    assert_eq!(local.store().consent_state(&m, &phone, Channel::Voice).await.unwrap().status, ConsentStatus::OptedOut);
    // The texts go on: the last step (due again after the update) still goes out.
    clock.set(t0() + Duration::minutes(181));
    assert!(matches!(run(&local, 2).await, JobOutcome::Sent { .. }));
    local.shutdown().await;
}

#[tokio::test]
async fn a_machine_gets_no_message_unless_the_merchant_leaves_voicemail_and_no_input_repeats_once() {
    let (local, clock) = setup("voice-machine", voice_merchant(|_| {}), true).await;
    let sid = place_call(&local, &clock).await;
    let turn = local.sandbox.answer_call(&sid, "machine_end_beep").await.unwrap();
    assert!(turn.said.is_empty() && turn.hangup, "{turn:?}");
    // A person who presses nothing hears the menu once more, then goodbye.
    local.sandbox.answer_call(&sid, "human").await.unwrap();
    let again = local.sandbox.no_input(&sid).await.unwrap();
    assert!(again.said[0].contains("press 9") && again.gather_action.as_deref().is_some_and(|a| a.ends_with("try=2")));
    let bye = local.sandbox.no_input(&sid).await.unwrap();
    assert!(bye.said[0].contains("Goodbye") && bye.hangup, "{bye:?}");
    // An unanswered call gives its place in the daily count back.
    let (m, token, phone) = ids();
    assert!(local.store().send_counter(&m, &phone).await.unwrap().sends.iter().any(|s| s.step == 1));
    local.sandbox.end_call(&sid, "no-answer", 0).await.unwrap();
    let counter = local.store().send_counter(&m, &phone).await.unwrap();
    assert!(!counter.sends.iter().any(|s| s.cart == token && s.step == 1), "{counter:?}");
    local.shutdown().await;

    let merchant = voice_merchant(|v| v["voice"]["voicemail"] = true.into());
    let (local, clock) = setup("voice-voicemail", merchant, true).await;
    let sid = place_call(&local, &clock).await;
    assert_eq!(local.sandbox.call(&sid).unwrap().machine_detection.as_deref(), Some("DetectMessageEnd"));
    let turn = local.sandbox.answer_call(&sid, "machine_end_beep").await.unwrap();
    assert!(turn.said[0].contains("automated assistant calling on behalf of Snowdevil") && turn.hangup, "{turn:?}");
    local.shutdown().await;
}

#[tokio::test]
async fn an_order_acknowledged_after_the_call_was_placed_silences_it() {
    let (local, clock) = setup("voice-order", voice_merchant(|_| {}), true).await;
    let sid = place_call(&local, &clock).await;
    let order = read_json("events/shopify/orders-create.json");
    assert_eq!(post_shopify(&local.base_url, "orders/create", &unique("evt"), &order).await.0, 200);
    let turn = local.sandbox.answer_call(&sid, "human").await.unwrap();
    assert!(turn.said.is_empty() && turn.hangup, "{turn:?}");
    local.shutdown().await;
}

/// Fails the first `n` S3 PutObject calls, as an S3 outage would.
#[derive(Debug)]
struct FailPuts(Arc<AtomicUsize>);

impl aws_sdk_s3::config::Intercept for FailPuts {
    fn name(&self) -> &'static str {
        "FailPuts"
    }

    fn read_before_transmit(
        &self,
        context: &aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _: &aws_sdk_s3::config::RuntimeComponents,
        _: &mut aws_sdk_s3::config::ConfigBag,
    ) -> Result<(), aws_sdk_s3::error::BoxError> {
        let put = context.request().method() == "PUT" && context.request().uri().contains("/recordings/");
        if put && self.0.load(Ordering::SeqCst) > 0 {
            self.0.fetch_sub(1, Ordering::SeqCst);
            return Err("injected: S3 unavailable".into());
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_recording_survives_s3_failing_twice_and_twilio_keeps_it_until_it_is_stored() {
    let (local, clock) = setup("voice-s3", voice_merchant(|_| {}), true).await;
    let sid = place_call(&local, &clock).await;
    local.sandbox.answer_call(&sid, "human").await.unwrap();
    local.sandbox.end_call(&sid, "completed", 30).await.unwrap();
    // A repeated recording callback queues the copy again; the copy is still made once.
    let call = local.sandbox.call(&sid).unwrap();
    let rec = call.recording_sid.clone().unwrap();

    let failures = Arc::new(AtomicUsize::new(2));
    let sdk = sdk().await;
    let conf = aws_sdk_s3::config::Builder::from(&sdk).force_path_style(true).interceptor(FailPuts(failures.clone()));
    let failing =
        RecordingBucket::new(aws_sdk_s3::Client::from_conf(conf.build()), &local.resources.names.bucket, None);
    let w = &local.functions().worker;
    let worker = Worker {
        outreach: w.outreach.clone(),
        recordings: failing,
        scratch: std::env::temp_dir(),
        webhooks: w.webhooks.clone(),
    };

    let event = one_queued_event(&local.resources.recordings_queue_url).await;
    let key = format!("recordings/snowdevil/2026/11/{sid}.wav");
    let s3 = callfy_shared::adapters::aws::s3(&sdk);
    for attempt in 1..=2 {
        let response = outreach_worker::handle_batch(&worker, event.clone()).await;
        assert_eq!(response.batch_item_failures.len(), 1, "attempt {attempt} fails and returns to the queue");
        assert!(s3.head_object().bucket(&local.resources.names.bucket).key(&key).send().await.is_err());
        let events = local.sandbox.call(&sid).unwrap().recording_events;
        assert!(!events.contains(&"deleted".to_string()), "Twilio keeps it: {events:?}");
    }
    let response = outreach_worker::handle_batch(&worker, event.clone()).await;
    assert!(response.batch_item_failures.is_empty());
    let head = s3.head_object().bucket(&local.resources.names.bucket).key(&key).send().await.unwrap();
    assert_eq!(head.server_side_encryption().map(|s| s.as_str()), Some("aws:kms"));
    let events = local.sandbox.call(&sid).unwrap().recording_events;
    assert_eq!(events.last().map(String::as_str), Some("deleted"), "deleted at Twilio only after S3 held it");
    assert_eq!(events.iter().filter(|e| *e == "deleted").count(), 1);
    // A late redelivery finds the work done: nothing fetched or deleted again.
    let response = outreach_worker::handle_batch(&worker, event).await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(local.sandbox.call(&sid).unwrap().recording_events, events);
    let (m, _, phone) = ids();
    let log = local.store().call_log(&m, &phone).await.unwrap();
    assert_eq!(log[0].recording.as_ref().map(|r| r.recording_sid.as_str()), Some(rec.as_str()));
    local.shutdown().await;
}

#[tokio::test]
async fn forged_voice_callbacks_get_403_and_change_nothing() {
    let (local, clock) = setup("voice-forged", voice_merchant(|_| {}), true).await;
    let (m, _, phone) = ids();
    let sid = place_call(&local, &clock).await;
    let reference = format!("m=snowdevil&c={TOKEN}&s=1");
    let rec = format!("RE{}", "0".repeat(32));
    let cases: Vec<(&str, Vec<(String, String)>)> = vec![
        ("answer", vec![("CallSid".into(), sid.clone())]),
        ("gather", vec![("CallSid".into(), sid.clone()), ("Digits".into(), "9".into())]),
        ("status", vec![("CallSid".into(), sid.clone()), ("CallStatus".into(), "failed".into())]),
        ("recording", vec![("CallSid".into(), sid.clone()), ("RecordingSid".into(), rec.clone())]),
    ];
    let http = reqwest::Client::new();
    for (route, form) in cases {
        let url = format!("{}/twilio/voice/{route}?{reference}", local.base_url);
        // Signed with the wrong token, then not signed at all.
        let forged = twilio_signature::compute("not-the-auth-token", &url, &form);
        for signature in [Some(forged), None] {
            let mut req = http.post(&url).form(&form);
            if let Some(sig) = &signature {
                req = req.header(twilio_signature::HEADER, sig);
            }
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status().as_u16(), 403, "{route} with {signature:?}");
        }
    }
    assert_eq!(local.store().consent_state(&m, &phone, Channel::Voice).await.unwrap().status, ConsentStatus::OptedIn);
    let log = local.store().call_log(&m, &phone).await.unwrap();
    assert_eq!(log[0].status, "queued");
    assert!(log[0].recording.is_none());
    assert_eq!(local.poll_recordings(0).await.unwrap().received, 0, "no copy was queued");
    local.shutdown().await;
}

#[tokio::test]
async fn a_call_whose_answer_was_lost_is_found_at_twilio_not_placed_again() {
    let (local, clock) = setup("voice-lost", voice_merchant(|_| {}), true).await;
    let (m, token, phone) = ids();
    // Twilio takes the call, and the answer never comes back in time.
    local.sandbox.inject(callfy_local::sandbox::Fault::accept_then_hang(5_000));
    clock.set(t0() + Duration::minutes(60));
    let err = outreach_worker::process_job(&local.functions().worker.outreach, &job(1)).await.unwrap_err();
    assert!(err.to_string().contains("Twilio"), "{err}");
    assert_eq!(local.sandbox.calls().len(), 1);
    let step = local.store().get_step(&m, &token, 1).await.unwrap().unwrap();
    assert_eq!(step.state, StepState::Retry);
    assert!(step.uncertain_since.is_some());
    // The retry asks Twilio first, finds the call, records it, and places nothing more.
    let JobOutcome::Called { call_sid } = run(&local, 1).await else { panic!("the found call is recorded") };
    assert_eq!(local.sandbox.calls().len(), 1);
    assert_eq!(call_sid, local.sandbox.calls()[0].sid);
    let log = local.store().call_log(&m, &phone).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].call_sid, call_sid);
    local.shutdown().await;
}

/// voice-callbacks as the sample events were signed for (scripts/local-env's PUBLIC_BASE_URL).
fn sample_app(local: &LocalHandle) -> voice_callbacks::VoiceApp {
    let v = &local.functions().voice;
    voice_callbacks::VoiceApp {
        public_ws_url: "ws://127.0.0.1:9/twilio/voice/relay".into(),
        store: v.store.clone(),
        recordings_queue: v.recordings_queue.clone(),
        outreach_queue: v.outreach_queue.clone(),
        replay_delay_seconds: 0,
        twilio: v.twilio.clone(),
        auth_token: v.auth_token.clone(),
        previous_auth_token: None,
        shared_key: None,
        public_base_url: "http://127.0.0.1:3000".into(),
        clock: Arc::clone(&v.clock),
    }
}

fn sample(file: &str) -> lambda_http::Request {
    lambda_http::request::from_str(&read_json(&format!("events/{file}")).to_string()).expect("sample event")
}

fn text(resp: lambda_http::Response<lambda_http::Body>) -> (u16, String) {
    let status = resp.status().as_u16();
    match resp.into_body() {
        lambda_http::Body::Text(t) => (status, t),
        other => (status, format!("{other:?}")),
    }
}

#[tokio::test]
async fn the_sample_events_drive_the_voice_handler_as_lambda_would() {
    let (local, _) = setup("voice-samples", voice_merchant(|_| {}), true).await;
    let app = sample_app(&local);
    let (status, twiml) = text(voice_callbacks::handle(&app, sample("twilio-voice-answer.json")).await);
    assert_eq!(status, 200);
    assert!(
        twiml.contains("automated assistant calling on behalf of Snowdevil") && twiml.contains("<Gather"),
        "{twiml}"
    );
    let (status, twiml) = text(voice_callbacks::handle(&app, sample("twilio-voice-gather.json")).await);
    assert_eq!(status, 200);
    assert!(twiml.contains("You will not receive more calls from Snowdevil"), "{twiml}");
    let (m, _, phone) = ids();
    let last = local.store().consent_ledger(&m, &phone, Channel::Voice).await.unwrap().pop().unwrap().event;
    assert_eq!(last.evidence.message_sid.as_deref(), Some("CA0000000000000000000000000000c001"));
    // No call with the sample's SID was logged here: the status is acknowledged and ignored.
    let (status, body) = text(voice_callbacks::handle(&app, sample("twilio-voice-status.json")).await);
    assert_eq!((status, body.contains("ignored")), (200, true), "{body}");
    // Anything else about the request being wrong is refused before it is read.
    let mut tampered = read_json("events/twilio-voice-gather.json");
    tampered["rawQueryString"] = "m=snowdevil&c=other&s=1&try=1".into();
    let req = lambda_http::request::from_str(&tampered.to_string()).unwrap();
    assert_eq!(voice_callbacks::handle(&app, req).await.status(), 403);
    local.shutdown().await;
}

#[tokio::test]
async fn a_call_twilio_refuses_is_recorded_and_the_texts_go_on() {
    let (local, clock) = setup("voice-refused", voice_merchant(|_| {}), true).await;
    let (m, token, _) = ids();
    // 21215: the account has no permission to call that region.
    local.sandbox.inject(callfy_local::sandbox::Fault::error(400, 21215));
    clock.set(t0() + Duration::minutes(60));
    assert_eq!(run(&local, 1).await, JobOutcome::Rejected { error_code: Some(21215) });
    let step = local.store().get_step(&m, &token, 1).await.unwrap().unwrap();
    assert_eq!((step.state, step.error_code), (StepState::Failed, Some(21215)));
    assert!(local.sandbox.calls().is_empty());
    clock.set(t0() + Duration::minutes(120));
    assert!(matches!(run(&local, 2).await, JobOutcome::Sent { .. }));
    local.shutdown().await;
}

#[tokio::test]
async fn key_9_survives_a_storage_outage_through_its_queued_copy() {
    let (local, clock) = setup("voice-key9-down", voice_merchant(|_| {}), true).await;
    let (m, _, phone) = ids();
    let sid = place_call(&local, &clock).await;
    local.sandbox.answer_call(&sid, "human").await.unwrap();
    // voice-callbacks with every DynamoDB write failing.
    let (status, twiml) = press_9(&local, &sid, FailWrites::on()).await;
    assert_eq!(status, 200);
    // Received, not yet in force: nothing is promised that a call placed meanwhile would break.
    assert!(twiml.contains("Your request to stop calls from Snowdevil is received"), "{twiml}");
    assert!(!twiml.contains("You will not receive more calls"), "{twiml}");
    assert_eq!(local.store().consent_state(&m, &phone, Channel::Voice).await.unwrap().status, ConsentStatus::OptedIn);
    // Storage is back: the worker applies the queued copy, once.
    let stats = local.drain().await.unwrap();
    assert_eq!(stats.failed, 0);
    assert_eq!(local.store().consent_state(&m, &phone, Channel::Voice).await.unwrap().status, ConsentStatus::OptedOut);
    let last = local.store().consent_ledger(&m, &phone, Channel::Voice).await.unwrap().pop().unwrap().event;
    assert_eq!(last.evidence.message_sid.as_deref(), Some(sid.as_str()));
    local.shutdown().await;
}

#[tokio::test]
async fn key_9_whose_write_fails_once_is_applied_at_once() {
    let (local, clock) = setup("voice-key9-once", voice_merchant(|_| {}), true).await;
    let (m, _, phone) = ids();
    let sid = place_call(&local, &clock).await;
    local.sandbox.answer_call(&sid, "human").await.unwrap();
    let once = FailNextWrites(Arc::new(std::sync::atomic::AtomicUsize::new(1)));
    let (status, twiml) = press_9(&local, &sid, once.clone()).await;
    assert_eq!(status, 200);
    assert!(twiml.contains("You will not receive more calls from Snowdevil"), "{twiml}");
    assert_eq!(once.0.load(std::sync::atomic::Ordering::SeqCst), 0, "a write did fail first");
    let state = local.store().consent_state(&m, &phone, Channel::Voice).await.unwrap();
    assert_eq!(state.status, ConsentStatus::OptedOut, "applied inline, not left to the queued copy");
    local.shutdown().await;
}

/// Key 9 pressed on call `sid`, to voice-callbacks whose DynamoDB client carries `fault`.
async fn press_9(
    local: &callfy_local::LocalHandle,
    sid: &str,
    fault: impl aws_sdk_dynamodb::config::Intercept + 'static,
) -> (u16, String) {
    let conf = aws_sdk_dynamodb::config::Builder::from(&sdk().await).interceptor(fault).build();
    let failing =
        callfy_shared::adapters::store::Store::new(aws_sdk_dynamodb::Client::from_conf(conf), local.store().table());
    let v = &local.functions().voice;
    let down = voice_callbacks::VoiceApp {
        public_ws_url: "ws://127.0.0.1:9/twilio/voice/relay".into(),
        store: failing,
        recordings_queue: v.recordings_queue.clone(),
        outreach_queue: v.outreach_queue.clone(),
        replay_delay_seconds: 0,
        twilio: v.twilio.clone(),
        auth_token: v.auth_token.clone(),
        previous_auth_token: None,
        shared_key: None,
        public_base_url: v.public_base_url.clone(),
        clock: Arc::clone(&v.clock),
    };
    let call = local.sandbox.call(sid).unwrap();
    let url = call.gather_action.clone().unwrap();
    let path_and_query = url.strip_prefix(&local.base_url).unwrap().to_string();
    let form = vec![
        ("CallSid".to_string(), sid.to_string()),
        ("Digits".to_string(), "9".to_string()),
        ("To".to_string(), PHONE.to_string()),
    ];
    let body = serde_urlencoded::to_string(&form).unwrap();
    let signature = twilio_signature::compute(callfy_shared::config::local_defaults::TWILIO_AUTH_TOKEN, &url, &form);
    let req = lambda_http::http::Request::builder()
        .method("POST")
        .uri(format!("http://127.0.0.1{path_and_query}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header(twilio_signature::HEADER, signature)
        .body(lambda_http::Body::Text(body))
        .unwrap();
    text(voice_callbacks::handle(&down, req).await)
}

#[tokio::test]
async fn a_recording_of_a_call_not_yet_logged_is_copied_once_the_call_is() {
    let (local, clock) = setup("voice-early-rec", voice_merchant(|_| {}), true).await;
    let (m, _, phone) = ids();
    // Twilio places the call, and its answer to us is lost.
    local.sandbox.inject(callfy_local::sandbox::Fault::accept_then_hang(5_000));
    clock.set(t0() + Duration::minutes(60));
    assert!(outreach_worker::process_job(&local.functions().worker.outreach, &job(1)).await.is_err());
    let sid = local.sandbox.calls()[0].sid.clone();
    local.sandbox.answer_call(&sid, "human").await.unwrap();
    let (_, recording_status) = local.sandbox.end_call(&sid, "completed", 20).await.unwrap();
    assert_eq!(recording_status, Some(200), "the copy is queued even though the call is not logged yet");
    let event = one_queued_event(&local.resources.recordings_queue_url).await;
    let worker = &local.functions().worker;
    let response = outreach_worker::handle_batch(worker, event.clone()).await;
    assert_eq!(response.batch_item_failures.len(), 1, "no call logged yet: the copy waits in its queue");
    assert_eq!(local.sandbox.call(&sid).unwrap().recording_events, Vec::<String>::new(), "Twilio keeps it");
    // The worker's retry finds the call at Twilio and logs it; the copy's retry then completes.
    assert!(matches!(run(&local, 1).await, JobOutcome::Called { .. }));
    let response = outreach_worker::handle_batch(worker, event).await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(local.sandbox.call(&sid).unwrap().recording_events, vec!["fetched", "deleted"]);
    let log = local.store().call_log(&m, &phone).await.unwrap();
    let rec = log[0].recording.as_ref().unwrap();
    assert!(rec.s3_key.is_some() && rec.twilio_deleted && rec.duration_seconds == Some(20), "{rec:?}");
    local.shutdown().await;
}

#[tokio::test]
async fn a_checkout_attribute_without_the_merchants_rendering_confirmation_is_not_consent_to_calls() {
    let merchant = voice_merchant(|v| v["voice"]["consent_attribute_rendered"] = false.into());
    let (local, _clock) = setup("voice-attr-unconfirmed", merchant, true).await;
    let (m, _, phone) = ids();
    assert!(local.store().consent_ledger(&m, &phone, Channel::Voice).await.unwrap().is_empty());
    assert_eq!(local.store().consent_state(&m, &phone, Channel::Voice).await.unwrap().status, ConsentStatus::Unknown);
    local.shutdown().await;
}
