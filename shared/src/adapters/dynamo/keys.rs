//! Every key format of the one table, and every attribute name used in a condition. Nothing
//! else builds a key or names an attribute in an expression.
//!
//! | pk                              | sk                      | item                                   | GSI `lookup` (gsi1pk / gsi1sk)        |
//! |---------------------------------|-------------------------|----------------------------------------|---------------------------------------|
//! | `M#{merchant}`                  | `PROFILE`               | merchant profile, status, API key hash | `SHOP#{domain}` / `M#{merchant}`      |
//! | `Z#{merchant}`                  | `SECRETS`               | webhook secret, store API token (only webhook ingest may read `Z#` keys) |                                       |
//! | `Q#{merchant}#{hmac(email)}`    | `CART#{token}`          | email pointer (token, phone), purged with the cart |                          |
//! | `N#{merchant}#{phone}`          | `CART#{token}`          | phone pointer (token), purged with the cart: read consistently, unlike the `lookup` index, so a deletion finds a cart written a moment before it | |
//! | `H#{merchant}#{subject}`        | `DELETED`               | deletion marker (`SubjectKey`: hmac(phone), `email:`hmac, `customer:`hmac): keeps an opt-out honoured and late checkouts out after a data-subject deletion |  |
//! | `U#{merchant}#{hmac(channel, phone)}` | `SUPPRESSION`     | suppression record: an opt-out's date and source, kept through retention, deletion and closure (no purge date) | |
//! | `WS#{connection}`               | `CONN`                  | voice agent connection → call reference (TTL a day) |                            |
//! | `C#{merchant}#{phone}`          | `AGENT#{call}`          | voice agent session and transcript     |                                       |
//! | `V#{merchant}`                  | `DSR#{id}`, `PRIVACY#{id}` | data-subject request status and proof; a request waiting for its run | |
//! | `M#{merchant}`                  | `BUDGET#{day}#{shard}`  | sends that UTC day, one of the budget's shards (daily budget, TTL) |           |
//! | `M#{merchant}`                  | `REDATE#{id}`           | a shortened retention being applied to stored data (due in the purge index 15 minutes on: a run finishes one a save left) | |
//! | `L#{merchant}`                  | `API_BUCKET`            | the merchant's API token bucket (`tat`, TTL; no personal data) |               |
//! | `G#{merchant}#{ip|prefix}#{hmac}` | `W#{window start}`    | burst counter of new carts (TTL)       |                                       |
//! | `D#{shop domain}`               | `OWNER`                 | shop-domain ownership (unique)         |                                       |
//! | `S#{sender}`                    | `M#{merchant}`          | sender index (number or `MG…`)         |                                       |
//! | `R#MERCHANTS`                   | `M#{merchant}`          | merchant registry: lets the daily silence check list merchants with one Query (written with the profile) | |
//! | `K#{merchant}#{token}`          | `CART`                  | cart (versioned)                       | `P#{merchant}#{phone}` / `CART#{token}` |
//! | `K#{merchant}#{token}`          | `STEP#{n}`              | step claim / outcome, with lease       |                                       |
//! | `K#{merchant}#{token}`          | `LINK#{code}`           | our recovery link `/r/{code}` (step, channel, clicks; no personal data) | `R#{code}` / `LINK` |
//! | `X#{merchant}#{checkout id}`    | `CHECKOUT`              | platform checkout id → token           |                                       |
//! | `E#{merchant}#{source}#{id}`    | `EVENT`                 | webhook / inbound dedupe (TTL)         |                                       |
//! | `I#{merchant}#{sha256(key)}`    | `IDEMPOTENCY`           | consent-API answer replay (TTL)        |                                       |
//! | `C#{merchant}#{phone}`          | `CONSENT#{ch}`          | consent state (head of the ledger)     |                                       |
//! | `C#{merchant}#{phone}`          | `CONSENT#{ch}#{seq:012}`| consent ledger entry                   |                                       |
//! | `C#{merchant}#{phone}`          | `SMS#OUT#{at}#{sid}`    | outbound SMS log                       | `SID#{sid}` / `C#{merchant}#{phone}`  |
//! | `C#{merchant}#{phone}`          | `SMS#IN#{at}#{sid}`     | inbound SMS log (stored before it is classified) | `SID#{sid}` / `C#{merchant}#{phone}` |
//! | `C#{merchant}#{phone}`          | `SENDER#{sender}`       | this merchant texted this phone from that sender (purged with the SMS log) | `TX#{hmac(sender, phone)}` / `M#{merchant}` |
//! | `C#{merchant}#{phone}`          | `CALL#{at}#{sid}`       | call log (with its recording's state)  | `SID#{sid}` / `C#{merchant}#{phone}`  |
//! | `C#{merchant}#{phone}`          | `FREQ`                  | send counter (frequency rule, versioned)|                                      |
//! | `C#{merchant}#{phone}`          | `REACH#sms`             | undeliverable mark                     |                                       |
//! | `V#{merchant}`                  | `REQ#{at}#{event key}`  | platform privacy request / uninstall   |                                       |
//!
//! Carts, steps and dedupe markers get a partition each, so a large merchant's traffic spreads
//! over the table. A customer's consent, messages and counter share one partition, so export and
//! deletion are one Query. Items that retention purges carry `purge_bucket` (day and shard) and
//! `purge_at` for the sparse `purge` GSI.

use crate::domain::ids::{CartToken, MerchantId};
use crate::domain::merchant::Channel;
use crate::domain::outreach::Direction;
use crate::domain::phone::Phone;
use chrono::{DateTime, Utc};

pub const LOOKUP_INDEX: &str = "lookup";
pub const PURGE_INDEX: &str = "purge";
/// Sparse, keys only: one tagged item per partition a merchant's data lives in (`tenant` →
/// `pk`), so erasing or re-dating one merchant reads that merchant alone, never the table.
pub const TENANT_INDEX: &str = "tenant";
/// Partitions of the `tenant` index per merchant, so one large merchant's writes spread.
pub const TENANT_SHARDS: u32 = 8;

/// The `tenant` index partition of an item of merchant `m` in partition `pk`.
pub fn tenant(m: &MerchantId, pk: &str) -> String {
    format!("{m}#{}", crate::domain::retention::shard_of(pk) % TENANT_SHARDS)
}

/// Attribute names that appear in key conditions, conditions and updates.
pub mod attr {
    pub const PK: &str = "pk";
    pub const SK: &str = "sk";
    pub const GSI1PK: &str = "gsi1pk";
    pub const GSI1SK: &str = "gsi1sk";
    /// The merchant an item's partition belongs to, sharded (`tenant` GSI).
    pub const TENANT: &str = "tenant";
    pub const STATUS: &str = "status";
    pub const STATE: &str = "state";
    pub const VERSION: &str = "version";
    pub const SEQ: &str = "seq";
    pub const ATTEMPTS: &str = "attempts";
    pub const LEASE_UNTIL: &str = "lease_until";
    pub const UNCERTAIN_SINCE: &str = "uncertain_since";
    /// When an undeliverable mark was set.
    pub const AT: &str = "at";
    pub const CLAIM_ID: &str = "claim_id";
    pub const MERCHANT_ID: &str = "merchant_id";
    pub const STATUS_RANK: &str = "status_rank";
    pub const MESSAGE_SID: &str = "message_sid";
    /// On an inbound message's marker: stored, not yet applied.
    pub const PENDING: &str = "pending";
    pub const EXPIRES_AT: &str = "expires_at";
    /// An API bucket's theoretical arrival time (`domain::ratelimit`), microseconds.
    pub const TAT: &str = "tat";
    /// A budget shard's count of sends.
    pub const SENDS: &str = "sends";
    /// A recovery link's click counter.
    pub const CLICKS: &str = "clicks";
    pub const PURGE_BUCKET: &str = "purge_bucket";
    pub const PURGE_AT: &str = "purge_at";
}

pub const PROFILE: &str = "PROFILE";
pub const SECRETS: &str = "SECRETS";
/// The partition-key prefix of merchant secrets: IAM denies it to every function but ingest.
pub const SECRETS_PREFIX: &str = "Z#";
pub const OWNER: &str = "OWNER";
pub const CART: &str = "CART";
pub const CHECKOUT: &str = "CHECKOUT";
pub const EVENT: &str = "EVENT";
pub const IDEMPOTENCY: &str = "IDEMPOTENCY";
pub const FREQ: &str = "FREQ";
pub const REACH_SMS: &str = "REACH#sms";
pub const SMS_PREFIX: &str = "SMS#";
pub const SMS_OUT_PREFIX: &str = "SMS#OUT#";
pub const SMS_IN_PREFIX: &str = "SMS#IN#";
pub const SENDER_PREFIX: &str = "SENDER#";
/// Sorts after every `SMS#OUT#{time}` key.
pub const SMS_OUT_END: &str = "SMS#OUT#~";
pub const MERCHANT_PREFIX: &str = "M#";
/// The merchant registry's partition: one small item per merchant, written only when the
/// merchant file is saved, so listing merchants (the silence check) is one Query, not a Scan.
pub const REGISTRY_PK: &str = "R#MERCHANTS";
/// On the profile: the UTC day (`YYYY-MM-DD`) of the merchant's last accepted platform delivery.
pub const LAST_DELIVERY_DAY: &str = "last_delivery_day";
pub const CALL_PREFIX: &str = "CALL#";

pub fn merchant_pk(m: &MerchantId) -> String {
    format!("M#{m}")
}

/// The merchant a partition belongs to, for every per-merchant key format (`X#{merchant}…`).
pub fn merchant_of(pk: &str) -> Option<&str> {
    let (kind, rest) = pk.split_once('#')?;
    match kind {
        "M" | "V" | "Z" | "L" => Some(rest),
        "C" | "K" | "X" | "E" | "I" | "P" | "Q" | "N" | "H" => rest.split_once('#').map(|(m, _)| m),
        _ => None,
    }
}

/// Email pointer: a cart found by its email (for data-subject requests by email).
pub fn email_pk(m: &MerchantId, email: &str) -> String {
    format!("Q#{m}#{}", crate::domain::phone::marker_hash("email", &email.trim().to_lowercase()))
}

/// A deleted subject's marker (`SubjectKey`: an HMAC of a phone, email or customer id).
pub fn deleted_pk(m: &MerchantId, subject: &str) -> String {
    format!("H#{m}#{subject}")
}

pub fn secrets_pk(m: &MerchantId) -> String {
    format!("{SECRETS_PREFIX}{m}")
}

pub fn shop_owner_pk(domain: &str) -> String {
    format!("D#{}", domain.to_ascii_lowercase())
}

pub fn shop_lookup(domain: &str) -> String {
    format!("SHOP#{}", domain.to_ascii_lowercase())
}

pub fn customer_pk(m: &MerchantId, phone: &Phone) -> String {
    format!("C#{m}#{}", phone.as_str())
}

/// A channel's suppression record: the opt-out that outlives every other record of the person,
/// under a keyed hash of (merchant, channel, number), never the number.
pub fn suppression_pk(m: &MerchantId, phone: &Phone, channel: Channel) -> String {
    let id = crate::domain::phone::marker_hash("suppression", &format!("{m}|{}|{}", channel.as_str(), phone.as_str()));
    format!("U#{m}#{id}")
}

pub const SUPPRESSION_SK: &str = "SUPPRESSION";

/// The merchant and number of a customer partition key (as `customer_pk` wrote it).
pub fn parse_customer_pk(pk: &str) -> Option<(MerchantId, Phone)> {
    let (m, phone) = pk.strip_prefix("C#")?.rsplit_once('#')?;
    Some((MerchantId::parse(m).ok()?, Phone::parse(phone, None).ok()?))
}

pub fn cart_pk(m: &MerchantId, token: &CartToken) -> String {
    format!("K#{m}#{token}")
}

pub const LINK: &str = "LINK";
pub const LINK_PREFIX: &str = "LINK#";

/// A recovery link in its cart's partition.
pub fn link_sk(code: &crate::domain::link::LinkCode) -> String {
    format!("{LINK_PREFIX}{code}")
}

/// What a click finds its link by (`lookup` index).
pub fn link_lookup(code: &crate::domain::link::LinkCode) -> String {
    format!("R#{code}")
}

pub fn step_sk(step: u8) -> String {
    format!("STEP#{step}")
}

/// A phone's cart pointers, in the table itself (the `lookup` index lags its writes).
pub fn phone_pointer_pk(m: &MerchantId, phone: &Phone) -> String {
    format!("N#{m}#{}", phone.as_str())
}

pub fn phone_lookup(m: &MerchantId, phone: &Phone) -> String {
    format!("P#{m}#{}", phone.as_str())
}

pub fn cart_lookup_sk(token: &CartToken) -> String {
    format!("CART#{token}")
}

pub fn event_pk(m: &MerchantId, event_key: &str) -> String {
    format!("E#{m}#{event_key}")
}

pub fn inbound_event_key(message_sid: &str) -> String {
    format!("twilio-sms#{message_sid}")
}

pub fn checkout_pk(m: &MerchantId, checkout_id: &str) -> String {
    format!("X#{m}#{checkout_id}")
}

pub fn sender_pk(sender: &str) -> String {
    format!("S#{sender}")
}

pub fn idempotency_pk(m: &MerchantId, key_sha256: &str) -> String {
    format!("I#{m}#{key_sha256}")
}

/// One shard of the merchant's sends on one UTC day (daily budget), on the profile's
/// partition: shards are separate items, so concurrent claims do not meet on one.
pub fn budget_sk(day: &str, shard: u32) -> String {
    format!("BUDGET#{day}#{shard:02}")
}

/// Every shard of one day's count (and only that day's).
pub fn budget_prefix(day: &str) -> String {
    format!("BUDGET#{day}#")
}

/// The shard a `budget_sk` names.
pub fn budget_shard(sk: &str) -> Option<u32> {
    sk.rsplit_once('#')?.1.parse().ok()
}

/// A merchant's API token bucket, on a partition of its own: a flood of API requests writes
/// there, never where the merchant's profile and outreach claims are.
pub fn api_bucket_pk(m: &MerchantId) -> String {
    format!("L#{m}")
}

pub const API_BUCKET: &str = "API_BUCKET";

/// A burst counter of webhook-created carts: per shopper IP or number prefix (keyed hashes,
/// never the value), one item per window.
pub fn burst_pk(m: &MerchantId, kind: &str, hashed: &str) -> String {
    format!("G#{m}#{kind}#{hashed}")
}

pub fn burst_sk(window_start: DateTime<Utc>) -> String {
    format!("W#{}", window_start.format("%Y-%m-%dT%H:%M"))
}

pub fn consent_state_sk(channel: Channel) -> String {
    format!("CONSENT#{}", channel.as_str())
}

pub fn consent_entry_sk(channel: Channel, seq: u64) -> String {
    format!("CONSENT#{}#{seq:012}", channel.as_str())
}

pub fn consent_entry_prefix(channel: Channel) -> String {
    format!("CONSENT#{}#", channel.as_str())
}

pub fn sms_sk(direction: Direction, at: DateTime<Utc>, sid: &str) -> String {
    let dir = match direction {
        Direction::Outbound => "OUT",
        Direction::Inbound => "IN",
    };
    format!("SMS#{dir}#{}#{sid}", sort_time(at))
}

pub fn call_sk(at: DateTime<Utc>, sid: &str) -> String {
    format!("{CALL_PREFIX}{}#{sid}", sort_time(at))
}

pub fn sms_out_from(since: DateTime<Utc>) -> String {
    format!("{SMS_OUT_PREFIX}{}", sort_time(since))
}

pub fn sid_lookup(sid: &str) -> String {
    format!("SID#{sid}")
}

/// The sender a merchant texted a phone from, in that phone's partition.
pub fn sender_sk(sender: &str) -> String {
    format!("{SENDER_PREFIX}{sender}")
}

/// Which merchants texted `phone` from `sender`: a keyed hash of the pair under the marker key,
/// never the number.
pub fn sender_lookup(sender: &str, phone: &Phone) -> String {
    format!("TX#{}", crate::domain::phone::marker_hash("sender", &format!("{sender}|{}", phone.as_str())))
}

pub fn request_pk(m: &MerchantId) -> String {
    format!("V#{m}")
}

pub fn request_sk(at: DateTime<Utc>, event_key: &str) -> String {
    format!("{REQUEST_PREFIX}{}#{event_key}", sort_time(at))
}

pub const REQUEST_PREFIX: &str = "REQ#";

/// Fixed-width UTC time, so sort keys order as time does.
pub fn sort_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_as_time_does_and_stay_in_their_partitions() {
        let m = MerchantId::parse("snowdevil").unwrap();
        let p = Phone::parse("+14155552671", None).unwrap();
        assert_eq!(customer_pk(&m, &p), "C#snowdevil#+14155552671");
        assert_eq!(consent_entry_sk(Channel::Sms, 7), "CONSENT#sms#000000000007");
        let early = sms_sk(Direction::Outbound, "2026-01-01T00:00:00Z".parse().unwrap(), "SM1");
        let late = sms_sk(Direction::Outbound, "2026-01-01T00:00:00.5Z".parse().unwrap(), "SM0");
        assert!(early < late && late.as_str() < SMS_OUT_END);
        assert!(early.starts_with(SMS_OUT_PREFIX));
        assert_eq!(shop_owner_pk("Snow.MyShopify.com"), "D#snow.myshopify.com");
        let shard = budget_sk("2026-11-28", 3);
        assert_eq!(shard, "BUDGET#2026-11-28#03");
        assert!(shard.starts_with(&budget_prefix("2026-11-28")) && !shard.starts_with(&budget_prefix("2026-11-2")));
        assert_eq!(budget_shard(&shard), Some(3));
        assert_eq!(merchant_of(&api_bucket_pk(&m)), Some("snowdevil"));
        assert_eq!(merchant_of(&phone_pointer_pk(&m, &p)), Some("snowdevil"), "held and erased with the merchant");
    }
}
