//! Twilio auth token rotation through `callfy-local`: while `TWILIO_AUTH_TOKEN_PREVIOUS` is set,
//! every Twilio-signed entry point (inbound SMS, status callbacks, voice callbacks, the voice
//! agent's WebSocket upgrade) accepts a signature made with the previous token as well as the
//! current one; any other token still gets 403 and changes nothing.

use crate::voice::{checkout_with, ids, place_call, t0, voice_merchant};
use callfy_integration_tests::*;
use callfy_local::LocalHandle;
use callfy_local::sandbox::twiml_message;
use callfy_local::sandbox_relay::RelaySession;
use callfy_shared::config::local_defaults;
use callfy_shared::domain::consent::{ConsentAction, ConsentSource, ConsentStatus};
use callfy_shared::domain::merchant::{Channel, Merchant};
use callfy_shared::{ManualClock, twilio_signature};
use serde_json::Value;
use std::sync::Arc;

const PREVIOUS: &str = "old-token";
const SERVICE: &str = "MG0123456789abcdef0123456789abcdef";
const POOL_NUMBER: &str = "+15005550006";

/// `callfy-local` in the middle of a rotation (previous token set) or not.
async fn start(prefix: &str, merchant: &Merchant, rotating: bool) -> (LocalHandle, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(t0()));
    let local = start_local_with(prefix, clock.clone(), merchant, |o| {
        if rotating {
            o.twilio_auth_token_previous = Some(PREVIOUS.into());
        }
    })
    .await;
    (local, clock)
}

/// Posts `form` to `url` signed with `token` (no header when `None`).
async fn post_signed(url: &str, form: &[(String, String)], token: Option<&str>) -> (u16, String) {
    let mut req = reqwest::Client::new().post(url).form(form);
    if let Some(token) = token {
        req = req.header(twilio_signature::HEADER, twilio_signature::compute(token, url, form));
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

fn form(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn stop_form() -> Vec<(String, String)> {
    form(&[
        ("Body", "STOP"),
        ("From", PHONE),
        ("MessageSid", "SM00000000000000000000000000000a01"),
        ("MessagingServiceSid", SERVICE),
        ("To", POOL_NUMBER),
    ])
}

async fn opted_in_checkout(local: &LocalHandle) {
    let (status, answer) = post_shopify(&local.base_url, "checkouts/create", &unique("evt"), &checkout(t0())).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("accepted")), "{answer}");
    let (m, _, phone) = ids();
    assert_eq!(local.store().consent_state(&m, &phone, Channel::Sms).await.unwrap().status, ConsentStatus::OptedIn);
}

async fn sms_status(local: &LocalHandle) -> ConsentStatus {
    let (m, _, phone) = ids();
    local.store().consent_state(&m, &phone, Channel::Sms).await.unwrap().status
}

#[tokio::test]
async fn a_stop_signed_with_the_previous_token_is_honoured() {
    let (local, _clock) = start("rotation-stop", &merchant(|_| {}), true).await;
    opted_in_checkout(&local).await;
    let url = format!("{}/twilio/sms", local.base_url);
    let (status, twiml) = post_signed(&url, &stop_form(), Some(PREVIOUS)).await;
    assert_eq!(status, 200, "{twiml}");
    let reply = twiml_message(&twiml).expect("one confirmation");
    assert!(reply.contains("unsubscribed"), "{reply}");
    assert_eq!(sms_status(&local).await, ConsentStatus::OptedOut);
    let (m, _, phone) = ids();
    let ledger = local.store().consent_ledger(&m, &phone, Channel::Sms).await.unwrap();
    let last = &ledger.last().unwrap().event;
    assert_eq!((last.action, last.source), (ConsentAction::OptOut, ConsentSource::Keyword));
    // The current token is accepted as before.
    let help = form(&[
        ("Body", "HELP"),
        ("From", PHONE),
        ("MessageSid", "SM00000000000000000000000000000a02"),
        ("MessagingServiceSid", SERVICE),
        ("To", POOL_NUMBER),
    ]);
    let (status, twiml) = post_signed(&url, &help, Some(local_defaults::TWILIO_AUTH_TOKEN)).await;
    assert_eq!(status, 200, "{twiml}");
    local.shutdown().await;
}

#[tokio::test]
async fn a_stop_signed_with_a_wrong_token_gets_403_and_changes_nothing() {
    let (local, _clock) = start("rotation-wrong", &merchant(|_| {}), true).await;
    opted_in_checkout(&local).await;
    let url = format!("{}/twilio/sms", local.base_url);
    for token in [Some("not-the-token"), None] {
        let (status, body) = post_signed(&url, &stop_form(), token).await;
        assert_eq!(status, 403, "{token:?}: {body}");
        let answer: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(answer["error"], "invalid_signature", "{token:?}");
    }
    // The previous token's signature does not cover another body.
    let signed = twilio_signature::compute(PREVIOUS, &url, &stop_form());
    let mut tampered = stop_form();
    tampered[0].1 = "HELP".into();
    let resp = reqwest::Client::new()
        .post(&url)
        .header(twilio_signature::HEADER, signed)
        .form(&tampered)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    assert_eq!(sms_status(&local).await, ConsentStatus::OptedIn);
    local.shutdown().await;
}

#[tokio::test]
async fn without_a_previous_token_configured_its_signature_is_refused() {
    let (local, _clock) = start("rotation-off", &merchant(|_| {}), false).await;
    opted_in_checkout(&local).await;
    let (status, body) = post_signed(&format!("{}/twilio/sms", local.base_url), &stop_form(), Some(PREVIOUS)).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(sms_status(&local).await, ConsentStatus::OptedIn);
    local.shutdown().await;
}

#[tokio::test]
async fn status_and_voice_callbacks_signed_with_the_previous_token_are_accepted() {
    let (local, clock) = start("rotation-voice", &voice_merchant(|_| {}), true).await;
    checkout_with(&local, true).await;
    let (m, _, phone) = ids();
    let store = local.store();

    // The first step's text: its delivery report, signed with the previous token.
    let sent = local.sandbox.messages();
    assert_eq!(sent.len(), 1, "{sent:?}");
    let sid = sent[0].sid.clone();
    let status_url = format!("{}/twilio/sms/status", local.base_url);
    let report = form(&[("MessageSid", &sid), ("MessageStatus", "delivered")]);
    let (status, body) = post_signed(&status_url, &report, Some("not-the-token")).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = post_signed(&status_url, &report, Some(PREVIOUS)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["status"], "recorded");
    assert_eq!(store.sms_by_sid(&sid).await.unwrap().unwrap().status, "delivered");

    // The call's status callback.
    let call_sid = place_call(&local, &clock).await;
    let callback = local.sandbox.call(&call_sid).unwrap().status_callback.expect("a status callback");
    let ended = form(&[("CallSid", &call_sid), ("CallStatus", "no-answer"), ("CallDuration", "0")]);
    let (status, body) = post_signed(&callback, &ended, Some("not-the-token")).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(store.call_log(&m, &phone).await.unwrap()[0].status, "queued");
    let (status, body) = post_signed(&callback, &ended, Some(PREVIOUS)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(store.call_log(&m, &phone).await.unwrap()[0].status, "no-answer");

    // The automated opt-out line (`/twilio/voice/incoming`).
    let incoming = format!("{}/twilio/voice/incoming", local.base_url);
    let call = form(&[
        ("CallSid", "CA0000000000000000000000000000f002"),
        ("From", PHONE),
        ("To", POOL_NUMBER),
        ("Direction", "inbound"),
    ]);
    let (status, menu) = post_signed(&incoming, &call, Some(PREVIOUS)).await;
    assert_eq!(status, 200, "{menu}");
    assert!(menu.contains("say stop or press 9"), "{menu}");
    let (status, _) = post_signed(&incoming, &call, Some("not-the-token")).await;
    assert_eq!(status, 403);
    local.shutdown().await;
}

#[tokio::test]
async fn a_websocket_upgrade_signed_with_the_previous_token_is_accepted() {
    let agent = voice_merchant(|v| v["voice"]["agent"] = "callfy".into());
    let (local, clock) = start("rotation-agent", &agent, true).await;
    checkout_with(&local, true).await;
    let sid = place_call(&local, &clock).await;
    local.sandbox.answer_call(&sid, "human").await.unwrap();
    let call = local.sandbox.call(&sid).unwrap();
    let url = call.relay_url.clone().expect("the answer connects the agent");

    let forged = twilio_signature::compute("not-the-token", &url, &[]);
    let err = RelaySession::open(&url, PREVIOUS, Some(&forged)).await.err().expect("refused");
    assert!(err.contains("403"), "{err}");

    let signature = twilio_signature::compute(PREVIOUS, &url, &[]);
    let mut relay = RelaySession::open(&url, PREVIOUS, Some(&signature)).await.expect("the upgrade is accepted");
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or_default();
    let params: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap();
    let call_param = params.into_iter().find(|(k, _)| k == "call").map(|(_, v)| v).expect("the call reference");
    relay.setup(local_defaults::TWILIO_ACCOUNT_SID, &sid, &call.from, &call.to, &call_param).unwrap();
    let reply = relay.say("What's in my cart?").await.unwrap();
    assert!(reply.text.contains("Freeride Snowboard 158"), "{reply:?}");
    relay.close();

    // The session's end (`/twilio/voice/relay-ended`), signed with the previous token.
    let action = call.relay_action.clone().expect("a relay action");
    let ended = form(&[
        ("AccountSid", local_defaults::TWILIO_ACCOUNT_SID),
        ("CallSid", &sid),
        ("CallStatus", "in-progress"),
        ("SessionId", "VX00000000000000000000000000000001"),
        ("SessionStatus", "ended"),
        ("SessionDuration", "30"),
    ]);
    let (status, body) = post_signed(&action, &ended, Some("not-the-token")).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = post_signed(&action, &ended, Some(PREVIOUS)).await;
    assert_eq!(status, 200, "{body}");
    local.shutdown().await;
}
