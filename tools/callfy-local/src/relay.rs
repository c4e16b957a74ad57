//! The voice agent's WebSocket on the local runner's one port (`GET /twilio/voice/relay`):
//! the upgrade is checked by the same `voice_agent::connect` as `$connect` in Lambda (refused
//! before the upgrade), and every text frame goes to `voice_agent::message` in a task of its
//! own, concurrently, as API Gateway invokes Lambda per message.

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use callfy_shared::domain::agent::{RelayOut, WS_REF_PARAM};
use callfy_shared::ports::{PortError, RelayConnections};
use futures::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use voice_agent::AgentApp;

/// The voice agent function's timeout (the template's `VoiceAgentFunction`, API Gateway's 29 s
/// integration limit): Lambda ends an invocation then, so a route whose call hangs (a write whose
/// answer never comes) must not hold the upgrade or the socket forever here either.
pub const INVOCATION_TIMEOUT: Duration = Duration::from_secs(29);

/// The open sockets, by connection id: the local stand-in for API Gateway's `@connections`.
#[derive(Clone, Default)]
pub struct LocalRelay {
    sockets: Arc<Mutex<HashMap<String, mpsc::UnboundedSender<String>>>>,
    faults: Arc<Mutex<Option<PostFaults>>>,
}

/// What becomes of one `PostToConnection` under injected faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostFault {
    /// Delivered, as without faults.
    None,
    /// Delivered to the socket, then answered with an error (the answer was lost).
    DeliveredButFailed,
    /// Refused: not delivered, answered with an error.
    Refused,
}

/// Decides each post's fault (the soak's seeded draw).
pub type PostFaults = Box<dyn FnMut() -> PostFault + Send>;

impl LocalRelay {
    /// Injects faults into every later post (`None`: none).
    pub fn set_faults(&self, faults: Option<PostFaults>) {
        *self.faults.lock().unwrap_or_else(|e| e.into_inner()) = faults;
    }

    fn draw(&self) -> PostFault {
        self.faults.lock().unwrap_or_else(|e| e.into_inner()).as_mut().map_or(PostFault::None, |f| f())
    }

    fn register(&self, id: &str) -> mpsc::UnboundedReceiver<String> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.sockets.lock().unwrap_or_else(|e| e.into_inner()).insert(id.to_string(), tx);
        rx
    }

    fn forget(&self, id: &str) {
        self.sockets.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
    }
}

impl RelayConnections for LocalRelay {
    async fn post(&self, connection_id: &str, msg: &RelayOut) -> Result<(), PortError> {
        let fault = self.draw();
        if fault == PostFault::Refused {
            return Err(PortError::unavailable("ApiGatewayManagement", "PostToConnection", "injected: refused"));
        }
        let tx = self.sockets.lock().unwrap_or_else(|e| e.into_inner()).get(connection_id).cloned();
        match tx {
            Some(tx) if tx.send(msg.json()).is_ok() => match fault {
                PostFault::DeliveredButFailed => Err(PortError::unavailable(
                    "ApiGatewayManagement",
                    "PostToConnection",
                    "injected: delivered, answer lost",
                )),
                _ => Ok(()),
            },
            _ => Err(PortError::NotFound("connection gone".into())),
        }
    }
}

pub async fn upgrade(
    State(app): State<Arc<AgentApp<LocalRelay>>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    ws: WebSocketUpgrade,
) -> Response {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let signature = headers.get(callfy_shared::twilio_signature::HEADER).and_then(|v| v.to_str().ok());
    let connect = voice_agent::connect(&app, &id, signature, query.get(WS_REF_PARAM).map(String::as_str));
    match tokio::time::timeout(INVOCATION_TIMEOUT, connect).await {
        Ok(Ok(())) => {}
        Ok(Err(r)) => {
            let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::FORBIDDEN);
            return (status, r.reason).into_response();
        }
        // As API Gateway answers a $connect integration that timed out.
        Err(_) => return (StatusCode::GATEWAY_TIMEOUT, "the agent did not accept the call in time").into_response(),
    }
    ws.on_upgrade(move |socket| serve(app, id, socket))
}

async fn serve(app: Arc<AgentApp<LocalRelay>>, id: String, socket: WebSocket) {
    let mut outgoing = app.relay.register(&id);
    let (mut sink, mut stream) = socket.split();
    let writer = tokio::spawn(async move {
        while let Some(text) = outgoing.recv().await {
            if sink.send(Message::Text(text.into())).await.is_err() {
                break;
            }
        }
    });
    while let Some(Ok(frame)) = stream.next().await {
        match frame {
            Message::Text(text) => {
                let (app, id) = (Arc::clone(&app), id.clone());
                tokio::spawn(async move {
                    let _ =
                        tokio::time::timeout(INVOCATION_TIMEOUT, voice_agent::message(&app, &id, text.as_str())).await;
                });
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    app.relay.forget(&id);
    writer.abort();
    let _ = tokio::time::timeout(INVOCATION_TIMEOUT, voice_agent::disconnect(&app, &id)).await;
}
