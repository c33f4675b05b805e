//! `[[jobs]]`: what to back up, when, with which tags and retention.
//!
//! ```toml
//! [[jobs]]
//! name = "app-db"
//! pg-dump = "host=/var/run/postgresql dbname=app"   # one source per job
//! every = "24h"                                     # or: cron = "30 2 * * *"
//! tags = ["nightly"]
//! retention = { keep-daily = 7, keep-weekly = 4 }
//!
//! [[jobs]]
//! name = "app-files"
//! directory = "/srv/app"
//! exclude = ["node_modules", ".git", "backups"]
//! cron = "0 3 * * 0"
//! ```
//!
//! A job is checked when the settings are read ([`JobSettings`] is
//! deserialized through [`RawJob`]), so a wrong one is refused with its
//! line. With no `[[jobs]]` at all, the seed's variables describe one:
//! [`Settings::effective_jobs`](super::settings::Settings::effective_jobs).

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What a job backs up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobSource {
    /// A database, logically (`coffer backup pg --dbname CONNINFO`).
    PgDump(String),
    /// A whole cluster, physically (`coffer backup pg --physical`).
    PgBasebackup(String),
    /// A directory as a tar stream, without what matches `exclude`.
    Directory {
        /// The directory.
        path: PathBuf,
        /// Patterns left out (see [`crate::source::tar::Excludes`]).
        exclude: Vec<String>,
    },
    /// A file.
    File(PathBuf),
    /// A command's standard output (program, then its arguments).
    Command(Vec<String>),
    /// A restore drill of another job's newest pg_dump snapshot into a
    /// scratch server (needs the identity; run it where the identity is).
    Drill {
        /// The job whose newest snapshot is drilled.
        of: String,
        /// The scratch server (conninfo; empty: the PG* environment).
        scratch: String,
    },
}

/// When a job is due.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// This long after its last run started.
    Every(Duration),
    /// At the times of a cron expression (five fields, in the settings'
    /// time zone).
    Cron(String, Box<croner::Cron>),
}

impl Schedule {
    /// Whether a job whose last run started at `last` (none: never) is due
    /// at `now`: an interval once it has passed; a cron expression once
    /// one of its times came after `last` (so runs missed while the host
    /// was down are caught up once, not once per missed time).
    pub fn due(&self, last: Option<&jiff::Zoned>, now: &jiff::Zoned) -> bool {
        match last {
            None => true,
            Some(last) => self.next_after(last).is_some_and(|next| next <= *now),
        }
    }

    /// When a job whose last run started at `last` is due next (`None` for
    /// a cron expression with no further time).
    pub fn next_after(&self, last: &jiff::Zoned) -> Option<jiff::Zoned> {
        match self {
            Schedule::Every(d) => {
                let span = jiff::SignedDuration::try_from(*d).ok()?;
                last.checked_add(span).ok()
            }
            Schedule::Cron(_, c) => c.find_next_occurrence(last, false).ok(),
        }
    }

    /// The longest a healthy job goes without a successful backup: the
    /// interval, or the largest gap between two of the cron times in the
    /// coming eight days (a weekly job is healthy for a week).
    pub fn period(&self, now: &jiff::Zoned) -> Duration {
        match self {
            Schedule::Every(d) => *d,
            Schedule::Cron(_, c) => {
                let mut prev = match c.find_next_occurrence(now, false) {
                    Ok(t) => t,
                    Err(_) => return Duration::from_secs(86_400),
                };
                let mut widest = 0i64;
                for _ in 0..64 {
                    let Ok(next) = c.find_next_occurrence(&prev, false) else {
                        break;
                    };
                    widest =
                        widest.max(next.timestamp().as_second() - prev.timestamp().as_second());
                    if next.timestamp().as_second() - now.timestamp().as_second() > 8 * 86_400 {
                        break;
                    }
                    prev = next;
                }
                Duration::from_secs(widest.max(60) as u64)
            }
        }
    }
}

/// One `[[jobs]]` entry, checked.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "RawJob", into = "RawJob")]
pub struct JobSettings {
    /// The job's name (`--job`).
    pub name: String,
    /// What it backs up; `None` for a job that only names a retention
    /// policy (or archives WAL) and is never run by `coffer run`.
    pub source: Option<JobSource>,
    /// When it is due; `None`: only when named (`coffer run JOB`).
    pub schedule: Option<Schedule>,
    /// Tags of its snapshots.
    pub tags: Vec<String>,
    /// Its retention policy.
    pub retention: Option<crate::retention::Policy>,
    /// Its healthchecks-style ping URL (`/start`, success, `/fail`).
    pub ping: Option<String>,
    raw: RawJob,
}

/// A `[[jobs]]` entry as written.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawJob {
    /// The job's name.
    pub name: String,
    /// A database to dump (libpq conninfo or URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pg_dump: Option<String>,
    /// A cluster to back up physically (conninfo).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pg_basebackup: Option<String>,
    /// A directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory: Option<PathBuf>,
    /// Patterns the directory's backup leaves out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// A file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// A command whose output is backed up (program, arguments).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// A restore drill of this job's newest pg_dump snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill: Option<String>,
    /// The drill's scratch server (conninfo) [default: PG* environment].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scratch: Option<String>,
    /// An interval (humantime: `24h`, `6h`, `30m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<String>,
    /// A cron expression (`minute hour day-of-month month day-of-week`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// Tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Retention policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<crate::retention::Policy>,
    /// A healthchecks-style ping URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ping: Option<String>,
}

impl TryFrom<RawJob> for JobSettings {
    type Error = String;

    fn try_from(raw: RawJob) -> Result<Self, String> {
        let name = raw.name.trim().to_string();
        if name.is_empty() || name.contains(['/', '\0']) {
            return Err(format!(
                "job name {:?} must be non-empty and without '/'",
                raw.name
            ));
        }
        let job = |m: String| format!("job {name:?}: {m}");
        let mut sources = Vec::new();
        if let Some(c) = &raw.pg_dump {
            sources.push(JobSource::PgDump(c.clone()));
        }
        if let Some(c) = &raw.pg_basebackup {
            sources.push(JobSource::PgBasebackup(c.clone()));
        }
        if let Some(p) = &raw.directory {
            sources.push(JobSource::Directory {
                path: p.clone(),
                exclude: raw.exclude.clone(),
            });
        }
        if let Some(p) = &raw.file {
            sources.push(JobSource::File(p.clone()));
        }
        if let Some(c) = &raw.command {
            if c.is_empty() {
                return Err(job(
                    "command = [] is empty; give the program and its arguments".into(),
                ));
            }
            sources.push(JobSource::Command(c.clone()));
        }
        if let Some(of) = &raw.drill {
            sources.push(JobSource::Drill {
                of: of.clone(),
                scratch: raw.scratch.clone().unwrap_or_default(),
            });
        }
        if sources.len() > 1 {
            return Err(job(
                "give one of pg-dump, pg-basebackup, directory, file, command or drill (a job does one thing)"
                    .into(),
            ));
        }
        if raw.scratch.is_some() && raw.drill.is_none() {
            return Err(job("scratch applies only to a drill".into()));
        }
        if !raw.exclude.is_empty() && raw.directory.is_none() {
            return Err(job("exclude applies only to a directory".into()));
        }
        for p in &raw.exclude {
            glob::Pattern::new(p)
                .map_err(|e| job(format!("exclude {p:?} is not a pattern: {e}")))?;
        }
        let schedule = match (&raw.every, &raw.cron) {
            (Some(_), Some(_)) => return Err(job("give every or cron, not both".into())),
            (Some(e), None) => {
                let d = humantime::parse_duration(e).map_err(|err| {
                    job(format!("every = {e:?} is not a duration ({err}); write e.g. \"24h\" or \"30m\""))
                })?;
                if d < Duration::from_secs(1) {
                    return Err(job(format!("every = {e:?} is shorter than a second")));
                }
                Some(Schedule::Every(d))
            }
            (None, Some(c)) => Some(Schedule::Cron(
                c.clone(),
                Box::new(croner::Cron::from_str(c).map_err(|err| {
                    job(format!(
                        "cron = {c:?} is not a cron expression ({err}); write five fields, e.g. \"30 2 * * *\""
                    ))
                })?),
            )),
            (None, None) => None,
        };
        Ok(JobSettings {
            name,
            source: sources.pop(),
            schedule,
            tags: raw.tags.clone(),
            retention: raw.retention.clone(),
            ping: raw.ping.clone(),
            raw,
        })
    }
}

impl From<JobSettings> for RawJob {
    fn from(j: JobSettings) -> RawJob {
        j.raw
    }
}

/// The seed's variables as a job, for a host with no `[[jobs]]`:
/// `PG*` name the database (a logical dump), `BACKUP_INTERVAL` the hours
/// between backups (default 24), `BACKUP_ENABLED=false` turns it off;
/// `BACKUP_RETENTION` and `BACKUP_DIRECTORY` apply as everywhere else.
/// `None` when no `PGHOST`/`PGDATABASE` is set or backups are disabled.
///
/// # Errors
/// A `BACKUP_INTERVAL` or `BACKUP_ENABLED` that does not parse.
pub fn seed_job() -> Result<Option<JobSettings>, String> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    if let Some(e) = var("BACKUP_ENABLED") {
        match e.trim().to_ascii_lowercase().as_str() {
            "false" | "0" | "no" | "off" => return Ok(None),
            "true" | "1" | "yes" | "on" => {}
            _ => {
                return Err(format!(
                "BACKUP_ENABLED={e:?} is not true or false; set it to true or false, or unset it"
            ))
            }
        }
    }
    if var("PGHOST").is_none() && var("PGDATABASE").is_none() {
        return Ok(None);
    }
    let hours = match var("BACKUP_INTERVAL") {
        None => 24,
        Some(h) => match h.trim().parse::<u64>() {
            Ok(h) if h > 0 => h,
            _ => {
                return Err(format!(
                    "BACKUP_INTERVAL={h:?} is not a number of hours above 0; set it (e.g. 24) or unset it"
                ))
            }
        },
    };
    JobSettings::try_from(RawJob {
        name: "db".into(),
        pg_dump: Some(String::new()),
        every: Some(format!("{hours}h")),
        ..RawJob::default()
    })
    .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(toml: &str) -> Result<JobSettings, String> {
        #[derive(Deserialize)]
        struct F {
            jobs: Vec<JobSettings>,
        }
        toml::from_str::<F>(toml)
            .map(|mut f| f.jobs.remove(0))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn jobs_are_checked_with_the_line_named() {
        let j = job("[[jobs]]\nname = \"db\"\npg-dump = \"dbname=app\"\nevery = \"6h\"\n").unwrap();
        assert_eq!(j.source, Some(JobSource::PgDump("dbname=app".into())));
        assert!(matches!(j.schedule, Some(Schedule::Every(d)) if d.as_secs() == 6 * 3600));
        for (bad, says) in [
            ("name = \"a\"\nfile = \"/x\"\ndirectory = \"/y\"", "one of"),
            (
                "name = \"a\"\nfile = \"/x\"\nexclude = [\"x\"]",
                "only to a directory",
            ),
            ("name = \"a\"\nevery = \"soon\"", "not a duration"),
            (
                "name = \"a\"\ncron = \"61 * * * *\"",
                "not a cron expression",
            ),
            (
                "name = \"a\"\nevery = \"1h\"\ncron = \"0 3 * * *\"",
                "not both",
            ),
            ("name = \"a\"\nwhen = \"1h\"", "unknown field"),
        ] {
            let e = job(&format!("\n\n[[jobs]]\n{bad}\n")).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
            // The entry's line (its field's, for an unknown field).
            assert!(e.contains("line 3") || e.contains("line 5"), "{bad}: {e}");
        }
    }

    #[test]
    fn intervals_and_cron_times_decide_when_a_job_is_due() {
        let at = |s: &str| {
            s.parse::<jiff::Timestamp>()
                .unwrap()
                .to_zoned(jiff::tz::TimeZone::UTC)
        };
        let every = Schedule::Every(Duration::from_secs(24 * 3600));
        let last = at("2026-01-01T03:00:00Z");
        assert!(every.due(None, &last));
        assert!(!every.due(Some(&last), &at("2026-01-02T02:59:00Z")));
        assert!(every.due(Some(&last), &at("2026-01-02T03:00:00Z")));
        let cron = Schedule::Cron(
            "30 2 * * *".into(),
            Box::new(croner::Cron::from_str("30 2 * * *").unwrap()),
        );
        // Ran at 02:30 on the 1st: not due again until 02:30 on the 2nd;
        // after three days down, due once.
        let ran = at("2026-01-01T02:30:05Z");
        assert!(!cron.due(Some(&ran), &at("2026-01-02T02:29:00Z")));
        assert!(cron.due(Some(&ran), &at("2026-01-02T02:30:00Z")));
        assert!(cron.due(Some(&ran), &at("2026-01-04T12:00:00Z")));
        assert_eq!(cron.period(&ran).as_secs(), 86_400);
        let weekly = Schedule::Cron(
            "0 3 * * 0".into(),
            Box::new(croner::Cron::from_str("0 3 * * 0").unwrap()),
        );
        assert_eq!(weekly.period(&ran).as_secs(), 7 * 86_400);
    }
}
