//! The sandbox as Twilio's side of ConversationRelay: it opens the agent's WebSocket with
//! `X-Twilio-Signature` (the account token over the exact URL from the TwiML), sends `setup`,
//! then the shopper's `prompt`s, keys (`dtmf`) and `interrupt`s, and collects what the agent
//! sends back. When the agent ends the session it posts the `<Connect action>` callback, signed.

use crate::sandbox::Sandbox;
use callfy_shared::twilio_signature;
use futures::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// One open ConversationRelay session.
pub struct RelaySession {
    pub call_sid: String,
    out: mpsc::UnboundedSender<Message>,
    received: Arc<Mutex<Vec<(Instant, Value)>>>,
    closed: Arc<Mutex<bool>>,
    notify: Arc<Notify>,
    /// The greeting Twilio spoke before the session (from the TwiML).
    pub greeting: String,
}

/// What the agent answered to one prompt or key.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct AgentReply {
    /// The `text` tokens, joined.
    pub text: String,
    /// The `end` message's `handoffData`, when the agent ended the session.
    pub ended: Option<String>,
    /// From sending to the last message of the reply.
    pub elapsed_ms: u64,
    /// From sending to the first message of the reply.
    pub first_ms: Option<u64>,
    /// The same, exactly (benchmarks).
    #[serde(skip)]
    pub first: Option<Duration>,
}

impl RelaySession {
    /// Connects to `url` signed with `auth_token`; `signature` overrides it (forgery tests).
    pub async fn open(url: &str, auth_token: &str, signature: Option<&str>) -> Result<Self, String> {
        let mut req = url.into_client_request().map_err(|e| e.to_string())?;
        let sig = signature.map_or_else(|| twilio_signature::compute(auth_token, url, &[]), str::to_string);
        if !sig.is_empty() {
            req.headers_mut().insert(twilio_signature::HEADER, sig.parse().map_err(|_| "bad header".to_string())?);
        }
        // Past the agent's own timeout (29 s, answered 504), Twilio gives up on the upgrade.
        let (ws, _) = tokio::time::timeout(Duration::from_secs(35), tokio_tungstenite::connect_async(req))
            .await
            .map_err(|_| "the upgrade was not answered in time".to_string())?
            .map_err(|e| format!("upgrade refused: {e}"))?;
        let (mut sink, mut stream) = ws.split();
        let (out, mut rx) = mpsc::unbounded_channel::<Message>();
        tokio::spawn(async move {
            while let Some(m) = rx.recv().await {
                if sink.send(m).await.is_err() {
                    break;
                }
            }
        });
        let received = Arc::new(Mutex::new(Vec::new()));
        let closed = Arc::new(Mutex::new(false));
        let notify = Arc::new(Notify::new());
        let (r, c, n) = (Arc::clone(&received), Arc::clone(&closed), Arc::clone(&notify));
        tokio::spawn(async move {
            while let Some(Ok(m)) = stream.next().await {
                if let Message::Text(t) = m
                    && let Ok(v) = serde_json::from_str::<Value>(t.as_str())
                {
                    r.lock().unwrap_or_else(|e| e.into_inner()).push((Instant::now(), v));
                    n.notify_waiters();
                }
            }
            *c.lock().unwrap_or_else(|e| e.into_inner()) = true;
            n.notify_waiters();
        });
        Ok(Self { call_sid: String::new(), out, received, closed, notify, greeting: String::new() })
    }

    pub fn send(&self, v: &Value) -> Result<(), String> {
        self.out.send(Message::Text(v.to_string().into())).map_err(|_| "the socket is closed".to_string())
    }

    pub fn send_raw(&self, text: &str) -> Result<(), String> {
        self.out.send(Message::Text(text.to_string().into())).map_err(|_| "the socket is closed".to_string())
    }

    /// `setup` for `call_sid`, as Twilio sends it (the numbers included: we never read them).
    pub fn setup(
        &mut self,
        account_sid: &str,
        call_sid: &str,
        from: &str,
        to: &str,
        call_param: &str,
    ) -> Result<(), String> {
        self.call_sid = call_sid.to_string();
        self.send(&json!({
            "type": "setup", "sessionId": format!("VX{}", uuid::Uuid::new_v4().simple()),
            "accountSid": account_sid, "callSid": call_sid, "from": from, "to": to,
            "direction": "outbound-api", "callStatus": "in-progress",
            "customParameters": { "call": call_param },
        }))
    }

    pub fn received(&self) -> Vec<Value> {
        self.received.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|(_, v)| v.clone()).collect()
    }

    fn received_at(&self) -> Vec<(Instant, Value)> {
        self.received.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn is_closed(&self) -> bool {
        *self.closed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for the reply to what was just sent: `text` until one with `last`, or `end`.
    pub async fn reply_after(&self, from: usize, sent_at: Instant, timeout: Duration) -> AgentReply {
        let mut deadline = Instant::now() + timeout;
        let mut grace = false;
        loop {
            let notified = self.notify.notified();
            let msgs = self.received_at();
            let mut reply = AgentReply::default();
            let mut done = false;
            let mut last_at = None;
            for (i, (at, m)) in msgs.iter().enumerate().skip(from) {
                if i == from {
                    reply.first = Some(at.duration_since(sent_at));
                    reply.first_ms = Some(at.duration_since(sent_at).as_millis() as u64);
                }
                last_at = Some(*at);
                match m["type"].as_str() {
                    Some("text") => {
                        reply.text.push_str(m["token"].as_str().unwrap_or_default());
                        done |= m["last"].as_bool() == Some(true);
                    }
                    Some("end") => {
                        reply.ended = Some(m["handoffData"].as_str().unwrap_or_default().to_string());
                        done = true;
                    }
                    _ => {}
                }
            }
            // A last `text` may be followed at once by `end` (an opt-out's confirmation): a
            // moment's grace to see it.
            if done && reply.ended.is_none() && !grace {
                grace = true;
                deadline = Instant::now() + Duration::from_millis(200);
            } else if (done && reply.ended.is_some()) || self.is_closed() || Instant::now() >= deadline {
                reply.elapsed_ms = last_at.unwrap_or_else(Instant::now).duration_since(sent_at).as_millis() as u64;
                reply.text = reply.text.trim().to_string();
                return reply;
            }
            let _ = tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), notified).await;
        }
    }

    /// The shopper says `words`; returns the agent's reply.
    pub async fn say(&self, words: &str) -> Result<AgentReply, String> {
        let from = self.received().len();
        let at = Instant::now();
        self.send(&json!({ "type": "prompt", "voicePrompt": words, "lang": "en-US", "last": true }))?;
        Ok(self.reply_after(from, at, Duration::from_secs(15)).await)
    }

    /// The shopper presses a key.
    pub async fn press(&self, digit: &str) -> Result<AgentReply, String> {
        let from = self.received().len();
        let at = Instant::now();
        self.send(&json!({ "type": "dtmf", "digit": digit }))?;
        Ok(self.reply_after(from, at, Duration::from_secs(15)).await)
    }

    /// The shopper talks over the agent.
    pub fn interrupt(&self, heard: &str) -> Result<(), String> {
        self.send(&json!({ "type": "interrupt", "utteranceUntilInterrupt": heard, "durationUntilInterruptMs": 800 }))
    }

    pub fn close(&self) {
        let _ = self.out.send(Message::Close(None));
    }
}

impl Sandbox {
    /// Opens ConversationRelay for an answered call whose TwiML connected it to the agent, and
    /// sends `setup`, as Twilio does.
    pub async fn relay(&self, sid: &str) -> Result<RelaySession, String> {
        let c = self.call(sid).ok_or_else(|| format!("no call {sid}"))?;
        let url = c.relay_url.clone().ok_or_else(|| format!("call {sid} is not connected to an agent"))?;
        let mut session = RelaySession::open(&url, self.auth_token(), None).await?;
        let param = url.split_once("call=").map(|(_, v)| v).unwrap_or_default();
        let param = serde_urlencoded::from_str::<Vec<(String, String)>>(&format!("call={param}"))
            .ok()
            .and_then(|v| v.into_iter().next())
            .map(|(_, v)| v)
            .unwrap_or_default();
        session.setup(&self.account_sid(), sid, &c.from, &c.to, &param)?;
        session.greeting = c.said.last().cloned().unwrap_or_default();
        println!("[twilio-sandbox] call {sid}: ConversationRelay connected to the agent");
        Ok(session)
    }

    /// The session ended: the `<Connect action>` callback, signed, as Twilio posts it. Returns
    /// the TwiML that follows (a `<Dial>` for a transfer, else a hang-up).
    pub async fn relay_ended(
        &self,
        sid: &str,
        handoff: Option<&str>,
    ) -> Result<crate::sandbox_voice::CallTurn, String> {
        let c = self.call(sid).ok_or_else(|| format!("no call {sid}"))?;
        let action = c.relay_action.clone().ok_or_else(|| format!("call {sid} has no relay action"))?;
        let mut form = vec![
            ("AccountSid".to_string(), self.account_sid()),
            ("CallSid".to_string(), sid.to_string()),
            ("CallStatus".to_string(), "in-progress".to_string()),
            ("SessionId".to_string(), format!("VX{}", uuid::Uuid::new_v4().simple())),
            ("SessionStatus".to_string(), "ended".to_string()),
            ("SessionDuration".to_string(), "30".to_string()),
        ];
        if let Some(h) = handoff {
            form.push(("HandoffData".to_string(), h.to_string()));
        }
        let (status, body) = self.post_signed(&action, &form).await?;
        Ok(crate::sandbox_voice::CallTurn::parse(status, &body))
    }
}

impl Sandbox {
    /// `run-local`: an agent call stays open for `scripts/call-in --say …` for up to two
    /// minutes, then the sandbox hangs up; an `end` from the agent ends it at once.
    pub(crate) async fn converse(&self, sid: &str) {
        let session = match self.relay(sid).await {
            Ok(s) => Arc::new(s),
            Err(e) => {
                eprintln!("[twilio-sandbox] call {sid}: could not open ConversationRelay: {e}");
                let _ = self.end_call(sid, "completed", 5).await;
                return;
            }
        };
        println!(
            "[twilio-sandbox] call {sid} is talking to the agent: scripts/call-in --say \"what was in my cart?\" or scripts/call-in 9"
        );
        self.relays.lock().unwrap_or_else(|e| e.into_inner()).insert(sid.to_string(), Arc::clone(&session));
        let mut handoff = None;
        for _ in 0..240 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            handoff = session
                .received()
                .iter()
                .find(|m| m["type"] == "end")
                .map(|m| m["handoffData"].as_str().unwrap_or_default().to_string());
            if handoff.is_some() || session.is_closed() {
                break;
            }
        }
        session.close();
        self.relays.lock().unwrap_or_else(|e| e.into_inner()).remove(sid);
        match self.relay_ended(sid, handoff.as_deref()).await {
            Ok(turn) => {
                if let Some(n) = &turn.dial {
                    println!("[twilio-sandbox] call {sid} is transferred to {n}");
                }
            }
            Err(e) => eprintln!("[twilio-sandbox] call {sid}: relay-ended callback failed: {e}"),
        }
        let _ = self.end_call(sid, "completed", 60).await;
    }

    fn latest_relay(&self) -> Option<Arc<RelaySession>> {
        let relays = self.relays.lock().unwrap_or_else(|e| e.into_inner());
        let calls = self.calls();
        calls.iter().rev().find_map(|c| relays.get(&c.sid).cloned())
    }

    /// `scripts/call-in --say`: the shopper speaks on the newest agent call.
    pub async fn say_latest(&self, text: &str) -> Result<AgentReply, String> {
        let session = self.latest_relay().ok_or("no call is talking to the agent")?;
        println!("[twilio-sandbox] call {}: the shopper says: {text}", session.call_sid);
        let reply = session.say(text).await?;
        println!("[twilio-sandbox] call {}: the agent says: {}", session.call_sid, reply.text);
        Ok(reply)
    }

    /// `scripts/call-in 9` on an agent call; `None` when no agent call is open.
    pub async fn press_latest_agent(&self, digits: &str) -> Option<Result<AgentReply, String>> {
        let session = self.latest_relay()?;
        println!("[twilio-sandbox] call {}: the shopper presses {digits}", session.call_sid);
        Some(session.press(digits).await)
    }
}
