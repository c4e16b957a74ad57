//! A stand-in for Amazon Bedrock's `ConverseStream`, on 127.0.0.1: it answers with real AWS
//! event-stream frames (as Bedrock sends them), streamed with delays so a test can measure
//! streaming, or fails, or hangs, as the test sets. Every request is kept for inspection.

use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::Response;
use axum::routing::post;
use futures::StreamExt;
use serde_json::{Value, json};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Input tokens every `Reply` reports in its `metadata` event.
pub const INPUT_TOKENS: u32 = 25;

/// What the stand-in does with the next request.
#[derive(Debug, Clone)]
pub enum Behaviour {
    /// Streams `chunks` as text deltas (block 0), then `tool` (name, input) as a tool-use block,
    /// then `messageStop` and `metadata` (usage: `INPUT_TOKENS` in, one token per chunk and 5
    /// per tool out). The answer's head goes at once; `first_delay` passes before the first
    /// frame and `delay_per_chunk` before each text chunk.
    Reply { chunks: Vec<String>, tool: Option<(String, Value)>, delay_per_chunk: Duration, first_delay: Duration },
    /// Accepts the request and never answers.
    Hang,
    /// Answers this status with Bedrock's error code (`x-amzn-errortype`) and JSON message:
    /// 429 is `ThrottlingException`, 500 `InternalServerException`, 400 `ValidationException`…
    Fail(u16),
}

impl Behaviour {
    /// A text reply streamed without delays.
    pub fn text(chunks: &[&str]) -> Self {
        Self::Reply {
            chunks: chunks.iter().map(|c| c.to_string()).collect(),
            tool: None,
            delay_per_chunk: Duration::ZERO,
            first_delay: Duration::ZERO,
        }
    }
}

#[derive(Debug)]
pub struct BedrockStandIn {
    behaviour: Mutex<Behaviour>,
    requests: Mutex<Vec<(String, Value)>>,
}

impl BedrockStandIn {
    /// Serves `POST /model/{modelId}/converse-stream` on a free port; returns the stand-in and
    /// its base URL (`http://127.0.0.1:port`, the Bedrock client's endpoint). It runs until the
    /// test's runtime ends.
    pub async fn start(behaviour: Behaviour) -> (Arc<Self>, String) {
        let stand_in = Arc::new(Self { behaviour: Mutex::new(behaviour), requests: Mutex::new(Vec::new()) });
        let app = Router::new()
            .route("/model/{model_id}/converse-stream", post(converse_stream))
            .with_state(Arc::clone(&stand_in));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the Bedrock stand-in");
        let base_url = format!("http://{}", listener.local_addr().expect("stand-in address"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (stand_in, base_url)
    }

    /// Changes what the following requests get.
    pub fn set(&self, behaviour: Behaviour) {
        *self.behaviour.lock().expect("stand-in lock") = behaviour;
    }

    /// Every request body received, oldest first (a body that is not JSON is kept as a string).
    pub fn requests(&self) -> Vec<Value> {
        self.requests.lock().expect("stand-in lock").iter().map(|(_, body)| body.clone()).collect()
    }

    /// The model id of every request (decoded from the path), oldest first.
    pub fn model_ids(&self) -> Vec<String> {
        self.requests.lock().expect("stand-in lock").iter().map(|(id, _)| id.clone()).collect()
    }
}

async fn converse_stream(State(s): State<Arc<BedrockStandIn>>, Path(model_id): Path<String>, body: Bytes) -> Response {
    let body = serde_json::from_slice(&body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into()));
    s.requests.lock().expect("stand-in lock").push((model_id, body));
    let behaviour = s.behaviour.lock().expect("stand-in lock").clone();
    match behaviour {
        Behaviour::Hang => std::future::pending().await,
        Behaviour::Fail(status) => failure(status),
        Behaviour::Reply { chunks, tool, delay_per_chunk, first_delay } => {
            let frames = reply_frames(&chunks, tool.as_ref(), delay_per_chunk, first_delay);
            let body = futures::stream::iter(frames).then(|(delay, frame)| async move {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                Ok::<_, Infallible>(frame)
            });
            Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/vnd.amazon.eventstream")
                .header("x-amzn-requestid", uuid::Uuid::new_v4().to_string())
                .body(Body::from_stream(body))
                .expect("stand-in response")
        }
    }
}

/// The frames of a reply, each with the wait before it, in Bedrock's order.
fn reply_frames(
    chunks: &[String],
    tool: Option<&(String, Value)>,
    delay_per_chunk: Duration,
    first_delay: Duration,
) -> Vec<(Duration, Vec<u8>)> {
    let mut frames = vec![(first_delay, event_frame("messageStart", json!({ "role": "assistant" })))];
    let mut index = 0;
    if !chunks.is_empty() {
        for chunk in chunks {
            let delta = json!({ "contentBlockIndex": index, "delta": { "text": chunk } });
            frames.push((delay_per_chunk, event_frame("contentBlockDelta", delta)));
        }
        frames.push((Duration::ZERO, event_frame("contentBlockStop", json!({ "contentBlockIndex": index }))));
        index += 1;
    }
    if let Some((name, input)) = tool {
        let start = json!({
            "contentBlockIndex": index,
            "start": { "toolUse": { "toolUseId": format!("tooluse_{}", uuid::Uuid::new_v4().simple()), "name": name } },
        });
        frames.push((Duration::ZERO, event_frame("contentBlockStart", start)));
        // The input arrives as pieces of one JSON text, as a model writes it.
        let input = input.to_string();
        let cut = input.char_indices().nth(input.chars().count() / 2).map_or(input.len(), |(i, _)| i);
        for piece in [&input[..cut], &input[cut..]] {
            let delta = json!({ "contentBlockIndex": index, "delta": { "toolUse": { "input": piece } } });
            frames.push((Duration::ZERO, event_frame("contentBlockDelta", delta)));
        }
        frames.push((Duration::ZERO, event_frame("contentBlockStop", json!({ "contentBlockIndex": index }))));
    }
    let stop_reason = if tool.is_some() { "tool_use" } else { "end_turn" };
    frames.push((Duration::ZERO, event_frame("messageStop", json!({ "stopReason": stop_reason }))));
    let output = chunks.len() as u32 + if tool.is_some() { 5 } else { 0 };
    let metadata = json!({
        "usage": { "inputTokens": INPUT_TOKENS, "outputTokens": output, "totalTokens": INPUT_TOKENS + output },
        "metrics": { "latencyMs": 120 },
    });
    frames.push((Duration::ZERO, event_frame("metadata", metadata)));
    frames
}

/// One event-stream message as Bedrock sends it: the event's name in `:event-type`, a JSON
/// payload, and the random-length `p` padding Bedrock adds to every event.
pub fn event_frame(event_type: &str, mut payload: Value) -> Vec<u8> {
    payload["p"] = Value::String("abcdefghijklmnopqrstuvwxyzABCDEFGHIJ"[..(event_type.len() % 20) + 4].into());
    let message = Message::new(serde_json::to_vec(&payload).expect("payload"))
        .add_header(Header::new(":event-type", HeaderValue::String(event_type.to_string().into())))
        .add_header(Header::new(":content-type", HeaderValue::String("application/json".into())))
        .add_header(Header::new(":message-type", HeaderValue::String("event".into())));
    let mut frame = Vec::new();
    aws_smithy_eventstream::frame::write_message_to(&message, &mut frame).expect("event-stream frame");
    frame
}

/// Bedrock's error answer for `status`.
fn failure(status: u16) -> Response {
    let (code, message) = match status {
        400 => ("ValidationException", "The provided request is not valid."),
        403 => ("AccessDeniedException", "You don't have access to the model with the specified model ID."),
        404 => ("ResourceNotFoundException", "The specified model was not found."),
        408 => ("ModelTimeoutException", "The model took too long to respond."),
        424 => ("ModelErrorException", "The model returned an error."),
        429 => ("ThrottlingException", "Too many requests, please wait before trying again."),
        503 => ("ServiceUnavailableException", "The service is unavailable. Try again later."),
        _ => ("InternalServerException", "The server encountered an internal error."),
    };
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, "application/json")
        .header("x-amzn-errortype", format!("{code}:http://internal.amazon.com/coral/com.amazon.bedrock/"))
        .header("x-amzn-requestid", uuid::Uuid::new_v4().to_string())
        .body(Body::from(json!({ "message": message }).to_string()))
        .expect("stand-in error")
}
