//! `report`: a merchant's recovery funnel, computed from the stored carts, steps, consent
//! ledgers and SMS/call logs. Carts are found by a Scan of the merchant's cart partitions (there
//! is no merchant-wide index); each shopper's partition is then read once. Nothing in a report
//! identifies a shopper: no phone number, no name, no email.
//!
//! Definitions (every figure counts carts created at or after `--since`):
//! - abandoned carts: every cart the platform sent us; "with a phone": those with a number;
//! - consented: with a phone whose SMS or call ledger holds an opt-in (or whose state is opted in);
//! - messaged or called: with at least one flow step sent (a text sent or a call placed);
//! - recovered: an order credited to a message or call (within the merchant's attribution
//!   window); revenue per currency, exact decimals; orders not credited are counted apart;
//! - by step and channel: steps sent, and recoveries credited to the step (its last touch);
//! - opt-out rate: people messaged (distinct phones) who opted out of texts or calls after
//!   their first message, over people messaged;
//! - delivery failures: undelivered / failed texts, failed / unanswered / busy calls (Twilio's
//!   final statuses), and steps Twilio refused outright.

use callfy_shared::MerchantId;
use callfy_shared::Phone;
use callfy_shared::adapters::dynamo::report::{CartWithSteps, CustomerActivity, ScanProgress};
use callfy_shared::adapters::store::Store;
use callfy_shared::domain::consent::{ConsentAction, ConsentStatus};
use callfy_shared::domain::merchant::{Channel, Merchant};
use callfy_shared::domain::outreach::Direction;
use callfy_shared::domain::outreach::StepState;
use callfy_shared::ports::PortError;
use chrono::{DateTime, NaiveDate, Utc};
use std::collections::{BTreeMap, HashMap};
use std::fmt;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("no merchant {0}")]
    NoMerchant(MerchantId),
    #[error(transparent)]
    Store(#[from] PortError),
    #[error("--since {0:?}: expected a date (2026-11-01) or an RFC 3339 instant")]
    Since(String),
}

/// `--since`: a day (UTC midnight) or an instant.
pub fn parse_since(raw: &str) -> Result<DateTime<Utc>, ReportError> {
    if let Ok(d) = NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc());
    }
    DateTime::parse_from_rfc3339(raw).map(|t| t.with_timezone(&Utc)).map_err(|_| ReportError::Since(raw.to_string()))
}

/// An amount of money, exact: ten-thousandths of the currency unit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Money(i128);

const MONEY_SCALE: i128 = 10_000;

impl Money {
    /// A platform's decimal string ("656.71", "20", "-3.5"); more than four decimals is not money.
    pub fn parse(raw: &str) -> Option<Self> {
        let raw = raw.trim();
        let (neg, digits) = match raw.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, raw),
        };
        let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
        if int.is_empty() && frac.is_empty()
            || frac.len() > 4
            || !int.chars().chain(frac.chars()).all(|c| c.is_ascii_digit())
        {
            return None;
        }
        let int: i128 = if int.is_empty() { 0 } else { int.parse().ok()? };
        let frac: i128 = format!("{frac:0<4}").parse().ok()?;
        let v = int.checked_mul(MONEY_SCALE)?.checked_add(frac)?;
        Some(Self(if neg { -v } else { v }))
    }

    pub fn as_f64(self) -> f64 {
        self.0 as f64 / MONEY_SCALE as f64
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
}

impl std::ops::AddAssign for Money {
    fn add_assign(&mut self, rhs: Self) {
        self.0 += rhs.0;
    }
}

/// Two decimals (four when the cents do not say it all), thousands separated: `1,234.50`.
impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let (int, frac) = (abs / MONEY_SCALE as u128, abs % MONEY_SCALE as u128);
        let digits = int.to_string();
        let mut grouped = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                grouped.push(',');
            }
            grouped.push(c);
        }
        if frac % 100 == 0 {
            write!(f, "{sign}{grouped}.{:02}", frac / 100)
        } else {
            write!(f, "{sign}{grouped}.{frac:04}")
        }
    }
}

/// Amounts by currency code.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Revenue(pub BTreeMap<String, Money>);

impl Revenue {
    pub fn add(&mut self, currency: &str, amount: Money) {
        *self.0.entry(currency.to_string()).or_default() += amount;
    }

    pub fn get(&self, currency: &str) -> Money {
        self.0.get(currency).copied().unwrap_or_default()
    }

    /// "USD 157.50" ("USD 157.50 + CAD 20.00"; "0.00" when there is none).
    pub fn text(&self) -> String {
        let parts: Vec<String> = self.0.iter().filter(|(_, m)| !m.is_zero()).map(|(c, m)| money_text(c, *m)).collect();
        if parts.is_empty() { "0.00".into() } else { parts.join(" + ") }
    }
}

pub fn money_text(currency: &str, amount: Money) -> String {
    if currency.is_empty() { amount.to_string() } else { format!("{currency} {amount}") }
}

/// One flow step: how often it went out, and what it recovered (as the last touch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepFigures {
    /// 0-based, as stored (`STEP#0` is the flow's first step; reports show it as step 1).
    pub step: u8,
    pub channel: Channel,
    /// Texts sent or calls placed.
    pub sent: u64,
    /// Clicks on our links (`/r/{code}`) this step's messages carried.
    pub clicks: u64,
    pub recovered: u64,
    pub revenue: Revenue,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelFigures {
    pub channel: Channel,
    /// Texts sent or calls placed.
    pub sent: u64,
    /// Carts that got at least one text (or call).
    pub carts: u64,
    /// Clicks on our links (`/r/{code}`) sent on this channel (a call's link: voice).
    pub clicks: u64,
    pub recovered: u64,
    pub revenue: Revenue,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Failures {
    pub sms_undelivered: u64,
    pub sms_failed: u64,
    pub calls_failed: u64,
    pub calls_no_answer: u64,
    pub calls_busy: u64,
    /// Steps Twilio refused outright (no message or call was created).
    pub refused: u64,
}

impl Failures {
    pub fn total(&self) -> u64 {
        self.sms_undelivered
            + self.sms_failed
            + self.calls_failed
            + self.calls_no_answer
            + self.calls_busy
            + self.refused
    }

    /// (label, figure) in display order.
    pub fn rows(&self) -> [(&'static str, u64); 6] {
        [
            ("Texts undelivered", self.sms_undelivered),
            ("Texts failed", self.sms_failed),
            ("Calls failed", self.calls_failed),
            ("Calls not answered", self.calls_no_answer),
            ("Calls busy", self.calls_busy),
            ("Refused by Twilio", self.refused),
        ]
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub merchant: MerchantId,
    pub merchant_name: String,
    pub since: Option<DateTime<Utc>>,
    pub generated_at: DateTime<Utc>,
    pub carts: u64,
    pub with_phone: u64,
    pub consented: u64,
    pub messaged: u64,
    pub recovered: u64,
    pub revenue: Revenue,
    /// Orders on these carts not credited to outreach (before any message, or after the window).
    pub other_orders: u64,
    pub other_revenue: Revenue,
    pub by_step: Vec<StepFigures>,
    /// Clicks on our links (`/r/{code}`: every BigCommerce link, others with `links.track_clicks`).
    pub clicks: u64,
    /// SMS first, then voice.
    pub by_channel: Vec<ChannelFigures>,
    pub people_messaged: u64,
    pub opt_outs: u64,
    pub failures: Failures,
    /// Calls the voice agent answered, with how each ended (oldest first).
    pub agent_calls: Vec<AgentCall>,
}

/// One voice agent call: its step, outcome and summary; the transcript is one command away
/// (`callfy-admin transcript MERCHANT CALL_SID`), never in the report itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentCall {
    pub call_sid: String,
    pub step: u8,
    pub at: DateTime<Utc>,
    pub outcome: String,
    pub summary: String,
}

impl Report {
    /// Agent call outcomes per step: (step, outcome, calls), in step then outcome order.
    pub fn outcomes_by_step(&self) -> Vec<(u8, String, u64)> {
        let mut counts: std::collections::BTreeMap<(u8, String), u64> = Default::default();
        for c in &self.agent_calls {
            *counts.entry((c.step, c.outcome.clone())).or_default() += 1;
        }
        counts.into_iter().map(|((s, o), n)| (s, o, n)).collect()
    }
}

impl Report {
    /// Opt-outs over people messaged, in percent (0 when nobody was messaged).
    pub fn opt_out_rate(&self) -> f64 {
        percent(self.opt_outs, self.people_messaged)
    }

    /// The currency most of the recovered revenue is in (for charts of one scale).
    pub fn main_currency(&self) -> String {
        self.revenue
            .0
            .iter()
            .max_by_key(|(_, m)| **m)
            .map(|(c, _)| c.clone())
            .or_else(|| self.other_revenue.0.keys().next().cloned())
            .unwrap_or_default()
    }

    /// (label, carts) of the funnel, in order.
    pub fn funnel(&self) -> [(&'static str, u64); 4] {
        [
            ("Abandoned carts with a phone", self.with_phone),
            ("Consented", self.consented),
            ("Messaged or called", self.messaged),
            ("Recovered", self.recovered),
        ]
    }
}

pub fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 { 0.0 } else { part as f64 * 100.0 / whole as f64 }
}

pub fn step_label(step: u8) -> String {
    format!("Step {}", u32::from(step) + 1)
}

pub fn channel_label(channel: Channel) -> &'static str {
    match channel {
        Channel::Sms => "SMS",
        Channel::Voice => "Call",
    }
}

/// Reads what the report needs and computes it. `progress` gets one line at a time for stderr.
pub async fn gather(
    store: &Store,
    merchant: &MerchantId,
    since: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    progress: &mut dyn FnMut(&str),
) -> Result<Report, ReportError> {
    let record = store.get_merchant(merchant).await?.ok_or_else(|| ReportError::NoMerchant(merchant.clone()))?;
    let carts = store
        .scan_merchant_carts(merchant, |p: ScanProgress| {
            progress(&format!(
                "scanning {}: page {}, {} items read, {} of {merchant}'s cart items",
                store.table(),
                p.pages,
                p.scanned,
                p.matched
            ))
        })
        .await?;
    let carts: Vec<CartWithSteps> =
        carts.into_iter().filter(|c| since.is_none_or(|s| c.cart.created_at >= s)).collect();
    let mut phones: Vec<Phone> = carts.iter().filter_map(|c| c.cart.phone.clone()).collect();
    phones.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    phones.dedup();
    let mut customers = HashMap::with_capacity(phones.len());
    for (i, phone) in phones.iter().enumerate() {
        if i % 50 == 0 || i + 1 == phones.len() {
            progress(&format!("reading shoppers' consent and messages: {}/{}", i + 1, phones.len()));
        }
        customers.insert(phone.as_str().to_string(), store.customer_activity(merchant, phone).await?);
    }
    Ok(compute(&record.merchant, &carts, &customers, since, now))
}

/// The figures from the data (`customers` by E.164 phone). Pure, so it is unit-tested as is.
pub fn compute(
    merchant: &Merchant,
    carts: &[CartWithSteps],
    customers: &HashMap<String, CustomerActivity>,
    since: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Report {
    let empty = CustomerActivity::default();
    let mut r = Report {
        merchant: merchant.id.clone(),
        merchant_name: merchant.name.clone(),
        since,
        generated_at: now,
        carts: 0,
        with_phone: 0,
        consented: 0,
        messaged: 0,
        recovered: 0,
        revenue: Revenue::default(),
        other_orders: 0,
        other_revenue: Revenue::default(),
        by_step: Vec::new(),
        clicks: 0,
        by_channel: [Channel::Sms, Channel::Voice]
            .into_iter()
            .map(|channel| ChannelFigures {
                channel,
                sent: 0,
                carts: 0,
                clicks: 0,
                recovered: 0,
                revenue: Revenue::default(),
            })
            .collect(),
        people_messaged: 0,
        opt_outs: 0,
        failures: Failures::default(),
        agent_calls: Vec::new(),
    };
    let mut steps: BTreeMap<u8, StepFigures> = merchant
        .flow
        .iter()
        .enumerate()
        .filter_map(|(i, s)| u8::try_from(i).ok().map(|i| (i, s.channel)))
        .map(|(i, channel)| {
            (i, StepFigures { step: i, channel, sent: 0, clicks: 0, recovered: 0, revenue: Revenue::default() })
        })
        .collect();
    // Each messaged phone, with when it was first messaged.
    let mut first_message: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
    let channel_index = |c: Channel| usize::from(c == Channel::Voice);

    for c in carts {
        let cart = &c.cart;
        // Known only by its order or deletion (its checkout never reached us): not abandoned.
        if cart.is_unseen() {
            continue;
        }
        r.carts += 1;
        // Clicks on our links, by the step and channel of the message that carried each.
        for link in &c.links {
            r.clicks += link.clicks;
            r.by_channel[channel_index(link.channel)].clicks += link.clicks;
            steps
                .entry(link.step)
                .or_insert_with(|| StepFigures {
                    step: link.step,
                    channel: link.channel,
                    sent: 0,
                    clicks: 0,
                    recovered: 0,
                    revenue: Revenue::default(),
                })
                .clicks += link.clicks;
        }
        if let Some(recovery) = &cart.recovery {
            let amount = Money::parse(&recovery.revenue).unwrap_or_default();
            if recovery.attributed {
                r.recovered += 1;
                r.revenue.add(&recovery.currency, amount);
                if let Some(touch) = &recovery.touch {
                    let s = steps.entry(touch.step).or_insert_with(|| StepFigures {
                        step: touch.step,
                        channel: touch.channel,
                        sent: 0,
                        clicks: 0,
                        recovered: 0,
                        revenue: Revenue::default(),
                    });
                    s.recovered += 1;
                    s.revenue.add(&recovery.currency, amount);
                    let ch = &mut r.by_channel[channel_index(touch.channel)];
                    ch.recovered += 1;
                    ch.revenue.add(&recovery.currency, amount);
                }
            } else {
                r.other_orders += 1;
                r.other_revenue.add(&recovery.currency, amount);
            }
        }
        let Some(phone) = &cart.phone else {
            r.failures.refused += c.steps.values().filter(|s| s.state == StepState::Failed).count() as u64;
            continue;
        };
        r.with_phone += 1;
        let who = customers.get(phone.as_str()).unwrap_or(&empty);
        let consented = who.ledger.iter().any(|e| e.event.action == ConsentAction::OptIn)
            || who.consent.iter().any(|(_, s)| s.status == ConsentStatus::OptedIn);
        if consented {
            r.consented += 1;
        }
        let mut reached = [false, false];
        for (&n, step) in &c.steps {
            match step.state {
                StepState::Sent => {}
                StepState::Failed => {
                    r.failures.refused += 1;
                    continue;
                }
                _ => continue,
            }
            let call = who.calls.iter().find(|l| l.cart_token == cart.token && l.step == n);
            let text = who.sms.iter().find(|l| {
                l.direction == Direction::Outbound && l.cart_token.as_ref() == Some(&cart.token) && l.step == Some(n)
            });
            let channel = if call.is_some() {
                Channel::Voice
            } else if text.is_some() {
                Channel::Sms
            } else {
                merchant.flow.get(usize::from(n)).map_or(Channel::Sms, |s| s.channel)
            };
            let s = steps.entry(n).or_insert_with(|| StepFigures {
                step: n,
                channel,
                sent: 0,
                clicks: 0,
                recovered: 0,
                revenue: Revenue::default(),
            });
            s.channel = channel;
            s.sent += 1;
            r.by_channel[channel_index(channel)].sent += 1;
            reached[channel_index(channel)] = true;
            let at = call.map(|l| l.created_at).or(text.map(|l| l.created_at)).unwrap_or(step.updated_at);
            let first = first_message.entry(phone.as_str().to_string()).or_insert(at);
            *first = (*first).min(at);
        }
        if reached.iter().any(|r| *r) {
            r.messaged += 1;
        }
        for (i, hit) in reached.into_iter().enumerate() {
            if hit {
                r.by_channel[i].carts += 1;
            }
        }
        for l in
            who.sms.iter().filter(|l| l.direction == Direction::Outbound && l.cart_token.as_ref() == Some(&cart.token))
        {
            match l.status.as_str() {
                "undelivered" => r.failures.sms_undelivered += 1,
                "failed" => r.failures.sms_failed += 1,
                _ => {}
            }
        }
        for l in who.calls.iter().filter(|l| l.cart_token == cart.token) {
            if let Some(outcome) = l.outcome {
                r.agent_calls.push(AgentCall {
                    call_sid: l.call_sid.clone(),
                    step: l.step,
                    at: l.created_at,
                    outcome: outcome.as_str().to_string(),
                    summary: l.summary.clone().unwrap_or_default(),
                });
            }
            match l.status.as_str() {
                "failed" => r.failures.calls_failed += 1,
                "no-answer" => r.failures.calls_no_answer += 1,
                "busy" => r.failures.calls_busy += 1,
                _ => {}
            }
        }
    }
    r.people_messaged = first_message.len() as u64;
    r.opt_outs = first_message
        .iter()
        .filter(|(phone, first)| {
            let who = customers.get(phone.as_str()).unwrap_or(&empty);
            who.ledger.iter().any(|e| e.event.action == ConsentAction::OptOut && e.event.recorded_at >= **first)
                || who.consent.iter().any(|(_, s)| {
                    s.status == ConsentStatus::OptedOut && s.last_occurred_at.is_some_and(|t| t >= **first)
                })
        })
        .count() as u64;
    r.by_step = steps.into_values().collect();
    r.agent_calls.sort_by(|a, b| (a.at, &a.call_sid).cmp(&(b.at, &b.call_sid)));
    r
}

/// The report as a plain-text table (what `report` prints on stdout).
pub fn render_table(r: &Report) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let period = match r.since {
        Some(s) => format!("carts since {}", s.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        None => "all carts".into(),
    };
    let _ = writeln!(o, "Recovery report: {} ({}), {period}", r.merchant_name, r.merchant);
    let _ = writeln!(o, "generated {}", r.generated_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    let _ = writeln!(o);
    let _ = writeln!(o, "{:<32} {:>8} {:>8}", "FUNNEL", "CARTS", "%");
    let _ = writeln!(o, "{:<32} {:>8}", "Abandoned carts", r.carts);
    for (label, n) in r.funnel() {
        let _ = writeln!(o, "{label:<32} {n:>8} {:>7.1}%", percent(n, r.with_phone));
    }
    let _ = writeln!(o, "{:<32} {:>8}", "Recovered revenue", r.revenue.text());
    let _ = writeln!(o, "{:<32} {:>8}", "Orders not credited to outreach", r.other_orders);
    let _ = writeln!(o, "{:<32} {:>8}", "Their revenue", r.other_revenue.text());
    let _ = writeln!(o);
    let _ = writeln!(o, "{:<10} {:<8} {:>8} {:>10}  REVENUE", "BY STEP", "CHANNEL", "SENT", "RECOVERED");
    for s in &r.by_step {
        let _ = writeln!(
            o,
            "{:<10} {:<8} {:>8} {:>10}  {}",
            step_label(s.step),
            channel_label(s.channel),
            s.sent,
            s.recovered,
            s.revenue.text()
        );
    }
    let _ = writeln!(o);
    let _ = writeln!(o, "{:<10} {:>8} {:>8} {:>10}  REVENUE", "BY CHANNEL", "SENT", "CARTS", "RECOVERED");
    for c in &r.by_channel {
        let _ = writeln!(
            o,
            "{:<10} {:>8} {:>8} {:>10}  {}",
            channel_label(c.channel),
            c.sent,
            c.carts,
            c.recovered,
            c.revenue.text()
        );
    }
    if r.clicks > 0 {
        let _ = writeln!(o);
        let _ = writeln!(o, "{:<10} {:<8} {:>8}", "CLICKS", "CHANNEL", r.clicks);
        for s in r.by_step.iter().filter(|s| s.clicks > 0) {
            let _ = writeln!(o, "{:<10} {:<8} {:>8}", step_label(s.step), channel_label(s.channel), s.clicks);
        }
    }
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "{:<32} {:>8} of {} people messaged ({:.1}%)",
        "OPT-OUTS",
        r.opt_outs,
        r.people_messaged,
        r.opt_out_rate()
    );
    let _ = writeln!(o);
    let _ = writeln!(o, "{:<32} {:>8}", "DELIVERY FAILURES", r.failures.total());
    for (label, n) in r.failures.rows() {
        let _ = writeln!(o, "{label:<32} {n:>8}");
    }
    if !r.agent_calls.is_empty() {
        let _ = writeln!(o);
        let _ = writeln!(o, "{:<10} {:<12} {:>8}", "AGENT CALLS", "OUTCOME", "CALLS");
        for (step, outcome, n) in r.outcomes_by_step() {
            let _ = writeln!(o, "{:<10} {outcome:<12} {n:>8}", step_label(step));
        }
        let _ = writeln!(o);
        for c in &r.agent_calls {
            let _ = writeln!(
                o,
                "{} {} {:<10} {:<12} {}  (transcript: callfy-admin transcript {} {})",
                c.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                c.call_sid,
                step_label(c.step),
                c.outcome,
                c.summary,
                r.merchant,
                c.call_sid
            );
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_is_exact_and_readable() {
        let mut m = Money::parse("656.71").unwrap();
        m += Money::parse("0.29").unwrap();
        m += Money::parse("1000").unwrap();
        assert_eq!(m.to_string(), "1,657.00");
        assert_eq!(Money::parse("3.5").unwrap().to_string(), "3.50");
        assert_eq!(Money::parse("0.1234").unwrap().to_string(), "0.1234");
        assert_eq!(Money::parse("-2.5").unwrap().to_string(), "-2.50");
        for bad in ["", ".", "1.23456", "1e3", "12,00", "abc"] {
            assert_eq!(Money::parse(bad), None, "{bad:?}");
        }
        assert_eq!(Money::parse("157.50").unwrap().as_f64(), 157.5);
    }

    #[test]
    fn since_takes_a_day_or_an_instant() {
        assert_eq!(parse_since("2026-11-01").unwrap(), "2026-11-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap());
        assert_eq!(
            parse_since("2026-11-01T05:00:00-05:00").unwrap(),
            "2026-11-01T10:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert!(parse_since("yesterday").is_err());
    }
}
