//! A local stand-in for Twilio's REST API at the network boundary: it checks every request
//! against Twilio's OpenAPI spec, answers as Twilio does, records and prints what was sent.

use crate::contract::contract;
use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use callfy_shared::signature::ct_eq;
use callfy_shared::{Clock, Phone};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

pub const MESSAGES_PATH: &str = "/2010-04-01/Accounts/{AccountSid}/Messages.json";

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
    fn now(status: u16, body: Value) -> Self {
        Self { status, body, delay_ms: 0 }
    }

    fn error(status: u16, code: i64, message: &str) -> Self {
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
    violations: Mutex<Vec<String>>,
    faults: Mutex<VecDeque<Fault>>,
}

impl Sandbox {
    pub fn new(account_sid: &str, auth_token: &str, clock: Arc<dyn Clock>) -> Self {
        Self {
            account_sid: account_sid.into(),
            auth_token: auth_token.into(),
            clock,
            messages: Mutex::default(),
            violations: Mutex::default(),
            faults: Mutex::default(),
        }
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
    }

    fn take_fault(&self) -> Option<Fault> {
        let mut faults = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        let front = faults.front_mut()?;
        front.count = front.count.saturating_sub(1);
        let fault = front.clone();
        if front.count == 0 {
            faults.pop_front();
        }
        Some(fault)
    }

    fn violated(&self, problems: &[String]) -> bool {
        if problems.is_empty() {
            return false;
        }
        self.violations.lock().unwrap_or_else(|e| e.into_inner()).extend(problems.iter().cloned());
        true
    }

    fn authorised(&self, account: &str, headers: &HeaderMap) -> bool {
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
            date_created: self.clock.now().to_rfc2822(),
        };
        let shown_to = Phone::parse(&message.to, None).map(|p| p.masked()).unwrap_or_else(|_| "(invalid)".into());
        println!("[twilio-sandbox] SMS {} to {shown_to}: {}", message.sid, message.body);
        let resource = self.resource(&message);
        self.messages.lock().unwrap_or_else(|e| e.into_inner()).push(message);
        Answer { status: 201, body: resource, delay_ms }
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
    respond(sb.create_message(&account, &headers, &form)).await
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

/// Routes for the Twilio API and for inspecting the sandbox.
pub fn router(sandbox: Arc<Sandbox>) -> Router {
    Router::new()
        .route("/2010-04-01/Accounts/{account}/Messages.json", post(create).get(list))
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
            "/sandbox/faults",
            post(|State(sb): State<Arc<Sandbox>>, axum::Json(f): axum::Json<Fault>| async move {
                sb.inject(f);
                StatusCode::NO_CONTENT
            }),
        )
        .with_state(sandbox)
}
