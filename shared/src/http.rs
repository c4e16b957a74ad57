//! HTTP responses in one shape: `{"error", "message"}` for every rejection (400 malformed, 401
//! bad signature or key, 404 unknown merchant, 409, 413, 422, 429 throttled, 503 retry later); TwiML
//! answers; the one mapping of a failure to an answer; and the one check every Twilio webhook
//! passes through.

use crate::domain::twiml::{self, Verb};
use crate::ports::{Classify, ErrorKind, chain};
use crate::telemetry::redact;
use crate::twilio_signature::{self, SigningKeys, TwilioSignatureError};
use lambda_http::{Body, Request, Response};
use serde::Serialize;
use tracing::warn;

/// Twilio's webhooks are small forms; anything larger is not from Twilio.
pub const MAX_TWILIO_BODY_BYTES: usize = 64 * 1024;

/// A Twilio webhook's form, once its signature held.
pub struct TwilioForm(pub Vec<(String, String)>);

impl TwilioForm {
    /// A field's trimmed value; an empty one counts as absent.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.trim()).filter(|v| !v.is_empty())
    }
}

/// Why a Twilio webhook was refused, and the answer it gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl Rejection {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }

    pub fn response(&self) -> Response<Body> {
        error(self.status, self.code, self.message.clone())
    }
}

/// Checks `X-Twilio-Signature` over the URL Twilio called (our public base URL, the path and
/// the query) and the form, in constant time. Refused: 413 for a body no webhook has, 400 for a
/// form that is not one, 403 for a bad or missing signature, 500 when our SharedKey secret is
/// not configured (Twilio retries later).
pub fn verify_twilio(req: &Request, keys: SigningKeys<'_>, public_base_url: &str) -> Result<TwilioForm, Rejection> {
    let path = req.uri().path().trim_end_matches('/');
    let body: &[u8] = req.body().as_ref();
    if body.len() > MAX_TWILIO_BODY_BYTES {
        return Err(Rejection::new(413, "payload_too_large", format!("body exceeds {MAX_TWILIO_BODY_BYTES} bytes")));
    }
    let url = match req.uri().query() {
        Some(q) if !q.is_empty() => format!("{public_base_url}{path}?{q}"),
        _ => format!("{public_base_url}{path}"),
    };
    let signature = header(req.headers(), twilio_signature::HEADER);
    let settings = header(req.headers(), twilio_signature::SETTINGS_HEADER);
    match twilio_signature::validate_request(keys, &url, body, signature, settings) {
        Ok(p) => Ok(TwilioForm(p)),
        Err(e @ TwilioSignatureError::Form(_)) => Err(Rejection::new(400, "malformed_form", e.to_string())),
        Err(e @ TwilioSignatureError::SharedKeyNotConfigured) => {
            tracing::error!(route = %path, "{e}");
            Err(Rejection::new(500, "signing_key_not_configured", e.to_string()))
        }
        Err(e) => {
            warn!(route = %path, reason = %redact(&e.to_string()), "rejected a Twilio request with a bad signature");
            Err(Rejection::new(403, "invalid_signature", e.to_string()))
        }
    }
}

/// A TwiML answer (`text/xml`); no verbs is an empty `<Response/>` that does nothing.
pub fn twiml(verbs: &[Verb]) -> Response<Body> {
    Response::builder()
        .status(200)
        .header("content-type", "text/xml")
        .body(Body::Text(twiml::response(verbs)))
        .unwrap_or_else(|_| Response::new(Body::Empty))
}

pub fn json<T: Serialize>(status: u16, value: &T) -> Response<Body> {
    let body = serde_json::to_string(value).unwrap_or_else(|_| "{}".into());
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::Text(body))
        .unwrap_or_else(|_| Response::new(Body::Empty))
}

pub fn error(status: u16, code: &str, message: impl Into<String>) -> Response<Body> {
    json(status, &serde_json::json!({ "error": code, "message": message.into() }))
}

/// 429 for a caller over its limit: `Retry-After` in whole seconds, and the same in the body
/// (`retry_after_seconds`) for clients that read only JSON.
pub fn throttled(retry_after_seconds: u32, message: impl Into<String>) -> Response<Body> {
    let body = serde_json::json!({
        "error": "rate_limited",
        "message": message.into(),
        "retry_after_seconds": retry_after_seconds,
    });
    let mut resp = json(429, &body);
    resp.headers_mut().insert("retry-after", http::HeaderValue::from(retry_after_seconds));
    resp
}

/// The one mapping of a failed use case to an answer, for every HTTP entry point. A transient
/// failure (throttling, a timeout, a lost race) is 503: the caller retries, and every write is
/// idempotent or conditional, so a retry is safe. A permanent one is 500: retrying unchanged
/// cannot help, and an operator must look. Logged once, with its cause chain, phones redacted.
pub fn failure<E>(e: &E, retry_message: &str) -> Response<Body>
where
    E: Classify + std::error::Error + 'static,
{
    let cause = redact(&chain(e));
    match e.kind() {
        ErrorKind::Transient => {
            warn!(error = %cause, "request failed; the caller may retry");
            let mut resp = error(503, "unavailable", retry_message);
            resp.headers_mut().insert("retry-after", http::HeaderValue::from_static("1"));
            resp
        }
        ErrorKind::Permanent => {
            tracing::error!(error = %cause, "request failed permanently");
            error(500, "internal_error", "the request could not be processed; retrying it unchanged will not help")
        }
    }
}

/// A header's value as text, if present and valid UTF-8.
pub fn header<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transient_failure_is_503_and_a_permanent_one_500() {
        use crate::ports::PortError;
        let busy = failure(&PortError::unavailable("DynamoDB", "PutItem", "throttled"), "retry later");
        assert_eq!(busy.status(), 503);
        assert_eq!(busy.headers().get("retry-after").unwrap(), "1");
        assert_eq!(failure(&PortError::Decode("no pk".into()), "retry later").status(), 500);
    }

    #[test]
    fn a_throttled_answer_says_when_to_retry_in_the_header_and_the_body() {
        let resp = throttled(3, "over the limit");
        assert_eq!(resp.status(), 429);
        assert_eq!(resp.headers().get("retry-after").unwrap(), "3");
        let Body::Text(text) = resp.body() else { panic!("text body") };
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!((v["error"].as_str(), v["retry_after_seconds"].as_u64()), (Some("rate_limited"), Some(3)));
    }

    #[test]
    fn error_bodies_have_code_and_message() {
        let resp = error(401, "invalid_signature", "X-Shopify-Hmac-Sha256 does not match");
        assert_eq!(resp.status(), 401);
        let Body::Text(text) = resp.body() else { panic!("text body") };
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(v["error"], "invalid_signature");
        assert!(v["message"].as_str().unwrap().contains("Hmac"));
    }
}
