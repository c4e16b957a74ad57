//! Cold-start benchmark: runs a Lambda binary against a local Lambda Runtime API, as Lambda
//! would, and measures init (spawn → first `/invocation/next`), the first invocation, and peak
//! memory (VmHWM). The hello-world Lambda in `src/bin/hello-lambda.rs` is the baseline.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::path::{Path as FsPath, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::sync::Notify;

#[derive(Debug, Error)]
pub enum BenchError {
    #[error("could not start {0}: {1}")]
    Spawn(String, std::io::Error),
    #[error("{0} did not finish its first invocation within {1:?}")]
    Timeout(String, Duration),
    #[error("{0} reported an error: {1}")]
    Function(String, String),
    #[error("runtime API: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measurement {
    /// Spawn to the first `GET /runtime/invocation/next`.
    pub init: Duration,
    /// Event handed over to response received.
    pub first_invoke: Duration,
    /// Peak resident memory, KiB.
    pub peak_rss_kib: u64,
}

#[derive(Default)]
struct Run {
    /// The events to hand over, in order; the process is measured after the last response.
    events: Vec<Vec<u8>>,
    served: usize,
    answered: usize,
    first_next: Option<Instant>,
    /// The first invocation's response.
    responded: Option<Instant>,
    /// The first answer that was an error (any invocation's, `failed_answer`).
    failure: Option<String>,
    error: Option<String>,
}

#[derive(Clone)]
struct Api {
    run: Arc<Mutex<Run>>,
    done: Arc<Notify>,
}

const REQUEST_ID: &str = "8476a536-e9f4-11e8-9739-2dfe598c3fcd";

async fn next(State(api): State<Api>) -> Response {
    let event = {
        let mut run = api.run.lock().unwrap_or_else(|e| e.into_inner());
        run.first_next.get_or_insert_with(Instant::now);
        let next = run.events.get(run.served).cloned();
        if next.is_some() {
            run.served += 1;
        }
        next
    };
    let Some(event) = event else {
        // Lambda freezes the process here; we keep it waiting until it is killed.
        std::future::pending::<()>().await;
        return StatusCode::NO_CONTENT.into_response();
    };
    let mut headers = HeaderMap::new();
    let deadline = chrono::Utc::now().timestamp_millis() + 30_000;
    headers.insert("lambda-runtime-aws-request-id", HeaderValue::from_static(REQUEST_ID));
    headers.insert("lambda-runtime-deadline-ms", HeaderValue::from(deadline));
    headers.insert(
        "lambda-runtime-invoked-function-arn",
        HeaderValue::from_static("arn:aws:lambda:us-east-1:123456789012:function:bench"),
    );
    headers.insert("lambda-runtime-trace-id", HeaderValue::from_static("Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700"));
    (StatusCode::OK, headers, event).into_response()
}

async fn response(State(api): State<Api>, Path(_id): Path<String>, body: axum::body::Bytes) -> StatusCode {
    let mut run = api.run.lock().unwrap_or_else(|e| e.into_inner());
    run.answered += 1;
    if run.responded.is_none() {
        run.responded = Some(Instant::now());
    }
    if run.failure.is_none() {
        let first = run.answered == 1;
        run.failure = failed_answer(&body, first);
    }
    if run.answered == run.events.len() {
        api.done.notify_one();
    }
    StatusCode::ACCEPTED
}

async fn error(State(api): State<Api>, body: axum::body::Bytes) -> StatusCode {
    let mut run = api.run.lock().unwrap_or_else(|e| e.into_inner());
    run.error = Some(String::from_utf8_lossy(&body).to_string());
    api.done.notify_one();
    StatusCode::ACCEPTED
}

/// Reads the process's peak resident set (Linux `/proc/PID/status` VmHWM).
pub fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Runs `binary` once as a fresh Lambda execution environment and measures it.
pub async fn measure(binary: &FsPath, env: &[(String, String)], event: &[u8]) -> Result<Measurement, BenchError> {
    measure_process(&[binary.as_os_str().into()], env, vec![event.to_vec()]).await
}

/// Runs `command` (a binary, or an interpreter and its script) as one Lambda execution
/// environment that gets `events` one after the other (warm invocations), and measures init,
/// the first invocation, and the peak resident set after the last one.
pub async fn measure_process(
    command: &[std::ffi::OsString],
    env: &[(String, String)],
    events: Vec<Vec<u8>>,
) -> Result<Measurement, BenchError> {
    let binary = FsPath::new(command.last().map(|c| c.as_os_str()).unwrap_or_default());
    let name = binary.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let limit = Duration::from_secs(30 + events.len() as u64 / 10);
    let api = Api { run: Arc::new(Mutex::new(Run { events, ..Default::default() })), done: Arc::new(Notify::new()) };
    let app = Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route("/2018-06-01/runtime/invocation/{id}/response", post(response))
        .route("/2018-06-01/runtime/invocation/{id}/error", post(|s: State<Api>, b: axum::body::Bytes| error(s, b)))
        .route("/2018-06-01/runtime/init/error", post(error))
        .with_state(api.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let start = Instant::now();
    let mut child: Child = Command::new(&command[0])
        .args(&command[1..])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", &name)
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/bench")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| BenchError::Spawn(name.clone(), e))?;
    let waited = tokio::time::timeout(limit, api.done.notified()).await;
    let rss = peak_rss_kib(child.id());
    let _ = child.kill();
    let _ = child.wait();
    server.abort();
    if waited.is_err() {
        return Err(BenchError::Timeout(name, limit));
    }
    let run = api.run.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(e) = &run.error {
        return Err(BenchError::Function(name, e.clone()));
    }
    let (Some(first_next), Some(responded)) = (run.first_next, run.responded) else {
        return Err(BenchError::Function(name, "no response".into()));
    };
    if let Some(failure) = &run.failure {
        return Err(BenchError::Function(name, failure.clone()));
    }
    Ok(Measurement { init: first_next - start, first_invoke: responded - first_next, peak_rss_kib: rss })
}

/// What makes an answer a failure, so a process that only reached an error path is not
/// measured: an SQS batch answer with failed items, an HTTP 5xx, or a 4xx to the first event
/// (later ones may meet a limit by design: the consent API's rate limit, for one).
fn failed_answer(body: &[u8], first: bool) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let worst = if first { 400 } else { 500 };
    if let Some(status) = v.get("statusCode").and_then(serde_json::Value::as_u64).filter(|s| *s >= worst) {
        return Some(format!("answered HTTP {status}"));
    }
    let failures = v.get("batchItemFailures").and_then(serde_json::Value::as_array)?;
    (!failures.is_empty()).then(|| format!("{} failed batch items", failures.len()))
}

/// The median of each figure over the runs.
pub fn median(runs: &[Measurement]) -> Option<Measurement> {
    if runs.is_empty() {
        return None;
    }
    let mid = runs.len() / 2;
    let pick = |mut v: Vec<u128>| {
        v.sort_unstable();
        v[mid]
    };
    Some(Measurement {
        init: Duration::from_micros(pick(runs.iter().map(|r| r.init.as_micros()).collect()) as u64),
        first_invoke: Duration::from_micros(pick(runs.iter().map(|r| r.first_invoke.as_micros()).collect()) as u64),
        peak_rss_kib: pick(runs.iter().map(|r| u128::from(r.peak_rss_kib)).collect()) as u64,
    })
}

/// Where cargo put a binary of this workspace for `profile`.
pub fn binary(target_dir: &FsPath, profile: &str, name: &str) -> PathBuf {
    target_dir.join(profile).join(name)
}

/// Latency figures of a series of timed calls.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    pub p50: Duration,
    pub p99: Duration,
    pub mean: Duration,
    pub samples: usize,
}

impl Latency {
    /// Nearest-rank percentiles (the p-th percentile is a measured value, never interpolated).
    pub fn of(samples: &[Duration]) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        let rank = |p: usize| sorted[(sorted.len() * p).div_ceil(100).clamp(1, sorted.len()) - 1];
        let total: Duration = sorted.iter().sum();
        Some(Self { p50: rank(50), p99: rank(99), mean: total / sorted.len() as u32, samples: sorted.len() })
    }
}

/// Milliseconds with one decimal, as the tables print them.
pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_uses_nearest_rank_percentiles() {
        let samples: Vec<Duration> = (1..=200).rev().map(Duration::from_millis).collect();
        let l = Latency::of(&samples).unwrap();
        assert_eq!((l.p50, l.p99), (Duration::from_millis(100), Duration::from_millis(198)));
        assert_eq!(l.mean, Duration::from_micros(100_500));
        assert_eq!(Latency::of(&[Duration::from_millis(3)]).unwrap().p99, Duration::from_millis(3));
        assert!(Latency::of(&[]).is_none());
    }

    #[test]
    fn an_error_answer_is_not_a_measured_start() {
        let denied = br#"{"statusCode":401,"body":"bad signature"}"#;
        assert_eq!(failed_answer(denied, true).as_deref(), Some("answered HTTP 401"));
        assert_eq!(failed_answer(denied, false), None, "a later event may meet a limit");
        assert_eq!(failed_answer(br#"{"statusCode":503}"#, false).as_deref(), Some("answered HTTP 503"));
        let failed = br#"{"batchItemFailures":[{"itemIdentifier":"m1"}]}"#;
        assert_eq!(failed_answer(failed, false).as_deref(), Some("1 failed batch items"));
        for ok in [&br#"{"statusCode":200}"#[..], br#"{"batchItemFailures":[]}"#, br#"{"purged":3}"#, b"null", b"hi"] {
            assert_eq!(failed_answer(ok, true), None, "{}", String::from_utf8_lossy(ok));
        }
    }
}
