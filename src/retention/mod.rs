//! Retention: which snapshots `coffer forget` keeps, and why.
//!
//! [`policy`] holds the rules of one job's policy. [`plan`] applies them to
//! every job's snapshots, with what a policy does not decide:
//! - snapshots are grouped by job *and host* (as restic groups by host): two
//!   hosts that happen to share a job name never forget each other's
//!   snapshots;
//! - a pinned snapshot is always kept (`coffer pin`);
//! - the newest snapshot of each group is always kept, unless it is named
//!   explicitly (`coffer forget ID`);
//! - a pg_dump snapshot and its globals snapshot are kept or forgotten
//!   together: the globals follow their dump, and whatever keeps one keeps
//!   both.
//!
//! Pure: no catalog, no tier, no clock (the time zone is a parameter).

pub mod policy;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde::Serialize;
use vault_format::SnapshotId;

pub use policy::{Policy, Reason};

/// A snapshot as retention sees it.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Its id.
    pub id: SnapshotId,
    /// Job.
    pub job: String,
    /// Host that made it.
    pub host: String,
    /// When (RFC 3339).
    pub created: String,
    /// Tags.
    pub tags: Vec<String>,
    /// The pin's reason, when pinned.
    pub pin: Option<String>,
    /// For a globals snapshot: the pg_dump snapshot it belongs to.
    pub dump: Option<SnapshotId>,
}

/// Why a snapshot is kept, beyond a policy's rules.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Keep {
    /// A rule of the policy.
    Rule(Reason),
    /// Pinned, with the pin's reason.
    Pinned(String),
    /// The newest of its job (and host).
    Newest,
    /// Its pg_dump or globals companion is kept.
    Companion(SnapshotId),
    /// The job has no policy: nothing of it is forgotten.
    NoPolicy,
    /// Not among the snapshots named to `coffer forget ID…`.
    NotNamed,
}

impl std::fmt::Display for Keep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Keep::Rule(r) => write!(f, "{r}"),
            Keep::Pinned(why) => write!(f, "pinned ({why})"),
            Keep::Newest => f.write_str("newest"),
            Keep::Companion(id) => write!(f, "companion of {}", &id.to_hex()[..8]),
            Keep::NoPolicy => f.write_str("no policy"),
            Keep::NotNamed => f.write_str("not named"),
        }
    }
}

/// What to forget.
pub enum Selection<'a> {
    /// Apply each job's policy (`None`: the job has none, keep it all).
    Policies(&'a dyn Fn(&str) -> Option<Policy>),
    /// Forget exactly these (and their companions).
    Ids(&'a [SnapshotId]),
}

/// One snapshot's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// Snapshot id.
    pub id: SnapshotId,
    /// When it was made.
    pub created: String,
    /// Keep it?
    pub keep: bool,
    /// Why it is kept (empty when forgotten).
    pub reasons: Vec<Keep>,
}

/// The verdicts for one job on one host, newest first.
#[derive(Debug, Clone, Serialize)]
pub struct GroupPlan {
    /// Job.
    pub job: String,
    /// Host.
    pub host: String,
    /// The policy applied (absent for explicit ids or a job without one).
    pub policy: Option<Policy>,
    /// Each snapshot.
    pub snapshots: Vec<Verdict>,
}

/// Why a plan cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// A snapshot's time does not parse.
    #[error("snapshot {id} has an unreadable time {created:?}; run `coffer index rebuild`")]
    BadTime { id: String, created: String },
    /// An id to forget is pinned.
    #[error("snapshot {id} is pinned ({reason}); run `coffer unpin {id}` first")]
    Pinned { id: String, reason: String },
    /// A policy would keep nothing.
    #[error("the retention policy for job {job:?} keeps nothing; give it at least one --keep-… rule above zero")]
    KeepsNothing { job: String },
}

/// Decides, for every candidate, whether it is kept and why.
///
/// # Errors
/// [`PlanError`].
pub fn plan(
    cands: &[Candidate],
    sel: &Selection<'_>,
    tz: &TimeZone,
) -> Result<Vec<GroupPlan>, PlanError> {
    let times = cands
        .iter()
        .map(|c| {
            c.created
                .parse::<Timestamp>()
                .map_err(|_| PlanError::BadTime {
                    id: c.id.to_hex(),
                    created: c.created.clone(),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let index: HashMap<SnapshotId, usize> =
        cands.iter().enumerate().map(|(i, c)| (c.id, i)).collect();
    // A globals snapshot whose dump is here follows it; else it stands alone.
    let follows = |c: &Candidate| c.dump.filter(|d| index.contains_key(d));
    let mut reasons: Vec<BTreeSet<Keep>> = vec![BTreeSet::new(); cands.len()];
    let mut groups: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
    for (i, c) in cands.iter().enumerate() {
        groups
            .entry((c.job.clone(), c.host.clone()))
            .or_default()
            .push(i);
    }
    let mut policies: BTreeMap<(String, String), Option<Policy>> = BTreeMap::new();
    for (key, members) in &groups {
        let policy = match sel {
            Selection::Ids(_) => None,
            Selection::Policies(f) => f(&key.0),
        };
        if let Selection::Policies(_) = sel {
            let own: Vec<usize> = members
                .iter()
                .copied()
                .filter(|&i| follows(&cands[i]).is_none())
                .collect();
            apply_policy(
                cands,
                &times,
                &own,
                policy.as_ref(),
                &key.0,
                tz,
                &mut reasons,
            )?;
        }
        policies.insert(key.clone(), policy);
    }
    for (i, c) in cands.iter().enumerate() {
        if let Some(p) = &c.pin {
            reasons[i].insert(Keep::Pinned(p.clone()));
        }
    }
    link_companions(cands, &index, &follows, sel, &mut reasons)?;
    Ok(groups
        .into_iter()
        .map(|(key, mut members)| {
            members.sort_by(|&a, &b| times[b].cmp(&times[a]));
            GroupPlan {
                policy: policies.remove(&key).flatten(),
                job: key.0,
                host: key.1,
                snapshots: members
                    .into_iter()
                    .map(|i| Verdict {
                        id: cands[i].id,
                        created: cands[i].created.clone(),
                        keep: !reasons[i].is_empty(),
                        reasons: reasons[i].iter().cloned().collect(),
                    })
                    .collect(),
            }
        })
        .collect())
}

/// Applies one group's policy to its members `own` (those that do not
/// follow a companion), and keeps the newest of them.
fn apply_policy(
    cands: &[Candidate],
    times: &[Timestamp],
    own: &[usize],
    policy: Option<&Policy>,
    job: &str,
    tz: &TimeZone,
    reasons: &mut [BTreeSet<Keep>],
) -> Result<(), PlanError> {
    let Some(policy) = policy else {
        for &i in own {
            reasons[i].insert(Keep::NoPolicy);
        }
        return Ok(());
    };
    if policy.keeps_nothing() {
        return Err(PlanError::KeepsNothing { job: job.into() });
    }
    let dated: Vec<policy::Dated<'_>> = own
        .iter()
        .map(|&i| policy::Dated {
            time: times[i],
            tags: &cands[i].tags,
        })
        .collect();
    for (k, rs) in policy.apply(&dated, tz).into_iter().enumerate() {
        reasons[own[k]].extend(rs.into_iter().map(Keep::Rule));
    }
    if let Some(&newest) = own.iter().max_by_key(|&&i| times[i]) {
        reasons[newest].insert(Keep::Newest);
    }
    Ok(())
}

/// Pairs pg_dump snapshots with their globals. With explicit ids, naming
/// either names both, and a named pinned snapshot is an error; with
/// policies, whatever keeps one keeps the other.
fn link_companions(
    cands: &[Candidate],
    index: &HashMap<SnapshotId, usize>,
    follows: &dyn Fn(&Candidate) -> Option<SnapshotId>,
    sel: &Selection<'_>,
    reasons: &mut [BTreeSet<Keep>],
) -> Result<(), PlanError> {
    let pairs: Vec<(usize, usize)> = cands
        .iter()
        .enumerate()
        .filter_map(|(g, c)| follows(c).map(|d| (index[&d], g)))
        .collect();
    if let Selection::Ids(ids) = sel {
        let mut named: BTreeSet<usize> =
            ids.iter().filter_map(|id| index.get(id).copied()).collect();
        for &(d, g) in &pairs {
            if named.contains(&d) || named.contains(&g) {
                named.extend([d, g]);
            }
        }
        for (i, c) in cands.iter().enumerate() {
            if !named.contains(&i) {
                reasons[i].insert(Keep::NotNamed);
            } else if let Some(why) = &c.pin {
                return Err(PlanError::Pinned {
                    id: c.id.to_hex(),
                    reason: why.clone(),
                });
            }
        }
        return Ok(());
    }
    for &(d, g) in &pairs {
        let (dk, gk) = (!reasons[d].is_empty(), !reasons[g].is_empty());
        if dk {
            reasons[g].insert(Keep::Companion(cands[d].id));
        }
        if gk {
            reasons[d].insert(Keep::Companion(cands[g].id));
        }
    }
    Ok(())
}
