//! The voice agent's ports: the model it talks through, the connection it answers on, and the
//! session it keeps under the call.

use crate::domain::agent::{AgentSession, Brief, Outcome, RelayOut, Speaker, ToolSpec, TranscriptLine};
use crate::domain::ids::MerchantId;
use crate::domain::phone::Phone;
use crate::domain::voice::CallRef;
use crate::ports::PortError;
use chrono::{DateTime, Utc};
use std::future::Future;
use tokio::sync::mpsc::Sender;

/// What one turn asks of the model. `brief` is what `system` was written from (the scripted
/// agent reads it directly); neither holds a phone number, email or address.
#[derive(Debug, Clone)]
pub struct ModelRequest {
    pub system: String,
    pub brief: Brief,
    /// The conversation so far, oldest first, ending with the caller's newest words.
    pub turns: Vec<(Speaker, String)>,
    pub tools: Vec<ToolSpec>,
    pub max_tokens: u32,
}

/// What the model streams back.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelEvent {
    Text(String),
    Tool { name: String, input: serde_json::Value },
    Usage { input_tokens: u32, output_tokens: u32 },
}

/// A conversation model: system prompt, turns and tools in; text and tool calls streamed out
/// (in order) on `out` until the reply ends. A receiver that went away ends the stream early.
pub trait ConversationModel: Send + Sync {
    fn name(&self) -> &'static str;
    fn converse(
        &self,
        req: &ModelRequest,
        out: Sender<ModelEvent>,
    ) -> impl Future<Output = Result<(), PortError>> + Send;
}

/// The WebSocket a ConversationRelay session is connected on (API Gateway's `@connections`, or
/// the local runner's socket).
pub trait RelayConnections: Send + Sync {
    /// Sends one message; `Gone` (`PortError::NotFound`) once Twilio has hung up.
    fn post(&self, connection_id: &str, msg: &RelayOut) -> impl Future<Output = Result<(), PortError>> + Send;
}

/// Which call a connection belongs to: the reference from `$connect`, the call from `setup`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionBinding {
    pub call: CallRef,
    /// Set by `setup` once the call is known (with the number, which only the store holds).
    pub session: Option<SessionKey>,
}

/// Where a session lives: the person's partition, under the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionKey {
    pub merchant_id: MerchantId,
    pub phone: Phone,
    pub call_sid: String,
}

/// Agent sessions in the store. Every write that speaks for a turn is conditional on the
/// session's turn still being that turn, so a newer prompt or an interrupt silences older ones.
pub trait AgentSessions: Send + Sync {
    /// `$connect`: the connection's call reference (the item expires after a day; no personal data).
    fn bind_connection(
        &self,
        connection_id: &str,
        call: &CallRef,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), PortError>> + Send;
    fn connection(
        &self,
        connection_id: &str,
    ) -> impl Future<Output = Result<Option<ConnectionBinding>, PortError>> + Send;
    /// `setup`: the session is created once (a repeated `setup` finds it) and bound to the
    /// connection. Returns the stored session.
    fn open_session(
        &self,
        connection_id: &str,
        session: &AgentSession,
    ) -> impl Future<Output = Result<AgentSession, PortError>> + Send;
    fn session(&self, key: &SessionKey) -> impl Future<Output = Result<Option<AgentSession>, PortError>> + Send;
    /// Moves the session from turn `seen` to `seen + 1`, recording `line` (the caller's words)
    /// in the same write. `false` when another message moved it first or the session ended.
    fn next_turn(
        &self,
        key: &SessionKey,
        seen: u32,
        line: Option<&TranscriptLine>,
    ) -> impl Future<Output = Result<bool, PortError>> + Send;
    /// Records the agent's words of `line.turn`, only while that is still the session's turn:
    /// `false` means a newer turn began and nothing more of this one may be sent.
    fn say(&self, key: &SessionKey, line: &TranscriptLine) -> impl Future<Output = Result<bool, PortError>> + Send;
    /// Appends a line whatever the turn (an opt-out's confirmation, after it ended the session).
    fn append_line(
        &self,
        key: &SessionKey,
        line: &TranscriptLine,
    ) -> impl Future<Output = Result<(), PortError>> + Send;
    /// Notes a tool call; with `once`, `false` when the tool was already used in this call.
    fn use_tool(
        &self,
        key: &SessionKey,
        tool: &str,
        once: bool,
    ) -> impl Future<Output = Result<bool, PortError>> + Send;
    /// Adds model tokens spent; returns the call's total.
    fn spend(&self, key: &SessionKey, tokens: u32) -> impl Future<Output = Result<u32, PortError>> + Send;
    /// Counts a malformed message; returns the count.
    fn malformed(&self, connection_id: &str) -> impl Future<Output = Result<u32, PortError>> + Send;
    /// Sets the outcome (the first one set stands, unless `overwrite`); with `end`, marks the
    /// session ended.
    fn finish_session(
        &self,
        key: &SessionKey,
        outcome: Outcome,
        overwrite: bool,
        end: bool,
    ) -> impl Future<Output = Result<(), PortError>> + Send;
    /// The merchant's model tokens today, after adding `tokens`.
    fn merchant_spend(
        &self,
        m: &MerchantId,
        day: &str,
        tokens: u32,
    ) -> impl Future<Output = Result<u64, PortError>> + Send;
}
