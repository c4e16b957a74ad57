//! Merchants' API token buckets: one item per merchant (`L#{merchant}` / `API_BUCKET`) holding
//! GCRA's `tat`, changed only by conditional updates. The rule is `domain::ratelimit`; this
//! translates its guarded steps into condition and update expressions.

use super::*;
use crate::domain::ratelimit::{BucketStep, TatChange, TatRange};

/// An idle bucket is deleted by TTL after this long: it was full again hours before (at most
/// 10 000 tokens at 1 a second), and a missing bucket reads as a full one.
const BUCKET_TTL_DAYS: i64 = 1;

impl Store {
    /// Applies the first step whose guard holds, each as one conditional `UpdateItem`; its index.
    pub async fn take_api_step(
        &self,
        m: &MerchantId,
        steps: &[BucketStep],
        now: DateTime<Utc>,
    ) -> Result<Option<usize>, PortError> {
        for (i, step) in steps.iter().enumerate() {
            if self.apply_bucket_step(m, step, now).await? {
                return Ok(Some(i));
            }
        }
        Ok(None)
    }

    async fn apply_bucket_step(
        &self,
        m: &MerchantId,
        step: &BucketStep,
        now: DateTime<Utc>,
    ) -> Result<bool, PortError> {
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(keys::api_bucket_pk(m), keys::API_BUCKET)))
            .expression_attribute_names("#tat", attr::TAT)
            .expression_attribute_names("#exp", attr::EXPIRES_AT)
            .expression_attribute_values(":exp", n((now + Duration::days(BUCKET_TTL_DAYS)).timestamp()));
        req = match step.when {
            TatRange::Full { at_most, stale_above } => req
                .condition_expression("attribute_not_exists(#tat) OR #tat <= :at OR #tat > :stale")
                .expression_attribute_values(":at", n(at_most))
                .expression_attribute_values(":stale", n(stale_above)),
            TatRange::Between { after, up_to } => req
                .condition_expression("#tat > :after AND #tat <= :up_to")
                .expression_attribute_values(":after", n(after))
                .expression_attribute_values(":up_to", n(up_to)),
        };
        req = match step.change {
            TatChange::Set(v) => {
                req.update_expression("SET #tat = :v, #exp = :exp").expression_attribute_values(":v", n(v))
            }
            TatChange::Add(d) => req
                .update_expression("SET #tat = if_not_exists(#tat, :zero) + :d, #exp = :exp")
                .expression_attribute_values(":zero", n(0))
                .expression_attribute_values(":d", n(d)),
        };
        match req.send().await {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => Ok(false),
            Err(e) => Err(aws("UpdateItem", e)),
        }
    }

    /// The merchant's bucket (`tat`), strongly consistent; `None` when there is none.
    pub async fn api_bucket(&self, m: &MerchantId) -> Result<Option<i64>, PortError> {
        let Some(item) = self.get(keys::api_bucket_pk(m), keys::API_BUCKET, "GetItem").await? else {
            return Ok(None);
        };
        let tat = item
            .get(attr::TAT)
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| PortError::Decode("API bucket without a tat".into()))?;
        Ok(Some(tat))
    }
}
