//! `callfy-admin purge`'s guard: a run as of a future instant deletes data before its retention
//! ends, so it needs `--force` (a dry run may look ahead freely).

use chrono::{DateTime, Duration, Utc};

/// `Err` with the reason when `as_of` is in the future (beyond a few minutes of clock skew).
pub fn check_as_of(as_of: DateTime<Utc>, now: DateTime<Utc>, force: bool, dry_run: bool) -> Result<(), String> {
    if as_of > now + Duration::minutes(5) && !force && !dry_run {
        return Err(format!(
            "--as-of {as_of} is in the future: it would delete data before its retention ends (add --force to do it anyway; --dry-run to look)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_future_as_of_needs_force() {
        let now: DateTime<Utc> = "2026-12-06T03:00:00Z".parse().unwrap();
        let future = now + Duration::days(30);
        assert!(check_as_of(future, now, false, false).unwrap_err().contains("--force"));
        assert!(check_as_of(future, now, true, false).is_ok());
        assert!(check_as_of(future, now, false, true).is_ok(), "a dry run may look ahead");
        assert!(check_as_of(now, now, false, false).is_ok());
    }
}
