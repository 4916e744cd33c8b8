//! Time as sessiond sees it: whole milliseconds since the Unix epoch, UTC.
//!
//! Stores are handed `now` by the caller instead of reading a clock themselves, so expiry is
//! decided in one place and tests can move time without sleeping.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A point in time: milliseconds since the Unix epoch.
///
/// Arithmetic saturates: a timeout configured as years cannot overflow into the past.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The epoch itself; useful as "never active".
    pub const EPOCH: Timestamp = Timestamp(0);

    /// A timestamp from milliseconds since the epoch.
    pub const fn from_millis(ms: u64) -> Self {
        Timestamp(ms)
    }

    /// Milliseconds since the epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// `self + d`, saturating at the far future.
    pub fn saturating_add(self, d: Duration) -> Self {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_add(ms))
    }

    /// The time from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }

    /// RFC 3339 in UTC, e.g. `2026-03-15T10:30:00Z` (milliseconds shown only when non-zero).
    ///
    /// Written digit by digit into a fixed buffer: every session document carries four of
    /// these, and `format!` with widths cost more than the rest of building the document.
    pub fn to_rfc3339(self) -> String {
        // Years past 9999 cannot be written in RFC 3339; clamp rather than fail, since such
        // a time can only come from an absurd configuration and still means "far future".
        let ms = self.0.min(253_402_300_799_999);
        let (secs, millis) = (ms / 1000, ms % 1000);
        let (days, rem) = (secs / 86_400, secs % 86_400);
        let (y, mo, d) = civil_from_days(days);
        let (h, mi, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
        let mut buf = *b"0000-00-00T00:00:00.000Z";
        put_digits(&mut buf[0..4], y);
        put_digits(&mut buf[5..7], mo);
        put_digits(&mut buf[8..10], d);
        put_digits(&mut buf[11..13], h);
        put_digits(&mut buf[14..16], mi);
        put_digits(&mut buf[17..19], s);
        let end = if millis == 0 {
            buf[19] = b'Z';
            20
        } else {
            put_digits(&mut buf[20..23], millis);
            24
        };
        // Only ASCII digits and separators were written.
        String::from_utf8_lossy(&buf[..end]).into_owned()
    }
}

/// Writes `n` as decimal digits filling `out` (zero-padded; higher digits are dropped).
fn put_digits(out: &mut [u8], mut n: u64) {
    for b in out.iter_mut().rev() {
        // `n % 10` is a single digit, so the cast is exact.
        *b = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (days ≥ 0), after Howard
/// Hinnant's `civil_from_days`.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

impl Timestamp {
    /// Parses RFC 3339 (`2026-03-15T10:30:00Z`, any offset, fractions of a second cut to the
    /// millisecond); a time before the epoch is the epoch (nothing sessiond keeps is older).
    /// `None` for other text.
    pub fn parse_rfc3339(s: &str) -> Option<Timestamp> {
        let t = ::time::OffsetDateTime::parse(s, &::time::format_description::well_known::Rfc3339)
            .ok()?;
        let ms = (t.unix_timestamp_nanos() / 1_000_000).max(0);
        Some(Timestamp(u64::try_from(ms).unwrap_or(u64::MAX)))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

/// Where the service gets the current time.
pub trait Clock: fmt::Debug + Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Timestamp(ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_parses_back() {
        let t = Timestamp::from_millis(1_764_000_000_123);
        assert_eq!(Timestamp::parse_rfc3339(&t.to_rfc3339()), Some(t));
        assert_eq!(
            Timestamp::parse_rfc3339("2026-03-15T11:30:00+01:00"),
            Timestamp::parse_rfc3339("2026-03-15T10:30:00Z")
        );
        assert_eq!(
            Timestamp::parse_rfc3339("1969-12-31T23:59:59Z"),
            Some(Timestamp::EPOCH)
        );
        assert_eq!(Timestamp::parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn the_hand_written_format_matches_the_time_crate() {
        let reference = |ms: u64| {
            let secs = i64::try_from(ms / 1000).unwrap();
            let dt = ::time::OffsetDateTime::from_unix_timestamp(secs).unwrap();
            let (y, mo, d) = (dt.year(), u8::from(dt.month()), dt.day());
            let (h, mi, s) = (dt.hour(), dt.minute(), dt.second());
            match ms % 1000 {
                0 => format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z"),
                m => format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{m:03}Z"),
            }
        };
        // Leap days, century and 400-year rules, year ends, and a spread of ordinary times.
        let mut cases = vec![
            0,
            951_782_400_000,     // 2000-02-29
            4_107_542_399_999,   // 2100-02-28T23:59:59.999
            4_107_542_400_000,   // 2100-03-01
            1_704_067_199_999,   // 2023-12-31T23:59:59.999
            253_402_300_799_999, // 9999-12-31T23:59:59.999
        ];
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            cases.push(x % 253_402_300_800_000);
        }
        for ms in cases {
            assert_eq!(Timestamp(ms).to_rfc3339(), reference(ms), "{ms}");
        }
    }

    #[test]
    fn formats_rfc3339_utc() {
        assert_eq!(Timestamp(0).to_rfc3339(), "1970-01-01T00:00:00Z");
        assert_eq!(
            Timestamp(1_773_570_600_000).to_rfc3339(),
            "2026-03-15T10:30:00Z"
        );
        assert_eq!(
            Timestamp(1_773_570_600_042).to_rfc3339(),
            "2026-03-15T10:30:00.042Z"
        );
        assert_eq!(Timestamp(u64::MAX).to_rfc3339(), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn d06_time_arithmetic_saturates() {
        assert_eq!(
            Timestamp(5).saturating_add(Duration::MAX),
            Timestamp(u64::MAX)
        );
        assert_eq!(Timestamp(5).saturating_since(Timestamp(9)), Duration::ZERO);
    }
}
