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
    [API_DATE, ISO_DATE, DOTTED_DATE]
        .iter()
        .find_map(|format| Date::parse(text, format).ok())
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
