//! The text format's line writer when stderr is not a terminal (a file, a
//! pipe, journald): the same text as `tracing-subscriber`'s default `Full`
//! format without ANSI (`2026-12-06T08:59:21.843647Z  INFO target: message
//! key=value ...`), written without its per-field styling wrappers and
//! date formatting, which cost about a tenth of a call's user CPU at three
//! call-log lines per call (bench/sbc, callgrind).

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// See the module documentation.
#[derive(Debug, Clone, Copy, Default)]
pub struct LineFormat;

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let since_epoch = crate::unix_time();
        w.write_str(&timestamp(
            since_epoch.as_secs(),
            since_epoch.subsec_micros(),
        ))?;
        let meta = event.metadata();
        w.write_str(match *meta.level() {
            Level::ERROR => " ERROR ",
            Level::WARN => "  WARN ",
            Level::INFO => "  INFO ",
            Level::DEBUG => " DEBUG ",
            Level::TRACE => " TRACE ",
        })?;
        w.write_str(meta.target())?;
        w.write_str(":")?;
        let mut fields = Fields {
            w: &mut w,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        w.write_char('\n')
    }
}

/// Writes `message` bare and every other field as ` name=value` (strings
/// quoted, as `Debug` writes them), like the `Full` format's visitor.
struct Fields<'a, 'w> {
    w: &'a mut Writer<'w>,
    result: fmt::Result,
}

impl Fields<'_, '_> {
    fn field(&mut self, field: &Field, value: fmt::Arguments<'_>) {
        if self.result.is_err() {
            return;
        }
        let name = field.name();
        if name.starts_with("log.") {
            return;
        }
        self.result = if name == "message" {
            self.w.write_fmt(format_args!(" {value}"))
        } else {
            let name = name.strip_prefix("r#").unwrap_or(name);
            self.w.write_fmt(format_args!(" {name}={value}"))
        };
    }
}

impl Visit for Fields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.field(field, format_args!("{value}"));
        } else {
            self.field(field, format_args!("{value:?}"));
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.field(field, format_args!("{value}"));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.field(field, format_args!("{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.field(field, format_args!("{value}"));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.field(field, format_args!("{value}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.field(field, format_args!("{value:?}"));
    }
}

/// `YYYY-MM-DDTHH:MM:SS.uuuuuuZ` (RFC 3339, UTC) for a time since the epoch.
fn timestamp(secs: u64, micros: u32) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    let mut out = String::with_capacity(27);
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    );
    out
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day)
/// (H. Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        u32::try_from(m).unwrap_or(1),
        u32::try_from(d).unwrap_or(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_match_rfc3339_utc() {
        assert_eq!(timestamp(0, 0), "1970-01-01T00:00:00.000000Z");
        // 2026-12-06T08:59:21.843647Z
        assert_eq!(
            timestamp(1_796_547_561, 843_647),
            "2026-12-06T08:59:21.843647Z"
        );
        // A leap day and the last second of a year.
        assert_eq!(timestamp(951_782_400, 1), "2000-02-29T00:00:00.000001Z");
        assert_eq!(
            timestamp(1_735_689_599, 999_999),
            "2024-12-31T23:59:59.999999Z"
        );
    }

    #[test]
    fn every_day_of_four_centuries_round_trips() {
        // Against the inverse (days_from_civil), day by day.
        let mut expect = (1970i64, 1u32, 1u32);
        let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        for z in 0..146_097i64 {
            assert_eq!(civil_from_days(z), expect, "day {z}");
            let (y, m, d) = expect;
            let len = match m {
                2 if leap(y) => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            expect = if d < len {
                (y, m, d + 1)
            } else if m < 12 {
                (y, m + 1, 1)
            } else {
                (y + 1, 1, 1)
            };
        }
    }
}
