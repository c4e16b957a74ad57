//! The voice agent's model on Amazon Bedrock (`ConverseStream`): one streamed reply per turn,
//! text forwarded as it arrives so the caller hears the first phrase before the reply is done.

use super::aws::sdk_error;
use crate::domain::agent::Speaker;
use crate::ports::agent::{ConversationModel, ModelEvent, ModelRequest};
use crate::ports::{ErrorKind, PortError};
use aws_config::SdkConfig;
use aws_sdk_bedrockruntime::Client;
use aws_sdk_bedrockruntime::config::retry::RetryConfig;
use aws_sdk_bedrockruntime::config::timeout::TimeoutConfig;
use aws_sdk_bedrockruntime::types::{
    ContentBlock, ContentBlockDelta, ContentBlockStart, ConversationRole, ConverseStreamOutput, InferenceConfiguration,
    Message, SystemContentBlock, Tool, ToolConfiguration, ToolInputSchema, ToolSpecification,
};
use aws_smithy_types::{Document, Number};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::mpsc::Sender;

const SERVICE: &str = "Bedrock";
const OP: &str = "ConverseStream";

/// The longest a caller may wait in silence for the model: to the answer's head (all attempts
/// included), then between two events of the stream.
const SILENCE: Duration = Duration::from_secs(8);

/// A Bedrock client for a live call, where a late answer is as bad as none:
/// - 2 attempts at most (one retry of a throttle or a 5xx; the caller is waiting).
/// - connect 2 s; `read_timeout` 8 s, which our HTTP client (`adapters::http`) ends at the
///   answer's head; `operation_timeout` 8 s over every attempt and backoff. For an event stream
///   the SDK hands the output back once the head has arrived and the body is read afterwards,
///   so these bound the time to the head and never cut a normal (20 s) reply mid-stream. No
///   separate attempt timeout: the read timeout already is one, and a hung first attempt then
///   leaves no time for a second, so a hang costs 8 s, not 16.
/// - The SDK puts no stalled-stream protection on event streams (they may idle by design), so
///   `converse` bounds the silence between events itself (`SILENCE`).
pub fn client(sdk: &SdkConfig) -> Client {
    let conf = aws_sdk_bedrockruntime::config::Builder::from(sdk)
        .retry_config(RetryConfig::standard().with_max_attempts(2).with_initial_backoff(Duration::from_millis(200)))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(2))
                .read_timeout(SILENCE)
                .operation_timeout(SILENCE)
                .build(),
        )
        .build();
    Client::from_conf(conf)
}

/// `ConversationModel` on Bedrock's Converse API (any model id or inference profile it serves).
#[derive(Debug, Clone)]
pub struct BedrockModel {
    client: Client,
    model_id: String,
}

impl BedrockModel {
    /// A model on a client built by [`client`] (its retries and timeouts).
    pub fn new(sdk: &SdkConfig, model_id: &str) -> Self {
        Self::from_client(client(sdk), model_id)
    }

    /// A model on a client the caller configured (tests point one at a stand-in).
    pub fn from_client(client: Client, model_id: &str) -> Self {
        Self { client, model_id: model_id.to_string() }
    }
}

impl ConversationModel for BedrockModel {
    fn name(&self) -> &'static str {
        "bedrock"
    }

    async fn converse(&self, req: &ModelRequest, out: Sender<ModelEvent>) -> Result<(), PortError> {
        let messages = messages(&req.turns)?;
        let mut call = self
            .client
            .converse_stream()
            .model_id(&self.model_id)
            .system(SystemContentBlock::Text(req.system.clone()))
            .set_messages(Some(messages))
            .inference_config(
                InferenceConfiguration::builder().max_tokens(i32::try_from(req.max_tokens).unwrap_or(i32::MAX)).build(),
            );
        if !req.tools.is_empty() {
            call = call.tool_config(tool_config(req)?);
        }
        // A receiver gone before the answer (the caller interrupted) ends the turn quietly.
        let answer = tokio::select! {
            biased;
            () = out.closed() => return Ok(()),
            answer = call.send() => answer.map_err(|e| sdk_error(SERVICE, OP, e))?,
        };
        let mut stream = answer.stream;
        let mut tools: HashMap<i32, (String, String)> = HashMap::new();
        loop {
            let event = tokio::select! {
                biased;
                () = out.closed() => return Ok(()),
                // A model that goes quiet (before its first token or mid-reply) is given up on:
                // the caller hears the fallback instead of silence. A steady stream runs on.
                event = tokio::time::timeout(SILENCE, stream.recv()) => event
                    .map_err(|_| PortError::service(SERVICE, OP, "StreamTimeout", ErrorKind::Transient, format!("no event for {SILENCE:?}")))?
                    .map_err(|e| sdk_error(SERVICE, OP, e))?,
            };
            let Some(event) = event else { return Ok(()) };
            let model_event = match event {
                ConverseStreamOutput::ContentBlockStart(start) => {
                    if let Some(ContentBlockStart::ToolUse(t)) = start.start {
                        tools.insert(start.content_block_index, (t.name, String::new()));
                    }
                    None
                }
                ConverseStreamOutput::ContentBlockDelta(d) => match d.delta {
                    Some(ContentBlockDelta::Text(text)) if !text.is_empty() => Some(ModelEvent::Text(text)),
                    Some(ContentBlockDelta::ToolUse(t)) => {
                        if let Some((_, input)) = tools.get_mut(&d.content_block_index) {
                            input.push_str(&t.input);
                        }
                        None
                    }
                    _ => None,
                },
                ConverseStreamOutput::ContentBlockStop(stop) => match tools.remove(&stop.content_block_index) {
                    Some((name, input)) => Some(ModelEvent::Tool { input: tool_input(&name, &input)?, name }),
                    None => None,
                },
                ConverseStreamOutput::Metadata(m) => m.usage.map(|u| ModelEvent::Usage {
                    input_tokens: u32::try_from(u.input_tokens).unwrap_or(0),
                    output_tokens: u32::try_from(u.output_tokens).unwrap_or(0),
                }),
                _ => None,
            };
            if let Some(e) = model_event
                && out.send(e).await.is_err()
            {
                return Ok(());
            }
        }
    }
}

/// The turns as Bedrock takes them: the first message is the user's and roles alternate, so
/// leading agent lines (the fixed greeting) are dropped, neighbours of one speaker are joined,
/// and blank lines (which Bedrock rejects) are skipped.
fn messages(turns: &[(Speaker, String)]) -> Result<Vec<Message>, PortError> {
    let mut merged: Vec<(ConversationRole, String)> = Vec::new();
    for (speaker, text) in turns {
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        let role = match speaker {
            Speaker::Caller => ConversationRole::User,
            Speaker::Agent => ConversationRole::Assistant,
        };
        match merged.last_mut() {
            Some((last, joined)) if *last == role => {
                joined.push('\n');
                joined.push_str(text);
            }
            None if role == ConversationRole::Assistant => {}
            _ => merged.push((role, text.to_string())),
        }
    }
    if merged.is_empty() {
        return Err(PortError::Invalid("the model was asked to answer no caller words".into()));
    }
    merged
        .into_iter()
        .map(|(role, text)| {
            Message::builder()
                .role(role)
                .content(ContentBlock::Text(text))
                .build()
                .map_err(|e| PortError::Encode(format!("Bedrock message: {e}")))
        })
        .collect()
}

fn tool_config(req: &ModelRequest) -> Result<ToolConfiguration, PortError> {
    let tools = req
        .tools
        .iter()
        .map(|t| {
            ToolSpecification::builder()
                .name(t.name)
                .description(t.description)
                .input_schema(ToolInputSchema::Json(document(&t.schema)))
                .build()
                .map(Tool::ToolSpec)
                .map_err(|e| PortError::Encode(format!("Bedrock tool {}: {e}", t.name)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    ToolConfiguration::builder()
        .set_tools(Some(tools))
        .build()
        .map_err(|e| PortError::Encode(format!("Bedrock tools: {e}")))
}

/// A tool call's streamed input: a tool without parameters streams nothing, which means `{}`.
fn tool_input(name: &str, input: &str) -> Result<serde_json::Value, PortError> {
    if input.trim().is_empty() {
        return Ok(serde_json::json!({}));
    }
    serde_json::from_str(input).map_err(|e| PortError::Decode(format!("input of tool {name} is not JSON: {e}")))
}

/// JSON as the SDK's `Document` (the tool schemas).
fn document(v: &serde_json::Value) -> Document {
    use serde_json::Value;
    match v {
        Value::Null => Document::Null,
        Value::Bool(b) => Document::Bool(*b),
        Value::Number(n) => Document::Number(match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Number::PosInt(u),
            (None, Some(i)) => Number::NegInt(i),
            _ => Number::Float(n.as_f64().unwrap_or_default()),
        }),
        Value::String(s) => Document::String(s.clone()),
        Value::Array(a) => Document::Array(a.iter().map(document).collect()),
        Value::Object(o) => Document::Object(o.iter().map(|(k, v)| (k.clone(), document(v))).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roles(turns: &[(Speaker, &str)]) -> Vec<(ConversationRole, String)> {
        let turns: Vec<_> = turns.iter().map(|(s, t)| (*s, t.to_string())).collect();
        messages(&turns)
            .unwrap()
            .into_iter()
            .map(|m| {
                let text = match &m.content[..] {
                    [ContentBlock::Text(t)] => t.clone(),
                    other => panic!("{other:?}"),
                };
                (m.role, text)
            })
            .collect()
    }

    #[test]
    fn messages_start_with_the_caller_and_alternate() {
        use ConversationRole::{Assistant, User};
        use Speaker::{Agent, Caller};
        let got = roles(&[
            (Agent, "Hello"),
            (Caller, "hi"),
            (Caller, "there"),
            (Agent, " "),
            (Agent, "Yes?"),
            (Caller, "cart"),
        ]);
        assert_eq!(got, vec![(User, "hi\nthere".into()), (Assistant, "Yes?".into()), (User, "cart".into())]);
        assert!(messages(&[(Agent, "Hello".into())]).is_err());
        assert!(messages(&[]).is_err());
    }

    #[test]
    fn schemas_become_documents_and_empty_input_is_an_empty_object() {
        let d = document(&serde_json::json!({"type": "object", "n": -1, "m": 2, "f": 0.5, "a": [true, null]}));
        let Document::Object(o) = d else { panic!("{d:?}") };
        assert_eq!(o["type"], Document::String("object".into()));
        assert_eq!(o["n"], Document::Number(Number::NegInt(-1)));
        assert_eq!(o["m"], Document::Number(Number::PosInt(2)));
        assert_eq!(o["f"], Document::Number(Number::Float(0.5)));
        assert_eq!(o["a"], Document::Array(vec![Document::Bool(true), Document::Null]));
        assert_eq!(tool_input("t", "").unwrap(), serde_json::json!({}));
        assert_eq!(tool_input("t", r#"{"scope":"calls"}"#).unwrap(), serde_json::json!({"scope": "calls"}));
        assert!(tool_input("t", "{").is_err());
    }
}
