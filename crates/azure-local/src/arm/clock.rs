//! Timestamps in the RFC 3339 form Resource Manager writes (`2024-05-01T12:00:00.0000000Z`).

/// Formats Unix seconds as RFC 3339 UTC with seven fractional digits, as Azure does.
pub fn rfc3339(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let (y, m, d) = civil_date(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.0000000Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// The current time in that form.
pub fn now() -> String {
    rfc3339(crate::state::now_unix())
}

// Days since 1970-01-01 to a proleptic Gregorian date, counting in 400-year eras (146097 days
// each) that start on March 1 so the leap day falls at the end of a year.
fn civil_date(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.0000000Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00.0000000Z");
        assert_eq!(rfc3339(1_714_564_800), "2024-05-01T12:00:00.0000000Z");
        assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59.0000000Z");
    }
}
