//! Our own recovery links (`/r/{code}`): one item per message link in its cart's partition
//! (`K#{merchant}#{token}` / `LINK#{code}`), found by its code through the `lookup` index
//! (`R#{code}`). It is purged, exported and deleted with the cart's partition.

use super::*;
use crate::domain::link::{LinkCode, RecoveryLink};

impl Store {
    pub async fn save_link(&self, link: &RecoveryLink) -> Result<(), PortError> {
        let mut item = to_item(link)?;
        item.insert(attr::PK.into(), s(keys::cart_pk(&link.merchant_id, &link.cart_token)));
        item.insert(attr::SK.into(), s(keys::link_sk(&link.code)));
        item.insert(attr::GSI1PK.into(), s(keys::link_lookup(&link.code)));
        item.insert(attr::GSI1SK.into(), s(keys::LINK));
        // Already stored (a retried send): its clicks stay.
        self.put_unless_taken(
            self.client
                .put_item()
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(#pk)")
                .expression_attribute_names("#pk", attr::PK),
        )
        .await
        .map(|_| ())
    }

    pub async fn find_link(&self, code: &LinkCode) -> Result<Option<RecoveryLink>, PortError> {
        let items = self.query_lookup(keys::link_lookup(code)).await?;
        items.into_iter().next().map(from_item).transpose()
    }

    pub async fn count_click(&self, link: &RecoveryLink, at: DateTime<Utc>) -> Result<bool, PortError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(keys::cart_pk(&link.merchant_id, &link.cart_token), keys::link_sk(&link.code))))
            .update_expression("ADD #c :one SET #l = :at")
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#pk", attr::PK)
            .expression_attribute_names("#c", attr::CLICKS)
            .expression_attribute_names("#l", "last_click_at")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":at", s(keys::sort_time(at)))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => Ok(false),
            Err(e) => Err(aws("UpdateItem", e)),
        }
    }
}
