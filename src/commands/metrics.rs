//! `coffer metrics`: the catalog as Prometheus metrics, in the text
//! exposition format (node_exporter's textfile collector reads it; the
//! daemon will serve it). All gauges; times are Unix timestamps, so ages
//! are computed in PromQL (`time() - coffer_last_success_timestamp_seconds`)
//! and alerts do not depend on when the file was written.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::catalog::CopyState;
use crate::error::Result;
use crate::util::parse_time;
use crate::vault::Vault;

/// One metric family: name, help, and its samples (labels, value).
struct Family {
    name: &'static str,
    help: &'static str,
    samples: Vec<(Vec<(&'static str, String)>, f64)>,
}

impl Family {
    fn new(name: &'static str, help: &'static str) -> Self {
        Family {
            name,
            help,
            samples: Vec::new(),
        }
    }

    fn add(&mut self, labels: Vec<(&'static str, String)>, value: f64) {
        self.samples.push((labels, value));
    }
}

fn seconds(t: &str) -> Option<f64> {
    parse_time(t)
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs_f64())
}

/// The metrics of `vault`, as Prometheus text.
///
/// # Errors
/// Catalog errors.
pub fn metrics(vault: &Vault) -> Result<String> {
    let catalog = vault.catalog()?;
    let mut fams = Vec::new();

    // Backups per job, from the runs and the snapshots.
    let mut last_ok = Family::new(
        "coffer_last_success_timestamp_seconds",
        "Start of the newest backup of the job that committed a snapshot.",
    );
    let mut last_result = Family::new(
        "coffer_last_backup_success",
        "1 if the newest backup of the job committed a snapshot, 0 if it failed.",
    );
    let mut duration = Family::new(
        "coffer_last_backup_duration_seconds",
        "Wall time of the newest backup of the job.",
    );
    let mut bytes = Family::new(
        "coffer_last_backup_bytes",
        "Bytes read by the newest backup of the job that committed.",
    );
    let mut drill_ok = Family::new(
        "coffer_drill_success",
        "1 if the newest restore drill of the job matched what the backup recorded.",
    );
    let mut drill_at = Family::new(
        "coffer_drill_timestamp_seconds",
        "Start of the newest restore drill of the job.",
    );
    let mut newest: BTreeMap<(String, String), crate::catalog::RunRecord> = BTreeMap::new();
    let mut newest_ok: BTreeMap<String, crate::catalog::RunRecord> = BTreeMap::new();
    for r in catalog.runs(None, 100_000)? {
        let (Some(job), false) = (r.job.clone(), r.outcome == "running") else {
            continue;
        };
        if r.kind == "backup" && (r.outcome == "ok" || r.outcome == "partial") {
            newest_ok.entry(job.clone()).or_insert_with(|| r.clone());
        }
        newest.entry((r.kind.clone(), job)).or_insert(r);
    }
    for (job, r) in &newest_ok {
        if let Some(t) = seconds(&r.started) {
            last_ok.add(vec![("job", job.clone())], t);
        }
        bytes.add(vec![("job", job.clone())], r.bytes as f64);
    }
    for ((kind, job), r) in &newest {
        match kind.as_str() {
            "backup" => {
                let ok = r.outcome != "failed";
                last_result.add(vec![("job", job.clone())], f64::from(u8::from(ok)));
                if let (Some(a), Some(b)) =
                    (seconds(&r.started), r.finished.as_deref().and_then(seconds))
                {
                    duration.add(vec![("job", job.clone())], (b - a).max(0.0));
                }
            }
            "restore-test" => {
                drill_ok.add(
                    vec![("job", job.clone())],
                    f64::from(u8::from(r.outcome == "ok")),
                );
                if let Some(t) = seconds(&r.started) {
                    drill_at.add(vec![("job", job.clone())], t);
                }
            }
            _ => {}
        }
    }
    let mut snapshots = Family::new("coffer_snapshots", "Snapshots of the job in the catalog.");
    let mut per_job: BTreeMap<String, u64> = BTreeMap::new();
    for s in catalog.snapshots(None)? {
        *per_job.entry(s.job).or_default() += 1;
    }
    for (job, n) in per_job {
        snapshots.add(vec![("job", job)], n as f64);
    }
    fams.extend([
        last_ok,
        last_result,
        duration,
        bytes,
        snapshots,
        drill_ok,
        drill_at,
    ]);

    // Tiers: copies by state, what is pending, verification coverage.
    let packs = catalog.packs()?;
    let mut stored = Family::new(
        "coffer_stored_bytes",
        "Ciphertext bytes of every pack the vault holds.",
    );
    stored.add(Vec::new(), packs.iter().map(|(_, s)| *s as f64).sum());
    let mut copies = Family::new("coffer_pack_copies", "Pack copies per tier and state.");
    let mut pending = Family::new(
        "coffer_offsite_pending_bytes",
        "Ciphertext bytes of packs not (yet) present in the tier.",
    );
    let mut verified = Family::new(
        "coffer_verification_oldest_timestamp_seconds",
        "The oldest verification (or write) of a pack copy present in the tier.",
    );
    let statuses = crate::replicate::status(&catalog, &vault.tiers())?;
    for (tier, st) in vault.tiers().iter().zip(&statuses) {
        let name = tier.name().to_string();
        let states = catalog.pack_states(&name)?;
        for state in [
            CopyState::Present,
            CopyState::Pending,
            CopyState::Missing,
            CopyState::Corrupt,
        ] {
            let n = packs
                .iter()
                .filter(|(id, _)| match states.get(id) {
                    Some(s) => *s == state,
                    None => state == CopyState::Pending,
                })
                .count();
            copies.add(
                vec![
                    ("tier", name.clone()),
                    ("state", state.as_str().to_string()),
                ],
                n as f64,
            );
        }
        pending.add(vec![("tier", name.clone())], st.bytes_pending as f64);
        let (_, oldest) = catalog.unverified_since(&name, "9999")?;
        if let Some(t) = oldest.as_deref().and_then(seconds) {
            verified.add(vec![("tier", name.clone())], t);
        }
    }
    fams.extend([stored, copies, pending, verified]);

    // WAL.
    let mut wal_pending = Family::new(
        "coffer_wal_pending_files",
        "WAL files of the job not yet in the offsite tier.",
    );
    let mut wal_oldest = Family::new(
        "coffer_wal_oldest_pending_timestamp_seconds",
        "When the oldest WAL file still waiting for the offsite tier was pushed.",
    );
    let mut wal_files = Family::new("coffer_wal_files", "WAL files archived for the job.");
    for job in catalog.wal_jobs()? {
        wal_files.add(
            vec![("job", job.clone())],
            catalog.wal_files(Some(&job))?.len() as f64,
        );
        if vault.s3.is_some() {
            let p = catalog.wal_pending(Some(&job))?;
            wal_pending.add(vec![("job", job.clone())], p.len() as f64);
            if let Some(t) = p.iter().map(|w| w.pushed.as_str()).min().and_then(seconds) {
                wal_oldest.add(vec![("job", job.clone())], t);
            }
        }
    }
    fams.extend([wal_files, wal_pending, wal_oldest]);

    let mut health = Family::new(
        "coffer_health_status",
        "coffer health's status: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.",
    );
    let status = super::health::health(vault).map_or(3, |h| h.status.exit_status());
    health.add(Vec::new(), f64::from(status));
    fams.push(health);

    Ok(render(&fams))
}

/// The text exposition format: HELP and TYPE, then the samples; label
/// values escaped as the format requires.
fn render(fams: &[Family]) -> String {
    let mut out = String::new();
    for f in fams {
        let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
        let _ = writeln!(out, "# TYPE {} gauge", f.name);
        for (labels, v) in &f.samples {
            out.push_str(f.name);
            if !labels.is_empty() {
                out.push('{');
                for (i, (k, val)) in labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let esc = val
                        .replace('\\', "\\\\")
                        .replace('"', "\\\"")
                        .replace('\n', "\\n");
                    let _ = write!(out, "{k}=\"{esc}\"");
                }
                out.push('}');
            }
            let _ = writeln!(out, " {v}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let mut f = Family::new("coffer_x", "A test.");
        f.add(vec![("job", "a\"b\\c\nd".into())], 1.5);
        assert_eq!(
            render(&[f]),
            "# HELP coffer_x A test.\n# TYPE coffer_x gauge\ncoffer_x{job=\"a\\\"b\\\\c\\nd\"} 1.5\n"
        );
    }
}
