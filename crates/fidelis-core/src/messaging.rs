//! Messages to members (PRODUCT.md §10): the program's rules for when and in which language
//! a message may go. Quiet hours, in the program's time zone, defer a non-urgent message to
//! the end of the window; an urgent one (a redemption's receipt) goes at once.

use chrono::{DateTime, Duration, NaiveTime, Utc};
use chrono_tz::Tz;

/// The languages messages (and the portal) are written in.
pub const LANGUAGES: [&str; 2] = ["en", "ja"];

/// A daily window of local time in which non-urgent messages wait. `from` after `to` spans
/// midnight (21:00–08:00); `from == to` is never quiet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietHours {
    pub from: NaiveTime,
    pub to: NaiveTime,
}

impl QuietHours {
    fn contains(&self, t: NaiveTime) -> bool {
        if self.from <= self.to {
            self.from <= t && t < self.to
        } else {
            t >= self.from || t < self.to
        }
    }

    /// When a non-urgent message due at `at` may go: `at` itself outside the window, else
    /// the window's end (the first instant whose local time is `to`, across a daylight
    /// saving change too).
    pub fn defer(&self, tz: Tz, at: DateTime<Utc>) -> DateTime<Utc> {
        let local = at.with_timezone(&tz).naive_local();
        if !self.contains(local.time()) {
            return at;
        }
        let mut day = local.date();
        if local.time() >= self.to {
            day += Duration::days(1);
        }
        let end = crate::calendar::local_to_utc(tz, day.and_time(self.to));
        end.max(at)
    }
}

/// The program's messaging rules (`messaging:` in the definition).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Messaging {
    pub quiet_hours: Option<QuietHours>,
    /// The language of a member whose profile names none the program writes in.
    pub default_language: &'static str,
}

impl Default for Messaging {
    fn default() -> Self {
        Self {
            quiet_hours: None,
            default_language: LANGUAGES[0],
        }
    }
}

impl Messaging {
    /// When a message due at `at` may go.
    pub fn send_at(&self, tz: Tz, at: DateTime<Utc>, urgent: bool) -> DateTime<Utc> {
        match (&self.quiet_hours, urgent) {
            (Some(q), false) => q.defer(tz, at),
            _ => at,
        }
    }

    /// The member's language: the profile's `language` when the program writes in it.
    pub fn language(&self, profile: &serde_json::Value) -> &'static str {
        profile
            .get("language")
            .and_then(serde_json::Value::as_str)
            .and_then(|l| LANGUAGES.iter().find(|x| **x == l))
            .copied()
            .unwrap_or(self.default_language)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).expect("the test fixture is valid")
    }

    #[test]
    fn quiet_hours_defer_to_the_window_end_in_local_time() {
        let tz: Tz = "Europe/Berlin".parse().expect("the test fixture is valid");
        let q = QuietHours {
            from: t(21, 0),
            to: t(8, 0),
        };
        // 22:30 local (21:30 UTC in winter) waits for 08:00 local next day (07:00 UTC).
        let late = Utc
            .with_ymd_and_hms(2026, 1, 10, 21, 30, 0)
            .single()
            .expect("the test fixture is valid");
        assert_eq!(
            q.defer(tz, late),
            Utc.with_ymd_and_hms(2026, 1, 11, 7, 0, 0)
                .single()
                .expect("the test fixture is valid")
        );
        // 06:00 local waits for 08:00 the same day.
        let early = Utc
            .with_ymd_and_hms(2026, 1, 10, 5, 0, 0)
            .single()
            .expect("the test fixture is valid");
        assert_eq!(
            q.defer(tz, early),
            Utc.with_ymd_and_hms(2026, 1, 10, 7, 0, 0)
                .single()
                .expect("the test fixture is valid")
        );
        // Noon goes at once; so does an urgent message at night.
        let noon = Utc
            .with_ymd_and_hms(2026, 1, 10, 11, 0, 0)
            .single()
            .expect("the test fixture is valid");
        assert_eq!(q.defer(tz, noon), noon);
        let m = Messaging {
            quiet_hours: Some(q),
            default_language: "en",
        };
        assert_eq!(m.send_at(tz, late, true), late);
        // The night the clocks go forward (29 March 2026, 02:00 -> 03:00): 08:00 local
        // is 06:00 UTC.
        let spring = Utc
            .with_ymd_and_hms(2026, 3, 28, 23, 0, 0)
            .single()
            .expect("the test fixture is valid");
        assert_eq!(
            q.defer(tz, spring),
            Utc.with_ymd_and_hms(2026, 3, 29, 6, 0, 0)
                .single()
                .expect("the test fixture is valid")
        );
        // A window within one day.
        let lunch = QuietHours {
            from: t(12, 0),
            to: t(13, 0),
        };
        let at = Utc
            .with_ymd_and_hms(2026, 1, 10, 11, 30, 0)
            .single()
            .expect("the test fixture is valid");
        assert_eq!(
            lunch.defer(tz, at),
            Utc.with_ymd_and_hms(2026, 1, 10, 12, 0, 0)
                .single()
                .expect("the test fixture is valid")
        );
    }

    #[test]
    fn the_language_is_the_profiles_when_the_program_writes_in_it() {
        let m = Messaging {
            quiet_hours: None,
            default_language: "ja",
        };
        assert_eq!(m.language(&serde_json::json!({"language": "en"})), "en");
        assert_eq!(m.language(&serde_json::json!({"language": "fr"})), "ja");
        assert_eq!(m.language(&serde_json::json!({})), "ja");
    }
}
