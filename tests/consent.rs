//! Consent end to end through `callfy-local`: signed Twilio webhooks (STOP / HELP / START,
//! delivery reports) from the sandbox, the consent API with real API keys, Shopify consent
//! updates, all on moto.

use callfy_integration_tests::*;
use callfy_local::LocalHandle;
use callfy_local::sandbox::{InboundRequest, twiml_message};
use callfy_shared::adapters::store::{Direction, StepState};
use callfy_shared::api_key::new_api_key;
use callfy_shared::config::local_defaults;
use callfy_shared::domain::consent::{ConsentAction, ConsentSource, ConsentStatus};
use callfy_shared::domain::flow::{OutreachJob, SkipReason};
use callfy_shared::domain::merchant::Channel;
use callfy_shared::signature::sha256_hex;
use callfy_shared::twilio_signature;
use callfy_shared::{CartToken, Clock, ManualClock, MerchantId, Phone};
use chrono::{DateTime, Duration, Utc};
use outreach_worker::JobOutcome;
use serde_json::{Value, json};
use std::sync::Arc;

const SERVICE: &str = "MG0123456789abcdef0123456789abcdef";
const POOL_NUMBER: &str = "+15005550006";
const TOKEN: &str = "cd8e6f2f1c0b4a2e9d6c7b8a9f0e1d2c";

fn t0() -> DateTime<Utc> {
    "2026-11-28T19:00:00Z".parse().unwrap()
}

fn ids() -> (MerchantId, CartToken, Phone) {
    (MerchantId::parse("snowdevil").unwrap(), CartToken::parse(TOKEN).unwrap(), Phone::parse(PHONE, None).unwrap())
}

async fn text_in(local: &LocalHandle, body: &str) -> callfy_local::sandbox::InboundResult {
    let req = InboundRequest {
        from: PHONE.into(),
        to: POOL_NUMBER.into(),
        body: body.into(),
        messaging_service_sid: Some(SERVICE.into()),
    };
    local.sandbox.receive(&req).await.expect("sms-inbound answers")
}

/// A checkout that opted in, stored and its first step queued (not yet processed).
async fn opted_in_checkout(local: &LocalHandle) {
    let (status, answer) = post_shopify(&local.base_url, "checkouts/create", &unique("evt"), &checkout(t0())).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("accepted")), "{answer}");
}

#[tokio::test]
async fn stop_confirms_once_records_evidence_and_cancels_queued_outreach_then_start_resubscribes() {
    let clock = Arc::new(ManualClock::new(t0()));
    let local = start_local("consent-stop", clock.clone(), &merchant(|_| {})).await;
    let (m, token, phone) = ids();
    let store = local.store();
    opted_in_checkout(&local).await;
    assert_eq!(store.consent_state(&m, &phone, Channel::Sms).await.unwrap().status, ConsentStatus::OptedIn);

    let stop = text_in(&local, "Stop").await;
    assert_eq!(stop.status, 200);
    let reply = stop.reply.clone().expect("one confirmation");
    assert!(reply.contains("Snowdevil") && reply.contains("unsubscribed"), "{reply}");
    assert!(!reply.contains("http"), "no marketing in the confirmation: {reply}");

    let state = store.consent_state(&m, &phone, Channel::Sms).await.unwrap();
    assert_eq!(state.status, ConsentStatus::OptedOut);
    let ledger = store.consent_ledger(&m, &phone, Channel::Sms).await.unwrap();
    let last = &ledger.last().unwrap().event;
    assert_eq!((last.action, last.source), (ConsentAction::OptOut, ConsentSource::Keyword));
    assert_eq!(last.evidence.message_sid.as_deref(), Some(stop.message_sid.as_str()));
    assert_eq!(last.evidence.keyword.as_deref(), Some("keyword:stop"));
    assert_eq!(store.consent_state(&m, &phone, Channel::Voice).await.unwrap().status, ConsentStatus::OptedOut);
    let step = store.get_step(&m, &token, 0).await.unwrap().expect("queued step cancelled");
    assert_eq!((step.state, step.reason.as_deref()), (StepState::Skipped, Some("opted_out")));

    // The queued job now finds nothing to do: no SMS reaches Twilio.
    let stats = local.drain().await.unwrap();
    assert_eq!((stats.succeeded, stats.failed), (1, 0));
    let outbound: Vec<_> = local.sandbox.messages().into_iter().filter(|m| m.body != reply).collect();
    assert!(outbound.is_empty(), "{outbound:?}");
    let job = OutreachJob { merchant_id: m.clone(), cart_token: token.clone(), step: 0, due_at: t0() };
    let again = outreach_worker::process_job(&local.functions().worker.outreach, &job).await.unwrap();
    assert_eq!(again, JobOutcome::Skipped(SkipReason::OptedOut));

    // A second STOP changes nothing and sends nothing; a redelivered STOP neither.
    let second = text_in(&local, "STOP").await;
    assert_eq!((second.status, second.reply.as_deref()), (200, None));
    assert!(second.body.ends_with("<Response/>"), "{}", second.body);
    assert_eq!(store.consent_ledger(&m, &phone, Channel::Sms).await.unwrap().len(), ledger.len());

    // The inbound messages are logged with the SMS retention.
    let log = store.sms_log(&m, &phone).await.unwrap();
    let inbound: Vec<_> = log.iter().filter(|e| e.direction == Direction::Inbound).collect();
    assert_eq!(inbound.len(), 2);
    assert_eq!(inbound[0].purge_at, inbound[0].created_at + Duration::days(730));

    clock.advance(Duration::minutes(5));
    let start = text_in(&local, "START").await;
    let reply = start.reply.expect("START is confirmed");
    assert!(reply.contains("Snowdevil") && reply.contains("STOP"), "{reply}");
    let state = store.consent_state(&m, &phone, Channel::Sms).await.unwrap();
    assert_eq!(state.status, ConsentStatus::OptedIn);
    let ledger = store.consent_ledger(&m, &phone, Channel::Sms).await.unwrap();
    let last = &ledger.last().unwrap().event;
    assert_eq!((last.action, last.source), (ConsentAction::OptIn, ConsentSource::Keyword));
    assert_eq!(last.evidence.message_sid.as_deref(), Some(start.message_sid.as_str()));
    assert!(local.sandbox.violations().is_empty(), "{:?}", local.sandbox.violations());
    local.shutdown().await;
}

#[tokio::test]
async fn help_names_the_program_and_plain_words_are_read_as_a_reasonable_person_would() {
    let clock = Arc::new(ManualClock::new(t0()));
    let local = start_local("consent-help", clock.clone(), &merchant(|_| {})).await;
    let (m, _, phone) = ids();
    let store = local.store();
    opted_in_checkout(&local).await;

    let help = text_in(&local, "help").await;
    let reply = help.reply.expect("HELP gets an answer");
    for part in ["Snowdevil", "https://snowdevil.ca/help", "+18005550100", "Msg & data rates may apply", "STOP", "msgs"]
    {
        assert!(reply.contains(part), "{reply} lacks {part}");
    }

    let yes = text_in(&local, "Yes").await;
    assert_eq!(yes.reply, None, "a subscribed person's yes is conversation, not a re-subscription");

    let ayuda = text_in(&local, "AYUDA").await.reply.expect("HELP in Spanish");
    assert!(ayuda.contains("Snowdevil") && ayuda.contains("PARAR") && ayuda.contains("tarifas"), "{ayuda}");

    let chat = text_in(&local, "when does the sale stop?").await;
    assert_eq!(chat.reply, None);
    assert_eq!(store.consent_state(&m, &phone, Channel::Sms).await.unwrap().status, ConsentStatus::OptedIn);

    let revoke = text_in(&local, "Please stop texting me").await;
    assert!(revoke.reply.expect("confirmation").contains("unsubscribed"));
    let state = store.consent_state(&m, &phone, Channel::Sms).await.unwrap();
    assert_eq!(state.status, ConsentStatus::OptedOut);
    let ledger = store.consent_ledger(&m, &phone, Channel::Sms).await.unwrap();
    assert_eq!(ledger.last().unwrap().event.evidence.keyword.as_deref(), Some("phrase:stop texting"));

    let logged: Vec<String> = store
        .sms_log(&m, &phone)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.direction == Direction::Inbound)
        .map(|e| e.body)
        .collect();
    assert_eq!(logged.len(), 5, "every inbound message is logged: {logged:?}");
    local.shutdown().await;
}

#[tokio::test]
async fn twilio_requests_without_a_valid_signature_get_403_and_change_nothing() {
    let clock = Arc::new(ManualClock::new(t0()));
    let local = start_local("consent-sig", clock.clone(), &merchant(|_| {})).await;
    let (m, _, phone) = ids();
    opted_in_checkout(&local).await;
    let url = format!("{}/twilio/sms", local.base_url);
    let form: Vec<(String, String)> = vec![
        ("Body".into(), "STOP".into()),
        ("From".into(), PHONE.into()),
        ("MessageSid".into(), "SM00000000000000000000000000000001".into()),
        ("MessagingServiceSid".into(), SERVICE.into()),
        ("To".into(), POOL_NUMBER.into()),
    ];
    let token = local_defaults::TWILIO_AUTH_TOKEN;
    let good = twilio_signature::compute(token, &url, &form);
    let mut tampered_form = form.clone();
    tampered_form[0].1 = "HELP".into();
    type Form = Vec<(String, String)>;
    let cases: Vec<(&str, Option<String>, &Form)> = vec![
        ("tampered body", Some(good), &tampered_form),
        ("wrong URL", Some(twilio_signature::compute(token, "https://evil.example/twilio/sms", &form)), &form),
        ("wrong token", Some(twilio_signature::compute("not-the-token", &url, &form)), &form),
        ("missing header", None, &form),
    ];
    let http = reqwest::Client::new();
    for (what, sig, body) in cases {
        let mut req = http.post(&url).form(body);
        if let Some(sig) = sig {
            req = req.header("x-twilio-signature", sig);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 403, "{what}");
        let answer: Value = resp.json().await.unwrap();
        assert_eq!(answer["error"], "invalid_signature", "{what}");
    }
    // Signed with a SharedKey this deployment was not given: refused as our misconfiguration.
    let sha256 =
        twilio_signature::compute_with(twilio_signature::Algorithm::HmacSha256, "some-shared-key", &url, &form);
    let resp = http
        .post(&url)
        .header("x-twilio-signature", sha256)
        .header("x-twilio-webhooks-signature-settings", "key=KS0123456789abcdef0123456789abcdef,algorithm=HMAC_SHA256")
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 500);
    let status = http
        .post(format!("{}/twilio/sms/status", local.base_url))
        .header("x-twilio-signature", "bm90IGEgc2lnbmF0dXJl")
        .form(&[("MessageSid", "SM1"), ("MessageStatus", "undelivered"), ("ErrorCode", "21610")])
        .send()
        .await
        .unwrap();
    assert_eq!(status.status().as_u16(), 403);
    let store = local.store();
    assert_eq!(store.consent_state(&m, &phone, Channel::Sms).await.unwrap().status, ConsentStatus::OptedIn);
    assert!(store.sms_log(&m, &phone).await.unwrap().is_empty(), "nothing recorded");

    // The same request correctly signed is honoured, also when Twilio signed the URL without
    // its port.
    let [without_port, _] = twilio_signature::port_variants(&url);
    assert_ne!(without_port, url);
    let portless = twilio_signature::compute(token, &without_port, &form);
    let resp = http.post(&url).header("x-twilio-signature", portless).form(&form).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(twiml_message(&resp.text().await.unwrap()).is_some());
    assert_eq!(store.consent_state(&m, &phone, Channel::Sms).await.unwrap().status, ConsentStatus::OptedOut);
    local.shutdown().await;
}

#[tokio::test]
async fn delivery_reports_update_the_log_and_carrier_errors_opt_out_or_block_the_number() {
    let clock = Arc::new(ManualClock::new(t0()));
    let local = start_local("consent-status", clock.clone(), &merchant(|_| {})).await;
    let (m, token, phone) = ids();
    let store = local.store();
    opted_in_checkout(&local).await;
    local.drain().await.unwrap();
    let sent = local.sandbox.messages();
    assert_eq!(sent.len(), 1);
    let sid = sent[0].sid.clone();

    // Out of order and repeated: the status only moves forward, the history keeps each once.
    for status in ["sent", "delivered", "sent", "delivered"] {
        assert_eq!(local.sandbox.report_status(&sid, status, None).await.unwrap(), 200);
    }
    let entry = store.sms_by_sid(&sid).await.unwrap().unwrap();
    assert_eq!(entry.status, "delivered");
    assert!(entry.status_history.contains_key("sent") && entry.status_history.contains_key("delivered"));

    // The SID index is eventually consistent: a report it cannot answer yet is still matched, by
    // the sender and the recipient, in the customer's partition.
    let ddb = aws_sdk_dynamodb::Client::new(&sdk().await);
    let sk = format!("SMS#OUT#{}#{sid}", t0().to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    ddb.update_item()
        .table_name(&local.resources.names.table)
        .key("pk", aws_sdk_dynamodb::types::AttributeValue::S(format!("C#snowdevil#{PHONE}")))
        .key("sk", aws_sdk_dynamodb::types::AttributeValue::S(sk))
        .update_expression("REMOVE gsi1pk, gsi1sk")
        .condition_expression("attribute_exists(pk)")
        .send()
        .await
        .expect("the log entry exists");
    assert!(store.sms_by_sid(&sid).await.unwrap().is_none());
    assert_eq!(local.sandbox.report_status(&sid, "read", None).await.unwrap(), 200);
    assert_eq!(store.outbound_sms(&m, &phone, &sid).await.unwrap().unwrap().status, "read");

    // Unknown SIDs are acknowledged and ignored.
    let resp = signed_status(&local, "SM_unknown_sid", "delivered", None).await;
    assert_eq!(resp.0, 200);
    assert_eq!(resp.1["status"], "ignored");

    // 30006 (landline): later steps skip the number.
    assert_eq!(local.sandbox.report_status(&sid, "undelivered", Some(30006)).await.unwrap(), 200);
    let entry = store.outbound_sms(&m, &phone, &sid).await.unwrap().unwrap();
    assert_eq!(entry.error_code, Some(30006));
    assert_eq!(store.undeliverable(&m, &phone).await.unwrap().unwrap().error_code, 30006);
    clock.advance(Duration::hours(25));
    let job = OutreachJob { merchant_id: m.clone(), cart_token: token.clone(), step: 1, due_at: clock.now() };
    let outcome = outreach_worker::process_job(&local.functions().worker.outreach, &job).await.unwrap();
    assert_eq!(outcome, JobOutcome::Skipped(SkipReason::Undeliverable));

    // 21610: the person opted out at the carrier.
    assert_eq!(local.sandbox.report_status(&sid, "failed", Some(21610)).await.unwrap(), 200);
    let state = store.consent_state(&m, &phone, Channel::Sms).await.unwrap();
    assert_eq!((state.status, state.last_source), (ConsentStatus::OptedOut, Some(ConsentSource::CarrierError)));
    let ledger = store.consent_ledger(&m, &phone, Channel::Sms).await.unwrap();
    assert_eq!(ledger.last().unwrap().event.evidence.message_sid.as_deref(), Some(sid.as_str()));
    local.shutdown().await;
}

async fn signed_status(local: &LocalHandle, sid: &str, status: &str, code: Option<i64>) -> (u16, Value) {
    let url = format!("{}/twilio/sms/status", local.base_url);
    let mut form: Vec<(String, String)> =
        vec![("MessageSid".into(), sid.into()), ("MessageStatus".into(), status.into())];
    if let Some(code) = code {
        form.push(("ErrorCode".into(), code.to_string()));
    }
    let sig = twilio_signature::compute(local_defaults::TWILIO_AUTH_TOKEN, &url, &form);
    let resp = reqwest::Client::new().post(url).header("x-twilio-signature", sig).form(&form).send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
}

async fn api(
    local: &LocalHandle,
    method: reqwest::Method,
    path: &str,
    key: Option<&str>,
    idempotency: Option<&str>,
    body: Option<Value>,
) -> (u16, Value, Option<String>) {
    let mut req = reqwest::Client::new().request(method, format!("{}{path}", local.base_url));
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    if let Some(k) = idempotency {
        req = req.header("idempotency-key", k);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.unwrap();
    let replayed = resp.headers().get("idempotent-replayed").and_then(|v| v.to_str().ok()).map(str::to_string);
    (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null), replayed)
}

#[tokio::test]
async fn consent_api_round_trips_with_evidence_and_rejects_bad_keys_and_phones() {
    use reqwest::Method;
    let clock = Arc::new(ManualClock::new(t0()));
    let local = start_local("consent-api", clock.clone(), &merchant(|_| {})).await;
    let (m, _, phone) = ids();
    let store = local.store();
    let key = new_api_key(&m);
    store.set_api_key_hash(&m, &sha256_hex(key.as_bytes())).await.unwrap();

    let opt_in = json!({
        "phone": "(415) 555-2671", "channel": "sms", "action": "opt_in",
        "occurred_at": "2026-11-28T18:55:00Z",
        "evidence": { "consent_text": "Send me cart reminders by text. Reply STOP to opt out.",
            "consent_text_version": "v3", "page_url": "https://snowdevil.ca/checkout", "ip": "203.0.113.7",
            "user_agent": "Mozilla/5.0", "opt_in_level": "confirmed_opt_in" }
    });
    // Authentication first: nothing without a valid key.
    let other = new_api_key(&m);
    for bad in [
        None,
        Some("nonsense"),
        Some(other.as_str()),
        Some("cfy_live_nobody_0000000000000000000000000000000000000000000000000000000000000000"),
    ] {
        let (status, answer, _) = api(&local, Method::POST, "/v1/consents", bad, None, Some(opt_in.clone())).await;
        assert_eq!((status, answer["error"].as_str()), (401, Some("invalid_api_key")), "{bad:?}");
    }
    assert_eq!(store.consent_state(&m, &phone, Channel::Sms).await.unwrap().seq, 0);

    let (status, created, replayed) =
        api(&local, Method::POST, "/v1/consents", Some(&key), Some("req-1"), Some(opt_in.clone())).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(replayed.as_deref(), Some("false"));
    assert_eq!(created["phone"], PHONE, "normalised to E.164");
    assert_eq!(created["state"]["status"], "opted_in");
    assert_eq!(created["entry"]["evidence"]["consent_text_version"], "v3");

    // A retry with the same key replays the answer and appends nothing.
    let (status, again, replayed) =
        api(&local, Method::POST, "/v1/consents", Some(&key), Some("req-1"), Some(opt_in.clone())).await;
    assert_eq!((status, replayed.as_deref()), (201, Some("true")));
    assert_eq!(again, created);
    let mut changed = opt_in.clone();
    changed["action"] = "opt_out".into();
    let (status, answer, _) = api(&local, Method::POST, "/v1/consents", Some(&key), Some("req-1"), Some(changed)).await;
    assert_eq!((status, answer["error"].as_str()), (422, Some("idempotency_key_reused")));
    assert_eq!(store.consent_ledger(&m, &phone, Channel::Sms).await.unwrap().len(), 1);
    // A day later the key no longer replays, and is not silently reused either: a clear 422
    // (before, a conflict with the record DynamoDB had not yet expired answered 503).
    clock.advance(chrono::Duration::hours(25));
    let (status, answer, _) =
        api(&local, Method::POST, "/v1/consents", Some(&key), Some("req-1"), Some(opt_in.clone())).await;
    assert_eq!((status, answer["error"].as_str()), (422, Some("idempotency_key_expired")), "{answer}");
    clock.advance(chrono::Duration::hours(-25));

    // Bad input: a clear 4xx naming the field, nothing written.
    let mut bad_phone = opt_in.clone();
    bad_phone["phone"] = "12".into();
    let (status, answer, _) = api(&local, Method::POST, "/v1/consents", Some(&key), None, Some(bad_phone)).await;
    assert_eq!(
        (status, answer["error"].as_str(), answer["field"].as_str()),
        (422, Some("invalid_phone"), Some("phone"))
    );
    let mut no_text = opt_in.clone();
    no_text["evidence"] = json!({});
    let (status, answer, _) = api(&local, Method::POST, "/v1/consents", Some(&key), None, Some(no_text)).await;
    assert_eq!((status, answer["field"].as_str()), (422, Some("evidence.consent_text")));
    let (status, answer, _) = api(
        &local,
        Method::POST,
        "/v1/consents",
        Some(&key),
        None,
        Some(json!({ "phone": PHONE, "channel": "fax", "action": "opt_in" })),
    )
    .await;
    assert_eq!(status, 422, "{answer}");
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/consents", local.base_url))
        .bearer_auth(&key)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    assert_eq!(store.consent_ledger(&m, &phone, Channel::Sms).await.unwrap().len(), 1);

    // Voice consent is its own ledger.
    let mut voice = opt_in.clone();
    voice["channel"] = "voice".into();
    let (status, _, _) = api(&local, Method::POST, "/v1/consents", Some(&key), None, Some(voice)).await;
    assert_eq!(status, 201);

    // The person texts STOP; an older opt-in from the merchant cannot undo it.
    clock.advance(Duration::minutes(1));
    text_in(&local, "STOP").await;
    let (status, answer, _) = api(&local, Method::POST, "/v1/consents", Some(&key), None, Some(opt_in.clone())).await;
    // Older than the STOP: refused whatever its evidence (an opt-in never beats a later opt-out).
    assert_eq!((status, answer["error"].as_str()), (409, Some("opted_out_later")), "{answer}");

    let (status, read, _) = api(&local, Method::GET, "/v1/consents/%2B14155552671", Some(&key), None, None).await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["channels"]["sms"]["status"], "opted_out");
    assert_eq!(read["channels"]["voice"]["status"], "opted_out");
    let history = read["history"].as_array().unwrap();
    assert_eq!(history.len(), 4, "{read}");
    assert_eq!(history[0]["source"], "keyword", "newest first");
    let first_opt_in = history.iter().find(|e| e["source"] == "api" && e["channel"] == "sms").unwrap();
    assert_eq!(first_opt_in["evidence"]["ip"], "203.0.113.7");
    assert_eq!(first_opt_in["evidence"]["page_url"], "https://snowdevil.ca/checkout");
    assert_eq!(first_opt_in["occurred_at"], "2026-11-28T18:55:00Z");

    let (status, _, _) = api(&local, Method::GET, "/v1/consents/%2B14155552671", Some(&other), None, None).await;
    assert_eq!(status, 401);
    let (status, answer, _) = api(&local, Method::GET, "/v1/consents/not-a-phone", Some(&key), None, None).await;
    assert_eq!((status, answer["field"].as_str()), (422, Some("phone")));
    local.shutdown().await;
}

#[tokio::test]
async fn shopify_marketing_consent_updates_feed_the_ledger() {
    let clock = Arc::new(ManualClock::new(t0()));
    let local = start_local("consent-shopify", clock.clone(), &merchant(|_| {})).await;
    let (m, token, phone) = ids();
    let store = local.store();
    opted_in_checkout(&local).await;
    let update = json!({ "id": 706405506930370084u64, "phone_number": PHONE,
        "sms_marketing_consent": { "state": "unsubscribed", "opt_in_level": "single_opt_in",
        "consent_updated_at": "2026-11-28T19:00:30Z", "consent_collected_from": "OTHER" } });
    let event_id = unique("evt");
    let (status, answer) =
        post_shopify(&local.base_url, "customers_marketing_consent/update", &event_id, &update).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("accepted")), "{answer}");
    let (status, answer) =
        post_shopify(&local.base_url, "customers_marketing_consent/update", &event_id, &update).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("duplicate")));

    let state = store.consent_state(&m, &phone, Channel::Sms).await.unwrap();
    assert_eq!(
        (state.status, state.last_source),
        (ConsentStatus::OptedOut, Some(ConsentSource::PlatformConsentWebhook))
    );
    let ledger = store.consent_ledger(&m, &phone, Channel::Sms).await.unwrap();
    assert_eq!(ledger.len(), 2);
    assert_eq!(ledger[1].event.evidence.platform_event_id.as_deref(), Some(event_id.as_str()));
    let step = store.get_step(&m, &token, 0).await.unwrap().expect("cancelled");
    assert_eq!(step.state, StepState::Skipped);
    local.drain().await.unwrap();
    assert!(local.sandbox.messages().is_empty());

    let mut bad = update.clone();
    bad["phone_number"] = "nope".into();
    let (status, _) = post_shopify(&local.base_url, "customers_marketing_consent/update", &unique("evt"), &bad).await;
    assert_eq!(status, 422);
    local.shutdown().await;
}

fn inbound_app(local: &LocalHandle, clock: &Arc<ManualClock>) -> sms_inbound::InboundApp {
    sms_inbound::InboundApp {
        store: local.store().clone(),
        queue: local.functions().worker.outreach.queue.clone(),
        replay_delay_seconds: sms_inbound::REPLAY_DELAY_SECONDS,
        auth_token: local_defaults::TWILIO_AUTH_TOKEN.into(),
        previous_auth_token: None,
        shared_key: None,
        // The URL the sample events were signed for (scripts/local-env's PUBLIC_BASE_URL).
        public_base_url: "http://127.0.0.1:3000".into(),
        clock: clock.clone(),
    }
}

fn sample(name: &str) -> lambda_http::Request {
    lambda_http::request::from_str(&read_json(&format!("events/{name}")).to_string()).expect("sample event parses")
}

/// The sample events in events/ drive the handlers as Lambda would call them.
#[tokio::test]
async fn sample_events_drive_the_handlers() {
    let clock = Arc::new(ManualClock::new(t0()));
    let local = start_local("consent-samples", clock.clone(), &merchant(|_| {})).await;
    let (m, _, phone) = ids();
    let store = local.store().clone();
    let inbound = inbound_app(&local, &clock);
    let body = |r: lambda_http::Response<lambda_http::Body>| match r.into_body() {
        lambda_http::Body::Text(t) => t,
        _ => String::new(),
    };
    let stop = sms_inbound::handle(&inbound, sample("twilio-sms-stop.json")).await;
    assert_eq!(stop.status(), 200);
    assert!(body(stop).contains("unsubscribed"));
    assert_eq!(store.consent_state(&m, &phone, Channel::Sms).await.unwrap().status, ConsentStatus::OptedOut);
    let help = body(sms_inbound::handle(&inbound, sample("twilio-sms-help.json")).await);
    assert!(help.contains("Snowdevil"), "{help}");

    // The same message signed by a Twilio Webhook Rule with a SharedKey (HMAC-SHA256).
    let shared = sms_inbound::InboundApp { shared_key: Some("ks-secret".into()), ..inbound_app(&local, &clock) };
    let mut event = read_json("events/twilio-sms-help.json");
    let form: Vec<(String, String)> = serde_urlencoded::from_str(event["body"].as_str().unwrap()).unwrap();
    let url = "http://127.0.0.1:3000/twilio/sms";
    let sig = twilio_signature::compute_with(twilio_signature::Algorithm::HmacSha256, "ks-secret", url, &form);
    event["headers"]["x-twilio-signature"] = sig.into();
    event["headers"]["x-twilio-webhooks-signature-settings"] = "key=KS0123,algorithm=HMAC_SHA256".into();
    let request = lambda_http::request::from_str(&event.to_string()).unwrap();
    let resp = sms_inbound::handle(&shared, request).await;
    assert_eq!(resp.status(), 200);
    event["headers"]["x-twilio-webhooks-signature-settings"] = "key=KS0123,algorithm=HMAC_SHA1".into();
    let request = lambda_http::request::from_str(&event.to_string()).unwrap();
    assert_eq!(sms_inbound::handle(&shared, request).await.status(), 403, "the header names the algorithm");
    clock.advance(Duration::minutes(1));
    let start = body(sms_inbound::handle(&inbound, sample("twilio-sms-start.json")).await);
    assert!(start.contains("subscribed again"), "{start}");
    let status = sms_inbound::handle(&inbound, sample("twilio-sms-status-21610.json")).await;
    assert_eq!((status.status().as_u16(), body(status).contains("ignored")), (200, true), "unknown SID");

    let consent = consent_api::ConsentApp {
        store: store.clone(),
        recordings: local.functions().consent.recordings.clone(),
        queue: local.functions().consent.queue.clone(),
        clock: clock.clone(),
    };
    let denied = consent_api::handle(&consent, sample("consent-api-post.json")).await;
    assert_eq!(denied.status(), 401, "the sample carries a placeholder key");
    let key = "cfy_live_snowdevil_".to_string() + &"0".repeat(64);
    store.set_api_key_hash(&m, &sha256_hex(key.as_bytes())).await.unwrap();
    let created = consent_api::handle(&consent, sample("consent-api-post.json")).await;
    assert_eq!(created.status(), 200, "START already opted the phone in again: {}", body(created));
    let read = consent_api::handle(&consent, sample("consent-api-get.json")).await;
    assert_eq!(read.status(), 200);
    let v: Value = serde_json::from_str(&body(read)).unwrap();
    assert_eq!(v["channels"]["sms"]["status"], "opted_in");

    let ingest = &local.functions().ingest;
    let r = webhook_ingest::handle(ingest, sample("shopify-marketing-consent-update.json")).await;
    assert_eq!(r.status(), 200, "{}", body(r));
    local.shutdown().await;
}

#[tokio::test]
async fn a_redelivered_message_is_answered_once_and_a_shared_sender_opts_out_of_every_merchant() {
    let clock = Arc::new(ManualClock::new(t0()));
    let local = start_local("consent-shared", clock.clone(), &merchant(|_| {})).await;
    let store = local.store();
    let acme = merchant(|v| {
        v["id"] = "acme".into();
        v["name"] = "Acme Outdoor".into();
        v["shop_domain"] = "acme.myshopify.com".into();
        v["voice_from"] = Value::Null;
    });
    store.put_merchant(&acme, t0()).await.unwrap();

    // Twilio retries a webhook it thinks failed: the same MessageSid gets one answer only.
    let form: Vec<(String, String)> = vec![
        ("Body".into(), "HELP".into()),
        ("From".into(), PHONE.into()),
        ("MessageSid".into(), "SM000000000000000000000000000000aa".into()),
        ("MessagingServiceSid".into(), SERVICE.into()),
        ("To".into(), POOL_NUMBER.into()),
    ];
    let (status, _, reply) = local.sandbox.redeliver(&form).await.unwrap();
    assert_eq!(status, 200);
    let reply = reply.expect("HELP answered");
    assert!(reply.contains("Acme Outdoor and Snowdevil cart reminders"), "{reply}");
    assert_eq!(reply.matches("https://snowdevil.ca/help").count(), 1, "one support line: {reply}");
    let (status, body, reply) = local.sandbox.redeliver(&form).await.unwrap();
    assert_eq!((status, reply), (200, None), "{body}");

    let stop = text_in(&local, "stop").await;
    let reply = stop.reply.expect("one confirmation");
    assert!(reply.contains("Acme Outdoor and Snowdevil"), "{reply}");
    let phone = Phone::parse(PHONE, None).unwrap();
    for m in ["snowdevil", "acme"] {
        let m = MerchantId::parse(m).unwrap();
        assert_eq!(store.consent_state(&m, &phone, Channel::Sms).await.unwrap().status, ConsentStatus::OptedOut);
        let inbound = store.sms_log(&m, &phone).await.unwrap();
        assert_eq!(inbound.len(), 2, "HELP once and STOP, logged under {m}");
    }

    // A number no merchant uses: empty TwiML, nothing recorded.
    let stranger = InboundRequest {
        from: "+14155550199".into(),
        to: "+15005550199".into(),
        body: "STOP".into(),
        messaging_service_sid: None,
    };
    let r = local.sandbox.receive(&stranger).await.unwrap();
    assert_eq!((r.status, r.reply), (200, None));
    let p = Phone::parse("+14155550199", None).unwrap();
    assert!(store.sms_log(&MerchantId::parse("snowdevil").unwrap(), &p).await.unwrap().is_empty());
    local.shutdown().await;
}

#[tokio::test]
async fn a_texted_opt_out_covers_what_its_words_name() {
    let clock = Arc::new(ManualClock::new(t0()));
    let local = start_local("consent-scope", clock.clone(), &merchant(|_| {})).await;
    let (m, token, phone) = ids();
    let store = local.store();
    opted_in_checkout(&local).await;

    let calls = text_in(&local, "Please stop calling me").await;
    let reply = calls.reply.expect("confirmed");
    assert!(reply.contains("Snowdevil will not call you") && !reply.contains("unsubscribed"), "{reply}");
    assert_eq!(store.consent_state(&m, &phone, Channel::Voice).await.unwrap().status, ConsentStatus::OptedOut);
    let ledger = store.consent_ledger(&m, &phone, Channel::Voice).await.unwrap();
    assert_eq!(ledger.last().unwrap().event.evidence.keyword.as_deref(), Some("phrase:stop calling"));
    assert_eq!(store.consent_state(&m, &phone, Channel::Sms).await.unwrap().status, ConsentStatus::OptedIn);
    assert!(store.get_step(&m, &token, 0).await.unwrap().is_none(), "the queued text is not cancelled");
    let stats = local.drain().await.unwrap();
    assert_eq!((stats.succeeded, stats.failed), (1, 0));
    let sent = local.sandbox.messages();
    assert!(sent.iter().any(|s| s.body.contains("Reply STOP to opt out")), "texts go on: {sent:?}");

    clock.advance(Duration::minutes(1));
    let texts = text_in(&local, "stop texting me please").await;
    assert!(texts.reply.expect("confirmed").contains("unsubscribed from Snowdevil text messages"));
    assert_eq!(store.consent_state(&m, &phone, Channel::Sms).await.unwrap().status, ConsentStatus::OptedOut);
    local.shutdown().await;
}

#[tokio::test]
async fn a_stop_to_a_number_the_merchant_no_longer_uses_still_opts_out() {
    const OLD: &str = "+15005550010";
    const NEW: &str = "+15005550011";
    let on = |number: &str| merchant(|v| v["sender"] = json!({ "from": number }));
    let clock = Arc::new(ManualClock::new(t0()));
    let local = start_local("consent-old-sender", clock.clone(), &on(OLD)).await;
    let (m, _, phone) = ids();
    let store = local.store();
    opted_in_checkout(&local).await;
    let stats = local.drain().await.unwrap();
    assert_eq!((stats.succeeded, stats.failed), (1, 0));
    let sent = local.sandbox.messages();
    assert_eq!((sent.len(), sent[0].from.as_deref()), (1, Some(OLD)));
    let log = store.sms_log(&m, &phone).await.unwrap();
    assert_eq!(log[0].senders, vec![OLD.to_string()], "the log says which sender the text went out from");

    // The merchant moves to a new number; the person answers the text they got, from the old one.
    clock.advance(Duration::days(3));
    store.put_merchant(&on(NEW), clock.now()).await.unwrap();
    assert!(store.merchants_for_senders(&[OLD]).await.unwrap().is_empty(), "no merchant sends from it now");
    let req = InboundRequest { from: PHONE.into(), to: OLD.into(), body: "STOP".into(), messaging_service_sid: None };
    let stop = local.sandbox.receive(&req).await.expect("sms-inbound answers");
    assert_eq!(stop.status, 200);
    let reply = stop.reply.expect("one confirmation");
    assert!(reply.contains("unsubscribed from Snowdevil"), "{reply}");
    for channel in [Channel::Sms, Channel::Voice] {
        assert_eq!(store.consent_state(&m, &phone, channel).await.unwrap().status, ConsentStatus::OptedOut);
    }
    let ledger = store.consent_ledger(&m, &phone, Channel::Sms).await.unwrap();
    assert_eq!(ledger.last().unwrap().event.evidence.message_sid.as_deref(), Some(stop.message_sid.as_str()));
    let inbound: Vec<_> =
        store.sms_log(&m, &phone).await.unwrap().into_iter().filter(|e| e.direction == Direction::Inbound).collect();
    assert_eq!(inbound.len(), 1);
    assert_eq!((inbound[0].body.as_str(), inbound[0].senders.clone()), ("STOP", vec![OLD.to_string()]));

    // Someone the merchant never texted from that number reaches nobody through it.
    let stranger = InboundRequest { from: "+14155550199".into(), ..req };
    let r = local.sandbox.receive(&stranger).await.unwrap();
    assert_eq!((r.status, r.reply), (200, None));
    local.shutdown().await;
}

#[tokio::test]
async fn concurrent_opt_outs_append_once_and_keep_the_chain_intact() {
    use callfy_shared::domain::consent::{ConsentEvent, verify_chain};
    let clock = Arc::new(ManualClock::new(t0()));
    let local = start_local("consent-race", clock.clone(), &merchant(|_| {})).await;
    let (m, _, phone) = ids();
    let store = local.store().clone();
    opted_in_checkout(&local).await;
    let tasks: Vec<_> = (0..6)
        .map(|i| {
            let (store, m, phone) = (store.clone(), m.clone(), phone.clone());
            tokio::spawn(async move {
                let event = ConsentEvent::carrier_opt_out(t0() + Duration::seconds(i), Some("SM1"));
                store.record_consent(&m, &phone, &event, t0() + Duration::days(730)).await
            })
        })
        .collect();
    let mut appended = 0;
    for t in tasks {
        if t.await.unwrap().unwrap().is_some() {
            appended += 1;
        }
    }
    assert_eq!(appended, 1, "one opt-out appended, the rest saw it");
    let ledger = store.consent_ledger(&m, &phone, Channel::Sms).await.unwrap();
    let state = store.consent_state(&m, &phone, Channel::Sms).await.unwrap();
    assert_eq!(verify_chain(&ledger, &state), Ok(2));
    local.shutdown().await;
}

/// One API request with its `Retry-After` header: (status, Retry-After, body).
async fn api_with_retry_after(
    local: &LocalHandle,
    method: reqwest::Method,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> (u16, Option<String>, Value) {
    let mut req = reqwest::Client::new().request(method, format!("{}{path}", local.base_url)).bearer_auth(key);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.unwrap();
    let retry_after = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_string);
    (resp.status().as_u16(), retry_after, resp.json().await.unwrap_or(Value::Null))
}

/// Fair shares: merchant A floods the API past its bucket and gets 429 with `Retry-After` and
/// the reason, while merchant B's requests at the same moment all succeed; after waiting what
/// it was told, A is served again.
#[tokio::test]
async fn an_api_flood_from_one_merchant_is_throttled_while_another_merchants_requests_succeed() {
    use reqwest::Method;
    let clock = Arc::new(ManualClock::new(t0()));
    let a = merchant(|v| v["api_limit"] = json!({ "rate_per_second": 2, "burst": 5 }));
    let local = start_local("api-limit", clock.clone(), &a).await;
    let b = merchant(|v| {
        v["id"] = "othershop".into();
        v["name"] = "Other Shop".into();
        v["shop_domain"] = "othershop.myshopify.com".into();
        v["sender"] = json!({ "messaging_service_sid": "MGfedcba9876543210fedcba9876543210" });
    });
    let store = local.store();
    store.put_merchant(&b, t0()).await.unwrap();
    let (key_a, key_b) = (new_api_key(&a.id), new_api_key(&b.id));
    store.set_api_key_hash(&a.id, &sha256_hex(key_a.as_bytes())).await.unwrap();
    store.set_api_key_hash(&b.id, &sha256_hex(key_b.as_bytes())).await.unwrap();
    let logs = LogCapture::default();
    let _guard = logs.install();

    // 20 requests from A and 5 from B, all at once (the clock stands still).
    let read = "/v1/consents/%2B14155552671";
    let flood = (0..20).map(|_| api_with_retry_after(&local, Method::GET, read, &key_a, None));
    let opt_in = json!({ "phone": "+14155552671", "channel": "sms", "action": "opt_in",
        "evidence": { "consent_text": "Send me cart reminders by text. Reply STOP to opt out." } });
    let write = api_with_retry_after(&local, Method::POST, "/v1/consents", &key_b, Some(opt_in));
    let reads = (0..4).map(|_| api_with_retry_after(&local, Method::GET, read, &key_b, None));
    let (a_answers, b_write, b_reads) =
        tokio::join!(futures::future::join_all(flood), write, futures::future::join_all(reads));

    assert_eq!(b_write.0, 201, "{}", b_write.2);
    assert!(b_reads.iter().all(|(status, _, _)| *status == 200), "{b_reads:?}");
    let served = a_answers.iter().filter(|(status, _, _)| *status == 200).count();
    let throttled: Vec<_> = a_answers.iter().filter(|(status, _, _)| *status == 429).collect();
    assert_eq!((served, throttled.len()), (5, 15), "A's burst, then 429s: {a_answers:?}");
    for (_, retry_after, body) in &throttled {
        assert_eq!(retry_after.as_deref(), Some("1"));
        assert_eq!((body["error"].as_str(), body["retry_after_seconds"].as_u64()), (Some("rate_limited"), Some(1)));
        assert!(body["message"].as_str().unwrap().contains("snowdevil"), "{body}");
    }
    let refusals: Vec<Value> =
        logs.lines().into_iter().filter(|l| l["message"] == "API request over the merchant's limit").collect();
    assert_eq!(refusals.len(), 15, "each refusal is logged");
    assert!(refusals.iter().all(|l| l["merchant"] == "snowdevil"), "with the merchant it refused");

    // Waiting what it was told gives A a token again.
    clock.advance(Duration::seconds(1));
    assert_eq!(api_with_retry_after(&local, Method::GET, read, &key_a, None).await.0, 200);
    local.shutdown().await;
}
