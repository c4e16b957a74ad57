//! Quiet hours in the recipient's local time: the TCPA's 8 am to 9 pm and the stricter state
//! windows (docs/behaviour.md).
//!
//! The recipient's zones come from the shipping/billing address when known, else the phone's
//! area code (libphonenumber's data; a code spanning zones yields all of them), else the
//! merchant's zone. A send must fall inside the allowed window in *every* candidate zone, so a
//! multi-zone code gets the most restrictive window. The window is the federal 08:00–21:00,
//! narrowed by the recipient's state and by the merchant's own window.

use crate::domain::phone::Phone;
use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveTime, Timelike, Utc, Weekday};
use chrono_tz::Tz;
use std::sync::OnceLock;

const AREA_ZONES: &str = include_str!("../../data/libphonenumber-timezones.txt");

/// A daily sending window, local time, `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: NaiveTime,
    pub end: NaiveTime,
}

impl Window {
    /// Whole hours; only ever called with literals, so an out-of-range hour fails the build.
    pub const fn hours(start: u32, end: u32) -> Self {
        Self { start: hm(start), end: hm(end) }
    }

    fn narrow(self, other: Window) -> Window {
        Window { start: self.start.max(other.start), end: self.end.min(other.end) }
    }

    fn contains(self, t: NaiveTime) -> bool {
        t >= self.start && t < self.end
    }
}

const fn hm(hour: u32) -> NaiveTime {
    match NaiveTime::from_hms_opt(hour, 0, 0) {
        Some(t) => t,
        None => panic!("hour out of range"),
    }
}

pub const FEDERAL: Window = Window::hours(8, 21);

/// A US state's own rule: its window, and whether Sundays and federal holidays are off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateRule {
    pub window: Window,
    pub no_sundays_or_holidays: bool,
}

pub fn state_rule(state: &str) -> Option<StateRule> {
    let rule = |s, e, closed| Some(StateRule { window: Window::hours(s, e), no_sundays_or_holidays: closed });
    match state {
        "FL" | "OK" | "MD" | "WA" => rule(8, 20, false),
        "CT" => rule(9, 20, false),
        "AL" | "LA" => rule(8, 20, true),
        "KY" => rule(10, 21, false),
        "MI" | "MN" => rule(9, 21, false),
        "RI" => rule(9, 18, false),
        _ => None,
    }
}

/// Florida and Oklahoma presume an in-state area code means an in-state resident.
const PRESUMED_STATE_AREA_CODES: &[(&str, &[u16])] = &[
    (
        "FL",
        &[
            239, 305, 321, 324, 352, 386, 407, 448, 561, 645, 656, 689, 727, 728, 754, 772, 786, 813, 850, 863, 904,
            941, 954,
        ],
    ),
    ("OK", &[405, 539, 572, 580, 918]),
];

/// Zones of US states and Canadian provinces; states that straddle zones list each.
fn region_zones(country: &str, region: &str) -> Option<&'static [Tz]> {
    use chrono_tz::America::*;
    use chrono_tz::Pacific::Honolulu;
    let zones: &'static [Tz] = match (country, region) {
        (
            "US",
            "CT" | "DE" | "DC" | "GA" | "ME" | "MD" | "MA" | "NH" | "NJ" | "NY" | "NC" | "OH" | "PA" | "RI" | "SC"
            | "VT" | "VA" | "WV",
        ) => &[New_York],
        ("US", "FL" | "KY" | "TN") => &[New_York, Chicago],
        ("US", "IN") => &[Indiana::Indianapolis, Chicago],
        ("US", "MI") => &[Detroit, Chicago],
        ("US", "AL" | "AR" | "IL" | "IA" | "LA" | "MN" | "MS" | "MO" | "OK" | "WI") => &[Chicago],
        ("US", "KS" | "NE" | "ND" | "SD" | "TX") => &[Chicago, Denver],
        ("US", "CO" | "MT" | "NM" | "UT" | "WY") => &[Denver],
        ("US", "AZ") => &[Phoenix],
        ("US", "ID") => &[Boise, Los_Angeles],
        ("US", "OR") => &[Los_Angeles, Boise],
        ("US", "CA" | "NV" | "WA") => &[Los_Angeles],
        ("US", "AK") => &[Anchorage, Adak],
        ("US", "HI") => &[Honolulu],
        ("US", "PR") => &[Puerto_Rico],
        ("CA", "ON" | "QC") => &[Toronto],
        ("CA", "BC") => &[Vancouver],
        ("CA", "AB") => &[Edmonton],
        ("CA", "SK") => &[Regina],
        ("CA", "MB") => &[Winnipeg],
        ("CA", "NB") => &[Moncton],
        ("CA", "NS" | "PE") => &[Halifax],
        ("CA", "NL") => &[St_Johns],
        ("CA", "YT") => &[Whitehorse],
        ("CA", "NT") => &[Yellowknife],
        ("CA", "NU") => &[Iqaluit],
        _ => return None,
    };
    Some(zones)
}

fn area_table() -> &'static Vec<(String, Vec<Tz>)> {
    static TABLE: OnceLock<Vec<(String, Vec<Tz>)>> = OnceLock::new();
    TABLE.get_or_init(|| {
        AREA_ZONES
            .lines()
            .filter(|l| !l.starts_with('#') && l.contains('|'))
            .filter_map(|l| {
                let (prefix, zones) = l.split_once('|')?;
                let zones: Vec<Tz> = zones.split('&').filter_map(|z| z.trim().parse().ok()).collect();
                (!zones.is_empty()).then(|| (prefix.trim().to_string(), zones))
            })
            .collect()
    })
}

/// The zones libphonenumber gives the number's longest matching prefix.
pub fn area_code_zones(phone: &Phone) -> Vec<Tz> {
    let digits = &phone.as_str()[1..];
    area_table()
        .iter()
        .filter(|(prefix, _)| digits.starts_with(prefix.as_str()))
        .max_by_key(|(prefix, _)| prefix.len())
        .map(|(_, zones)| zones.clone())
        .unwrap_or_default()
}

/// Who we would be texting, as far as the clock is concerned.
#[derive(Debug, Clone, PartialEq)]
pub struct Recipient {
    pub zones: Vec<Tz>,
    /// US states whose rules apply (the address's, and FL/OK by area-code presumption).
    pub states: Vec<String>,
}

impl Recipient {
    pub fn locate(phone: &Phone, country: Option<&str>, province: Option<&str>, merchant_zone: Tz) -> Self {
        let country = country.map(str::to_ascii_uppercase);
        let province = province.map(str::to_ascii_uppercase);
        let from_address = match (&country, &province) {
            (Some(c), Some(p)) => region_zones(c, p).map(<[Tz]>::to_vec),
            _ => None,
        };
        let zones = from_address
            .or_else(|| Some(area_code_zones(phone)).filter(|z| !z.is_empty()))
            .unwrap_or_else(|| vec![merchant_zone]);
        // Only states with a rule of their own matter; `state_rule` is the one list of them.
        let mut states: Vec<String> = Vec::new();
        if country.as_deref() == Some("US")
            && let Some(p) = province.filter(|p| state_rule(p).is_some())
        {
            states.push(p);
        }
        if phone.country_code() == Some(1)
            && let Ok(area) = phone.as_str()[2..5].parse::<u16>()
        {
            for (state, codes) in PRESUMED_STATE_AREA_CODES {
                if codes.contains(&area) && !states.iter().any(|s| s == state) {
                    states.push(state.to_string());
                }
            }
        }
        Self { zones, states }
    }

    /// Whether a message may go out at `t`.
    pub fn allowed_at(&self, t: DateTime<Utc>, merchant: Option<Window>) -> bool {
        let mut window = FEDERAL;
        let mut closed_sundays = false;
        for s in &self.states {
            if let Some(rule) = state_rule(s) {
                window = window.narrow(rule.window);
                closed_sundays |= rule.no_sundays_or_holidays;
            }
        }
        if let Some(m) = merchant {
            window = window.narrow(m);
        }
        self.zones.iter().all(|zone| {
            let local = t.with_timezone(zone);
            let time = local.time().with_nanosecond(0).unwrap_or(local.time());
            let day_off =
                closed_sundays && (local.weekday() == Weekday::Sun || is_us_federal_holiday(local.date_naive()));
            window.contains(time) && !day_off
        })
    }

    /// When a window open at `from` closes: the start of the first minute after `from` when a
    /// message may no longer go out, if one comes by `limit`.
    pub fn closes_after(
        &self,
        from: DateTime<Utc>,
        limit: DateTime<Utc>,
        merchant: Option<Window>,
    ) -> Option<DateTime<Utc>> {
        minutes_after(from, limit).find(|t| !self.allowed_at(*t, merchant))
    }

    /// The first minute at or after `from` when a message may go out, if one comes by `limit`.
    pub fn next_allowed(
        &self,
        from: DateTime<Utc>,
        limit: DateTime<Utc>,
        merchant: Option<Window>,
    ) -> Option<DateTime<Utc>> {
        if self.allowed_at(from, merchant) {
            return Some(from);
        }
        minutes_after(from, limit).find(|t| self.allowed_at(*t, merchant))
    }
}

/// The starts of the minutes after `from`, up to `limit`: the steps quiet hours are judged in.
fn minutes_after(from: DateTime<Utc>, limit: DateTime<Utc>) -> impl Iterator<Item = DateTime<Utc>> {
    let first = from.with_second(0).and_then(|t| t.with_nanosecond(0)).unwrap_or(from) + Duration::minutes(1);
    std::iter::successors(Some(first), |t| Some(*t + Duration::minutes(1))).take_while(move |t| *t <= limit)
}

fn nth_weekday(year: i32, month: u32, weekday: Weekday, n: u8) -> Option<NaiveDate> {
    NaiveDate::from_weekday_of_month_opt(year, month, weekday, n)
}

fn last_weekday(year: i32, month: u32, weekday: Weekday) -> Option<NaiveDate> {
    nth_weekday(year, month, weekday, 5).or_else(|| nth_weekday(year, month, weekday, 4))
}

/// US federal holidays (the days themselves, not observed substitutes).
pub fn is_us_federal_holiday(d: NaiveDate) -> bool {
    let y = d.year();
    let fixed = [(1, 1), (6, 19), (7, 4), (11, 11), (12, 25)];
    if fixed.contains(&(d.month(), d.day())) {
        return true;
    }
    [
        nth_weekday(y, 1, Weekday::Mon, 3),
        nth_weekday(y, 2, Weekday::Mon, 3),
        last_weekday(y, 5, Weekday::Mon),
        nth_weekday(y, 9, Weekday::Mon, 1),
        nth_weekday(y, 10, Weekday::Mon, 2),
        nth_weekday(y, 11, Weekday::Thu, 4),
    ]
    .into_iter()
    .flatten()
    .any(|h| h == d)
}

/// Parses a merchant's `HH:MM` window; validation has already checked it.
pub fn merchant_window(start: &str, end: &str) -> Option<Window> {
    let start = NaiveTime::parse_from_str(start, "%H:%M").ok()?;
    let end = NaiveTime::parse_from_str(end, "%H:%M").ok()?;
    Some(Window { start, end })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phone(s: &str) -> Phone {
        Phone::parse(s, None).unwrap()
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    const TORONTO: Tz = chrono_tz::America::Toronto;

    #[test]
    fn zones_come_from_address_then_area_code_then_merchant() {
        let sf = phone("+14155552671");
        assert_eq!(Recipient::locate(&sf, Some("US"), Some("NY"), TORONTO).zones, vec![chrono_tz::America::New_York]);
        assert_eq!(Recipient::locate(&sf, None, None, TORONTO).zones, vec![chrono_tz::America::Los_Angeles]);
        let uk = phone("+442079460958");
        assert_eq!(Recipient::locate(&uk, None, None, TORONTO).zones, vec![chrono_tz::Europe::London]);
        let multi = phone("+17015550123");
        assert_eq!(Recipient::locate(&multi, None, None, TORONTO).zones.len(), 2, "ND spans two zones");
    }

    #[test]
    fn federal_window_in_local_time() {
        let r = Recipient::locate(&phone("+14155552671"), Some("US"), Some("CA"), TORONTO);
        assert!(!r.allowed_at(at("2026-11-28T15:59:00Z"), None), "07:59 in San Francisco");
        assert!(r.allowed_at(at("2026-11-28T16:00:00Z"), None), "08:00");
        assert!(r.allowed_at(at("2026-11-29T04:59:00Z"), None), "20:59");
        assert!(!r.allowed_at(at("2026-11-29T05:00:00Z"), None), "21:00");
    }

    #[test]
    fn the_most_restrictive_zone_wins() {
        // North Dakota's area code spans Central and Mountain: 08:00 Central is 07:00 Mountain.
        let r = Recipient::locate(&phone("+17015550123"), None, None, TORONTO);
        assert!(!r.allowed_at(at("2026-11-30T14:00:00Z"), None));
        assert!(r.allowed_at(at("2026-11-30T15:00:00Z"), None));
    }

    #[test]
    fn state_rules_narrow_the_window() {
        let fl = Recipient::locate(&phone("+13055550123"), None, None, TORONTO);
        assert_eq!(fl.states, vec!["FL"], "area-code presumption");
        assert!(!fl.allowed_at(at("2026-11-30T01:30:00Z"), None), "20:30 in Miami");
        let ri = Recipient::locate(&phone("+14015550123"), Some("US"), Some("RI"), TORONTO);
        assert!(!ri.allowed_at(at("2026-11-30T23:30:00Z"), None), "18:30 in Providence");
        assert!(ri.allowed_at(at("2026-11-30T22:30:00Z"), None), "17:30");
        let al = Recipient::locate(&phone("+12055550123"), Some("US"), Some("AL"), TORONTO);
        assert!(!al.allowed_at(at("2026-11-29T18:00:00Z"), None), "a Sunday in Alabama");
        assert!(!al.allowed_at(at("2026-11-26T18:00:00Z"), None), "Thanksgiving");
        assert!(al.allowed_at(at("2026-11-27T18:00:00Z"), None), "the Friday after");
    }

    #[test]
    fn merchant_window_narrows_further() {
        let r = Recipient::locate(&phone("+14155552671"), Some("US"), Some("CA"), TORONTO);
        let w = merchant_window("09:00", "20:00");
        assert!(!r.allowed_at(at("2026-11-28T16:30:00Z"), w), "08:30 is before the merchant's 09:00");
        assert!(r.allowed_at(at("2026-11-28T17:00:00Z"), w));
    }

    #[test]
    fn next_allowed_minute_and_the_deadline() {
        let r = Recipient::locate(&phone("+14155552671"), Some("US"), Some("CA"), TORONTO);
        let night = at("2026-11-28T11:17:30Z"); // 03:17:30 in San Francisco
        assert_eq!(r.next_allowed(night, night + Duration::hours(24), None), Some(at("2026-11-28T16:00:00Z")));
        assert_eq!(r.next_allowed(night, night + Duration::hours(2), None), None);
        let day = at("2026-11-28T18:00:00Z");
        assert_eq!(r.next_allowed(day, day, None), Some(day));
    }

    #[test]
    fn federal_holidays() {
        for d in ["2026-01-01", "2026-01-19", "2026-05-25", "2026-07-04", "2026-09-07", "2026-11-26", "2026-12-25"] {
            assert!(is_us_federal_holiday(d.parse().unwrap()), "{d}");
        }
        assert!(!is_us_federal_holiday("2026-11-27".parse().unwrap()));
    }
}
