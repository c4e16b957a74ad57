//! Callfy's AI voice agent through `callfy-local` acting as Twilio: the answer TwiML and its
//! fixed greeting, the signed WebSocket upgrade, `setup`, `prompt`, `dtmf` and `interrupt`, the
//! opt-out heard in our code (also while the model hangs), the link texted once, what reaches a
//! stand-in Bedrock at the network boundary, and the transcript's export, deletion and purge.

use crate::voice::{ids, place_call, t0};
use callfy_integration_tests::bedrock::{BedrockStandIn, Behaviour};
use callfy_integration_tests::*;
use callfy_local::LocalHandle;
use callfy_local::sandbox_relay::RelaySession;
use callfy_shared::api_key::new_api_key;
use callfy_shared::config::AgentModel;
use callfy_shared::domain::consent::ConsentStatus;
use callfy_shared::domain::merchant::{Channel, Merchant};
use callfy_shared::ports::agent::SessionKey;
use callfy_shared::signature::sha256_hex;
use callfy_shared::{ManualClock, Phone, twilio_signature};
use chrono::Duration;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

/// The voice demo merchant with Callfy's agent (the default).
fn agent_merchant(mutate: impl FnOnce(&mut Value)) -> Merchant {
    crate::voice::voice_merchant(|v| {
        v["voice"]["agent"] = "callfy".into();
        mutate(v);
    })
}

async fn start(prefix: &str, merchant: Merchant, bedrock: Option<&str>) -> (LocalHandle, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(t0()));
    let local = start_local_with(prefix, clock.clone(), &merchant, |o| {
        if let Some(url) = bedrock {
            o.agent_model = AgentModel::Bedrock("amazon.nova-lite-v1:0".into());
            o.bedrock_endpoint = Some(url.to_string());
        }
    })
    .await;
    crate::voice::checkout_with(&local, true).await;
    (local, clock)
}

/// A placed call answered by a person, with ConversationRelay connected and set up.
async fn answered(local: &LocalHandle, clock: &ManualClock) -> (String, RelaySession) {
    let sid = place_call(local, clock).await;
    let turn = local.sandbox.answer_call(&sid, "human").await.unwrap();
    assert!(turn.relay_url.is_some(), "{}", turn.twiml);
    let relay = local.sandbox.relay(&sid).await.unwrap();
    (sid, relay)
}

fn session_key(sid: &str) -> SessionKey {
    let (m, _, phone) = ids();
    SessionKey { merchant_id: m, phone, call_sid: sid.to_string() }
}

#[tokio::test]
async fn the_greeting_discloses_and_comes_before_anything_the_agent_says() {
    let (local, clock) = start("agent-greet", agent_merchant(|_| {}), None).await;
    let sid = place_call(&local, &clock).await;
    let turn = local.sandbox.answer_call(&sid, "human").await.unwrap();
    // The fixed greeting, spoken by Twilio: the merchant, an automated AI assistant, how to stop
    // right after the name, the recording, the callback number.
    let greeting = &turn.said[0];
    for want in [
        "on behalf of Snowdevil",
        "automated AI assistant",
        "say stop or press 9",
        "This call is recorded",
        "1 8 0 0 5 5 5 0 1 0 0",
    ] {
        assert!(greeting.contains(want), "{want}: {greeting}");
    }
    assert!(greeting.find("Snowdevil").unwrap() < greeting.find("say stop").unwrap());
    // Only the call reference travels; no number, no cart detail.
    assert_eq!(turn.relay_parameters.len(), 1, "{:?}", turn.relay_parameters);
    assert_eq!(turn.relay_parameters[0].0, "call");
    for leak in ["4155552671", "ann.lee", "Freeride", "Terry"] {
        assert!(!turn.twiml.contains(leak), "{leak} in {}", turn.twiml);
    }
    assert!(turn.twiml.contains("dtmfDetection=\"true\"") && turn.twiml.contains("interruptible=\"any\""));
    assert!(turn.relay_action.as_deref().is_some_and(|a| a.contains("/twilio/voice/relay-ended?")));
    // After setup the agent says nothing until the first prompt.
    let relay = local.sandbox.relay(&sid).await.unwrap();
    tokio::time::sleep(StdDuration::from_millis(400)).await;
    assert!(relay.received().is_empty(), "{:?}", relay.received());
    let reply = relay.say("What's in my cart?").await.unwrap();
    assert!(reply.text.contains("Freeride Snowboard 158"), "{reply:?}");
    relay.close();
    local.shutdown().await;
}

#[tokio::test]
async fn a_forged_or_missing_signature_is_refused_before_the_upgrade() {
    let (local, clock) = start("agent-forged", agent_merchant(|_| {}), None).await;
    let sid = place_call(&local, &clock).await;
    local.sandbox.answer_call(&sid, "human").await.unwrap();
    let url = local.sandbox.call(&sid).unwrap().relay_url.unwrap();
    let token = callfy_shared::config::local_defaults::TWILIO_AUTH_TOKEN;
    let forged = twilio_signature::compute("not-the-token", &url, &[]);
    let err = RelaySession::open(&url, token, Some(&forged)).await.err().expect("refused");
    assert!(err.contains("403"), "{err}");
    let err = RelaySession::open(&url, token, Some("")).await.err().expect("refused");
    assert!(err.contains("401"), "{err}");
    // Another call reference than the one signed.
    let other = url.replace("s%3D1", "s%3D2");
    let signed_for_url = twilio_signature::compute(token, &url, &[]);
    assert!(RelaySession::open(&other, token, Some(&signed_for_url)).await.is_err());
    local.shutdown().await;
}

#[tokio::test]
async fn a_setup_for_a_call_we_did_not_place_ends_the_session() {
    let (local, clock) = start("agent-unknown", agent_merchant(|_| {}), None).await;
    let sid = place_call(&local, &clock).await;
    local.sandbox.answer_call(&sid, "human").await.unwrap();
    let url = local.sandbox.call(&sid).unwrap().relay_url.unwrap();
    let token = callfy_shared::config::local_defaults::TWILIO_AUTH_TOKEN;
    let mut relay = RelaySession::open(&url, token, None).await.unwrap();
    let stranger = format!("CA{}", uuid::Uuid::new_v4().simple());
    relay.setup("AC0", &stranger, "+15005550006", PHONE, "x").unwrap();
    let reply = relay.reply_after(0, Instant::now(), StdDuration::from_secs(5)).await;
    assert!(reply.ended.as_deref().is_some_and(|h| h.contains("failed")), "{reply:?}");
    assert!(reply.text.is_empty());
    // Nothing said to a prompt either.
    let reply = relay.say("hello?").await.unwrap();
    assert!(reply.text.is_empty(), "{reply:?}");
    local.shutdown().await;
}

#[tokio::test]
async fn asking_twice_for_the_link_texts_it_once_and_the_outcome_is_recorded() {
    let (local, clock) = start("agent-link", agent_merchant(|_| {}), None).await;
    let (sid, relay) = answered(&local, &clock).await;
    let before = local.sandbox.messages().len();
    let first = relay.say("Can you text me the link?").await.unwrap();
    assert!(first.text.contains("texted you the link"), "{first:?}");
    let second = relay.say("Please send me the link again").await.unwrap();
    assert!(second.text.contains("already texted"), "{second:?}");
    let sent = local.sandbox.messages();
    assert_eq!(sent.len(), before + 1, "one text, however often asked");
    assert!(sent.last().unwrap().body.contains("Snowdevil"), "{}", sent.last().unwrap().body);
    let total = relay.say("how much was it?").await.unwrap();
    assert!(total.text.contains("comes to"), "{total:?}");
    let bye = relay.say("Not now, thanks").await.unwrap();
    assert!(bye.ended.as_deref().is_some_and(|h| h.contains("link_sent")), "{bye:?}");
    // Twilio's action callback: the outcome and a summary (never what was said) on the call log.
    let after = local.sandbox.relay_ended(&sid, bye.ended.as_deref()).await.unwrap();
    assert!(after.twiml.contains("<Hangup/>"), "{}", after.twiml);
    let (m, _, phone) = ids();
    let call = local.store().call_in_partition(&m, &phone, &sid).await.unwrap().unwrap();
    assert_eq!(call.outcome.map(|o| o.as_str()), Some("link_sent"));
    let summary = call.summary.unwrap();
    assert!(summary.contains("send_recovery_link") && !summary.contains("cart"), "{summary}");
    // The report: outcomes per step, and per call the command that shows its transcript.
    let report =
        callfy_admin::report::gather(local.store(), &m, None, t0() + Duration::hours(2), &mut |_| {}).await.unwrap();
    assert_eq!(report.outcomes_by_step(), vec![(1, "link_sent".to_string(), 1)]);
    let table = callfy_admin::report::render_table(&report);
    assert!(
        table.contains("AGENT CALLS") && table.contains(&format!("callfy-admin transcript snowdevil {sid}")),
        "{table}"
    );
    assert!(!table.contains("Can you text me"), "no transcript text in the report");
    let page = callfy_admin::html::render_html(&report);
    assert!(page.contains("Voice agent calls") && page.contains(&sid));
    local.shutdown().await;
}

#[tokio::test]
async fn please_stop_calling_me_revokes_calls_not_texts_within_two_seconds_while_the_model_hangs() {
    let (bedrock, url) = BedrockStandIn::start(Behaviour::Hang).await;
    let (local, clock) = start("agent-stop", agent_merchant(|_| {}), Some(&url)).await;
    let (sid, relay) = answered(&local, &clock).await;
    // A question the hung model never answers, then the opt-out while it hangs.
    relay.send(&json!({ "type": "prompt", "voicePrompt": "what was in my cart", "last": true })).unwrap();
    tokio::time::sleep(StdDuration::from_millis(300)).await;
    let reply = relay.say("Please stop calling me.").await.unwrap();
    assert!(reply.ended.as_deref().is_some_and(|h| h.contains("opted_out")), "{reply:?}");
    assert!(reply.elapsed_ms < 2_000, "{reply:?}");
    assert!(reply.text.contains("not receive more calls from Snowdevil"), "{reply:?}");
    let (m, _, phone) = ids();
    let store = local.store();
    assert_eq!(store.consent_state(&m, &phone, Channel::Voice).await.unwrap().status, ConsentStatus::OptedOut);
    assert_eq!(store.consent_state(&m, &phone, Channel::Sms).await.unwrap().status, ConsentStatus::OptedIn);
    let ledger = store.consent_ledger(&m, &phone, Channel::Voice).await.unwrap();
    let last = &ledger.last().unwrap().event;
    assert_eq!(last.source.as_str(), "spoken");
    assert_eq!(last.evidence.words.as_deref(), Some("Please stop calling me."));
    assert_eq!(last.evidence.message_sid.as_deref(), Some(sid.as_str()));
    assert!(!bedrock.requests().is_empty(), "the model was asked (and hung)");
    local.shutdown().await;
}

#[tokio::test]
async fn key_9_revokes_calls_while_the_model_fails_and_nothing_more_is_sent() {
    let (_bedrock, url) = BedrockStandIn::start(Behaviour::Fail(500)).await;
    let (local, clock) = start("agent-key9", agent_merchant(|_| {}), Some(&url)).await;
    let (_sid, relay) = answered(&local, &clock).await;
    // A failing model: an apology, then the scripted agent answers; never silence.
    let reply = relay.say("what was in my cart").await.unwrap();
    assert!(reply.text.contains("Freeride Snowboard 158"), "{reply:?}");
    let reply = relay.press("9").await.unwrap();
    assert!(reply.ended.as_deref().is_some_and(|h| h.contains("opted_out")), "{reply:?}");
    assert!(reply.elapsed_ms < 2_000, "{reply:?}");
    let (m, _, phone) = ids();
    let store = local.store();
    assert_eq!(store.consent_state(&m, &phone, Channel::Voice).await.unwrap().status, ConsentStatus::OptedOut);
    assert_eq!(store.consent_state(&m, &phone, Channel::Sms).await.unwrap().status, ConsentStatus::OptedIn);
    // A later prompt on the same session gets nothing.
    let n = relay.received().len();
    let _ = relay.say("hello?").await;
    assert_eq!(relay.received().len(), n);
    local.shutdown().await;
}

#[tokio::test]
async fn no_number_email_or_address_reaches_the_model() {
    let reply = Behaviour::Reply {
        chunks: vec!["You left ".into(), "the Freeride Snowboard. ".into(), "Want the link?".into()],
        tool: None,
        delay_per_chunk: StdDuration::from_millis(5),
        first_delay: StdDuration::ZERO,
    };
    let (bedrock, url) = BedrockStandIn::start(reply).await;
    let (local, clock) = start("agent-privacy", agent_merchant(|_| {}), Some(&url)).await;
    let (_sid, relay) = answered(&local, &clock).await;
    let reply = relay.say("what's in my cart? my number is 415 555 2671").await.unwrap();
    assert_eq!(reply.text, "You left the Freeride Snowboard. Want the link?");
    let requests = bedrock.requests();
    assert_eq!(requests.len(), 1);
    let body = requests[0].to_string();
    assert!(body.contains("Snowdevil") && body.contains("Freeride Snowboard 158") && body.contains("Ann"), "{body}");
    for leak in ["+14155552671", "4155552671", "ann.lee@example.com", "Terry Francine", "94103"] {
        assert!(!body.contains(leak), "{leak} reached the model: {body}");
    }
    assert!(body.contains("send_recovery_link") && body.contains("opt_out"), "tools offered: {body}");
    local.shutdown().await;
}

#[tokio::test]
async fn an_interrupt_stops_the_older_turn() {
    let slow = Behaviour::Reply {
        chunks: (0..12).map(|i| format!("Part {i}, ")).collect(),
        tool: None,
        delay_per_chunk: StdDuration::from_millis(150),
        first_delay: StdDuration::ZERO,
    };
    let (_bedrock, url) = BedrockStandIn::start(slow).await;
    let (local, clock) = start("agent-interrupt", agent_merchant(|_| {}), Some(&url)).await;
    let (sid, relay) = answered(&local, &clock).await;
    relay.send(&json!({ "type": "prompt", "voicePrompt": "tell me about the cart", "last": true })).unwrap();
    let deadline = Instant::now() + StdDuration::from_secs(5);
    while relay.received().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(StdDuration::from_millis(20)).await;
    }
    assert!(!relay.received().is_empty(), "the first phrase arrived");
    relay.interrupt("Part 0").unwrap();
    tokio::time::sleep(StdDuration::from_millis(150)).await;
    let at_interrupt = relay.received().len();
    tokio::time::sleep(StdDuration::from_millis(2_000)).await;
    let after = relay.received().len();
    assert!(after <= at_interrupt + 1, "older tokens kept coming: {at_interrupt} then {after}");
    assert!(after < 12, "the turn was cut short: {after}");
    let session = local.store().session(&session_key(&sid)).await.unwrap().unwrap();
    assert_eq!(session.turn, 2, "the interrupt started a new turn");
    local.shutdown().await;
}

#[tokio::test]
async fn a_transcript_is_exported_and_gone_after_deletion_and_purge() {
    let (local, clock) = start("agent-transcript", agent_merchant(|_| {}), None).await;
    let (sid, relay) = answered(&local, &clock).await;
    relay.say("What's in my cart?").await.unwrap();
    let (m, _, phone) = ids();
    let key = new_api_key(&m);
    local.store().set_api_key_hash(&m, &sha256_hex(key.as_bytes())).await.unwrap();
    let client = reqwest::Client::new();
    let export: Value = client
        .post(format!("{}/v1/privacy/export", local.base_url))
        .bearer_auth(&key)
        .json(&json!({ "phone": PHONE }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let conversations = &export["phones"][0]["conversations"];
    assert_eq!(conversations[0]["call_sid"], sid, "{export}");
    let lines = conversations[0]["transcript"].as_array().unwrap();
    assert!(lines.iter().any(|l| l["speaker"] == "caller" && l["text"] == "What's in my cart?"), "{lines:?}");
    assert!(lines.iter().any(|l| l["speaker"] == "agent" && l["text"].as_str().unwrap().contains("Freeride")));

    // Retention: the transcript goes with `retention_days.recordings`.
    let store = local.store();
    assert!(store.session(&session_key(&sid)).await.unwrap().is_some());
    let report = local.purge(t0() + Duration::days(731), false, None).await.unwrap();
    assert!(report.of_kind(callfy_shared::domain::retention::PurgeKind::Transcript) >= 1, "{report:?}");
    assert!(store.session(&session_key(&sid)).await.unwrap().is_none());
    local.shutdown().await;

    // Deletion: a second call's transcript is erased with the person.
    let (local, clock) = start("agent-transcript-del", agent_merchant(|_| {}), None).await;
    let (sid, relay) = answered(&local, &clock).await;
    relay.say("What's in my cart?").await.unwrap();
    local.store().set_api_key_hash(&m, &sha256_hex(key.as_bytes())).await.unwrap();
    let store = local.store();
    assert!(store.session(&session_key(&sid)).await.unwrap().is_some());
    let status = client
        .post(format!("{}/v1/privacy/delete", local.base_url))
        .bearer_auth(&key)
        .json(&json!({ "phone": PHONE }))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 200);
    assert!(store.session(&session_key(&sid)).await.unwrap().is_none());
    assert!(store.customer_items(&m, &phone).await.unwrap().is_empty());
    local.shutdown().await;
}

#[tokio::test]
async fn asking_for_a_person_transfers_to_the_merchant_line_when_enabled() {
    let merchant = agent_merchant(|v| v["voice"]["transfer_to_support"] = true.into());
    let (local, clock) = start("agent-person", merchant, None).await;
    let (sid, relay) = answered(&local, &clock).await;
    let reply = relay.say("Can I talk to a real person?").await.unwrap();
    assert!(reply.text.contains("connect you to Snowdevil"), "{reply:?}");
    let handoff = reply.ended.expect("the agent hands the call back to Twilio");
    assert!(handoff.contains("\"transfer\":true"), "{handoff}");
    let after = local.sandbox.relay_ended(&sid, Some(&handoff)).await.unwrap();
    assert_eq!(after.dial.as_deref(), Some("+18005550100"), "{}", after.twiml);
    local.shutdown().await;

    // Without the setting the agent gives the number and the call goes on.
    let (local, clock) = start("agent-person-off", agent_merchant(|_| {}), None).await;
    let (_, relay) = answered(&local, &clock).await;
    let reply = relay.say("I want to speak to someone").await.unwrap();
    assert!(reply.text.contains("1 8 0 0 5 5 5 0 1 0 0") && reply.ended.is_none(), "{reply:?}");
    local.shutdown().await;
}

#[tokio::test]
async fn the_number_calls_come_from_answers_with_an_automated_opt_out_line() {
    let (local, _clock) = start("agent-optout-line", agent_merchant(|_| {}), None).await;
    let token = callfy_shared::config::local_defaults::TWILIO_AUTH_TOKEN;
    let url = format!("{}/twilio/voice/incoming", local.base_url);
    let post = |form: Vec<(&str, &str)>| {
        let form: Vec<(String, String)> = form.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let signature = twilio_signature::compute(token, &url, &form);
        let url = url.clone();
        async move {
            let resp = reqwest::Client::new()
                .post(url)
                .header("x-twilio-signature", signature)
                .form(&form)
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
    };
    let sid = "CA0000000000000000000000000000f001";
    let base = vec![("CallSid", sid), ("From", PHONE), ("To", "+15005550006"), ("Direction", "inbound")];
    let (status, menu) = post(base.clone()).await;
    assert_eq!(status, 200);
    assert!(menu.contains("say stop or press 9") && menu.contains("input=\"dtmf speech\""), "{menu}");
    let mut pressed = base.clone();
    pressed.push(("Digits", "9"));
    let (status, answer) = post(pressed).await;
    assert_eq!(status, 200);
    assert!(answer.contains("You will not receive more calls from Snowdevil"), "{answer}");
    let (m, _, phone) = ids();
    let store = local.store();
    assert_eq!(store.consent_state(&m, &phone, Channel::Voice).await.unwrap().status, ConsentStatus::OptedOut);
    assert_eq!(store.consent_state(&m, &phone, Channel::Sms).await.unwrap().status, ConsentStatus::OptedIn);
    // A forged request changes nothing.
    let resp = reqwest::Client::new()
        .post(&url)
        .header("x-twilio-signature", "forged")
        .form(&[("From", PHONE), ("To", "+15005550006"), ("SpeechResult", "stop")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    local.shutdown().await;
}

#[tokio::test]
async fn call_test_calls_the_merchants_own_phone_with_consent_recorded_as_such() {
    let clock = Arc::new(ManualClock::new(t0()));
    let merchant = agent_merchant(|_| {});
    let local = start_local("agent-calltest", clock.clone(), &merchant).await;
    let own = Phone::parse("+14155550123", None).unwrap();
    let queue = callfy_shared::adapters::queue::OutreachQueue::new(
        aws_sdk_sqs::Client::new(&sdk().await),
        &local.resources.queue_url,
    );
    let done = callfy_admin::calltest::call_test(local.store(), &queue, &merchant, &own, t0()).await.unwrap();
    assert_eq!(done.step, 1);
    local.drain().await.unwrap();
    let calls = local.sandbox.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].to, own.as_str());
    let ledger = local.store().consent_ledger(&merchant.id, &own, Channel::Voice).await.unwrap();
    assert_eq!(ledger[0].event.source.as_str(), "admin");
    assert_eq!(ledger[0].event.evidence.collected_from.as_deref(), Some("call_test"));
    // The agent answers it like any call.
    let turn = local.sandbox.answer_call(&calls[0].sid, "human").await.unwrap();
    assert!(turn.said[0].contains("on behalf of Snowdevil"), "{:?}", turn.said);
    // A number that opted out is never called, tests included.
    let (m, _, phone) = ids();
    let out = callfy_shared::domain::consent::ConsentEvent {
        channel: Channel::Voice,
        action: callfy_shared::domain::consent::ConsentAction::OptOut,
        source: callfy_shared::domain::consent::ConsentSource::Keyword,
        occurred_at: t0(),
        recorded_at: t0(),
        evidence: Default::default(),
    };
    callfy_shared::app::consent::record(local.store(), &merchant, &phone, &out, t0()).await.unwrap();
    let refused = callfy_admin::calltest::call_test(local.store(), &queue, &merchant, &phone, t0()).await;
    assert!(refused.is_err_and(|e| e.to_string().contains("opted out")));
    let _ = m;
    local.shutdown().await;
}
