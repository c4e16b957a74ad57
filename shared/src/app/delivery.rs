//! A delivery report on a message we sent: its status history, and what its error code says
//! about the number (a carrier opt-out, a number that cannot take texts).

use crate::app::consent;
use crate::domain::consent::ConsentEvent;
use crate::domain::delivery::{self, Undeliverable};
use crate::domain::merchant::RetentionDays;
use crate::domain::outreach::SmsLogEntry;
use crate::domain::phone::Phone;
use crate::ports::{ConsentLedger, ConsentStore, MerchantStore, MessageLog, PortError};
use chrono::{DateTime, Duration, Utc};
use tracing::info;

/// One status callback, as Twilio reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report<'a> {
    pub message_sid: &'a str,
    pub status: &'a str,
    pub error_code: Option<i64>,
    /// The recipient and the senders, to find the message while the `SID#` index lags.
    pub to: Option<Phone>,
    pub senders: [&'a str; 2],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Recorded,
    /// No message of ours has this SID.
    Unknown,
}

/// The logged message a report is about: by the `SID#` index, else (the index is eventually
/// consistent) in the partition of the merchant that sent it and the number it went to.
async fn find_outbound(
    store: &(impl MessageLog + MerchantStore),
    r: &Report<'_>,
) -> Result<Option<SmsLogEntry>, PortError> {
    if let Some(entry) = store.sms_by_sid(r.message_sid).await? {
        return Ok(Some(entry));
    }
    let Some(to) = &r.to else { return Ok(None) };
    for record in store.merchants_for_senders(&r.senders).await? {
        if let Some(entry) = store.outbound_sms(&record.merchant.id, to, r.message_sid).await? {
            return Ok(Some(entry));
        }
    }
    Ok(None)
}

pub async fn record<S>(store: &S, r: &Report<'_>, now: DateTime<Utc>) -> Result<Outcome, PortError>
where
    S: MessageLog + MerchantStore + ConsentStore + ConsentLedger,
{
    let Some(entry) = find_outbound(store, r).await? else {
        info!(sid = r.message_sid, status = r.status, "status callback for an unknown message; ignored");
        return Ok(Outcome::Unknown);
    };
    store.update_sms_status(&entry, r.status, r.error_code, now).await?;
    let merchant = store.get_merchant(&entry.merchant_id).await?;
    let retention: RetentionDays = merchant.as_ref().map(|m| m.merchant.retention_days.clone()).unwrap_or_default();
    match r.error_code {
        Some(delivery::UNSUBSCRIBED) => {
            let event = ConsentEvent::carrier_opt_out(now, Some(r.message_sid));
            match &merchant {
                Some(record) => {
                    consent::record(store, &record.merchant, &entry.phone, &event, now).await?;
                }
                // The merchant is gone: the opt-out is still recorded, with default retention.
                None => {
                    let keep = now + Duration::days(i64::from(retention.consent_records));
                    store.record_consent(&entry.merchant_id, &entry.phone, &event, keep).await?;
                }
            }
        }
        Some(code) if delivery::is_undeliverable(code) => {
            let mark = Undeliverable { error_code: code, message_sid: r.message_sid.to_string(), at: now };
            let keep = now + Duration::days(i64::from(retention.sms_logs));
            store.mark_undeliverable(&entry.merchant_id, &entry.phone, &mark, keep).await?;
        }
        _ => {}
    }
    info!(sid = r.message_sid, merchant = %entry.merchant_id, phone = %entry.phone.log_id(), status = r.status, error_code = ?r.error_code, "delivery status recorded");
    Ok(Outcome::Recorded)
}
