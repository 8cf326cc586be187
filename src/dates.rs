//! Calendar helpers shared by the client and the sandbox.
//!
//! Komfortkasse writes dates as `dd-MM-yyyy` and judges "today" and "in the future" by its own
//! clock in Germany. Both sides of kksync therefore use the civil date in Europe/Berlin, computed
//! from UTC with the EU daylight-saving rule, so a run at 00:30 local time does not reject an
//! order placed a minute earlier as "in the future".

use time::{Date, Duration, Month, OffsetDateTime, PrimitiveDateTime, Time, Weekday};

/// The format the API uses for every date: `dd-MM-yyyy`.
pub const API_DATE: &[time::format_description::BorrowedFormatItem<'static>] =
    time::macros::format_description!("[day]-[month]-[year]");
const ISO_DATE: &[time::format_description::BorrowedFormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day]");
const DOTTED_DATE: &[time::format_description::BorrowedFormatItem<'static>] =
    time::macros::format_description!("[day].[month].[year]");

/// Parses a date the API way (`dd-MM-yyyy`) only.
pub fn parse_api_date(text: &str) -> Option<Date> {
    Date::parse(text.trim(), API_DATE).ok()
}

/// Parses a date as shops export it: `dd-MM-yyyy`, ISO `yyyy-MM-dd`, or German `dd.MM.yyyy`.
pub fn parse_shop_date(text: &str) -> Option<Date> {
    let text = text.trim();
    if let Some(date) = parse_fixed_width(text.as_bytes()) {
        return Some(date);
    }
    [API_DATE, ISO_DATE, DOTTED_DATE]
        .iter()
        .find_map(|format| Date::parse(text, format).ok())
}

/// The common case without the general parser (it is on the path of every row): exactly ten
/// bytes as `dd-MM-yyyy`, `yyyy-MM-dd` or `dd.MM.yyyy`. `None` sends the text on to the general
/// parser, which also gives the final verdict on impossible dates.
fn parse_fixed_width(text: &[u8]) -> Option<Date> {
    let number = |range: std::ops::Range<usize>| -> Option<u16> {
        text.get(range)?.iter().try_fold(0u16, |n, &b| {
            b.is_ascii_digit().then(|| n * 10 + u16::from(b - b'0'))
        })
    };
    let (day, month, year) = match text {
        [_, _, b'-', _, _, b'-', _, _, _, _] | [_, _, b'.', _, _, b'.', _, _, _, _] => {
            (number(0..2)?, number(3..5)?, number(6..10)?)
        }
        [_, _, _, _, b'-', _, _, b'-', _, _] => (number(8..10)?, number(5..7)?, number(0..4)?),
        _ => return None,
    };
    let month = Month::try_from(u8::try_from(month).ok()?).ok()?;
    Date::from_calendar_date(i32::from(year), month, u8::try_from(day).ok()?).ok()
}

/// Writes a date as the API expects it (`dd-MM-yyyy`) into a stack buffer; `None` for years
/// outside 0..=9999, which [`format_api_date`] handles.
pub fn api_date_bytes(date: Date) -> Option<[u8; 10]> {
    let year = u16::try_from(date.year()).ok().filter(|y| *y <= 9999)?;
    let (day, month) = (date.day(), u8::from(date.month()));
    let digit = |n: u16| b'0' + (n % 10) as u8;
    Some([
        digit(u16::from(day) / 10),
        digit(u16::from(day)),
        b'-',
        digit(u16::from(month) / 10),
        digit(u16::from(month)),
        b'-',
        digit(year / 1000),
        digit(year / 100),
        digit(year / 10),
        digit(year),
    ])
}

/// Formats a date as the API expects it (`dd-MM-yyyy`).
pub fn format_api_date(date: Date) -> String {
    // The format has only day, month and year, which every valid `Date` has, so formatting
    // cannot fail; the fallback keeps this total without a panic path.
    date.format(API_DATE).unwrap_or_else(|_| {
        format!(
            "{:02}-{:02}-{:04}",
            date.day(),
            u8::from(date.month()),
            date.year()
        )
    })
}

/// The civil date in Europe/Berlin at the given instant.
pub fn berlin_date(now: OffsetDateTime) -> Date {
    let utc = now.to_offset(time::UtcOffset::UTC);
    let offset_hours = if is_eu_summer_time(utc) { 2 } else { 1 };
    (utc + Duration::hours(offset_hours)).date()
}

/// Today's date in Europe/Berlin.
pub fn berlin_today() -> Date {
    berlin_date(OffsetDateTime::now_utc())
}

/// Adds calendar months, clamping the day to the end of the target month (31 Aug + 6 months =
/// 28/29 Feb), which is how "not more than 6 months in the future" is read.
pub fn add_months(date: Date, months: u32) -> Date {
    let total = date.year() * 12 + i32::from(u8::from(date.month())) - 1 + months as i32;
    let (year, month0) = (total.div_euclid(12), total.rem_euclid(12));
    let month = Month::try_from(month0 as u8 + 1).unwrap_or(Month::December);
    let day = date.day().min(time::util::days_in_month(month, year));
    Date::from_calendar_date(year, month, day).unwrap_or(date)
}

/// EU rule: summer time from the last Sunday of March 01:00 UTC to the last Sunday of October
/// 01:00 UTC.
fn is_eu_summer_time(utc: OffsetDateTime) -> bool {
    let year = utc.year();
    let start = last_sunday(year, Month::March);
    let end = last_sunday(year, Month::October);
    let one_am = Time::from_hms(1, 0, 0).unwrap_or(Time::MIDNIGHT);
    let naive = PrimitiveDateTime::new(utc.date(), utc.time());
    naive >= PrimitiveDateTime::new(start, one_am) && naive < PrimitiveDateTime::new(end, one_am)
}

fn last_sunday(year: i32, month: Month) -> Date {
    let last_day = time::util::days_in_month(month, year);
    let mut date = Date::from_calendar_date(year, month, last_day).unwrap_or(Date::MIN);
    while date.weekday() != Weekday::Sunday {
        date = date.previous_day().unwrap_or(date);
    }
    date
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::{date, datetime};

    #[test]
    fn parses_the_three_shop_formats_and_rejects_impossible_dates() {
        assert_eq!(parse_shop_date("03-02-2025"), Some(date!(2025 - 02 - 03)));
        assert_eq!(parse_shop_date("2025-02-03"), Some(date!(2025 - 02 - 03)));
        assert_eq!(parse_shop_date("03.02.2025"), Some(date!(2025 - 02 - 03)));
        assert_eq!(parse_shop_date("31-02-2024"), None);
        assert_eq!(parse_api_date("2025-02-03"), None);
        assert_eq!(format_api_date(date!(2025 - 02 - 03)), "03-02-2025");
    }

    #[test]
    fn the_fast_path_agrees_with_the_general_parser() {
        for text in [
            "03-02-2025",
            "2025-02-03",
            "03.02.2025",
            "29-02-2024",
            "29-02-2025",
            "00-01-2025",
            "31-04-2025",
            "1-02-2025x",
            "2025-13-01",
        ] {
            let general = [API_DATE, ISO_DATE, DOTTED_DATE]
                .iter()
                .find_map(|f| Date::parse(text, f).ok());
            assert_eq!(parse_shop_date(text), general, "{text}");
        }
        let date = date!(2025 - 02 - 03);
        assert_eq!(
            api_date_bytes(date).map(|b| String::from_utf8_lossy(&b).into_owned()),
            Some(format_api_date(date))
        );
    }

    #[test]
    fn berlin_date_follows_winter_and_summer_offsets() {
        // 23:30 UTC in winter is 00:30 the next day in Berlin (UTC+1).
        assert_eq!(
            berlin_date(datetime!(2026-01-10 23:30 UTC)),
            date!(2026 - 01 - 11)
        );
        assert_eq!(
            berlin_date(datetime!(2026-01-10 22:30 UTC)),
            date!(2026 - 01 - 10)
        );
        // 22:30 UTC in summer is 00:30 the next day in Berlin (UTC+2).
        assert_eq!(
            berlin_date(datetime!(2026-07-10 22:30 UTC)),
            date!(2026 - 07 - 11)
        );
    }

    #[test]
    fn add_months_clamps_to_month_end() {
        assert_eq!(add_months(date!(2026 - 08 - 31), 6), date!(2027 - 02 - 28));
        assert_eq!(add_months(date!(2026 - 11 - 23), 6), date!(2027 - 05 - 23));
    }
}
