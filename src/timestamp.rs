//! `Timestamp`: milliseconds since the Unix epoch, shown as RFC 3339 UTC with milliseconds
//! (`2024-01-15T10:30:00.123Z`), the form the seed's JSON uses.

use std::time::{SystemTime, UNIX_EPOCH};

use time::{OffsetDateTime, format_description::well_known::Rfc3339};

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
        if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
            return Some(Self((t.unix_timestamp_nanos() / 1_000_000) as i64));
        }
        let date =
            time::Date::parse(s, time::macros::format_description!("[year]-[month]-[day]")).ok()?;
        Some(Self(date.midnight().assume_utc().unix_timestamp() * 1000))
    }

    /// RFC 3339 with milliseconds and `Z`.
    pub fn to_rfc3339(self) -> String {
        let t = OffsetDateTime::from_unix_timestamp_nanos(self.0 as i128 * 1_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
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
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
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
}
