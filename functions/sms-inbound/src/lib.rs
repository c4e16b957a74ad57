//! sms-inbound: Twilio's inbound message webhook (`POST /twilio/sms`: STOP / HELP / START and
//! plain revocations) and message status callbacks (`POST /twilio/sms/status`).
//! `handle` is the whole handler; `main.rs` only wires it to Lambda.

use callfy_shared::Phone;
use callfy_shared::app::delivery;
use callfy_shared::app::inbound::{self, Applied, InboundMessage};
use callfy_shared::config::ExposeSecret;
use callfy_shared::domain::twiml::Verb;
use callfy_shared::http::{TwilioForm, error, failure, json, verify_twilio};
use callfy_shared::ports::{PortError, chain};
pub use callfy_shared::startup::{INBOUND_REPLAY_DELAY_SECONDS as REPLAY_DELAY_SECONDS, InboundApp};
use callfy_shared::telemetry::redact;
use callfy_shared::twilio_signature::SigningKeys;
use lambda_http::http::Method;
use lambda_http::{Body, Request, Response};
use thiserror::Error;
use tracing::{info, warn};

#[derive(Debug, Error)]
pub enum InboundError {
    #[error(transparent)]
    Store(#[from] PortError),
}

impl callfy_shared::ports::Classify for InboundError {
    fn kind(&self) -> callfy_shared::ports::ErrorKind {
        match self {
            Self::Store(e) => e.kind(),
        }
    }
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
    let keys = SigningKeys {
        auth_token: app.auth_token.expose_secret(),
        previous_auth_token: app.previous_auth_token.as_ref().map(|t| t.expose_secret()),
        shared_key: app.shared_key.as_ref().map(|k| k.expose_secret()),
    };
    let params = match verify_twilio(&req, keys, &app.public_base_url) {
        Ok(form) => form,
        Err(rejection) => return rejection.response(),
    };
    let result = match route {
        Route::Inbound => inbound(app, &params).await,
        Route::Status => status(app, &params).await,
    };
    match result {
        Ok(resp) => resp,
        Err(e) => {
            warn!(route = %path, "Twilio webhook failed; Twilio may retry");
            failure(&e, "temporarily unable to process the request")
        }
    }
}

enum Route {
    Inbound,
    Status,
}

/// A TwiML answer: one `<Message>`, or an empty `<Response/>` that sends nothing.
pub fn twiml(message: Option<&str>) -> Response<Body> {
    match message {
        Some(text) => callfy_shared::http::twiml(&[Verb::Message(text.to_string())]),
        None => callfy_shared::http::twiml(&[]),
    }
}

async fn inbound(app: &InboundApp, form: &TwilioForm) -> Result<Response<Body>, InboundError> {
    let Some(sid) = form.get("MessageSid").or_else(|| form.get("SmsSid")) else {
        return Ok(error(400, "missing_field", "MessageSid is required"));
    };
    let Some(from_raw) = form.get("From") else {
        return Ok(error(400, "missing_field", "From is required"));
    };
    let Ok(from) = Phone::parse(from_raw, None) else {
        return Ok(error(422, "invalid_phone", "From is not an E.164 phone number"));
    };
    let msg = InboundMessage {
        message_sid: sid.to_string(),
        from,
        to: form.get("To").unwrap_or_default().to_string(),
        messaging_service_sid: form.get("MessagingServiceSid").unwrap_or_default().to_string(),
        body: form.get("Body").unwrap_or_default().to_string(),
        segments: form.get("NumSegments").and_then(|n| n.parse().ok()).unwrap_or(1),
        received_at: app.clock.now(),
    };
    let from = &msg.from;
    // Twilio does not retry an inbound webhook. A copy goes on the queue before anything else
    // (no store access can time out before it), the message is stored as received (its log
    // entry under every merchant it reached), and only then is it classified and applied; the
    // worker applies the copy, from what was stored, wherever the inline attempt did not finish.
    let queued = match app.queue.enqueue_inbound(&msg, app.replay_delay_seconds).await {
        Ok(_) => true,
        Err(e) => {
            warn!(sid, phone = %from.log_id(), error = %redact(&chain(&e)), "could not queue the inbound message; applying it inline only");
            false
        }
    };
    // Storing and applying are idempotent (once per MessageSid): tried again at once, since only
    // what is applied is confirmed. `None`: no merchant uses or used the sender.
    // Taken after the copy is queued, or failed to be: without a copy, these attempts are
    // the message's only chance, and a slow queue must not have spent their time.
    let deadline = callfy_shared::app::retry::deadline();
    let applied = callfy_shared::app::retry::transient(deadline, |_| async {
        let merchants = inbound::merchants_for(&app.store, &msg).await?;
        if merchants.is_empty() {
            return Ok(None);
        }
        let merchants = inbound::receive(&app.store, &msg, &merchants).await?.merchants;
        let applied = inbound::apply(&app.store, &msg, &merchants).await?;
        Ok(Some((merchants, applied)))
    })
    .await;
    let (merchants, applied) = match applied {
        Ok(Some(applied)) => applied,
        Ok(None) => {
            warn!(sid, phone = %from.log_id(), "inbound SMS to a sender no merchant uses or used; ignored");
            return Ok(twiml(None));
        }
        Err(e) if queued => return Ok(queued_copy(&msg, &e)),
        Err(e) => return Err(e.into()),
    };
    let ids: Vec<&str> = merchants.iter().map(|r| r.merchant.id.as_str()).collect();
    let Applied { classified, affected, first } = &applied;
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
    Ok(twiml(inbound::reply(&applied, &merchants).as_deref()))
}

/// Storage failed, and the message's copy is on the queue: the worker applies it when it gets to
/// it, which behind a backlog can be minutes. Nothing is confirmed meanwhile: a sender told
/// "unsubscribed" must get nothing more, and until the copy is applied a step may still go out
/// (found by the 10 000-delivery campaign: a confirmed STOP's copy waited 12 minutes behind the
/// queue and a text went first). The worker confirms once the copy is applied, if that is within
/// five minutes of the keyword (`inbound::confirm_replayed`).
fn queued_copy(msg: &InboundMessage, e: &PortError) -> Response<Body> {
    warn!(sid = %msg.message_sid, phone = %msg.from.log_id(), error = %redact(&chain(e)), "storage failed during an inbound message; the queued copy will apply it");
    twiml(None)
}

async fn status(app: &InboundApp, form: &TwilioForm) -> Result<Response<Body>, InboundError> {
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
    let report = delivery::Report {
        message_sid: sid,
        status,
        error_code,
        to: form.get("To").and_then(|t| Phone::parse(t, None).ok()),
        senders: [form.get("From").unwrap_or_default(), form.get("MessagingServiceSid").unwrap_or_default()],
    };
    let answer = match delivery::record(&app.store, &report, app.clock.now()).await? {
        delivery::Outcome::Recorded => "recorded",
        delivery::Outcome::Unknown => "ignored",
    };
    Ok(json(200, &serde_json::json!({ "status": answer })))
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
