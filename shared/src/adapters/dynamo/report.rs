//! Read-only queries for operator reports (`callfy-admin report`). Carts have no merchant-wide
//! index, so a merchant's carts come from a paginated Scan filtered on the `K#{merchant}#`
//! partition prefix: fine for an occasional operator report, never for a request path. A
//! customer's consent, messages and calls come from one Query of their partition.

use super::*;
use crate::domain::voice::CallLogEntry;
use std::collections::BTreeMap;

/// A cart with the outcome of each of its flow steps (`STEP#{n}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CartWithSteps {
    pub cart: Cart,
    pub steps: BTreeMap<u8, StepRecord>,
    /// Our recovery links (`LINK#{code}`) with their clicks.
    pub links: Vec<crate::domain::link::RecoveryLink>,
}

/// How far a Scan has got, after each page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanProgress {
    pub pages: u64,
    /// Items DynamoDB read (before the filter).
    pub scanned: u64,
    /// Items of this merchant's carts found so far (carts and steps).
    pub matched: u64,
}

/// Everything a customer's partition says about outreach: consent states and ledgers (both
/// channels), the SMS log (both directions) and the call log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CustomerActivity {
    pub consent: Vec<(Channel, ConsentState)>,
    pub ledger: Vec<LedgerEntry>,
    pub sms: Vec<SmsLogEntry>,
    pub calls: Vec<CallLogEntry>,
}

impl Store {
    /// Every cart of merchant `m` with its steps: a Scan with a filter on the partition prefix,
    /// page after page; `progress` is told after each page.
    pub async fn scan_merchant_carts(
        &self,
        m: &MerchantId,
        mut progress: impl FnMut(ScanProgress),
    ) -> Result<Vec<CartWithSteps>, PortError> {
        let prefix = format!("K#{m}#");
        let mut pages = self
            .client
            .scan()
            .table_name(&self.table)
            .filter_expression("begins_with(#pk, :p)")
            .expression_attribute_names("#pk", attr::PK)
            .expression_attribute_values(":p", s(&prefix))
            .into_paginator()
            .send();
        let mut seen = ScanProgress::default();
        let mut carts: BTreeMap<String, Cart> = BTreeMap::new();
        let mut steps: BTreeMap<String, BTreeMap<u8, StepRecord>> = BTreeMap::new();
        let mut links: BTreeMap<String, Vec<crate::domain::link::RecoveryLink>> = BTreeMap::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| aws("Scan", e))?;
            seen.pages += 1;
            seen.scanned += u64::try_from(page.scanned_count).unwrap_or(0);
            for item in page.items.unwrap_or_default() {
                let (Some(pk), Some(sk)) = (get_s(&item, attr::PK), get_s(&item, attr::SK)) else { continue };
                let (pk, sk) = (pk.to_string(), sk.to_string());
                seen.matched += 1;
                if sk == keys::CART {
                    carts.insert(pk, from_item(item)?);
                } else if let Some(n) = sk.strip_prefix("STEP#").and_then(|n| n.parse::<u8>().ok()) {
                    steps.entry(pk).or_default().insert(n, from_item(item)?);
                } else if sk.starts_with(keys::LINK_PREFIX) {
                    links.entry(pk).or_default().push(from_item(item)?);
                }
            }
            progress(seen);
        }
        Ok(carts
            .into_iter()
            .map(|(pk, cart)| CartWithSteps {
                links: links.remove(&pk).unwrap_or_default(),
                steps: steps.remove(&pk).unwrap_or_default(),
                cart,
            })
            .collect())
    }

    /// A customer's whole partition at merchant `m`, decoded by kind (one Query, every page).
    pub async fn customer_activity(&self, m: &MerchantId, phone: &Phone) -> Result<CustomerActivity, PortError> {
        let items = self
            .query_all(
                self.client
                    .query()
                    .key_condition_expression("#pk = :pk")
                    .expression_attribute_names("#pk", attr::PK)
                    .expression_attribute_values(":pk", s(customer_pk(m, phone)))
                    .consistent_read(true),
            )
            .await?;
        let mut out = CustomerActivity::default();
        for item in items {
            let Some(sk) = get_s(&item, attr::SK).map(str::to_string) else { continue };
            if let Some(rest) = sk.strip_prefix("CONSENT#") {
                match rest.split_once('#') {
                    None => {
                        let channel = match rest {
                            "sms" => Channel::Sms,
                            "voice" => Channel::Voice,
                            _ => continue,
                        };
                        out.consent.push((channel, from_item(item)?));
                    }
                    Some(_) => out.ledger.push(from_item(item)?),
                }
            } else if sk.starts_with(keys::SMS_PREFIX) {
                out.sms.push(from_item(item)?);
            } else if sk.starts_with(keys::CALL_PREFIX) {
                out.calls.push(from_item(item)?);
            }
        }
        Ok(out)
    }
}
