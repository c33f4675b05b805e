//! `coffer init`, and the quick start's implicit init.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use coffer::commands::init::{self, InitOptions, InitReport};
use coffer::tier::s3::S3Settings;
use coffer::vault::settings::default_local_dir;
use vault_format::chunker::ChunkerParams;
use vault_format::pack::PackParams;

use super::output::{out, render, Render, Verbosity};
use super::Ctx;

/// `coffer init`
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Directory of the local tier [default: $BACKUP_DIRECTORY, else ~/.local/share/coffer/vault].
    #[arg(long, value_name = "DIR")]
    pub local: Option<PathBuf>,
    /// Seal to this age recipient (age1...) instead of generating an
    /// identity here; repeat for several (e.g. an ops key and an escrow key).
    #[arg(long = "recipient", value_name = "R")]
    pub recipients: Vec<String>,
    /// Offsite tier: an S3 bucket (and prefix). If it already holds a
    /// vault, attach to it (needs --identity): a new host, or disaster recovery.
    #[arg(long, value_name = "s3://BUCKET/PREFIX")]
    pub s3: Option<String>,
    /// Endpoint of an S3-compatible store (MinIO, Ceph, Garage, SeaweedFS, R2, B2).
    #[arg(long, value_name = "URL", requires = "s3")]
    pub s3_endpoint: Option<String>,
    /// S3 region [default: from the AWS environment or profile, else us-east-1].
    #[arg(long, value_name = "REGION", requires = "s3")]
    pub s3_region: Option<String>,
    /// Storage class for objects (e.g. STANDARD_IA).
    #[arg(long, value_name = "CLASS", requires = "s3")]
    pub s3_storage_class: Option<String>,
    /// S3 Object Lock mode for every object: governance or compliance
    /// (the bucket must have Object Lock enabled).
    #[arg(long, value_name = "MODE", requires_all = ["s3", "s3_object_lock_days"])]
    pub s3_object_lock: Option<String>,
    /// Object Lock retention in days.
    #[arg(long, value_name = "DAYS", requires = "s3_object_lock")]
    pub s3_object_lock_days: Option<u32>,
    /// Identity file, to attach to the existing vault in S3 (--s3): no
    /// vault there is an error, never a new vault.
    #[arg(long, value_name = "FILE", requires = "s3")]
    pub identity: Option<PathBuf>,
    /// zstd level for new data (1-19; higher is smaller and slower). Fixed
    /// in the vault config; see docs/performance.md for the trade-off.
    #[arg(long, value_name = "N", default_value_t = vault_format::pack::PackParams::default().zstd_level,
          value_parser = clap::value_parser!(i32).range(1..=19))]
    pub zstd_level: i32,
}

pub fn run(ctx: &Ctx, a: InitArgs) -> Result<i32> {
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
    let rep = init::init(&InitOptions {
        settings_path: ctx.settings_path.clone(),
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
    Ok(render(ctx.v, &rep))
}

/// The quick start: creates the default vault when none is configured,
/// saying so on stderr (stdout stays the command's own result).
pub fn quick_start(ctx: &Ctx) -> Result<()> {
    if let Some(rep) = init::init_default_if_missing(&ctx.settings_path, ctx.explicit)? {
        if !ctx.v.quiet {
            eprintln!("coffer: no vault configured yet: creating the default local vault");
            for l in lines(&rep) {
                eprintln!("{l}");
            }
        }
    }
    Ok(())
}

impl Render for InitReport {
    fn text(&self, _: Verbosity) {
        for l in lines(self) {
            out(&l);
        }
    }
}

fn lines(rep: &InitReport) -> Vec<String> {
    let mut l = vec![
        format!(
            "coffer: created vault {} in {}",
            rep.vault_id,
            rep.local.display()
        ),
        format!("  settings:  {}", rep.settings.display()),
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
