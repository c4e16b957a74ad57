//! JSON logs. Never log a phone number: use `Phone::masked()` or `Phone::log_id()`.
//! Functions start with `init_with_log_key(&config.log_key)` so log ids are keyed per deployment.
//!
//! One formatter writes every line: a flat JSON object with the invocation's `requestId` (from
//! the Lambda runtime's span), and metrics (`crate::metrics`) as CloudWatch Embedded Metric
//! Format lines, which CloudWatch turns into metrics without an API call.

use crate::metrics;
use serde_json::{Map, Value};
use std::fmt;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

/// The span field the Lambda runtime puts each invocation's id in.
const REQUEST_ID: &str = "requestId";

/// Installs the JSON subscriber once; later calls are no-ops (tests call it repeatedly).
pub fn init() {
    let filter = EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // Metrics are lines too: a quieter RUST_LOG must not silence them.
    let filter = filter.add_directive(format!("{}=info", metrics::TARGET).parse().expect("a valid directive"));
    let _ =
        tracing_subscriber::fmt().fmt_fields(JsonFields::new()).event_format(Lines).with_env_filter(filter).try_init();
}

/// The subscriber `init` installs, writing to `writer` (tests read what it writes).
pub fn subscriber<W>(writer: W) -> impl Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt().fmt_fields(JsonFields::new()).event_format(Lines).with_writer(writer).finish()
}

/// `init`, plus the per-deployment key `Phone::log_id` uses (first key set wins).
pub fn init_with_log_key(key: &str) {
    crate::domain::phone::set_log_key(key.as_bytes());
    init();
}

/// One JSON object per line: time, level, target, the event's fields flattened, the request id.
struct Lines;

impl<S, N> FormatEvent<S, N> for Lines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let mut fields = Fields(Map::new());
        event.record(&mut fields);
        let request_id = ctx.event_scope().and_then(|scope| {
            scope.from_root().find_map(|span| {
                let ext = span.extensions();
                let formatted = ext.get::<FormattedFields<N>>()?;
                let v: Value = serde_json::from_str(&formatted.fields).ok()?;
                v.get(REQUEST_ID)?.as_str().map(str::to_string)
            })
        });
        let now = chrono::Utc::now();
        let meta = event.metadata();
        let line = if meta.target() == metrics::TARGET {
            metrics::emf_line(fields.0, request_id.as_deref(), now)
        } else {
            let mut line = Map::new();
            line.insert("timestamp".into(), now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true).into());
            line.insert("level".into(), meta.level().as_str().into());
            line.insert("target".into(), meta.target().into());
            if let Some(id) = request_id {
                line.insert(REQUEST_ID.into(), id.into());
            }
            line.extend(fields.0);
            Value::Object(line)
        };
        writeln!(writer, "{line}")
    }
}

struct Fields(Map<String, Value>);

impl Visit for Fields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().into(), format!("{value:?}").into());
    }
}

/// Masks anything that looks like a phone number (7+ digits, optionally with `+`, and with the
/// separators people write them with: spaces, dashes, dots, parentheses) in text that came from
/// elsewhere (AWS or Twilio error messages) before it is logged or stored.
pub fn redact(text: &str) -> String {
    const SEPARATORS: &[char] = &[' ', '-', '.', '(', ')'];
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let starts = chars[i].is_ascii_digit()
            || (chars[i] == '+' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
            || (chars[i] == '(' && chars.get(i + 1).is_some_and(char::is_ascii_digit));
        if !starts {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        // The run: digits, and separators that a digit follows within two characters.
        let mut j = i + 1;
        let mut last_digit = i;
        while j < chars.len() {
            if chars[j].is_ascii_digit() {
                last_digit = j;
                j += 1;
            } else if SEPARATORS.contains(&chars[j])
                && (chars.get(j + 1).is_some_and(char::is_ascii_digit)
                    || (chars.get(j + 1).is_some_and(|c| SEPARATORS.contains(c))
                        && chars.get(j + 2).is_some_and(char::is_ascii_digit)))
            {
                j += 1;
            } else {
                break;
            }
        }
        let run = &chars[i..=last_digit];
        let digits = run.iter().filter(|c| c.is_ascii_digit()).count();
        if digits >= 7 {
            out.push_str(if chars[i] == '+' { "+[phone]" } else { "[phone]" });
        } else {
            out.extend(run);
        }
        i = last_digit + 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::redact;
    use std::sync::{Arc, Mutex};

    /// What a test subscriber wrote, line by line.
    #[derive(Clone, Default)]
    pub struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn lines(&self) -> Vec<serde_json::Value> {
            let bytes = self.0.lock().unwrap().clone();
            String::from_utf8(bytes).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
        }
    }

    #[test]
    fn every_line_in_an_invocation_carries_its_request_id_and_metrics_are_emf() {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = super::subscriber(move || writer.clone());
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(carts = 2, "before any invocation");
            let span = tracing::info_span!("Lambda runtime invoke", requestId = "8f5e-1");
            let _in = span.enter();
            let inner = tracing::info_span!("inner", step = 1);
            let _inner = inner.enter();
            tracing::warn!(phone = "+1415***2671", "step skipped");
            crate::metrics::count_by(crate::metrics::STEPS_SKIPPED, "Reason", "quiet_hours", 1);
        });
        let lines = out.lines();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0]["message"], "before any invocation");
        assert!(lines[0].get("requestId").is_none());
        assert_eq!(lines[1]["requestId"], "8f5e-1");
        assert_eq!(lines[1]["level"], "WARN");
        assert_eq!(lines[1]["phone"], "+1415***2671");
        let emf = &lines[2];
        assert_eq!(emf["requestId"], "8f5e-1");
        assert_eq!(emf["StepsSkipped"], 1.0);
        assert_eq!(emf["Reason"], "quiet_hours");
        assert_eq!(emf["Service"], "callfy");
        let cw = &emf["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(cw["Namespace"], "Callfy");
        assert_eq!(cw["Dimensions"], serde_json::json!([["Service"], ["Service", "Reason"]]));
        assert_eq!(cw["Metrics"][0], serde_json::json!({"Name": "StepsSkipped", "Unit": "Count"}));
        assert!(emf["_aws"]["Timestamp"].as_i64().unwrap() > 1_700_000_000_000);
    }

    #[test]
    fn masks_phone_like_runs_only() {
        assert_eq!(
            redact("key C#snowdevil#+14155552671 failed after 3 tries (code 20429)"),
            "key C#snowdevil#+[phone] failed after 3 tries (code 20429)"
        );
        assert_eq!(redact("To 4155552671 invalid"), "To [phone] invalid");
        assert_eq!(redact("HTTP 503, error Some(20500)"), "HTTP 503, error Some(20500)");
        assert_eq!(redact("The 'To' number +1 415-555-2671 is not valid"), "The 'To' number +[phone] is not valid");
        assert_eq!(redact("call (415) 555.2671 now"), "call [phone] now");
        assert_eq!(redact("after 3 tries, 20 ms"), "after 3 tries, 20 ms");
    }
}
