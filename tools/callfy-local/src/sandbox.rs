//! A local stand-in for Twilio's REST API at the network boundary: it checks every request
//! against Twilio's OpenAPI spec, answers as Twilio does, records and prints what was sent.

use crate::contract::contract;
use crate::sandbox_voice::SandboxCall;
use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use callfy_shared::signature::ct_eq;
use callfy_shared::twilio_signature;
use callfy_shared::{Clock, Phone};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

pub const MESSAGES_PATH: &str = "/2010-04-01/Accounts/{AccountSid}/Messages.json";
pub const MESSAGE_PATH: &str = "/2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json";

/// Twilio's magic test numbers: sending to them fails with these errors.
const MAGIC_TO: &[(&str, i64, &str)] = &[
    ("+15005550001", 21211, "The 'To' number is not a valid phone number."),
    ("+15005550002", 21612, "The 'To' phone number is not currently reachable via SMS."),
    ("+15005550003", 21408, "Permission to send an SMS has not been enabled for the region."),
    ("+15005550004", 21610, "Attempt to send to unsubscribed recipient"),
    ("+15005550009", 21614, "'To' number is not a valid mobile number"),
];

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SandboxMessage {
    pub sid: String,
    pub to: String,
    pub from: Option<String>,
    pub messaging_service_sid: Option<String>,
    pub body: String,
    pub status_callback: Option<String>,
    /// `ValidityPeriod`: how long Twilio may hold it in its queue (seconds).
    #[serde(default)]
    pub validity_period: Option<u32>,
    pub date_created: String,
}

/// What the sandbox does to the next request(s), to exercise failure handling.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fault {
    pub status: u16,
    pub code: i64,
    #[serde(default = "one")]
    pub count: u32,
    /// When set, the message is accepted and recorded but the answer comes this late, as when
    /// Twilio takes a message and the response is lost (`status`/`code` are then unused).
    #[serde(default)]
    pub accept_then_hang_ms: u64,
}

fn one() -> u32 {
    1
}

impl Fault {
    pub fn error(status: u16, code: i64) -> Self {
        Self { status, code, count: 1, accept_then_hang_ms: 0 }
    }

    pub fn accept_then_hang(ms: u64) -> Self {
        Self { status: 201, code: 0, count: 1, accept_then_hang_ms: ms }
    }
}

/// An answer, and how long to hold it back.
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub delay_ms: u64,
}

impl Answer {
    pub(crate) fn now(status: u16, body: Value) -> Self {
        Self { status, body, delay_ms: 0 }
    }

    pub(crate) fn error(status: u16, code: i64, message: &str) -> Self {
        Self::now(
            status,
            json!({ "code": code, "message": message, "more_info": format!("https://www.twilio.com/docs/errors/{code}"), "status": status }),
        )
    }
}

pub struct Sandbox {
    account_sid: String,
    auth_token: String,
    clock: Arc<dyn Clock>,
    messages: Mutex<Vec<SandboxMessage>>,
    calls: Mutex<Vec<SandboxCall>>,
    violations: Mutex<Vec<String>>,
    faults: Mutex<VecDeque<Fault>>,
    /// Where Twilio would deliver inbound messages: `{base}/twilio/sms`.
    webhook_base: String,
    /// Send "sent" then "delivered" callbacks for each accepted message, as Twilio does.
    auto_status: bool,
    http: reqwest::Client,
    /// Open ConversationRelay sessions of calls `run-local` plays, by call SID (`call-in --say`).
    pub(crate) relays: Mutex<std::collections::HashMap<String, Arc<crate::sandbox_relay::RelaySession>>>,
}

/// What the webhook answered to an inbound message, and the reply Twilio would then send.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InboundResult {
    pub status: u16,
    pub message_sid: String,
    pub body: String,
    /// The `<Message>` of the TwiML answer, if any.
    pub reply: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InboundRequest {
    pub from: String,
    pub to: String,
    pub body: String,
    #[serde(default)]
    pub messaging_service_sid: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusRequest {
    pub status: String,
    #[serde(default)]
    pub error_code: Option<i64>,
}

impl Sandbox {
    pub fn new(
        account_sid: &str,
        auth_token: &str,
        clock: Arc<dyn Clock>,
        webhook_base: &str,
        auto_status: bool,
    ) -> Self {
        Self {
            account_sid: account_sid.into(),
            auth_token: auth_token.into(),
            clock,
            messages: Mutex::default(),
            calls: Mutex::default(),
            violations: Mutex::default(),
            faults: Mutex::default(),
            webhook_base: webhook_base.trim_end_matches('/').to_string(),
            auto_status,
            relays: Mutex::default(),
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(15))
                .build()
                .unwrap_or_else(|_| reqwest::Client::new()),
        }
    }

    pub(crate) fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.now()
    }

    pub(crate) fn auth_token(&self) -> &str {
        &self.auth_token
    }

    pub(crate) fn account_sid(&self) -> String {
        self.account_sid.clone()
    }

    pub(crate) fn webhook_base(&self) -> &str {
        &self.webhook_base
    }

    /// Every call placed, oldest first.
    pub fn calls(&self) -> Vec<SandboxCall> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn calls_mut(&self, f: impl FnOnce(&mut Vec<SandboxCall>)) {
        f(&mut self.calls.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Posts a form to one of our webhooks, signed as Twilio signs it.
    pub(crate) async fn post_signed(&self, url: &str, form: &[(String, String)]) -> Result<(u16, String), String> {
        let signature = twilio_signature::compute(&self.auth_token, url, form);
        let resp = self
            .http
            .post(url)
            .header(twilio_signature::HEADER, signature)
            .header("user-agent", "TwilioProxy/1.1")
            .form(form)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        Ok((status, resp.text().await.unwrap_or_default()))
    }

    /// A person texts `body` from `from` to the merchant's number `to`: Twilio's inbound webhook.
    /// A `<Message>` in the answer is sent back to the person, as Twilio would.
    pub async fn receive(&self, req: &InboundRequest) -> Result<InboundResult, String> {
        let sid = format!("SM{}", uuid::Uuid::new_v4().simple());
        let mut form: Vec<(String, String)> = vec![
            ("AccountSid".into(), self.account_sid.clone()),
            ("ApiVersion".into(), "2010-04-01".into()),
            ("Body".into(), req.body.clone()),
            ("From".into(), req.from.clone()),
            ("MessageSid".into(), sid.clone()),
            ("NumMedia".into(), "0".into()),
            ("NumSegments".into(), "1".into()),
            ("SmsMessageSid".into(), sid.clone()),
            ("SmsSid".into(), sid.clone()),
            ("SmsStatus".into(), "received".into()),
            ("To".into(), req.to.clone()),
        ];
        if let Some(service) = &req.messaging_service_sid {
            form.push(("MessagingServiceSid".into(), service.clone()));
        }
        self.redeliver(&form).await.map(|(status, body, reply)| InboundResult { status, message_sid: sid, body, reply })
    }

    /// Delivers an inbound form (again); Twilio may deliver one message more than once.
    pub async fn redeliver(&self, form: &[(String, String)]) -> Result<(u16, String, Option<String>), String> {
        let url = format!("{}/twilio/sms", self.webhook_base);
        let (status, body) = self.post_signed(&url, form).await?;
        let reply = twiml_message(&body);
        if let Some(text) = &reply {
            let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            let message = SandboxMessage {
                sid: format!("SM{}", uuid::Uuid::new_v4().simple()),
                to: get("From").unwrap_or_default(),
                from: get("To"),
                messaging_service_sid: get("MessagingServiceSid"),
                body: text.clone(),
                status_callback: None,
                validity_period: None,
                date_created: self.clock.now().to_rfc2822(),
            };
            let shown = Phone::parse(&message.to, None).map(|p| p.masked()).unwrap_or_else(|_| "(invalid)".into());
            println!("[twilio-sandbox] reply {} to {shown}: {}", message.sid, message.body);
            self.messages.lock().unwrap_or_else(|e| e.into_inner()).push(message);
        }
        Ok((status, body, reply))
    }

    /// Reports a message's status to its `StatusCallback`, signed; returns our answer's status.
    pub async fn report_status(&self, sid: &str, status: &str, error_code: Option<i64>) -> Result<u16, String> {
        let message = self.messages().into_iter().find(|m| m.sid == sid).ok_or_else(|| format!("no message {sid}"))?;
        let url = message.status_callback.clone().ok_or_else(|| format!("message {sid} has no StatusCallback"))?;
        let mut form: Vec<(String, String)> = vec![
            ("AccountSid".into(), self.account_sid.clone()),
            ("ApiVersion".into(), "2010-04-01".into()),
            ("From".into(), message.from.clone().unwrap_or_default()),
            ("MessageSid".into(), sid.to_string()),
            ("MessageStatus".into(), status.to_string()),
            ("SmsSid".into(), sid.to_string()),
            ("SmsStatus".into(), status.to_string()),
            ("To".into(), message.to.clone()),
        ];
        if let Some(code) = error_code {
            form.push(("ErrorCode".into(), code.to_string()));
        }
        if let Some(service) = &message.messaging_service_sid {
            form.push(("MessagingServiceSid".into(), service.clone()));
        }
        self.post_signed(&url, &form).await.map(|(status, _)| status)
    }

    pub fn messages(&self) -> Vec<SandboxMessage> {
        self.messages.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Requests that broke Twilio's contract; tests expect none.
    pub fn violations(&self) -> Vec<String> {
        self.violations.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn inject(&self, fault: Fault) {
        self.faults.lock().unwrap_or_else(|e| e.into_inner()).push_back(fault);
    }

    pub fn clear(&self) {
        self.messages.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    pub(crate) fn take_fault(&self) -> Option<Fault> {
        let mut faults = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        let front = faults.front_mut()?;
        front.count = front.count.saturating_sub(1);
        let fault = front.clone();
        if front.count == 0 {
            faults.pop_front();
        }
        Some(fault)
    }

    pub(crate) fn violated(&self, problems: &[String]) -> bool {
        if problems.is_empty() {
            return false;
        }
        self.violations.lock().unwrap_or_else(|e| e.into_inner()).extend(problems.iter().cloned());
        true
    }

    pub(crate) fn authorised(&self, account: &str, headers: &HeaderMap) -> bool {
        let Some(encoded) =
            headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Basic "))
        else {
            return false;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded) else {
            return false;
        };
        let expected = format!("{}:{}", self.account_sid, self.auth_token);
        ct_eq(&decoded, expected.as_bytes()) && account == self.account_sid
    }

    /// Creates a message as `POST …/Messages.json` would, or answers Twilio's error document.
    pub fn create_message(&self, account: &str, headers: &HeaderMap, form: &[(String, String)]) -> Answer {
        if !self.authorised(account, headers) {
            return Answer::error(401, 20003, "Authenticate");
        }
        let problems = contract().check_form(MESSAGES_PATH, "post", form);
        if self.violated(&problems) {
            return Answer::error(400, 21601, &problems.join("; "));
        }
        let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let (to, body) = (get("To").unwrap_or_default(), get("Body"));
        let (from, service) = (get("From"), get("MessagingServiceSid"));
        if from.is_none() && service.is_none() {
            return Answer::error(
                400,
                21603,
                "A 'From' or 'MessagingServiceSid' parameter is required to send a message.",
            );
        }
        let Some(body) = body.filter(|b| !b.is_empty()) else {
            return Answer::error(400, 21602, "Message body is required.");
        };
        if body.chars().count() > 1600 {
            return Answer::error(400, 21617, "The concatenated message body exceeds the 1600 character limit.");
        }
        let mut delay_ms = 0;
        if let Some(fault) = self.take_fault() {
            if fault.accept_then_hang_ms == 0 {
                return Answer::error(fault.status, fault.code, "Injected by the sandbox");
            }
            delay_ms = fault.accept_then_hang_ms;
        }
        if let Some((_, code, message)) = MAGIC_TO.iter().find(|(n, _, _)| *n == to) {
            return Answer::error(400, *code, message);
        }
        let message = SandboxMessage {
            sid: format!("SM{}", uuid::Uuid::new_v4().simple()),
            to,
            from,
            messaging_service_sid: service,
            body,
            status_callback: get("StatusCallback"),
            validity_period: get("ValidityPeriod").and_then(|v| v.parse().ok()),
            date_created: self.clock.now().to_rfc2822(),
        };
        let shown_to = Phone::parse(&message.to, None).map(|p| p.masked()).unwrap_or_else(|_| "(invalid)".into());
        println!("[twilio-sandbox] SMS {} to {shown_to}: {}", message.sid, message.body);
        let resource = self.resource(&message);
        self.messages.lock().unwrap_or_else(|e| e.into_inner()).push(message);
        Answer { status: 201, body: resource, delay_ms }
    }

    /// Redacts a message as `POST …/Messages/{Sid}.json` with an empty `Body` does: the body is
    /// emptied, the message stays. The one update a deletion makes.
    pub fn update_message(&self, account: &str, headers: &HeaderMap, sid: &str, form: &[(String, String)]) -> Answer {
        if !self.authorised(account, headers) {
            return Answer::error(401, 20003, "Authenticate");
        }
        let problems = contract().check_form(MESSAGE_PATH, "post", form);
        if self.violated(&problems) {
            return Answer::error(400, 21601, &problems.join("; "));
        }
        if form.iter().find(|(k, _)| k == "Body").is_none_or(|(_, v)| !v.is_empty()) {
            return Answer::error(400, 21602, "Only an empty Body (redaction) is supported here.");
        }
        if let Some(fault) = self.take_fault() {
            return Answer::error(fault.status, fault.code, "Injected by the sandbox");
        }
        let mut messages = self.messages.lock().unwrap_or_else(|e| e.into_inner());
        let Some(m) = messages.iter_mut().find(|m| m.sid == sid) else {
            return Answer::error(404, 20404, "The requested resource was not found");
        };
        m.body.clear();
        println!("[twilio-sandbox] SMS {sid} redacted");
        let resource = self.resource(m);
        Answer::now(200, resource)
    }

    /// Lists messages as `GET …/Messages.json` would: newest first, optionally filtered by `To`.
    pub fn list_messages(&self, account: &str, headers: &HeaderMap, query: &[(String, String)]) -> Answer {
        if !self.authorised(account, headers) {
            return Answer::error(401, 20003, "Authenticate");
        }
        let problems = contract().check_query(MESSAGES_PATH, "get", query);
        if self.violated(&problems) {
            return Answer::error(400, 20001, &problems.join("; "));
        }
        let get = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let page_size: usize = get("PageSize").and_then(|v| v.parse().ok()).unwrap_or(50).clamp(1, 1000);
        let to = get("To");
        let messages: Vec<Value> = self
            .messages()
            .iter()
            .rev()
            .filter(|m| to.as_ref().is_none_or(|t| *t == m.to))
            .take(page_size)
            .map(|m| self.resource(m))
            .collect();
        let uri = format!("/2010-04-01/Accounts/{}/Messages.json?PageSize={page_size}&Page=0", self.account_sid);
        Answer::now(
            200,
            json!({
                "end": messages.len().saturating_sub(1),
                "first_page_uri": uri,
                "next_page_uri": null,
                "page": 0,
                "page_size": page_size,
                "previous_page_uri": null,
                "start": 0,
                "uri": uri,
                "messages": messages,
            }),
        )
    }

    /// A message as Twilio's API represents it.
    fn resource(&self, m: &SandboxMessage) -> Value {
        let service = m.messaging_service_sid.is_some();
        let segments = callfy_shared::domain::message::segments(&m.body).to_string();
        json!({
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "body": m.body,
            "date_created": m.date_created,
            "date_sent": null,
            "date_updated": m.date_created,
            "direction": "outbound-api",
            "error_code": null,
            "error_message": null,
            "from": m.from,
            "messaging_service_sid": m.messaging_service_sid,
            "num_media": "0",
            // A Messaging Service picks the sender later, so Twilio reports 0 segments at first.
            "num_segments": if service { "0".to_string() } else { segments },
            "price": null,
            "price_unit": "USD",
            "sid": m.sid,
            "status": if service { "accepted" } else { "queued" },
            "subresource_uris": { "media": format!("/2010-04-01/Accounts/{}/Messages/{}/Media.json", self.account_sid, m.sid) },
            "to": m.to,
            "uri": format!("/2010-04-01/Accounts/{}/Messages/{}.json", self.account_sid, m.sid),
        })
    }
}

async fn respond(answer: Answer) -> Response {
    if answer.delay_ms > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(answer.delay_ms)).await;
    }
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(answer.body)).into_response()
}

/// `POST …/Messages/{Sid}.json`: a redaction.
async fn update(
    State(sb): State<Arc<Sandbox>>,
    Path((account, file)): Path<(String, String)>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let Some(sid) = file.strip_suffix(".json") else {
        return respond(Answer::error(404, 20404, "The requested resource was not found")).await;
    };
    let form: Vec<(String, String)> = match serde_urlencoded::from_str(&body) {
        Ok(f) => f,
        Err(e) => return respond(Answer::error(400, 20001, &e.to_string())).await,
    };
    respond(sb.update_message(&account, &headers, sid, &form)).await
}

async fn create(
    State(sb): State<Arc<Sandbox>>,
    Path(account): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let form: Vec<(String, String)> = match serde_urlencoded::from_str(&body) {
        Ok(f) => f,
        Err(e) => return respond(Answer::error(400, 20001, &e.to_string())).await,
    };
    let answer = sb.create_message(&account, &headers, &form);
    let sid = answer.body.get("sid").and_then(Value::as_str).map(str::to_string);
    if sb.auto_status
        && answer.status == 201
        && let Some(sid) = sid
    {
        let sb = Arc::clone(&sb);
        tokio::spawn(async move {
            for status in ["sent", "delivered"] {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                if let Err(e) = sb.report_status(&sid, status, None).await {
                    eprintln!("[twilio-sandbox] status callback for {sid} failed: {e}");
                }
            }
        });
    }
    respond(answer).await
}

/// The text of the first `<Message>` in a TwiML answer.
pub fn twiml_message(xml: &str) -> Option<String> {
    let start = xml.find("<Message>")? + "<Message>".len();
    let end = xml[start..].find("</Message>")? + start;
    let text = &xml[start..end];
    Some(
        text.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

async fn list(
    State(sb): State<Arc<Sandbox>>,
    Path(account): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let query: Vec<(String, String)> = match serde_urlencoded::from_str(query.as_deref().unwrap_or_default()) {
        Ok(q) => q,
        Err(e) => return respond(Answer::error(400, 20001, &e.to_string())).await,
    };
    respond(sb.list_messages(&account, &headers, &query)).await
}

async fn create_call(
    State(sb): State<Arc<Sandbox>>,
    Path(account): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let form: Vec<(String, String)> = match serde_urlencoded::from_str(&body) {
        Ok(f) => f,
        Err(e) => return respond(Answer::error(400, 20001, &e.to_string())).await,
    };
    let answer = sb.create_call(&account, &headers, &form);
    let sid = answer.body.get("sid").and_then(Value::as_str).map(str::to_string);
    if sb.auto_status
        && answer.status == 201
        && let Some(sid) = sid
    {
        let sb = Arc::clone(&sb);
        tokio::spawn(async move { sb.auto_play(&sid).await });
    }
    respond(answer).await
}

async fn list_calls(
    State(sb): State<Arc<Sandbox>>,
    Path(account): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let query: Vec<(String, String)> = match serde_urlencoded::from_str(query.as_deref().unwrap_or_default()) {
        Ok(q) => q,
        Err(e) => return respond(Answer::error(400, 20001, &e.to_string())).await,
    };
    respond(sb.list_calls(&account, &headers, &query)).await
}

/// `GET …/Recordings/{RE}.wav` (the media) and `DELETE …/Recordings/{RE}.json`.
async fn recording_get(
    State(sb): State<Arc<Sandbox>>,
    Path((account, file)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let Some(rec) = file.strip_suffix(".wav") else {
        return respond(Answer::error(404, 20404, "only .wav media is served here")).await;
    };
    match sb.recording_media(&account, &headers, rec) {
        Ok(bytes) => ([("content-type", "audio/x-wav")], bytes).into_response(),
        Err(answer) => respond(answer).await,
    }
}

async fn recording_delete(
    State(sb): State<Arc<Sandbox>>,
    Path((account, file)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let Some(rec) = file.strip_suffix(".json") else {
        return respond(Answer::error(404, 20404, "The requested resource was not found")).await;
    };
    let answer = sb.delete_recording(&account, &headers, rec);
    if answer.status == 204 {
        return StatusCode::NO_CONTENT.into_response();
    }
    respond(answer).await
}

#[derive(Debug, Deserialize)]
struct AnswerRequest {
    #[serde(default = "human")]
    answered_by: String,
}

fn human() -> String {
    "human".into()
}

#[derive(Debug, Deserialize)]
struct DigitsRequest {
    digits: String,
}

#[derive(Debug, Deserialize)]
struct SayRequest {
    text: String,
}

#[derive(Debug, Deserialize)]
struct EndRequest {
    #[serde(default = "completed")]
    status: String,
    #[serde(default)]
    duration: u32,
}

fn completed() -> String {
    "completed".into()
}

fn turn_response(result: Result<crate::sandbox_voice::CallTurn, String>) -> Response {
    match result {
        Ok(turn) => axum::Json(turn).into_response(),
        Err(e) => (StatusCode::BAD_GATEWAY, e).into_response(),
    }
}

/// Routes for the Twilio API and for inspecting the sandbox.
pub fn router(sandbox: Arc<Sandbox>) -> Router {
    Router::new()
        .route("/2010-04-01/Accounts/{account}/Messages.json", post(create).get(list))
        .route("/2010-04-01/Accounts/{account}/Messages/{file}", post(update))
        .route("/2010-04-01/Accounts/{account}/Calls.json", post(create_call).get(list_calls))
        .route("/2010-04-01/Accounts/{account}/Recordings/{file}", get(recording_get).delete(recording_delete))
        .route("/sandbox/calls", get(|State(sb): State<Arc<Sandbox>>| async move { axum::Json(sb.calls()) }))
        .route(
            "/sandbox/calls/{sid}/answer",
            post(|State(sb): State<Arc<Sandbox>>, Path(sid): Path<String>, axum::Json(r): axum::Json<AnswerRequest>| async move {
                turn_response(sb.answer_call(&sid, &r.answered_by).await)
            }),
        )
        .route(
            "/sandbox/calls/{sid}/digits",
            post(|State(sb): State<Arc<Sandbox>>, Path(sid): Path<String>, axum::Json(r): axum::Json<DigitsRequest>| async move {
                if sid == "latest" {
                    if let Some(reply) = sb.press_latest_agent(&r.digits).await {
                        return match reply {
                            Ok(reply) => axum::Json(reply).into_response(),
                            Err(e) => (StatusCode::CONFLICT, e).into_response(),
                        };
                    }
                    return turn_response(sb.press_latest(&r.digits).await);
                }
                turn_response(sb.press(&sid, &r.digits).await)
            }),
        )
        .route(
            "/sandbox/calls/latest/say",
            post(|State(sb): State<Arc<Sandbox>>, axum::Json(r): axum::Json<SayRequest>| async move {
                match sb.say_latest(&r.text).await {
                    Ok(reply) => axum::Json(reply).into_response(),
                    Err(e) => (StatusCode::CONFLICT, e).into_response(),
                }
            }),
        )
        .route(
            "/sandbox/calls/{sid}/end",
            post(|State(sb): State<Arc<Sandbox>>, Path(sid): Path<String>, axum::Json(r): axum::Json<EndRequest>| async move {
                match sb.end_call(&sid, &r.status, r.duration).await {
                    Ok((status, recording)) => {
                        axum::Json(json!({ "callback_status": status, "recording_callback_status": recording }))
                            .into_response()
                    }
                    Err(e) => (StatusCode::BAD_GATEWAY, e).into_response(),
                }
            }),
        )
        .route(
            "/sandbox/messages",
            get(|State(sb): State<Arc<Sandbox>>| async move { axum::Json(sb.messages()) }).delete(
                |State(sb): State<Arc<Sandbox>>| async move {
                    sb.clear();
                    StatusCode::NO_CONTENT
                },
            ),
        )
        .route(
            "/sandbox/inbound",
            post(|State(sb): State<Arc<Sandbox>>, axum::Json(req): axum::Json<InboundRequest>| async move {
                match sb.receive(&req).await {
                    Ok(result) => axum::Json(result).into_response(),
                    Err(e) => (StatusCode::BAD_GATEWAY, e).into_response(),
                }
            }),
        )
        .route(
            "/sandbox/messages/{sid}/status",
            post(
                |State(sb): State<Arc<Sandbox>>,
                 Path(sid): Path<String>,
                 axum::Json(req): axum::Json<StatusRequest>| async move {
                    match sb.report_status(&sid, &req.status, req.error_code).await {
                        Ok(status) => axum::Json(json!({ "callback_status": status })).into_response(),
                        Err(e) => (StatusCode::BAD_GATEWAY, e).into_response(),
                    }
                },
            ),
        )
        .route(
            "/sandbox/faults",
            post(|State(sb): State<Arc<Sandbox>>, axum::Json(f): axum::Json<Fault>| async move {
                sb.inject(f);
                StatusCode::NO_CONTENT
            }),
        )
        .with_state(sandbox)
}
