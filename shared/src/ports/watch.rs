//! Silence is an alarm (issue 21): the day stamp of a merchant's last platform delivery, and
//! the merchants the daily check reads.

use super::PortError;
use crate::domain::ids::MerchantId;
use crate::domain::silence::Watched;
use std::future::Future;

/// Records that a merchant's platform delivered (webhook ingest).
pub trait DeliveryStamps: Send + Sync {
    /// Stamps the UTC `day` (`YYYY-MM-DD`) unless it is stamped already: at most one write per
    /// merchant per day. `true` when it wrote.
    fn stamp_delivery(&self, m: &MerchantId, day: &str) -> impl Future<Output = Result<bool, PortError>> + Send;
}

/// The merchants the daily silence check reads, without scanning the table.
pub trait WatchedMerchants: Send + Sync {
    fn watched_merchants(&self) -> impl Future<Output = Result<Vec<Watched>, PortError>> + Send;
}
