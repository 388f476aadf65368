//! Scheduled quota resets (`access.user_quota_reset`): parsing the schedule text and finding
//! its boundaries in UTC.
//!
//! Must not: read clocks (callers pass `now`) or touch counters (the data plane resets them).
//!
//! ```text
//!  daily[@HH:MM]            every day at HH:MM UTC (default 00:00)
//!  weekly:<mon..sun>[@HH:MM] every week on that day
//!  monthly:<1..28>[@HH:MM]   every month on that day (29..31 do not exist in every month)
//! ```

use std::fmt;
use std::str::FromStr;

use time::{Duration, OffsetDateTime, Time, Weekday};

/// How often a user's quota counter goes back to zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetPeriod {
    Daily,
    Weekly(Weekday),
    Monthly(u8),
}

/// A period and the UTC time of day it fires at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaResetSchedule {
    pub period: ResetPeriod,
    pub hour: u8,
    pub minute: u8,
}

const DAYS: [(&str, Weekday); 7] = [
    ("mon", Weekday::Monday),
    ("tue", Weekday::Tuesday),
    ("wed", Weekday::Wednesday),
    ("thu", Weekday::Thursday),
    ("fri", Weekday::Friday),
    ("sat", Weekday::Saturday),
    ("sun", Weekday::Sunday),
];

impl FromStr for QuotaResetSchedule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "{s:?} is not a reset schedule (daily[@HH:MM], weekly:<mon..sun>[@HH:MM], monthly:<1..28>[@HH:MM])"
            )
        };
        let (what, at) = match s.trim().split_once('@') {
            Some((w, t)) => (w, Some(t)),
            None => (s.trim(), None),
        };
        let (hour, minute) = match at {
            None => (0, 0),
            Some(t) => {
                let (h, m) = t.split_once(':').ok_or_else(bad)?;
                let h: u8 = h.parse().map_err(|_| bad())?;
                let m: u8 = m.parse().map_err(|_| bad())?;
                if h > 23 || m > 59 {
                    return Err(bad());
                }
                (h, m)
            }
        };
        let period = match what.split_once(':') {
            None if what == "daily" => ResetPeriod::Daily,
            Some(("weekly", d)) => DAYS
                .iter()
                .find(|(n, _)| *n == d)
                .map(|(_, w)| ResetPeriod::Weekly(*w))
                .ok_or_else(bad)?,
            Some(("monthly", d)) => match d.parse::<u8>() {
                Ok(n @ 1..=28) => ResetPeriod::Monthly(n),
                _ => return Err(bad()),
            },
            _ => return Err(bad()),
        };
        Ok(Self {
            period,
            hour,
            minute,
        })
    }
}

impl fmt::Display for QuotaResetSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.period {
            ResetPeriod::Daily => f.write_str("daily")?,
            ResetPeriod::Weekly(w) => {
                let name = DAYS.iter().find(|(_, d)| *d == w).map_or("mon", |(n, _)| n);
                write!(f, "weekly:{name}")?;
            }
            ResetPeriod::Monthly(d) => write!(f, "monthly:{d}")?,
        }
        write!(f, "@{:02}:{:02}", self.hour, self.minute)
    }
}

impl QuotaResetSchedule {
    fn at(&self, day: OffsetDateTime) -> OffsetDateTime {
        let t = Time::from_hms(self.hour, self.minute, 0).unwrap_or(Time::MIDNIGHT);
        day.replace_time(t)
    }

    /// The latest boundary at or before `now` (UTC).
    pub fn last_boundary(&self, now: OffsetDateTime) -> OffsetDateTime {
        let now = now.to_offset(time::UtcOffset::UTC);
        match self.period {
            ResetPeriod::Daily => {
                let today = self.at(now);
                if today <= now {
                    today
                } else {
                    today - Duration::days(1)
                }
            }
            ResetPeriod::Weekly(w) => {
                let back =
                    (7 + now.weekday().number_days_from_monday() - w.number_days_from_monday()) % 7;
                let candidate = self.at(now - Duration::days(i64::from(back)));
                if candidate <= now {
                    candidate
                } else {
                    candidate - Duration::days(7)
                }
            }
            ResetPeriod::Monthly(d) => {
                let this = now.replace_day(d).map(|x| self.at(x)).unwrap_or(now);
                if this <= now {
                    this
                } else {
                    // Day `d` (≤ 28) exists in every month: step into the previous month.
                    let prev = now.replace_day(1).unwrap_or(now) - Duration::days(1);
                    prev.replace_day(d).map(|x| self.at(x)).unwrap_or(prev)
                }
            }
        }
    }

    /// The first boundary after `now` (UTC).
    pub fn next_boundary(&self, now: OffsetDateTime) -> OffsetDateTime {
        let last = self.last_boundary(now);
        match self.period {
            ResetPeriod::Daily => last + Duration::days(1),
            ResetPeriod::Weekly(_) => last + Duration::days(7),
            ResetPeriod::Monthly(_) => {
                // The 28th + 4 days is always in the next month; then pin the day again.
                self.last_boundary(last + Duration::days(32))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn s(t: &str) -> QuotaResetSchedule {
        t.parse().expect(t)
    }

    #[test]
    fn parse_and_print() {
        assert_eq!(s("daily").to_string(), "daily@00:00");
        assert_eq!(s("weekly:sun@03:30").to_string(), "weekly:sun@03:30");
        assert_eq!(s("monthly:28@23:59").to_string(), "monthly:28@23:59");
        for bad in [
            "",
            "hourly",
            "weekly:xyz",
            "monthly:29",
            "monthly:0",
            "daily@24:00",
            "daily@1",
        ] {
            assert!(bad.parse::<QuotaResetSchedule>().is_err(), "{bad}");
        }
    }

    #[test]
    fn boundaries() {
        let now = datetime!(2027-03-10 12:00 UTC); // a Wednesday
        assert_eq!(
            s("daily@03:00").last_boundary(now),
            datetime!(2027-03-10 03:00 UTC)
        );
        assert_eq!(
            s("daily@13:00").last_boundary(now),
            datetime!(2027-03-09 13:00 UTC)
        );
        assert_eq!(
            s("daily@13:00").next_boundary(now),
            datetime!(2027-03-10 13:00 UTC)
        );
        assert_eq!(
            s("weekly:mon").last_boundary(now),
            datetime!(2027-03-08 00:00 UTC)
        );
        assert_eq!(s("weekly:wed@12:00").last_boundary(now), now);
        assert_eq!(
            s("weekly:wed@12:01").last_boundary(now),
            datetime!(2027-03-03 12:01 UTC)
        );
        assert_eq!(
            s("monthly:1").last_boundary(now),
            datetime!(2027-03-01 00:00 UTC)
        );
        assert_eq!(
            s("monthly:15").last_boundary(now),
            datetime!(2027-02-15 00:00 UTC)
        );
        assert_eq!(
            s("monthly:15").next_boundary(now),
            datetime!(2027-03-15 00:00 UTC)
        );
        assert_eq!(
            s("monthly:1").last_boundary(datetime!(2027-01-01 00:00 UTC) - Duration::seconds(1)),
            datetime!(2026-12-01 00:00 UTC)
        );
    }
}
