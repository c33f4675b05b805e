//! Small helpers shared across layers.

use std::time::SystemTime;

/// Now, as RFC 3339 UTC with seconds (`2026-11-24T01:02:03Z`).
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// Now, as RFC 3339 UTC with microseconds (fixed width, so it sorts).
pub fn now_rfc3339_micros() -> String {
    humantime::format_rfc3339_micros(SystemTime::now()).to_string()
}

/// The variable tests set to move the clock (RFC 3339): new snapshots and
/// pack copies' write and verification times are dated with it, and
/// schedules (`coffer run`) and health are judged at it ([`clock`]):
/// retention and alerting are about ages, and tests must not wait days. It
/// changes nothing else: locks, marks and runs keep the real clock.
pub const TEST_NOW: &str = "COFFER_TEST_NOW";

/// [`clock`] as RFC 3339 UTC with seconds: when pack copies were written
/// and verified, which health judges against the same clock.
pub fn clock_rfc3339() -> String {
    humantime::format_rfc3339_seconds(clock()).to_string()
}

/// Now, as schedules and health see it: [`TEST_NOW`] when set.
pub fn clock() -> SystemTime {
    std::env::var(TEST_NOW)
        .ok()
        .and_then(|s| parse_time(&s))
        .unwrap_or_else(SystemTime::now)
}

/// The creation time of a snapshot made now: RFC 3339 UTC with
/// microseconds ([`TEST_NOW`] when set).
pub fn snapshot_time() -> String {
    std::env::var(TEST_NOW)
        .ok()
        .and_then(|s| parse_time(&s))
        .map(|t| humantime::format_rfc3339_micros(t).to_string())
        .unwrap_or_else(now_rfc3339_micros)
}

/// Parses an RFC 3339 time as coffer and S3 write them (with or without
/// fractional seconds); `None` when it does not parse.
pub fn parse_time(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(s.trim_end_matches('Z'))
        .ok()
        .or_else(|| humantime::parse_rfc3339(s).ok())
}

/// This machine's host name, for manifests.
pub fn hostname() -> String {
    // A container's hostname is its id, new each time it is recreated:
    // COFFER_HOST gives the host a name that lasts (it decides which
    // snapshots are this host's own, see vault-format/SPEC.md "Deletion").
    if let Some(h) = std::env::var("COFFER_HOST")
        .ok()
        .filter(|h| !h.trim().is_empty())
    {
        return h.trim().to_string();
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// Writes a secret file with mode 0600, refusing to replace an existing one.
pub fn write_secret_file(path: &std::path::Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    // Created here: a file that could not be written whole (a full disk)
    // must not stay behind looking like a good one.
    let written = f.write_all(contents).and_then(|()| f.sync_all());
    if written.is_err() {
        let _ = std::fs::remove_file(path);
    }
    written
}

/// The uid and gid of a local user, from `/etc/passwd` (users only in a
/// directory service are not found).
pub fn user_ids(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        if f.next()? != name {
            return None;
        }
        let _password = f.next()?;
        Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
    })
}
