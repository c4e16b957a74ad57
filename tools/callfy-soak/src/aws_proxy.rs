//! The network edge in front of moto: a plain HTTP proxy that forwards every AWS call, except a
//! share of DynamoDB calls it answers with DynamoDB's throttling errors and a share of SQS calls
//! it answers with SQS's 5xx, before they reach moto (so nothing of a refused call is applied).
//! It also notes when each step claim (the worker's `TransactWriteItems` on `STEP#…`) was
//! forwarded, so a send can be traced to the claim that allowed it.
//!
//! Lost answers: a share of DynamoDB writes that can only be applied once (`TransactWriteItems`,
//! and `UpdateItem` / `PutItem` with a condition) and of SQS `DeleteMessage` calls are forwarded,
//! applied by moto, and then answered with a 500 or a timeout (a 504 after a wait) instead of
//! moto's answer. A transaction retried by the SDK carries the same `ClientRequestToken`, and
//! DynamoDB answers such a retry with success without applying it again (moto does not know
//! tokens): the proxy answers those retries as DynamoDB would.

use crate::rng::Rng;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Which service a request is for, from its `X-Amz-Target` (JSON protocols) or `Action=` (query).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    DynamoDb,
    Sqs,
    Other,
}

pub fn service_of(target: Option<&str>, body: &[u8]) -> Service {
    match target {
        Some(t) if t.starts_with("DynamoDB_") => Service::DynamoDb,
        Some(t) if t.starts_with("AmazonSQS.") => Service::Sqs,
        Some(_) => Service::Other,
        None if body.starts_with(b"Action=") || body.windows(8).any(|w| w == b"&Action=") => Service::Sqs,
        None => Service::Other,
    }
}

/// A step claim moto accepted.
#[derive(Debug, Clone)]
pub struct ClaimSeen {
    /// `K#{merchant}#{cart}`.
    pub pk: String,
    /// `STEP#{n}`.
    pub sk: String,
    /// When the proxy forwarded it to moto (since the campaign began).
    pub forwarded: Duration,
}

#[derive(Debug, Default)]
pub struct AwsFaultCounts {
    pub dynamodb_calls: AtomicU64,
    pub dynamodb_throttled: AtomicU64,
    pub sqs_calls: AtomicU64,
    pub sqs_5xx: AtomicU64,
    pub upstream_errors: AtomicU64,
    /// Calls made while the faults were on (the share's denominator).
    pub dynamodb_calls_faulty: AtomicU64,
    pub sqs_calls_faulty: AtomicU64,
    /// Calls that could lose their answer while the faults were on (the lost-answer denominators).
    pub dynamodb_once_calls: AtomicU64,
    pub sqs_delete_calls: AtomicU64,
    /// Applied by moto, then answered 500 / a timeout.
    pub lost_transact: AtomicU64,
    pub lost_conditional: AtomicU64,
    pub lost_sqs_delete: AtomicU64,
    /// Of the lost answers, those given as a timeout (the rest as a 500).
    pub lost_as_timeout: AtomicU64,
    /// Retries of a committed transaction (same token) answered as DynamoDB does, without moto.
    pub token_replays: AtomicU64,
    /// Writes made while the faults were on (the kills' denominator), and those after which the
    /// caller was killed (the answer held until the caller is gone).
    pub write_calls: AtomicU64,
    pub kills: AtomicU64,
    /// Held answers whose caller went away (its connection dropped), and how long they were
    /// held in all (milliseconds): a caller that gives up by itself is not killed.
    pub kills_released: AtomicU64,
    pub kills_held_ms: AtomicU64,
}

/// Notes when a held answer's caller goes away (hyper drops the handler with the connection).
struct Held<'a> {
    counts: &'a AwsFaultCounts,
    since: Instant,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.counts.kills_released.fetch_add(1, Ordering::Relaxed);
        let ms = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.counts.kills_held_ms.fetch_add(ms, Ordering::Relaxed);
    }
}

/// A call that changes something, after which a kill leaves the invocation between two steps.
fn is_write(op: &str) -> bool {
    matches!(
        op,
        "TransactWriteItems"
            | "UpdateItem"
            | "PutItem"
            | "DeleteItem"
            | "BatchWriteItem"
            | "SendMessage"
            | "SendMessageBatch"
            | "DeleteMessage"
            | "DeleteMessageBatch"
            | "ChangeMessageVisibility"
    )
}

/// The operation's name: from `X-Amz-Target`, or the query protocol's `Action=`.
fn op_name(target: Option<&str>, body: &[u8]) -> Option<String> {
    if let Some(t) = target {
        return Some(t.rsplit('.').next().unwrap_or(t).to_string());
    }
    let text = std::str::from_utf8(body).ok()?;
    let action = text.split('&').find_map(|kv| kv.strip_prefix("Action="))?;
    Some(action.to_string())
}

/// The shares of calls faulted while faults are on.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rates {
    /// DynamoDB calls throttled; SQS calls answered 5xx (neither applied).
    pub dynamodb_rate: f64,
    pub sqs_rate: f64,
    /// Once-only DynamoDB writes and SQS deletes applied with their answer lost.
    pub dynamodb_lost_rate: f64,
    pub sqs_lost_rate: f64,
    /// Writes after which the calling function is killed.
    pub kill_rate: f64,
}

/// What kind of call can lose its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Once {
    Transact,
    Conditional,
    SqsDelete,
}

fn once_kind(service: Service, target: Option<&str>, body: &[u8]) -> Option<Once> {
    let op = target.map(|t| t.rsplit('.').next().unwrap_or(t));
    match (service, op) {
        (Service::DynamoDb, Some("TransactWriteItems")) => Some(Once::Transact),
        (Service::DynamoDb, Some("UpdateItem" | "PutItem"))
            if body.windows(21).any(|w| w == b"\"ConditionExpression\"") =>
        {
            Some(Once::Conditional)
        }
        (Service::Sqs, Some("DeleteMessage")) => Some(Once::SqsDelete),
        (Service::Sqs, None) if body.starts_with(b"Action=DeleteMessage&") => Some(Once::SqsDelete),
        _ => None,
    }
}

/// A transaction's `ClientRequestToken` (the SDK fills one in and keeps it across its retries).
fn request_token(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    Some(v.get("ClientRequestToken")?.as_str()?.to_string())
}

pub struct AwsProxy {
    upstream: String,
    http: reqwest::Client,
    faults_on: AtomicBool,
    dynamodb_rate: f64,
    sqs_rate: f64,
    dynamodb_lost_rate: f64,
    sqs_lost_rate: f64,
    /// How long a lost answer given as a timeout keeps the caller waiting before its 504.
    lost_wait: Duration,
    kill_rate: f64,
    /// Kills by the operation applied just before.
    kills_by_op: Mutex<HashMap<String, u64>>,
    /// Tokens of committed transactions whose answer was lost.
    committed_tokens: Mutex<std::collections::HashSet<String>>,
    rng: Rng,
    epoch: Instant,
    pub counts: AwsFaultCounts,
    claims: Mutex<Vec<ClaimSeen>>,
    /// Per `X-Amz-Target` operation: calls forwarded.
    ops: Mutex<HashMap<String, u64>>,
}

impl AwsProxy {
    pub fn new(upstream: &str, rates: Rates, seed: u64, epoch: Instant) -> Self {
        let Rates { dynamodb_rate, sqs_rate, dynamodb_lost_rate, sqs_lost_rate, kill_rate } = rates;
        Self {
            upstream: upstream.trim_end_matches('/').to_string(),
            // Few idle connections: moto's server holds a thread (and its memory) per connection,
            // and it applies DynamoDB calls one at a time anyway.
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(8)
                .pool_idle_timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_else(|_| reqwest::Client::new()),
            faults_on: AtomicBool::new(false),
            dynamodb_rate,
            sqs_rate,
            dynamodb_lost_rate,
            sqs_lost_rate,
            lost_wait: Duration::from_millis(1_500),
            kill_rate,
            kills_by_op: Mutex::default(),
            committed_tokens: Mutex::default(),
            rng: Rng::new(seed),
            epoch,
            counts: AwsFaultCounts::default(),
            claims: Mutex::default(),
            ops: Mutex::default(),
        }
    }

    pub fn set_faults(&self, on: bool) {
        self.faults_on.store(on, Ordering::SeqCst);
    }

    pub fn claims(&self) -> Vec<ClaimSeen> {
        self.claims.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Kills by the operation applied just before, most frequent first.
    pub fn kills_by_op(&self) -> Vec<(String, u64)> {
        let mut v: Vec<_> =
            self.kills_by_op.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|(k, v)| (k.clone(), *v)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    }

    pub fn ops(&self) -> Vec<(String, u64)> {
        let mut v: Vec<_> =
            self.ops.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|(k, v)| (k.clone(), *v)).collect();
        v.sort_by_key(|b| std::cmp::Reverse(b.1));
        v
    }

    /// The fault to answer instead of forwarding, if any.
    fn fault(&self, service: Service) -> Option<Response> {
        if !self.faults_on.load(Ordering::Relaxed) {
            return None;
        }
        match service {
            Service::DynamoDb if self.rng.chance(self.dynamodb_rate) => {
                self.counts.dynamodb_throttled.fetch_add(1, Ordering::Relaxed);
                // Both are throttling errors the SDK's standard retry classifier retries.
                let kind =
                    if self.rng.chance(0.5) { "ThrottlingException" } else { "ProvisionedThroughputExceededException" };
                let body = serde_json::json!({
                    "__type": format!("com.amazonaws.dynamodb.v20120810#{kind}"),
                    "message": "Rate exceeded",
                });
                Some(aws_json(StatusCode::BAD_REQUEST, &body, "application/x-amz-json-1.0"))
            }
            Service::Sqs if self.rng.chance(self.sqs_rate) => {
                self.counts.sqs_5xx.fetch_add(1, Ordering::Relaxed);
                let status = if self.rng.chance(0.5) {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                let code =
                    if status == StatusCode::INTERNAL_SERVER_ERROR { "InternalError" } else { "ServiceUnavailable" };
                let body = serde_json::json!({
                    "__type": format!("com.amazonaws.sqs#{code}"),
                    "message": "We encountered an internal error. Please try again.",
                });
                let mut r = aws_json(status, &body, "application/x-amz-json-1.0");
                if let Ok(v) = HeaderValue::from_str(&format!("{code};Receiver")) {
                    r.headers_mut().insert("x-amzn-query-error", v);
                }
                Some(r)
            }
            _ => None,
        }
    }

    async fn forward(&self, method: Method, uri: &Uri, headers: &HeaderMap, body: Bytes) -> Response {
        let target = headers.get("x-amz-target").and_then(|v| v.to_str().ok()).map(str::to_string);
        let service = service_of(target.as_deref(), &body);
        match service {
            Service::DynamoDb => self.counts.dynamodb_calls.fetch_add(1, Ordering::Relaxed),
            Service::Sqs => self.counts.sqs_calls.fetch_add(1, Ordering::Relaxed),
            Service::Other => 0,
        };
        if self.faults_on.load(Ordering::Relaxed) {
            match service {
                Service::DynamoDb => self.counts.dynamodb_calls_faulty.fetch_add(1, Ordering::Relaxed),
                Service::Sqs => self.counts.sqs_calls_faulty.fetch_add(1, Ordering::Relaxed),
                Service::Other => 0,
            };
        }
        if let Some(fault) = self.fault(service) {
            return fault;
        }
        let once = once_kind(service, target.as_deref(), &body);
        let token = (once == Some(Once::Transact)).then(|| request_token(&body)).flatten();
        if let Some(t) = &token
            && self.committed_tokens.lock().unwrap_or_else(|e| e.into_inner()).contains(t)
        {
            // DynamoDB: a transaction with a token it already committed succeeds without effect.
            self.counts.token_replays.fetch_add(1, Ordering::Relaxed);
            return aws_json(StatusCode::OK, &serde_json::json!({}), "application/x-amz-json-1.0");
        }
        let op = op_name(target.as_deref(), &body);
        let kill = match op.as_deref() {
            Some(o) if is_write(o) && self.faults_on.load(Ordering::Relaxed) => {
                self.counts.write_calls.fetch_add(1, Ordering::Relaxed);
                self.rng.chance(self.kill_rate)
            }
            _ => false,
        };
        let lose = match once {
            Some(kind) if self.faults_on.load(Ordering::Relaxed) => {
                let rate = if kind == Once::SqsDelete {
                    self.counts.sqs_delete_calls.fetch_add(1, Ordering::Relaxed);
                    self.sqs_lost_rate
                } else {
                    self.counts.dynamodb_once_calls.fetch_add(1, Ordering::Relaxed);
                    self.dynamodb_lost_rate
                };
                self.rng.chance(rate).then_some(kind)
            }
            _ => None,
        };
        if let Some(t) = &target {
            let op = t.rsplit('.').next().unwrap_or(t).to_string();
            *self.ops.lock().unwrap_or_else(|e| e.into_inner()).entry(op).or_default() += 1;
        }
        let claim = (service == Service::DynamoDb
            && target.as_deref().is_some_and(|t| t.ends_with(".TransactWriteItems")))
        .then(|| step_claim_key(&body))
        .flatten();
        let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let mut req = self.http.request(method, format!("{}{path}", self.upstream));
        for (name, value) in headers {
            if !matches!(name.as_str(), "host" | "content-length" | "connection" | "transfer-encoding") {
                req = req.header(name, value);
            }
        }
        let forwarded = self.epoch.elapsed();
        let resp = match req.body(body).send().await {
            Ok(r) => r,
            Err(e) => {
                self.counts.upstream_errors.fetch_add(1, Ordering::Relaxed);
                return (StatusCode::BAD_GATEWAY, format!("upstream: {e}")).into_response();
            }
        };
        let status = resp.status();
        let mut out_headers = HeaderMap::new();
        for (name, value) in resp.headers() {
            if !matches!(name.as_str(), "content-length" | "connection" | "transfer-encoding") {
                out_headers.append(name.clone(), value.clone());
            }
        }
        let bytes = resp.bytes().await.unwrap_or_default();
        if status.is_success()
            && let Some((pk, sk)) = claim
        {
            self.claims.lock().unwrap_or_else(|e| e.into_inner()).push(ClaimSeen { pk, sk, forwarded });
        }
        if kill && status.is_success() {
            // Applied; the invocation that made the call dies before it hears so (the Lambda's
            // timeout ends it while it waits; its caller sees no answer).
            self.counts.kills.fetch_add(1, Ordering::Relaxed);
            let op = op.unwrap_or_default();
            *self.kills_by_op.lock().unwrap_or_else(|e| e.into_inner()).entry(op).or_default() += 1;
            let _held = Held { counts: &self.counts, since: Instant::now() };
            std::future::pending::<()>().await;
        }
        if let Some(kind) = lose
            && status.is_success()
        {
            return self.lose_answer(kind, service, token).await;
        }
        let mut response = (status, bytes).into_response();
        *response.headers_mut() = out_headers;
        response
    }

    /// moto applied the call; the caller gets a 500 or, after a wait, a 504 instead.
    async fn lose_answer(&self, kind: Once, service: Service, token: Option<String>) -> Response {
        let counter = match kind {
            Once::Transact => &self.counts.lost_transact,
            Once::Conditional => &self.counts.lost_conditional,
            Once::SqsDelete => &self.counts.lost_sqs_delete,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if let Some(t) = token {
            self.committed_tokens.lock().unwrap_or_else(|e| e.into_inner()).insert(t);
        }
        let timeout = self.rng.chance(0.5);
        if timeout {
            self.counts.lost_as_timeout.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(self.lost_wait).await;
            return (StatusCode::GATEWAY_TIMEOUT, "").into_response();
        }
        if service == Service::Sqs {
            let body = serde_json::json!({
                "__type": "com.amazonaws.sqs#InternalError",
                "message": "We encountered an internal error. Please try again.",
            });
            let mut r = aws_json(StatusCode::INTERNAL_SERVER_ERROR, &body, "application/x-amz-json-1.0");
            r.headers_mut().insert("x-amzn-query-error", HeaderValue::from_static("InternalError;Receiver"));
            return r;
        }
        let body = serde_json::json!({
            "__type": "com.amazonaws.dynamodb.v20120810#InternalServerError",
            "message": "Internal server error",
        });
        aws_json(StatusCode::INTERNAL_SERVER_ERROR, &body, "application/x-amz-json-1.0")
    }
}

/// The (pk, sk) of a step claim: a transaction whose first item updates a `STEP#…` item and
/// sets a lease (the claim; a send's finishing write sets none).
pub fn step_claim_key(body: &[u8]) -> Option<(String, String)> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let update = v.get("TransactItems")?.get(0)?.get("Update")?;
    let key = update.get("Key")?;
    let sk = key.get("sk")?.get("S")?.as_str()?;
    let pk = key.get("pk")?.get("S")?.as_str()?;
    let values = update.get("ExpressionAttributeValues")?;
    (sk.starts_with("STEP#") && values.get(":lease").is_some()).then(|| (pk.to_string(), sk.to_string()))
}

fn aws_json(status: StatusCode, body: &serde_json::Value, content_type: &'static str) -> Response {
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut().insert("content-type", HeaderValue::from_static(content_type));
    r.headers_mut().insert("x-amzn-requestid", HeaderValue::from_static("callfy-soak-fault"));
    r
}

async fn handle(
    State(proxy): State<Arc<AwsProxy>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    proxy.forward(method, &uri, &headers, body).await
}

/// Serves the proxy on 127.0.0.1 (an ephemeral port); returns its base URL.
pub async fn serve(proxy: Arc<AwsProxy>) -> std::io::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().fallback(handle).with_state(proxy);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("callfy-soak: the AWS fault proxy stopped: {e}");
        }
    });
    Ok(format!("http://{addr}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_are_told_apart() {
        assert_eq!(service_of(Some("DynamoDB_20120810.GetItem"), b"{}"), Service::DynamoDb);
        assert_eq!(service_of(Some("AmazonSQS.ReceiveMessage"), b"{}"), Service::Sqs);
        assert_eq!(service_of(None, b"Action=SendMessage&QueueUrl=x"), Service::Sqs);
        assert_eq!(service_of(None, b""), Service::Other);
    }

    #[test]
    fn calls_that_can_lose_their_answer() {
        let t = |op: &str| format!("DynamoDB_20120810.{op}");
        let cond = br#"{"TableName":"t","ConditionExpression":"attribute_not_exists(pk)"}"#;
        assert_eq!(once_kind(Service::DynamoDb, Some(&t("TransactWriteItems")), b"{}"), Some(Once::Transact));
        assert_eq!(once_kind(Service::DynamoDb, Some(&t("UpdateItem")), cond), Some(Once::Conditional));
        assert_eq!(once_kind(Service::DynamoDb, Some(&t("PutItem")), b"{}"), None);
        assert_eq!(once_kind(Service::DynamoDb, Some(&t("GetItem")), cond), None);
        assert_eq!(once_kind(Service::Sqs, Some("AmazonSQS.DeleteMessage"), b"{}"), Some(Once::SqsDelete));
        assert_eq!(once_kind(Service::Sqs, None, b"Action=DeleteMessage&QueueUrl=x"), Some(Once::SqsDelete));
        assert_eq!(request_token(br#"{"ClientRequestToken":"abc"}"#).as_deref(), Some("abc"));
        assert_eq!(op_name(None, b"Action=DeleteMessage&QueueUrl=x").as_deref(), Some("DeleteMessage"));
        assert_eq!(op_name(Some("AmazonSQS.SendMessage"), b"{}").as_deref(), Some("SendMessage"));
        assert!(is_write("TransactWriteItems") && !is_write("GetItem") && !is_write("ReceiveMessage"));
    }

    #[test]
    fn step_claims_are_recognised() {
        let claim = serde_json::json!({ "TransactItems": [
            { "Update": { "Key": { "pk": { "S": "K#m#c1" }, "sk": { "S": "STEP#0" } },
              "ExpressionAttributeValues": { ":lease": { "S": "2026" } } } },
            { "ConditionCheck": {} } ] });
        assert_eq!(step_claim_key(claim.to_string().as_bytes()), Some(("K#m#c1".to_string(), "STEP#0".to_string())));
        let finish = serde_json::json!({ "TransactItems": [
            { "Update": { "Key": { "pk": { "S": "K#m#c1" }, "sk": { "S": "STEP#0" } },
              "ExpressionAttributeValues": { ":state": { "S": "sent" } } } } ] });
        assert_eq!(step_claim_key(finish.to_string().as_bytes()), None);
    }
}
