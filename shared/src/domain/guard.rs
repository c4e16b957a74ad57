//! Guarding the bill and the sender's reputation against SMS pumping: fake checkouts with
//! premium or foreign numbers, made to farm per-message revenue. Per merchant: the countries a
//! message or call may go to, a daily send budget, and burst limits on webhook-created carts
//! per shopper IP and per number prefix. What is refused is recorded with its reason.

use crate::domain::phone::Phone;
use chrono::{DateTime, Duration, DurationRound, Utc};
use serde::{Deserialize, Serialize};

pub const DEFAULT_DAILY_SEND_BUDGET: u32 = 1_000;
pub const DEFAULT_CARTS_PER_IP: u32 = 10;
pub const DEFAULT_CARTS_PER_PREFIX: u32 = 30;
pub const DEFAULT_BURST_WINDOW_MINUTES: u32 = 60;
/// The national-number digits a prefix drops: a US prefix is area code and exchange (NPA-NXX),
/// the block pumping scripts walk through.
const PREFIX_DROPS_DIGITS: usize = 4;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendGuard {
    /// ISO 3166 alpha-2 regions a message or call may go to. Empty: the merchant's own
    /// country, with the US and Canada allowed together (one numbering plan, one price).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_countries: Vec<String>,
    /// Messages and calls a day (UTC) for the whole merchant; the claim of one more is refused.
    #[serde(default = "default_budget")]
    pub daily_send_budget: u32,
    /// New carts that may lead to outreach from one shopper IP within the window.
    #[serde(default = "default_per_ip")]
    pub carts_per_ip: u32,
    /// New carts that may lead to outreach for numbers sharing a prefix within the window.
    #[serde(default = "default_per_prefix")]
    pub carts_per_prefix: u32,
    #[serde(default = "default_window")]
    pub burst_window_minutes: u32,
}

fn default_budget() -> u32 {
    DEFAULT_DAILY_SEND_BUDGET
}
fn default_per_ip() -> u32 {
    DEFAULT_CARTS_PER_IP
}
fn default_per_prefix() -> u32 {
    DEFAULT_CARTS_PER_PREFIX
}
fn default_window() -> u32 {
    DEFAULT_BURST_WINDOW_MINUTES
}

impl Default for SendGuard {
    fn default() -> Self {
        Self {
            allowed_countries: Vec::new(),
            daily_send_budget: DEFAULT_DAILY_SEND_BUDGET,
            carts_per_ip: DEFAULT_CARTS_PER_IP,
            carts_per_prefix: DEFAULT_CARTS_PER_PREFIX,
            burst_window_minutes: DEFAULT_BURST_WINDOW_MINUTES,
        }
    }
}

/// Why a cart or a send was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    DestinationCountry,
    BurstIp,
    BurstPrefix,
    DailyBudget,
}

impl Refusal {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::DestinationCountry => "destination_country",
            Self::BurstIp => "burst_ip",
            Self::BurstPrefix => "burst_prefix",
            Self::DailyBudget => "daily_budget",
        }
    }
}

/// Which burst counter: one per shopper IP, one per number prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BurstKind {
    Ip,
    Prefix,
}

impl BurstKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ip => "ip",
            Self::Prefix => "prefix",
        }
    }

    pub const fn refusal(self) -> Refusal {
        match self {
            Self::Ip => Refusal::BurstIp,
            Self::Prefix => Refusal::BurstPrefix,
        }
    }
}

impl SendGuard {
    /// The regions allowed, upper-cased; the default when none are configured.
    pub fn allowed_regions(&self, default_country: &str) -> Vec<String> {
        if !self.allowed_countries.is_empty() {
            return self.allowed_countries.iter().map(|c| c.to_ascii_uppercase()).collect();
        }
        let own = default_country.to_ascii_uppercase();
        match own.as_str() {
            "US" | "CA" => vec!["US".into(), "CA".into()],
            _ => vec![own],
        }
    }

    pub fn allows_destination(&self, default_country: &str, phone: &Phone) -> bool {
        phone.region().is_some_and(|r| self.allowed_regions(default_country).contains(&r))
    }

    /// Checks the settings a merchant saves.
    pub fn validate(&self) -> Result<(), (&'static str, &'static str)> {
        if self.allowed_countries.iter().any(|c| !Phone::is_known_region(c)) {
            return Err(("send_guard.allowed_countries", "must be ISO 3166 alpha-2 region codes"));
        }
        if self.daily_send_budget == 0 || self.carts_per_ip == 0 || self.carts_per_prefix == 0 {
            return Err(("send_guard", "budgets and burst limits must be at least 1"));
        }
        if !(1..=1440).contains(&self.burst_window_minutes) {
            return Err(("send_guard.burst_window_minutes", "must be 1 to 1440"));
        }
        Ok(())
    }

    pub fn burst_limit(&self, kind: BurstKind) -> u32 {
        match kind {
            BurstKind::Ip => self.carts_per_ip,
            BurstKind::Prefix => self.carts_per_prefix,
        }
    }

    /// The start of the burst window `now` falls in (fixed windows: one counter item each).
    pub fn window_start(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let window = Duration::minutes(i64::from(self.burst_window_minutes.max(1)));
        now.duration_trunc(window).unwrap_or(now)
    }
}

/// The number without its last digits: numbers a pumping script walks share it.
pub fn phone_prefix(phone: &Phone) -> &str {
    let s = phone.as_str();
    &s[..s.len().saturating_sub(PREFIX_DROPS_DIGITS).max(3)]
}

/// The UTC day a send counts against the daily budget.
pub fn budget_day(now: DateTime<Utc>) -> String {
    now.format("%Y-%m-%d").to_string()
}

/// Most shards a day's send count is split into. DynamoDB cancels transactions that meet on
/// one item, so a single count would make a large merchant's concurrent claims fail one
/// another; ten items let ten claims through at once.
pub const MAX_BUDGET_SHARDS: u32 = 10;

/// A daily budget split into shards, each counting up to its own share: the shares sum to the
/// budget exactly, so the total never exceeds it, and a claim gives up only when it has seen
/// every shard at its share (a shard only fills during a day), so the budget is reachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetShards {
    budget: u32,
}

impl BudgetShards {
    pub fn new(budget: u32) -> Self {
        Self { budget }
    }

    /// Never more shards than the budget, so every share is at least one send.
    pub fn count(&self) -> u32 {
        self.budget.clamp(1, MAX_BUDGET_SHARDS)
    }

    /// Shard `shard`'s share: the budget divided evenly, the remainder to the first shards.
    pub fn share(&self, shard: u32) -> u32 {
        let n = self.count();
        if shard >= n {
            return 0;
        }
        self.budget / n + u32::from(shard < self.budget % n)
    }

    /// The shards in the order a claim tries them: from one picked by the claim's id (claims
    /// spread evenly), then round the rest.
    pub fn order(&self, claim_id: &str) -> Vec<u32> {
        let n = self.count();
        // FNV-1a: a stable spread of ids, not a secret.
        let hash =
            claim_id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        let start = (hash % u64::from(n)) as u32;
        (0..n).map(|i| (start + i) % n).collect()
    }

    /// Of `order`, the shards after the first that still have room, given each shard's count.
    pub fn with_room(&self, order: &[u32], counts: impl Fn(u32) -> u64) -> Vec<u32> {
        order.iter().skip(1).copied().filter(|&s| counts(s) < u64::from(self.share(s))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phone(s: &str) -> Phone {
        Phone::parse(s, None).unwrap()
    }

    #[test]
    fn the_default_is_the_merchants_country_with_us_and_canada_together() {
        let g = SendGuard::default();
        assert!(g.allows_destination("US", &phone("+14155552671")));
        assert!(g.allows_destination("US", &phone("+16135550123")), "Ottawa");
        assert!(!g.allows_destination("US", &phone("+447400123456")), "UK mobile");
        assert!(!g.allows_destination("US", &phone("+37061234567")), "Lithuania, a pumping favourite");
        assert!(g.allows_destination("GB", &phone("+447400123456")));
        assert!(!g.allows_destination("GB", &phone("+14155552671")));
        let g = SendGuard { allowed_countries: vec!["us".into(), "MX".into()], ..SendGuard::default() };
        assert!(g.allows_destination("US", &phone("+525512345678")));
        assert!(!g.allows_destination("US", &phone("+16135550123")), "an explicit list is the whole list");
    }

    #[test]
    fn prefixes_windows_and_validation() {
        assert_eq!(phone_prefix(&phone("+14155552671")), "+1415555");
        let g = SendGuard::default();
        let at: DateTime<Utc> = "2026-11-28T19:47:12Z".parse().unwrap();
        assert_eq!(g.window_start(at), "2026-11-28T19:00:00Z".parse::<DateTime<Utc>>().unwrap());
        assert_eq!(budget_day(at), "2026-11-28");
        assert!(g.validate().is_ok());
        assert!(SendGuard { allowed_countries: vec!["XX".into()], ..g.clone() }.validate().is_err());
        assert!(SendGuard { daily_send_budget: 0, ..g.clone() }.validate().is_err());
        assert!(SendGuard { burst_window_minutes: 0, ..g }.validate().is_err());
        assert_eq!(Refusal::DailyBudget.as_str(), "daily_budget");
    }

    #[test]
    fn budget_shares_sum_to_the_budget_and_each_is_at_least_one() {
        for budget in [1, 2, 3, 9, 10, 11, 20, 999, 1000, 1001] {
            let shards = BudgetShards::new(budget);
            let n = shards.count();
            assert!((1..=MAX_BUDGET_SHARDS).contains(&n) && n <= budget);
            assert_eq!((0..n).map(|s| shards.share(s)).sum::<u32>(), budget, "budget {budget}");
            assert!((0..n).all(|s| shards.share(s) >= 1));
            assert_eq!(shards.share(n), 0, "no shard past the last");
        }
        let twenty = BudgetShards::new(20);
        assert_eq!((0..10).map(|s| twenty.share(s)).collect::<Vec<_>>(), vec![2; 10]);
        let eleven = BudgetShards::new(11);
        assert_eq!((eleven.share(0), eleven.share(1)), (2, 1));
    }

    #[test]
    fn claims_start_on_shards_spread_by_their_ids_and_walk_the_rest() {
        let shards = BudgetShards::new(1000);
        let mut starts = std::collections::HashSet::new();
        for i in 0..200 {
            let order = shards.order(&format!("claim-{i}"));
            let mut sorted = order.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..10).collect::<Vec<_>>(), "every shard once");
            starts.insert(order[0]);
        }
        assert_eq!(starts.len(), 10, "claims spread over every shard");
        // Shards 2 and 5 are full: the walk after shard 0 skips them.
        let order: Vec<u32> = (0..10).collect();
        let counts = |s: u32| if s == 2 || s == 5 { 100 } else { 3 };
        assert_eq!(shards.with_room(&order, counts), vec![1, 3, 4, 6, 7, 8, 9]);
    }
}
