//! Callfy's AI voice agent, one ConversationRelay message at a time. Every message may reach
//! another process, concurrently and out of order, so the session lives in the store under the
//! call, and every word spoken for a turn is first written conditionally on that turn still
//! being the newest: a newer prompt, an interrupt or an opt-out silences an older turn.
//!
//! Opt-out is ours: each prompt passes the revocation classifier before anything else, and an
//! opt-out never waits for the model.

use crate::app::consent;
use crate::app::voice::KEY_OPT_OUT_REPLAY_DELAY_SECONDS;
use crate::app::voice::{CallContext, LinkOutcome, VoiceError, VoiceStore, text_link};
use crate::domain::agent::{
    AgentSession, Brief, CALL_TOKEN_CAP, EndReason, Line, MAX_MALFORMED, MAX_TURNS, Outcome, Phrases, RelayIn,
    RelayOut, Scope, Speaker, Tool, TranscriptLine, guard_phrase, line, opt_out_confirmation, opt_out_received,
    system_prompt, tool_specs,
};
use crate::domain::consent::ConsentSource;
use crate::domain::keywords::Lang;
use crate::domain::keywords::classify_spoken;
use crate::domain::voice::{CallRef, KeyOptOut, SpokenOptOut, is_sid};
use crate::metrics;
use crate::ports::agent::{ModelEvent, ModelRequest, SessionKey};
use crate::ports::{Classify, ConversationModel, PortError, RelayConnections, SmsGateway, WorkQueue, chain};
use crate::telemetry::redact;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{info, warn};

/// How long the model may take to start answering before the scripted agent takes the turn.
pub const MODEL_FIRST_TOKEN_TIMEOUT: Duration = Duration::from_secs(8);
/// A whole turn ends within API Gateway's 29 s integration limit.
pub const TURN_TIMEOUT: Duration = Duration::from_secs(20);
/// Model tokens a merchant may spend per UTC day before calls fall back to the scripted agent.
pub const DEFAULT_MERCHANT_DAILY_TOKENS: u64 = 2_000_000;
/// How long a message that overtook its session's `setup` waits for it (20 × 50 ms).
const SETUP_WAIT_TRIES: u32 = 20;
/// `setup` attempts before a session that could not be opened is ended.
const SETUP_ATTEMPTS: u32 = 3;
const SETUP_WAIT_STEP: Duration = Duration::from_millis(50);
/// Longest model answer, in tokens (short spoken answers).
const MAX_ANSWER_TOKENS: u32 = 300;

#[derive(Debug, Clone, Copy)]
pub struct AgentLimits {
    pub model_timeout: Duration,
    pub call_tokens: u32,
    pub merchant_daily_tokens: u64,
}

impl Default for AgentLimits {
    fn default() -> Self {
        Self {
            model_timeout: MODEL_FIRST_TOKEN_TIMEOUT,
            call_tokens: CALL_TOKEN_CAP,
            merchant_daily_tokens: DEFAULT_MERCHANT_DAILY_TOKENS,
        }
    }
}

/// The voice agent over its ports: the store, the model (and the scripted fallback), the
/// connection replies go out on, Twilio (to text the link), and the queue a key-9 opt-out is made
/// durable on.
pub struct Agent<'a, S, M, F, C, G, W> {
    pub store: &'a S,
    pub model: &'a M,
    pub fallback: &'a F,
    pub relay: &'a C,
    pub sms: &'a G,
    pub outreach_queue: &'a W,
    pub public_base_url: &'a str,
    pub limits: AgentLimits,
}

/// A bound, set-up session with what its call is about.
struct Live {
    key: SessionKey,
    session: AgentSession,
    ctx: CallContext,
    call: CallRef,
}

/// Whom an opt-out is recorded for, and how it is confirmed.
struct OptOutTarget {
    key: SessionKey,
    merchant: crate::domain::merchant::Merchant,
    lang: Lang,
    turn: u32,
    /// False when the connection's `setup` never opened a session (a storage error, a call not
    /// logged yet): the opt-out is recorded for the bound cart's number, with nothing to end.
    has_session: bool,
}

/// How streaming one model answer ended.
enum Streamed {
    Done {
        tools: Vec<(String, serde_json::Value)>,
        spoke: bool,
    },
    /// A newer turn began: nothing more of this one is sent.
    Superseded,
    /// The model failed or was too slow before saying anything.
    Failed(&'static str),
}

impl<S, M, F, C, G, W> Agent<'_, S, M, F, C, G, W>
where
    S: VoiceStore,
    M: ConversationModel,
    F: ConversationModel,
    C: RelayConnections,
    G: SmsGateway,
    W: WorkQueue,
{
    /// `$connect`, after the handler checked Twilio's signature: the connection's call.
    pub async fn connect(&self, connection_id: &str, call: &CallRef, now: DateTime<Utc>) -> Result<(), VoiceError> {
        self.store.bind_connection(connection_id, call, now).await?;
        info!(merchant = %call.merchant_id, step = call.step, "agent connection accepted");
        Ok(())
    }

    /// One text frame from ConversationRelay.
    pub async fn message(&self, connection_id: &str, text: &str, now: DateTime<Utc>) -> Result<(), VoiceError> {
        let msg = match RelayIn::parse(text) {
            Ok(m) => m,
            Err(reason) => {
                let count = self.store.malformed(connection_id).await?;
                warn!(reason, count, "malformed ConversationRelay message ignored");
                if count >= MAX_MALFORMED {
                    warn!("too many malformed messages: ending the session");
                    self.post(connection_id, &RelayOut::end(Outcome::Failed, false)).await;
                }
                return Ok(());
            }
        };
        match msg {
            RelayIn::Setup { call_sid, .. } => self.setup(connection_id, &call_sid, now).await,
            RelayIn::Prompt { voice_prompt, last, .. } if last => self.prompt(connection_id, &voice_prompt, now).await,
            RelayIn::Prompt { .. } => Ok(()),
            RelayIn::Dtmf { digit } => self.dtmf(connection_id, &digit, now).await,
            RelayIn::Interrupt { .. } => self.interrupt(connection_id, now).await,
            RelayIn::Error { description } => {
                let call = self
                    .store
                    .connection(connection_id)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|b| b.session)
                    .map(|k| k.call_sid);
                warn!(call = call.as_deref().unwrap_or("-"), description = %redact(description.as_deref().unwrap_or("")), "ConversationRelay reported an error");
                Ok(())
            }
        }
    }

    /// `$disconnect`: a session that ended without an outcome (the person hung up) is completed.
    pub async fn disconnect(&self, connection_id: &str) -> Result<(), VoiceError> {
        if let Some(live) = self.live(connection_id).await? {
            self.store.finish_session(&live.key, Outcome::Completed, false, true).await?;
            info!(merchant = %live.key.merchant_id, call = %live.key.call_sid, "agent connection closed");
        }
        Ok(())
    }

    /// `setup` must name a call we placed for this connection's cart and step; anything else
    /// ends the session. Nothing is said: Twilio has spoken our fixed greeting.
    async fn setup(&self, connection_id: &str, call_sid: &str, now: DateTime<Utc>) -> Result<(), VoiceError> {
        // Nobody resends `setup`: a storage error is tried again, then the session is ended
        // rather than left open with nobody behind it (an opt-out said meanwhile still counts).
        let mut result = self.try_setup(connection_id, call_sid, now).await;
        for _ in 1..SETUP_ATTEMPTS {
            match &result {
                Err(VoiceError::Port(e)) if e.is_transient() => {
                    warn!(error = %redact(&chain(e)), "agent setup failed; trying again");
                    result = self.try_setup(connection_id, call_sid, now).await;
                }
                _ => break,
            }
        }
        if result.is_err() {
            self.post(connection_id, &RelayOut::end(Outcome::Failed, false)).await;
        }
        result
    }

    async fn try_setup(&self, connection_id: &str, call_sid: &str, now: DateTime<Utc>) -> Result<(), VoiceError> {
        let end = |why: &'static str| async move {
            warn!(reason = why, "ending an agent session at setup");
            self.post(connection_id, &RelayOut::end(Outcome::Failed, false)).await;
            Ok::<(), VoiceError>(())
        };
        let Some(binding) = self.store.connection(connection_id).await? else { return end("unknown connection").await };
        if !is_sid(call_sid, "CA") {
            return end("malformed call SID").await;
        }
        let r = &binding.call;
        let Some(ctx) = CallContext::load(self.store, r).await? else { return end("unknown cart").await };
        let entry = match self.store.call_in_partition(&r.merchant_id, &ctx.phone, call_sid).await? {
            Some(e) => Some(e),
            None => self.store.call_by_sid(call_sid).await?,
        };
        let Some(entry) =
            entry.filter(|e| e.merchant_id == r.merchant_id && e.cart_token == r.cart_token && e.step == r.step)
        else {
            return end("a call we did not place").await;
        };
        if !ctx.callable {
            return end("the person can no longer be called").await;
        }
        let days = i64::from(ctx.merchant.merchant.retention_days.recordings);
        let session = AgentSession {
            merchant_id: entry.merchant_id.clone(),
            phone: entry.phone.clone(),
            call_sid: call_sid.to_string(),
            cart_token: entry.cart_token.clone(),
            step: entry.step,
            lang: ctx.lang(),
            turn: 0,
            started_at: now,
            tools_used: Vec::new(),
            tokens_used: 0,
            outcome: None,
            ended: false,
            transcript: Vec::new(),
            purge_at: entry.created_at + ChronoDuration::days(days),
        };
        self.store.open_session(connection_id, &session).await?;
        info!(merchant = %entry.merchant_id, call = call_sid, step = entry.step, "agent session set up");
        Ok(())
    }

    /// The connection's session. Messages of one connection may be handled out of order, so a
    /// prompt that overtook its `setup` waits for it a moment (Twilio sends `setup` first).
    async fn live(&self, connection_id: &str) -> Result<Option<Live>, VoiceError> {
        let mut binding = self.store.connection(connection_id).await?;
        for _ in 0..SETUP_WAIT_TRIES {
            if binding.as_ref().is_some_and(|b| b.session.is_some()) {
                break;
            }
            tokio::time::sleep(SETUP_WAIT_STEP).await;
            binding = self.store.connection(connection_id).await?;
        }
        let Some(binding) = binding else { return Ok(None) };
        let Some(key) = binding.session else { return Ok(None) };
        let (session, ctx) = tokio::try_join!(self.store.session(&key), CallContext::load(self.store, &binding.call))?;
        let (Some(session), Some(mut ctx)) = (session, ctx) else { return Ok(None) };
        if ctx.phone != key.phone {
            // The cart's number changed since the call was placed: nothing goes to the new one,
            // and the person on the line is not the cart's any more.
            ctx.callable = false;
            ctx.textable = false;
        }
        Ok(Some(Live { key, session, ctx, call: binding.call }))
    }

    async fn prompt(&self, connection_id: &str, words: &str, now: DateTime<Utc>) -> Result<(), VoiceError> {
        let live = self.live(connection_id).await;
        // Opt-out first, whatever the model is doing, and whatever else could be read: without a
        // session (or when it could not be read) the Spanish table is heard too (it includes the
        // English one). Nobody resends these words, so a failed read is tried once more.
        let lang = live.as_ref().ok().and_then(Option::as_ref).map_or(Lang::Es, |l| l.session.lang);
        if let Some((scope, rule)) = classify_spoken(words, lang) {
            let known = live.as_ref().ok().and_then(Option::as_ref);
            let target = match self.opt_out_target(connection_id, known).await {
                Err(e) => {
                    warn!(error = %redact(&chain(&e)), "reading whom an opt-out is about failed; trying once more");
                    self.opt_out_target(connection_id, known).await?
                }
                found => found?,
            };
            let Some(target) = target else {
                warn!("an opt-out on a connection bound to no call: ending it");
                self.post(connection_id, &RelayOut::end(Outcome::Failed, false)).await;
                return Ok(());
            };
            return self.opt_out(connection_id, &target, scope, ConsentSource::Spoken, &rule, Some(words), now).await;
        }
        let Some(live) = live? else {
            warn!("prompt on a connection without a session: ending it");
            self.post(connection_id, &RelayOut::end(Outcome::Failed, false)).await;
            return Ok(());
        };
        if live.session.ended {
            return Ok(());
        }
        // The turn and the merchant's spend so far, in one round trip.
        let m = &live.ctx.merchant.merchant;
        let day = now.format("%Y-%m-%d").to_string();
        let (taken, merchant_tokens) =
            tokio::try_join!(self.take_turn(&live.key, live.session.clone(), Some(words), now), async {
                Ok::<_, VoiceError>(self.store.merchant_spend(&m.id, &day, 0).await?)
            })?;
        let Some((session, turn)) = taken else {
            return Ok(());
        };
        let brief = live.ctx.brief(live.call.step);
        let elapsed = (now - session.started_at).num_seconds();
        if !live.ctx.callable {
            // An order or an opt-out was acknowledged since the call began.
            self.speak(connection_id, &live.key, (turn, now), &line(Line::Goodbye, &brief), true).await?;
            return self.end(connection_id, &live.key, Outcome::Completed, false).await;
        }
        if turn > MAX_TURNS || elapsed > i64::from(m.voice.time_limit_seconds) {
            self.speak(connection_id, &live.key, (turn, now), &line(Line::TooLong, &brief), true).await?;
            return self.end(connection_id, &live.key, Outcome::Completed, false).await;
        }
        let mut history = session.history();
        match history.last_mut() {
            Some((Speaker::Caller, _)) => {}
            _ => history.push((Speaker::Caller, words.to_string())),
        }
        let req = ModelRequest {
            system: system_prompt(&brief),
            brief: brief.clone(),
            turns: history,
            tools: tool_specs(),
            max_tokens: MAX_ANSWER_TOKENS,
        };
        let over_budget =
            session.tokens_used >= self.limits.call_tokens || merchant_tokens >= self.limits.merchant_daily_tokens;
        let streamed = if over_budget {
            Streamed::Failed("budget")
        } else {
            self.stream(connection_id, &live, turn, &req, self.model, Some(self.limits.model_timeout), now).await?
        };
        let streamed = match streamed {
            Streamed::Failed(reason) => {
                metrics::count_by(metrics::AGENT_MODEL_FALLBACKS, "Reason", reason, 1);
                warn!(call = %live.key.call_sid, model = self.model.name(), reason, "the scripted agent takes this turn");
                if reason != "budget"
                    && !self.speak(connection_id, &live.key, (turn, now), &line(Line::Apology, &brief), false).await?
                {
                    return Ok(());
                }
                match self.stream(connection_id, &live, turn, &req, self.fallback, None, now).await? {
                    Streamed::Failed(_) => Streamed::Done { tools: Vec::new(), spoke: false },
                    other => other,
                }
            }
            other => other,
        };
        let Streamed::Done { tools, spoke } = streamed else { return Ok(()) };
        if spoke && tools.is_empty() {
            self.speak(connection_id, &live.key, (turn, now), "", true).await?;
        }
        // A tool of a turn an opt-out (or another ending) overtook is not carried out.
        if !tools.is_empty() && self.store.session(&live.key).await?.is_none_or(|s| s.ended) {
            return Ok(());
        }
        for (name, input) in tools {
            match Tool::parse(&name, &input) {
                Ok(tool) => {
                    if self.tool(connection_id, &live, &brief, turn, tool, words, now).await? {
                        break;
                    }
                }
                Err(reason) => {
                    warn!(call = %live.key.call_sid, %reason, "refused a tool call; the call goes on");
                }
            }
        }
        Ok(())
    }

    /// Moves the session to a new turn (the caller's words recorded with it). `None` when the
    /// session ended meanwhile.
    async fn take_turn(
        &self,
        key: &SessionKey,
        mut session: AgentSession,
        words: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Option<(AgentSession, u32)>, VoiceError> {
        for _ in 0..5 {
            let turn = session.turn + 1;
            let line = words.map(|w| TranscriptLine { turn, speaker: Speaker::Caller, text: w.to_string(), at: now });
            if self.store.next_turn(key, session.turn, line.as_ref()).await? {
                if let Some(l) = line {
                    session.transcript.push(l);
                }
                session.turn = turn;
                return Ok(Some((session, turn)));
            }
            match self.store.session(key).await? {
                Some(s) if !s.ended => session = s,
                _ => return Ok(None),
            }
        }
        Err(PortError::Conflict.into())
    }

    /// Streams one model answer as phrases, each first recorded for `turn` (and dropped if a
    /// newer turn began). Tool calls are collected for after the words.
    #[allow(clippy::too_many_arguments)]
    async fn stream<X: ConversationModel>(
        &self,
        connection_id: &str,
        live: &Live,
        turn: u32,
        req: &ModelRequest,
        model: &X,
        first_token_timeout: Option<Duration>,
        now: DateTime<Utc>,
    ) -> Result<Streamed, VoiceError> {
        let (tx, mut rx) = mpsc::channel(64);
        let call = model.converse(req, tx);
        tokio::pin!(call);
        let started = tokio::time::Instant::now();
        let first_deadline = started + first_token_timeout.unwrap_or(TURN_TIMEOUT);
        let turn_deadline = started + TURN_TIMEOUT;
        let (mut phrases, mut heard, mut spoke, mut call_done) = (Phrases::default(), false, false, false);
        let mut tools = Vec::new();
        loop {
            let deadline = if heard { turn_deadline } else { first_deadline };
            tokio::select! {
                biased;
                event = rx.recv() => match event {
                    None => break,
                    Some(ModelEvent::Text(t)) => {
                        heard = true;
                        for p in phrases.push(&t) {
                            let p = guard_phrase(&p, live.session.lang);
                            if !self.speak(connection_id, &live.key, (turn, now), &p, false).await? {
                                return Ok(Streamed::Superseded);
                            }
                            spoke = true;
                        }
                    }
                    Some(ModelEvent::Tool { name, input }) => {
                        heard = true;
                        tools.push((name, input));
                    }
                    Some(ModelEvent::Usage { input_tokens, output_tokens }) => {
                        // The call's cap counts what the model wrote; the merchant's day, all of it.
                        self.store.spend(&live.key, output_tokens).await?;
                        let day = now.format("%Y-%m-%d").to_string();
                        self.store.merchant_spend(&live.key.merchant_id, &day, input_tokens.saturating_add(output_tokens)).await?;
                    }
                },
                res = &mut call, if !call_done => {
                    call_done = true;
                    if let Err(e) = res {
                        let throttled = chain(&e).to_ascii_lowercase().contains("throttl");
                        warn!(call = %live.key.call_sid, model = model.name(), error = %redact(&chain(&e)), "the model failed");
                        if !heard {
                            return Ok(Streamed::Failed(if throttled { "throttled" } else { "error" }));
                        }
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    if !heard {
                        return Ok(Streamed::Failed("slow"));
                    }
                    warn!(call = %live.key.call_sid, "the model's answer ran past the turn limit; cut short");
                    break;
                }
            }
        }
        if let Some(rest) = phrases.finish() {
            let rest = guard_phrase(&rest, live.session.lang);
            if !self.speak(connection_id, &live.key, (turn, now), &rest, false).await? {
                return Ok(Streamed::Superseded);
            }
            spoke = true;
        }
        if !heard && first_token_timeout.is_some() {
            return Ok(Streamed::Failed("empty"));
        }
        Ok(Streamed::Done { tools, spoke })
    }

    /// Carries out a tool call. `true` when the session ended.
    #[allow(clippy::too_many_arguments)]
    async fn tool(
        &self,
        connection_id: &str,
        live: &Live,
        brief: &Brief,
        turn: u32,
        tool: Tool,
        words: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, VoiceError> {
        let key = &live.key;
        info!(call = %key.call_sid, tool = tool.name(), "agent tool");
        match tool {
            Tool::SendRecoveryLink => {
                let said = if !brief.can_text {
                    Line::LinkUnavailable
                } else if !self.store.use_tool(key, tool.name(), true).await? {
                    Line::LinkAlreadySent
                } else {
                    match text_link(self.store, self.sms, self.public_base_url, &live.ctx, live.call.step, now).await? {
                        LinkOutcome::Sent => {
                            self.store.finish_session(key, Outcome::LinkSent, false, false).await?;
                            Line::LinkSent
                        }
                        LinkOutcome::AlreadySent => Line::LinkAlreadySent,
                        LinkOutcome::Unavailable => Line::LinkUnavailable,
                    }
                };
                self.speak(connection_id, key, (turn, now), &line(said, brief), true).await?;
                // The link is the last thing to do on a call: a session whose link just went out
                // stays open for questions, but its outcome is already recorded.
                Ok(false)
            }
            Tool::OptOut(scope) => {
                let rule = "model_tool:opt_out";
                if let Some(target) = self.opt_out_target(connection_id, Some(live)).await? {
                    self.opt_out(connection_id, &target, scope, ConsentSource::Spoken, rule, Some(words), now).await?;
                }
                Ok(true)
            }
            Tool::EndCall(reason) => {
                self.store.use_tool(key, tool.name(), false).await?;
                let outcome = match reason {
                    EndReason::Declined => Outcome::Declined,
                    EndReason::Completed | EndReason::Abuse => Outcome::Completed,
                };
                if reason == EndReason::Abuse {
                    self.speak(connection_id, key, (turn, now), &line(Line::Abuse, brief), true).await?;
                }
                self.end(connection_id, key, outcome, false).await?;
                Ok(true)
            }
            Tool::ReachAPerson => {
                self.store.use_tool(key, tool.name(), false).await?;
                self.speak(connection_id, key, (turn, now), &line(Line::Person, brief), true).await?;
                if brief.can_transfer {
                    self.store.finish_session(key, Outcome::Completed, false, true).await?;
                    self.post(connection_id, &RelayOut::end(Outcome::Completed, true)).await;
                    return Ok(true);
                }
                Ok(false)
            }
        }
    }

    async fn dtmf(&self, connection_id: &str, digit: &str, now: DateTime<Utc>) -> Result<(), VoiceError> {
        if digit.trim() != "9" {
            return Ok(());
        }
        // As for a spoken opt-out: a failed read is tried once more, the session being optional.
        let live = self.live(connection_id).await.ok().flatten();
        let target = match self.opt_out_target(connection_id, live.as_ref()).await {
            Err(e) => {
                warn!(error = %redact(&chain(&e)), "reading whom key 9 is about failed; trying once more");
                self.opt_out_target(connection_id, live.as_ref()).await?
            }
            found => found?,
        };
        let Some(target) = target else {
            warn!("key 9 on a connection bound to no call: nothing to opt out");
            return Ok(());
        };
        self.opt_out(connection_id, &target, Scope::Calls, ConsentSource::KeyPress, "key:9", None, now).await
    }

    /// An interrupt starts a new turn, so the older turn's remaining words are never sent.
    async fn interrupt(&self, connection_id: &str, now: DateTime<Utc>) -> Result<(), VoiceError> {
        let Some(live) = self.live(connection_id).await? else { return Ok(()) };
        if let Some((_, turn)) = self.take_turn(&live.key, live.session, None, now).await? {
            info!(call = %live.key.call_sid, turn, "interrupted: the older turn stops");
        }
        Ok(())
    }

    /// Records the opt-out (for what its words cover), cancels pending steps, says one
    /// confirmation naming the merchant and ends the session. A voice opt-out is made durable on
    /// the queue first (the WebSocket message is never resent); the session is ended before the
    /// confirmation, so no older turn's words and no later prompt speak after it.
    #[allow(clippy::too_many_arguments)]
    async fn opt_out(
        &self,
        connection_id: &str,
        target: &OptOutTarget,
        scope: Scope,
        source: ConsentSource,
        rule: &str,
        words: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), VoiceError> {
        let (key, m) = (&target.key, &target.merchant);
        // One durable copy for every channel it covers: a storage error below loses nothing.
        let mut o = KeyOptOut::key_9(m.id.clone(), key.phone.clone(), key.call_sid.clone(), now);
        o.channels = scope.channels().to_vec();
        if source == ConsentSource::Spoken {
            o.spoken = Some(SpokenOptOut { rule: rule.to_string(), words: words.map(str::to_string) });
        }
        let durable = match self.outreach_queue.enqueue_key_opt_out(&o, KEY_OPT_OUT_REPLAY_DELAY_SECONDS).await {
            Ok(_) => true,
            Err(e) => {
                warn!(merchant = %m.id, call = %key.call_sid, error = %redact(&chain(&e)), "could not queue the opt-out; recording it inline only");
                false
            }
        };
        let mut in_force = true;
        for channel in scope.channels() {
            let event = o.event(*channel);
            let mut recorded = consent::record(self.store, m, &key.phone, &event, now).await;
            if recorded.is_err() {
                recorded = consent::record(self.store, m, &key.phone, &event, now).await;
            }
            if let Err(e) = recorded {
                warn!(merchant = %m.id, call = %key.call_sid, channel = channel.as_str(), error = %redact(&chain(&e)), "could not record the opt-out inline");
                // The queued copy applies it; without one the error is the answer.
                if !durable {
                    return Err(e.into());
                }
                in_force = false;
            }
        }
        info!(merchant = %m.id, call = %key.call_sid, phone = %key.phone.log_id(), scope = ?scope, source = source.as_str(), in_force, "agent: opt-out heard");
        // Confirmed as done only once it is recorded; otherwise said to be received.
        let calls_only = scope == Scope::Calls;
        let confirmation = if in_force {
            opt_out_confirmation(&m.name, target.lang, calls_only)
        } else {
            opt_out_received(&m.name, target.lang, calls_only)
        };
        if target.has_session {
            if let Err(e) = self.store.finish_session(key, Outcome::OptedOut, true, true).await {
                warn!(call = %key.call_sid, error = %redact(&chain(&e)), "could not end the session after an opt-out");
            }
            let line =
                TranscriptLine { turn: target.turn, speaker: Speaker::Agent, text: confirmation.clone(), at: now };
            if let Err(e) = self.store.append_line(key, &line).await {
                warn!(call = %key.call_sid, error = %redact(&chain(&e)), "could not note the confirmation in the transcript");
            }
        }
        self.post(connection_id, &RelayOut::Text { token: confirmation, last: true }).await;
        self.post(connection_id, &RelayOut::end(Outcome::OptedOut, false)).await;
        Ok(())
    }

    /// Whom an opt-out heard on `connection_id` is about: the live session, else (no session or
    /// cart to read) the call the connection is bound to.
    async fn opt_out_target(
        &self,
        connection_id: &str,
        live: Option<&Live>,
    ) -> Result<Option<OptOutTarget>, VoiceError> {
        if let Some(l) = live {
            return Ok(Some(OptOutTarget {
                key: l.key.clone(),
                merchant: l.ctx.merchant.merchant.clone(),
                lang: l.session.lang,
                turn: l.session.turn + 1,
                has_session: true,
            }));
        }
        let Some(binding) = self.store.connection(connection_id).await? else { return Ok(None) };
        let Some(key) = binding.session else {
            // Twilio connected this call to us (the upgrade was signed for the call's URL), but no
            // session was opened: the words still count, for the number the call's cart holds.
            // The connection id stands in for the call SID, which only `setup` would have told.
            let Some(ctx) = CallContext::load(self.store, &binding.call).await? else { return Ok(None) };
            return Ok(Some(OptOutTarget {
                key: SessionKey {
                    merchant_id: binding.call.merchant_id.clone(),
                    phone: ctx.phone,
                    call_sid: format!("ws:{connection_id}"),
                },
                merchant: ctx.merchant.merchant,
                lang: Lang::En,
                turn: 1,
                has_session: false,
            }));
        };
        let Some(record) = self.store.get_merchant(&key.merchant_id).await? else { return Ok(None) };
        let session = self.store.session(&key).await?;
        Ok(Some(OptOutTarget {
            lang: session.as_ref().map_or(Lang::En, |s| s.lang),
            turn: session.as_ref().map_or(1, |s| s.turn + 1),
            key,
            merchant: record.merchant,
            has_session: true,
        }))
    }

    async fn end(
        &self,
        connection_id: &str,
        key: &SessionKey,
        outcome: Outcome,
        transfer: bool,
    ) -> Result<(), VoiceError> {
        self.store.finish_session(key, outcome, false, true).await?;
        let stored = self.store.session(key).await?.and_then(|s| s.outcome).unwrap_or(outcome);
        self.post(connection_id, &RelayOut::end(stored, transfer)).await;
        Ok(())
    }

    /// Says `text` for `turn`: recorded first, conditionally on the turn; `false` (and nothing
    /// sent) when a newer turn began or the caller is gone.
    async fn speak(
        &self,
        connection_id: &str,
        key: &SessionKey,
        (turn, now): (u32, DateTime<Utc>),
        text: &str,
        last: bool,
    ) -> Result<bool, VoiceError> {
        if !text.is_empty() {
            let l = TranscriptLine { turn, speaker: Speaker::Agent, text: text.to_string(), at: now };
            if !self.store.say(key, &l).await? {
                return Ok(false);
            }
        }
        match self.relay.post(connection_id, &RelayOut::Text { token: text.to_string(), last }).await {
            Ok(()) => Ok(true),
            Err(PortError::NotFound(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Best effort: a connection that is gone has nothing left to end.
    async fn post(&self, connection_id: &str, msg: &RelayOut) {
        if let Err(e) = self.relay.post(connection_id, msg).await {
            warn!(error = %redact(&chain(&e)), "could not send to the relay connection");
        }
    }
}
