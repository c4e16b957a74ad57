//! The shoppers who pick up the agent's calls: every call the worker places is answered by a
//! person (the sandbox posts the signed answer webhook, opens ConversationRelay to the voice
//! agent, sends `setup`), who then follows a script drawn for the call: asks for the link twice,
//! says "stop calling me" (calls only) or "stop" (calls and texts), or declines. Meanwhile a
//! share of the agent's `PostToConnection` calls are refused or delivered with their answer
//! lost (`callfy_local::relay::PostFault`).

use crate::rng::Rng;
use callfy_local::LocalHandle;
use callfy_local::relay::{PostFault, PostFaults};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the shopper on a call does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Script {
    /// "Can you text me the link?", asked again, then "Not now, thanks".
    LinkTwice,
    /// "Please stop calling me." (an opt-out of calls).
    StopCalling,
    /// "Stop." (an opt-out of calls and texts).
    Stop,
    /// "Not now, thanks".
    Decline,
}

impl Script {
    pub const ALL: [Script; 4] = [Self::LinkTwice, Self::StopCalling, Self::Stop, Self::Decline];

    fn draw(rng: &Rng) -> Self {
        match rng.below(100) {
            0..35 => Self::LinkTwice,
            35..55 => Self::StopCalling,
            55..65 => Self::Stop,
            _ => Self::Decline,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::LinkTwice => "asks for the link twice",
            Self::StopCalling => "\"Please stop calling me.\"",
            Self::Stop => "\"Stop.\"",
            Self::Decline => "\"Not now, thanks\"",
        }
    }

    /// The opt-out it says: (calls, texts).
    pub fn opts_out(self) -> Option<(bool, bool)> {
        match self {
            Self::StopCalling => Some((true, false)),
            Self::Stop => Some((true, true)),
            _ => None,
        }
    }
}

/// One call as the shopper lived it.
#[derive(Debug, Clone)]
pub struct CallLived {
    pub sid: String,
    pub to: String,
    pub script: Script,
    /// The answer webhook's TwiML connected the call to the agent.
    pub connected: bool,
    /// The opt-out's words were sent over the socket, and when.
    pub opt_out_said: Option<Duration>,
    /// The agent confirmed it (its `end` says `opted_out`).
    pub opt_out_confirmed: bool,
    /// The agent said it texted the link (first ask), and said it already had (second).
    pub link_texted_said: bool,
    pub link_already_said: bool,
    /// The agent ended the session before the shopper had said everything (a call it could
    /// not match to its record yet, a setup that could not be stored).
    pub ended_early: bool,
    pub error: Option<String>,
}

/// What `said` answers once the agent has ended the session.
const ENDED: &str = "the agent ended the session";

#[derive(Debug, Default)]
pub struct RelayFaultCounts {
    pub posts: AtomicU64,
    pub delivered_but_failed: AtomicU64,
    pub refused: AtomicU64,
}

/// The relay faults' draw: `rate` of posts while `on`, half refused, half delivered with their
/// answer lost.
pub fn relay_faults(rate: f64, seed: u64, on: Arc<AtomicBool>, counts: Arc<RelayFaultCounts>) -> PostFaults {
    let rng = Rng::new(seed);
    Box::new(move || {
        counts.posts.fetch_add(1, Ordering::Relaxed);
        if !on.load(Ordering::Relaxed) || !rng.chance(rate) {
            return PostFault::None;
        }
        if rng.chance(0.5) {
            counts.refused.fetch_add(1, Ordering::Relaxed);
            PostFault::Refused
        } else {
            counts.delivered_but_failed.fetch_add(1, Ordering::Relaxed);
            PostFault::DeliveredButFailed
        }
    })
}

/// Answers every call the sandbox takes until `stop`, each in a task of its own.
pub fn spawn_answering(
    local: Arc<LocalHandle>,
    seed: u64,
    stop: Arc<AtomicBool>,
    lived: Arc<Mutex<Vec<CallLived>>>,
    epoch: Instant,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let rng = Rng::new(seed);
        let mut seen = HashSet::new();
        let mut calls = tokio::task::JoinSet::new();
        loop {
            let stopping = stop.load(Ordering::SeqCst);
            for c in local.sandbox.calls() {
                if c.status == "queued" && seen.insert(c.sid.clone()) {
                    let (local, lived) = (Arc::clone(&local), Arc::clone(&lived));
                    let script = Script::draw(&rng);
                    calls.spawn(async move {
                        let call = converse(&local, &c.sid, &c.to, script, epoch).await;
                        lived.lock().unwrap_or_else(|e| e.into_inner()).push(call);
                    });
                }
            }
            while calls.try_join_next().is_some() {}
            if stopping {
                while calls.join_next().await.is_some() {}
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
}

async fn converse(local: &LocalHandle, sid: &str, to: &str, script: Script, epoch: Instant) -> CallLived {
    let mut lived = CallLived {
        sid: sid.to_string(),
        to: to.to_string(),
        script,
        connected: false,
        opt_out_said: None,
        opt_out_confirmed: false,
        link_texted_said: false,
        link_already_said: false,
        ended_early: false,
        error: None,
    };
    let sb = &local.sandbox;
    match sb.answer_call(sid, "human").await {
        Ok(turn) if turn.relay_url.is_some() => {
            lived.connected = true;
            let mut handoff = None;
            match sb.relay(sid).await {
                Ok(session) => {
                    // Twilio speaks the greeting first; once the agent has sent `end`, the
                    // session is over and nothing the shopper says reaches the agent.
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    let said = |words: &'static str| {
                        let session = &session;
                        async move {
                            if session.received().iter().any(|m| m["type"] == "end") || session.is_closed() {
                                return Err(ENDED.to_string());
                            }
                            session.say(words).await
                        }
                    };
                    let replies = match script {
                        Script::LinkTwice => {
                            let mut r = vec![said("Can you text me the link?").await];
                            lived.link_texted_said =
                                r[0].as_ref().is_ok_and(|r| r.text.contains("texted you the link"));
                            r.push(said("Please send me the link again").await);
                            lived.link_already_said = r[1].as_ref().is_ok_and(|r| r.text.contains("already texted"));
                            r.push(said("Not now, thanks").await);
                            r
                        }
                        Script::StopCalling | Script::Stop => {
                            let words = if script == Script::Stop { "Stop." } else { "Please stop calling me." };
                            let at = epoch.elapsed();
                            let r = said(words).await;
                            if !r.as_ref().is_err_and(|e| e == ENDED) {
                                lived.opt_out_said = Some(at);
                            }
                            lived.opt_out_confirmed =
                                r.as_ref().is_ok_and(|r| r.ended.as_deref().is_some_and(|h| h.contains("opted_out")));
                            vec![r]
                        }
                        Script::Decline => vec![said("Not now, thanks").await],
                    };
                    handoff = replies.iter().rev().find_map(|r| r.as_ref().ok().and_then(|r| r.ended.clone()));
                    match replies.iter().find_map(|r| r.as_ref().err()) {
                        Some(e) if e == ENDED => lived.ended_early = true,
                        Some(e) => lived.error = Some(e.clone()),
                        None => {}
                    }
                    if handoff.is_none() {
                        handoff = session
                            .received()
                            .iter()
                            .find(|m| m["type"] == "end")
                            .map(|m| m["handoffData"].as_str().unwrap_or_default().to_string());
                    }
                    session.close();
                }
                Err(e) => lived.error = Some(e),
            }
            if let Err(e) = sb.relay_ended(sid, handoff.as_deref()).await {
                lived.error.get_or_insert(e);
            }
        }
        Ok(_) => {}
        Err(e) => lived.error = Some(e),
    }
    if let Err(e) = sb.end_call(sid, "completed", 30).await {
        lived.error.get_or_insert(e);
    }
    lived
}

/// What the calls show at the end, for the checks and the report.
#[derive(Debug, Clone, Default)]
pub struct CallsSeen {
    pub placed: u64,
    pub connected: u64,
    pub by_script: HashMap<Script, u64>,
    /// Opt-outs said, confirmed by the agent's `end`, and found recorded at the end (voice and,
    /// for "stop", texts opted out; the voice suppression record kept).
    pub opt_outs_said: u64,
    pub opt_outs_confirmed: u64,
    /// Opt-outs said whose recording is missing at the end: (call SID, what is wrong).
    pub opt_outs_not_recorded: Vec<(String, String)>,
    /// Link asks: calls that asked twice, link texts Twilio took for them, calls that got more
    /// than one.
    pub link_calls: u64,
    pub link_texts: u64,
    pub link_texted_twice: Vec<String>,
    /// Calls the agent ended before the shopper had said everything.
    pub ended_early: u64,
    pub errors: u64,
}
