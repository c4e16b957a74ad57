//! `dlq replay`: dead-lettered work goes back to its source queue, one message at a time. Each
//! message is received from the dead-letter queue, described (phones masked), sent to its source
//! queue with the same body and message attributes, and deleted from the dead-letter queue only
//! once that send succeeded. The worker's step claims make a replay safe: a step that was sent
//! is not sent again. A dry run only looks: every message it received is made visible again.

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};
use callfy_shared::MerchantId;
use callfy_shared::adapters::queue::QueuedWork;
use callfy_shared::adapters::store::Store;
use callfy_shared::config::local_defaults;
use callfy_shared::domain::merchant::Channel;
use std::collections::{HashMap, HashSet};
use std::io::Write;

/// How long a received message stays hidden while it is handled (a dry run keeps every message
/// it listed hidden until it is done, so the listing does not come round to them again).
const REPLAY_VISIBILITY_SECONDS: i32 = 60;
const LIST_VISIBILITY_SECONDS: i32 = 300;

#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error("SQS {op} on {queue} failed: {message}")]
    Sqs { op: &'static str, queue: String, message: String },
    #[error("cannot find queue {name}: {message} (set {var})")]
    Unresolved { name: String, var: &'static str, message: String },
    #[error("writing the progress failed: {0}")]
    Output(#[from] std::io::Error),
}

/// The dead-letter queues `dlq replay` knows, by the names operators use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeadLetterQueue {
    /// OutreachDeadLetterQueue → OutreachQueue (flow steps, queued opt-outs).
    #[value(name = "outreach-dlq")]
    Outreach,
    /// RecordingsDeadLetterQueue → RecordingsQueue (recording copies).
    #[value(name = "recordings-dlq")]
    Recordings,
}

impl DeadLetterQueue {
    pub const ALL: [Self; 2] = [Self::Outreach, Self::Recordings];

    pub fn name(self) -> &'static str {
        match self {
            Self::Outreach => "outreach-dlq",
            Self::Recordings => "recordings-dlq",
        }
    }

    /// The environment variables naming (dead-letter queue URL, source queue URL).
    pub fn env_vars(self) -> (&'static str, &'static str) {
        match self {
            Self::Outreach => ("OUTREACH_DLQ_URL", "OUTREACH_QUEUE_URL"),
            Self::Recordings => ("RECORDINGS_DLQ_URL", "RECORDINGS_QUEUE_URL"),
        }
    }

    /// The local defaults `callfy-local` creates (dead-letter queue name, source queue name).
    fn local_names(self) -> (&'static str, &'static str) {
        match self {
            Self::Outreach => (local_defaults::DLQ_NAME, local_defaults::QUEUE_NAME),
            Self::Recordings => (local_defaults::RECORDINGS_DLQ_NAME, local_defaults::RECORDINGS_QUEUE_NAME),
        }
    }
}

/// A dead-letter queue and the queue its messages came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuePair {
    pub name: &'static str,
    pub dlq_url: String,
    pub source_url: String,
}

/// The URLs from the environment (`OUTREACH_DLQ_URL` and `OUTREACH_QUEUE_URL`, or
/// `RECORDINGS_DLQ_URL` and `RECORDINGS_QUEUE_URL`), else the queues `callfy-local` creates.
pub async fn resolve(sqs: &Client, which: DeadLetterQueue) -> Result<QueuePair, DlqError> {
    let (dlq_var, source_var) = which.env_vars();
    let (dlq_name, source_name) = which.local_names();
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let dlq_url = match var(dlq_var) {
        Some(url) => url,
        None => queue_url(sqs, dlq_name, dlq_var).await?,
    };
    let source_url = match var(source_var) {
        Some(url) => url,
        None => queue_url(sqs, source_name, source_var).await?,
    };
    Ok(QueuePair { name: which.name(), dlq_url, source_url })
}

/// The source queue's URL alone (`OUTREACH_QUEUE_URL` or `RECORDINGS_QUEUE_URL`, else the
/// queue `callfy-local` creates).
pub async fn source_url(sqs: &Client, which: DeadLetterQueue) -> Result<String, DlqError> {
    let (_, source_var) = which.env_vars();
    let (_, source_name) = which.local_names();
    match std::env::var(source_var).ok().filter(|v| !v.is_empty()) {
        Some(url) => Ok(url),
        None => queue_url(sqs, source_name, source_var).await,
    }
}

async fn queue_url(sqs: &Client, name: &str, var: &'static str) -> Result<String, DlqError> {
    let out = sqs.get_queue_url().queue_name(name).send().await.map_err(|e| DlqError::Unresolved {
        name: name.to_string(),
        var,
        message: sqs_error(&e),
    })?;
    Ok(out.queue_url().unwrap_or_default().to_string())
}

/// What a run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplaySummary {
    /// Messages received from the dead-letter queue and described.
    pub seen: usize,
    /// Sent to the source queue and deleted from the dead-letter queue.
    pub replayed: usize,
    /// Not Callfy work: left in the dead-letter queue.
    pub left: usize,
}

/// Replays (or, with `dry_run`, lists) every message of `pair`'s dead-letter queue, writing one
/// line per message to `out`. `store` names the channel of a flow step (from the merchant's flow).
pub async fn replay(
    sqs: &Client,
    store: Option<&Store>,
    pair: &QueuePair,
    dry_run: bool,
    out: &mut dyn Write,
) -> Result<ReplaySummary, DlqError> {
    let err = |op: &'static str, queue: &str| {
        let queue = queue.to_string();
        move |e: String| DlqError::Sqs { op, queue, message: e }
    };
    let total = approximate_count(sqs, &pair.dlq_url).await?;
    writeln!(
        out,
        "{}: {total} message(s) waiting{}",
        pair.name,
        if dry_run { " (dry run: nothing is moved)" } else { "" }
    )?;
    let mut summary = ReplaySummary::default();
    let mut seen_ids = HashSet::new();
    // Handles of messages to make visible again before returning (dry run, or not Callfy work).
    let mut hidden: Vec<String> = Vec::new();
    let mut channels = ChannelLookup { store, merchants: HashMap::new() };
    let result: Result<(), DlqError> = async {
        loop {
            let received = sqs
                .receive_message()
                .queue_url(&pair.dlq_url)
                .max_number_of_messages(1)
                .wait_time_seconds(1)
                .visibility_timeout(if dry_run { LIST_VISIBILITY_SECONDS } else { REPLAY_VISIBILITY_SECONDS })
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .message_attribute_names("All")
                .send()
                .await
                .map_err(|e| err("ReceiveMessage", &pair.dlq_url)(sqs_error(&e)))?;
            let Some(message) = received.messages.unwrap_or_default().into_iter().next() else { break };
            let id = message.message_id().unwrap_or_default().to_string();
            let handle = message.receipt_handle().unwrap_or_default().to_string();
            if !seen_ids.insert(id) {
                // The listing came round to a message it already showed.
                hidden.push(handle);
                break;
            }
            summary.seen += 1;
            let n = summary.seen;
            let of = total.max(n);
            let body = message.body().unwrap_or_default();
            let work = serde_json::from_str::<QueuedWork>(body).ok();
            let what = match &work {
                Some(w) => describe(w, &mut channels).await,
                None => format!("not Callfy work ({} bytes)", body.len()),
            };
            let meta = receive_meta(&message);
            if dry_run || work.is_none() {
                hidden.push(handle);
                if work.is_none() {
                    summary.left += 1;
                    writeln!(out, "left {n}/{of}: {what}{meta}: stays in {}", pair.name)?;
                } else {
                    writeln!(out, "[{n}/{of}] {what}{meta}")?;
                }
                continue;
            }
            let sent = sqs
                .send_message()
                .queue_url(&pair.source_url)
                .message_body(body)
                .set_message_attributes(message.message_attributes().cloned())
                .send()
                .await;
            if let Err(e) = sent {
                hidden.push(handle);
                return Err(err("SendMessage", &pair.source_url)(sqs_error(&e)));
            }
            sqs.delete_message().queue_url(&pair.dlq_url).receipt_handle(&handle).send().await.map_err(|e| {
                err("DeleteMessage", &pair.dlq_url)(format!(
                    "{} (the message was replayed and is still in the dead-letter queue; replaying it again is harmless)",
                    sqs_error(&e)
                ))
            })?;
            summary.replayed += 1;
            writeln!(out, "replayed {}/{of}: {what}{meta}", summary.replayed)?;
        }
        Ok(())
    }
    .await;
    // Whatever happened, what was only looked at goes back to the queue.
    for handle in hidden {
        sqs.change_message_visibility()
            .queue_url(&pair.dlq_url)
            .receipt_handle(handle)
            .visibility_timeout(0)
            .send()
            .await
            .map_err(|e| err("ChangeMessageVisibility", &pair.dlq_url)(sqs_error(&e)))?;
    }
    result?;
    if dry_run {
        writeln!(out, "{}: {} message(s) listed, none moved", pair.name, summary.seen)?;
    } else {
        writeln!(out, "{}: {} replayed, {} left", pair.name, summary.replayed, summary.left)?;
    }
    Ok(summary)
}

/// "QueueDoesNotExist: The specified queue does not exist." for what SQS answered; the chain of
/// causes for what never got an answer (a connection refused, no credentials).
fn sqs_error<E, R>(e: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match e.as_service_error() {
        Some(service) => {
            format!("{}: {}", service.code().unwrap_or("unknown"), service.message().unwrap_or("no message"))
        }
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(cause) = source {
                text.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            text
        }
    }
}

async fn approximate_count(sqs: &Client, url: &str) -> Result<usize, DlqError> {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(A::ApproximateNumberOfMessages)
        .send()
        .await
        .map_err(|e| DlqError::Sqs { op: "GetQueueAttributes", queue: url.to_string(), message: sqs_error(&e) })?;
    Ok(out.attributes().and_then(|a| a.get(&A::ApproximateNumberOfMessages)).and_then(|v| v.parse().ok()).unwrap_or(0))
}

/// "; received 11 times, first 2026-11-28T19:00:00Z, queued 2026-11-28T18:59:59Z", from what
/// SQS reports.
fn receive_meta(message: &Message) -> String {
    let attr = |k: MessageSystemAttributeName| message.attributes().and_then(|a| a.get(&k)).cloned();
    let time = |ms: Option<String>| {
        ms.and_then(|v| v.parse::<i64>().ok())
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
    };
    let mut parts = Vec::new();
    if let Some(n) = attr(MessageSystemAttributeName::ApproximateReceiveCount) {
        parts.push(format!("received {n} times"));
    }
    if let Some(t) = time(attr(MessageSystemAttributeName::ApproximateFirstReceiveTimestamp)) {
        parts.push(format!("first received {t}"));
    }
    if let Some(t) = time(attr(MessageSystemAttributeName::SentTimestamp)) {
        parts.push(format!("queued {t}"));
    }
    if parts.is_empty() { String::new() } else { format!("; {}", parts.join(", ")) }
}

/// The channel of a merchant's flow step, read once per merchant.
struct ChannelLookup<'a> {
    store: Option<&'a Store>,
    merchants: HashMap<MerchantId, Option<Vec<Channel>>>,
}

impl ChannelLookup<'_> {
    async fn channel(&mut self, m: &MerchantId, step: u8) -> Option<Channel> {
        if !self.merchants.contains_key(m) {
            let flow = match self.store {
                Some(store) => store
                    .get_merchant(m)
                    .await
                    .ok()
                    .flatten()
                    .map(|r| r.merchant.flow.iter().map(|s| s.channel).collect()),
                None => None,
            };
            self.merchants.insert(m.clone(), flow);
        }
        self.merchants.get(m)?.as_ref()?.get(usize::from(step)).copied()
    }
}

/// One line about a piece of queued work, with no phone number in full.
async fn describe(work: &QueuedWork, channels: &mut ChannelLookup<'_>) -> String {
    match work {
        QueuedWork::Step(job) => {
            let channel = channels.channel(&job.merchant_id, job.step).await.map_or("channel unknown", Channel::as_str);
            format!(
                "flow step: merchant {}, cart {}, step {} ({channel}), due {}",
                job.merchant_id,
                job.cart_token,
                u32::from(job.step) + 1,
                job.due_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )
        }
        QueuedWork::Inbound { inbound } => format!(
            "inbound SMS {} from {}, received {}",
            inbound.message_sid,
            inbound.from.masked(),
            inbound.received_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ),
        QueuedWork::Recording { recording } => format!(
            "recording copy: merchant {}, call {}, recording {}",
            recording.merchant_id, recording.call_sid, recording.recording_sid
        ),
        QueuedWork::Privacy { privacy } => {
            format!("data-subject request: merchant {}, request {}", privacy.merchant_id, privacy.id)
        }
        QueuedWork::Closure { closure } => format!("closed account's queued steps: merchant {closure}"),
        QueuedWork::ProviderCopies { provider_copies: p } => {
            format!("Twilio copies of a deletion: merchant {}, request {}", p.merchant_id, p.id)
        }
        QueuedWork::KeyOptOut { key_opt_out: o } => format!(
            "{} opt-out ({}): merchant {}, phone {}, call {}, at {}",
            if o.spoken.is_some() { "spoken" } else { "key-9" },
            o.channels.iter().map(|c| c.as_str()).collect::<Vec<_>>().join("+"),
            o.merchant_id,
            o.phone.masked(),
            o.call_sid,
            o.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ),
        QueuedWork::Webhook { webhook: w } => format!(
            "platform webhook: {:?}, merchant {}, received {}",
            w.platform,
            w.path_merchant.as_deref().unwrap_or("by shop domain"),
            w.received_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ),
    }
}
