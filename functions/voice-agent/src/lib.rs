//! voice-agent: Callfy's AI voice agent behind an API Gateway WebSocket API, speaking Twilio
//! ConversationRelay.
//! - `$connect`: `X-Twilio-Signature` is checked against the URL Twilio opened, rebuilt from
//!   `PUBLIC_WS_URL` and the one call-reference parameter; a bad or missing one is refused
//!   before the upgrade;
//! - `$default`: one ConversationRelay message (`setup`, `prompt`, `dtmf`, `interrupt`, `error`);
//! - `$disconnect`: the session is closed.
//!
//! `connect`, `message` and `disconnect` are the whole handler; the local runner calls them for
//! its own WebSocket route. The use case is `callfy_shared::app::agent`.

use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use aws_lambda_events::encodings::Body;
use callfy_shared::config::ExposeSecret;
use callfy_shared::domain::agent::{WS_REF_PARAM, ws_url};
use callfy_shared::domain::voice::CallRef;
use callfy_shared::ports::{Classify, ErrorKind, RelayConnections, chain};
pub use callfy_shared::startup::AgentApp;
use callfy_shared::telemetry::redact;
use callfy_shared::twilio_signature::{self, SigningKeys, TwilioSignatureError};
use tracing::warn;

/// Why a WebSocket upgrade was refused (the status and a reason).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub reason: String,
}

impl Refusal {
    fn new(status: u16, reason: impl Into<String>) -> Self {
        Self { status, reason: reason.into() }
    }
}

/// `$connect`: accepted only with Twilio's signature over the exact URL it opened.
pub async fn connect<R: RelayConnections>(
    app: &AgentApp<R>,
    connection_id: &str,
    signature: Option<&str>,
    call_param: Option<&str>,
) -> Result<(), Refusal> {
    let value = call_param.ok_or_else(|| Refusal::new(400, format!("the URL lacks its `{WS_REF_PARAM}` parameter")))?;
    let call = CallRef::from_query(value).ok_or_else(|| Refusal::new(400, "the call reference is malformed"))?;
    let url = ws_url(&app.public_ws_url, &call);
    let keys = SigningKeys {
        auth_token: app.auth_token.expose_secret(),
        previous_auth_token: app.previous_auth_token.as_ref().map(|t| t.expose_secret()),
        shared_key: None,
    };
    match twilio_signature::validate_request(keys, &url, b"", signature, None) {
        Ok(_) => {}
        Err(TwilioSignatureError::Missing) => return Err(Refusal::new(401, "X-Twilio-Signature is missing")),
        Err(e) => {
            warn!(reason = %e, "refused a WebSocket upgrade with a bad signature");
            return Err(Refusal::new(403, e.to_string()));
        }
    }
    app.agent().connect(connection_id, &call, app.clock.now()).await.map_err(|e| {
        warn!(error = %redact(&chain(&e)), "could not accept the agent connection");
        Refusal::new(if e.kind() == ErrorKind::Transient { 503 } else { 500 }, "temporarily unable to accept the call")
    })
}

/// `$default`: one message. Failures are logged with the call and never crash the session.
pub async fn message<R: RelayConnections>(app: &AgentApp<R>, connection_id: &str, body: &str) {
    if let Err(e) = app.agent().message(connection_id, body, app.clock.now()).await {
        warn!(error = %redact(&chain(&e)), "agent message failed");
    }
}

pub async fn disconnect<R: RelayConnections>(app: &AgentApp<R>, connection_id: &str) {
    if let Err(e) = app.agent().disconnect(connection_id).await {
        warn!(error = %redact(&chain(&e)), "agent disconnect failed");
    }
}

fn answer(status: u16, body: &str) -> ApiGatewayProxyResponse {
    let mut r = ApiGatewayProxyResponse::default();
    r.status_code = i64::from(status);
    r.body = Some(Body::Text(body.to_string()));
    r
}

/// The Lambda handler: API Gateway's WebSocket event, by route.
pub async fn handle<R: RelayConnections>(
    app: &AgentApp<R>,
    event: ApiGatewayWebsocketProxyRequest,
) -> ApiGatewayProxyResponse {
    let ctx = &event.request_context;
    let Some(connection_id) = ctx.connection_id.as_deref() else { return answer(400, "no connection id") };
    match ctx.route_key.as_deref() {
        Some("$connect") => {
            let signature = event.headers.get("x-twilio-signature").and_then(|v| v.to_str().ok());
            let call = event.query_string_parameters.first(WS_REF_PARAM);
            match connect(app, connection_id, signature, call).await {
                Ok(()) => answer(200, "connected"),
                Err(r) => answer(r.status, &r.reason),
            }
        }
        Some("$disconnect") => {
            disconnect(app, connection_id).await;
            answer(200, "bye")
        }
        _ => {
            message(app, connection_id, event.body.as_deref().unwrap_or_default()).await;
            answer(200, "ok")
        }
    }
}
