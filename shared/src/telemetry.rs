//! JSON logs. Never log a phone number: use `Phone::masked()` or `Phone::log_id()`.
//! Functions start with `init_with_log_key(&config.log_key)` so log ids are keyed per deployment.

use tracing_subscriber::EnvFilter;

/// Installs the JSON subscriber once; later calls are no-ops (tests call it repeatedly).
pub fn init() {
    let filter = EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_target(true)
        .with_env_filter(filter)
        .try_init();
}

/// `init`, plus the per-deployment key `Phone::log_id` uses (first key set wins).
pub fn init_with_log_key(key: &str) {
    crate::domain::phone::set_log_key(key.as_bytes());
    init();
}

/// Masks anything that looks like a phone number (7+ digits, optionally with `+`) in text that
/// came from elsewhere (AWS or Twilio error messages) before it is logged.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        let digits = run.chars().filter(char::is_ascii_digit).count();
        if digits >= 7 {
            out.push_str(if run.starts_with('+') { "+[phone]" } else { "[phone]" });
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in text.chars() {
        if c.is_ascii_digit() || (c == '+' && run.is_empty()) {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn masks_phone_like_runs_only() {
        assert_eq!(
            redact("key C#snowdevil#+14155552671 failed after 3 tries (code 20429)"),
            "key C#snowdevil#+[phone] failed after 3 tries (code 20429)"
        );
        assert_eq!(redact("To 4155552671 invalid"), "To [phone] invalid");
        assert_eq!(redact("HTTP 503, error Some(20500)"), "HTTP 503, error Some(20500)");
    }
}
