//! Outreach steps: the guarded claim with its lease, the send counter, and how a step ends.

use super::*;
use crate::domain::cart::{CartStatus, Touch};
use crate::domain::guard::{BudgetShards, budget_day};
use crate::domain::voice::CallLogEntry;

impl Store {
    pub async fn get_step(&self, m: &MerchantId, token: &CartToken, step: u8) -> Result<Option<StepRecord>, PortError> {
        self.get(keys::cart_pk(m, token), keys::step_sk(step), "GetItem").await?.map(from_item).transpose()
    }

    /// The per-phone send counter, strongly consistent (version 0 when there is none).
    pub async fn send_counter(&self, m: &MerchantId, phone: &Phone) -> Result<SendCounter, PortError> {
        match self.get(customer_pk(m, phone), keys::FREQ, "GetItem").await? {
            Some(item) => from_item(item),
            None => Ok(SendCounter::default()),
        }
    }

    /// The step update of a claim: condition and values for "taken by `claim_id` until the lease
    /// ends", over the record as it was read.
    pub(super) fn claim_update(
        &self,
        (m, token, step): (&MerchantId, &CartToken, u8),
        seen: &StepAvailability,
        claim_id: &str,
        body_sha256: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Update>, PortError> {
        let mut set = "SET #st = :claimed, #cid = :c, body_sha256 = :h, updated_at = :now, #lease = :lease, \
                       #att = if_not_exists(#att, :zero) + :one"
            .to_string();
        let mut u = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(keys::cart_pk(m, token), keys::step_sk(step))))
            .expression_attribute_names("#st", attr::STATE)
            .expression_attribute_names("#cid", attr::CLAIM_ID)
            .expression_attribute_names("#lease", attr::LEASE_UNTIL)
            .expression_attribute_names("#att", attr::ATTEMPTS)
            .expression_attribute_values(":claimed", s(StepState::Claimed.as_str()))
            .expression_attribute_values(":c", s(claim_id))
            .expression_attribute_values(":h", s(body_sha256))
            .expression_attribute_values(":now", s(keys::sort_time(now)))
            .expression_attribute_values(":lease", s(keys::sort_time(lease_until(now))))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1));
        let condition = match seen {
            StepAvailability::Fresh => {
                u = u.expression_attribute_names("#pk", attr::PK);
                "attribute_not_exists(#pk)".to_string()
            }
            StepAvailability::Reclaimable { attempts, expired_claim, uncertain } => {
                u = u.expression_attribute_values(":a", n(attempts));
                if let Some(un) = uncertain {
                    // The first unanswered attempt stays on record until the outcome is known.
                    set.push_str(", uncertain_since = if_not_exists(uncertain_since, :since)");
                    u = u.expression_attribute_values(":since", s(keys::sort_time(un.since)));
                }
                if *expired_claim {
                    // Claims written before leases existed have none: they count as expired.
                    "#st = :claimed AND #att = :a AND (attribute_not_exists(#lease) OR #lease <= :now)".to_string()
                } else {
                    u = u.expression_attribute_values(":retry", s(StepState::Retry.as_str()));
                    "#st = :retry AND #att = :a".to_string()
                }
            }
            StepAvailability::Taken(_) => return Ok(None),
        };
        Ok(Some(built(u.update_expression(set).condition_expression(condition).build())?))
    }

    /// Claims (cart, step) on the step alone: the exclusivity primitive. The worker claims
    /// through `claim`, which adds every other condition its decision read.
    pub async fn claim_step(
        &self,
        m: &MerchantId,
        token: &CartToken,
        step: u8,
        claim_id: &str,
        body_sha256: &str,
        now: DateTime<Utc>,
    ) -> Result<ClaimOutcome, PortError> {
        let record = self.get_step(m, token, step).await?;
        let seen = StepRecord::availability(record.as_ref(), now);
        let uncertain = match &seen {
            StepAvailability::Reclaimable { uncertain, .. } => uncertain.clone(),
            _ => None,
        };
        if self.take_over((m, token, step), &seen, claim_id, body_sha256, now).await? {
            return Ok(ClaimOutcome::Claimed { uncertain });
        }
        let record = self.get_step(m, token, step).await?.ok_or(PortError::Conflict)?;
        Ok(ClaimOutcome::Taken(record))
    }

    /// The claim before a send, in one transaction conditioned on everything the decision read:
    /// the step as read, the cart's version (open at that version), the channel's consent state
    /// (opted in at that sequence), the merchant's status (active) and the phone's send counter
    /// (at its version, which the claim bumps), and it counts one send on a shard of the
    /// merchant's daily budget. Anything acknowledged before it makes it fail; a full shard
    /// sends it to the others, and only all of them full is `BudgetSpent`.
    pub async fn claim(
        &self,
        guard: &ClaimGuard,
        claim_id: &str,
        body_sha256: &str,
        now: DateTime<Utc>,
    ) -> Result<ClaimOutcome, PortError> {
        let (m, token, step) = (&guard.merchant_id, &guard.cart, guard.step);
        let uncertain = match &guard.step_seen {
            StepAvailability::Reclaimable { uncertain, .. } => uncertain.clone(),
            StepAvailability::Taken(r) => return Ok(ClaimOutcome::Taken(r.clone())),
            StepAvailability::Fresh => None,
        };
        let Some(step_update) = self.claim_update((m, token, step), &guard.step_seen, claim_id, body_sha256, now)?
        else {
            return Ok(ClaimOutcome::Stale);
        };
        let cart_check = ConditionCheck::builder()
            .table_name(&self.table)
            .set_key(Some(key(keys::cart_pk(m, token), keys::CART)))
            .condition_expression("#v = :v AND #st = :open")
            .expression_attribute_names("#v", attr::VERSION)
            .expression_attribute_names("#st", attr::STATUS)
            .expression_attribute_values(":v", n(guard.cart_version))
            .expression_attribute_values(":open", s(CartStatus::Open.as_str()));
        let consent_check = ConditionCheck::builder()
            .table_name(&self.table)
            .set_key(Some(key(customer_pk(m, &guard.phone), keys::consent_state_sk(guard.channel))))
            .condition_expression("#seq = :seq AND #st = :in")
            .expression_attribute_names("#seq", attr::SEQ)
            .expression_attribute_names("#st", attr::STATUS)
            .expression_attribute_values(":seq", n(guard.consent_seq))
            .expression_attribute_values(":in", s(ConsentStatus::OptedIn.as_str()));
        let merchant_check = ConditionCheck::builder()
            .table_name(&self.table)
            .set_key(Some(key(merchant_pk(m), keys::PROFILE)))
            .condition_expression("#st = :active")
            .expression_attribute_names("#st", attr::STATUS)
            .expression_attribute_values(":active", s(MerchantStatus::Active.as_str()));
        // A delivery report that the number cannot take texts, landed since the decision.
        let reach = ConditionCheck::builder()
            .table_name(&self.table)
            .set_key(Some(key(customer_pk(m, &guard.phone), keys::REACH_SMS)));
        let reach = match guard.reach_at {
            None => reach.condition_expression("attribute_not_exists(#pk)").expression_attribute_names("#pk", attr::PK),
            Some(at) => reach
                .condition_expression("#at = :at")
                .expression_attribute_names("#at", attr::AT)
                .expression_attribute_values(
                    ":at",
                    serde_dynamo::to_attribute_value(at).map_err(|e| PortError::Decode(e.to_string()))?,
                ),
        };
        let counter = self.counter_put(guard, &guard.counter.with_claim(token, step, now), now)?;
        let base = vec![
            TransactWriteItem::builder().update(step_update).build(),
            TransactWriteItem::builder().condition_check(built(cart_check.build())?).build(),
            TransactWriteItem::builder().condition_check(built(consent_check.build())?).build(),
            TransactWriteItem::builder().condition_check(built(merchant_check.build())?).build(),
            TransactWriteItem::builder().condition_check(built(reach.build())?).build(),
            counter,
        ];
        let budget_at = base.len();
        // Counted in the claim itself, on one shard of the day's count, so concurrent workers can
        // never overspend it and do not all meet on one item.
        let shards = BudgetShards::new(guard.daily_budget);
        let day = budget_day(now);
        let mut order = shards.order(claim_id);
        while let Some(&shard) = order.first() {
            let mut items = base.clone();
            items.push(self.budget_count(m, &day, shard, shards.share(shard), now)?);
            let codes = match self.transact(items).await? {
                TxOutcome::Done => return Ok(ClaimOutcome::Claimed { uncertain }),
                TxOutcome::Cancelled(codes) => codes,
            };
            if codes.first().is_some_and(|c| c == "ConditionalCheckFailed") {
                // The step itself moved on: someone else holds or finished it.
                if let Some(record) = self.get_step(m, token, step).await?
                    && matches!(StepRecord::availability(Some(&record), now), StepAvailability::Taken(_))
                {
                    return Ok(ClaimOutcome::Taken(record));
                }
            }
            let failed: Vec<usize> =
                codes.iter().enumerate().filter(|(_, c)| *c == "ConditionalCheckFailed").map(|(i, _)| i).collect();
            if failed != [budget_at] {
                return Ok(ClaimOutcome::Stale);
            }
            // Only this shard was full, and what the decision read still holds: try the shards
            // with room, as counted now. Each pass drops at least the shard just tried.
            let counts = self.budget_counts(m, &day).await?;
            order = shards.with_room(&order, |s| counts.get(&s).copied().unwrap_or(0));
        }
        // Every shard is at its share: the day's budget is spent.
        Ok(ClaimOutcome::BudgetSpent)
    }

    /// One more send on shard `shard` of the day's count, conditioned on the shard's share.
    fn budget_count(
        &self,
        m: &MerchantId,
        day: &str,
        shard: u32,
        share: u32,
        now: DateTime<Utc>,
    ) -> Result<TransactWriteItem, PortError> {
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(merchant_pk(m), keys::budget_sk(day, shard))))
            .update_expression("ADD #n :one SET #exp = if_not_exists(#exp, :exp)")
            .condition_expression("attribute_not_exists(#n) OR #n < :share")
            .expression_attribute_names("#n", attr::SENDS)
            .expression_attribute_names("#exp", attr::EXPIRES_AT)
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":share", n(share))
            .expression_attribute_values(":exp", n((now + Duration::days(3)).timestamp()));
        Ok(TransactWriteItem::builder().update(built(update.build())?).build())
    }

    /// Sends counted on each shard of the merchant's day (`budget_day`), strongly consistent.
    pub async fn budget_counts(&self, m: &MerchantId, day: &str) -> Result<HashMap<u32, u64>, PortError> {
        let items = self.query_prefix(merchant_pk(m), keys::budget_prefix(day)).await?;
        Ok(items
            .iter()
            .filter_map(|i| {
                let shard = keys::budget_shard(get_s(i, attr::SK)?)?;
                let sends = i.get(attr::SENDS)?.as_n().ok()?.parse().ok()?;
                Some((shard, sends))
            })
            .collect())
    }

    /// The counter item after a claim, conditioned on the version the decision read.
    pub(super) fn counter_put(
        &self,
        guard: &ClaimGuard,
        sends: &[CountedSend],
        now: DateTime<Utc>,
    ) -> Result<TransactWriteItem, PortError> {
        let next = SendCounter { version: guard.counter.version + 1, sends: sends.to_vec() };
        let mut item = to_item(&next)?;
        item.insert(attr::PK.into(), s(customer_pk(&guard.merchant_id, &guard.phone)));
        item.insert(attr::SK.into(), s(keys::FREQ));
        // The counter only matters for a day; it is purged with the customer's other data.
        let item = self.with_purge(item, now + Duration::days(2));
        if guard.counter.version == 0 {
            self.put_new(item)
        } else {
            put(&self.table, item, Some("#v = :v"), &[("#v", attr::VERSION)], &[(":v", n(guard.counter.version))])
        }
    }

    /// Takes a claimed step's count back off the phone's counter after a send that certainly did
    /// not happen. Best effort: a count left behind only makes the rule stricter.
    pub async fn release_count(
        &self,
        m: &MerchantId,
        phone: &Phone,
        token: &CartToken,
        step: u8,
    ) -> Result<(), PortError> {
        for _ in 0..3 {
            let counter = self.send_counter(m, phone).await?;
            if counter.version == 0 || !counter.sends.iter().any(|s| s.cart == *token && s.step == step) {
                return Ok(());
            }
            let sends = counter.without(token, step);
            let req = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key(customer_pk(m, phone), keys::FREQ)))
                .update_expression("SET sends = :s, #v = :next")
                .condition_expression("#v = :v")
                .expression_attribute_names("#v", attr::VERSION)
                .expression_attribute_values(
                    ":s",
                    serde_dynamo::to_attribute_value(&sends).map_err(|e| PortError::Decode(e.to_string()))?,
                )
                .expression_attribute_values(":v", n(counter.version))
                .expression_attribute_values(":next", n(counter.version + 1));
            match req.send().await {
                Ok(_) => return Ok(()),
                Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => continue,
                Err(e) => return Err(aws("UpdateItem", e)),
            }
        }
        Ok(())
    }

    /// Records a sent message and the step's `sent` state in one transaction (with the cart's
    /// last-message time), so a sent message is never without its log entry. `false` when the
    /// claim was no longer ours (a lease overtaken): the new holder finds the message at Twilio.
    pub async fn finish_sent(
        &self,
        entry: &SmsLogEntry,
        token: &CartToken,
        step: u8,
        claim_id: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, PortError> {
        let touch = Touch { step, channel: Channel::Sms, at: entry.created_at };
        let log = self.sms_log_item(entry)?;
        let senders = self.sender_items(entry);
        let target = (&entry.merchant_id, token, step);
        self.finish_with_log(log, senders, target, claim_id, &entry.message_sid, &touch, now).await
    }

    /// The same for a placed call: its log entry, the step `sent`, the cart's last touch.
    pub async fn finish_called(
        &self,
        entry: &CallLogEntry,
        claim_id: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, PortError> {
        let touch = Touch { step: entry.step, channel: Channel::Voice, at: entry.created_at };
        let log = self.call_log_item(entry)?;
        let target = (&entry.merchant_id, &entry.cart_token, entry.step);
        self.finish_with_log(log, Vec::new(), target, claim_id, &entry.call_sid, &touch, now).await
    }

    /// The log item, the step `sent`, the cart's last touch and any `extra` items (the sender
    /// index of a text), in one transaction.
    #[allow(clippy::too_many_arguments)]
    async fn finish_with_log(
        &self,
        log_item: Item,
        extra: Vec<Item>,
        (m, token, step): (&MerchantId, &CartToken, u8),
        claim_id: &str,
        sid: &str,
        touch: &Touch,
        now: DateTime<Utc>,
    ) -> Result<bool, PortError> {
        let log = put(&self.table, log_item, None, &[], &[])?;
        let step_update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(keys::cart_pk(m, token), keys::step_sk(step))))
            .update_expression("SET #st = :sent, message_sid = :sid, updated_at = :now REMOVE #lease")
            .condition_expression("#cid = :c AND #st = :claimed")
            .expression_attribute_names("#st", attr::STATE)
            .expression_attribute_names("#cid", attr::CLAIM_ID)
            .expression_attribute_names("#lease", attr::LEASE_UNTIL)
            .expression_attribute_values(":sent", s(StepState::Sent.as_str()))
            .expression_attribute_values(":claimed", s(StepState::Claimed.as_str()))
            .expression_attribute_values(":sid", s(sid))
            .expression_attribute_values(":c", s(claim_id))
            .expression_attribute_values(":now", s(keys::sort_time(now)));
        let cart_update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(keys::cart_pk(m, token), keys::CART)))
            .update_expression("SET last_message_at = :t, last_touch = :touch, #v = #v + :one")
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#pk", attr::PK)
            .expression_attribute_names("#v", attr::VERSION)
            .expression_attribute_values(":t", s(touch.at.to_rfc3339()))
            .expression_attribute_values(
                ":touch",
                serde_dynamo::to_attribute_value(touch).map_err(|e| PortError::Decode(e.to_string()))?,
            )
            .expression_attribute_values(":one", n(1));
        let mut items = vec![
            log,
            TransactWriteItem::builder().update(built(step_update.build())?).build(),
            TransactWriteItem::builder().update(built(cart_update.build())?).build(),
        ];
        for item in extra {
            items.push(put(&self.table, item, None, &[], &[])?);
        }
        // A conflict with a concurrent write to the cart is retried: the same items again.
        for _ in 0..3 {
            match self.transact(items.clone()).await? {
                TxOutcome::Done => return Ok(true),
                TxOutcome::Cancelled(codes) if codes.get(1).is_some_and(|c| c == "ConditionalCheckFailed") => {
                    // Our own write, applied but its answer lost (the SDK's retry then finds
                    // the step sent): done, so the caller goes on to queue the next step.
                    let ours = self.get_step(m, token, step).await?.is_some_and(|r| {
                        r.state == StepState::Sent
                            && r.claim_id.as_deref() == Some(claim_id)
                            && r.message_sid.as_deref() == Some(sid)
                    });
                    return Ok(ours);
                }
                TxOutcome::Cancelled(_) => continue,
            }
        }
        Err(PortError::Conflict)
    }

    /// Records how a claimed step ended; only the claim's holder may.
    pub async fn finish_step(
        &self,
        m: &MerchantId,
        token: &CartToken,
        step: u8,
        claim_id: &str,
        result: &StepResult,
        now: DateTime<Utc>,
    ) -> Result<(), PortError> {
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(keys::cart_pk(m, token), keys::step_sk(step))))
            .condition_expression("#cid = :c AND #st = :claimed")
            .expression_attribute_names("#st", attr::STATE)
            .expression_attribute_names("#cid", attr::CLAIM_ID)
            .expression_attribute_names("#lease", attr::LEASE_UNTIL)
            .expression_attribute_values(":c", s(claim_id))
            .expression_attribute_values(":claimed", s(StepState::Claimed.as_str()))
            .expression_attribute_values(":now", s(keys::sort_time(now)));
        req = match result {
            StepResult::Sent { message_sid } => req
                .update_expression("SET #st = :s, message_sid = :sid, updated_at = :now REMOVE #lease")
                .expression_attribute_values(":s", s(StepState::Sent.as_str()))
                .expression_attribute_values(":sid", s(message_sid)),
            StepResult::Failed { error_code, reason } => {
                let req = req
                    .expression_attribute_values(":s", s(StepState::Failed.as_str()))
                    .expression_attribute_values(":r", s(reason));
                match error_code {
                    Some(code) => req
                        .update_expression(
                            "SET #st = :s, reason = :r, error_code = :e, updated_at = :now REMOVE #lease",
                        )
                        .expression_attribute_values(":e", n(code)),
                    None => req.update_expression("SET #st = :s, reason = :r, updated_at = :now REMOVE #lease"),
                }
            }
            StepResult::Retry { reason, uncertain } => {
                let req = req
                    .expression_attribute_values(":s", s(StepState::Retry.as_str()))
                    .expression_attribute_values(":r", s(reason));
                if *uncertain {
                    req.update_expression(
                        "SET #st = :s, reason = :r, updated_at = :now, uncertain_since = if_not_exists(uncertain_since, :now) REMOVE #lease",
                    )
                } else {
                    req.update_expression("SET #st = :s, reason = :r, updated_at = :now REMOVE #lease")
                }
            }
        };
        match req.send().await {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {
                Err(PortError::Conflict)
            }
            Err(e) => Err(aws("UpdateItem", e)),
        }
    }

    /// Records why a step will never go out; first writer wins (an expired claim included).
    pub async fn skip_step(
        &self,
        m: &MerchantId,
        token: &CartToken,
        step: u8,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, PortError> {
        let mut item = key(keys::cart_pk(m, token), keys::step_sk(step));
        item.insert(attr::STATE.into(), s(StepState::Skipped.as_str()));
        item.insert("reason".into(), s(reason));
        item.insert(attr::ATTEMPTS.into(), n(0));
        item.insert("updated_at".into(), s(keys::sort_time(now)));
        let req = self
            .client
            .put_item()
            .set_item(Some(item))
            // An attempt Twilio may have taken is left for the worker to resolve first.
            .condition_expression(
                "attribute_not_exists(#pk) OR (#st = :retry AND attribute_not_exists(uncertain_since))",
            )
            .expression_attribute_names("#pk", attr::PK)
            .expression_attribute_names("#st", attr::STATE)
            .expression_attribute_values(":retry", s(StepState::Retry.as_str()));
        self.put_unless_taken(req).await
    }

    /// The worker's skip, over the step exactly as it read it (an expired claim or an uncertain
    /// retry included, once the worker has asked Twilio and found nothing). `false` when the
    /// step moved on in between.
    pub async fn skip_seen(
        &self,
        (m, token, step): (&MerchantId, &CartToken, u8),
        seen: &StepAvailability,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, PortError> {
        let condition = match seen {
            StepAvailability::Fresh => "attribute_not_exists(#pk)",
            StepAvailability::Reclaimable { expired_claim: false, .. } => "#st = :retry AND #att = :a",
            StepAvailability::Reclaimable { expired_claim: true, .. } => {
                "#st = :claimed AND #att = :a AND (attribute_not_exists(#lease) OR #lease <= :now)"
            }
            StepAvailability::Taken(_) => return Ok(false),
        };
        let mut item = key(keys::cart_pk(m, token), keys::step_sk(step));
        item.insert(attr::STATE.into(), s(StepState::Skipped.as_str()));
        item.insert("reason".into(), s(reason));
        item.insert(attr::ATTEMPTS.into(), n(0));
        item.insert("updated_at".into(), s(keys::sort_time(now)));
        let mut req = self.client.put_item().set_item(Some(item)).condition_expression(condition);
        req = match seen {
            StepAvailability::Fresh => req.expression_attribute_names("#pk", attr::PK),
            StepAvailability::Reclaimable { attempts, expired_claim, .. } => {
                let req = req
                    .expression_attribute_names("#st", attr::STATE)
                    .expression_attribute_names("#att", attr::ATTEMPTS)
                    .expression_attribute_values(":a", n(attempts));
                if *expired_claim {
                    req.expression_attribute_names("#lease", attr::LEASE_UNTIL)
                        .expression_attribute_values(":claimed", s(StepState::Claimed.as_str()))
                        .expression_attribute_values(":now", s(keys::sort_time(now)))
                } else {
                    req.expression_attribute_values(":retry", s(StepState::Retry.as_str()))
                }
            }
            StepAvailability::Taken(_) => req,
        };
        self.put_unless_taken(req).await
    }

    /// Takes over a step on the step alone, to record a message an earlier attempt did send:
    /// what happened since (an order, an opt-out) cannot undo a message Twilio already took.
    pub async fn take_over(
        &self,
        target: (&MerchantId, &CartToken, u8),
        seen: &StepAvailability,
        claim_id: &str,
        body_sha256: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, PortError> {
        let Some(update) = self.claim_update(target, seen, claim_id, body_sha256, now)? else { return Ok(false) };
        Ok(matches!(self.transact(vec![TransactWriteItem::builder().update(update).build()]).await?, TxOutcome::Done))
    }
}
