//! HL7v2 TS/DTM → FHIR date/dateTime text, keeping the precision sent and the real UTC offset.
//!
//! A time without an offset is the sender's local time (default `Europe/Paris`, per-sender setting): it is
//! placed in that zone with jiff, so `20260714102500` becomes `2026-07-14T10:25:00+02:00` in summer and
//! `+01:00` in winter; local time is never relabelled as UTC. Precision: `YYYY`, `YYYYMM`, `YYYYMMDD` stay a
//! year, a month, a date; a time of day (hours, minutes) gets `:00` seconds because FHIR dateTime needs them;
//! fractional seconds are kept as sent.

use std::cell::Cell;

use jiff::civil::DateTime;
use jiff::tz::{Offset, TimeZone};

/// A sender's time zone that remembers its last lookup: the times of one message mostly repeat (EVN-6,
/// PV1-44, ZBE-2…), and the offset of a civil time in a zone depends on nothing else, so a repeated time
/// is not looked up in the zone's rules again.
pub struct Zone<'z> {
    tz: &'z TimeZone,
    last: Cell<Option<(DateTime, Offset)>>,
}

impl<'z> Zone<'z> {
    /// `tz`, nothing looked up yet.
    pub fn new(tz: &'z TimeZone) -> Zone<'z> {
        Zone { tz, last: Cell::new(None) }
    }

    /// The offset of the local time `dt` (an ambiguous or skipped time resolved as jiff's `compatible`).
    fn offset(&self, dt: DateTime) -> Result<Offset, String> {
        if let Some((seen, offset)) = self.last.get()
            && seen == dt
        {
            return Ok(offset);
        }
        let offset = self.tz.to_ambiguous_zoned(dt).compatible().map_err(|e| e.to_string())?.offset();
        self.last.set(Some((dt, offset)));
        Ok(offset)
    }
}

/// Converts an HL7 TS (`YYYY[MM[DD[HH[MM[SS[.S…]]]]]][+/-ZZZZ]`) to FHIR text; the error says what is wrong.
pub fn to_fhir(ts: &str, tz: &TimeZone) -> Result<String, String> {
    to_fhir_in(ts, &Zone::new(tz))
}

/// [`to_fhir`] in a [`Zone`] shared by the times of one message.
pub fn to_fhir_in(ts: &str, zone: &Zone<'_>) -> Result<String, String> {
    let ts = ts.trim();
    let (body, offset) = split_offset(ts)?;
    // Byte searches (the delimiters are ASCII): no char pattern machinery per time.
    let split = body.bytes().position(|b| b == b'.').map(|at| {
        let (main, dot) = body.split_at(at);
        (main, dot.get(1..).unwrap_or_default())
    });
    let (main, fraction) = match split {
        Some((m, f)) if !f.is_empty() && f.len() <= 9 && f.bytes().all(|b| b.is_ascii_digit()) => {
            (m, Some(f))
        }
        Some(_) => return Err("bad fractional seconds".into()),
        None => (body, None),
    };
    if !main.bytes().all(|b| b.is_ascii_digit()) || ![4, 6, 8, 10, 12, 14].contains(&main.len()) {
        return Err("not an HL7 date/time (YYYY[MM[DD[HH[MM[SS]]]]])".into());
    }
    if fraction.is_some() && main.len() != 14 {
        return Err("fractional seconds without seconds".into());
    }
    // Every byte of `main` is an ASCII digit (checked above).
    let num = |r: std::ops::Range<usize>| {
        main.get(r).map(|s| s.bytes().fold(0i16, |n, b| n * 10 + i16::from(b - b'0')))
    };
    let year = num(0..4).ok_or("bad year")?;
    let month = num(4..6);
    let day = num(6..8);
    match main.len() {
        4 => return Ok(main.to_owned()),
        6 => {
            let m = month.filter(|m| (1..=12).contains(m)).ok_or("bad month")?;
            let mut out = String::with_capacity(7);
            push_digits(&mut out, year, 4);
            out.push('-');
            push_digits(&mut out, m, 2);
            return Ok(out);
        }
        8 => {
            let date = jiff::civil::Date::new(year, month.unwrap_or(0) as i8, day.unwrap_or(0) as i8)
                .map_err(|_| "not a calendar date")?;
            let mut out = String::with_capacity(10);
            push_date(&mut out, date.year(), date.month(), date.day());
            return Ok(out);
        }
        _ => {}
    }
    let hour = num(8..10).unwrap_or(0);
    let minute = num(10..12).unwrap_or(0);
    let second = num(12..14).unwrap_or(0);
    let nanos = fraction.map_or(0, |f| {
        // Right-pad to nanoseconds (`25` → 250000000).
        f.bytes().chain(std::iter::repeat(b'0')).take(9).fold(0i32, |n, b| n * 10 + i32::from(b - b'0'))
    });
    let dt = DateTime::new(
        year,
        month.unwrap_or(0) as i8,
        day.unwrap_or(0) as i8,
        hour as i8,
        minute as i8,
        second as i8,
        nanos,
    )
    .map_err(|_| "not a valid date and time")?;
    let offset = match offset {
        Some(o) => o,
        None => zone.offset(dt)?,
    };
    let mut out = String::with_capacity(25 + fraction.map_or(0, |f| f.len() + 1));
    push_date(&mut out, dt.year(), dt.month(), dt.day());
    out.push('T');
    push_digits(&mut out, i16::from(dt.hour()), 2);
    out.push(':');
    push_digits(&mut out, i16::from(dt.minute()), 2);
    out.push(':');
    push_digits(&mut out, i16::from(dt.second()), 2);
    if let Some(f) = fraction {
        out.push('.');
        out.push_str(f);
    }
    let secs = offset.seconds();
    out.push(if secs < 0 { '-' } else { '+' });
    let abs = secs.unsigned_abs();
    // |offset| < 26 h, so both parts fit in an i16.
    push_digits(&mut out, (abs / 3600) as i16, 2);
    out.push(':');
    push_digits(&mut out, ((abs % 3600) / 60) as i16, 2);
    Ok(out)
}

/// `YYYY-MM-DD`.
fn push_date(out: &mut String, year: i16, month: i8, day: i8) {
    push_digits(out, year, 4);
    out.push('-');
    push_digits(out, i16::from(month), 2);
    out.push('-');
    push_digits(out, i16::from(day), 2);
}

/// `n` (0 ≤ n < 10^width) zero-padded to `width` digits, without the formatting machinery.
fn push_digits(out: &mut String, n: i16, width: u32) {
    let n = n.unsigned_abs();
    for place in (0..width).rev() {
        let digit = (n / 10u16.pow(place)) % 10;
        out.push(char::from(b'0' + digit as u8));
    }
}

/// True when `fhir` is a full dateTime (has a time of day), i.e. usable as a FHIR instant.
pub fn is_instant(fhir: &str) -> bool {
    fhir.contains('T')
}

/// The date part of a FHIR date/dateTime (birth dates keep no time of day).
pub fn date_part(fhir: &str) -> &str {
    fhir.split_once('T').map_or(fhir, |(d, _)| d)
}

fn split_offset(ts: &str) -> Result<(&str, Option<Offset>), String> {
    let Some(pos) = ts.bytes().position(|b| b == b'+' || b == b'-') else { return Ok((ts, None)) };
    let (body, off) = ts.split_at(pos);
    let digits = off.get(1..).unwrap_or_default();
    if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err("bad UTC offset (+/-HHMM)".into());
    }
    let h: i32 = digits.get(0..2).and_then(|s| s.parse().ok()).unwrap_or(99);
    let m: i32 = digits.get(2..4).and_then(|s| s.parse().ok()).unwrap_or(99);
    if h > 14 || m > 59 {
        return Err("bad UTC offset (+/-HHMM)".into());
    }
    let secs = (h * 3600 + m * 60) * if off.starts_with('-') { -1 } else { 1 };
    let offset = Offset::from_seconds(secs).map_err(|e| e.to_string())?;
    Ok((body, Some(offset)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paris() -> TimeZone {
        TimeZone::get("Europe/Paris").expect("tzdb")
    }

    #[test]
    fn local_times_get_the_real_offset_of_the_sender_zone() {
        assert_eq!(to_fhir("20260714102500", &paris()).as_deref(), Ok("2026-07-14T10:25:00+02:00"));
        assert_eq!(to_fhir("20261122143015", &paris()).as_deref(), Ok("2026-11-22T14:30:15+01:00"));
        let cayenne = TimeZone::get("America/Cayenne").expect("tzdb");
        assert_eq!(to_fhir("20260714102500", &cayenne).as_deref(), Ok("2026-07-14T10:25:00-03:00"));
    }

    #[test]
    fn a_shared_zone_gives_each_time_its_own_offset() {
        let tz = paris();
        let zone = Zone::new(&tz);
        for (ts, fhir) in [
            ("20261122143015", "2026-11-22T14:30:15+01:00"),
            ("20261122143015", "2026-11-22T14:30:15+01:00"),
            ("20260714102500", "2026-07-14T10:25:00+02:00"),
            ("20261122143015", "2026-11-22T14:30:15+01:00"),
        ] {
            assert_eq!(to_fhir_in(ts, &zone).as_deref(), Ok(fhir), "{ts}");
        }
    }

    #[test]
    fn an_explicit_offset_is_kept() {
        assert_eq!(to_fhir("20260714102500+0000", &paris()).as_deref(), Ok("2026-07-14T10:25:00+00:00"));
        assert_eq!(to_fhir("202607141025-0300", &paris()).as_deref(), Ok("2026-07-14T10:25:00-03:00"));
    }

    #[test]
    fn precision_is_kept() {
        assert_eq!(to_fhir("1979", &paris()).as_deref(), Ok("1979"));
        assert_eq!(to_fhir("197903", &paris()).as_deref(), Ok("1979-03"));
        assert_eq!(to_fhir("19790328", &paris()).as_deref(), Ok("1979-03-28"));
        assert_eq!(to_fhir("202607141025", &paris()).as_deref(), Ok("2026-07-14T10:25:00+02:00"));
        assert_eq!(to_fhir("20260714102500.25", &paris()).as_deref(), Ok("2026-07-14T10:25:00.25+02:00"));
    }

    #[test]
    fn bad_times_are_refused() {
        for bad in ["", "2026-07-14", "20261332", "20260230", "2026071410256", "20260714102500+2", "abc"] {
            assert!(to_fhir(bad, &paris()).is_err(), "{bad}");
        }
    }
}
