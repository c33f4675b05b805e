//! Retention policies: which snapshots of one job to keep.
//!
//! The rules and how they combine follow restic's `forget` (a snapshot
//! kept by any rule is kept):
//! - `keep-last N`: the N newest snapshots;
//! - `keep-hourly/daily/weekly/monthly/yearly N`: walking from the newest,
//!   the newest snapshot of each of the last N hours (days, ISO weeks,
//!   months, years) that have one;
//! - `keep-within D`: every snapshot at most D older than the job's newest
//!   (relative to the newest, not to now: a job whose backups stopped does
//!   not lose its history to the clock);
//! - `keep-tag T`: every snapshot tagged T.
//!
//! Calendar buckets are civil time in a time zone (the host's by default):
//! a "day" is a calendar date there, so a DST change makes a 23- or 25-hour
//! day, never two days or none. In the hour that repeats when clocks go
//! back, the two hours are told apart by their UTC offset.
//!
//! Pins, the newest snapshot of a job and pg_dump companions are not rules
//! of a policy: the caller ([`super::plan`]) applies them around it.

use std::collections::BTreeSet;
use std::time::Duration;

use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// A retention policy (`[retention]` or `[[jobs]] retention` in the
/// settings file, or `coffer forget --keep-…`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Policy {
    /// Keep the N newest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<u32>,
    /// Keep the newest of each of the last N hours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_hourly: Option<u32>,
    /// Keep the newest of each of the last N days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_daily: Option<u32>,
    /// Keep the newest of each of the last N ISO weeks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_weekly: Option<u32>,
    /// Keep the newest of each of the last N months.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_monthly: Option<u32>,
    /// Keep the newest of each of the last N years.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_yearly: Option<u32>,
    /// Keep everything at most this much older than the newest (humantime:
    /// `30d`, `12h`, `1y 6months`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "humantime_opt"
    )]
    pub keep_within: Option<Duration>,
    /// Keep every snapshot with one of these tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty", alias = "keep-tag")]
    pub keep_tags: Vec<String>,
    /// The point-in-time recovery window: keep every snapshot at most this
    /// much older than the newest and the newest one older than that (a
    /// recovery to the window's start needs a base backup from before it);
    /// `coffer prune` keeps the WAL from that one on.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "humantime_opt"
    )]
    pub keep_wal_within: Option<Duration>,
}

mod humantime_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_duration(&s)
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
}

/// Parses a `keep-within` duration (`30d`, `12h`, `2w`, `1y 6months`).
///
/// # Errors
/// A message naming the value and the accepted forms.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| {
        format!("{s:?} is not a duration ({e}); write it like 30d, 12h, 2w or \"1y 6months\"")
    })
}

/// Why a snapshot is kept.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// One of the N newest.
    Last,
    /// Newest of its hour.
    Hourly,
    /// Newest of its day.
    Daily,
    /// Newest of its ISO week.
    Weekly,
    /// Newest of its month.
    Monthly,
    /// Newest of its year.
    Yearly,
    /// Within `keep-within` of the newest.
    Within,
    /// Has a kept tag.
    Tag(String),
    /// Needed for point-in-time recovery into the `keep-wal-within` window.
    WalWindow,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Last => f.write_str("last"),
            Reason::Hourly => f.write_str("hourly"),
            Reason::Daily => f.write_str("daily"),
            Reason::Weekly => f.write_str("weekly"),
            Reason::Monthly => f.write_str("monthly"),
            Reason::Yearly => f.write_str("yearly"),
            Reason::Within => f.write_str("within"),
            Reason::Tag(t) => write!(f, "tag {t}"),
            Reason::WalWindow => f.write_str("wal-window"),
        }
    }
}

/// A snapshot as a policy sees it.
#[derive(Debug, Clone)]
pub struct Dated<'a> {
    /// When it was made.
    pub time: Timestamp,
    /// Its tags.
    pub tags: &'a [String],
}

impl Policy {
    /// True when no rule could keep anything (every count absent or zero, no
    /// duration, no tag): such a policy would forget a whole job.
    pub fn keeps_nothing(&self) -> bool {
        let counts = [
            self.keep_last,
            self.keep_hourly,
            self.keep_daily,
            self.keep_weekly,
            self.keep_monthly,
            self.keep_yearly,
        ];
        counts.iter().all(|c| c.unwrap_or(0) == 0)
            && self.keep_within.is_none()
            && self.keep_wal_within.is_none()
            && self.keep_tags.is_empty()
    }

    /// True when the policy sets no rule at all (the caller then looks for
    /// one elsewhere: the job's, the default, `BACKUP_RETENTION`).
    pub fn is_unset(&self) -> bool {
        *self == Policy::default()
    }

    /// The rules each snapshot is kept by, in `snapshots`' order (empty:
    /// forget it). `tz` is the time zone of the calendar buckets.
    pub fn apply(&self, snapshots: &[Dated<'_>], tz: &TimeZone) -> Vec<BTreeSet<Reason>> {
        let mut reasons = vec![BTreeSet::new(); snapshots.len()];
        // Newest first; ties keep input order (stable sort).
        let mut order: Vec<usize> = (0..snapshots.len()).collect();
        order.sort_by(|&a, &b| snapshots[b].time.cmp(&snapshots[a].time));
        let Some(&newest) = order.first() else {
            return reasons;
        };
        let newest = snapshots[newest].time;
        let mut buckets: Vec<(Reason, u32, Option<Bucket>)> = [
            (Reason::Last, self.keep_last),
            (Reason::Hourly, self.keep_hourly),
            (Reason::Daily, self.keep_daily),
            (Reason::Weekly, self.keep_weekly),
            (Reason::Monthly, self.keep_monthly),
            (Reason::Yearly, self.keep_yearly),
        ]
        .into_iter()
        .filter_map(|(r, n)| n.filter(|&n| n > 0).map(|n| (r, n, None)))
        .collect();
        for (seq, &i) in order.iter().enumerate() {
            let s = &snapshots[i];
            for (rule, left, last) in buckets.iter_mut() {
                let b = bucket(rule, s.time, tz, seq);
                if *left > 0 && last.as_ref() != Some(&b) {
                    reasons[i].insert(rule.clone());
                    *left -= 1;
                    *last = Some(b);
                }
            }
            if let Some(w) = self.keep_within {
                let age = newest.duration_since(s.time);
                if age.as_secs() >= 0 && age.unsigned_abs() <= w {
                    reasons[i].insert(Reason::Within);
                }
            }
            for t in &self.keep_tags {
                if s.tags.contains(t) {
                    reasons[i].insert(Reason::Tag(t.clone()));
                }
            }
        }
        if let Some(w) = self.keep_wal_within {
            // Newest first: those inside the window, then the first outside.
            for &i in &order {
                let age = newest.duration_since(snapshots[i].time).unsigned_abs();
                reasons[i].insert(Reason::WalWindow);
                if age > w {
                    break;
                }
            }
        }
        reasons
    }
}

/// A calendar bucket: equal values mean the same hour (day, week, …).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Bucket {
    /// `keep-last`: every snapshot is its own bucket.
    Each(usize),
    /// Date, hour, and UTC offset (the repeated hour of a DST change is two).
    Hour(jiff::civil::Date, i8, i32),
    Day(jiff::civil::Date),
    Week(i16, i8),
    Month(i16, i8),
    Year(i16),
}

fn bucket(rule: &Reason, t: Timestamp, tz: &TimeZone, seq: usize) -> Bucket {
    let z = t.to_zoned(tz.clone());
    match rule {
        Reason::Hourly => Bucket::Hour(z.date(), z.hour(), z.offset().seconds()),
        Reason::Daily => Bucket::Day(z.date()),
        Reason::Weekly => {
            let w = z.date().iso_week_date();
            Bucket::Week(w.year(), w.week())
        }
        Reason::Monthly => Bucket::Month(z.year(), z.month()),
        Reason::Yearly => Bucket::Year(z.year()),
        _ => Bucket::Each(seq),
    }
}
