//! `Timestamp`: milliseconds since the Unix epoch, shown as RFC 3339 UTC with milliseconds
//! (`2024-01-15T10:30:00.123Z`), the form the seed's JSON uses.

use std::time::{SystemTime, UNIX_EPOCH};

use time::{OffsetDateTime, format_description::well_known::Rfc3339 as Rfc3339Format};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn now() -> Self {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Self(d.as_millis() as i64)
    }

    pub fn millis(self) -> i64 {
        self.0
    }

    /// Parses RFC 3339 (`2024-01-01T00:00:00Z`, offsets allowed) or a bare date (`2024-01-01`).
    pub fn parse(s: &str) -> Option<Self> {
        if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339Format) {
            return Some(Self((t.unix_timestamp_nanos() / 1_000_000) as i64));
        }
        let date =
            time::Date::parse(s, time::macros::format_description!("[year]-[month]-[day]")).ok()?;
        Some(Self(date.midnight().assume_utc().unix_timestamp() * 1000))
    }

    /// RFC 3339 with milliseconds and `Z`, in a buffer on the stack (every message carries
    /// one or two: no allocation, no `fmt`). Years outside 0000–9999 show as the epoch.
    pub fn rfc3339(self) -> Rfc3339 {
        let (secs, ms) = (self.0.div_euclid(1000), self.0.rem_euclid(1000));
        let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        let (y, m, d) = civil_from_days(days);
        if !(0..=9999).contains(&y) {
            return Timestamp(0).rfc3339();
        }
        let mut b = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, width: usize, mut v: i64| {
            for i in (at..at + width).rev() {
                b[i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        put(0, 4, y);
        put(5, 2, m);
        put(8, 2, d);
        put(11, 2, sod / 3600);
        put(14, 2, sod / 60 % 60);
        put(17, 2, sod % 60);
        put(20, 3, ms);
        Rfc3339(b)
    }

    /// `rfc3339` as a `String`.
    pub fn to_rfc3339(self) -> String {
        self.rfc3339().as_str().to_owned()
    }
}

/// A formatted timestamp (`Timestamp::rfc3339`).
pub struct Rfc3339([u8; 24]);

impl Rfc3339 {
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("ASCII digits and separators")
    }
}

/// (year, month, day) of the proleptic Gregorian calendar, `days` after 1970-01-01
/// (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.rfc3339().as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("bad timestamp `{s}`")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let t = Timestamp::parse("2024-01-15T10:30:00.123Z").unwrap();
        assert_eq!(t.to_rfc3339(), "2024-01-15T10:30:00.123Z");
        let d = Timestamp::parse("2024-01-15").unwrap();
        assert_eq!(d.to_rfc3339(), "2024-01-15T00:00:00.000Z");
        let o = Timestamp::parse("2024-01-15T12:30:00+02:00").unwrap();
        assert_eq!(o.to_rfc3339(), "2024-01-15T10:30:00.000Z");
        assert!(Timestamp::parse("yesterday").is_none());
    }

    /// The formatter against the `time` crate, over 0000–9999 and around the edges.
    #[test]
    fn formats_like_the_time_crate() {
        let reference = |ms: i64| {
            let t = OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000).unwrap();
            format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
                t.year(),
                t.month() as u8,
                t.day(),
                t.hour(),
                t.minute(),
                t.second(),
                t.millisecond()
            )
        };
        let first = -62_167_219_200_000; // 0000-01-01T00:00:00.000Z
        let last = 253_402_300_799_999; // 9999-12-31T23:59:59.999Z
        let mut ms = first;
        let step = 7_777_777_777; // ~90 days and an odd remainder: every field moves
        while ms <= last {
            assert_eq!(Timestamp(ms).to_rfc3339(), reference(ms), "{ms}");
            ms += step;
        }
        for ms in [
            first,
            last,
            -1,
            0,
            1,
            951_782_400_000,
            951_868_799_999,
            1_709_164_800_000,
        ] {
            assert_eq!(Timestamp(ms).to_rfc3339(), reference(ms), "{ms}");
        }
        assert_eq!(
            Timestamp(first - 1).to_rfc3339(),
            "1970-01-01T00:00:00.000Z"
        );
        assert_eq!(Timestamp(last + 1).to_rfc3339(), "1970-01-01T00:00:00.000Z");
    }
}
