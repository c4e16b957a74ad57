//! When each flow step is due, and whether a queued step may go out now.

use crate::domain::cart::{Cart, CartStatus};
use crate::domain::consent::{ConsentState, ConsentStatus};
use crate::domain::ids::{CartToken, MerchantId};
use crate::domain::merchant::{Channel, MAX_FLOW_MINUTES, Merchant};
use crate::domain::phone::Phone;
use crate::domain::quiet::{Recipient, Window, merchant_window};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// SQS holds a message back at most 15 minutes; longer waits hop.
pub const MAX_QUEUE_DELAY_SECONDS: i64 = 900;
/// Queue delivery latency tolerated past the 48-hour window, so a step scheduled at exactly
/// 48 hours is not dropped for arriving seconds late.
pub const DELIVERY_GRACE_MINUTES: i64 = 5;

/// One queued outreach step. `due_at` is advisory: the worker recomputes it from the cart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutreachJob {
    pub merchant_id: MerchantId,
    pub cart_token: CartToken,
    pub step: u8,
    pub due_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    CartRecovered,
    CartCompleted,
    CartDeleted,
    NoPhone,
    NoConsent,
    OptedOut,
    StepNotInFlow,
    TooLate,
    ChannelNotAvailable,
    MerchantClosed,
    NoSender,
    NoRecoveryLink,
    /// Quiet hours leave no allowed minute before the 48-hour window closes.
    QuietHours,
    /// The frequency cap leaves no room before the 48-hour window closes.
    FrequencyCap,
    /// A delivery report said the number cannot take SMS (landline, unknown, unreachable).
    Undeliverable,
    /// A call step, and the person gave no written consent to AI calls.
    NoVoiceConsent,
    /// A call step, and the person asked for no more calls (key 9, API, or a texted STOP).
    VoiceOptedOut,
    /// A call step, and the merchant has no `voice_from` number.
    NoVoiceSender,
    /// The number is in a country the merchant does not send to (SMS pumping guard).
    DestinationNotAllowed,
    /// The merchant's daily send budget is spent (SMS pumping guard).
    DailyBudget,
}

impl SkipReason {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::CartRecovered => "cart_recovered",
            Self::CartCompleted => "cart_completed",
            Self::CartDeleted => "cart_deleted",
            Self::NoPhone => "no_phone",
            Self::NoConsent => "no_consent",
            Self::OptedOut => "opted_out",
            Self::StepNotInFlow => "step_not_in_flow",
            Self::TooLate => "too_late",
            Self::ChannelNotAvailable => "channel_not_available",
            Self::MerchantClosed => "merchant_closed",
            Self::NoSender => "no_sender",
            Self::NoRecoveryLink => "no_recovery_link",
            Self::QuietHours => "quiet_hours",
            Self::FrequencyCap => "frequency_cap",
            Self::Undeliverable => "undeliverable",
            Self::NoVoiceConsent => "no_voice_consent",
            Self::VoiceOptedOut => "voice_opted_out",
            Self::NoVoiceSender => "no_voice_sender",
            Self::DestinationNotAllowed => "destination_not_allowed",
            Self::DailyBudget => "daily_budget",
        }
    }

    /// A step skipped for a reason of its own channel lets the flow go on to its next step,
    /// which decides on its own channel's consent (a shopper who takes calls but not texts, or
    /// texts but not calls, still gets the other); a reason of the cart, the merchant or time
    /// ends the flow.
    pub const fn continues_flow(self) -> bool {
        matches!(
            self,
            Self::ChannelNotAvailable
                | Self::NoVoiceConsent
                | Self::VoiceOptedOut
                | Self::NoVoiceSender
                | Self::OptedOut
                | Self::Undeliverable
        )
    }

    /// `continues_flow` for a reason as a step record stores it.
    pub fn continues_flow_named(name: &str) -> bool {
        [
            Self::ChannelNotAvailable,
            Self::NoVoiceConsent,
            Self::VoiceOptedOut,
            Self::NoVoiceSender,
            Self::OptedOut,
            Self::Undeliverable,
        ]
        .iter()
        .any(|r| r.as_str() == name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Skip(SkipReason),
    Wait { until: DateTime<Utc> },
    Send { channel: Channel },
}

/// Step `step` is due at the cart's last update plus the step's delay.
pub fn step_due(merchant: &Merchant, cart: &Cart, step: u8) -> Option<DateTime<Utc>> {
    merchant.flow.get(step as usize).map(|s| cart.updated_at + Duration::minutes(i64::from(s.after_minutes)))
}

/// Seconds to hold a job in the queue before `due`, capped to what SQS allows.
pub fn queue_delay(now: DateTime<Utc>, due: DateTime<Utc>) -> i32 {
    let secs = (due - now).num_seconds().clamp(0, MAX_QUEUE_DELAY_SECONDS);
    secs as i32
}

pub fn job_for(merchant: &Merchant, cart: &Cart, step: u8) -> Option<OutreachJob> {
    step_due(merchant, cart, step).map(|due_at| OutreachJob {
        merchant_id: cart.merchant_id.clone(),
        cart_token: cart.token.clone(),
        step,
        due_at,
    })
}

/// Whether a queued step goes out now, waits, or is dropped (and why).
pub fn decide(
    now: DateTime<Utc>,
    merchant: &Merchant,
    merchant_active: bool,
    cart: &Cart,
    consent: &ConsentState,
    step: u8,
    recent: &[RecentSend],
) -> Decision {
    if !merchant_active {
        return Decision::Skip(SkipReason::MerchantClosed);
    }
    match cart.status {
        CartStatus::Recovered => return Decision::Skip(SkipReason::CartRecovered),
        CartStatus::Completed => return Decision::Skip(SkipReason::CartCompleted),
        CartStatus::Deleted => return Decision::Skip(SkipReason::CartDeleted),
        CartStatus::Open => {}
    }
    if cart.phone.is_none() {
        return Decision::Skip(SkipReason::NoPhone);
    }
    if cart.recovery_url.is_none() {
        return Decision::Skip(SkipReason::NoRecoveryLink);
    }
    // Checked again here, not only at ingest: the merchant may have narrowed the list since.
    if cart.phone.as_ref().is_some_and(|p| !merchant.send_guard.allows_destination(&merchant.default_country, p)) {
        return Decision::Skip(SkipReason::DestinationNotAllowed);
    }
    let Some(def) = merchant.flow.get(step as usize) else {
        return Decision::Skip(SkipReason::StepNotInFlow);
    };
    // `consent` is the step's own channel's: a call needs consent to calls.
    match (consent.status, def.channel) {
        (ConsentStatus::OptedIn, _) => {}
        (ConsentStatus::OptedOut, Channel::Sms) => return Decision::Skip(SkipReason::OptedOut),
        (ConsentStatus::Unknown, Channel::Sms) => return Decision::Skip(SkipReason::NoConsent),
        (ConsentStatus::OptedOut, Channel::Voice) => return Decision::Skip(SkipReason::VoiceOptedOut),
        (ConsentStatus::Unknown, Channel::Voice) => return Decision::Skip(SkipReason::NoVoiceConsent),
    }
    let due = cart.updated_at + Duration::minutes(i64::from(def.after_minutes));
    if now < due {
        return Decision::Wait { until: due };
    }
    let deadline = cart.updated_at + Duration::minutes(i64::from(MAX_FLOW_MINUTES) + DELIVERY_GRACE_MINUTES);
    if now > deadline {
        return Decision::Skip(SkipReason::TooLate);
    }
    if def.channel == Channel::Voice && merchant.voice_from.is_none() {
        return Decision::Skip(SkipReason::NoVoiceSender);
    }
    let Some(phone) = &cart.phone else {
        return Decision::Skip(SkipReason::NoPhone);
    };
    let (recipient, window) = sending_window(merchant, cart, phone);
    let earliest = frequency_hold(now, &cart.token, recent).map_or(now, |t| t.max(now));
    if earliest > deadline {
        return Decision::Skip(SkipReason::FrequencyCap);
    }
    match recipient.next_allowed(earliest, deadline, window) {
        Some(t) if t <= now => Decision::Send { channel: def.channel },
        Some(t) => Decision::Wait { until: t },
        None if earliest > now => Decision::Skip(SkipReason::FrequencyCap),
        None => Decision::Skip(SkipReason::QuietHours),
    }
}

/// Where the recipient is and the merchant's own sending window: what quiet hours are judged by.
fn sending_window(merchant: &Merchant, cart: &Cart, phone: &Phone) -> (Recipient, Option<Window>) {
    let recipient =
        Recipient::locate(phone, cart.country_code.as_deref(), cart.province_code.as_deref(), merchant.tz());
    (recipient, merchant.quiet_hours.as_ref().and_then(|q| merchant_window(&q.start, &q.end)))
}

/// The longest a text decided now may wait in Twilio's queue (behind a sender's rate limit)
/// before it goes out: later than that it is no longer the reminder that was decided.
pub const MAX_QUEUED_SECONDS: u32 = 15 * 60;

/// How long Twilio may hold a text decided at `now` before sending it (its `ValidityPeriod`;
/// one that waits longer fails, with 30036, and is not sent): until the recipient's sending
/// window closes, at most `MAX_QUEUED_SECONDS`. So a text Twilio queues never goes out in
/// quiet hours.
pub fn send_validity(now: DateTime<Utc>, merchant: &Merchant, cart: &Cart) -> u32 {
    let Some(phone) = &cart.phone else { return MAX_QUEUED_SECONDS };
    let (recipient, window) = sending_window(merchant, cart, phone);
    let limit = now + Duration::seconds(i64::from(MAX_QUEUED_SECONDS));
    recipient
        .closes_after(now, limit, window)
        .map_or(MAX_QUEUED_SECONDS, |closes| u32::try_from((closes - now).num_seconds()).unwrap_or(1).max(1))
}

/// At most this many messages to one phone from one merchant in any 24 hours, whatever the flow.
pub const MAX_MESSAGES_PER_DAY: usize = 3;

/// A message this merchant sent to this phone, for the frequency cap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentSend {
    pub at: DateTime<Utc>,
    pub cart: Option<CartToken>,
}

/// When the frequency cap lets this cart's next message go, if it holds it at all: one
/// abandonment's flow may send its own steps, but another cart's message in the last 24 hours
/// blocks it until 24 hours after that message, and no phone gets more than three a day.
pub fn frequency_hold(now: DateTime<Utc>, cart: &CartToken, recent: &[RecentSend]) -> Option<DateTime<Utc>> {
    let day = Duration::hours(24);
    let mut in_window: Vec<&RecentSend> = recent.iter().filter(|r| r.at > now - day && r.at <= now).collect();
    in_window.sort_by_key(|r| r.at);
    let other_cart = in_window.iter().filter(|r| r.cart.as_ref() != Some(cart)).map(|r| r.at + day).max();
    let daily_cap =
        (in_window.len() >= MAX_MESSAGES_PER_DAY).then(|| in_window[in_window.len() - MAX_MESSAGES_PER_DAY].at + day);
    other_cart.into_iter().chain(daily_cap).max().filter(|t| *t > now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::cart::tests::snapshot;
    use crate::domain::consent::ConsentStatus;
    use crate::domain::merchant::tests::sample_json;

    fn merchant() -> Merchant {
        Merchant::from_json(&sample_json().to_string()).unwrap()
    }

    fn cart() -> Cart {
        Cart::new(
            MerchantId::parse("snowdevil").unwrap(),
            snapshot("2026-06-01T17:00:00Z"),
            "2026-06-01T17:00:00Z".parse().unwrap(),
        )
    }

    fn opted_in() -> ConsentState {
        ConsentState { status: ConsentStatus::OptedIn, seq: 1, ..Default::default() }
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn twilio_may_hold_a_text_only_while_the_sending_window_stays_open() {
        let (m, c) = (merchant(), cart());
        // San Francisco, the merchant's window 09:00-20:00 (20:00 PDT = 03:00 UTC).
        assert_eq!(send_validity(at("2026-06-01T17:30:00Z"), &m, &c), MAX_QUEUED_SECONDS, "midday");
        assert_eq!(send_validity(at("2026-06-02T02:50:00Z"), &m, &c), 600);
        assert_eq!(send_validity(at("2026-06-02T02:59:30Z"), &m, &c), 30, "it closes in half a minute");
    }

    #[test]
    fn waits_until_due_then_sends() {
        let (m, c) = (merchant(), cart());
        assert_eq!(
            decide(at("2026-06-01T17:10:00Z"), &m, true, &c, &opted_in(), 0, &[]),
            Decision::Wait { until: at("2026-06-01T17:30:00Z") }
        );
        assert_eq!(
            decide(at("2026-06-01T17:30:00Z"), &m, true, &c, &opted_in(), 0, &[]),
            Decision::Send { channel: Channel::Sms }
        );
    }

    #[test]
    fn skips_with_a_reason() {
        let (m, mut c) = (merchant(), cart());
        let now = at("2026-06-01T18:00:00Z");
        assert_eq!(decide(now, &m, false, &c, &opted_in(), 0, &[]), Decision::Skip(SkipReason::MerchantClosed));
        assert_eq!(decide(now, &m, true, &c, &ConsentState::default(), 0, &[]), Decision::Skip(SkipReason::NoConsent));
        let out = ConsentState { status: ConsentStatus::OptedOut, ..Default::default() };
        assert_eq!(decide(now, &m, true, &c, &out, 0, &[]), Decision::Skip(SkipReason::OptedOut));
        assert_eq!(decide(now, &m, true, &c, &opted_in(), 7, &[]), Decision::Skip(SkipReason::StepNotInFlow));
        // The call step (step 1) reads the voice ledger: no consent to calls skips only it.
        let later = at("2026-06-01T21:00:00Z");
        assert_eq!(
            decide(later, &m, true, &c, &ConsentState::default(), 1, &[]),
            Decision::Skip(SkipReason::NoVoiceConsent)
        );
        assert_eq!(decide(later, &m, true, &c, &out, 1, &[]), Decision::Skip(SkipReason::VoiceOptedOut));
        assert!(SkipReason::NoVoiceConsent.continues_flow() && !SkipReason::CartRecovered.continues_flow());
        assert_eq!(decide(later, &m, true, &c, &opted_in(), 1, &[]), Decision::Send { channel: Channel::Voice });
        assert_eq!(
            decide(at("2026-06-03T17:06:00Z"), &m, true, &c, &opted_in(), 2, &[]),
            Decision::Skip(SkipReason::TooLate)
        );
        c.status = CartStatus::Recovered;
        assert_eq!(decide(now, &m, true, &c, &opted_in(), 0, &[]), Decision::Skip(SkipReason::CartRecovered));
        c.status = CartStatus::Deleted;
        assert_eq!(decide(now, &m, true, &c, &opted_in(), 0, &[]), Decision::Skip(SkipReason::CartDeleted));
        c.status = CartStatus::Open;
        c.recovery_url = None;
        assert_eq!(decide(now, &m, true, &c, &opted_in(), 0, &[]), Decision::Skip(SkipReason::NoRecoveryLink));
        c.phone = None;
        assert_eq!(decide(now, &m, true, &c, &opted_in(), 0, &[]), Decision::Skip(SkipReason::NoPhone));
    }

    #[test]
    fn quiet_hours_defer_to_the_next_allowed_minute_or_drop() {
        let (m, mut c) = (merchant(), cart());
        // The shopper is in San Francisco; the merchant sends 09:00-20:00 their time.
        c.updated_at = at("2026-06-01T05:00:00Z"); // 22:00 PDT
        assert_eq!(
            decide(at("2026-06-01T05:30:00Z"), &m, true, &c, &opted_in(), 0, &[]),
            Decision::Wait { until: at("2026-06-01T16:00:00Z") }
        );
        assert_eq!(
            decide(at("2026-06-01T16:00:00Z"), &m, true, &c, &opted_in(), 0, &[]),
            Decision::Send { channel: Channel::Sms }
        );
        // Past due at 22:00 local, the next allowed minute (09:00) comes after the 48-hour window.
        assert_eq!(
            decide(at("2026-06-03T05:00:00Z"), &m, true, &c, &opted_in(), 2, &[]),
            Decision::Skip(SkipReason::QuietHours)
        );
    }

    #[test]
    fn other_carts_messages_hold_this_one_for_24_hours() {
        let (m, c) = (merchant(), cart());
        let now = at("2026-06-01T18:00:00Z");
        let other = RecentSend { at: at("2026-06-01T17:10:00Z"), cart: Some(CartToken::parse("other").unwrap()) };
        assert_eq!(
            decide(now, &m, true, &c, &opted_in(), 0, std::slice::from_ref(&other)),
            Decision::Wait { until: at("2026-06-02T17:10:00Z") }
        );
        // A hold that ends at night waits further, for the recipient's morning.
        let night = RecentSend { at: at("2026-06-01T09:00:00Z"), ..other.clone() };
        assert_eq!(
            decide(now, &m, true, &c, &opted_in(), 0, &[night]),
            Decision::Wait { until: at("2026-06-02T16:00:00Z") }
        );
        // This cart's own earlier step does not hold its next one.
        let own = RecentSend { at: at("2026-06-01T17:30:00Z"), cart: Some(c.token.clone()) };
        assert_eq!(frequency_hold(now, &c.token, std::slice::from_ref(&own)), None);
        // A hold past the 48-hour window drops the step.
        let late = at("2026-06-03T10:00:00Z");
        let recent = RecentSend { at: at("2026-06-03T09:00:00Z"), cart: other.cart.clone() };
        assert_eq!(decide(late, &m, true, &c, &opted_in(), 2, &[recent]), Decision::Skip(SkipReason::FrequencyCap));
    }

    #[test]
    fn never_more_than_three_a_day() {
        let token = CartToken::parse("mine").unwrap();
        let now = at("2026-06-01T18:00:00Z");
        let sends: Vec<RecentSend> = ["2026-06-01T08:00:00Z", "2026-06-01T12:00:00Z", "2026-06-01T16:00:00Z"]
            .iter()
            .map(|s| RecentSend { at: at(s), cart: Some(token.clone()) })
            .collect();
        assert_eq!(frequency_hold(now, &token, &sends), Some(at("2026-06-02T08:00:00Z")));
        assert_eq!(frequency_hold(now, &token, &sends[1..]), None);
        assert_eq!(frequency_hold(at("2026-06-02T08:00:01Z"), &token, &sends), None, "the oldest aged out");
    }

    #[test]
    fn a_step_at_48_hours_survives_queue_latency() {
        let mut m = merchant();
        m.flow[2].after_minutes = MAX_FLOW_MINUTES;
        let c = cart();
        assert_eq!(
            decide(at("2026-06-03T17:00:40Z"), &m, true, &c, &opted_in(), 2, &[]),
            Decision::Send { channel: Channel::Sms }
        );
    }

    #[test]
    fn long_delays_hop_through_the_queue() {
        let now = at("2026-06-01T17:00:00Z");
        assert_eq!(queue_delay(now, now + Duration::minutes(5)), 300);
        assert_eq!(queue_delay(now, now + Duration::hours(4)), 900);
        assert_eq!(queue_delay(now, now - Duration::minutes(1)), 0);
        let job = job_for(&merchant(), &cart(), 2).unwrap();
        assert_eq!(job.due_at, at("2026-06-02T17:00:00Z"));
        assert!(job_for(&merchant(), &cart(), 3).is_none());
    }

    #[test]
    fn a_cart_update_pushes_the_step_back() {
        let m = merchant();
        let mut c = cart();
        c.updated_at = at("2026-06-01T17:20:00Z");
        assert_eq!(
            decide(at("2026-06-01T17:30:00Z"), &m, true, &c, &opted_in(), 0, &[]),
            Decision::Wait { until: at("2026-06-01T17:50:00Z") }
        );
    }
}
