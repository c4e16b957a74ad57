//! Business and health metrics as CloudWatch Embedded Metric Format log lines: no API call, no
//! extra latency. A metric is a `tracing` event with target [`TARGET`]; the log formatter
//! (`telemetry`) writes it as EMF. Dimension values are fixed vocabularies (reasons, sources,
//! codes, kinds), never a phone number or a merchant's customer.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

pub const TARGET: &str = "callfy::metric";
pub const NAMESPACE: &str = "Callfy";
/// Every metric carries `Service`, so alarms and the dashboard can read the totals.
pub const SERVICE: &str = "callfy";

pub const MESSAGES_SENT: &str = "MessagesSent";
pub const CALLS_PLACED: &str = "CallsPlaced";
pub const STEPS_SKIPPED: &str = "StepsSkipped";
pub const OPT_OUTS: &str = "OptOuts";
pub const RECOVERIES: &str = "Recoveries";
pub const RECOVERED_REVENUE: &str = "RecoveredRevenue";
pub const TWILIO_REQUESTS: &str = "TwilioRequests";
pub const TWILIO_ERRORS: &str = "TwilioErrors";
pub const PURGED_ITEMS: &str = "PurgedItems";
pub const PURGE_RUNS: &str = "PurgeRuns";
/// Merchants the daily check found without a platform delivery for longer than their threshold.
pub const MERCHANT_SILENT: &str = "MerchantSilent";
pub const CARTS_REFUSED: &str = "CartsRefused";
pub const SENDS_REFUSED: &str = "SendsRefused";
/// Clicks on our recovery links (`/r/{code}`), by channel.
pub const LINK_CLICKS: &str = "LinkClicks";
/// Merchant API requests answered 429 because the merchant was over its `api_limit`.
pub const API_THROTTLED: &str = "ApiThrottled";
/// Voice agent calls by outcome (`Outcome` dimension).
pub const AGENT_OUTCOMES: &str = "AgentOutcomes";
/// Turns the scripted agent answered because the model failed, was slow, throttled or over budget (`Reason`).
pub const AGENT_MODEL_FALLBACKS: &str = "AgentModelFallbacks";

/// Adds `n` to a total.
pub fn count(name: &'static str, n: u64) {
    tracing::info!(target: TARGET, metric = name, value = n as f64, unit = "Count");
}

/// Adds `n` to a total and to its breakdown by `key` (e.g. `Reason` = `quiet_hours`).
pub fn count_by(name: &'static str, key: &'static str, value: &str, n: u64) {
    // A breakdown value never carries a number someone could be reached at.
    let value = crate::telemetry::redact(value);
    tracing::info!(target: TARGET, metric = name, value = n as f64, unit = "Count", dim_key = key, dim_value = value);
}

/// Recovered revenue, in the order's currency units (the dashboard sums it as is).
pub fn revenue(amount: f64) {
    tracing::info!(target: TARGET, metric = RECOVERED_REVENUE, value = amount, unit = "None");
}

/// The EMF object for one metric event's fields (`metric`, `value`, `unit`, optional
/// `dim_key`/`dim_value`).
pub fn emf_line(fields: Map<String, Value>, request_id: Option<&str>, now: DateTime<Utc>) -> Value {
    let name = fields.get("metric").and_then(Value::as_str).unwrap_or("Unknown").to_string();
    let unit = fields.get("unit").and_then(Value::as_str).unwrap_or("Count").to_string();
    let value = fields.get("value").and_then(Value::as_f64).unwrap_or(0.0);
    let dim = match (fields.get("dim_key").and_then(Value::as_str), fields.get("dim_value").and_then(Value::as_str)) {
        (Some(k), Some(v)) => Some((k.to_string(), v.to_string())),
        _ => None,
    };
    let dimensions = match &dim {
        Some((k, _)) => json!([["Service"], ["Service", k]]),
        None => json!([["Service"]]),
    };
    let mut line = Map::new();
    line.insert(
        "_aws".into(),
        json!({
            "Timestamp": now.timestamp_millis(),
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": dimensions,
                "Metrics": [{"Name": name, "Unit": unit}],
            }],
        }),
    );
    line.insert("Service".into(), SERVICE.into());
    if let Some((k, v)) = dim {
        line.insert(k, v.into());
    }
    line.insert(name, value.into());
    if let Some(id) = request_id {
        line.insert("requestId".into(), id.into());
    }
    Value::Object(line)
}
