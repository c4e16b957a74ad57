//! The retention purge: everything whose purge date has come, read from the sparse purge index
//! one shard and page at a time, however old its date (the cost follows what is due, not the
//! table), deleted in batches, recorded in an audit report without personal data. "Now" is the run's `as_of` (the
//! schedule's time), so a late or replayed run purges as of its own schedule.

use crate::app::privacy::PrivacyData;
use crate::domain::ids::MerchantId;
use crate::domain::merchant::DEFAULT_RETENTION_DAYS;
use crate::domain::outreach::MerchantRecord;
use crate::domain::retention::{HELD_PREFIX, PURGE_SHARDS, PurgeKind, PurgeReport, Redate};
use crate::ports::{
    CustomerData, DueItem, Erasure, ItemKey, JobQueue, MerchantStore, PortError, PrivacyWork, ProviderCopy, PurgeStore,
    RecordingFiles,
};
use chrono::{DateTime, Duration, Utc};
use std::collections::HashMap;
use std::time::Instant;
use thiserror::Error;
use tracing::{info, warn};

/// The store or the recordings bucket failed; the run stops and the next one continues.
#[derive(Debug, Error)]
#[error(transparent)]
pub struct PurgeError(#[from] pub PortError);

impl crate::ports::Classify for PurgeError {
    fn kind(&self) -> crate::ports::ErrorKind {
        self.0.kind()
    }
}

impl From<crate::app::privacy::PrivacyError> for PurgeError {
    fn from(e: crate::app::privacy::PrivacyError) -> Self {
        Self(e.0)
    }
}

/// What the purge reads and deletes.
pub trait PurgeData: PrivacyData + MerchantStore {}
impl<T: PrivacyData + MerchantStore> PurgeData for T {}

/// One purge run's settings.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    pub as_of: DateTime<Utc>,
    /// Count what is due, delete nothing, write nothing.
    pub dry_run: bool,
    /// Stop cleanly (between batches) after this instant; the next run continues.
    pub deadline: Option<Instant>,
    /// When the run started (the wall clock, for the audit record).
    pub started_at: DateTime<Utc>,
    /// A closed account's data is erased this many days after it closed.
    pub closure_grace_days: u32,
    /// `tenant` index entries an erasure or a re-dating reads between two looks at the
    /// deadline (`ERASURE_PAGE`).
    pub erasure_page: usize,
}

/// How long before its invocation ends a run stops reading pages. A page is acted on whole
/// once read: the slowest is 1 000 items that each need round trips of their own (a cart is a
/// Query and a transaction, about 20 ms on DynamoDB: about 20 s), then the audit record and the
/// answer; twice that, of the function's 900 s.
pub const DEADLINE_MARGIN: std::time::Duration = std::time::Duration::from_secs(45);

/// When a run with `time_left` before its invocation ends stops reading pages.
pub fn run_deadline(time_left: std::time::Duration) -> Instant {
    Instant::now() + time_left.saturating_sub(DEADLINE_MARGIN)
}

/// When a purge run takes over a re-dating a save recorded and has not finished.
const REDATE_RESUME_AFTER: Duration = Duration::minutes(15);

/// Why a merchant's settings were not saved.
#[derive(Debug, Error)]
pub enum SaveError {
    /// Another save changed the settings since they were read: nothing was written.
    #[error("merchant {0} was saved by someone else since it was read: nothing written; read it again and retry")]
    Concurrent(MerchantId),
    #[error(transparent)]
    Store(#[from] PortError),
}

impl crate::ports::Classify for SaveError {
    fn kind(&self) -> crate::ports::ErrorKind {
        match self {
            Self::Concurrent(_) => crate::ports::ErrorKind::Permanent,
            Self::Store(e) => e.kind(),
        }
    }
}

/// A merchant's new settings are saved, conditioned on the version read (a concurrent save is
/// never overwritten: `SaveError::Concurrent`); a retention it shortened applies to what is
/// already stored: those purge dates move earlier, and the next run deletes what is now past
/// them. The re-dating is recorded in the same write as the settings and removed once done: a
/// failure part-way leaves it due, and the next purge run finishes it (each item moves once).
/// How many items moved.
pub async fn save_merchant<S: PurgeStore + MerchantStore>(
    store: &S,
    merchant: &crate::domain::merchant::Merchant,
    now: DateTime<Utc>,
) -> Result<u64, SaveError> {
    let old = store.get_merchant(&merchant.id).await?;
    let read = old.as_ref().map(|r| r.version);
    let job = old.and_then(|old| {
        let id = format!("rd_{}", uuid::Uuid::new_v4().simple());
        Redate::new(id, &old.merchant.retention_days, &merchant.retention_days)
    });
    let redate = job.as_ref().map(|j| (j, now + REDATE_RESUME_AFTER));
    match store.put_merchant_if(merchant, now, read, redate).await {
        Ok(()) => {}
        Err(PortError::Conflict) => return Err(SaveError::Concurrent(merchant.id.clone())),
        Err(e) => return Err(e.into()),
    }
    let Some(job) = job else { return Ok(0) };
    let (moved, _) = store.redate(&merchant.id, &job, None, ERASURE_PAGE, None).await?;
    store.redate_done(&merchant.id, &job.id).await?;
    info!(merchant = %merchant.id, moved, "retention shortened: stored purge dates moved earlier");
    Ok(moved)
}

/// Sets or lifts a merchant's legal hold. The purger keeps everything while it holds, and S3
/// must too: the account's recordings move under `held/` (no lifecycle rule covers it) when the
/// hold is set, and back under `recordings/` when it lifts. How many recordings moved.
pub async fn set_legal_hold<S: MerchantStore, F: RecordingFiles>(
    store: &S,
    files: &F,
    m: &MerchantId,
    on: bool,
) -> Result<usize, PurgeError> {
    let (live, held) = (format!("recordings/{m}/"), format!("{HELD_PREFIX}recordings/{m}/"));
    let moved = if on {
        // The flag first: from now on no run deletes; then the objects leave the rule's reach.
        store.set_legal_hold(m, true).await?;
        files.move_prefix(&live, &held).await?
    } else {
        // The objects back first: a run after the flag lifts finds them where it looks.
        let moved = files.move_prefix(&held, &live).await?;
        store.set_legal_hold(m, false).await?;
        moved
    };
    info!(merchant = %m, on, moved, "legal hold");
    Ok(moved)
}

/// `tenant` index entries an erasure or a re-dating reads (and acts on) between two looks at
/// the deadline.
pub const ERASURE_PAGE: usize = 500;

/// The request under which an erasure records the Twilio copies it leaves for the worker.
fn erasure_request(scope: Erasure) -> String {
    match scope {
        Erasure::Account => "account-closure".into(),
        Erasure::CustomerData => "shop-redact".into(),
    }
}

/// The grace period of a closed account unless configured (`CLOSURE_GRACE_DAYS`).
pub const DEFAULT_CLOSURE_GRACE_DAYS: u32 = 30;

pub struct Purger<'a, S, F, Q> {
    pub store: &'a S,
    pub recordings: &'a F,
    /// Where a deletion's unconfirmed Twilio copies go again, for the worker.
    pub queue: &'a Q,
}

/// Where a long run is, for an operator watching it (`callfy-admin purge`).
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub shards_done: u32,
    pub shards_total: u32,
    /// Items deleted (or, in a dry run, due) so far.
    pub items: u64,
}

impl<S: PurgeData, F: RecordingFiles, Q: JobQueue> Purger<'_, S, F, Q> {
    pub async fn run(&self, opts: RunOptions) -> Result<PurgeReport, PurgeError> {
        self.run_with_progress(opts, |_| {}).await
    }

    /// `run`, telling `progress` after each shard.
    pub async fn run_with_progress(
        &self,
        opts: RunOptions,
        progress: impl Fn(Progress),
    ) -> Result<PurgeReport, PurgeError> {
        let mut report = PurgeReport {
            as_of: Some(opts.as_of),
            started_at: Some(opts.started_at),
            dry_run: opts.dry_run,
            complete: true,
            ..Default::default()
        };
        match self.read_shards(&opts, &progress, &mut report).await {
            Ok(()) => {}
            Err(e) => {
                // A run that fails still leaves its audit record: the error, and what it did.
                report.complete = false;
                report.errors.push(crate::telemetry::redact(&crate::ports::chain(&e)));
                report.finished_at = Some(Utc::now().max(opts.started_at));
                if !opts.dry_run
                    && let Err(w) = self.store.put_purge_report(&report).await
                {
                    warn!(error = %crate::telemetry::redact(&crate::ports::chain(&w)), "could not write the failed run's audit record");
                }
                return Err(e);
            }
        }
        report.finished_at = Some(Utc::now().max(opts.started_at));
        if !opts.dry_run {
            self.store.put_purge_report(&report).await?;
        }
        info!(as_of = %opts.as_of, dry_run = opts.dry_run, total = report.total(), complete = report.complete, "purge run");
        Ok(report)
    }

    /// The run's reading and deleting, shard by shard and page by page, into `report`. What a
    /// page's handling leaves due (a ledger with an append in between) is past the cursor and
    /// read again by the next run.
    async fn read_shards(
        &self,
        opts: &RunOptions,
        progress: &impl Fn(Progress),
        report: &mut PurgeReport,
    ) -> Result<(), PurgeError> {
        let opts = *opts;
        if opts.deadline.is_some_and(|d| Instant::now() >= d) {
            report.complete = false;
            return Ok(());
        }
        let mut page = Some(self.store.due_page(0, opts.as_of, None).await?);
        let mut shard = 0;
        while let Some((due, next)) = page.take() {
            report.index_queries += 1;
            report.index_reads += due.len() as u64;
            let following = match next {
                Some(cursor) => Some((shard, Some(cursor))),
                None if shard + 1 < PURGE_SHARDS => Some((shard + 1, None)),
                None => None,
            };
            let read_next = async {
                match &following {
                    Some((s, after)) => self.store.due_page(*s, opts.as_of, after.clone()).await.map(Some),
                    None => Ok(None),
                }
            };
            // An erasure, a person's deletion, a whole ledger or a re-dating reaches past its
            // page: the next page is read after it. Any other page is deleted while the next
            // is read, so the index Query and the deletes overlap.
            let reaches_beyond = due.iter().any(|i| {
                matches!(
                    PurgeKind::of_sort_key(&i.sk),
                    PurgeKind::Erasure | PurgeKind::Privacy | PurgeKind::ConsentLedger | PurgeKind::Redate
                )
            });
            let purge_this = async {
                if due.is_empty() {
                    return Ok(());
                }
                // Each page reads its merchants afresh: a legal hold set (or an account
                // reopened) while the run goes on is honoured from the next page.
                let mut merchants: HashMap<String, Option<MerchantRecord>> = HashMap::new();
                self.purge(due, &opts, &mut merchants, report).await
            };
            page = if reaches_beyond {
                purge_this.await?;
                read_next.await?
            } else {
                let (read, purged) = tokio::join!(read_next, purge_this);
                purged?;
                read?
            };
            if following.as_ref().is_none_or(|(s, _)| *s != shard) {
                progress(Progress { shards_done: shard + 1, shards_total: PURGE_SHARDS, items: report.total() });
            }
            match following {
                Some((s, _)) => shard = s,
                None => break,
            }
            if opts.deadline.is_some_and(|d| Instant::now() >= d) {
                report.complete = false;
                return Ok(());
            }
        }
        Ok(())
    }

    async fn merchant<'m>(
        &self,
        cache: &'m mut HashMap<String, Option<MerchantRecord>>,
        id: &str,
    ) -> Result<&'m Option<MerchantRecord>, PortError> {
        if !cache.contains_key(id) {
            let record = match MerchantId::parse(id) {
                Ok(m) => self.store.get_merchant(&m).await?,
                Err(_) => None,
            };
            cache.insert(id.to_string(), record);
        }
        Ok(cache.get(id).unwrap_or(&None))
    }

    async fn purge(
        &self,
        due: Vec<DueItem>,
        opts: &RunOptions,
        merchants: &mut HashMap<String, Option<MerchantRecord>>,
        report: &mut PurgeReport,
    ) -> Result<(), PurgeError> {
        let mut plain: Vec<(String, (String, String), PurgeKind)> = Vec::new();
        let mut recordings: Vec<DueItem> = Vec::new();
        let mut entries: Vec<DueItem> = Vec::new();
        let mut requeue: std::collections::BTreeSet<(MerchantId, String)> = Default::default();
        for item in due {
            let merchant = item.merchant().unwrap_or("-").to_string();
            // A data-subject request decides about the hold itself: exports go ahead.
            if PurgeKind::of_sort_key(&item.sk) == PurgeKind::Privacy {
                self.privacy(item, &merchant, opts, merchants, report).await?;
                continue;
            }
            // A shortened retention a save left unfinished: moving dates earlier deletes
            // nothing, so a legal hold does not wait for it (what falls due is held then).
            if PurgeKind::of_sort_key(&item.sk) == PurgeKind::Redate {
                if !opts.dry_run && !self.redate(&item, opts).await? {
                    report.complete = false;
                }
                continue;
            }
            let held = self.merchant(merchants, &merchant).await?.as_ref().is_some_and(|r| r.legal_hold);
            if held {
                // A legal hold suspends every purge: looked at again tomorrow.
                *report.held.entry(merchant).or_default() += 1;
                if !opts.dry_run {
                    self.store.repurge(&item.pk, &item.sk, opts.as_of + Duration::days(1)).await?;
                }
                continue;
            }
            match PurgeKind::of_sort_key(&item.sk) {
                PurgeKind::Erasure => self.erase(item, &merchant, opts, merchants, report).await?,
                // A deletion's Twilio copy the worker could not remove yet: queued for it again,
                // and looked at again tomorrow until the worker crosses it off.
                PurgeKind::ProviderCopy => {
                    if let (Some(request), Ok(m)) = (item.attrs.get("request"), MerchantId::parse(&merchant)) {
                        requeue.insert((m, request.clone()));
                    }
                    report.provider_copies_requeued += 1;
                    if !opts.dry_run {
                        self.store.repurge(&item.pk, &item.sk, opts.as_of + Duration::days(1)).await?;
                    }
                }
                PurgeKind::Recording => recordings.push(item),
                PurgeKind::ConsentEntry => entries.push(item),
                PurgeKind::ConsentLedger => self.ledger(item, &merchant, opts, merchants, report).await?,
                PurgeKind::Cart => {
                    // The cart with its steps and checkout pointer, in one transaction, only at
                    // the purge date read: one updated since stays whole.
                    let mut keys = if opts.dry_run { Vec::new() } else { self.store.partition_keys(&item.pk).await? };
                    if let (Some(id), Some(m)) = (item.attrs.get("checkout_id"), item.merchant()) {
                        keys.push((format!("X#{m}#{id}"), "CHECKOUT".into()));
                    }
                    if !opts.dry_run
                        && !self.store.delete_cart_if_due(&item.pk, &item.sk, &item.purge_at, &keys).await?
                    {
                        report.deferred += 1;
                        continue;
                    }
                    // Deleted with the cart (in that one write): counted, not deleted again
                    // (a cart or pointer written since must stay).
                    report.count(&merchant, PurgeKind::Cart, 1);
                }
                kind => plain.push((merchant, (item.pk, item.sk), kind)),
            }
        }
        if !opts.dry_run {
            for (merchant_id, id) in requeue {
                self.queue.enqueue_provider_copies(&PrivacyWork { merchant_id, id }).await?;
            }
        }
        // Recordings: the objects first, then their purge items and log references.
        if !recordings.is_empty() {
            let keys: Vec<String> = recordings.iter().filter_map(|r| r.attrs.get("s3_key").cloned()).collect();
            if !opts.dry_run {
                self.recordings.delete_keys(&keys).await?;
            }
            for r in &recordings {
                if !opts.dry_run {
                    self.store.recording_purged(&r.pk, &r.sk, r.attrs.get("log_sk").map(String::as_str)).await?;
                }
                report.count(r.merchant().unwrap_or("-"), PurgeKind::Recording, 1);
            }
        }
        // Superseded consent entries, oldest first, each with the ledger's checkpoint.
        entries.sort_by(|a, b| (&a.pk, &a.sk).cmp(&(&b.pk, &b.sk)));
        for e in entries {
            let seq: u64 = e.attrs.get("seq").and_then(|s| s.parse().ok()).unwrap_or(0);
            let hash = e.attrs.get("hash").cloned().unwrap_or_default();
            let done = opts.dry_run || self.store.purge_consent_entry(&e.pk, &e.sk, seq, &hash).await?;
            if done {
                report.count(e.merchant().unwrap_or("-"), PurgeKind::ConsentEntry, 1);
            } else {
                // An append at the same moment, or an older entry still kept (a shortened
                // retention): the chain stays contiguous, and this entry is looked at again
                // tomorrow, in a bucket the watermark has not passed.
                warn!(seq, "a consent entry could not be purged with its checkpoint; tried again tomorrow");
                report.deferred += 1;
                self.store.repurge(&e.pk, &e.sk, opts.as_of + Duration::days(1)).await?;
            }
        }
        if !opts.dry_run {
            // Items that stand alone: none must outlive another.
            let keys: Vec<(String, String)> = plain.iter().map(|(_, k, _)| k.clone()).collect();
            self.store.batch_delete_any(&keys).await?;
        }
        for (merchant, _, kind) in &plain {
            report.count(merchant, *kind, 1);
        }
        Ok(())
    }

    /// A platform's data-subject request carried out when received (the worker, from the queue)
    /// rather than at the next run; one it cannot finish stays pending for the purger.
    pub async fn carry_out(&self, work: &crate::ports::PrivacyWork, as_of: DateTime<Utc>) -> Result<(), PurgeError> {
        let (pk, sk) = self.store.pending_privacy_key(&work.merchant_id, &work.id);
        let item = DueItem {
            pk,
            sk,
            purge_at: as_of.to_rfc3339(),
            merchant: Some(work.merchant_id.to_string()),
            attrs: Default::default(),
        };
        let opts = RunOptions {
            as_of,
            dry_run: false,
            deadline: None,
            started_at: as_of,
            closure_grace_days: DEFAULT_CLOSURE_GRACE_DAYS,
            erasure_page: ERASURE_PAGE,
        };
        let (mut merchants, mut report) = (HashMap::new(), PurgeReport::default());
        self.privacy(item, work.merchant_id.as_str(), &opts, &mut merchants, &mut report).await
    }

    /// A data-subject request waiting for this run: an export is written to the bucket's
    /// `exports/` prefix; a deletion is carried out unless a legal hold still holds it.
    async fn privacy(
        &self,
        item: DueItem,
        merchant: &str,
        opts: &RunOptions,
        merchants: &mut HashMap<String, Option<MerchantRecord>>,
        report: &mut PurgeReport,
    ) -> Result<(), PurgeError> {
        let Some(record) = self.merchant(merchants, merchant).await?.clone() else {
            if !opts.dry_run {
                self.store.batch_delete(&[(item.pk, item.sk)]).await?;
            }
            return Ok(());
        };
        let Some(p) = self.store.pending_privacy(&item.pk, &item.sk).await? else { return Ok(()) };
        let subject = match (&p.phone, &p.email, &p.customer_id) {
            (Some(phone), _, _) => crate::app::privacy::Subject::Phone(phone.clone()),
            (None, Some(email), _) => crate::app::privacy::Subject::Email(email.clone()),
            (None, None, Some(id)) => crate::app::privacy::Subject::Customer(id.clone()),
            (None, None, None) => {
                if !opts.dry_run {
                    self.store.batch_delete(&[(item.pk, item.sk)]).await?;
                }
                return Ok(());
            }
        };
        if p.action == "delete" && record.legal_hold {
            *report.held.entry(merchant.to_string()).or_default() += 1;
            if !opts.dry_run {
                self.store.repurge(&item.pk, &item.sk, opts.as_of + Duration::days(1)).await?;
            }
            return Ok(());
        }
        report.count(merchant, PurgeKind::Privacy, 1);
        if opts.dry_run {
            return Ok(());
        }
        let privacy = crate::app::privacy::Privacy { store: self.store, recordings: self.recordings };
        let m = &record.merchant;
        let queue_copies = p.action != "export";
        let mut status = crate::ports::PrivacyStatus {
            id: p.id.clone(),
            action: p.action.clone(),
            status: "done".into(),
            export_key: None,
            counts: Default::default(),
            updated_at: opts.as_of,
            provider_copies_pending: None,
        };
        if p.action == "export" {
            let doc = privacy.export(m, &subject, opts.as_of).await?;
            let key = format!("exports/{}/{}.json", m.id, p.id);
            self.recordings.put_json(&key, serde_json::to_vec_pretty(&doc).unwrap_or_default()).await?;
            status.export_key = Some(key);
        } else {
            status.counts = privacy.erase(m, &subject, &p.id, opts.as_of).await?;
            // Every identifier the platform sent: the email and the customer id reach carts the
            // phone does not.
            let others = [
                p.email.clone().map(crate::app::privacy::Subject::Email),
                p.customer_id.clone().map(crate::app::privacy::Subject::Customer),
            ];
            for other in others.into_iter().flatten().filter(|o| *o != subject) {
                let more = privacy.erase(m, &other, &p.id, opts.as_of).await?;
                for (kind, n) in more {
                    *status.counts.entry(kind).or_default() += n;
                }
            }
        }
        self.store.put_privacy_status(&m.id, &status, Some(&subject.proof_id())).await?;
        self.store.batch_delete(&[(item.pk, item.sk)]).await?;
        if queue_copies && status.counts.keys().any(|k| k.starts_with("twilio_")) {
            // Twilio's copies: the worker holds Twilio's keys (a failure here leaves them due).
            let work = PrivacyWork { merchant_id: m.id.clone(), id: p.id.clone() };
            if let Err(e) = self.queue.enqueue_provider_copies(&work).await {
                warn!(error = %crate::telemetry::redact(&crate::ports::chain(&e)), "could not queue a deletion's Twilio copies; the next run will");
            }
        }
        Ok(())
    }

    /// A closed account after its grace period (everything, the profile last), or a shop's
    /// customer data at once (`shop/redact`). An account reopened meanwhile keeps its data.
    async fn erase(
        &self,
        item: DueItem,
        merchant: &str,
        opts: &RunOptions,
        merchants: &mut HashMap<String, Option<MerchantRecord>>,
        report: &mut PurgeReport,
    ) -> Result<(), PurgeError> {
        let Ok(id) = MerchantId::parse(merchant) else { return Ok(()) };
        let closure = item.sk == "CLOSURE";
        let record = self.merchant(merchants, merchant).await?.clone();
        let installed = record.as_ref().is_some_and(|r| r.status == crate::domain::outreach::MerchantStatus::Active);
        if !closure && installed {
            // `shop/redact` for a shop that is installed again (or never left): nothing erased.
            warn!(merchant, "shop redaction due for an installed shop: dropped, nothing erased");
            if !opts.dry_run {
                self.store.batch_delete(&[(item.pk, item.sk)]).await?;
            }
            return Ok(());
        }
        if closure {
            if record.as_ref().is_some_and(|r| r.status == crate::domain::outreach::MerchantStatus::Active) {
                if !opts.dry_run {
                    self.store.batch_delete(&[(item.pk, item.sk)]).await?;
                }
                return Ok(());
            }
            let requested = item
                .attrs
                .get("requested_at")
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map_or(opts.as_of, |t| t.with_timezone(&Utc));
            let until = requested + Duration::days(i64::from(opts.closure_grace_days));
            if until > opts.as_of {
                report.deferred += 1;
                if !opts.dry_run {
                    self.store.repurge(&item.pk, &item.sk, until).await?;
                }
                return Ok(());
            }
        }
        let scope = if closure { Erasure::Account } else { Erasure::CustomerData };
        let done = self.erase_pages(&id, scope, opts, report).await?;
        let Some(mut done) = done else {
            // Out of time between two pages: the erasure item stays due and the next run goes
            // on (what this one deleted is no longer in the index, so it re-reads little).
            info!(merchant, closure, "account erasure continues next run");
            return Ok(());
        };
        let mut keys = self.store.erasure_tail(&id, scope).await?;
        let erasure = (item.pk.clone(), item.sk.clone());
        if !keys.contains(&erasure) {
            keys.push(erasure.clone());
        }
        // The profile, then the erasure item, go last: a crash before them leaves the erasure
        // due (the next run finishes it), never half-forgotten.
        keys.sort_by_key(|k| {
            let rank = if *k == erasure {
                2
            } else if k.0.starts_with("M#") && k.1 == "PROFILE" {
                1
            } else {
                0
            };
            (rank, k.0.clone())
        });
        if !opts.dry_run {
            self.store.batch_delete(&keys).await?;
        }
        done += keys.len() as u64;
        info!(merchant, closure, items = done, "account data erased");
        report.count(merchant, PurgeKind::Erasure, done);
        Ok(())
    }

    /// A merchant's erasure, one page of the `tenant` index at a time, each page done before the
    /// next is read, the run's deadline looked at between pages: ledgers' opt-outs kept as
    /// suppression records, the Twilio copies the page's SMS logs and call recordings name
    /// recorded (for the worker to remove, as for a person's deletion), then the page's
    /// partitions deleted. How many items went; `None` when the deadline stopped it (counted,
    /// the run marked incomplete).
    async fn erase_pages(
        &self,
        id: &MerchantId,
        scope: Erasure,
        opts: &RunOptions,
        report: &mut PurgeReport,
    ) -> Result<Option<u64>, PurgeError> {
        let merchant = id.as_str();
        if !opts.dry_run {
            // The objects first (the logs naming them go after), a listing page at a time.
            let prefixes = [
                format!("recordings/{merchant}/"),
                format!("{HELD_PREFIX}recordings/{merchant}/"),
                format!("exports/{merchant}/"),
            ];
            // At least one page a run, so a run that reaches it late still makes progress.
            for prefix in &prefixes {
                while self.recordings.delete_prefix_page(prefix).await?.1 {
                    if opts.deadline.is_some_and(|d| Instant::now() >= d) {
                        info!(merchant, "account erasure's objects continue next run");
                        report.complete = false;
                        return Ok(None);
                    }
                }
            }
        }
        let request = erasure_request(scope);
        let (mut cursor, mut done, mut copies_recorded, mut moved) = (None, 0u64, false, 0usize);
        let finished = loop {
            let (partitions, next) = self.store.erasure_page(id, scope, cursor.clone(), opts.erasure_page).await?;
            let mut copies: Vec<ProviderCopy> = Vec::new();
            let mut keys: Vec<ItemKey> = Vec::new();
            for record in partitions.iter().flatten() {
                copies.extend(crate::app::privacy::provider_copy(record));
                // A consent state goes first, conditionally (below), never in the batch.
                if !matches!(record.data, CustomerData::ConsentState { .. }) {
                    keys.push(record.key.clone());
                }
            }
            if !opts.dry_run {
                // Opt-outs outlive the account (kept as suppression records), and a STOP during
                // the erasure is read again rather than cut off from its ledger.
                let mut held = true;
                for partition in &partitions {
                    held &= crate::app::privacy::erase_states(self.store, partition).await?;
                }
                if !held {
                    moved += 1;
                    if moved > crate::app::privacy::STATE_READS {
                        return Err(PortError::Conflict.into());
                    }
                    continue;
                }
                // Twilio's copies are recorded before the logs naming them go.
                copies.sort();
                copies.dedup();
                if !copies.is_empty() {
                    self.store
                        .put_provider_copies(
                            id,
                            &request,
                            &copies,
                            opts.as_of + crate::app::privacy::PROVIDER_RETRY_AFTER,
                        )
                        .await?;
                    copies_recorded = true;
                }
                self.store.batch_delete(&keys).await?;
                moved = 0;
            }
            done += partitions.iter().map(Vec::len).sum::<usize>() as u64;
            match next {
                None => break true,
                Some(n) => cursor = Some(n),
            }
            if opts.deadline.is_some_and(|d| Instant::now() >= d) {
                break false;
            }
        };
        if copies_recorded {
            // The worker holds Twilio's keys (a failure here leaves them due for the next run).
            let work = PrivacyWork { merchant_id: id.clone(), id: request };
            if let Err(e) = self.queue.enqueue_provider_copies(&work).await {
                warn!(error = %crate::telemetry::redact(&crate::ports::chain(&e)), "could not queue an erasure's Twilio copies; the next run will");
            }
        }
        if finished {
            return Ok(Some(done));
        }
        report.complete = false;
        report.count(merchant, PurgeKind::Erasure, done);
        Ok(None)
    }

    /// One due erasure (`M#…` / `CLOSURE` or `REDACT`) handled on its own, as a run would: for
    /// an operator finishing a large account, and for tests. Its report.
    pub async fn erase_due(&self, item: DueItem, opts: &RunOptions) -> Result<PurgeReport, PurgeError> {
        let mut report = PurgeReport { as_of: Some(opts.as_of), complete: true, ..Default::default() };
        let merchant = item.merchant().unwrap_or("-").to_string();
        self.erase(item, &merchant, opts, &mut HashMap::new(), &mut report).await?;
        Ok(report)
    }

    /// Finishes a re-dating a save left part-way (each item moves once), or drops it when the
    /// merchant's settings no longer call for it (the save never landed, or a later one
    /// lengthened the retention again). What falls due is read by the next run. `false` when
    /// the run's deadline stopped it: it stays due, and the next run goes on (what moved is
    /// marked and moves no further).
    async fn redate(&self, item: &DueItem, opts: &RunOptions) -> Result<bool, PurgeError> {
        let Some((m, job, from)) = self.store.redate_job(&item.pk, &item.sk).await? else { return Ok(true) };
        let current = self.store.get_merchant(&m).await?;
        if current.is_some_and(|r| job.still_applies(&r.merchant.retention_days)) {
            let (moved, stopped) = self.store.redate(&m, &job, from, opts.erasure_page, opts.deadline).await?;
            if let Some(at) = stopped {
                self.store.redate_stopped_at(&m, &job.id, &at).await?;
                info!(merchant = %m, moved, "a re-dating continues next run");
                return Ok(false);
            }
            info!(merchant = %m, moved, "an unfinished re-dating finished");
        } else {
            info!(merchant = %m, "an unfinished re-dating no longer applies: dropped");
        }
        self.store.redate_done(&m, &job.id).await?;
        Ok(true)
    }

    /// A whole ledger is due: it goes only if nothing happened for that phone at that merchant
    /// for `consent_records` days; otherwise its date moves to that many days after the last
    /// thing that did.
    async fn ledger(
        &self,
        item: DueItem,
        merchant: &str,
        opts: &RunOptions,
        merchants: &mut HashMap<String, Option<MerchantRecord>>,
        report: &mut PurgeReport,
    ) -> Result<(), PurgeError> {
        let days = self
            .merchant(merchants, merchant)
            .await?
            .as_ref()
            .map_or(DEFAULT_RETENTION_DAYS, |r| r.merchant.retention_days.consent_records);
        if let Some(last) = self.store.last_activity(&item.pk).await? {
            let until = last + Duration::days(i64::from(days));
            if until > opts.as_of {
                report.deferred += 1;
                if !opts.dry_run {
                    self.store.repurge(&item.pk, &item.sk, until).await?;
                }
                return Ok(());
            }
        }
        let keys = self.store.prefix_keys(&item.pk, &item.sk).await?;
        if !opts.dry_run {
            // An opt-out outlives its ledger: its suppression record is kept first.
            if let Some((m, phone, channel, state)) = self.store.ledger_head(&item.pk, &item.sk).await?
                && let Some(sup) = state.suppression()
            {
                match self.store.keep_suppression(&m, &phone, channel, &sup, state.seq).await {
                    Ok(()) => {}
                    // Contended (an append this very moment): the ledger waits for a later run.
                    Err(PortError::Conflict) => {
                        report.deferred += 1;
                        return Ok(());
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            // The state first, at the sequence read: an append in between keeps the ledger.
            let seq: u64 = item.attrs.get("seq").and_then(|s| s.parse().ok()).unwrap_or(0);
            if !self.store.delete_state_at(&item.pk, &item.sk, seq).await? {
                report.deferred += 1;
                return Ok(());
            }
            let entries: Vec<(String, String)> = keys
                .iter()
                .filter(|(_, sk)| *sk != item.sk)
                .filter(|(_, sk)| sk.rsplit('#').next().and_then(|n| n.parse::<u64>().ok()).is_some_and(|n| n <= seq))
                .cloned()
                .collect();
            self.store.batch_delete(&entries).await?;
        }
        report.count(merchant, PurgeKind::ConsentLedger, keys.len() as u64);
        Ok(())
    }
}
