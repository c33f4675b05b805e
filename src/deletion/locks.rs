//! Lock objects (vault-format/SPEC.md, "Deletion"): how backups tell prune
//! they are running, and how two prunes never run at once.
//!
//! A lock is a set of heartbeat objects
//! `locks/<kind>-<id>-<created unix time>-<unix time>`,
//! refreshed every [`LOCK_REFRESH`] by writing a new heartbeat and deleting
//! the previous one; it is live while its newest heartbeat is younger than
//! [`LOCK_EXPIRY`]. The prune lock is, besides, the object `locks/prune`,
//! created with a conditional put: whoever creates it holds it.
//!
//! Times come from the writers' clocks; comparisons between hosts allow a
//! margin of [`LOCK_EXPIRY`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::tier::{Put, Tier, TierError};

/// How often a lock's holder writes a new heartbeat.
pub const LOCK_REFRESH: Duration = Duration::from_secs(120);
/// How old a lock's newest heartbeat may be for it to be live.
pub const LOCK_EXPIRY: Duration = Duration::from_secs(600);

const PREFIX: &str = "locks/";
const PRUNE_KEY: &str = "locks/prune";

/// What a lock is held for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LockKind {
    /// A backup (shared: many at once).
    Backup,
    /// A prune (exclusive).
    Prune,
}

impl LockKind {
    fn as_str(self) -> &'static str {
        match self {
            LockKind::Backup => "backup",
            LockKind::Prune => "prune",
        }
    }
}

/// A lock as a tier's listing shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LockInfo {
    /// Kind.
    pub kind: LockKind,
    /// Lock id (16 hex).
    pub id: String,
    /// When it was taken (unix seconds, the holder's clock).
    pub created: u64,
    /// Its newest heartbeat (unix seconds).
    pub newest: u64,
}

impl LockInfo {
    /// Live at `now` (unix seconds)?
    pub fn live(&self, now: u64) -> bool {
        now.saturating_sub(self.newest) < LOCK_EXPIRY.as_secs()
    }
}

/// The body of `locks/prune`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PruneHolder {
    format: u32,
    id: String,
    host: String,
    pid: u32,
    created: String,
}

/// Writes a heartbeat of a lock nobody holds, as `created`/`refreshed`
/// (unix seconds): for tests that need a live or stale lock from another
/// process without waiting for clocks.
#[doc(hidden)]
pub fn plant(
    tier: &dyn Tier,
    kind: LockKind,
    created: u64,
    refreshed: u64,
) -> Result<String, TierError> {
    let key = heartbeat_key(kind, &hex::encode(rand_bytes::<8>()), created, refreshed);
    tier.put_bytes(&key, b"")?;
    Ok(key)
}

/// Seconds since the epoch, now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn heartbeat_key(kind: LockKind, id: &str, created: u64, t: u64) -> String {
    format!("{PREFIX}{}-{id}-{created}-{t}", kind.as_str())
}

/// (kind, id, created, time) of a heartbeat's key.
fn parse_heartbeat(key: &str) -> Option<(LockKind, String, u64, u64)> {
    let mut parts = key.strip_prefix(PREFIX)?.split('-');
    let kind = match parts.next()? {
        "backup" => LockKind::Backup,
        "prune" => LockKind::Prune,
        _ => return None,
    };
    let id = parts.next()?;
    let created = parts.next()?.parse().ok()?;
    let t = parts.next()?.parse().ok()?;
    (parts.next().is_none() && id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| (kind, id.to_string(), created, t))
}

/// Every lock in `tier`, live or stale.
///
/// # Errors
/// When the tier cannot be listed.
pub fn locks(tier: &dyn Tier) -> Result<Vec<LockInfo>, TierError> {
    let mut by_id: HashMap<String, LockInfo> = HashMap::new();
    for o in tier.list(PREFIX)? {
        let Some((kind, id, created, t)) = parse_heartbeat(&o.key) else {
            continue;
        };
        let e = by_id.entry(id.clone()).or_insert(LockInfo {
            kind,
            id,
            created,
            newest: t,
        });
        e.created = e.created.min(created);
        e.newest = e.newest.max(t);
    }
    let mut v: Vec<LockInfo> = by_id.into_values().collect();
    v.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
    Ok(v)
}

/// A held lock. Its heartbeats are refreshed by a thread until it is
/// released (or dropped).
pub struct Lock {
    inner: Arc<Held>,
    stop: Option<crossbeam_channel::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Held {
    kind: LockKind,
    id: String,
    created: u64,
    tiers: Vec<Arc<dyn Tier>>,
    /// Per tier: the key of its newest heartbeat, if written.
    keys: Mutex<Vec<Option<String>>>,
    /// When the last refresh succeeded in the first tier (unix seconds).
    refreshed: Mutex<u64>,
    lost: AtomicBool,
}

impl Held {
    /// Writes a new heartbeat in every tier and deletes the previous one.
    /// The first tier must succeed; others may be unreachable.
    fn beat(&self) -> Result<(), TierError> {
        let now = unix_now();
        let mut keys = self.keys.lock().expect("lock keys");
        for (i, t) in self.tiers.iter().enumerate() {
            let key = heartbeat_key(self.kind, &self.id, self.created, now);
            if keys[i].as_deref() == Some(key.as_str()) {
                continue;
            }
            match t.put_bytes(&key, b"") {
                Ok(_) => {
                    if let Some(old) = keys[i].replace(key) {
                        let _ = t.remove(&old);
                    }
                    if i == 0 {
                        *self.refreshed.lock().expect("lock time") = now;
                    }
                }
                Err(e) if i == 0 => return Err(e),
                Err(_) => {}
            }
        }
        Ok(())
    }

    fn clear(&self) {
        let keys = self.keys.lock().expect("lock keys");
        for (t, k) in self.tiers.iter().zip(keys.iter()) {
            if let Some(k) = k {
                let _ = t.remove(k);
            }
        }
    }
}

impl Lock {
    /// Takes a backup lock in `tiers` (the first is the one the backup
    /// commits to: it must take the lock; the others are best effort).
    ///
    /// # Errors
    /// The first tier refused the heartbeat.
    pub fn backup(tiers: Vec<Arc<dyn Tier>>) -> Result<Lock> {
        Self::start(LockKind::Backup, tiers)
    }

    /// Takes the prune lock in `tiers`: `locks/prune` with a conditional put
    /// in each (taking over one whose holder's heartbeats are stale).
    ///
    /// # Errors
    /// [`Error::Busy`] naming the holder when another prune holds it.
    pub fn prune(tiers: Vec<Arc<dyn Tier>>) -> Result<Lock> {
        let lock = Self::start(LockKind::Prune, tiers.clone())?;
        let holder = PruneHolder {
            format: 1,
            id: lock.inner.id.clone(),
            host: crate::util::hostname(),
            pid: std::process::id(),
            created: crate::util::now_rfc3339(),
        };
        let body = serde_json::to_vec(&holder).expect("holder serializes");
        for t in &tiers {
            if let Err(e) = take_prune_key(&**t, &body, &holder.id) {
                lock.release();
                return Err(e);
            }
        }
        Ok(lock)
    }

    fn start(kind: LockKind, tiers: Vec<Arc<dyn Tier>>) -> Result<Lock> {
        let n = tiers.len();
        let held = Arc::new(Held {
            kind,
            id: hex::encode(rand_bytes::<8>()),
            created: unix_now(),
            tiers,
            keys: Mutex::new(vec![None; n]),
            refreshed: Mutex::new(0),
            lost: AtomicBool::new(false),
        });
        held.beat()?;
        let (stop, rx) = crossbeam_channel::bounded::<()>(1);
        let h = held.clone();
        // The heartbeat is a timer, not synchronisation: it only has to
        // write again well within LOCK_EXPIRY.
        let thread = std::thread::Builder::new()
            .name("lock-heartbeat".into())
            .spawn(move || {
                while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                    rx.recv_timeout(LOCK_REFRESH)
                {
                    if h.beat().is_err() {
                        h.lost.store(true, Ordering::SeqCst);
                    }
                }
            })
            .map_err(|io| Error::Resources {
                what: "the lock heartbeat thread".into(),
                io,
            })?;
        Ok(Lock {
            inner: held,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// This lock's id.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// Fails when the lock may have expired: its last successful refresh
    /// in the first tier is older than [`LOCK_EXPIRY`] (the process was
    /// suspended, or the tier refused heartbeats). A backup checks this
    /// right before writing its manifest.
    ///
    /// # Errors
    /// [`Error::Busy`] saying the lock expired.
    pub fn check_live(&self) -> Result<()> {
        let last = *self.inner.refreshed.lock().expect("lock time");
        let age = unix_now().saturating_sub(last);
        if age >= LOCK_EXPIRY.as_secs() - LOCK_REFRESH.as_secs() {
            return Err(Error::Busy(format!(
                "this {} lost its lock (last refreshed {age} s ago: the process was suspended or the tier refused heartbeats); a prune may have run meanwhile, so nothing was committed: run it again",
                self.inner.kind.as_str()
            )));
        }
        Ok(())
    }

    /// Releases the lock: stops the heartbeat and deletes its objects.
    pub fn release(mut self) {
        self.stop_and_clear();
    }

    fn stop_and_clear(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if self.inner.kind == LockKind::Prune {
            for t in &self.inner.tiers {
                if let Ok(b) = t.get(PRUNE_KEY) {
                    let ours = serde_json::from_slice::<PruneHolder>(&b)
                        .is_ok_and(|h| h.id == self.inner.id);
                    if ours {
                        let _ = t.remove(PRUNE_KEY);
                    }
                }
            }
        }
        self.inner.clear();
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.stop_and_clear();
        }
    }
}

/// Creates `locks/prune` in `tier`, or takes it over from a holder whose
/// heartbeats are all stale; then reads it back to see who holds it.
fn take_prune_key(tier: &dyn Tier, body: &[u8], id: &str) -> Result<()> {
    for _ in 0..2 {
        if tier.put_bytes(PRUNE_KEY, body)? == Put::Created {
            break;
        }
        let holder: Option<PruneHolder> = tier
            .get(PRUNE_KEY)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let now = unix_now();
        let heartbeats = locks(tier)?;
        let live = holder.filter(|h| {
            heartbeats
                .iter()
                .any(|l| l.kind == LockKind::Prune && h.id == l.id && l.live(now))
        });
        if let Some(h) = live {
            return Err(Error::Busy(format!(
                "another prune holds the lock in tier {} (host {}, pid {}, since {}); wait for it to finish",
                tier.name(),
                h.host,
                h.pid,
                h.created
            )));
        }
        // Stale (or unreadable): take it over.
        tier.remove(PRUNE_KEY)?;
    }
    let read: Option<PruneHolder> = tier
        .get(PRUNE_KEY)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    match read {
        Some(h) if h.id == id => Ok(()),
        _ => Err(Error::Busy(format!(
            "another prune took the lock in tier {} at the same moment; wait for it to finish",
            tier.name()
        ))),
    }
}

fn rand_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).expect("the OS random number generator works");
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tier::local::LocalTier;

    fn tier() -> (tempfile::TempDir, Arc<dyn Tier>) {
        let d = tempfile::tempdir().unwrap();
        let t: Arc<dyn Tier> = Arc::new(LocalTier::create("local", &d.path().join("v")).unwrap());
        (d, t)
    }

    #[test]
    fn heartbeat_names_round_trip() {
        let k = heartbeat_key(LockKind::Backup, "0123456789abcdef", 40, 42);
        assert_eq!(
            parse_heartbeat(&k),
            Some((LockKind::Backup, "0123456789abcdef".into(), 40, 42))
        );
        assert_eq!(parse_heartbeat("locks/prune"), None);
        assert_eq!(parse_heartbeat("locks/backup-xyz-1"), None);
    }

    #[test]
    fn a_second_prune_is_refused_and_a_stale_one_taken_over() {
        let (_d, t) = tier();
        let a = Lock::prune(vec![t.clone()]).unwrap();
        let e = Lock::prune(vec![t.clone()]).err().expect("refused");
        assert!(
            e.to_string().contains("another prune holds the lock"),
            "{e}"
        );
        // A holder that died long ago: its heartbeat is stale.
        drop(a);
        let stale = PruneHolder {
            format: 1,
            id: "00000000deadbeef".into(),
            host: "gone".into(),
            pid: 1,
            created: "2020-01-01T00:00:00Z".into(),
        };
        t.put_bytes(PRUNE_KEY, &serde_json::to_vec(&stale).unwrap())
            .unwrap();
        t.put_bytes(&heartbeat_key(LockKind::Prune, &stale.id, 900, 1_000), b"")
            .unwrap();
        let b = Lock::prune(vec![t.clone()]).unwrap();
        let held: PruneHolder = serde_json::from_slice(&t.get(PRUNE_KEY).unwrap()).unwrap();
        assert_eq!(held.id, b.id());
        b.release();
        assert!(t.head(PRUNE_KEY).unwrap().is_none());
    }

    #[test]
    fn backup_locks_are_listed_live_until_released() {
        let (_d, t) = tier();
        let l = Lock::backup(vec![t.clone()]).unwrap();
        let now = unix_now();
        let ls = locks(&*t).unwrap();
        assert_eq!(ls.len(), 1);
        assert!(ls[0].live(now));
        assert!(!ls[0].live(now + LOCK_EXPIRY.as_secs() + 1));
        l.check_live().unwrap();
        l.release();
        assert!(locks(&*t).unwrap().is_empty());
    }
}
