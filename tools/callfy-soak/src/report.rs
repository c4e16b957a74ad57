//! The campaign's figures as Markdown, printed and kept in BENCHMARKS.md's own section.

use crate::checks::Verdict;
use crate::driver::KindCounts;
use crate::traffic::Kind;
use crate::{Args, Throughput};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

pub const HEADING: &str = "## Load and fault campaign";

pub struct AwsFaults {
    pub dynamodb_calls: u64,
    pub dynamodb_throttled: u64,
    pub sqs_calls: u64,
    pub sqs_5xx: u64,
    /// Writes that apply once, made while faults were on, and those whose answer was lost.
    pub dynamodb_once_calls: u64,
    pub lost_transact: u64,
    pub lost_conditional: u64,
    pub sqs_delete_calls: u64,
    pub lost_sqs_delete: u64,
    pub lost_as_timeout: u64,
    pub token_replays: u64,
    /// Writes made while faults were on, those followed by a kill, and the kills by operation.
    pub write_calls: u64,
    pub kills: u64,
    pub kills_released: u64,
    pub kills_held_ms: u64,
    pub kills_by_op: Vec<(String, u64)>,
}

pub struct TwilioFaults {
    pub calls: u64,
    pub too_many: u64,
    pub server_errors: u64,
    pub timeouts: u64,
    pub accept_then_hang: u64,
    pub accepted: u64,
}

/// The voice agent's `PostToConnection` calls while the campaign ran, and those faulted.
pub struct RelayFaults {
    pub posts: u64,
    pub delivered_but_failed: u64,
    pub refused: u64,
}

pub struct Polls {
    pub received: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub errors: u64,
    /// Worker invocations ended by the function's timeout.
    pub timed_out: u64,
}

pub struct Figures<'a> {
    pub args: &'a Args,
    pub carts: usize,
    pub platforms: Vec<(&'static str, usize)>,
    pub counts: BTreeMap<Kind, KindCounts>,
    pub aws: AwsFaults,
    pub twilio: TwilioFaults,
    pub relay: RelayFaults,
    pub polls: Polls,
    pub under_faults: Throughput,
    pub total_seconds: f64,
    pub drained: bool,
    pub dead_letters: usize,
    pub messages: usize,
    pub verdict: Verdict,
    pub notes: Vec<String>,
    /// DynamoDB and SQS operations that reached moto, most frequent first.
    pub ops: Vec<(String, u64)>,
}

fn pct(n: u64, of: u64) -> String {
    if of == 0 { "0 %".into() } else { format!("{:.1} %", n as f64 * 100.0 / of as f64) }
}

fn ok(pass: bool) -> &'static str {
    if pass { "ok" } else { "**FAILED**" }
}

impl Figures<'_> {
    pub fn render(&self) -> String {
        let a = self.args;
        let v = &self.verdict;
        let mut s = String::new();
        let _ = writeln!(s, "{HEADING}\n");
        let _ = writeln!(
            s,
            "`{}` (seed {}), {} on this machine ({} s in all). Faults while on: {:.0} % of DynamoDB calls \
             throttled, {:.0} % of SQS calls 5xx, {:.1} % of DynamoDB writes that apply once and {:.1} % of SQS \
             deletes applied with their answer lost, {:.1} % of writes followed by a kill of the function, {:.0} % of Twilio calls 429 / 5xx / timeout / accept-then-hang \
             (Twilio timeout {} ms), {:.0} % of the voice agent's relay posts refused or delivered with their answer lost. {:.0} % of deliveries redelivered; {} senders, {} worker pollers, a {}-step flow; \
             {:.0} % of phones with a STOP/START storm, {:.0} % with a data-subject deletion; a retention run {}.\n",
            a.command,
            a.seed,
            chrono::Utc::now().format("%Y-%m-%d"),
            self.total_seconds.round(),
            a.dynamodb_faults * 100.0,
            a.sqs_faults * 100.0,
            a.dynamodb_lost_answers * 100.0,
            a.sqs_lost_answers * 100.0,
            a.kills * 100.0,
            a.twilio_faults * 100.0,
            a.twilio_timeout_ms,
            if a.agent_calls { a.relay_faults * 100.0 } else { 0.0 },
            a.redeliver * 100.0,
            a.senders,
            a.pollers,
            a.flow_steps,
            a.storms * 100.0,
            a.deletions * 100.0,
            if a.purge_every_seconds == 0 {
                "never".to_string()
            } else {
                format!("every {} s (purger timeout {} s)", a.purge_every_seconds, a.purger_timeout_seconds)
            },
        );
        let _ = writeln!(
            s,
            "How it works: `callfy-local` runs in-process with its AWS SDK pointed at a fault proxy in front of moto \
             (throttling answers and SQS 5xx are given instead of forwarding, so nothing of a refused call is applied; \
             a lost answer is the opposite: a `TransactWriteItems`, a conditional `UpdateItem` / `PutItem` or an SQS \
             `DeleteMessage` is forwarded and applied by moto, and the caller gets a 500 or, after 1.5 s, a 504 instead \
             of moto's answer; an SDK retry of a committed transaction, same `ClientRequestToken`, is answered with \
             success as DynamoDB answers it, since moto keeps no tokens; a kill is a write applied by moto whose answer \
             is held for good: the call ends only when its caller gives up (the SDK's stalled-stream protection \
             fails it after about 5 s, so it is in effect a lost answer after a stall) or the function's timeout ends \
             the invocation, as Lambda does (a worker poll is dropped after the worker's timeout, its jobs coming \
             back after the queue's visibility timeout; a webhook's platform stops waiting after its own timeout and \
             retries); the table says how many ended which way) \
             and its Twilio API base pointed at a fault proxy in front of the sandbox (429 and 5xx are given instead of \
             forwarding; a timeout hangs past the worker's Twilio timeout without forwarding; accept-then-hang forwards, \
             Twilio records the message (or places the call), and the answer never arrives). Carts go to the four platforms, each delivery \
             signed as its platform signs it and retried after a 5xx as a platform would; STOPs (signed inbound SMS) and \
             orders come on timers of their own within the race window after a cart's first delivery. Within the race \
             window after a cart's last delivery, a share of phones text a storm of keywords, one after another (each \
             answered before the next), STOP-type (\"STOP\", \"Stop all\", \"unsubscribe\", ...) and START-type \
             (\"START\", \"unstop\", ...) mixed, a quarter delivered twice with the same MessageSid; a STOP-type keyword \
             counts as acknowledged when answered 200, a START as honoured when the answer confirms the re-subscription \
             (a START answered with nothing may still be applied by its queued copy, so it fixes nothing). Another share \
             get a data-subject deletion (the consent API's route; for the Shopify merchant a signed `customers/redact`, \
             carried out by the worker, whose status is then read until done). The Shopify merchant's second \
             step is a call by the voice agent (scripted model): the sandbox picks up every call (the signed answer \
             webhook, ConversationRelay opened to the agent, `setup`), and the shopper asks for the link twice, says \
             \"Please stop calling me.\" or \"Stop.\", or declines; while the faults are on, a share of the agent's \
             `PostToConnection` calls are refused or delivered with their answer lost. The retention purge runs in-process on \
             a timer, faults on or off, each run ended at the purger's timeout if it has not returned. Then the faults \
             stop, the last carts are sent (their answers must hold no 5xx) and the queue is drained, dead-letter queue \
             included. The checks read the table (one scan of the step records), the sandbox's records and the \
             dead-letter queue; a send counts as after an acknowledged STOP or order when its step claim reached the \
             store after our answer to it (claims are seen at the proxy), and as in flight when it was claimed before \
             the answer and reached Twilio after. moto runs as `tools/callfy-soak/moto_soak.py`: `scripts/moto_server.py` \
             with these changes: a DynamoDB transaction backs up only the items it names, instead of deep-copying the \
             whole table once per item (which made stock moto grow by gigabytes a minute under this load), and a Query \
             starts from its partition or from an index of the GSI's hash key, instead of sorting the whole table \
             (which slowed the run as carts accumulated; `CALLFY_MOTO_CHECK_QUERIES=1` checks every answer against \
             stock moto's); and an answer that carries items is written by moto's own DynamoDB JSON encoder rather \
             than moto 5.2's model-driven serializer, a projection keeps the stored attributes and a GSI page is \
             answered from the ordered index without moto's extra passes (docs/performance.md). The functions' AWS calls go through their own HTTP client (`adapters::http`). Every log \
             line the in-process functions write (their JSON tracing output, at info) goes to a file, and no raw phone \
             number of the campaign may appear in one: E.164, without its '+', or as the national number.\n"
        );
        let per: Vec<String> = self.platforms.iter().map(|(n, c)| format!("{n} {c}")).collect();
        let _ = writeln!(s, "{} carts ({}).\n", self.carts, per.join(", "));
        let _ = writeln!(s, "| requests | deliveries | attempts | 2xx (duplicate) | 4xx | 5xx | no answer | gave up |");
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
        let mut webhooks = 0;
        for (kind, c) in &self.counts {
            if !matches!(kind, Kind::Consent | Kind::Stop | Kind::Keyword | Kind::Delete) {
                webhooks += c.deliveries;
            }
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} ({}) | {} | {} | {} | {} |",
                kind_name(*kind),
                c.deliveries,
                c.attempts,
                c.ok,
                c.duplicate,
                c.client_error,
                c.server_error,
                c.transport_error,
                c.gave_up
            );
        }
        let _ = writeln!(s, "\nWebhook deliveries in all: **{webhooks}**.\n");
        let t = &self.twilio;
        let _ = writeln!(s, "| faults injected (while on) | calls | faulted |");
        let _ = writeln!(s, "|---|---|---|");
        let _ = writeln!(
            s,
            "| DynamoDB throttling (`ThrottlingException`, `ProvisionedThroughputExceededException`) | {} | {} ({}) |",
            self.aws.dynamodb_calls,
            self.aws.dynamodb_throttled,
            pct(self.aws.dynamodb_throttled, self.aws.dynamodb_calls)
        );
        let _ = writeln!(
            s,
            "| SQS 500/503 | {} | {} ({}) |",
            self.aws.sqs_calls,
            self.aws.sqs_5xx,
            pct(self.aws.sqs_5xx, self.aws.sqs_calls)
        );
        let w = &self.aws;
        let lost_ddb = w.lost_transact + w.lost_conditional;
        let _ = writeln!(
            s,
            "| DynamoDB lost answers (applied, then 500 / timeout): `TransactWriteItems` {}, conditional \
             `UpdateItem`/`PutItem` {}; SDK retries answered by token {} | {} | {} ({}) |",
            w.lost_transact,
            w.lost_conditional,
            w.token_replays,
            w.dynamodb_once_calls,
            lost_ddb,
            pct(lost_ddb, w.dynamodb_once_calls)
        );
        let _ = writeln!(
            s,
            "| SQS `DeleteMessage` lost answers (applied, then 500 / timeout); {} of all lost answers as a timeout | {} | {} ({}) |",
            w.lost_as_timeout,
            w.sqs_delete_calls,
            w.lost_sqs_delete,
            pct(w.lost_sqs_delete, w.sqs_delete_calls)
        );
        let faulted = t.too_many + t.server_errors + t.timeouts + t.accept_then_hang;
        let _ = writeln!(
            s,
            "| Twilio: 429 {}, 500/503 {}, timeout {}, accept-then-hang {} | {} | {} ({}) |",
            t.too_many,
            t.server_errors,
            t.timeouts,
            t.accept_then_hang,
            t.calls,
            faulted,
            pct(faulted, t.calls)
        );
        let r = &self.relay;
        let _ = writeln!(
            s,
            "| voice agent `PostToConnection`: delivered with the answer lost {}, refused {} | {} | {} ({}) |",
            r.delivered_but_failed,
            r.refused,
            r.posts,
            r.delivered_but_failed + r.refused,
            pct(r.delivered_but_failed + r.refused, r.posts)
        );
        let by_op: Vec<String> = w.kills_by_op.iter().map(|(op, n)| format!("{op} {n}")).collect();
        let _ = writeln!(
            s,
            "| functions killed after an applied DynamoDB / SQS write ({}); worker invocations ended by their timeout {}; \
             callers gone before the end {} (held {:.1} s on average) | {} | {} ({}) |\n",
            if by_op.is_empty() { "none".to_string() } else { by_op.join(", ") },
            self.polls.timed_out,
            w.kills_released,
            if w.kills_released == 0 { 0.0 } else { w.kills_held_ms as f64 / 1000.0 / w.kills_released as f64 },
            w.write_calls,
            w.kills,
            pct(w.kills, w.write_calls)
        );
        let f = &self.under_faults;
        let _ = writeln!(s, "| throughput under faults ({:.0} s) | count | per second |", f.seconds);
        let _ = writeln!(s, "|---|---|---|");
        let _ = writeln!(
            s,
            "| worker jobs taken from the queue | {} | {:.2} |",
            f.jobs,
            Throughput::per_second(f.jobs, f.seconds)
        );
        let _ = writeln!(
            s,
            "| messages and calls accepted by Twilio | {} | {:.2} |",
            f.sends,
            Throughput::per_second(f.sends, f.seconds)
        );
        let _ = writeln!(
            s,
            "| webhook deliveries | {} | {:.2} |\n",
            f.webhooks,
            Throughput::per_second(f.webhooks, f.seconds)
        );
        let _ = writeln!(
            s,
            "The worker took {} jobs in all ({} done, {} handed back for a retry, {} polls failed at SQS); Twilio \
             accepted {} messages and calls, {} of them for a cart.\n",
            self.polls.received, self.polls.succeeded, self.polls.failed, self.polls.errors, t.accepted, self.messages
        );
        let ops: Vec<String> = self.ops.iter().take(8).map(|(op, n)| format!("{op} {n}")).collect();
        let _ = writeln!(s, "Calls that reached moto, most frequent first: {}.\n", ops.join(", "));
        let _ = writeln!(s, "| check | result | |");
        let _ = writeln!(s, "|---|---|---|");
        let _ = writeln!(
            s,
            "| every due step sent exactly once or dead-lettered | {} due: {} sent once, {} dead-lettered, {} lost | {} |",
            v.due,
            v.due_sent_once,
            v.due_dead_lettered,
            v.lost.len(),
            ok(v.lost.is_empty())
        );
        let _ = writeln!(
            s,
            "| duplicates (same cart and step; same number and body) | {}; {} | {} |",
            v.duplicate_steps.len(),
            v.duplicate_bodies,
            ok(v.duplicate_steps.is_empty() && v.duplicate_bodies == 0)
        );
        let _ = writeln!(
            s,
            "| sends claimed after an acknowledged STOP or order | {} (in flight at the answer, claimed before it: {}) | {} |",
            v.claimed_after_ack.len(),
            v.in_flight_at_ack,
            ok(v.claimed_after_ack.is_empty())
        );
        let _ = writeln!(
            s,
            "| steps of carts with a racing STOP or order, a storm or a deletion | {} sent, {} not sent | |",
            v.race_sent, v.race_not_sent
        );
        let pending: Vec<String> = v.deletions_provider_pending.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let _ = writeln!(
            s,
            "| STOP/START storms: each phone's texts consent at the end is what its last acknowledged keyword says | \
             {} phones, {} keywords ({} replays, {} answered 2xx): {} STOP-type acknowledged, {} STARTs confirmed; \
             {} phones with no keyword of certain effect; {} wrong | {} |",
            v.storm_phones,
            v.storm_keywords,
            v.storm_replays,
            v.storm_acked,
            v.storm_stops_acked,
            v.storm_starts_honoured,
            v.storm_undetermined,
            v.storm_state_wrong.len(),
            ok(v.storm_state_wrong.is_empty())
        );
        let _ = writeln!(
            s,
            "| acknowledged STOPs (racing or storm) keep their suppression records: calls always, texts while opted out \
             (through the retention runs) | {} phones, {} records found, {} missing or wrong | {} |",
            v.stop_phones,
            v.suppressions_found,
            v.suppression_wrong.len(),
            ok(v.suppression_wrong.is_empty())
        );
        let _ = writeln!(
            s,
            "| data-subject deletions done, no item left holding the phone, nothing claimed after | {} sent ({} as \
             Shopify redactions), {} acknowledged, {} done (Twilio copies still pending: {}); {} not done, {} phones still in the table, {} \
             sends claimed after (claimed between a redaction's answer and its being done: {}) | {} |",
            v.deletions,
            v.deletions_shopify,
            v.deletions_acked,
            v.deletions_done,
            if pending.is_empty() { "none".to_string() } else { pending.join(", ") },
            v.deletions_not_done.len(),
            v.deleted_phone_kept.len(),
            v.claimed_after_deletion.len(),
            v.claimed_before_redaction_done,
            ok(v.deletions_not_done.is_empty()
                && v.deleted_phone_kept.is_empty()
                && v.claimed_after_deletion.is_empty())
        );
        let _ = writeln!(
            s,
            "| retention runs each leave their audit record (a failed one too) | {} runs ({} under faults): {} \
             complete, {} stopped at their deadline, {} failed, {} killed at the timeout; {} items purged; {} \
             without their record | {} |",
            v.purge_runs,
            v.purge_under_faults,
            v.purge_complete,
            v.purge_incomplete,
            v.purge_failed,
            v.purge_timed_out,
            v.purge_items,
            v.purge_unaudited.len(),
            ok(v.purge_unaudited.is_empty())
        );
        let c = &v.calls;
        let scripts: Vec<String> = crate::calls::Script::ALL
            .iter()
            .map(|k| format!("{} {}", k.name(), c.by_script.get(k).copied().unwrap_or_default()))
            .collect();
        let _ = writeln!(
            s,
            "| voice agent calls: every opt-out said is recorded (calls opted out and suppressed, texts too for \
             \"stop\"), whatever the relay answered; a link asked for twice is texted once | {} calls placed, {} \
             connected to the agent ({}; {} ended by the agent before the shopper had said it all, {} with an error on the shopper's side); {} opt-outs said, {} confirmed by \
             the agent, {} not recorded; {} calls asked twice for the link, {} link texts, {} texted more than once \
             | {} |",
            c.placed,
            c.connected,
            scripts.join(", "),
            c.ended_early,
            c.errors,
            c.opt_outs_said,
            c.opt_outs_confirmed,
            c.opt_outs_not_recorded.len(),
            c.link_calls,
            c.link_texts,
            c.link_texted_twice.len(),
            ok(c.opt_outs_not_recorded.is_empty() && c.link_texted_twice.is_empty())
        );
        let _ = writeln!(
            s,
            "| messages without consent | {} | {} |",
            v.sent_without_consent.len(),
            ok(v.sent_without_consent.is_empty())
        );
        let _ = writeln!(
            s,
            "| 5xx to valid requests after the faults stopped | {} | {} |",
            v.post_fault_5xx,
            ok(v.post_fault_5xx == 0)
        );
        let _ = writeln!(s, "| valid requests refused (4xx) | {} | {} |", v.refused_4xx, ok(v.refused_4xx == 0));
        let _ = writeln!(
            s,
            "| acknowledged orders applied; acknowledged STOPs applied | {} not; {} not | {} |",
            v.orders_not_applied,
            v.stops_not_applied,
            ok(v.orders_not_applied == 0 && v.stops_not_applied == 0)
        );
        let _ = writeln!(
            s,
            "| requests breaking Twilio's contract | {} | {} |",
            v.contract_violations,
            ok(v.contract_violations == 0)
        );
        let _ = writeln!(
            s,
            "| function log lines with a raw phone number of the campaign | {} of {} lines | {} |",
            v.log_phone_lines,
            v.log_lines,
            ok(v.log_phone_lines == 0)
        );
        let _ = writeln!(
            s,
            "| queue drained (dead-letter queue: {}) | {} | {} |",
            self.dead_letters,
            self.drained,
            ok(self.drained)
        );
        if !v.skip_reasons.is_empty() {
            let reasons: Vec<String> = v.skip_reasons.iter().map(|(r, n)| format!("`{r}` {n}")).collect();
            let _ = writeln!(s, "\nSteps not sent, by recorded state and reason: {}.", reasons.join(", "));
        }
        if !v.purge_errors.is_empty() {
            let _ = writeln!(
                s,
                "\nRetention runs that failed (each with its audit record): {}.",
                v.purge_errors.join("; ")
            );
        }
        if !v.sent_after.is_empty() {
            let reasons: Vec<String> = v.sent_after.iter().map(|(r, n)| format!("{r} ({n})")).collect();
            let _ =
                writeln!(s, "\nSteps sent after a failed attempt, by that attempt's reason: {}.", reasons.join(", "));
        }
        if !c.opt_outs_not_recorded.is_empty() {
            let calls: Vec<String> =
                c.opt_outs_not_recorded.iter().take(5).map(|(sid, why)| format!("{sid}: {why}")).collect();
            let _ = writeln!(s, "\nOpt-outs said on agent calls and not recorded: {}.", calls.join("; "));
        }
        let failures = v.failures();
        if failures.is_empty() && self.drained {
            let _ = writeln!(s, "\n**Every check passed.**");
        } else {
            let _ = writeln!(s, "\n**Failed:** {}.", failures.join("; "));
            if !v.recorded_as_other_step.is_empty() {
                let _ = writeln!(
                    s,
                    "- {} of the lost steps are recorded as sent with the message of an earlier step of the same cart \
                     (after an unanswered attempt, the lookup at Twilio took that message for this step's)",
                    v.recorded_as_other_step.len()
                );
            }
            for (cart, step, rec) in v.lost.iter().take(10) {
                let rec = rec.as_ref().map(|r| {
                    format!(
                        "state `{}`, reason {:?}, error {:?}, message {}",
                        r.state,
                        r.reason.as_deref().unwrap_or("-"),
                        r.error_code,
                        r.message_sid.as_deref().unwrap_or("-")
                    )
                });
                let _ = writeln!(s, "- lost: cart {cart} step {step}: {}", rec.unwrap_or_else(|| "no record".into()));
            }
            for (cart, step, sid) in v.claimed_after_ack.iter().take(10) {
                let _ = writeln!(s, "- claimed after the answer: cart {cart} step {step}, {sid}");
            }
            for ((cart, step), n) in v.duplicate_steps.iter().take(10) {
                let _ = writeln!(s, "- duplicate: cart {cart} step {step} sent {n} times");
            }
            for (cart, is, says) in v.storm_state_wrong.iter().take(10) {
                let _ = writeln!(s, "- storm: cart {cart} is {is}; the keywords say {says}");
            }
            for (cart, what) in v.suppression_wrong.iter().take(10) {
                let _ = writeln!(s, "- suppression: cart {cart}: {what}");
            }
            for (cart, status) in v.deletions_not_done.iter().take(10) {
                let _ = writeln!(s, "- deletion not done: cart {cart}, status {status}");
            }
            for (cart, n, keys) in v.deleted_phone_kept.iter().take(10) {
                let _ = writeln!(s, "- deleted phone still held: cart {cart}, {n} item(s), e.g. {}", keys.join("; "));
            }
            for (cart, step) in v.claimed_after_deletion.iter().take(10) {
                let _ = writeln!(s, "- claimed after the deletion: cart {cart} step {step}");
            }
            for (as_of, outcome) in v.purge_unaudited.iter().take(10) {
                let _ = writeln!(s, "- retention run as of {as_of} ms without its audit record ({outcome})");
            }
            for line in &v.log_examples {
                let _ = writeln!(s, "- log line with a raw phone (digits masked): `{line}`");
            }
        }
        for n in &self.notes {
            let _ = writeln!(s, "- {n}");
        }
        s
    }
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Consent => "consent API opt-ins (BigCommerce)",
        Kind::Create => "first deliveries",
        Kind::Update => "updates",
        Kind::Stale => "out-of-order updates",
        Kind::Order => "orders (racing)",
        Kind::Stop => "STOPs texted (racing; not retried)",
        Kind::Keyword => "storm keywords texted (replays included; not retried)",
        Kind::Delete => "data-subject deletions (consent API; Shopify `customers/redact`)",
    }
}

/// Markers around the section, so reruns replace it and nothing else.
pub const START: &str = "<!-- soak:start -->";
pub const END: &str = "<!-- soak:end -->";

/// Replaces (or appends) this file's "Load and fault campaign" section; the rest is left as is.
pub fn write_section(path: &Path, section: &str) -> std::io::Result<()> {
    let existing = std::fs::read_to_string(path).unwrap_or_default();
    std::fs::write(path, splice(&existing, section))
}

pub fn splice(existing: &str, section: &str) -> String {
    let block = format!("{START}\n{}\n{END}", section.trim_end());
    if existing.trim().is_empty() {
        return format!("# Callfy benchmarks\n\n{block}\n");
    }
    match (existing.find(START), existing.find(END)) {
        (Some(start), Some(end)) if end > start => {
            format!("{}{block}{}", &existing[..start], &existing[end + END.len()..])
        }
        _ => format!("{}\n\n{block}\n", existing.trim_end()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_section_is_replaced() {
        let theirs = "# Callfy benchmarks\n\n<!-- bench:start -->\n## Benchmarks\n\nA\n<!-- bench:end -->\n";
        let once = splice(theirs, "## Load and fault campaign\n\nold\n");
        assert_eq!(once, format!("{}\n\n{START}\n## Load and fault campaign\n\nold\n{END}\n", theirs.trim_end()));
        let with_more = format!("{once}\n## Later section\n\nB\n");
        let twice = splice(&with_more, "## Load and fault campaign\n\nnew");
        assert_eq!(twice, with_more.replace("\nold\n", "\nnew\n"));
        assert_eq!(splice("", "x"), format!("# Callfy benchmarks\n\n{START}\nx\n{END}\n"));
    }
}
