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
