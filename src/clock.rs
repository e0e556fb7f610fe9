//! Timestamps as the API and the store write them: RFC 3339, UTC, microseconds. Fixed width,
//! so stored text sorts in time order.

use chrono::{DateTime, SecondsFormat, Utc};

pub fn format(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub fn now() -> String {
    format(Utc::now())
}

/// A timestamp as [`format`] writes it (any RFC 3339 time, in fact).
pub fn parse(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|at| at.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_have_microseconds_and_sort_as_text() {
        let earlier = format(DateTime::from_timestamp(1_700_000_000, 5_000).unwrap_or_default());
        let later =
            format(DateTime::from_timestamp(1_700_000_000, 120_000_000).unwrap_or_default());
        assert_eq!(earlier, "2023-11-14T22:13:20.000005Z");
        assert!(earlier < later);
    }
}
