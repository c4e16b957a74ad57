//! The log invariant: every line the in-process functions write (their JSON tracing output, as
//! CloudWatch would keep it) goes to a file, and no raw phone number of the campaign may appear
//! in it: not in E.164, not without its '+', not as the national number.

use std::collections::HashSet;
use std::io::BufRead;
use std::path::Path;

/// The digit strings that would be a raw phone: the E.164 digits (with or without '+') and,
/// for a +1 number, its ten-digit national number.
pub fn forbidden(phones: &[String]) -> HashSet<String> {
    let mut out = HashSet::new();
    for p in phones {
        let digits: String = p.chars().filter(char::is_ascii_digit).collect();
        if digits.len() == 11 && digits.starts_with('1') {
            out.insert(digits[1..].to_string());
        }
        out.insert(digits);
    }
    out
}

/// Whether a line holds one of the forbidden numbers as a run of digits of its own.
pub fn leaks(line: &str, forbidden: &HashSet<String>) -> bool {
    line.split(|c: char| !c.is_ascii_digit()).any(|run| run.len() >= 10 && forbidden.contains(run))
}

#[derive(Debug, Clone, Default)]
pub struct LogScan {
    pub lines: u64,
    pub violations: u64,
    /// The first few offending lines, phone digits masked.
    pub examples: Vec<String>,
}

pub fn scan(path: &Path, phones: &[String]) -> std::io::Result<LogScan> {
    let forbidden = forbidden(phones);
    let file = std::fs::File::open(path)?;
    let mut out = LogScan::default();
    for line in std::io::BufReader::new(file).lines() {
        let line = line?;
        out.lines += 1;
        if leaks(&line, &forbidden) {
            out.violations += 1;
            if out.examples.len() < 5 {
                let masked: String = line.chars().map(|c| if c.is_ascii_digit() { '#' } else { c }).take(300).collect();
                out.examples.push(masked);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_numbers_are_found_in_every_form() {
        let f = forbidden(&["+12125550101".to_string()]);
        assert!(leaks(r#"{"to":"+12125550101"}"#, &f));
        assert!(leaks(r#"{"to":"12125550101"}"#, &f));
        assert!(leaks("number 2125550101 opted out", &f));
        assert!(!leaks(r#"{"to":"+1212***0101","id":"ph_9f2a"}"#, &f));
        assert!(!leaks("order 912125550101 placed", &f));
        assert!(!leaks(r#"{"to":"+12125550102"}"#, &f));
    }
}
