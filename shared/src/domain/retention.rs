//! Retention: what expires when, where due items are found, and what a purge run reports.
//! Pure rules; the purger (`app::retention`) reads the due items and deletes them.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Due items are spread over this many index partitions per day, so one day's (or month's)
/// writes never all land on one partition of the purge index.
pub const PURGE_SHARDS: u32 = 8;
/// The first day a purge run ever looks at (nothing older was ever written).
pub const PURGE_EPOCH: &str = "2026-01-01";

/// The kinds of data retention purges, each on its own clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PurgeKind {
    /// `retention_days.sms_logs` after the message.
    SmsLog,
    /// `retention_days.sms_logs` after the call.
    CallLog,
    /// `retention_days.recordings` after the call: the S3 object and its log reference.
    Recording,
    /// `retention_days.recordings` after the call: the voice agent's session and transcript.
    Transcript,
    /// `retention_days.consent_records` after the entry was superseded.
    ConsentEntry,
    /// A phone's whole ledger on one channel, `retention_days.consent_records` after the last
    /// thing that happened for that phone at that merchant.
    ConsentLedger,
    /// `retention_days.carts` after the cart's last update: the cart, its steps, its pointer.
    Cart,
    /// Short-lived working items (the send counter, reachability marks).
    Working,
    /// Platform privacy requests and uninstalls, kept as long as consent records.
    PlatformRequest,
    /// A closed account after its grace period, or a shop's customer data (`shop/redact`).
    Erasure,
    /// A data-subject request waiting for its run (a platform's request; a deletion held).
    Privacy,
}

impl PurgeKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::SmsLog => "sms_log",
            Self::CallLog => "call_log",
            Self::Recording => "recording",
            Self::Transcript => "transcript",
            Self::ConsentEntry => "consent_entry",
            Self::ConsentLedger => "consent_ledger",
            Self::Cart => "cart",
            Self::Working => "working",
            Self::PlatformRequest => "platform_request",
            Self::Erasure => "erasure",
            Self::Privacy => "privacy_request",
        }
    }

    /// The kind of an item, from its sort key.
    pub fn of_sort_key(sk: &str) -> Self {
        match sk {
            s if s.starts_with("SMS#") => Self::SmsLog,
            s if s.starts_with("CALL#") => Self::CallLog,
            s if s.starts_with("REC#") => Self::Recording,
            s if s.starts_with("AGENT#") => Self::Transcript,
            s if s.starts_with("CONSENT#") && s.matches('#').count() >= 2 => Self::ConsentEntry,
            s if s.starts_with("CONSENT#") => Self::ConsentLedger,
            "CART" => Self::Cart,
            s if s.starts_with("REQ#") => Self::PlatformRequest,
            "CLOSURE" | "REDACT" => Self::Erasure,
            s if s.starts_with("PRIVACY#") => Self::Privacy,
            _ => Self::Working,
        }
    }
}

/// A stable shard of a partition key (FNV-1a), so an item's bucket never moves.
pub fn shard_of(pk: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in pk.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % PURGE_SHARDS
}

/// The purge index partition of an item due at `purge_at`: its day and its shard.
pub fn purge_bucket(purge_at: DateTime<Utc>, pk: &str) -> String {
    bucket_of(purge_at.date_naive(), shard_of(pk))
}

pub fn bucket_of(day: NaiveDate, shard: u32) -> String {
    format!("{}#{shard}", day.format("%Y-%m-%d"))
}

/// The days a run reads: from the day after the last complete run (or the epoch) through
/// `as_of`'s day.
pub fn days_to_read(watermark: Option<NaiveDate>, as_of: DateTime<Utc>) -> Vec<NaiveDate> {
    let epoch = NaiveDate::parse_from_str(PURGE_EPOCH, "%Y-%m-%d").unwrap_or_default();
    let first = watermark.map_or(epoch, |w| w + Duration::days(1)).max(epoch);
    let last = as_of.date_naive();
    let mut days = Vec::new();
    let mut d = first;
    while d <= last {
        days.push(d);
        d += Duration::days(1);
    }
    days
}

/// What one purge run did, without personal data: counts per merchant and kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeReport {
    pub as_of: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub dry_run: bool,
    /// merchant → kind → items deleted (or, in a dry run, due).
    pub deleted: BTreeMap<String, BTreeMap<String, u64>>,
    /// merchant → items kept because of a legal hold.
    pub held: BTreeMap<String, u64>,
    /// Items not yet due after a closer look (a ledger with recent activity), moved forward.
    pub deferred: u64,
    /// Purge-index entries read: what the run's cost follows (never the table's size).
    #[serde(default)]
    pub index_reads: u64,
    /// Purge-index queries made (days × shards).
    #[serde(default)]
    pub index_queries: u64,
    pub errors: Vec<String>,
    /// False when the run stopped at its time limit: the next run continues where it stopped.
    pub complete: bool,
    /// The last day all of whose due items were handled.
    pub through_day: Option<NaiveDate>,
}

impl PurgeReport {
    pub fn count(&mut self, merchant: &str, kind: PurgeKind, n: u64) {
        if n > 0 {
            *self.deleted.entry(merchant.to_string()).or_default().entry(kind.as_str().to_string()).or_default() += n;
        }
    }

    pub fn total(&self) -> u64 {
        self.deleted.values().flat_map(|k| k.values()).sum()
    }

    pub fn of_kind(&self, kind: PurgeKind) -> u64 {
        self.deleted.values().filter_map(|k| k.get(kind.as_str())).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_buckets_and_days() {
        assert_eq!(PurgeKind::of_sort_key("SMS#OUT#2026-01-01T00:00:00.000Z#SM1"), PurgeKind::SmsLog);
        assert_eq!(PurgeKind::of_sort_key("CONSENT#sms#000000000003"), PurgeKind::ConsentEntry);
        assert_eq!(PurgeKind::of_sort_key("CONSENT#sms"), PurgeKind::ConsentLedger);
        assert_eq!(PurgeKind::of_sort_key("CART"), PurgeKind::Cart);
        assert_eq!(PurgeKind::of_sort_key("REC#CA1"), PurgeKind::Recording);
        assert_eq!(PurgeKind::of_sort_key("FREQ"), PurgeKind::Working);
        let at: DateTime<Utc> = "2026-06-01T10:00:00Z".parse().unwrap();
        let b = purge_bucket(at, "C#snowdevil#+14155552671");
        assert!(b.starts_with("2026-06-01#") && shard_of("C#snowdevil#+14155552671") < PURGE_SHARDS, "{b}");
        let shards: std::collections::HashSet<u32> =
            (0..100).map(|i| shard_of(&format!("C#m#+1415555{i:04}"))).collect();
        assert_eq!(shards.len() as u32, PURGE_SHARDS, "phones spread over every shard");
        let days = days_to_read(Some("2026-05-30".parse().unwrap()), at);
        assert_eq!(days.len(), 2);
        assert_eq!(days_to_read(None, "2026-01-02T00:00:00Z".parse().unwrap()).len(), 2);
        assert!(days_to_read(Some("2026-06-01".parse().unwrap()), at).is_empty());
    }
}
