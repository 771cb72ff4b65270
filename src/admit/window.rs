//! Validity windows: a principal's `valid_from`/`valid_until` and allowed
//! days and hours in a time zone (a contractor's contract window).

use std::time::SystemTime;

use jiff::Timestamp;

use crate::config::{AccessWindow, DailyHours};

/// Why a principal may not call now (403, and a record).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OutsideWindow {
    /// Before `valid_from`.
    #[error("access starts at {}", rfc3339(*from))]
    NotYetValid {
        /// `valid_from`.
        from: SystemTime,
    },
    /// At or after `valid_until`.
    #[error("access ended at {}", rfc3339(*until))]
    Expired {
        /// `valid_until`.
        until: SystemTime,
    },
    /// Outside the allowed days and hours.
    #[error("outside the allowed hours (now {local})")]
    OutsideHours {
        /// The local time it is, such as `Sun 2026-03-08 10:00 America/Los_Angeles`.
        local: String,
    },
}

impl OutsideWindow {
    /// A short code for the 403 body and the record's `why`.
    pub fn code(&self) -> &'static str {
        match self {
            OutsideWindow::NotYetValid { .. } => "not_yet_valid",
            OutsideWindow::Expired { .. } => "access_expired",
            OutsideWindow::OutsideHours { .. } => "outside_hours",
        }
    }
}

fn rfc3339(t: SystemTime) -> String {
    Timestamp::try_from(t).map_or_else(|_| "(out of range)".to_owned(), |ts| ts.to_string())
}

/// `Ok` when `now` is inside the window: at or after `valid_from`, before
/// `valid_until`, and within the allowed days and hours.
pub fn check(window: &AccessWindow, now: SystemTime) -> Result<(), OutsideWindow> {
    if let Some(from) = window.valid_from {
        if now < from {
            return Err(OutsideWindow::NotYetValid { from });
        }
    }
    if let Some(until) = window.valid_until {
        if now >= until {
            return Err(OutsideWindow::Expired { until });
        }
    }
    if let Some(hours) = &window.hours {
        if !within_hours(hours, now) {
            return Err(OutsideWindow::OutsideHours {
                local: local_time(hours, now),
            });
        }
    }
    Ok(())
}

/// True when `now` falls in the allowed days and hours, read on the wall
/// clock of the hours' time zone (so the window follows daylight saving
/// time). A time the time zone cannot represent is outside.
pub fn within_hours(hours: &DailyHours, now: SystemTime) -> bool {
    let Ok(ts) = Timestamp::try_from(now) else {
        return false;
    };
    let local = hours.tz.to_datetime(ts);
    let (h, m) = (local.hour(), local.minute());
    let minute = u16::try_from(i32::from(h) * 60 + i32::from(m)).unwrap_or(u16::MAX);
    let day = local.weekday();
    let (from, until) = (hours.from_minute, hours.until_minute);
    if from < until {
        hours.days.contains(day) && from <= minute && minute < until
    } else {
        // Past midnight: the early part belongs to the day before.
        (hours.days.contains(day) && minute >= from)
            || (hours.days.contains(day.previous()) && minute < until)
    }
}

fn local_time(hours: &DailyHours, now: SystemTime) -> String {
    match Timestamp::try_from(now) {
        Ok(ts) => {
            let local = hours.tz.to_datetime(ts);
            format!(
                "{} {} {:02}:{:02} {}",
                day_name(local.weekday()),
                local.date(),
                local.hour(),
                local.minute(),
                hours.tz_name
            )
        }
        Err(_) => "(out of range)".to_owned(),
    }
}

fn day_name(day: jiff::civil::Weekday) -> &'static str {
    const NAMES: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    usize::try_from(day.to_monday_zero_offset())
        .ok()
        .and_then(|i| NAMES.get(i))
        .copied()
        .unwrap_or("?")
}
