//! The scripted agent as a `ConversationModel`: deterministic words from our own rules
//! (`domain::agent::scripted_reply`), streamed word by word like a model. It is the local and
//! test default and the fallback when the real model fails or is slow.

use crate::domain::agent::{Speaker, scripted_reply};
use crate::ports::agent::{ModelEvent, ModelRequest};
use crate::ports::{ConversationModel, PortError};
use std::time::Duration;
use tokio::sync::mpsc::Sender;

#[derive(Debug, Clone, Default)]
pub struct ScriptedModel {
    /// A pause before the first word and between words (benchmarks stand in a model's latency).
    pub first_token_delay: Duration,
}

impl ConversationModel for ScriptedModel {
    fn name(&self) -> &'static str {
        "scripted"
    }

    async fn converse(&self, req: &ModelRequest, out: Sender<ModelEvent>) -> Result<(), PortError> {
        let caller = req.turns.iter().rev().find(|(s, _)| *s == Speaker::Caller).map_or("", |(_, t)| t.as_str());
        let reply = scripted_reply(&req.brief, caller);
        if !self.first_token_delay.is_zero() {
            tokio::time::sleep(self.first_token_delay).await;
        }
        for word in reply.text.split_inclusive(' ') {
            if out.send(ModelEvent::Text(word.to_string())).await.is_err() {
                return Ok(());
            }
        }
        if let Some((name, input)) = reply.tool {
            let _ = out.send(ModelEvent::Tool { name: name.to_string(), input }).await;
        }
        Ok(())
    }
}
