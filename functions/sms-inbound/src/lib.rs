//! sms-inbound: Twilio's inbound message webhook (`POST /twilio/sms`: STOP / HELP / START and
//! plain revocations) and message status callbacks (`POST /twilio/sms/status`).
//! `handle` is the whole handler; `main.rs` only wires it to Lambda.

use callfy_shared::adapters::store::{Direction, MerchantRecord, SmsLogEntry, Store, StoreError};
use callfy_shared::app::consent;
use callfy_shared::domain::consent::{ConsentAction, ConsentEvent, ConsentSource, ConsentStatus, Evidence};
use callfy_shared::domain::delivery::{self, Undeliverable};
use callfy_shared::domain::keywords::{Classified, Intent, classify};
use callfy_shared::domain::merchant::Channel;
use callfy_shared::domain::message::{HelpInfo, help_reply, start_confirmation, stop_confirmation};
use callfy_shared::http::{error, header, json};
use callfy_shared::telemetry::redact;
use callfy_shared::twilio_signature::{self, SigningKeys, TwilioSignatureError};
use callfy_shared::{Clock, Phone};
use chrono::{DateTime, Duration, Utc};
use lambda_http::http::Method;
use lambda_http::{Body, Request, Response};
use std::sync::Arc;
use thiserror::Error;
use tracing::{info, warn};

/// Twilio's webhooks are small forms; anything larger is not from Twilio.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

pub struct InboundApp {
    pub store: Store,
    /// The auth token Twilio signs webhooks with.
    pub auth_token: String,
    /// The SharedKey secret, where a Twilio Webhook Rule signs with one instead.
    pub shared_key: Option<String>,
    /// The https base URL Twilio calls; signatures cover the URL Twilio used.
    pub public_base_url: String,
    pub clock: Arc<dyn Clock>,
}

#[derive(Debug, Error)]
pub enum InboundError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub async fn handle(app: &InboundApp, req: Request) -> Response<Body> {
    let path = req.uri().path().trim_end_matches('/').to_string();
    let route = match path.as_str() {
        "/twilio/sms" => Route::Inbound,
        "/twilio/sms/status" => Route::Status,
        _ => return error(404, "not_found", format!("no route for {path}")),
    };
    if req.method() != Method::POST {
        return error(405, "method_not_allowed", "use POST");
    }
    let body: &[u8] = req.body().as_ref();
    if body.len() > MAX_BODY_BYTES {
        return error(413, "payload_too_large", format!("body exceeds {MAX_BODY_BYTES} bytes"));
    }
    let url = match req.uri().query() {
        Some(q) if !q.is_empty() => format!("{}{path}?{q}", app.public_base_url),
        _ => format!("{}{path}", app.public_base_url),
    };
    let signature = header(req.headers(), twilio_signature::HEADER);
    let settings = header(req.headers(), twilio_signature::SETTINGS_HEADER);
    let keys = SigningKeys { auth_token: &app.auth_token, shared_key: app.shared_key.as_deref() };
    let params = match twilio_signature::validate_request(keys, &url, body, signature, settings) {
        Ok(p) => Form(p),
        Err(e @ TwilioSignatureError::Form(_)) => return error(400, "malformed_form", e.to_string()),
        Err(e @ TwilioSignatureError::SharedKeyNotConfigured) => {
            // Our configuration is missing, not the caller's fault: Twilio should retry later.
            tracing::error!(route = %path, "{e}");
            return error(500, "signing_key_not_configured", e.to_string());
        }
        Err(e) => {
            warn!(route = %path, reason = %e, "rejected a Twilio request with a bad signature");
            return error(403, "invalid_signature", e.to_string());
        }
    };
    let result = match route {
        Route::Inbound => inbound(app, &params).await,
        Route::Status => status(app, &params).await,
    };
    match result {
        Ok(resp) => resp,
        Err(e) => {
            warn!(route = %path, error = %redact(&e.to_string()), "Twilio webhook failed; Twilio may retry");
            error(503, "unavailable", "temporarily unable to process the request")
        }
    }
}

enum Route {
    Inbound,
    Status,
}

struct Form(Vec<(String, String)>);

impl Form {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.trim()).filter(|v| !v.is_empty())
    }
}

/// A TwiML answer: one `<Message>`, or an empty `<Response/>` that sends nothing.
pub fn twiml(message: Option<&str>) -> Response<Body> {
    let body = match message {
        Some(text) => format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Message>{}</Message></Response>",
            xml_escape(text)
        ),
        None => "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response/>".to_string(),
    };
    Response::builder()
        .status(200)
        .header("content-type", "text/xml")
        .body(Body::Text(body))
        .unwrap_or_else(|_| Response::new(Body::Empty))
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

fn purge_at(now: DateTime<Utc>, days: u32) -> DateTime<Utc> {
    now + Duration::days(i64::from(days))
}

async fn inbound(app: &InboundApp, form: &Form) -> Result<Response<Body>, InboundError> {
    let Some(sid) = form.get("MessageSid").or_else(|| form.get("SmsSid")) else {
        return Ok(error(400, "missing_field", "MessageSid is required"));
    };
    let Some(from_raw) = form.get("From") else {
        return Ok(error(400, "missing_field", "From is required"));
    };
    let Ok(from) = Phone::parse(from_raw, None) else {
        return Ok(error(422, "invalid_phone", "From is not an E.164 phone number"));
    };
    let to = form.get("To").unwrap_or_default();
    let service = form.get("MessagingServiceSid").unwrap_or_default();
    let merchants = app.store.merchants_for_senders(&[to, service]).await?;
    let text = form.get("Body").unwrap_or_default();
    let classified = classify(text);
    let now = app.clock.now();
    if merchants.is_empty() {
        warn!(sid, phone = %from.log_id(), "inbound SMS to a sender no merchant uses; ignored");
        return Ok(twiml(None));
    }

    let texted = Texted { from: &from, sid, classified: &classified, now };
    let mut affected: Vec<&MerchantRecord> = Vec::new();
    match classified.intent {
        Intent::OptOut => {
            for record in &merchants {
                if opt_out(app, record, &texted).await? {
                    affected.push(record);
                }
            }
        }
        Intent::OptIn => {
            for record in &merchants {
                if opt_in(app, record, &texted).await? {
                    affected.push(record);
                }
            }
        }
        Intent::Help | Intent::Other => {}
    }

    let entries: Vec<SmsLogEntry> = merchants
        .iter()
        .map(|r| SmsLogEntry {
            merchant_id: r.merchant.id.clone(),
            phone: from.clone(),
            direction: Direction::Inbound,
            message_sid: sid.to_string(),
            body: text.to_string(),
            status: "received".into(),
            cart_token: None,
            step: None,
            segments: form.get("NumSegments").and_then(|n| n.parse().ok()).unwrap_or(1),
            created_at: now,
            purge_at: purge_at(now, r.merchant.retention_days.sms_logs),
            status_history: Default::default(),
            error_code: None,
        })
        .collect();
    // The consent changes above are idempotent; this marker makes the reply at-most-once.
    let first = app.store.record_inbound(&entries, now).await?;
    let ids: Vec<&str> = merchants.iter().map(|r| r.merchant.id.as_str()).collect();
    info!(
        sid,
        phone = %from.log_id(),
        merchants = ?ids,
        intent = ?classified.intent,
        rule = classified.rule.as_deref().unwrap_or("none"),
        changed = affected.len(),
        first,
        "inbound SMS"
    );
    if !first {
        return Ok(twiml(None));
    }
    let names: Vec<&str> = affected.iter().map(|r| r.merchant.name.as_str()).collect();
    let reply = match classified.intent {
        // A repeated STOP changes nothing and gets nothing: one confirmation only.
        Intent::OptOut if !affected.is_empty() => Some(stop_confirmation(&names, classified.lang)),
        Intent::OptIn if !affected.is_empty() => {
            let max = affected.iter().map(|r| r.merchant.max_sms_per_cart()).max().unwrap_or(1);
            Some(start_confirmation(&names, max))
        }
        Intent::Help => {
            let info: Vec<HelpInfo<'_>> = merchants
                .iter()
                .map(|r| HelpInfo {
                    merchant_name: &r.merchant.name,
                    support_url: r.merchant.support.url.as_deref(),
                    support_phone: r.merchant.support.phone.as_ref().map(Phone::as_str),
                    max_per_cart: r.merchant.max_sms_per_cart(),
                })
                .collect();
            Some(help_reply(&info, classified.lang))
        }
        _ => None,
    };
    Ok(twiml(reply.as_deref()))
}

fn keyword_event(
    action: ConsentAction,
    channel: Channel,
    sid: &str,
    c: &Classified,
    now: DateTime<Utc>,
) -> ConsentEvent {
    ConsentEvent {
        channel,
        action,
        source: ConsentSource::Keyword,
        occurred_at: now,
        recorded_at: now,
        evidence: Evidence {
            message_sid: Some(sid.to_string()),
            keyword: c.rule.clone(),
            collected_from: Some("sms_reply".into()),
            ..Default::default()
        },
    }
}

/// One inbound message, as the keyword handlers see it.
struct Texted<'a> {
    from: &'a Phone,
    sid: &'a str,
    classified: &'a Classified,
    now: DateTime<Utc>,
}

impl Texted<'_> {
    fn event(&self, action: ConsentAction, channel: Channel) -> ConsentEvent {
        keyword_event(action, channel, self.sid, self.classified, self.now)
    }
}

/// A texted revocation ends SMS and voice outreach alike, and cancels what is queued.
async fn opt_out(app: &InboundApp, record: &MerchantRecord, t: &Texted<'_>) -> Result<bool, InboundError> {
    let (m, from, now) = (&record.merchant, t.from, t.now);
    let voice = t.event(ConsentAction::OptOut, Channel::Voice);
    consent::record(&app.store, m, from, &voice, now).await?;
    let sms = consent::record(&app.store, m, from, &t.event(ConsentAction::OptOut, Channel::Sms), now).await?;
    let changed = sms.state.is_some();
    info!(merchant = %m.id, phone = %from.log_id(), changed, "opt-out by SMS");
    Ok(changed)
}

/// START re-subscribes a number that opted out; it does not create consent from nothing, and a
/// "yes" from someone already subscribed is conversation, not a keyword to confirm.
async fn opt_in(app: &InboundApp, record: &MerchantRecord, t: &Texted<'_>) -> Result<bool, InboundError> {
    let (m, from, now) = (&record.merchant, t.from, t.now);
    let state = app.store.consent_state(&m.id, from, Channel::Sms).await?;
    match state.status {
        ConsentStatus::Unknown | ConsentStatus::OptedIn => Ok(false),
        ConsentStatus::OptedOut => {
            let event = t.event(ConsentAction::OptIn, Channel::Sms);
            let changed = consent::record(&app.store, m, from, &event, now).await?.state.is_some();
            info!(merchant = %m.id, phone = %from.log_id(), changed, "opt-in by SMS");
            Ok(changed)
        }
    }
}

/// The logged message a report is about: by the `SID#` index, else (the index is eventually
/// consistent) in the partition of the merchant that sent it and the number it went to.
async fn find_outbound(app: &InboundApp, form: &Form, sid: &str) -> Result<Option<SmsLogEntry>, InboundError> {
    if let Some(entry) = app.store.sms_by_sid(sid).await? {
        return Ok(Some(entry));
    }
    let Some(to) = form.get("To").and_then(|t| Phone::parse(t, None).ok()) else {
        return Ok(None);
    };
    let senders = [form.get("From").unwrap_or_default(), form.get("MessagingServiceSid").unwrap_or_default()];
    for record in app.store.merchants_for_senders(&senders).await? {
        if let Some(entry) = app.store.outbound_sms(&record.merchant.id, &to, sid).await? {
            return Ok(Some(entry));
        }
    }
    Ok(None)
}

async fn status(app: &InboundApp, form: &Form) -> Result<Response<Body>, InboundError> {
    let Some(sid) = form.get("MessageSid").or_else(|| form.get("SmsSid")) else {
        return Ok(error(400, "missing_field", "MessageSid is required"));
    };
    let Some(status) = form.get("MessageStatus").or_else(|| form.get("SmsStatus")) else {
        return Ok(error(400, "missing_field", "MessageStatus is required"));
    };
    let error_code = match form.get("ErrorCode").map(str::parse::<i64>) {
        None => None,
        Some(Ok(code)) => Some(code),
        Some(Err(_)) => return Ok(error(422, "invalid_field", "ErrorCode must be an integer")),
    };
    let Some(entry) = find_outbound(app, form, sid).await? else {
        info!(sid, status, "status callback for an unknown message; ignored");
        return Ok(json(200, &serde_json::json!({ "status": "ignored" })));
    };
    let now = app.clock.now();
    app.store.update_sms_status(&entry, status, error_code, now).await?;
    let merchant = app.store.get_merchant(&entry.merchant_id).await?;
    let retention = merchant.as_ref().map(|r| r.merchant.retention_days.clone()).unwrap_or_default();
    match error_code {
        Some(delivery::UNSUBSCRIBED) => {
            let event = ConsentEvent::carrier_opt_out(now, Some(sid));
            match &merchant {
                Some(record) => {
                    consent::record(&app.store, &record.merchant, &entry.phone, &event, now).await?;
                }
                // The merchant is gone: the opt-out is still recorded, with default retention.
                None => {
                    let keep = purge_at(now, retention.consent_records);
                    app.store.record_consent(&entry.merchant_id, &entry.phone, &event, keep).await?;
                }
            }
        }
        Some(code) if delivery::is_undeliverable(code) => {
            let mark = Undeliverable { error_code: code, message_sid: sid.to_string(), at: now };
            app.store
                .mark_undeliverable(&entry.merchant_id, &entry.phone, &mark, purge_at(now, retention.sms_logs))
                .await?;
        }
        _ => {}
    }
    info!(sid, merchant = %entry.merchant_id, phone = %entry.phone.log_id(), status, error_code = ?error_code, "delivery status recorded");
    Ok(json(200, &serde_json::json!({ "status": "recorded" })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twiml_escapes_and_empty_sends_nothing() {
        let Body::Text(t) = twiml(Some("A & B <shop>")).into_body() else { panic!("text") };
        assert!(t.contains("<Message>A &amp; B &lt;shop&gt;</Message>"));
        let Body::Text(t) = twiml(None).into_body() else { panic!("text") };
        assert!(t.ends_with("<Response/>"));
    }
}
