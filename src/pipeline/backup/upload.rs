//! Offsite uploads during a backup: each pack goes to every offsite tier as
//! soon as it is durable locally, streamed from the local file.
//!
//! Uploads to a tier stop at its first failure (the rest stay pending for
//! the offsite completion after the commit, and for `coffer sync`) rather
//! than retrying every pack against an endpoint that is down.

use std::sync::{Arc, Mutex};

use crossbeam_channel::Receiver;
use vault_format::PackId;

use super::BackupContext;
use crate::catalog::{Catalog, CopyState};
use crate::progress::{Event, Progress};
use crate::tier::{keys, Tier};

/// One offsite tier during a run.
pub(super) struct Offsite {
    pub tier: Arc<dyn Tier>,
    /// Why uploads to it stopped, once they did.
    pub failed: Mutex<Option<String>>,
}

impl Offsite {
    pub fn new(tier: Arc<dyn Tier>) -> Self {
        Offsite {
            tier,
            failed: Mutex::new(None),
        }
    }

    /// Why uploads stopped, if they did.
    pub fn failure(&self) -> Option<String> {
        self.failed.lock().expect("offsite state").clone()
    }
}

/// Uploads packs to one offsite tier as the packer stores them locally.
pub(super) fn uploader(
    ctx: &BackupContext,
    o: &Offsite,
    packs: Receiver<PackId>,
    progress: &dyn Progress,
) {
    let catalog = Catalog::open(&ctx.catalog_path).ok();
    for id in packs {
        if o.failure().is_some() {
            continue;
        }
        let key = keys::pack(&id);
        let r = match ctx.tier.local_path(&key) {
            Some(path) => o.tier.put_file(&key, &path),
            None => ctx.tier.get(&key).and_then(|b| o.tier.put_bytes(&key, &b)),
        };
        match r {
            Ok(_) => {
                if let Some(c) = &catalog {
                    let _ = c.set_pack_copy(&id, o.tier.name(), CopyState::Present, false);
                }
                progress.event(&Event::PackStored {
                    id,
                    tier: o.tier.name().to_string(),
                });
            }
            Err(e) => {
                let mut f = o.failed.lock().expect("offsite state");
                if f.is_none() {
                    progress.event(&Event::Warning(format!(
                        "upload to tier {} failed, its copies stay pending: {e}",
                        o.tier.name()
                    )));
                    *f = Some(e.to_string());
                }
            }
        }
    }
}
