//! Maintenance windows such as `Mon-Fri 22:00-06:00` (UTC), when automatic moves may start.

use std::fmt;

const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// A weekly window: a set of start days and a time range that may wrap past midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Bit `d` set means the window opens on day `d` (0 = Monday).
    days: u8,
    /// Minutes after midnight.
    start_minute: u16,
    /// Minutes after midnight; at or before `start_minute` means the window ends the next day.
    end_minute: u16,
}

impl Window {
    /// Parses `DAYS HH:MM-HH:MM` where DAYS is `Mon`, `Mon-Fri` or `Sat,Sun`.
    pub fn parse(text: &str) -> Result<Window, String> {
        let error = || format!("`{text}` is not a window (like \"Mon-Fri 22:00-06:00\")");
        let (days_text, times) = text.trim().split_once(' ').ok_or_else(error)?;
        let mut days = 0u8;
        for part in days_text.split(',') {
            let day = |name: &str| DAYS.iter().position(|d| *d == name).ok_or_else(error);
            match part.split_once('-') {
                Some((first, last)) => {
                    let (first, last) = (day(first)?, day(last)?);
                    let mut d = first;
                    loop {
                        days |= 1 << d;
                        if d == last {
                            break;
                        }
                        d = (d + 1) % 7;
                    }
                }
                None => days |= 1 << day(part)?,
            }
        }
        let (start, end) = times.trim().split_once('-').ok_or_else(error)?;
        let minute = |hhmm: &str| -> Result<u16, String> {
            let (h, m) = hhmm.split_once(':').ok_or_else(error)?;
            let (h, m): (u16, u16) = (
                h.parse().map_err(|_| error())?,
                m.parse().map_err(|_| error())?,
            );
            if h > 24 || m > 59 || (h == 24 && m != 0) || hhmm.len() != 5 {
                return Err(error());
            }
            Ok(h * 60 + m)
        };
        Ok(Window {
            days,
            start_minute: minute(start)?,
            end_minute: minute(end)?,
        })
    }

    /// Whether the window is open at `weekday` (0 = Monday) and `minute` after midnight UTC.
    pub fn contains(&self, weekday: u8, minute: u16) -> bool {
        let opens_on = |day: u8| self.days & (1 << (day % 7)) != 0;
        if self.start_minute < self.end_minute {
            opens_on(weekday) && minute >= self.start_minute && minute < self.end_minute
        } else {
            // Wraps past midnight: open from start on an opening day, until end the day after.
            (opens_on(weekday) && minute >= self.start_minute)
                || (opens_on((weekday + 6) % 7) && minute < self.end_minute)
        }
    }
}

/// The weekday (0 = Monday) and minute after midnight UTC of a Unix time.
fn weekday_minute(unix: u64) -> (u8, u16) {
    let days = unix / 86_400;
    // 1970-01-01 was a Thursday (3 when Monday is 0).
    let weekday = u8::try_from((days + 3) % 7).unwrap_or(0);
    let minute = u16::try_from(unix % 86_400 / 60).unwrap_or(0);
    (weekday, minute)
}

/// Whether automatic moves may start at `unix`: any of `windows` is open, or there are
/// none (no windows means any time).
pub fn is_open(windows: &[Window], unix: u64) -> bool {
    let (weekday, minute) = weekday_minute(unix);
    windows.is_empty() || windows.iter().any(|w| w.contains(weekday, minute))
}

/// The first whole minute at or after `unix` when one of `windows` is open; `None` when
/// none opens within a week (a window with no days).
pub fn next_open(windows: &[Window], unix: u64) -> Option<u64> {
    if is_open(windows, unix) {
        return Some(unix);
    }
    let first_minute = unix - unix % 60 + 60;
    (0..7 * 24 * 60)
        .map(|m| first_minute + m * 60)
        .find(|&t| is_open(windows, t))
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days: Vec<&str> = (0..7)
            .filter(|d| self.days & (1 << d) != 0)
            .map(|d| DAYS[d])
            .collect();
        let hm = |m: u16| format!("{:02}:{:02}", m / 60, m % 60);
        write!(
            f,
            "{} {}-{}",
            days.join(","),
            hm(self.start_minute),
            hm(self.end_minute)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weekday_night_window_wraps_midnight() {
        let window = Window::parse("Mon-Fri 22:00-06:00").expect("valid");
        let cases = [
            (0, 22 * 60, true),
            (0, 21 * 60, false),
            (1, 5 * 60, true),
            (5, 5 * 60, true),
            (5, 23 * 60, false),
            (6, 3 * 60, false),
            (0, 3 * 60, false),
        ];
        for (day, minute, open) in cases {
            assert_eq!(
                window.contains(day, minute),
                open,
                "day {day} minute {minute}"
            );
        }
    }

    #[test]
    fn finds_the_next_opening_from_a_unix_time() {
        let nights = [Window::parse("Mon-Fri 22:00-06:00").expect("valid")];
        // 2026-11-23 was a Monday.
        let monday = 1_795_392_000;
        let cases = [
            (monday + 21 * 3600 + 30, Some(monday + 22 * 3600)),
            (monday + 23 * 3600, Some(monday + 23 * 3600)),
            (
                monday + 4 * 86_400 + 6 * 3600,
                Some(monday + 4 * 86_400 + 22 * 3600),
            ),
            // Saturday noon: the window opens on Monday evening.
            (
                monday + 5 * 86_400 + 12 * 3600,
                Some(monday + 7 * 86_400 + 22 * 3600),
            ),
        ];
        for (now, expected) in cases {
            assert_eq!(next_open(&nights, now), expected, "from {now}");
        }
        assert_eq!(next_open(&[], monday), Some(monday));
        assert!(is_open(&[], monday));
        assert!(!is_open(&nights, monday + 12 * 3600));
    }

    #[test]
    fn lists_ranges_and_errors() {
        let window = Window::parse("Sat,Sun 00:00-24:00").expect("valid");
        assert!(window.contains(6, 12 * 60) && !window.contains(4, 12 * 60));
        assert!(
            Window::parse("Fri-Mon 10:00-11:00")
                .expect("wraps")
                .contains(6, 630)
        );
        for bad in [
            "",
            "Mon",
            "Mon 25:00-01:00",
            "Xyz 10:00-11:00",
            "Mon 10:00",
            "Mon 1:00-2:00",
        ] {
            assert!(Window::parse(bad).is_err(), "{bad:?} should fail");
        }
    }
}
