//! Applying one normalised platform event: every change of a delivery is written in one
//! transaction with its dedupe marker, so a redelivery changes nothing and a failure leaves
//! nothing half-written. The function in front of it only verifies, parses and maps.

use crate::app::consent;
use crate::app::outreach::schedule_step;
use crate::domain::cart::{Cart, CartStatus, CheckoutSnapshot};
use crate::domain::consent::{ConsentAction, ConsentSource, ConsentState, ConsentStatus, Verdict};
use crate::domain::guard::{BurstKind, Refusal, phone_prefix};
use crate::domain::ids::CartToken;
use crate::domain::merchant::{Channel, Merchant};
use crate::domain::outreach::{MerchantRecord, MerchantStatus};
use crate::domain::phone::{Phone, keyed_hash};
use crate::domain::subject::SubjectKey;
use crate::metrics;
use crate::platforms::{ConsentSignal, PlatformEvent, PlatformRequest};
use crate::ports::{
    BurstGuard, CartStore, Classify, ConsentAppend, ConsentLedger, ConsentStore, ErrorKind, IngestOutcome, IngestWrite,
    JobQueue, PendingPrivacy, PlatformRequests, PortError, PrivacyStore,
};
use chrono::{DateTime, Duration, Utc};
use thiserror::Error;
use tracing::info;

/// Optimistic-concurrency retries when two deliveries touch one cart at once.
const WRITE_ATTEMPTS: usize = 4;

#[derive(Debug, Error)]
pub enum IngestError {
    /// The store or the queue failed.
    #[error(transparent)]
    Port(#[from] PortError),
    #[error("the cart kept changing under concurrent deliveries")]
    Contention,
}

impl Classify for IngestError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Port(e) => e.kind(),
            Self::Contention => ErrorKind::Transient,
        }
    }
}

/// What applying a delivery reads and writes.
pub trait IngestStore: CartStore + ConsentStore + ConsentLedger + PrivacyStore + BurstGuard + PlatformRequests {}
impl<T: CartStore + ConsentStore + ConsentLedger + PrivacyStore + BurstGuard + PlatformRequests> IngestStore for T {}

/// What a delivery did, as the platform sees it in our 200 answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    Duplicate,
    Ignored,
    /// A privacy request or an uninstall, stored for its handling.
    Recorded,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Duplicate => "duplicate",
            Self::Ignored => "ignored",
            Self::Recorded => "recorded",
        }
    }
}

/// The ingest use case: the store, and the queue the first step goes on.
pub struct Ingest<'a, S, Q> {
    pub store: &'a S,
    pub queue: &'a Q,
}

impl<S: IngestStore, Q: JobQueue> Ingest<'_, S, Q> {
    /// Applies `event`, delivered as `event_key` (`{platform}#{event id}`), for `merchant`.
    pub async fn apply(
        &self,
        merchant: &MerchantRecord,
        event_key: &str,
        event: PlatformEvent,
        now: DateTime<Utc>,
    ) -> Result<Outcome, IngestError> {
        // A closed merchant gets no more carts or orders; opt-outs and privacy requests still count.
        let outreach_only = matches!(
            event,
            PlatformEvent::CartUpserted { .. } | PlatformEvent::CartDeleted { .. } | PlatformEvent::OrderPlaced { .. }
        );
        if merchant.status == MerchantStatus::Closed && outreach_only {
            return Ok(Outcome::Ignored);
        }
        match event {
            PlatformEvent::CartUpserted { snapshot, consent } => {
                self.upsert_cart(merchant, event_key, *snapshot, consent, now).await
            }
            PlatformEvent::CartDeleted { token, checkout_id } => {
                let mut token = token;
                if token.is_none()
                    && let Some(id) = checkout_id
                {
                    token = self.store.cart_token_for_checkout(&merchant.merchant.id, &id).await?;
                }
                self.update_cart(merchant, event_key, token, now, |cart, _| {
                    let open = cart.status == CartStatus::Open;
                    if open {
                        cart.status = CartStatus::Deleted;
                    }
                    open
                })
                .await
            }
            PlatformEvent::OrderPlaced { token, order_id, revenue, currency } => {
                let window = merchant.merchant.attribution_window_days;
                self.update_cart(merchant, event_key, token, now, |cart, now| {
                    // A platform that only names the order is credited with the cart's total.
                    let revenue = revenue.clone().or(cart.total_price.clone()).unwrap_or_else(|| "0.00".into());
                    let currency = currency.clone().or(cart.currency.clone()).unwrap_or_default();
                    cart.recover(order_id.clone(), revenue, currency, window, now)
                })
                .await
            }
            PlatformEvent::ConsentChanged { phone, channel, signal, withdraws_only } => {
                self.consent_changed(merchant, event_key, (phone, channel), signal, withdraws_only, now).await
            }
            PlatformEvent::Privacy(request) => {
                self.record_request(merchant, event_key, PlatformRequest::Privacy(request), now).await
            }
            PlatformEvent::AppUninstalled => {
                self.record_request(merchant, event_key, PlatformRequest::AppUninstalled, now).await
            }
            PlatformEvent::Ignored => Ok(Outcome::Ignored),
            // Resolved by the platform before it is applied; one that reaches here is a bug.
            PlatformEvent::CartToFetch { .. } => Ok(Outcome::Ignored),
        }
    }

    /// Consent to AI calls from the checkout field the merchant configured for it: an opt-in
    /// with the wording the merchant showed, for a number whose call ledger is empty. The box
    /// stays ticked on every later update of the checkout, so it can never stand for a new
    /// decision: after any opt-out (key 9, a texted STOP, the API) only an explicit consent
    /// through the API opts back in. An unticked or missing field withdraws nothing.
    async fn voice_consent(
        &self,
        m: &Merchant,
        (phone, deleted_at): (&Phone, Option<DateTime<Utc>>),
        snap: &CheckoutSnapshot,
        now: DateTime<Utc>,
    ) -> Result<Option<ConsentAppend>, PortError> {
        let Some(event) = m.voice.checkout_consent(&snap.attributes, snap.updated_at, now) else { return Ok(None) };
        if crate::app::privacy::predates_deletion(deleted_at, event.occurred_at) {
            return Ok(None);
        }
        let state = self.store.consent_state(&m.id, phone, Channel::Voice).await?;
        if state.status != ConsentStatus::Unknown || state.verdict(&event) != Verdict::Accept {
            return Ok(None);
        }
        Ok(Some(ConsentAppend {
            merchant_id: m.id.clone(),
            phone: phone.clone(),
            state,
            event,
            purge_at: consent::purge_at(m, now),
        }))
    }

    async fn upsert_cart(
        &self,
        merchant: &MerchantRecord,
        event_key: &str,
        snap: CheckoutSnapshot,
        signal: Option<ConsentSignal>,
        now: DateTime<Utc>,
    ) -> Result<Outcome, IngestError> {
        let m = &merchant.merchant;
        let mut guard_verdict: Option<Option<Refusal>> = None;
        for _ in 0..WRITE_ATTEMPTS {
            // Read on every attempt: the write below is conditioned on what was read, so a
            // deletion landing in between refuses it and this read sees the marker.
            let keys = SubjectKey::of_checkout(snap.phone.as_ref(), snap.email.as_deref(), snap.customer_id.as_deref());
            let read = futures::future::try_join_all(keys.iter().map(|k| self.store.deletion_marker(&m.id, k))).await?;
            let mut deletions_seen: Vec<_> = keys.into_iter().zip(read).collect();
            // A copy of a checkout from before the person's data was deleted on request (a late
            // retry, a resend), found by its number, email or customer id: storing it would bring
            // the deleted data back. Only the delivery's dedupe marker is kept; a checkout made
            // after the deletion is a new one.
            if deletions_seen.iter().any(|(_, at)| crate::app::privacy::predates_deletion(*at, snap.updated_at)) {
                let phone = snap.phone.as_ref().map(Phone::log_id);
                info!(merchant = %m.id, phone = ?phone, "checkout from before the subject's deletion: nothing stored");
                return self.mark_only(m, event_key, now).await;
            }
            let deleted_at = snap.phone.as_ref().and_then(|p| marker_as_read(&deletions_seen, &SubjectKey::phone(p)));
            let existing = self.store.get_cart(&m.id, &snap.token).await?;
            let expected = existing.as_ref().map(|c| c.version);
            // A checkout older than the one we hold lost the race: its consent box is history.
            let outdated = existing.as_ref().is_some_and(|c| snap.updated_at < c.updated_at);
            let mut cart = match existing {
                Some(mut c) => {
                    c.absorb(snap.clone());
                    c
                }
                None => Cart::new(m.id.clone(), snap.clone(), now),
            };
            cart.version = expected.map_or(1, |v| v + 1);
            cart.keep_for(m.retention_days.carts, now);

            let mut append = None;
            let mut status = ConsentStatus::Unknown;
            if let Some(phone) = &cart.phone {
                let state = self.store.consent_state(&m.id, phone, Channel::Sms).await?;
                // The cart we hold may carry a number this copy of the checkout does not.
                let deleted_at = if snap.phone.as_ref() == Some(phone) {
                    deleted_at
                } else {
                    let key = SubjectKey::phone(phone);
                    let read = self.store.deletion_marker(&m.id, &key).await?;
                    deletions_seen.push((key, read));
                    read
                };
                status = state.status;
                let mut note = None;
                if let Some(sig) = &signal {
                    let event = sig.event(Channel::Sms, ConsentSource::Checkout, now);
                    match state.verdict(&event) {
                        _ if outdated => note = Some("outdated_checkout"),
                        // The person's data was deleted on request after this box was ticked:
                        // the opt-out that went with it still holds.
                        _ if crate::app::privacy::predates_deletion(deleted_at, event.occurred_at) => {
                            note = Some("deleted_subject")
                        }
                        Verdict::Accept => {
                            status = ConsentState::status_after(event.action);
                            append = Some(ConsentAppend {
                                merchant_id: m.id.clone(),
                                phone: phone.clone(),
                                state,
                                event,
                                purge_at: consent::purge_at(m, now),
                            });
                        }
                        Verdict::Unchanged => {}
                        Verdict::OptedOutLater { .. } => note = Some("opted_out_later"),
                        Verdict::PersonOptedOut { .. } => note = Some("opted_out_by_person"),
                    }
                }
                // Why this checkout's consent box did not count, for the merchant and an auditor.
                cart.consent_note = note.map(str::to_string);
            }
            let mut schedule = cart.status == CartStatus::Open
                && status == ConsentStatus::OptedIn
                && cart.recovery_url.is_some()
                && !cart.outreach_scheduled
                && cart.outreach_refused.is_none();
            if schedule {
                // Counted once per cart, however often the write below is retried.
                if guard_verdict.is_none() {
                    guard_verdict = Some(self.pumping_guard(m, &cart, signal.as_ref(), now).await?);
                }
                if let Some(Some(refusal)) = guard_verdict {
                    schedule = false;
                    cart.outreach_refused = Some(refusal.as_str().to_string());
                }
            }
            if schedule {
                cart.outreach_scheduled = true;
            }
            let mut consents: Vec<ConsentAppend> = append.into_iter().collect();
            if let Some(phone) = cart.phone.as_ref().filter(|_| !outdated) {
                let deleted_at = marker_as_read(&deletions_seen, &SubjectKey::phone(phone));
                consents.extend(self.voice_consent(m, (phone, deleted_at), &snap, now).await?);
            }
            let write = IngestWrite {
                merchant_id: m.id.clone(),
                event_key: event_key.to_string(),
                received_at: now,
                cart: Some((cart.clone(), expected)),
                consents,
                deletions_seen,
            };
            match self.store.write_ingest(&write).await {
                Ok(IngestOutcome::Duplicate) => return Ok(Outcome::Duplicate),
                Ok(IngestOutcome::Applied) => {
                    if let Some(refused) = &cart.outreach_refused
                        && matches!(guard_verdict, Some(Some(_)))
                    {
                        let phone = cart.phone.as_ref().map(Phone::log_id);
                        info!(merchant = %m.id, phone = ?phone, reason = %refused, "cart refused by the pumping guard: no outreach");
                        metrics::count_by(metrics::CARTS_REFUSED, "Reason", refused, 1);
                    }
                    if schedule {
                        self.schedule_first_step(merchant, &cart, event_key, now).await?;
                    }
                    return Ok(Outcome::Accepted);
                }
                Err(PortError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(IngestError::Contention)
    }

    /// The SMS-pumping guard for a cart about to get outreach: its number's country, then new
    /// carts per shopper IP and per number prefix in the merchant's burst window.
    async fn pumping_guard(
        &self,
        m: &Merchant,
        cart: &Cart,
        signal: Option<&ConsentSignal>,
        now: DateTime<Utc>,
    ) -> Result<Option<Refusal>, IngestError> {
        let Some(phone) = &cart.phone else { return Ok(None) };
        let guard = &m.send_guard;
        if !guard.allows_destination(&m.default_country, phone) {
            return Ok(Some(Refusal::DestinationCountry));
        }
        let ip = signal.and_then(|s| s.evidence.ip.as_deref()).filter(|ip| !ip.trim().is_empty());
        let counters = [
            ip.map(|ip| (BurstKind::Ip, keyed_hash("burst-ip", ip.trim()))),
            Some((BurstKind::Prefix, keyed_hash("burst-prefix", phone_prefix(phone)))),
        ];
        let (start, window) = (guard.window_start(now), Duration::minutes(i64::from(guard.burst_window_minutes)));
        for (kind, hashed) in counters.into_iter().flatten() {
            if self.store.bump_burst(&m.id, kind, &hashed, start, window).await? > u64::from(guard.burst_limit(kind)) {
                return Ok(Some(kind.refusal()));
            }
        }
        Ok(None)
    }

    /// A platform says a customer's consent on `channel` changed: one ledger entry, written with
    /// the delivery's dedupe marker. An opt-out also cancels queued outreach to that phone.
    async fn consent_changed(
        &self,
        merchant: &MerchantRecord,
        event_key: &str,
        (phone, channel): (Phone, Channel),
        signal: ConsentSignal,
        withdraws_only: bool,
        now: DateTime<Utc>,
    ) -> Result<Outcome, IngestError> {
        let m = &merchant.merchant;
        let event = signal.event(channel, ConsentSource::PlatformConsentWebhook, now);
        for _ in 0..WRITE_ATTEMPTS {
            // A platform's opt-in dated before the person's data was deleted on request does not
            // bring them back; the write is conditioned on the marker as read here.
            let mut deletions_seen = Vec::new();
            if event.action == ConsentAction::OptIn {
                let key = SubjectKey::phone(&phone);
                let deleted_at = self.store.deletion_marker(&m.id, &key).await?;
                if crate::app::privacy::predates_deletion(deleted_at, event.occurred_at) {
                    return self.mark_only(m, event_key, now).await;
                }
                deletions_seen.push((key, deleted_at));
            }
            let state = self.store.consent_state(&m.id, &phone, channel).await?;
            // "not subscribed" withdraws an opt-in we hold; it does not create records of strangers.
            let applies = state.accepts(&event) && !(withdraws_only && state.status != ConsentStatus::OptedIn);
            let append = applies.then(|| ConsentAppend {
                merchant_id: m.id.clone(),
                phone: phone.clone(),
                state,
                event: event.clone(),
                purge_at: consent::purge_at(m, now),
            });
            let write = IngestWrite {
                merchant_id: m.id.clone(),
                event_key: event_key.to_string(),
                received_at: now,
                cart: None,
                consents: append.into_iter().collect(),
                deletions_seen,
            };
            match self.store.write_ingest(&write).await {
                Ok(IngestOutcome::Duplicate) => return Ok(Outcome::Duplicate),
                Ok(IngestOutcome::Applied) => {
                    if applies && event.action == ConsentAction::OptOut {
                        consent::after_opt_out(self.store, m, &phone, (channel, event.source), now).await?;
                    }
                    return Ok(Outcome::Accepted);
                }
                Err(PortError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(IngestError::Contention)
    }

    /// A delivery acknowledged with nothing applied: only its dedupe marker is written.
    async fn mark_only(&self, m: &Merchant, event_key: &str, now: DateTime<Utc>) -> Result<Outcome, IngestError> {
        let write = IngestWrite {
            merchant_id: m.id.clone(),
            event_key: event_key.to_string(),
            received_at: now,
            cart: None,
            consents: Vec::new(),
            deletions_seen: Vec::new(),
        };
        Ok(match self.store.write_ingest(&write).await? {
            IngestOutcome::Duplicate => Outcome::Duplicate,
            IngestOutcome::Applied => Outcome::Ignored,
        })
    }

    /// Stores a privacy request or an uninstall with the delivery's dedupe marker, for the
    /// privacy and account use cases to carry out.
    async fn record_request(
        &self,
        merchant: &MerchantRecord,
        event_key: &str,
        request: PlatformRequest,
        now: DateTime<Utc>,
    ) -> Result<Outcome, IngestError> {
        let m = &merchant.merchant;
        // A customer's data request or redaction waits for the next purge run, recorded in the
        // same transaction as the delivery's dedupe marker.
        let pending = match &request {
            PlatformRequest::Privacy(p) if p.kind != crate::platforms::PrivacyKind::ShopRedact => {
                let action = match p.kind {
                    crate::platforms::PrivacyKind::DataRequest => "export",
                    _ => "delete",
                };
                Some(PendingPrivacy {
                    id: p.request_id.clone().unwrap_or_else(|| event_key.replace(['#', '/'], "-")),
                    action: action.into(),
                    phone: p.phone.clone(),
                    email: p.email.clone(),
                    customer_id: p.customer_id.clone(),
                    requested_at: now,
                })
            }
            _ => None,
        };
        let stored = self.store.record_platform_request(m, event_key, &request, pending.as_ref(), now).await?;
        if let (true, Some(p)) = (stored, &pending) {
            // The request answers from the moment it is accepted, and is carried out now by the
            // worker (the nightly purge finishes any the worker could not).
            let accepted = crate::ports::PrivacyStatus {
                id: p.id.clone(),
                action: p.action.clone(),
                status: "accepted".into(),
                export_key: None,
                counts: Default::default(),
                updated_at: now,
                provider_copies_pending: None,
            };
            self.store.put_privacy_status(&m.id, &accepted, None).await?;
            let work = crate::ports::PrivacyWork { merchant_id: m.id.clone(), id: p.id.clone() };
            if let Err(e) = self.queue.enqueue_privacy(&work).await {
                tracing::warn!(merchant = %m.id, error = %crate::telemetry::redact(&crate::ports::chain(&e)), "could not queue the privacy request; the nightly purge carries it out");
            }
        }
        match &request {
            // Uninstalling closes the account: no more outreach, its data erased after the grace period.
            // Its queued steps are cancelled by the worker (every claim refuses meanwhile).
            PlatformRequest::AppUninstalled => {
                self.store.close_merchant(&m.id, now).await?;
                if let Err(e) = self.queue.enqueue_closure(&m.id).await {
                    tracing::warn!(merchant = %m.id, error = %crate::telemetry::redact(&crate::ports::chain(&e)), "could not queue the closure's step cancellation; claims refuse a closed account anyway");
                }
            }
            // The shop's customer data goes at the next purge run, without a grace period, but
            // only for an uninstalled app: a captured or mis-addressed delivery must never wipe
            // a live shop. For an installed shop it is recorded and acknowledged, nothing more.
            PlatformRequest::Privacy(p) if p.kind == crate::platforms::PrivacyKind::ShopRedact => {
                if merchant.status == crate::domain::outreach::MerchantStatus::Active {
                    tracing::warn!(merchant = %m.id, "shop/redact for an installed shop: acknowledged, nothing erased");
                } else {
                    self.store.request_shop_redaction(&m.id, now).await?
                }
            }
            PlatformRequest::Privacy(_) => {}
        }
        info!(merchant = %m.id, kind = request.kind(), stored, "platform request recorded");
        Ok(if stored { Outcome::Recorded } else { Outcome::Duplicate })
    }

    /// Queues step 0. If the queue refuses, the delivery is undone so the platform's retry
    /// schedules it again.
    async fn schedule_first_step(
        &self,
        merchant: &MerchantRecord,
        cart: &Cart,
        event_key: &str,
        now: DateTime<Utc>,
    ) -> Result<(), IngestError> {
        match schedule_step(self.queue, &merchant.merchant, cart, 0, now).await {
            Ok(None) => Ok(()),
            Ok(Some(job)) => {
                info!(
                    merchant = %cart.merchant_id,
                    phone = %cart.phone.as_ref().map(|p| p.log_id()).unwrap_or_default(),
                    due_at = %job.due_at,
                    "outreach scheduled"
                );
                // Without the note, the delivery's copy queues step 0 once more: harmless.
                if let Err(e) = self.store.mark_first_step_queued(&cart.merchant_id, &cart.token).await {
                    tracing::warn!(merchant = %cart.merchant_id, error = %crate::telemetry::redact(&crate::ports::chain(&e)), "could not note step 0 as queued");
                }
                Ok(())
            }
            Err(e) => {
                let _ = self.store.set_outreach_scheduled(&cart.merchant_id, &cart.token, false).await;
                let _ = self.store.forget_event(&cart.merchant_id, event_key).await;
                Err(e.into())
            }
        }
    }

    /// Writes a changed cart with the delivery's dedupe marker, retrying on concurrent changes.
    async fn update_cart(
        &self,
        merchant: &MerchantRecord,
        event_key: &str,
        token: Option<CartToken>,
        now: DateTime<Utc>,
        change: impl Fn(&mut Cart, DateTime<Utc>) -> bool,
    ) -> Result<Outcome, IngestError> {
        let m = &merchant.merchant;
        for _ in 0..WRITE_ATTEMPTS {
            let cart = match &token {
                Some(t) => match self.store.get_cart(&m.id, t).await? {
                    Some(c) => Some((c.version, c)),
                    // Its checkout has not reached us yet (its inline apply failed and its copy
                    // waits, or the platform retries it later): the cart is kept closed, so that
                    // checkout cannot open it and text someone who already ordered (found by
                    // review). Created only if still absent.
                    None => Some((0, Cart::unseen(m.id.clone(), t.clone(), now))),
                },
                None => None,
            };
            let cart = cart.and_then(|(expected, mut c)| {
                change(&mut c, now).then(|| {
                    c.version = expected + 1;
                    c.keep_for(m.retention_days.carts, now);
                    (c, (expected > 0).then_some(expected))
                })
            });
            let write = IngestWrite {
                merchant_id: m.id.clone(),
                event_key: event_key.to_string(),
                received_at: now,
                cart,
                consents: Vec::new(),
                deletions_seen: Vec::new(),
            };
            match self.store.write_ingest(&write).await {
                Ok(IngestOutcome::Duplicate) => return Ok(Outcome::Duplicate),
                Ok(IngestOutcome::Applied) => {
                    // Counted once: only the write that recovered the cart carries `now`.
                    if let Some(r) = write.cart.as_ref().and_then(|(c, _)| c.recovery.as_ref())
                        && r.attributed
                        && r.recovered_at == now
                    {
                        metrics::count(metrics::RECOVERIES, 1);
                        metrics::revenue(r.revenue.parse().unwrap_or(0.0));
                    }
                    return Ok(Outcome::Accepted);
                }
                Err(PortError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(IngestError::Contention)
    }
}

/// A subject's deletion marker as this write read it.
fn marker_as_read(seen: &[(SubjectKey, Option<DateTime<Utc>>)], key: &SubjectKey) -> Option<DateTime<Utc>> {
    seen.iter().find(|(k, _)| k == key).and_then(|(_, at)| *at)
}
