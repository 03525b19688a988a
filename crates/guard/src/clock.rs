//! Wall-clock time for the sans-IO guard.
//!
//! The guard runs on `now: Instant` like the engine; rules about business
//! hours, nights, weekends and days need the civil time too. The binary
//! anchors an `Instant` to a Unix time with [`WallClock::anchor`] (every loop
//! turn, cheaply); the guard derives the wall time of any later `now` from
//! that anchor and converts it to the configured time zone with `jiff`.

use std::time::Instant;

use jiff::Timestamp;
use jiff::civil::{Date, Weekday};
use jiff::tz::TimeZone;
use palisade_config::{Fraud, When};

/// An `Instant` paired with the Unix time it corresponds to.
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    at: Instant,
    unix_ms: i64,
}

impl WallClock {
    /// `at` is `unix_ms` milliseconds after the Unix epoch.
    pub fn anchor(at: Instant, unix_ms: i64) -> Self {
        WallClock { at, unix_ms }
    }

    /// The Unix time of `now`, in milliseconds.
    pub fn unix_ms(&self, now: Instant) -> i64 {
        let (ahead, behind) = (
            now.saturating_duration_since(self.at),
            self.at.saturating_duration_since(now),
        );
        let ms = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        self.unix_ms
            .saturating_add(ms(ahead))
            .saturating_sub(ms(behind))
    }
}

/// Local civil time, as the rules need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Local {
    /// The local date (days reset at local midnight).
    pub date: Date,
    /// Day of the week, Monday = 0.
    pub weekday: usize,
    /// Minutes after local midnight.
    pub minute: u16,
}

/// Local time of `unix_ms` in `tz`.
pub fn local(tz: &TimeZone, unix_ms: i64) -> Local {
    let ts = Timestamp::from_millisecond(unix_ms).unwrap_or(Timestamp::UNIX_EPOCH);
    let z = ts.to_zoned(tz.clone());
    let weekday = match z.weekday() {
        Weekday::Monday => 0,
        Weekday::Tuesday => 1,
        Weekday::Wednesday => 2,
        Weekday::Thursday => 3,
        Weekday::Friday => 4,
        Weekday::Saturday => 5,
        Weekday::Sunday => 6,
    };
    let minute = u16::try_from(i32::from(z.hour()) * 60 + i32::from(z.minute())).unwrap_or(0);
    Local {
        date: z.date(),
        weekday,
        minute,
    }
}

/// Whether `l` is in business hours.
pub fn business_hours(f: &Fraud, l: &Local) -> bool {
    f.business_days.get(l.weekday).copied().unwrap_or(false) && f.business_hours.contains(l.minute)
}

/// Whether a rule with `when` applies at `l`.
pub fn applies(f: &Fraud, when: When, l: &Local) -> bool {
    match when {
        When::Always => true,
        When::BusinessHours => business_hours(f, l),
        When::AfterHours => !business_hours(f, l),
        When::Nights => f.nights.contains(l.minute),
        When::Weekends => f.weekend_days.get(l.weekday).copied().unwrap_or(false),
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // the virtual clock needs one real origin
mod tests {
    use super::*;
    use std::time::Duration;

    fn fraud(extra: &str) -> Fraud {
        let yaml = format!(
            "zones: [{{name: a, sip_address: 127.0.0.1}}]\n\
             trunks: [{{name: t, zone: a, members: [{{address: 127.0.0.9}}]}}]\n\
             routes: [{{name: r, to_trunk: t}}]\n{extra}"
        );
        palisade_config::load_str(&yaml, "t.yaml")
            .unwrap()
            .fraud()
            .clone()
    }

    #[test]
    fn anchor_maps_instants_both_ways() {
        let t0 = Instant::now();
        let w = WallClock::anchor(t0 + Duration::from_secs(10), 1_000_000);
        assert_eq!(w.unix_ms(t0 + Duration::from_secs(11)), 1_001_000);
        assert_eq!(w.unix_ms(t0), 990_000);
    }

    #[test]
    fn business_hours_nights_weekends_in_a_time_zone() {
        let f = fraud("fraud: {timezone: Europe/Berlin}");
        let tz = TimeZone::get("Europe/Berlin").unwrap();
        // 2026-01-05 is a Monday. 09:30 in Berlin (CET, UTC+1) = 08:30 UTC.
        let monday_0930 = Timestamp::from_second(1_767_601_800).unwrap();
        let l = local(&tz, monday_0930.as_millisecond());
        assert_eq!((l.weekday, l.minute), (0, 9 * 60 + 30));
        assert!(applies(&f, When::BusinessHours, &l));
        assert!(!applies(&f, When::AfterHours, &l));
        assert!(!applies(&f, When::Nights, &l));
        assert!(!applies(&f, When::Weekends, &l));
        // 23:00 the same day: after hours and night.
        let l = local(
            &tz,
            monday_0930.as_millisecond() + 13 * 3600 * 1000 + 30 * 60 * 1000,
        );
        assert_eq!(l.minute, 23 * 60);
        assert!(applies(&f, When::AfterHours, &l) && applies(&f, When::Nights, &l));
        // Saturday noon: weekend, after hours, not night.
        let l = local(
            &tz,
            monday_0930.as_millisecond() + 5 * 86_400_000 + 150 * 60 * 1000,
        );
        assert_eq!((l.weekday, l.minute), (5, 12 * 60));
        assert!(applies(&f, When::Weekends, &l) && applies(&f, When::AfterHours, &l));
        assert!(!applies(&f, When::Nights, &l));
        // The same instant in UTC is an hour earlier.
        let l = local(&TimeZone::UTC, monday_0930.as_millisecond());
        assert_eq!(l.minute, 8 * 60 + 30);
    }
}
