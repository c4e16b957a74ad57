//! Platform requests (privacy topics, uninstalls) stored for their handling.

use super::*;

impl Store {
    /// Stores a privacy request or an uninstall with its delivery's dedupe marker; `false` for
    /// a redelivery. Kept as `pending` until the privacy or account use case carries it out.
    pub async fn record_platform_request(
        &self,
        merchant: &Merchant,
        event_key: &str,
        request: &PlatformRequest,
        pending: Option<&PendingPrivacy>,
        now: DateTime<Utc>,
    ) -> Result<bool, PortError> {
        let stored = match request {
            // Whom it is about travels with the pending request, which goes once carried out;
            // the record that stays names no one.
            PlatformRequest::Privacy(p) => StoredRequest {
                kind: request.kind().into(),
                privacy: Some(crate::platforms::PrivacyRequest { phone: None, email: None, ..p.clone() }),
            },
            PlatformRequest::AppUninstalled => StoredRequest { kind: request.kind().into(), privacy: None },
        };
        let mut item = to_item(&stored)?;
        item.insert(attr::PK.into(), s(keys::request_pk(&merchant.id)));
        item.insert(attr::SK.into(), s(keys::request_sk(now, event_key)));
        item.insert("event_key".into(), s(event_key));
        item.insert("received_at".into(), s(now.to_rfc3339()));
        item.insert(attr::STATUS.into(), s("pending"));
        // The request names a customer: it lives as long as the merchant's consent records.
        let purge_at = now + Duration::days(i64::from(merchant.retention_days.consent_records));
        let mut items =
            vec![self.dedupe_marker(&merchant.id, event_key, now)?, self.put_new(self.with_purge(item, purge_at))?];
        if let Some(p) = pending {
            // In the same transaction as the dedupe marker: a retry never finds it half-recorded.
            items.push(put(&self.table, self.pending_privacy_item(&merchant.id, p, now)?, None, &[], &[])?);
        }
        match self.transact(items).await? {
            TxOutcome::Done => Ok(true),
            TxOutcome::Cancelled(codes) if codes.first().is_some_and(|c| c == "ConditionalCheckFailed") => Ok(false),
            TxOutcome::Cancelled(_) => Err(PortError::Conflict),
        }
    }

    /// A merchant's stored platform requests, oldest first.
    pub async fn platform_requests(&self, m: &MerchantId) -> Result<Vec<StoredRequest>, PortError> {
        self.query_prefix(keys::request_pk(m), keys::REQUEST_PREFIX).await?.into_iter().map(from_item).collect()
    }
}
