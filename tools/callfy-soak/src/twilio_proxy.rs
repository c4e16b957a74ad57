//! In front of the Twilio sandbox: a share of the worker's Twilio calls answered with 429 or
//! 5xx, left hanging past the worker's timeout (nothing reaches Twilio), or accepted by Twilio
//! with the answer never arriving. Every message Twilio accepted is noted with the moment its
//! request reached Twilio, the time the checks compare with acknowledged STOPs and orders.

use crate::rng::Rng;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A message Twilio accepted, as seen at the edge.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub sid: String,
    /// When the request was passed on to Twilio (since the campaign began).
    pub posted: Duration,
    /// The message's `Body` as posted (Twilio's copy may be redacted since, by a deletion).
    pub body: String,
}

#[derive(Debug, Default)]
pub struct TwilioFaultCounts {
    pub calls: AtomicU64,
    /// Calls made while the faults were on.
    pub calls_faulty: AtomicU64,
    pub too_many: AtomicU64,
    pub server_errors: AtomicU64,
    pub timeouts: AtomicU64,
    pub accept_then_hang: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TwilioFault {
    TooMany,
    ServerError(u16),
    Timeout,
    AcceptThenHang,
}

pub struct TwilioProxy {
    upstream: OnceLock<String>,
    http: reqwest::Client,
    faults_on: AtomicBool,
    rate: f64,
    /// Longer than the worker's Twilio timeout.
    hang: Duration,
    rng: Rng,
    epoch: Instant,
    pub counts: TwilioFaultCounts,
    accepted: Mutex<Vec<Accepted>>,
}

impl TwilioProxy {
    pub fn new(rate: f64, hang: Duration, seed: u64, epoch: Instant) -> Self {
        Self {
            upstream: OnceLock::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap_or_else(|_| reqwest::Client::new()),
            faults_on: AtomicBool::new(false),
            rate,
            hang,
            rng: Rng::new(seed),
            epoch,
            counts: TwilioFaultCounts::default(),
            accepted: Mutex::default(),
        }
    }

    /// Where the sandbox listens (known once `callfy-local` started).
    pub fn set_upstream(&self, base: &str) {
        let _ = self.upstream.set(base.trim_end_matches('/').to_string());
    }

    pub fn set_faults(&self, on: bool) {
        self.faults_on.store(on, Ordering::SeqCst);
    }

    pub fn accepted(&self) -> Vec<Accepted> {
        self.accepted.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn pick(&self, create: bool) -> Option<TwilioFault> {
        if !self.faults_on.load(Ordering::Relaxed) || !self.rng.chance(self.rate) {
            return None;
        }
        // A quarter each; a lookup (GET) cannot be "accepted", so it times out instead.
        Some(match self.rng.below(4) {
            0 => TwilioFault::TooMany,
            1 => TwilioFault::ServerError(if self.rng.chance(0.5) { 500 } else { 503 }),
            2 => TwilioFault::Timeout,
            _ if create => TwilioFault::AcceptThenHang,
            _ => TwilioFault::Timeout,
        })
    }

    async fn handle(&self, method: Method, uri: &Uri, headers: &HeaderMap, body: Bytes) -> Response {
        self.counts.calls.fetch_add(1, Ordering::Relaxed);
        if self.faults_on.load(Ordering::Relaxed) {
            self.counts.calls_faulty.fetch_add(1, Ordering::Relaxed);
        }
        // A message or a call: both are created by a POST that Twilio may take and not answer.
        let create =
            method == Method::POST && (uri.path().ends_with("/Messages.json") || uri.path().ends_with("/Calls.json"));
        let fault = self.pick(create);
        match fault {
            Some(TwilioFault::TooMany) => {
                self.counts.too_many.fetch_add(1, Ordering::Relaxed);
                return twilio_error(429, 20429, "Too Many Requests");
            }
            Some(TwilioFault::ServerError(status)) => {
                self.counts.server_errors.fetch_add(1, Ordering::Relaxed);
                return twilio_error(status, 20500, "Internal Server Error");
            }
            Some(TwilioFault::Timeout) => {
                self.counts.timeouts.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(self.hang).await;
                return twilio_error(504, 20504, "Gateway Timeout");
            }
            Some(TwilioFault::AcceptThenHang) => {
                self.counts.accept_then_hang.fetch_add(1, Ordering::Relaxed);
            }
            None => {}
        }
        let Some(upstream) = self.upstream.get() else {
            return twilio_error(503, 20500, "sandbox not started");
        };
        let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let mut req = self.http.request(method, format!("{upstream}{path}"));
        for (name, value) in headers {
            if !matches!(name.as_str(), "host" | "content-length" | "connection" | "transfer-encoding") {
                req = req.header(name, value);
            }
        }
        let posted = self.epoch.elapsed();
        let text = if create { form_value(&body, "Body").unwrap_or_default() } else { String::new() };
        let resp = match req.body(body).send().await {
            Ok(r) => r,
            Err(e) => return (StatusCode::BAD_GATEWAY, format!("sandbox: {e}")).into_response(),
        };
        let status = resp.status();
        let content_type = resp.headers().get("content-type").cloned();
        let bytes = resp.bytes().await.unwrap_or_default();
        let hang = fault == Some(TwilioFault::AcceptThenHang);
        if create && status.as_u16() == 201 {
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            let sid = v.get("sid").and_then(|x| x.as_str()).unwrap_or_default().to_string();
            self.accepted.lock().unwrap_or_else(|e| e.into_inner()).push(Accepted { sid, posted, body: text });
        }
        if hang {
            // Twilio took the message; its answer never reaches the worker.
            tokio::time::sleep(self.hang).await;
            return twilio_error(504, 20504, "Gateway Timeout");
        }
        let mut response = (status, bytes).into_response();
        if let Some(ct) = content_type {
            response.headers_mut().insert("content-type", ct);
        }
        response
    }
}

/// One field of a form-encoded body.
fn form_value(body: &[u8], name: &str) -> Option<String> {
    let body = std::str::from_utf8(body).ok()?;
    body.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (decode(k) == name).then(|| decode(v))
    })
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = || s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex()) {
            (b'+', _) => out.push(b' '),
            (b'%', Some(v)) => {
                out.push(v);
                i += 2;
            }
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn twilio_error(status: u16, code: i64, message: &str) -> Response {
    let body = serde_json::json!({
        "code": code, "message": message, "status": status,
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
    });
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(body)).into_response()
}

async fn route(
    State(proxy): State<Arc<TwilioProxy>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    proxy.handle(method, &uri, &headers, body).await
}

/// Serves the proxy on 127.0.0.1 (an ephemeral port); returns its base URL.
pub async fn serve(proxy: Arc<TwilioProxy>) -> std::io::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().fallback(route).with_state(proxy);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("callfy-soak: the Twilio fault proxy stopped: {e}");
        }
    });
    Ok(format!("http://{addr}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_form_field_is_decoded() {
        let body = b"To=%2B12015550100&Body=Soak%3A+your+cart+https%3A%2F%2Fx.example%2Fr%2Fsc000001%2F&From=x";
        assert_eq!(form_value(body, "Body").as_deref(), Some("Soak: your cart https://x.example/r/sc000001/"));
        assert_eq!(form_value(body, "To").as_deref(), Some("+12015550100"));
        assert_eq!(form_value(body, "Nope"), None);
        assert_eq!(decode("100%"), "100%");
    }
}
