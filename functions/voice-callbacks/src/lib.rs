//! voice-callbacks: Twilio's webhooks for the AI voice calls the worker places.
//! - `POST /twilio/voice/answer`: the TwiML of an answered call (disclosure, then the merchant's
//!   AI agent or the key menu; a machine gets voicemail or a hang-up);
//! - `POST /twilio/voice/gather`: a key pressed (9 stops calls, 1 texts the link);
//! - `POST /twilio/voice/status`: the call log;
//! - `POST /twilio/voice/recording`: a recording is noted and its copy to S3 queued;
//! - `POST /twilio/voice/relay-ended`: the voice agent's session ended (outcome, transfer);
//! - `POST /twilio/voice/incoming`: a call to a merchant's `voice_from`, answered by the
//!   automated opt-out line (say stop or press 9).
//!
//! Every route checks `X-Twilio-Signature` with the same code as sms-inbound. `handle` is the
//! whole handler; the use case is `callfy_shared::app::voice`; `main.rs` only wires it.

use callfy_shared::Phone;
use callfy_shared::app::voice::VoiceError;
use callfy_shared::config::ExposeSecret;
use callfy_shared::domain::twiml::Verb;
use callfy_shared::domain::voice::{CallRef, is_sid};
use callfy_shared::http::{TwilioForm, error, failure, json, twiml, verify_twilio};
use callfy_shared::ports::{CallUpdate, chain};
pub use callfy_shared::startup::VoiceApp;
use callfy_shared::startup::VoiceCase as LambdaVoice;
use callfy_shared::telemetry::redact;
use callfy_shared::twilio_signature::SigningKeys;
use lambda_http::http::Method;
use lambda_http::{Body, Request, Response};
use tracing::warn;

/// The callbacks about a call we placed (they carry its reference).
#[derive(Clone, Copy)]
enum Route {
    Answer,
    Gather,
    Status,
    Recording,
    RelayEnded,
}

pub async fn handle(app: &VoiceApp, req: Request) -> Response<Body> {
    let path = req.uri().path().trim_end_matches('/').to_string();
    // `None`: the opt-out line, which answers calls we did not place.
    let route = match path.as_str() {
        "/twilio/voice/answer" => Some(Route::Answer),
        "/twilio/voice/gather" => Some(Route::Gather),
        "/twilio/voice/status" => Some(Route::Status),
        "/twilio/voice/recording" => Some(Route::Recording),
        "/twilio/voice/relay-ended" => Some(Route::RelayEnded),
        "/twilio/voice/incoming" => None,
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
    let form = match verify_twilio(&req, keys, &app.public_base_url) {
        Ok(form) => form,
        Err(rejection) => return rejection.response(),
    };
    let voice = LambdaVoice {
        store: &app.store,
        sms: &app.twilio,
        recordings_queue: &app.recordings_queue,
        outreach_queue: &app.outreach_queue,
        replay_delay_seconds: app.replay_delay_seconds,
        public_base_url: &app.public_base_url,
        public_ws_url: &app.public_ws_url,
    };
    let Some(route) = route else { return incoming(app, &voice, &form).await };
    let query = req.uri().query().unwrap_or_default();
    let Some(reference) = CallRef::from_query(query) else {
        return error(400, "missing_reference", "the callback URL lacks its call reference (m, c, s)");
    };
    let Some(call_sid) = form.get("CallSid").filter(|s| is_sid(s, "CA")) else {
        return error(400, "missing_field", "CallSid is required (CA followed by 32 hex characters)");
    };
    let result = match route {
        Route::Answer => {
            voice.answer(&reference, call_sid, form.get("AnsweredBy"), app.clock.now()).await.map(|v| twiml(&v))
        }
        Route::Gather => gather(app, &voice, &reference, call_sid, &form, query).await,
        Route::Status => status(app, &voice, &reference, call_sid, &form).await,
        Route::Recording => recording(&voice, &reference, call_sid, &form).await,
        Route::RelayEnded => voice
            .relay_ended(&reference, call_sid, form.get("HandoffData"), form.get("SessionStatus"))
            .await
            .map(|v| twiml(&v)),
    };
    match result {
        Ok(resp) => resp,
        Err(e) => match route {
            // The person is on the line: a polite goodbye beats Twilio's error message.
            Route::Answer | Route::Gather | Route::RelayEnded => {
                warn!(route = %path, error = %redact(&chain(&e)), "voice callback failed; the call ends politely");
                twiml(&[Verb::Hangup])
            }
            Route::Status | Route::Recording => failure(&e, "temporarily unable to process the request"),
        },
    }
}

async fn gather(
    app: &VoiceApp,
    voice: &LambdaVoice<'_>,
    r: &CallRef,
    call_sid: &str,
    form: &TwilioForm,
    query: &str,
) -> Result<Response<Body>, VoiceError> {
    let attempt = query_value(query, "try").and_then(|t| t.parse::<u8>().ok()).unwrap_or(1);
    // The number Twilio called, as it signed it: a key acts on that number.
    let called = form.get("To").and_then(|t| Phone::parse(t, None).ok());
    let verbs = voice.gather(r, call_sid, called.as_ref(), form.get("Digits"), attempt, app.clock.now()).await?;
    Ok(twiml(&verbs))
}

async fn status(
    app: &VoiceApp,
    voice: &LambdaVoice<'_>,
    r: &CallRef,
    call_sid: &str,
    form: &TwilioForm,
) -> Result<Response<Body>, VoiceError> {
    let Some(status) = form.get("CallStatus") else {
        return Ok(error(400, "missing_field", "CallStatus is required"));
    };
    let number = |k: &str| form.get(k).map(|v| v.parse::<i64>());
    let (duration, code) = match (number("CallDuration"), number("ErrorCode")) {
        (Some(Err(_)), _) => return Ok(error(422, "invalid_field", "CallDuration must be an integer")),
        (_, Some(Err(_))) => return Ok(error(422, "invalid_field", "ErrorCode must be an integer")),
        (d, c) => (d.and_then(Result::ok), c.and_then(Result::ok)),
    };
    let update = CallUpdate {
        status,
        duration_seconds: duration.and_then(|d| u32::try_from(d).ok()),
        answered_by: form.get("AnsweredBy"),
        error_code: code,
    };
    let to = form.get("To").and_then(|t| Phone::parse(t, None).ok());
    let recorded = voice.status(r, call_sid, to.as_ref(), &update, app.clock.now()).await?;
    Ok(json(200, &serde_json::json!({ "status": if recorded { "recorded" } else { "ignored" } })))
}

async fn recording(
    voice: &LambdaVoice<'_>,
    r: &CallRef,
    call_sid: &str,
    form: &TwilioForm,
) -> Result<Response<Body>, VoiceError> {
    let Some(recording_sid) = form.get("RecordingSid").filter(|s| is_sid(s, "RE")) else {
        return Ok(error(400, "missing_field", "RecordingSid is required (RE followed by 32 hex characters)"));
    };
    match form.get("RecordingStatus") {
        Some("completed") | None => {}
        Some(other) => {
            warn!(merchant = %r.merchant_id, call = call_sid, status = other, "recording did not complete; nothing to copy");
            return Ok(json(200, &serde_json::json!({ "status": "ignored" })));
        }
    }
    let duration = form.get("RecordingDuration").and_then(|d| d.parse().ok());
    voice.recording(r, call_sid, recording_sid, duration).await?;
    Ok(json(200, &serde_json::json!({ "status": "queued" })))
}

/// The automated opt-out line: a call to a merchant's `voice_from`. The first request offers
/// the menu; its `<Gather>` posts the key or the words back here.
async fn incoming(app: &VoiceApp, voice: &LambdaVoice<'_>, form: &TwilioForm) -> Response<Body> {
    let (Some(called), Some(caller)) = (
        form.get("To").and_then(|t| Phone::parse(t, None).ok()),
        form.get("From").and_then(|t| Phone::parse(t, None).ok()),
    ) else {
        return twiml(&[Verb::Hangup]);
    };
    let call_sid = form.get("CallSid").unwrap_or_default();
    let (digits, speech) = (form.get("Digits"), form.get("SpeechResult"));
    let answer = if digits.is_none() && speech.is_none() {
        voice.opt_out_line(&called).await
    } else {
        voice.opt_out_line_choice(&called, &caller, call_sid, digits, speech, app.clock.now()).await
    };
    match answer {
        Ok(verbs) => twiml(&verbs),
        Err(e) => {
            warn!(error = %redact(&chain(&e)), "the opt-out line could not record the opt-out");
            // Twilio will not call back: say so rather than pretend.
            twiml(&[
                Verb::Say {
                    text: "Sorry, we could not record that. Please try again later.".into(),
                    language: "en-US",
                },
                Verb::Hangup,
            ])
        }
    }
}

fn query_value(query: &str, name: &str) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).ok()?;
    pairs.into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
}
