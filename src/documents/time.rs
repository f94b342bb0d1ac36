//! HL7 timestamps (`YYYYMMDD[HHMM[SS]][±ZZZZ]`) to XDS (UTC `YYYYMMDDhhmmss`) and FHIR (`dateTime`) forms.

use jiff::civil::DateTime;
use jiff::tz::{Offset, TimeZone};

use crate::mapping;

/// The parts of an HL7 TS: the digits (8, 10, 12 or 14 of them, fractions dropped) and the offset if any.
fn parse(ts: &str) -> Option<(&str, Option<Offset>)> {
    let ts = ts.trim();
    let split = ts.find(['+', '-']).unwrap_or(ts.len());
    let (digits, offset) = ts.split_at(split);
    let digits = digits.split('.').next().unwrap_or(digits);
    if digits.len() < 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let offset = if offset.len() == 5 {
        let sign: i32 = if offset.starts_with('-') { -1 } else { 1 };
        let hours: i32 = offset.get(1..3)?.parse().ok()?;
        let minutes: i32 = offset.get(3..5)?.parse().ok()?;
        Some(Offset::from_seconds(sign * (hours * 3600 + minutes * 60)).ok()?)
    } else {
        None
    };
    Some((digits, offset))
}

fn civil(digits: &str) -> Option<DateTime> {
    let n = |range: std::ops::Range<usize>| digits.get(range).and_then(|s| s.parse::<i16>().ok());
    let year = n(0..4)?;
    let month = n(4..6).unwrap_or(1) as i8;
    let day = n(6..8).unwrap_or(1) as i8;
    let hour = n(8..10).unwrap_or(0) as i8;
    let minute = n(10..12).unwrap_or(0) as i8;
    let second = n(12..14).unwrap_or(0) as i8;
    DateTime::new(year, month, day, hour, minute, second, 0).ok()
}

/// XDS form: UTC `YYYYMMDDhhmmss` when the offset is known; the digits as given otherwise (precision kept).
pub fn xds(ts: &str) -> Option<String> {
    let (digits, offset) = parse(ts)?;
    match offset {
        Some(offset) if digits.len() >= 10 => {
            let zoned = civil(digits)?.to_zoned(offset.to_time_zone()).ok()?;
            let utc = zoned.timestamp().to_zoned(jiff::tz::TimeZone::UTC);
            let full = utc.strftime("%Y%m%d%H%M%S").to_string();
            Some(full.get(..digits.len().max(12)).unwrap_or(&full).to_string())
        }
        _ => Some(digits.to_string()),
    }
}

/// FHIR `dateTime`: `YYYY-MM-DD` for a date, `YYYY-MM-DDThh:mm:ss±hh:mm` when the time and offset are known
/// (a time without an offset is cut to the date: FHIR requires the offset with a time, and a CDA names no
/// sender time zone). The text itself is written by the HL7v2 mapping's converter, [`mapping::time::to_fhir`],
/// once the digits are cut to a precision it takes (a year, a month, a date, or a time to the minute or second).
pub fn fhir(ts: &str) -> Option<String> {
    let (digits, offset) = parse(ts)?;
    let precision = match digits.len() {
        4..=5 => 4,
        6..=7 => 6,
        8..=9 => 8,
        n => n.min(14) & !1,
    };
    let digits = &digits[..precision];
    match offset {
        Some(offset) if digits.len() >= 10 => mapping::time::to_fhir(digits, &offset.to_time_zone()).ok(),
        _ => mapping::time::to_fhir(&digits[..digits.len().min(8)], &TimeZone::UTC).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xds_times_are_utc() {
        assert_eq!(xds("20210401171000+0100").as_deref(), Some("20210401161000"));
        assert_eq!(xds("202101040735+0100").as_deref(), Some("202101040635"));
        assert_eq!(xds("19790328").as_deref(), Some("19790328"));
        assert_eq!(xds("nonsense"), None);
    }

    #[test]
    fn fhir_date_times_keep_the_offset() {
        assert_eq!(fhir("20210401171000+0100").as_deref(), Some("2021-04-01T17:10:00+01:00"));
        assert_eq!(fhir("19790328").as_deref(), Some("1979-03-28"));
        assert_eq!(fhir("20210401171000").as_deref(), Some("2021-04-01"));
        assert_eq!(fhir("20210401171000.5+0100").as_deref(), Some("2021-04-01T17:10:00+01:00"));
        assert_eq!(fhir("2021040117+0100").as_deref(), Some("2021-04-01T17:00:00+01:00"));
        assert_eq!(fhir("2021040").as_deref(), Some("2021-04"));
        assert_eq!(fhir("20211340"), None);
    }
}
