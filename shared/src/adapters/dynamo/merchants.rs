//! Merchants: profiles, shop-domain ownership, status, API key hashes and the sender index.

use super::*;
use crate::domain::merchant::MerchantSecrets;

/// A re-dating recorded with a save, and when it falls due.
type RedateAt<'a> = (&'a crate::domain::retention::Redate, DateTime<Utc>);

/// The profile's version: how many times its settings were saved.
const VERSION: &str = "settings_version";

impl Store {
    /// Creates or replaces a merchant's profile, keeping its status, API key and legal hold.
    /// The shop domain is claimed by a conditional write in the same transaction, so two
    /// merchants can never own one shop, however their writes interleave.
    pub async fn put_merchant(&self, merchant: &Merchant, now: DateTime<Utc>) -> Result<(), PortError> {
        self.write_merchant(merchant, now, None).await
    }

    /// `put_merchant` only while the profile is still at version `read` (`None`: no profile
    /// yet), `Conflict` otherwise; a shortened retention's re-dating recorded in the same
    /// transaction.
    pub async fn put_merchant_if(
        &self,
        merchant: &Merchant,
        now: DateTime<Utc>,
        read: Option<u64>,
        redate: Option<(&crate::domain::retention::Redate, DateTime<Utc>)>,
    ) -> Result<(), PortError> {
        self.write_merchant(merchant, now, Some((read, redate))).await
    }

    async fn write_merchant(
        &self,
        merchant: &Merchant,
        now: DateTime<Utc>,
        cond: Option<(Option<u64>, Option<RedateAt<'_>>)>,
    ) -> Result<(), PortError> {
        merchant.validate().map_err(|e| PortError::Invalid(e.to_string()))?;
        let old = self.get_merchant(&merchant.id).await?;
        // The profile is what `merchant get` shows and every function reads: no secrets in it.
        let profile = serde_dynamo::to_attribute_value(merchant.without_secrets())
            .map_err(|e| PortError::Decode(e.to_string()))?;
        let mut update = "SET profile = :p, updated_at = :now, #st = if_not_exists(#st, :active), \
                          created_at = if_not_exists(created_at, :now), legal_hold = if_not_exists(legal_hold, :f), \
                          #ver = if_not_exists(#ver, :zero) + :one"
            .to_string();
        let mut profile_update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(merchant_pk(&merchant.id), keys::PROFILE)))
            .expression_attribute_names("#st", attr::STATUS)
            .expression_attribute_values(":p", profile)
            .expression_attribute_values(":now", s(now.to_rfc3339()))
            .expression_attribute_values(":active", s(MerchantStatus::Active.as_str()))
            .expression_attribute_values(":f", AttributeValue::Bool(false))
            .expression_attribute_names("#ver", VERSION)
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1));
        match cond.as_ref().map(|(read, _)| *read) {
            None => {}
            Some(None) => {
                profile_update = profile_update
                    .condition_expression("attribute_not_exists(#pk)")
                    .expression_attribute_names("#pk", attr::PK);
            }
            // Profiles written before versions existed read as version 0.
            Some(Some(v)) => {
                profile_update = profile_update
                    .condition_expression(
                        "attribute_exists(#pk) AND (#ver = :v OR (attribute_not_exists(#ver) AND :v = :zero))",
                    )
                    .expression_attribute_names("#pk", attr::PK)
                    .expression_attribute_values(":v", n(v));
            }
        }
        let domain = merchant.shop_domain.as_deref().map(str::to_ascii_lowercase);
        match &domain {
            Some(d) => {
                update.push_str(", #g = :g, #gs = :gs");
                profile_update = profile_update
                    .expression_attribute_names("#g", attr::GSI1PK)
                    .expression_attribute_names("#gs", attr::GSI1SK)
                    .expression_attribute_values(":g", s(keys::shop_lookup(d)))
                    .expression_attribute_values(":gs", s(merchant_pk(&merchant.id)));
            }
            None => {
                update.push_str(" REMOVE #g, #gs");
                profile_update = profile_update
                    .expression_attribute_names("#g", attr::GSI1PK)
                    .expression_attribute_names("#gs", attr::GSI1SK);
            }
        }
        let mut items =
            vec![TransactWriteItem::builder().update(built(profile_update.update_expression(update).build())?).build()];
        let secrets = merchant.secrets();
        let secrets_key = key(keys::secrets_pk(&merchant.id), keys::SECRETS);
        if secrets.is_empty() {
            let del = Delete::builder().table_name(&self.table).set_key(Some(secrets_key));
            items.push(TransactWriteItem::builder().delete(built(del.build())?).build());
        } else {
            let mut item = to_item(&secrets)?;
            item.extend(secrets_key);
            let put = Put::builder().table_name(&self.table).set_item(Some(item));
            items.push(TransactWriteItem::builder().put(built(put.build())?).build());
        }
        if let Some(d) = &domain {
            let mut owner = key(keys::shop_owner_pk(d), keys::OWNER);
            owner.insert(attr::MERCHANT_ID.into(), s(merchant.id.as_str()));
            let owner = self.tagged(owner, &merchant.id);
            let put = Put::builder()
                .table_name(&self.table)
                .set_item(Some(owner))
                .condition_expression("attribute_not_exists(#pk) OR #m = :m")
                .expression_attribute_names("#pk", attr::PK)
                .expression_attribute_names("#m", attr::MERCHANT_ID)
                .expression_attribute_values(":m", s(merchant.id.as_str()));
            items.push(TransactWriteItem::builder().put(built(put.build())?).build());
        }
        // The registry entry the silence check lists merchants by (removed with the account).
        let mut registry = key(keys::REGISTRY_PK.to_string(), merchant_pk(&merchant.id));
        registry.insert(attr::MERCHANT_ID.into(), s(merchant.id.as_str()));
        let put = Put::builder().table_name(&self.table).set_item(Some(registry));
        items.push(TransactWriteItem::builder().put(built(put.build())?).build());
        let old_domain = old.as_ref().and_then(|r| r.merchant.shop_domain.as_deref()).map(str::to_ascii_lowercase);
        if let Some(od) = old_domain.filter(|od| Some(od) != domain.as_ref()) {
            let del = Delete::builder()
                .table_name(&self.table)
                .set_key(Some(key(keys::shop_owner_pk(&od), keys::OWNER)))
                .condition_expression("attribute_not_exists(#pk) OR #m = :m")
                .expression_attribute_names("#pk", attr::PK)
                .expression_attribute_names("#m", attr::MERCHANT_ID)
                .expression_attribute_values(":m", s(merchant.id.as_str()));
            items.push(TransactWriteItem::builder().delete(built(del.build())?).build());
        }
        if let Some((job, at)) = cond.as_ref().and_then(|(_, r)| *r) {
            let mut item = key(merchant_pk(&merchant.id), format!("REDATE#{}", job.id));
            item.insert("job".into(), s(serde_json::to_string(job).map_err(|e| PortError::Encode(e.to_string()))?));
            let put = Put::builder().table_name(&self.table).set_item(Some(self.with_purge(item, at)));
            items.push(TransactWriteItem::builder().put(built(put.build())?).build());
        }
        if let TxOutcome::Cancelled(codes) = self.transact(items).await? {
            if cond.is_some() && codes.first().is_some_and(|c| c == "ConditionalCheckFailed") {
                // Another save since the settings were read: nothing written.
                return Err(PortError::Conflict);
            }
            if codes.iter().any(|c| c == "ConditionalCheckFailed") {
                let owner = match &domain {
                    Some(d) => self.shop_owner(d).await?.map(|m| m.to_string()).unwrap_or_default(),
                    None => String::new(),
                };
                return Err(PortError::Invalid(format!(
                    "shop_domain {} already belongs to merchant {owner}",
                    domain.unwrap_or_default()
                )));
            }
            return Err(PortError::Conflict);
        }
        self.sync_sender_index(merchant, old.as_ref().map(|r| &r.merchant)).await
    }

    pub(super) fn decode_merchant(item: Item) -> Result<MerchantRecord, PortError> {
        let profile =
            item.get("profile").cloned().ok_or_else(|| PortError::Decode("merchant without profile".into()))?;
        let merchant: Merchant =
            serde_dynamo::from_attribute_value(profile).map_err(|e| PortError::Decode(e.to_string()))?;
        let status = match get_s(&item, attr::STATUS) {
            Some(v) if v == MerchantStatus::Closed.as_str() => MerchantStatus::Closed,
            _ => MerchantStatus::Active,
        };
        Ok(MerchantRecord {
            merchant,
            status,
            api_key_sha256: get_s(&item, "api_key_sha256").map(str::to_string),
            legal_hold: item.get("legal_hold").and_then(|v| v.as_bool().ok()).copied().unwrap_or(false),
            version: item.get(VERSION).and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok()).unwrap_or(0),
        })
    }

    pub async fn get_merchant(&self, id: &MerchantId) -> Result<Option<MerchantRecord>, PortError> {
        self.get(merchant_pk(id), keys::PROFILE, "GetItem").await?.map(Self::decode_merchant).transpose()
    }

    /// The merchant with its webhook secret and store API token: for webhook ingest, and the
    /// worker verifying a webhook's queued copy (the other functions' roles are denied the `Z#`
    /// keys; the worker's may only read them).
    pub async fn get_merchant_with_secrets(&self, id: &MerchantId) -> Result<Option<MerchantRecord>, PortError> {
        let (record, secrets) =
            tokio::try_join!(self.get_merchant(id), self.get(keys::secrets_pk(id), keys::SECRETS, "GetItem"))?;
        let secrets: MerchantSecrets = secrets.map(from_item).transpose()?.unwrap_or_default();
        Ok(record.map(|mut r| {
            r.merchant = r.merchant.with_secrets(secrets);
            r
        }))
    }

    pub(super) async fn shop_owner(&self, domain: &str) -> Result<Option<MerchantId>, PortError> {
        let item = self.get(keys::shop_owner_pk(domain), keys::OWNER, "GetItem").await?;
        Ok(item.as_ref().and_then(|i| get_s(i, attr::MERCHANT_ID)).and_then(|m| MerchantId::parse(m).ok()))
    }

    /// The merchant that owns a shop domain: one strongly consistent read of the ownership
    /// item, then the profile (which must still name the domain).
    pub async fn merchant_by_shop_domain(&self, domain: &str) -> Result<Option<MerchantRecord>, PortError> {
        let Some(id) = self.shop_owner(domain).await? else { return Ok(None) };
        let record = self.get_merchant(&id).await?;
        Ok(record.filter(|r| r.merchant.shop_domain.as_deref().is_some_and(|d| d.eq_ignore_ascii_case(domain))))
    }

    /// Stores the SHA-256 of a new API key; the key itself is never stored.
    pub async fn set_api_key_hash(&self, id: &MerchantId, sha256_hex: &str) -> Result<(), PortError> {
        self.set_profile_attribute(id, "api_key_sha256", s(sha256_hex)).await
    }

    /// Puts a merchant's data under a legal hold (every purge and deletion suspended) or lifts it.
    pub async fn set_legal_hold(&self, id: &MerchantId, on: bool) -> Result<(), PortError> {
        self.set_profile_attribute(id, "legal_hold", AttributeValue::Bool(on)).await
    }

    /// Sets a merchant's status (closing stops outreach: every claim checks it).
    pub async fn set_merchant_status(&self, id: &MerchantId, status: MerchantStatus) -> Result<(), PortError> {
        self.set_profile_attribute(id, attr::STATUS, s(status.as_str())).await
    }

    /// Sets one attribute of an existing merchant; `NotFound` when there is none.
    async fn set_profile_attribute(&self, id: &MerchantId, name: &str, value: AttributeValue) -> Result<(), PortError> {
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(merchant_pk(id), keys::PROFILE)))
            .update_expression("SET #a = :v")
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#pk", attr::PK)
            .expression_attribute_names("#a", name)
            .expression_attribute_values(":v", value)
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {
                Err(PortError::NotFound(format!("merchant {id}")))
            }
            Err(e) => Err(aws("UpdateItem", e)),
        }
    }

    /// Stamps the merchant's profile with the UTC `day` of a platform delivery, only when it holds
    /// another day: at most one write per merchant per day, however many deliveries. `false` when
    /// the day was stamped already (or there is no such merchant).
    pub async fn stamp_delivery(&self, id: &MerchantId, day: &str) -> Result<bool, PortError> {
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(merchant_pk(id), keys::PROFILE)))
            .update_expression("SET #d = :d")
            .condition_expression("attribute_exists(#pk) AND (attribute_not_exists(#d) OR #d <> :d)")
            .expression_attribute_names("#pk", attr::PK)
            .expression_attribute_names("#d", keys::LAST_DELIVERY_DAY)
            .expression_attribute_values(":d", s(day))
            .send()
            .await;
        match res {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => Ok(false),
            Err(e) => Err(aws("UpdateItem", e)),
        }
    }

    /// Every registered merchant with what the silence check reads: one Query of the registry,
    /// then each profile (a daily job: a merchant at a time is plenty).
    pub async fn watched_merchants(&self) -> Result<Vec<crate::domain::silence::Watched>, PortError> {
        let ids: Vec<MerchantId> = self
            .query_prefix(keys::REGISTRY_PK.to_string(), keys::MERCHANT_PREFIX)
            .await?
            .iter()
            .filter_map(|i| get_s(i, attr::MERCHANT_ID).and_then(|m| MerchantId::parse(m).ok()))
            .collect();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(item) = self.get(merchant_pk(&id), keys::PROFILE, "GetItem").await? else { continue };
            let created_at = get_s(&item, "created_at")
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc));
            let last_delivery_day = get_s(&item, keys::LAST_DELIVERY_DAY).and_then(|d| d.parse().ok());
            let record = Self::decode_merchant(item)?;
            out.push(crate::domain::silence::Watched {
                merchant: record.merchant,
                status: record.status,
                created_at,
                last_delivery_day,
            });
        }
        Ok(out)
    }

    /// The merchants whose SMS sender is one of `senders` (numbers or Messaging Service SIDs).
    pub async fn merchants_for_senders(&self, senders: &[&str]) -> Result<Vec<MerchantRecord>, PortError> {
        let mut ids = std::collections::BTreeSet::new();
        for sender in senders.iter().filter(|s| !s.is_empty()) {
            for item in self.query_prefix(keys::sender_pk(sender), keys::MERCHANT_PREFIX).await? {
                if let Some(id) = get_s(&item, attr::MERCHANT_ID).and_then(|v| MerchantId::parse(v).ok()) {
                    ids.insert(id);
                }
            }
        }
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            // The index item may outlive a profile change by a moment; the profile decides.
            if let Some(record) = self.get_merchant(&id).await?
                && sender_keys(&record.merchant).iter().any(|k| senders.contains(&k.as_str()))
            {
                out.push(record);
            }
        }
        Ok(out)
    }

    pub(super) async fn sync_sender_index(&self, merchant: &Merchant, old: Option<&Merchant>) -> Result<(), PortError> {
        let new_keys = sender_keys(merchant);
        for k in &new_keys {
            let mut item = key(keys::sender_pk(k), merchant_pk(&merchant.id));
            item.insert(attr::MERCHANT_ID.into(), s(merchant.id.as_str()));
            self.put_item(self.tagged(item, &merchant.id)).await?;
        }
        for k in old.map(sender_keys).unwrap_or_default().into_iter().filter(|k| !new_keys.contains(k)) {
            self.delete(keys::sender_pk(&k), merchant_pk(&merchant.id)).await?;
        }
        Ok(())
    }
}
