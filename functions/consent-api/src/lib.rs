//! consent-api: merchants record and read consent (`POST /v1/consents`,
//! `GET /v1/consents/{phone}`) and make data-subject requests (`POST /v1/privacy/export`,
//! `POST /v1/privacy/delete`, `GET /v1/privacy/requests/{id}`) with their API key. `handle` is
//! the whole handler. Each authenticated request takes a token from its merchant's bucket
//! (`api_limit`, `app::limits`): a merchant over it gets 429 with `Retry-After`, and only it.

use callfy_shared::Phone;
use callfy_shared::api_key::key_merchant;
use callfy_shared::app::consent::{self, ApiAnswer, ApiOutcome, ConsentError, Idempotency};
use callfy_shared::app::limits::{self, Admission};
use callfy_shared::domain::consent::{
    ConsentAction, ConsentEvent, ConsentSource, ConsentState, Evidence, LedgerEntry, Verdict,
};
use callfy_shared::domain::merchant::{Channel, Merchant};
use callfy_shared::domain::outreach::{MerchantRecord, MerchantStatus};
use callfy_shared::http::{error, failure, header, json, throttled};
use callfy_shared::ports::IdempotencyRecord;
use callfy_shared::ports::{Classify, ErrorKind, PortError};
use callfy_shared::signature::{ct_eq, sha256_hex};
use chrono::{DateTime, Duration, Utc};
use lambda_http::http::Method;
use lambda_http::{Body, Request, Response};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tracing::{info, warn};

pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// An event may be stamped a little ahead of our clock, not more.
const MAX_CLOCK_SKEW_MINUTES: i64 = 5;
const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

pub use callfy_shared::startup::ConsentApp;

#[derive(Debug, Error)]
pub enum ApiError {
    #[error(transparent)]
    Store(#[from] PortError),
    #[error(transparent)]
    Consent(#[from] ConsentError),
}

impl Classify for ApiError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Store(e) => e.kind(),
            Self::Consent(e) => e.kind(),
        }
    }
}

pub async fn handle(app: &ConsentApp, req: Request) -> Response<Body> {
    let path = req.uri().path().trim_end_matches('/').to_string();
    let route = if path == "/v1/consents" {
        if req.method() != Method::POST {
            return error(405, "method_not_allowed", "use POST");
        }
        Route::Create
    } else if let Some(phone) = path.strip_prefix("/v1/consents/") {
        if req.method() != Method::GET {
            return error(405, "method_not_allowed", "use GET");
        }
        Route::Read(percent_decode(phone))
    } else if path == "/v1/privacy/export" || path == "/v1/privacy/delete" {
        if req.method() != Method::POST {
            return error(405, "method_not_allowed", "use POST");
        }
        Route::Privacy { delete: path.ends_with("delete") }
    } else if let Some(id) = path.strip_prefix("/v1/privacy/requests/") {
        if req.method() != Method::GET {
            return error(405, "method_not_allowed", "use GET");
        }
        Route::PrivacyStatus(percent_decode(id))
    } else {
        return error(404, "not_found", format!("no route for {path}"));
    };
    let merchant = match authenticate(app, &req).await {
        Ok(m) => m,
        Err(resp) => return resp,
    };
    // After the key is checked, so nobody can spend another merchant's share with made-up keys.
    if let Err(resp) = take_token(app, &merchant.merchant).await {
        return resp;
    }
    let result = match route {
        Route::Create => create(app, &merchant, &req).await,
        Route::Read(phone) => read(app, &merchant.merchant, &phone).await,
        Route::Privacy { delete } => privacy(app, &merchant, &req, delete).await,
        Route::PrivacyStatus(id) => privacy_status(app, &merchant.merchant, &id).await,
    };
    result.unwrap_or_else(|e| {
        warn!(merchant = %merchant.merchant.id, "consent request failed");
        failure(&e, "temporarily unable to process the request; retry with the same Idempotency-Key")
    })
}

enum Route {
    Create,
    Read(String),
    Privacy { delete: bool },
    PrivacyStatus(String),
}

/// `{"phone": …}` or `{"email": …}`: whom a data-subject request is about.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubjectBody {
    phone: Option<String>,
    email: Option<String>,
}

async fn privacy(
    app: &ConsentApp,
    record: &MerchantRecord,
    req: &Request,
    delete: bool,
) -> Result<Response<Body>, ApiError> {
    use callfy_shared::app::privacy::{Deletion, Privacy, Subject, new_request_id};
    let m = &record.merchant;
    let body: &[u8] = req.body().as_ref();
    if body.len() > MAX_BODY_BYTES {
        return Ok(error(413, "payload_too_large", format!("body exceeds {MAX_BODY_BYTES} bytes")));
    }
    let parsed: SubjectBody = match serde_json::from_slice(body) {
        Ok(b) => b,
        Err(e) => return Ok(error(400, "malformed_json", e.to_string())),
    };
    let subject = match (parsed.phone, parsed.email) {
        (Some(p), None) => match Phone::parse(&p, Some(&m.default_country)) {
            Ok(p) => Subject::Phone(p),
            Err(e) => return Ok(unprocessable("invalid_phone", "phone", format!("phone: {e}"))),
        },
        (None, Some(e)) if e.contains('@') && e.len() <= 254 => Subject::Email(e.trim().to_lowercase()),
        (None, Some(_)) => return Ok(unprocessable("invalid_email", "email", "email: not an email address")),
        _ => return Ok(unprocessable("invalid_subject", "phone", "give exactly one of phone or email")),
    };
    let privacy = Privacy { store: &app.store, recordings: &app.recordings };
    let now = app.clock.now();
    if !delete {
        let doc = privacy.export(m, &subject, now).await?;
        return Ok(json(200, &doc));
    }
    Ok(match privacy.delete(record, &subject, &new_request_id(), now).await? {
        Deletion::Done { id, counts } => {
            // Twilio's copies go through the worker (it holds Twilio's keys); they are recorded,
            // so a queue failure leaves them for the purger, and the answer stands.
            if counts.keys().any(|k| k.starts_with("twilio_")) {
                let work = callfy_shared::ports::PrivacyWork { merchant_id: m.id.clone(), id: id.clone() };
                if let Err(e) = callfy_shared::ports::JobQueue::enqueue_provider_copies(&app.queue, &work).await {
                    tracing::warn!(merchant = %m.id, error = %callfy_shared::telemetry::redact(&callfy_shared::ports::chain(&e)), "could not queue a deletion's Twilio copies; the purger will");
                }
            }
            json(200, &serde_json::json!({ "id": id, "status": "done", "counts": counts }))
        }
        Deletion::Held { id } => json(
            202,
            &serde_json::json!({ "id": id, "status": "held", "message": "a legal hold is in force; the deletion is carried out when it lifts" }),
        ),
    })
}

async fn privacy_status(app: &ConsentApp, m: &Merchant, id: &str) -> Result<Response<Body>, ApiError> {
    let Some(status) = callfy_shared::app::privacy::request_status(&app.store, &m.id, id).await? else {
        return Ok(error(404, "unknown_request", format!("no data-subject request {id}")));
    };
    let mut view = serde_json::to_value(&status).unwrap_or_default();
    if let Some(key) = &status.export_key {
        let valid = callfy_shared::app::privacy::LINK_VALID;
        let url = app.recordings.presign_get(key, valid).await?;
        view["export_url"] = url.into();
        view["expires_at"] = (app.clock.now() + Duration::seconds(valid.as_secs() as i64)).to_rfc3339().into();
    }
    Ok(json(200, &view))
}

impl From<callfy_shared::app::privacy::PrivacyError> for ApiError {
    fn from(e: callfy_shared::app::privacy::PrivacyError) -> Self {
        Self::Store(e.0)
    }
}

fn percent_decode(s: &str) -> String {
    // `+` in a path is a literal plus (E.164), unlike in a query string.
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(v) = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn authenticate(app: &ConsentApp, req: &Request) -> Result<MerchantRecord, Response<Body>> {
    let unauthorized = || error(401, "invalid_api_key", "Authorization: Bearer <API key> is missing or not valid");
    let key = header(req.headers(), "authorization")
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .ok_or_else(unauthorized)?;
    let id = key_merchant(key).ok_or_else(unauthorized)?;
    let record = match app.store.get_merchant(&id).await {
        Ok(Some(r)) => r,
        Ok(None) => return Err(unauthorized()),
        Err(e) => return Err(failure(&e, "temporarily unable to process the request")),
    };
    let stored = record.api_key_sha256.as_deref().unwrap_or_default();
    if !ct_eq(sha256_hex(key.as_bytes()).as_bytes(), stored.as_bytes()) {
        warn!(merchant = %id, "rejected an API key");
        return Err(unauthorized());
    }
    if record.status == MerchantStatus::Closed {
        return Err(error(403, "merchant_closed", "this merchant account is closed"));
    }
    Ok(record)
}

/// One token from the merchant's bucket, or the 429 that says when to come back. Only this
/// merchant's requests draw on it; a store failure is a 503 like any other (the request's own
/// work needs the same table).
async fn take_token(app: &ConsentApp, m: &Merchant) -> Result<(), Response<Body>> {
    let limit = &m.api_limit;
    match limits::admit(&app.store, &m.id, limit, app.clock.now()).await {
        Ok(Admission::Admitted) => Ok(()),
        Ok(Admission::Throttled { retry_after_seconds }) => {
            callfy_shared::metrics::count(callfy_shared::metrics::API_THROTTLED, 1);
            info!(merchant = %m.id, retry_after_seconds, "API request over the merchant's limit");
            Err(throttled(
                retry_after_seconds,
                format!(
                    "merchant {} is over its API limit of {} requests a second (bursts of {}); retry after {retry_after_seconds} s",
                    m.id, limit.rate_per_second, limit.burst
                ),
            ))
        }
        Err(e) => Err(failure(&e, "temporarily unable to process the request")),
    }
}

/// What a merchant may state as evidence; the rest (message SIDs, keywords) is ours to record.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiEvidence {
    pub consent_text: Option<String>,
    pub consent_text_version: Option<String>,
    pub page_url: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub platform_timestamp: Option<String>,
    pub opt_in_level: Option<String>,
    pub collected_from: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentRequest {
    pub phone: String,
    pub channel: Channel,
    pub action: ConsentAction,
    #[serde(default)]
    pub occurred_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub evidence: ApiEvidence,
}

#[derive(Debug, Serialize)]
struct EntryView<'a> {
    channel: Channel,
    seq: u64,
    action: ConsentAction,
    source: ConsentSource,
    occurred_at: DateTime<Utc>,
    recorded_at: DateTime<Utc>,
    evidence: &'a Evidence,
    hash: &'a str,
}

fn entry_view(e: &LedgerEntry) -> EntryView<'_> {
    EntryView {
        channel: e.event.channel,
        seq: e.seq,
        action: e.event.action,
        source: e.event.source,
        occurred_at: e.event.occurred_at,
        recorded_at: e.event.recorded_at,
        evidence: &e.event.evidence,
        hash: &e.hash,
    }
}

fn state_view(s: &ConsentState) -> serde_json::Value {
    serde_json::json!({
        "status": s.status,
        "source": s.last_source,
        "occurred_at": s.last_occurred_at,
        "entries": s.seq,
    })
}

fn unprocessable(code: &str, field: &str, message: impl Into<String>) -> Response<Body> {
    json(422, &serde_json::json!({ "error": code, "message": message.into(), "field": field }))
}

/// Why a consent request is refused (400 malformed, 422 semantically invalid).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum Rejection {
    #[error("{0}")]
    Malformed(String),
    #[error("{message}")]
    Invalid { code: &'static str, field: &'static str, message: String },
}

impl Rejection {
    fn invalid(code: &'static str, field: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid { code, field, message: message.into() }
    }

    pub fn response(&self) -> Response<Body> {
        match self {
            Self::Malformed(message) => error(400, "malformed_json", message.clone()),
            Self::Invalid { code, field, message } => unprocessable(code, field, message.clone()),
        }
    }
}

/// Turns a request into the event it asks for, or says why not.
pub fn parse_request(merchant: &Merchant, body: &[u8], now: DateTime<Utc>) -> Result<(Phone, ConsentEvent), Rejection> {
    let request: ConsentRequest = serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            Rejection::invalid("invalid_field", "body", e.to_string())
        } else {
            Rejection::Malformed(e.to_string())
        }
    })?;
    let phone = Phone::parse(&request.phone, Some(&merchant.default_country))
        .map_err(|e| Rejection::invalid("invalid_phone", "phone", format!("phone: {e}")))?;
    let occurred_at = request.occurred_at.unwrap_or(now);
    if occurred_at > now + Duration::minutes(MAX_CLOCK_SKEW_MINUTES) {
        return Err(Rejection::invalid("invalid_field", "occurred_at", "occurred_at is in the future"));
    }
    let ev = request.evidence;
    if request.action == ConsentAction::OptIn && ev.consent_text.as_deref().is_none_or(|t| t.trim().is_empty()) {
        return Err(Rejection::invalid(
            "missing_evidence",
            "evidence.consent_text",
            "an opt-in needs the consent text the person agreed to",
        ));
    }
    let event = ConsentEvent {
        channel: request.channel,
        action: request.action,
        source: ConsentSource::Api,
        occurred_at,
        recorded_at: now,
        evidence: Evidence {
            consent_text: ev.consent_text,
            consent_text_version: ev.consent_text_version,
            page_url: ev.page_url,
            ip: ev.ip,
            user_agent: ev.user_agent,
            platform_timestamp: ev.platform_timestamp,
            opt_in_level: ev.opt_in_level,
            collected_from: ev.collected_from,
            ..Default::default()
        },
    };
    Ok((phone, event))
}

/// The stored answer; `replayed` marks a retry's copy (`Idempotent-Replayed: true`).
fn respond(record: &IdempotencyRecord, replayed: bool) -> Response<Body> {
    Response::builder()
        .status(record.status)
        .header("content-type", "application/json")
        .header("idempotent-replayed", if replayed { "true" } else { "false" })
        .body(Body::Text(record.body.clone()))
        .unwrap_or_else(|_| Response::new(Body::Empty))
}

async fn create(app: &ConsentApp, record: &MerchantRecord, req: &Request) -> Result<Response<Body>, ApiError> {
    let m = &record.merchant;
    let body: &[u8] = req.body().as_ref();
    if body.len() > MAX_BODY_BYTES {
        return Ok(error(413, "payload_too_large", format!("body exceeds {MAX_BODY_BYTES} bytes")));
    }
    let idem_key = header(req.headers(), "idempotency-key");
    if idem_key.is_some_and(|k| k.len() > MAX_IDEMPOTENCY_KEY_LEN) {
        return Ok(error(400, "invalid_idempotency_key", "Idempotency-Key is longer than 255 characters"));
    }
    let request_sha256 = sha256_hex(body);
    let now = app.clock.now();
    let (phone, event) = match parse_request(m, body, now) {
        Ok(v) => v,
        Err(rejection) => return Ok(rejection.response()),
    };
    let channel = event.channel;
    let render = |outcome: ApiOutcome<'_>| match outcome {
        ApiOutcome::Changed { entry, state } => (
            201,
            serde_json::json!({ "phone": phone, "channel": channel, "changed": true, "state": state_view(state), "entry": entry_view(entry) }),
        ),
        ApiOutcome::Unchanged { state } => (
            200,
            serde_json::json!({ "phone": phone, "channel": channel, "changed": false, "state": state_view(state) }),
        ),
        ApiOutcome::Refused(Verdict::OptedOutLater { at }) => (
            409,
            serde_json::json!({
                "error": "opted_out_later",
                "message": format!("an opt-out was recorded at {}, at or after this opt-in's occurred_at; an opt-in must be newer than the opt-out", at.to_rfc3339()),
            }),
        ),
        ApiOutcome::Refused(Verdict::PersonOptedOut { at }) => (
            409,
            serde_json::json!({
                "error": "opted_out_by_person",
                "message": format!("the person opted out themself at {}; an opt-in must be newer and carry its own evidence", at.to_rfc3339()),
            }),
        ),
        ApiOutcome::DeletedSubject { at } => (
            409,
            serde_json::json!({
                "error": "deleted_subject",
                "message": format!("this person's data was deleted on request at {}, after this opt-in's occurred_at; an opt-in must be newer than the deletion", at.to_rfc3339()),
            }),
        ),
        ApiOutcome::Refused(_) => {
            (409, serde_json::json!({ "error": "refused", "message": "the ledger refused this event" }))
        }
    };
    let idem = Idempotency { key: idem_key, request_sha256: &request_sha256 };
    match consent::record_for_merchant(&app.store, m, &phone, &event, idem, now, render).await? {
        ApiAnswer::Fresh(answer) => Ok(respond(&answer, false)),
        ApiAnswer::Replayed(answer) => Ok(respond(&answer, true)),
        ApiAnswer::KeyReused => {
            Ok(error(422, "idempotency_key_reused", "this Idempotency-Key was used with a different request"))
        }
        ApiAnswer::KeyExpired => Ok(error(
            422,
            "idempotency_key_expired",
            "this Idempotency-Key was used more than 24 hours ago; send this request with a new key",
        )),
    }
}

async fn read(app: &ConsentApp, m: &Merchant, raw_phone: &str) -> Result<Response<Body>, ApiError> {
    let phone = match Phone::parse(raw_phone, Some(&m.default_country)) {
        Ok(p) => p,
        Err(e) => return Ok(unprocessable("invalid_phone", "phone", format!("phone: {e}"))),
    };
    let mut channels = serde_json::Map::new();
    let mut history: Vec<LedgerEntry> = Vec::new();
    for channel in [Channel::Sms, Channel::Voice] {
        let state = app.store.consent_state(&m.id, &phone, channel).await?;
        channels.insert(channel.as_str().into(), state_view(&state));
        history.extend(app.store.consent_ledger(&m.id, &phone, channel).await?);
    }
    history.sort_by_key(|e| std::cmp::Reverse((e.event.recorded_at, e.seq)));
    let history: Vec<EntryView<'_>> = history.iter().map(entry_view).collect();
    Ok(json(200, &serde_json::json!({ "phone": phone, "channels": channels, "history": history })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_phones_decode_percent_but_keep_plus() {
        assert_eq!(percent_decode("%2B14155552671"), "+14155552671");
        assert_eq!(percent_decode("+14155552671"), "+14155552671");
        assert_eq!(percent_decode("%28415%29%20555-2671"), "(415) 555-2671");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
