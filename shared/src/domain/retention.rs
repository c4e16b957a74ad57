//! Retention: what expires when, where due items are found, and what a purge run reports.
//! Pure rules; the purger (`app::retention`) reads the due items and deletes them.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Where a legal hold keeps an account's recordings in the bucket: no lifecycle rule covers
/// it (S3 lifecycle filters cannot exclude a tag), so S3 keeps them while the hold does.
pub const HELD_PREFIX: &str = "held/";

/// Items that retention purges are spread over this many partitions of the purge index (by a
/// stable hash of their key), each sorted by purge date: a run reads, per shard, everything due
/// at or before its `as_of`, however old, and nothing else, so its cost follows what is due.
pub const PURGE_SHARDS: u32 = 16;

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
    /// A deleted person's copy at the provider (a Twilio message body or recording) whose
    /// removal has not been confirmed yet: the purger queues it again, never skips it.
    ProviderCopy,
    /// A shortened retention still being applied to stored data (`Redate`): due at once, so a
    /// save that stopped part-way is finished by the next run.
    Redate,
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
            Self::ProviderCopy => "provider_copy",
            Self::Redate => "redate",
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
            s if s.starts_with("TWILIO#") => Self::ProviderCopy,
            s if s.starts_with("REDATE#") => Self::Redate,
            _ => Self::Working,
        }
    }
}

impl PurgeKind {
    /// The kind of an item by its whole key: an email or phone pointer (`Q#…`, `N#…`) lives and
    /// goes as long as its cart.
    /// A customer's `SENDER#` item (which sender texted the phone) lives and goes as long as the
    /// SMS log.
    pub fn of_key(pk: &str, sk: &str) -> Self {
        if pk.starts_with("Q#") || pk.starts_with("N#") {
            Self::Cart
        } else if pk.starts_with("C#") && sk.starts_with("SENDER#") {
            Self::SmsLog
        } else {
            Self::of_sort_key(sk)
        }
    }
}

/// How much earlier each kind's stored purge dates fall when a merchant shortens its retention
/// from `old` to `new` (kinds whose setting did not shrink are absent): a shortened setting
/// applies to what is already stored, not only to new writes.
pub fn shortening(
    old: &crate::domain::merchant::RetentionDays,
    new: &crate::domain::merchant::RetentionDays,
) -> Vec<(PurgeKind, Duration)> {
    let shrink = |o: u32, n: u32| (n < o).then(|| Duration::days(i64::from(o - n)));
    let mut out = Vec::new();
    for (days, kinds) in [
        (shrink(old.sms_logs, new.sms_logs), &[PurgeKind::SmsLog, PurgeKind::CallLog][..]),
        (shrink(old.recordings, new.recordings), &[PurgeKind::Recording, PurgeKind::Transcript][..]),
        (
            shrink(old.consent_records, new.consent_records),
            &[PurgeKind::ConsentEntry, PurgeKind::ConsentLedger, PurgeKind::PlatformRequest][..],
        ),
        (shrink(old.carts, new.carts), &[PurgeKind::Cart][..]),
    ] {
        if let Some(d) = days {
            out.extend(kinds.iter().map(|k| (*k, d)));
        }
    }
    out
}

/// A shortened retention being applied to what a merchant has stored: each kind's purge dates
/// move earlier by its shift. Recorded before the merchant's new settings are saved and removed
/// once every date moved; each item moved is marked with `id`, so a run resumed after a failure
/// moves nothing twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redate {
    pub id: String,
    /// Each kind and how many seconds earlier its dates fall.
    pub shifts: Vec<(PurgeKind, i64)>,
    /// The settings that shortened them.
    pub retention: crate::domain::merchant::RetentionDays,
}

impl Redate {
    /// The re-dating going from `old` to `new` calls for; `None` when no setting shrank.
    pub fn new(
        id: String,
        old: &crate::domain::merchant::RetentionDays,
        new: &crate::domain::merchant::RetentionDays,
    ) -> Option<Self> {
        let shifts: Vec<(PurgeKind, i64)> =
            shortening(old, new).into_iter().map(|(k, d)| (k, d.num_seconds())).collect();
        (!shifts.is_empty()).then(|| Self { id, shifts, retention: new.clone() })
    }

    pub fn shifts(&self) -> Vec<(PurgeKind, Duration)> {
        self.shifts.iter().map(|(k, s)| (*k, Duration::seconds(*s))).collect()
    }

    /// Whether finishing it is still right under the merchant's `current` settings: no kind it
    /// shifts is kept longer now than it says (the save that recorded it did not land, or a
    /// later one lengthened it again: then it is dropped, moving nothing more).
    pub fn still_applies(&self, current: &crate::domain::merchant::RetentionDays) -> bool {
        shortening(current, &self.retention).iter().all(|(k, _)| !self.shifts.iter().any(|(s, _)| s == k))
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

/// The purge index partition of an item of partition `pk`: its shard. The item's purge date is
/// the index's sort key, so moving the date never moves the item out of reach.
pub fn purge_bucket(pk: &str) -> String {
    shard_bucket(shard_of(pk))
}

/// The purge index partition of one shard.
pub fn shard_bucket(shard: u32) -> String {
    format!("P{shard:02}")
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
    /// A deletion's Twilio copies not yet confirmed removed, queued for the worker again.
    #[serde(default)]
    pub provider_copies_requeued: u64,
    /// Purge-index entries read: what the run's cost follows (never the table's size).
    #[serde(default)]
    pub index_reads: u64,
    /// Purge-index queries made (pages × shards).
    #[serde(default)]
    pub index_queries: u64,
    pub errors: Vec<String>,
    /// False when the run stopped at its time limit: the next run continues where it stopped.
    pub complete: bool,
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
    fn a_shortened_retention_moves_only_its_kinds() {
        use crate::domain::merchant::RetentionDays;
        let old = RetentionDays { sms_logs: 730, consent_records: 730, recordings: 730, carts: 30 };
        let new = RetentionDays { sms_logs: 30, consent_records: 730, recordings: 800, carts: 30 };
        assert_eq!(
            shortening(&old, &new),
            vec![(PurgeKind::SmsLog, Duration::days(700)), (PurgeKind::CallLog, Duration::days(700))]
        );
        assert!(shortening(&new, &old).iter().all(|(k, _)| *k == PurgeKind::Recording || *k == PurgeKind::Transcript));
        assert_eq!(PurgeKind::of_key("Q#m#abc", "CART#t"), PurgeKind::Cart);
        assert_eq!(PurgeKind::of_key("N#m#+14155552671", "CART#t"), PurgeKind::Cart);
    }

    #[test]
    fn a_customers_sender_item_is_sms_log_data() {
        assert_eq!(PurgeKind::of_key("C#m#+14155552671", "SENDER#MG0123"), PurgeKind::SmsLog);
        assert_eq!(PurgeKind::of_key("V#m", "REQ#2026-01-01T00:00:00.000Z#shopify#e1"), PurgeKind::PlatformRequest);
        assert_eq!(PurgeKind::of_sort_key("REDATE#r1"), PurgeKind::Redate);
    }

    #[test]
    fn a_redate_still_applies_only_while_its_kinds_are_kept_no_longer() {
        use crate::domain::merchant::RetentionDays;
        let old = RetentionDays { sms_logs: 730, consent_records: 730, recordings: 730, carts: 90 };
        let new = RetentionDays { sms_logs: 30, ..old.clone() };
        let r = Redate::new("r1".into(), &old, &new).unwrap();
        assert_eq!(
            r.shifts(),
            vec![(PurgeKind::SmsLog, Duration::days(700)), (PurgeKind::CallLog, Duration::days(700))]
        );
        assert!(Redate::new("r2".into(), &new, &old).is_none(), "nothing shrank");
        assert!(r.still_applies(&new));
        assert!(r.still_applies(&RetentionDays { sms_logs: 10, ..new.clone() }), "shortened further");
        assert!(r.still_applies(&RetentionDays { carts: 200, ..new.clone() }), "another kind lengthened");
        assert!(!r.still_applies(&old), "the save never landed");
    }

    #[test]
    fn kinds_and_shards() {
        assert_eq!(PurgeKind::of_sort_key("SMS#OUT#2026-01-01T00:00:00.000Z#SM1"), PurgeKind::SmsLog);
        assert_eq!(PurgeKind::of_sort_key("CONSENT#sms#000000000003"), PurgeKind::ConsentEntry);
        assert_eq!(PurgeKind::of_sort_key("CONSENT#sms"), PurgeKind::ConsentLedger);
        assert_eq!(PurgeKind::of_sort_key("CART"), PurgeKind::Cart);
        assert_eq!(PurgeKind::of_sort_key("REC#CA1"), PurgeKind::Recording);
        assert_eq!(PurgeKind::of_sort_key("FREQ"), PurgeKind::Working);
        let b = purge_bucket("C#snowdevil#+14155552671");
        assert_eq!(b, shard_bucket(shard_of("C#snowdevil#+14155552671")), "{b}");
        assert!(b.starts_with('P') && shard_of("C#snowdevil#+14155552671") < PURGE_SHARDS, "{b}");
        let shards: std::collections::HashSet<u32> =
            (0..400).map(|i| shard_of(&format!("C#m#+1415555{i:04}"))).collect();
        assert_eq!(shards.len() as u32, PURGE_SHARDS, "phones spread over every shard");
    }
}
