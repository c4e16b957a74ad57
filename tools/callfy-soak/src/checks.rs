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
        ..Verdict::default()
    };
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
        let raced = c.stop_sent || c.order_sent;
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
            // Nothing may be claimed after the STOP or order was acknowledged.
            let ack = [c.stop_acked, c.order_acked].into_iter().flatten().min();
            if let Some(ack) = ack {
                for s in sent {
                    if s.posted.is_none_or(|p| p <= ack) {
                        continue;
                    }
                    let posted = s.posted.unwrap_or_default();
                    let claim =
                        i.claims.get(&(cart, step)).and_then(|cs| cs.iter().filter(|t| **t <= posted).max().copied());
                    match claim {
                        Some(t) if t <= ack => v.in_flight_at_ack += 1,
                        _ => v.claimed_after_ack.push((cart, step, s.sid.clone())),
                    }
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
}
