//! Command handlers: merge flags with settings, call the library, render.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{bail, Result};
use coffer::commands::{self, init::InitOptions, restore::Target};
use coffer::pipeline::backup::BackupRequest;
use coffer::settings::{self, default_local_dir};
use coffer::tier::s3::S3Settings;
use coffer::Vault;
use vault_format::chunker::ChunkerParams;
use vault_format::pack::PackParams;

use super::output::{self, bytes, note, TermProgress, Verbosity};
use super::{Cli, Command, IndexCommand};

/// Runs the parsed command; returns the exit status for non-error outcomes
/// that still are not plain success (e.g. verify found damage).
pub fn run(cli: Cli) -> Result<i32> {
    let v = Verbosity {
        json: cli.json,
        verbose: cli.verbose,
        quiet: cli.quiet,
    };
    let explicit =
        cli.config.is_some() || std::env::var_os("COFFER_CONFIG").is_some_and(|c| !c.is_empty());
    let config_path = settings::config_path(cli.config.as_deref());
    match cli.command {
        Command::Init(a) => {
            let s3 = match &a.s3 {
                Some(url) => {
                    let mut s = S3Settings::from_url(url).map_err(anyhow::Error::msg)?;
                    s.endpoint = a.s3_endpoint;
                    s.region = a.s3_region;
                    s.storage_class = a.s3_storage_class;
                    s.object_lock_mode = a.s3_object_lock;
                    s.object_lock_days = a.s3_object_lock_days;
                    Some(s)
                }
                None => None,
            };
            let rep = commands::init::init(&InitOptions {
                config_path,
                local: a.local.unwrap_or_else(default_local_dir),
                recipients: a.recipients,
                chunker: ChunkerParams::default(),
                pack: PackParams {
                    zstd_level: a.zstd_level,
                    ..PackParams::default()
                },
                s3,
                identity: a.identity,
            })?;
            if v.json {
                output::json(&rep);
            } else {
                print_init(&rep);
            }
            Ok(0)
        }
        Command::Backup(a) => {
            if !explicit && !config_path.exists() {
                // Quick start: the embedded default is a local-directory vault.
                let rep = commands::init::init(&InitOptions {
                    config_path: config_path.clone(),
                    local: default_local_dir(),
                    recipients: vec![],
                    chunker: ChunkerParams::default(),
                    pack: PackParams::default(),
                    s3: None,
                    identity: None,
                })?;
                if !v.quiet {
                    print_init_to_stderr(&rep);
                }
            }
            let vault = Vault::open(&config_path)?;
            if let Some(super::BackupSource::Pg(pg)) = &a.source {
                return super::pg::backup(&vault, v, &a.job, &a.tags, pg);
            }
            let path = a
                .path
                .as_deref()
                .expect("clap requires PATH without a subcommand");
            let mut source = coffer::source::open(path)?;
            let progress = TermProgress::new(v, "backing up");
            let req = BackupRequest {
                job: a.job,
                tags: a.tags,
                facts: Default::default(),
            };
            let r = commands::backup::backup(&vault, source.as_mut(), &req, &progress);
            progress.finish();
            let rep = r?;
            if v.json {
                output::json(&rep);
            } else {
                output::out(&rep.id.to_hex());
                note(
                    v,
                    &format!(
                        "coffer: snapshot {} of job {} ({}): read {}, stored {} new ({} new chunks, {} reused) in {} pack(s), {:.1}s, vault {}",
                        rep.id,
                        rep.job,
                        rep.kind,
                        bytes(rep.raw_size),
                        bytes(rep.stored_size),
                        rep.new_chunks,
                        rep.reused_chunks,
                        rep.packs,
                        rep.seconds,
                        vault.local.root().display()
                    ),
                );
            }
            if rep.offsite_pending() {
                for o in rep.offsite.iter().filter(|o| !o.complete) {
                    eprintln!(
                        "coffer: snapshot {} is committed locally, but its offsite copy in tier {} is PENDING: {}",
                        rep.id,
                        o.tier,
                        o.pending_reason.as_deref().unwrap_or("unknown")
                    );
                }
                return Ok(coffer::error::exit::OFFSITE_PENDING);
            }
            Ok(0)
        }
        Command::Sync => {
            let vault = Vault::open(&config_path)?;
            let progress = TermProgress::new(v, "syncing");
            let r = commands::sync::sync(&vault, &progress);
            progress.finish();
            let reps = r?;
            if v.json {
                output::json(&reps);
            } else {
                for r in &reps {
                    for p in &r.problems {
                        eprintln!("coffer: {p}");
                    }
                    note(
                        v,
                        &format!(
                            "coffer: tier {}: copied {} packs ({}) and {} manifests{}",
                            r.tier,
                            r.packs_copied,
                            bytes(r.bytes_copied),
                            r.manifests_copied,
                            if r.problems.is_empty() {
                                ""
                            } else {
                                "; some copies are still pending"
                            }
                        ),
                    );
                }
            }
            let pending = reps.iter().any(|r| !r.problems.is_empty());
            Ok(if pending {
                coffer::error::exit::OFFSITE_PENDING
            } else {
                0
            })
        }
        Command::Status => {
            let vault = Vault::open(&config_path)?;
            let st = commands::sync::status(&vault)?;
            if v.json {
                output::json(&st);
            } else {
                output::out(&format!(
                    "{:<8} {:>10} {:>14} {:>14} {:>12}  {}",
                    "TIER", "SNAPSHOTS", "COMPLETE", "PACKS PENDING", "BYTES", "NEWEST COMPLETE"
                ));
                for t in st {
                    output::out(&format!(
                        "{:<8} {:>10} {:>14} {:>14} {:>12}  {}",
                        t.tier,
                        t.snapshots,
                        t.snapshots_complete,
                        t.packs_pending,
                        bytes(t.bytes_pending),
                        match (&t.newest_complete, t.newest_complete_age_seconds) {
                            (Some(c), Some(a)) => format!(
                                "{c} ({} ago)",
                                humantime::format_duration(std::time::Duration::from_secs(a))
                            ),
                            (Some(c), None) => c.clone(),
                            _ => "none".into(),
                        }
                    ));
                }
            }
            Ok(0)
        }
        Command::Snapshots(a) => {
            let vault = Vault::open(&config_path)?;
            let list = vault.catalog()?.snapshots(a.job.as_deref())?;
            if v.json {
                output::json(&list);
            } else if list.is_empty() {
                note(v, "no snapshots yet; make one with `coffer backup PATH`");
            } else {
                output::out(&format!(
                    "{:<32}  {:<16} {:<10} {:<27} {:>10} {:>10}",
                    "ID", "JOB", "KIND", "CREATED", "RAW", "STORED"
                ));
                for s in list {
                    output::out(&format!(
                        "{:<32}  {:<16} {:<10} {:<27} {:>10} {:>10}",
                        s.id.to_hex(),
                        s.job,
                        s.kind,
                        s.created,
                        bytes(s.raw_size),
                        bytes(s.stored_size)
                    ));
                }
            }
            Ok(0)
        }
        Command::Restore(a) => {
            let vault = Vault::open(&config_path)?;
            let manifest = commands::restore::find(&vault, &a.snapshot, a.job.as_deref())?;
            if a.pg.dbname.is_some() {
                return super::pg::restore(
                    &vault,
                    v,
                    &manifest,
                    a.identity.as_deref(),
                    a.tier.as_deref(),
                    &a.pg,
                );
            }
            let target = match a.to.as_deref() {
                Some("-") => Target::Stdout,
                Some(p) => Target::Path(PathBuf::from(p)),
                None if std::io::stdout().is_terminal() => bail!(
                    "refusing to write snapshot data to a terminal; pass --to PATH (or --to - to force stdout)"
                ),
                None => Target::Stdout,
            };
            if v.json && matches!(target, Target::Stdout) {
                bail!("--json cannot be combined with restoring to stdout; pass --to PATH");
            }
            let ctx = commands::read_context_from(
                &vault,
                a.identity.as_deref(),
                "restore",
                a.tier.as_deref(),
            )?;
            let progress = TermProgress::new(v, "restoring");
            let r = commands::restore::restore(&vault, &ctx, &manifest, &target, &progress);
            progress.finish();
            let rep = r?;
            if v.json {
                output::json(&rep);
            } else if let Target::Path(p) = &target {
                note(
                    v,
                    &format!(
                        "coffer: restored snapshot {} ({}, {} chunks verified) to {} in {:.1}s",
                        rep.id,
                        bytes(rep.bytes),
                        rep.chunks,
                        p.display(),
                        rep.seconds
                    ),
                );
            }
            Ok(0)
        }
        Command::Verify(a) => {
            let vault = Vault::open(&config_path)?;
            if a.drill.restore_test.is_some() {
                return super::pg::drill(&vault, v, a.identity.as_deref(), &a.drill);
            }
            let ctx = if a.read_data {
                Some(commands::read_context(
                    &vault,
                    a.identity.as_deref(),
                    "verify --read-data",
                )?)
            } else {
                None
            };
            let progress = TermProgress::new(v, "verifying");
            let r = commands::verify::verify(&vault, ctx.as_ref(), &progress);
            progress.finish();
            let rep = r?;
            let summary = format!(
                "coffer: verified {} pack copies ({} read), {} chunks, {} snapshots in {:.1}s: {}",
                rep.packs_checked,
                bytes(rep.bytes_read),
                rep.chunks_checked,
                rep.snapshots_checked,
                rep.seconds,
                if rep.problems.is_empty() {
                    "no problems".to_string()
                } else {
                    format!("{} PROBLEM(S)", rep.problems.len())
                }
            );
            Ok(report_with_problems(v, &rep, &rep.problems, &summary))
        }
        Command::Index {
            command: IndexCommand::Rebuild { identity, tier },
        } => {
            let vault = Vault::open(&config_path)?;
            let (id, _) = vault.identity(identity.as_deref(), "index rebuild")?;
            let tier = vault.select_tiers(Some(&tier))?.remove(0);
            let rep = commands::rebuild::rebuild(&vault, &*tier, &id)?;
            let summary = format!(
                "coffer: rebuilt the catalog from tier {}: {} packs, {} chunks, {} snapshots",
                rep.tier, rep.packs, rep.chunks, rep.snapshots
            );
            Ok(report_with_problems(v, &rep, &rep.problems, &summary))
        }
    }
}

/// Renders a report that lists problems: JSON, or each problem on stderr
/// and a summary; the status is 4 when any problem was found.
fn report_with_problems<T: serde::Serialize>(
    v: Verbosity,
    rep: &T,
    problems: &[String],
    summary: &str,
) -> i32 {
    if v.json {
        output::json(rep);
    } else {
        for p in problems {
            eprintln!("coffer: {p}");
        }
        note(v, summary);
    }
    if problems.is_empty() {
        0
    } else {
        coffer::error::exit::INTEGRITY
    }
}

fn init_lines(rep: &commands::init::InitReport) -> Vec<String> {
    let mut l = vec![
        format!(
            "coffer: created vault {} in {}",
            rep.vault_id,
            rep.local.display()
        ),
        format!("  settings:  {}", rep.config.display()),
        format!(
            "  push key:  {} (lets this host write backups; it cannot read them)",
            rep.push_key.display()
        ),
        format!("  catalog:   {}", rep.catalog.display()),
    ];
    if let Some(s3) = &rep.s3 {
        l.push(format!(
            "  offsite:   {s3}{}",
            if rep.attached {
                " (attached to the existing vault there)"
            } else {
                ""
            }
        ));
    }
    match &rep.identity {
        Some(id) => {
            l.push(format!("  IDENTITY:  {}", id.display()));
            l.push("  !! This identity is the ONLY key that can restore your backups.".into());
            l.push(
                "  !! Copy it somewhere safe and offline NOW, then remove it from this host".into(),
            );
            l.push("  !! and pass --identity FILE (or COFFER_IDENTITY) when you restore.".into());
        }
        None => l.push(format!(
            "  sealed to: {} (restore with the matching identity)",
            rep.recipients.join(", ")
        )),
    }
    l
}

fn print_init(rep: &commands::init::InitReport) {
    for l in init_lines(rep) {
        output::out(&l);
    }
}

fn print_init_to_stderr(rep: &commands::init::InitReport) {
    eprintln!("coffer: no vault configured yet: creating the default local vault");
    for l in init_lines(rep) {
        eprintln!("{l}");
    }
}
