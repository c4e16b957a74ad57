//! A local stand-in for Twilio's REST API at the network boundary: it checks every request
//! against Twilio's OpenAPI spec, answers as Twilio does, records and prints what was sent.

use crate::contract::contract;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use callfy_shared::signature::ct_eq;
use callfy_shared::{Clock, Phone};
use serde::{Deserialize, Serialize};
use serde_json::json;
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

/// An error the sandbox returns for the next request(s), to exercise retries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fault {
    pub status: u16,
    pub code: i64,
    #[serde(default = "one")]
    pub count: u32,
}

fn one() -> u32 {
    1
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

    fn authorised(&self, headers: &HeaderMap) -> bool {
        let Some(encoded) =
            headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Basic "))
        else {
            return false;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded) else {
            return false;
        };
        let expected = format!("{}:{}", self.account_sid, self.auth_token);
        ct_eq(&decoded, expected.as_bytes())
    }

    /// Creates a message as `POST …/Messages.json` would, or returns Twilio's error document.
    pub fn create_message(
        &self,
        account: &str,
        headers: &HeaderMap,
        form: &[(String, String)],
    ) -> (u16, serde_json::Value) {
        if !self.authorised(headers) || account != self.account_sid {
            return twilio_error(401, 20003, "Authenticate");
        }
        let problems = contract().check_form(MESSAGES_PATH, "post", form);
        if !problems.is_empty() {
            self.violations.lock().unwrap_or_else(|e| e.into_inner()).extend(problems.iter().cloned());
            return twilio_error(400, 21601, &problems.join("; "));
        }
        let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let (to, body) = (get("To").unwrap_or_default(), get("Body"));
        let (from, service) = (get("From"), get("MessagingServiceSid"));
        if from.is_none() && service.is_none() {
            return twilio_error(
                400,
                21603,
                "A 'From' or 'MessagingServiceSid' parameter is required to send a message.",
            );
        }
        let Some(body) = body.filter(|b| !b.is_empty()) else {
            return twilio_error(400, 21602, "Message body is required.");
        };
        if body.chars().count() > 1600 {
            return twilio_error(400, 21617, "The concatenated message body exceeds the 1600 character limit.");
        }
        if let Some(fault) = self.take_fault() {
            return twilio_error(fault.status, fault.code, "Injected by the sandbox");
        }
        if let Some((_, code, message)) = MAGIC_TO.iter().find(|(n, _, _)| *n == to) {
            return twilio_error(400, *code, message);
        }
        let sid = format!("SM{}", uuid::Uuid::new_v4().simple());
        let now = self.clock.now().to_rfc2822();
        let message = SandboxMessage {
            sid: sid.clone(),
            to: to.clone(),
            from: from.clone(),
            messaging_service_sid: service.clone(),
            body: body.clone(),
            status_callback: get("StatusCallback"),
            date_created: now.clone(),
        };
        let shown_to = Phone::parse(&to, None).map(|p| p.masked()).unwrap_or_else(|_| "(invalid)".into());
        println!("[twilio-sandbox] SMS {sid} to {shown_to}: {body}");
        self.messages.lock().unwrap_or_else(|e| e.into_inner()).push(message);
        let segments = callfy_shared::domain::message::segments(&body).to_string();
        let resource = json!({
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "body": body,
            "date_created": now,
            "date_sent": null,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": null,
            "error_message": null,
            "from": from,
            "messaging_service_sid": service,
            "num_media": "0",
            "num_segments": if service.is_some() { "0".to_string() } else { segments },
            "price": null,
            "price_unit": "USD",
            "sid": sid,
            "status": if service.is_some() { "accepted" } else { "queued" },
            "subresource_uris": { "media": format!("/2010-04-01/Accounts/{}/Messages/{sid}/Media.json", self.account_sid) },
            "to": to,
            "uri": format!("/2010-04-01/Accounts/{}/Messages/{sid}.json", self.account_sid),
        });
        (201, resource)
    }
}

fn twilio_error(status: u16, code: i64, message: &str) -> (u16, serde_json::Value) {
    (
        status,
        json!({ "code": code, "message": message, "more_info": format!("https://www.twilio.com/docs/errors/{code}"), "status": status }),
    )
}

fn respond(status: u16, body: serde_json::Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(body)).into_response()
}

async fn create(
    State(sb): State<Arc<Sandbox>>,
    Path(account): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let account = account.trim_end_matches(".json").to_string();
    let form: Vec<(String, String)> = match serde_urlencoded::from_str(&body) {
        Ok(f) => f,
        Err(e) => {
            return respond(400, json!({ "code": 20001, "message": e.to_string(), "status": 400 }));
        }
    };
    let (status, body) = sb.create_message(&account, &headers, &form);
    respond(status, body)
}

/// Routes for the Twilio API and for inspecting the sandbox.
pub fn router(sandbox: Arc<Sandbox>) -> Router {
    Router::new()
        .route("/2010-04-01/Accounts/{account}/Messages.json", post(create))
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
