//! The campaign's verdict, from what the store holds, what Twilio (the sandbox) took, what the
//! dead-letter queue holds and what each request was answered. Pure: the unit tests feed it
//! made-up outcomes.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// What happened to one cart on the driver's side.
#[derive(Debug, Clone, Default)]
pub struct CartOutcome {
    /// The shopper consented and the delivery carrying it (or the consent API call) was answered 2xx.
    pub consent_acked: bool,
    /// The first delivery was answered 2xx.
    pub created: bool,
    /// A STOP was texted (whatever the answer).
    pub stop_sent: bool,
    /// When our answer to the STOP (200, TwiML) arrived.
    pub stop_acked: Option<Duration>,
    /// An order was sent (retried until answered).
    pub order_sent: bool,
    pub order_acked: Option<Duration>,
    /// The keywords of a STOP/START storm from the cart's phone, in the order sent.
    pub storm: Vec<KeywordSent>,
    /// A data-subject deletion of the cart's phone.
    pub deletion: Option<DeletionSent>,
}

/// One keyword of a storm as sent and answered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeywordSent {
    pub text: String,
    /// STOP-type (opt-out); otherwise START-type.
    pub opt_out: bool,
    pub sid: String,
    /// The same MessageSid as the keyword before it (a proxy's replay of that message).
    pub replay: bool,
    /// Our answer's status (None: no answer).
    pub status: Option<u16>,
    /// When a 2xx answer arrived.
    pub acked: Option<Duration>,
    /// The answer's TwiML `<Message>`, if any.
    pub reply: Option<String>,
}

impl KeywordSent {
    /// A START is honoured when its answer confirms the re-subscription (the merchant applied it).
    pub fn honoured_start(&self) -> bool {
        !self.opt_out && self.acked.is_some() && self.reply.as_deref().is_some_and(|r| r.contains("subscribed again"))
    }
}

/// What a storm's answers say the phone's SMS consent must be at the end: the last keyword
/// whose effect is certain (an acknowledged STOP-type, a START answered with its confirmation)
/// and what a later keyword whose effect is unknown (no answer; a START answered with nothing,
/// whose queued copy may still apply it) may have done. A replay counts with its original.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StormExpectation {
    /// The last certain keyword's index, and whether it opted out.
    pub last_certain: Option<(usize, bool)>,
    /// Opted out / opted in are each allowed at the end.
    pub may_be_out: bool,
    pub may_be_in: bool,
}

pub fn storm_expectation(words: &[KeywordSent]) -> StormExpectation {
    // Groups: an original and the replays right after it.
    let mut groups: Vec<(usize, bool, bool)> = Vec::new(); // (index, opt_out, certain)
    for (i, w) in words.iter().enumerate() {
        let certain = if w.opt_out { w.acked.is_some() } else { w.honoured_start() };
        match groups.last_mut() {
            Some(g) if w.replay && g.1 == w.opt_out => g.2 |= certain,
            _ => groups.push((i, w.opt_out, certain)),
        }
    }
    let last = groups.iter().rposition(|g| g.2);
    let Some(at) = last else {
        return StormExpectation { last_certain: None, may_be_out: true, may_be_in: true };
    };
    let (idx, out, _) = groups[at];
    let mut e = StormExpectation { last_certain: Some((idx, out)), may_be_out: out, may_be_in: !out };
    for g in &groups[at + 1..] {
        if g.1 {
            e.may_be_out = true;
        } else {
            e.may_be_in = true;
        }
    }
    e
}

/// When sends to a storm phone are barred: from each acknowledged STOP-type keyword until a
/// START answered with its confirmation (an unconfirmed START lifts nothing).
fn storm_blocks(words: &[KeywordSent], t: Duration) -> bool {
    let mut latest: Option<(Duration, bool)> = None;
    for w in words {
        let at = match w.acked {
            Some(at) if (w.opt_out || w.honoured_start()) && at < t => at,
            _ => continue,
        };
        if latest.is_none_or(|(l, _)| at >= l) {
            latest = Some((at, w.opt_out));
        }
    }
    latest.is_some_and(|(_, out)| out)
}

/// A data-subject deletion as sent and answered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeletionSent {
    /// Through Shopify's `customers/redact` (carried out by the worker from the queue), else
    /// the consent API (carried out before the answer).
    pub shopify: bool,
    pub id: Option<String>,
    /// When the request was answered 2xx.
    pub acked: Option<Duration>,
    /// When its status first read done (the API's answer says so at once).
    pub done: Option<Duration>,
}

/// What the end of the run shows of a deletion.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeletionSeen {
    /// The request's status (`done`, `accepted`, `held`; None: no such request).
    pub status: Option<String>,
    /// Kinds of Twilio copies still pending removal, with counts.
    pub provider_pending: Vec<(String, u64)>,
    /// Items of the table holding the raw phone (E.164) after the drain.
    pub raw_phone_items: u64,
    /// A few of their keys (pk / sk), for the report.
    pub examples: Vec<String>,
}

/// A phone's consent at the end, for the storm and suppression checks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PhoneSeen {
    /// SMS consent: Some(true) opted out, Some(false) opted in, None unknown.
    pub sms_out: Option<bool>,
    pub sms_suppressed: bool,
    pub voice_suppressed: bool,
}

/// One retention run made during the campaign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeRun {
    /// Its `as_of`, in milliseconds since the epoch (what matches it to its audit record).
    pub as_of_ms: i64,
    pub under_faults: bool,
    pub outcome: PurgeOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PurgeOutcome {
    /// Ran to its end (`complete`), or stopped at its deadline; items deleted.
    Finished {
        complete: bool,
        items: u64,
    },
    Failed(String),
    /// Still waiting when the function's timeout ended it (a killed write).
    TimedOut,
}

/// An audit record the purger wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeAudit {
    pub as_of_ms: i64,
    pub complete: bool,
    pub errors: usize,
}

/// A message Twilio took, attributed to its cart and step when its body names one.
#[derive(Debug, Clone)]
pub struct Sent {
    pub sid: String,
    pub cart: Option<usize>,
    pub step: u8,
    pub to: String,
    pub body: String,
    /// When the request reached Twilio (None: not seen at the edge).
    pub posted: Option<Duration>,
}

/// A step's record in the store, for the report of what did not go out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepSeen {
    pub state: String,
    pub reason: Option<String>,
    pub error_code: Option<i64>,
    pub message_sid: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub flow_steps: u8,
    pub carts: Vec<CartOutcome>,
    pub sent: Vec<Sent>,
    /// (cart, step) → when each successful claim was forwarded to the store.
    pub claims: HashMap<(usize, u8), Vec<Duration>>,
    /// (cart, step) → its record in the store, if any.
    pub steps: HashMap<(usize, u8), StepSeen>,
    /// (cart, step) of each job in the dead-letter queue.
    pub dead_letters: Vec<(usize, u8)>,
    /// Answers ≥ 500 to valid requests after the faults stopped.
    pub post_fault_5xx: u64,
    /// Valid requests answered 4xx (a signed, well-formed delivery must never be refused).
    pub refused_4xx: u64,
    /// Acknowledged orders whose cart is not recovered / completed at the end.
    pub orders_not_applied: Vec<usize>,
    /// Acknowledged STOPs whose number is not opted out at the end.
    pub stops_not_applied: Vec<usize>,
    /// Requests the sandbox received that broke Twilio's contract.
    pub contract_violations: usize,
    /// Each phone with an acknowledged STOP-type keyword (racing or in a storm), by cart: its
    /// consent and suppression records at the end.
    pub phones: HashMap<usize, PhoneSeen>,
    /// Each deletion's end state, by cart.
    pub deletions: HashMap<usize, DeletionSeen>,
    pub purge_runs: Vec<PurgeRun>,
    pub purge_audits: Vec<PurgeAudit>,
    /// The agent's calls as the shoppers lived them and the store holds them.
    pub calls: crate::calls::CallsSeen,
}

#[derive(Debug, Clone, Default)]
pub struct Verdict {
    /// Due steps (consented, no STOP or order, first delivery answered).
    pub due: u64,
    pub due_sent_once: u64,
    pub due_dead_lettered: u64,
    /// Due steps neither sent nor dead-lettered: (cart, step, the step's record).
    pub lost: Vec<(usize, u8, Option<StepSeen>)>,
    /// Of those, steps recorded as sent with a message that belongs to another step of the cart:
    /// (cart, step, the other step).
    pub recorded_as_other_step: Vec<(usize, u8, u8)>,
    /// (cart, step) sent more than once.
    pub duplicate_steps: Vec<((usize, u8), usize)>,
    /// The same body to the same number more than once.
    pub duplicate_bodies: u64,
    pub sent_without_consent: Vec<usize>,
    /// Messages Twilio took after the STOP or order was acknowledged, claimed before it (in flight).
    pub in_flight_at_ack: u64,
    /// Messages whose claim reached the store after the STOP or order was acknowledged.
    pub claimed_after_ack: Vec<(usize, u8, String)>,
    /// Racing carts (STOP or order) whose steps went out before the ack, and those skipped.
    pub race_sent: u64,
    pub race_not_sent: u64,
    pub unattributed: u64,
    pub post_fault_5xx: u64,
    pub refused_4xx: u64,
    pub orders_not_applied: usize,
    pub stops_not_applied: usize,
    pub contract_violations: usize,
    /// Steps not sent, by recorded state and reason.
    pub skip_reasons: BTreeMap<String, u64>,
    /// Steps sent after a failed attempt, by that attempt's recorded reason.
    pub sent_after: BTreeMap<String, u64>,
    /// Function log lines scanned, those holding a raw phone number of the campaign, and a few
    /// of them (digits masked).
    pub log_lines: u64,
    pub log_phone_lines: u64,
    pub log_examples: Vec<String>,
    /// Storms: phones, keywords sent (replays included), replays, answered 2xx, STOP-types
    /// acknowledged, STARTs honoured (confirmed), phones whose end state no certain keyword fixes.
    pub storm_phones: u64,
    pub storm_keywords: u64,
    pub storm_replays: u64,
    pub storm_acked: u64,
    pub storm_stops_acked: u64,
    pub storm_starts_honoured: u64,
    pub storm_undetermined: u64,
    /// Storm phones whose SMS consent at the end is not what their last certain keyword says:
    /// (cart, what it is, what the keywords say).
    pub storm_state_wrong: Vec<(usize, String, String)>,
    /// Phones with an acknowledged STOP (racing or storm), and those whose suppression records
    /// are missing or disagree with the consent state: (cart, what is wrong).
    pub stop_phones: u64,
    pub suppressions_found: u64,
    pub suppression_wrong: Vec<(usize, String)>,
    /// Deletions: sent, acknowledged, done, done with Twilio copies pending (and which).
    pub deletions: u64,
    pub deletions_shopify: u64,
    pub deletions_acked: u64,
    pub deletions_done: u64,
    pub deletions_provider_pending: BTreeMap<String, u64>,
    /// Deletions not done at the end: (cart, status).
    pub deletions_not_done: Vec<(usize, String)>,
    /// Deleted phones still held in the table: (cart, items, example keys).
    pub deleted_phone_kept: Vec<(usize, u64, Vec<String>)>,
    /// Sends claimed after a deletion was done: (cart, step); and claims between a Shopify
    /// redaction's acknowledgement and its being done (allowed: the worker carries it out).
    pub claimed_after_deletion: Vec<(usize, u8)>,
    pub claimed_before_redaction_done: u64,
    /// Retention runs: in all, under faults, complete, stopped at the deadline, failed, timed
    /// out; items deleted; runs without their audit record: (as_of ms, outcome).
    pub purge_runs: u64,
    pub purge_under_faults: u64,
    pub purge_complete: u64,
    pub purge_incomplete: u64,
    pub purge_failed: u64,
    pub purge_timed_out: u64,
    pub purge_items: u64,
    pub purge_errors: Vec<String>,
    pub purge_unaudited: Vec<(i64, String)>,
    pub calls: crate::calls::CallsSeen,
    /// Tasks the harness had to give up waiting for after the drain (agent calls, pollers, a
    /// retention run): what ran there is unchecked, so the run draws no clean verdict.
    pub abandoned: Vec<String>,
}

impl Verdict {
    pub fn failures(&self) -> Vec<String> {
        let mut f = Vec::new();
        if !self.lost.is_empty() {
            f.push(format!("{} due step(s) neither sent nor dead-lettered", self.lost.len()));
        }
        if !self.duplicate_steps.is_empty() || self.duplicate_bodies > 0 {
            f.push(format!(
                "duplicates: {} step(s) sent twice or more, {} repeated body/number pair(s)",
                self.duplicate_steps.len(),
                self.duplicate_bodies
            ));
        }
        if !self.sent_without_consent.is_empty() {
            f.push(format!("{} message(s) to carts without consent", self.sent_without_consent.len()));
        }
        if self.log_phone_lines > 0 {
            f.push(format!("{} function log line(s) with a raw phone number", self.log_phone_lines));
        }
        if !self.claimed_after_ack.is_empty() {
            f.push(format!("{} send(s) claimed after an acknowledged STOP or order", self.claimed_after_ack.len()));
        }
        if self.post_fault_5xx > 0 {
            f.push(format!("{} 5xx answer(s) to valid requests after the faults stopped", self.post_fault_5xx));
        }
        if self.refused_4xx > 0 {
            f.push(format!("{} valid request(s) refused with 4xx", self.refused_4xx));
        }
        if self.orders_not_applied > 0 {
            f.push(format!("{} acknowledged order(s) not applied", self.orders_not_applied));
        }
        if self.stops_not_applied > 0 {
            f.push(format!("{} acknowledged STOP(s) not applied", self.stops_not_applied));
        }
        if self.contract_violations > 0 {
            f.push(format!("{} request(s) to Twilio broke its contract", self.contract_violations));
        }
        if self.unattributed > 0 {
            f.push(format!("{} cart message(s) not seen at the Twilio edge", self.unattributed));
        }
        if !self.storm_state_wrong.is_empty() {
            f.push(format!(
                "{} storm phone(s) whose consent at the end is not what their last acknowledged keyword says",
                self.storm_state_wrong.len()
            ));
        }
        if !self.suppression_wrong.is_empty() {
            f.push(format!(
                "{} phone(s) with an acknowledged STOP whose suppression records are missing or wrong",
                self.suppression_wrong.len()
            ));
        }
        if !self.deletions_not_done.is_empty() {
            f.push(format!("{} deletion(s) not done at the end", self.deletions_not_done.len()));
        }
        if !self.deleted_phone_kept.is_empty() {
            f.push(format!("{} deleted phone(s) still held in the table", self.deleted_phone_kept.len()));
        }
        if !self.claimed_after_deletion.is_empty() {
            f.push(format!("{} send(s) claimed after a deletion was done", self.claimed_after_deletion.len()));
        }
        if !self.calls.opt_outs_not_recorded.is_empty() {
            f.push(format!("{} opt-out(s) said on an agent call not recorded", self.calls.opt_outs_not_recorded.len()));
        }
        if !self.calls.link_texted_twice.is_empty() {
            f.push(format!(
                "{} agent call(s) whose link was texted more than once",
                self.calls.link_texted_twice.len()
            ));
        }
        if !self.purge_unaudited.is_empty() {
            f.push(format!("{} retention run(s) without their audit record", self.purge_unaudited.len()));
        }
        if !self.abandoned.is_empty() {
            f.push(format!("the harness gave up waiting for: {}", self.abandoned.join(", ")));
        }
        f
    }
}

pub fn judge(i: &Inputs) -> Verdict {
    let mut v = Verdict {
        post_fault_5xx: i.post_fault_5xx,
        refused_4xx: i.refused_4xx,
        orders_not_applied: i.orders_not_applied.len(),
        stops_not_applied: i.stops_not_applied.len(),
        contract_violations: i.contract_violations,
        calls: i.calls.clone(),
        ..Verdict::default()
    };
    judge_storms(i, &mut v);
    judge_deletions(i, &mut v);
    judge_purges(i, &mut v);
    let mut per_step: HashMap<(usize, u8), Vec<&Sent>> = HashMap::new();
    let mut per_body: HashMap<(&str, &str), usize> = HashMap::new();
    for s in &i.sent {
        let Some(cart) = s.cart else { continue };
        per_step.entry((cart, s.step)).or_default().push(s);
        *per_body.entry((s.to.as_str(), s.body.as_str())).or_default() += 1;
        if s.posted.is_none() {
            v.unattributed += 1;
        }
    }
    v.duplicate_bodies = per_body.values().filter(|n| **n > 1).map(|n| (*n - 1) as u64).sum();
    let mut dups: Vec<_> = per_step.iter().filter(|(_, m)| m.len() > 1).map(|(k, m)| (*k, m.len())).collect();
    dups.sort();
    v.duplicate_steps = dups;
    let dead: std::collections::HashSet<(usize, u8)> = i.dead_letters.iter().copied().collect();

    for (cart, c) in i.carts.iter().enumerate() {
        // Carts whose steps may rightly not go out: racing STOPs or orders, storms, deletions.
        let raced = c.stop_sent || c.order_sent || !c.storm.is_empty() || c.deletion.is_some();
        for step in 0..i.flow_steps {
            let sent = per_step.get(&(cart, step)).map(Vec::as_slice).unwrap_or_default();
            if !sent.is_empty() && !c.consent_acked {
                v.sent_without_consent.push(cart);
            }
            if let Some(rec) = i.steps.get(&(cart, step)) {
                let reason = rec.reason.clone().unwrap_or_else(|| "-".into());
                if rec.state == "sent" {
                    if rec.reason.is_some() {
                        *v.sent_after.entry(reason).or_default() += 1;
                    }
                } else {
                    *v.skip_reasons.entry(format!("{}: {reason}", rec.state)).or_default() += 1;
                }
            }
            // Nothing may be claimed after the STOP or order was acknowledged (after a storm's
            // acknowledged STOP, until a START is confirmed).
            for s in sent {
                let Some(posted) = s.posted else { continue };
                let claim =
                    i.claims.get(&(cart, step)).and_then(|cs| cs.iter().filter(|t| **t <= posted).max().copied());
                match claim {
                    Some(t) if barred(c, t) => v.claimed_after_ack.push((cart, step, s.sid.clone())),
                    Some(_) if barred(c, posted) => v.in_flight_at_ack += 1,
                    None if barred(c, posted) => v.claimed_after_ack.push((cart, step, s.sid.clone())),
                    _ => {}
                }
            }
            if raced {
                if sent.is_empty() {
                    v.race_not_sent += 1;
                } else {
                    v.race_sent += 1;
                }
                continue;
            }
            if !(c.consent_acked && c.created) {
                continue;
            }
            v.due += 1;
            match sent.len() {
                0 if dead.contains(&(cart, step)) => v.due_dead_lettered += 1,
                0 => {
                    let rec = i.steps.get(&(cart, step)).cloned();
                    let other = rec
                        .as_ref()
                        .and_then(|r| r.message_sid.as_deref())
                        .and_then(|sid| i.sent.iter().find(|s| s.sid == sid))
                        .filter(|s| s.cart == Some(cart) && s.step != step);
                    if let Some(o) = other {
                        v.recorded_as_other_step.push((cart, step, o.step));
                    }
                    v.lost.push((cart, step, rec));
                }
                1 => v.due_sent_once += 1,
                _ => {}
            }
        }
    }
    v
}

/// Whether a send claimed (or posted) at `t` comes after an acknowledged STOP or order of the
/// cart's, a storm's START confirmed since aside.
fn barred(c: &CartOutcome, t: Duration) -> bool {
    c.order_acked.is_some_and(|a| t > a) || c.stop_acked.is_some_and(|a| t > a) || storm_blocks(&c.storm, t)
}

fn said(out: Option<bool>) -> &'static str {
    match out {
        Some(true) => "opted out",
        Some(false) => "opted in",
        None => "unknown",
    }
}

fn judge_storms(i: &Inputs, v: &mut Verdict) {
    for (cart, c) in i.carts.iter().enumerate() {
        let acked_stop = c.stop_acked.is_some() || c.storm.iter().any(|w| w.opt_out && w.acked.is_some());
        if acked_stop {
            v.stop_phones += 1;
            // Every acknowledged STOP leaves its suppression records: calls (nothing here opts
            // back into calls), and texts while the ledger says opted out (a confirmed START
            // removes it with the opt-out it lifts).
            let seen = i.phones.get(&cart).copied().unwrap_or_default();
            v.suppressions_found += u64::from(seen.sms_suppressed) + u64::from(seen.voice_suppressed);
            let mut wrong = Vec::new();
            if !seen.voice_suppressed {
                wrong.push("no calls suppression record".to_string());
            }
            if seen.sms_suppressed != (seen.sms_out == Some(true)) {
                wrong.push(format!(
                    "texts suppression record {} while the ledger says {}",
                    if seen.sms_suppressed { "kept" } else { "missing" },
                    said(seen.sms_out)
                ));
            }
            if !wrong.is_empty() {
                v.suppression_wrong.push((cart, wrong.join("; ")));
            }
        }
        if c.storm.is_empty() {
            continue;
        }
        v.storm_phones += 1;
        v.storm_keywords += c.storm.len() as u64;
        v.storm_replays += c.storm.iter().filter(|w| w.replay).count() as u64;
        v.storm_acked += c.storm.iter().filter(|w| w.acked.is_some()).count() as u64;
        v.storm_stops_acked += c.storm.iter().filter(|w| w.opt_out && w.acked.is_some()).count() as u64;
        v.storm_starts_honoured += c.storm.iter().filter(|w| w.honoured_start()).count() as u64;
        let e = storm_expectation(&c.storm);
        let Some((last, out)) = e.last_certain else {
            v.storm_undetermined += 1;
            continue;
        };
        let is = i.phones.get(&cart).and_then(|p| p.sms_out);
        let ok = match is {
            Some(true) => e.may_be_out,
            Some(false) => e.may_be_in,
            None => false,
        };
        if !ok {
            let words: Vec<String> = c
                .storm
                .iter()
                .map(|w| {
                    format!(
                        "{:?} {}{} {}{}",
                        w.text,
                        w.sid,
                        if w.replay { " (replay)" } else { "" },
                        w.status.map_or("no answer".to_string(), |s| s.to_string()),
                        if w.reply.is_some() { " with a reply" } else { "" }
                    )
                })
                .collect();
            v.storm_state_wrong.push((
                cart,
                said(is).to_string(),
                format!(
                    "{} after keyword {} of [{}]",
                    if out { "opted out" } else { "opted in" },
                    last + 1,
                    words.join(", ")
                ),
            ));
        }
    }
}

fn judge_deletions(i: &Inputs, v: &mut Verdict) {
    for (cart, c) in i.carts.iter().enumerate() {
        let Some(d) = &c.deletion else { continue };
        v.deletions += 1;
        v.deletions_shopify += u64::from(d.shopify);
        let Some(acked) = d.acked else { continue };
        v.deletions_acked += 1;
        let seen = i.deletions.get(&cart).cloned().unwrap_or_default();
        match seen.status.as_deref() {
            Some("done") => {
                v.deletions_done += 1;
                for (kind, n) in &seen.provider_pending {
                    *v.deletions_provider_pending.entry(kind.clone()).or_default() += n;
                }
            }
            other => v.deletions_not_done.push((cart, other.unwrap_or("no such request").to_string())),
        }
        if seen.raw_phone_items > 0 {
            v.deleted_phone_kept.push((cart, seen.raw_phone_items, seen.examples.clone()));
        }
        for step in 0..i.flow_steps {
            for t in i.claims.get(&(cart, step)).map(Vec::as_slice).unwrap_or_default() {
                match d.done {
                    Some(done) if *t > done => v.claimed_after_deletion.push((cart, step)),
                    _ if *t > acked => v.claimed_before_redaction_done += 1,
                    _ => {}
                }
            }
        }
    }
}

fn judge_purges(i: &Inputs, v: &mut Verdict) {
    for r in &i.purge_runs {
        v.purge_runs += 1;
        v.purge_under_faults += u64::from(r.under_faults);
        let audit = i.purge_audits.iter().find(|a| a.as_of_ms == r.as_of_ms);
        match &r.outcome {
            PurgeOutcome::Finished { complete, items } => {
                if *complete {
                    v.purge_complete += 1;
                } else {
                    v.purge_incomplete += 1;
                }
                v.purge_items += items;
                if audit.is_none_or(|a| a.complete != *complete) {
                    v.purge_unaudited.push((r.as_of_ms, "finished".into()));
                }
            }
            PurgeOutcome::Failed(e) => {
                v.purge_failed += 1;
                if v.purge_errors.len() < 5 {
                    v.purge_errors.push(e.clone());
                }
                // A failed run still writes its audit record: incomplete, with the error.
                if audit.is_none_or(|a| a.complete || a.errors == 0) {
                    v.purge_unaudited.push((r.as_of_ms, format!("failed: {e}")));
                }
            }
            // Killed: Lambda ended it; nothing can be asked of it.
            PurgeOutcome::TimedOut => v.purge_timed_out += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn sent(cart: usize, step: u8, posted: u64) -> Sent {
        Sent {
            sid: format!("SM{cart}{step}{posted}"),
            cart: Some(cart),
            step,
            to: format!("+1415555010{cart}"),
            body: format!("cart {cart} step {step}"),
            posted: Some(ms(posted)),
        }
    }

    fn consented() -> CartOutcome {
        CartOutcome { consent_acked: true, created: true, ..CartOutcome::default() }
    }

    #[test]
    fn a_clean_run_passes() {
        let mut i = Inputs { flow_steps: 2, carts: vec![consented(), consented()], ..Inputs::default() };
        i.sent = vec![sent(0, 0, 10), sent(0, 1, 20), sent(1, 0, 10)];
        i.dead_letters = vec![(1, 1)];
        let v = judge(&i);
        assert!(v.failures().is_empty(), "{:?}", v.failures());
        assert_eq!((v.due, v.due_sent_once, v.due_dead_lettered), (4, 3, 1));
    }

    #[test]
    fn lost_and_doubled_steps_fail() {
        let mut i = Inputs { flow_steps: 2, carts: vec![consented()], ..Inputs::default() };
        i.sent = vec![sent(0, 0, 10), sent(0, 0, 12)];
        i.steps.insert(
            (0, 1),
            StepSeen { state: "retry".into(), reason: None, error_code: Some(20429), message_sid: None },
        );
        let v = judge(&i);
        assert_eq!(v.duplicate_steps, vec![((0, 0), 2)]);
        assert_eq!(v.lost.len(), 1);
        assert!(v.recorded_as_other_step.is_empty());
        assert_eq!(v.failures().len(), 2);
    }

    #[test]
    fn a_step_recorded_with_another_steps_message_is_lost() {
        let mut i = Inputs { flow_steps: 2, carts: vec![consented()], ..Inputs::default() };
        let first = sent(0, 0, 10);
        i.steps.insert(
            (0, 1),
            StepSeen { state: "sent".into(), reason: None, error_code: None, message_sid: Some(first.sid.clone()) },
        );
        i.sent = vec![first];
        let v = judge(&i);
        assert_eq!(v.lost.len(), 1);
        assert_eq!(v.recorded_as_other_step, vec![(0, 1, 0)]);
    }

    #[test]
    fn a_send_claimed_after_an_acknowledged_stop_fails_and_one_in_flight_does_not() {
        let stop = CartOutcome { stop_sent: true, stop_acked: Some(ms(100)), ..consented() };
        let mut i = Inputs { flow_steps: 2, carts: vec![stop.clone(), stop], ..Inputs::default() };
        // Cart 0: claimed at 90, the STOP answered at 100, Twilio took it at 105: in flight.
        i.claims.insert((0, 0), vec![ms(90)]);
        // Cart 1: claimed at 110, after the answer.
        i.claims.insert((1, 0), vec![ms(110)]);
        i.sent = vec![sent(0, 0, 105), sent(1, 0, 115)];
        let v = judge(&i);
        assert_eq!(v.in_flight_at_ack, 1);
        assert_eq!(v.claimed_after_ack.len(), 1);
        assert_eq!(v.claimed_after_ack[0].0, 1);
        // Racing carts owe nothing: no step of theirs counts as lost.
        assert!(v.lost.is_empty());
    }

    #[test]
    fn messages_without_consent_and_late_5xx_fail() {
        let mut i = Inputs {
            flow_steps: 1,
            carts: vec![CartOutcome { created: true, ..CartOutcome::default() }],
            ..Inputs::default()
        };
        i.sent = vec![sent(0, 0, 1)];
        i.post_fault_5xx = 2;
        let v = judge(&i);
        assert_eq!(v.sent_without_consent, vec![0]);
        assert_eq!(v.failures().len(), 2);
    }

    fn word(text: &str, opt_out: bool, acked: Option<u64>, reply: Option<&str>) -> KeywordSent {
        KeywordSent {
            text: text.into(),
            opt_out,
            sid: format!("SM{text}"),
            replay: false,
            status: Some(if acked.is_some() { 200 } else { 503 }),
            acked: acked.map(ms),
            reply: reply.map(str::to_string),
        }
    }

    const CONFIRMED: &str = "Soak: you are subscribed again to cart reminders";

    #[test]
    fn a_storms_end_state_follows_its_last_certain_keyword() {
        // STOP, START confirmed, STOP: out.
        let w = vec![
            word("STOP", true, Some(10), Some("bye")),
            word("START", false, Some(20), Some(CONFIRMED)),
            word("stop", true, Some(30), None),
        ];
        let e = storm_expectation(&w);
        assert_eq!(e, StormExpectation { last_certain: Some((2, true)), may_be_out: true, may_be_in: false });
        // STOP, then a START confirmed last: in.
        let e = storm_expectation(&w[..2]);
        assert_eq!((e.last_certain, e.may_be_out, e.may_be_in), (Some((1, false)), false, true));
        // A START answered with nothing after the STOP: its queued copy may still apply it.
        let w2 = vec![word("STOP", true, Some(10), Some("bye")), word("unstop", false, Some(20), None)];
        let e = storm_expectation(&w2);
        assert!(e.may_be_out && e.may_be_in);
        // An unanswered STOP after a confirmed START: either.
        let w3 = vec![w[0].clone(), w[1].clone(), word("QUIT", true, None, None)];
        let e = storm_expectation(&w3);
        assert!(e.may_be_out && e.may_be_in);
        // A replay counts with its original: the original failed, the replay confirmed.
        let mut r = word("START", false, Some(25), Some(CONFIRMED));
        r.replay = true;
        let w4 = vec![w[0].clone(), word("START", false, None, None), r];
        assert_eq!(storm_expectation(&w4).last_certain, Some((1, false)));
        // Nothing certain: nothing to hold it to.
        assert_eq!(storm_expectation(&[word("STOP", true, None, None)]).last_certain, None);
    }

    #[test]
    fn a_storm_phone_in_the_wrong_state_or_without_its_suppression_fails() {
        let storm = vec![
            word("STOP", true, Some(10), Some("bye")),
            word("START", false, Some(20), Some(CONFIRMED)),
            word("Stop all", true, Some(30), None),
        ];
        let cart = CartOutcome { storm, ..consented() };
        let mut i = Inputs { flow_steps: 1, carts: vec![cart.clone(), cart], ..Inputs::default() };
        i.phones.insert(0, PhoneSeen { sms_out: Some(true), sms_suppressed: true, voice_suppressed: true });
        // Cart 1: opted in at the end (a late copy undid the last STOP), no texts suppression.
        i.phones.insert(1, PhoneSeen { sms_out: Some(false), sms_suppressed: false, voice_suppressed: true });
        let v = judge(&i);
        assert_eq!(v.storm_state_wrong.len(), 1);
        assert_eq!(v.storm_state_wrong[0].0, 1);
        assert!(v.suppression_wrong.is_empty(), "{:?}", v.suppression_wrong);
        assert_eq!((v.storm_phones, v.storm_keywords, v.storm_stops_acked, v.storm_starts_honoured), (2, 6, 4, 2));
        // A missing record fails on its own.
        i.phones.insert(1, PhoneSeen { sms_out: Some(true), sms_suppressed: false, voice_suppressed: false });
        let v = judge(&i);
        assert!(v.storm_state_wrong.is_empty());
        assert_eq!(v.suppression_wrong.len(), 1);
        assert_eq!(v.suppressions_found, 2);
        assert_eq!(v.failures().len(), 1, "{:?}", v.failures());
        // Storm carts owe no step.
        assert!(v.lost.is_empty());
    }

    #[test]
    fn a_send_claimed_between_a_storms_stop_and_its_confirmed_start_fails() {
        let storm = vec![
            word("STOP", true, Some(100), Some("bye")),
            word("START", false, Some(200), Some(CONFIRMED)),
            word("end", true, Some(300), None),
        ];
        let cart = CartOutcome { storm, ..consented() };
        let mut i = Inputs { flow_steps: 2, carts: vec![cart.clone(), cart.clone(), cart], ..Inputs::default() };
        // Cart 0: claimed at 150 (barred), sent at 250, after the confirmed START.
        i.claims.insert((0, 0), vec![ms(150)]);
        // Cart 1: claimed at 210 (after the confirmed START), sent at 220: allowed; step 1
        // claimed at 290, posted at 305: in flight at the last STOP.
        i.claims.insert((1, 0), vec![ms(210)]);
        i.claims.insert((1, 1), vec![ms(290)]);
        // Cart 2: claimed at 350, after the last STOP.
        i.claims.insert((2, 0), vec![ms(350)]);
        i.sent = vec![sent(0, 0, 250), sent(1, 0, 220), sent(1, 1, 305), sent(2, 0, 360)];
        let v = judge(&i);
        let carts: Vec<usize> = v.claimed_after_ack.iter().map(|c| c.0).collect();
        assert_eq!(carts, vec![0, 2]);
        assert_eq!(v.in_flight_at_ack, 1);
        // An unconfirmed START lifts nothing.
        let mut i2 = i.clone();
        i2.carts[1].storm[1].reply = None;
        assert_eq!(judge(&i2).claimed_after_ack.len(), 4);
    }

    #[test]
    fn deletions_must_be_done_leave_no_phone_and_stop_sends() {
        let api = DeletionSent { shopify: false, id: Some("dsr_1".into()), acked: Some(ms(100)), done: Some(ms(100)) };
        let shop =
            DeletionSent { shopify: true, id: Some("shopify-e".into()), acked: Some(ms(100)), done: Some(ms(400)) };
        let mut i = Inputs {
            flow_steps: 2,
            carts: vec![
                CartOutcome { deletion: Some(api.clone()), ..consented() },
                CartOutcome { deletion: Some(shop), ..consented() },
                CartOutcome { deletion: Some(api), ..consented() },
            ],
            ..Inputs::default()
        };
        let done = |pending: Vec<(String, u64)>| DeletionSeen {
            status: Some("done".into()),
            provider_pending: pending,
            ..DeletionSeen::default()
        };
        i.deletions.insert(0, done(vec![("twilio_message".into(), 1)]));
        i.deletions.insert(1, done(Vec::new()));
        i.deletions.insert(2, DeletionSeen { status: Some("accepted".into()), raw_phone_items: 2, ..done(Vec::new()) });
        // Cart 0: claimed before the deletion; cart 1: between the redaction's answer and its
        // being done (allowed), and after it (not).
        i.claims.insert((0, 0), vec![ms(50)]);
        i.claims.insert((1, 0), vec![ms(200)]);
        i.claims.insert((1, 1), vec![ms(450)]);
        let v = judge(&i);
        assert_eq!((v.deletions, v.deletions_acked, v.deletions_done), (3, 3, 2));
        assert_eq!(v.deletions_provider_pending.get("twilio_message"), Some(&1));
        assert_eq!(v.deletions_not_done, vec![(2, "accepted".to_string())]);
        assert_eq!(v.deleted_phone_kept.len(), 1);
        assert_eq!(v.claimed_after_deletion, vec![(1, 1)]);
        assert_eq!(v.claimed_before_redaction_done, 1);
        assert_eq!(v.failures().len(), 3, "{:?}", v.failures());
        assert!(v.lost.is_empty());
    }

    #[test]
    fn every_retention_run_but_a_killed_one_leaves_its_audit_record() {
        let run = |as_of_ms, outcome| PurgeRun { as_of_ms, under_faults: true, outcome };
        let i = Inputs {
            purge_runs: vec![
                run(1, PurgeOutcome::Finished { complete: true, items: 3 }),
                run(2, PurgeOutcome::Failed("throttled".into())),
                run(3, PurgeOutcome::TimedOut),
                run(4, PurgeOutcome::Failed("throttled".into())),
            ],
            purge_audits: vec![
                PurgeAudit { as_of_ms: 1, complete: true, errors: 0 },
                PurgeAudit { as_of_ms: 2, complete: false, errors: 1 },
            ],
            ..Inputs::default()
        };
        let v = judge(&i);
        assert_eq!((v.purge_runs, v.purge_complete, v.purge_failed, v.purge_timed_out, v.purge_items), (4, 1, 2, 1, 3));
        assert_eq!(v.purge_unaudited.len(), 1);
        assert_eq!(v.purge_unaudited[0].0, 4);
        assert_eq!(v.failures().len(), 1);
    }
}
