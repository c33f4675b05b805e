//! A tar stream unpacked into a directory (see [`unpack`]), with a base
//! backup's tablespaces placed where they belong ([`Tablespaces`]).

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

/// Unpacks entry by entry: the tar crate neither creates FIFOs and device
/// nodes nor restores directory mtimes (writing files into a directory
/// changes its mtime), so special files are made here and directory times
/// are set last, deepest first.
///
/// `tablespaces` places a base backup's `pg_tblspc/<oid>/…` entries.
pub(super) fn unpack<R: std::io::Read>(
    a: &mut tar::Archive<R>,
    dest: &Path,
    tablespaces: Option<&Tablespaces>,
) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    use tar::EntryType;
    let mut dirs: Vec<(PathBuf, std::time::SystemTime)> = Vec::new();
    for entry in a.entries()? {
        let mut e = entry?;
        let kind = e.header().entry_type();
        let rel = e.path()?.into_owned();
        let mtime = e
            .header()
            .mtime()
            .ok()
            .map(|t| std::time::UNIX_EPOCH + std::time::Duration::from_secs(t));
        match tablespaces.map(|t| t.place(&rel, kind)) {
            None | Some(Placement::Here) => {}
            Some(Placement::Skip) => continue,
            Some(Placement::Link(to)) => {
                let link = safe_join(dest, &rel).ok_or_else(|| escapes(&rel))?;
                if let Some(parent) = link.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::os::unix::fs::symlink(to, &link)?;
                continue;
            }
            Some(Placement::At(target)) => {
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                if kind == EntryType::Directory {
                    if let Some(t) = mtime {
                        dirs.push((target.clone(), t));
                    }
                }
                e.unpack(&target)?;
                continue;
            }
        }
        match kind {
            EntryType::Fifo | EntryType::Char | EntryType::Block => {
                let target = safe_join(dest, &rel).ok_or_else(|| escapes(&rel))?;
                let mode = e.header().mode()? & 0o7777;
                let file_type = match kind {
                    EntryType::Fifo => rustix::fs::FileType::Fifo,
                    EntryType::Char => rustix::fs::FileType::CharacterDevice,
                    _ => rustix::fs::FileType::BlockDevice,
                };
                let dev = rustix::fs::makedev(
                    e.header().device_major()?.unwrap_or(0),
                    e.header().device_minor()?.unwrap_or(0),
                );
                rustix::fs::mknodat(
                    rustix::fs::CWD,
                    &target,
                    file_type,
                    rustix::fs::Mode::from_raw_mode(mode),
                    dev,
                )?;
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))?;
                if let (Ok(uid), Ok(gid)) = (e.header().uid(), e.header().gid()) {
                    // Only root can give files away; others keep their own.
                    let _ = std::os::unix::fs::lchown(&target, Some(uid as u32), Some(gid as u32));
                }
                if let Some(t) = mtime {
                    let _ = rustix::fs::utimensat(
                        rustix::fs::CWD,
                        &target,
                        &rustix::fs::Timestamps {
                            last_access: to_ts(t),
                            last_modification: to_ts(t),
                        },
                        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
                    );
                }
            }
            _ => {
                if kind == EntryType::Directory {
                    if let (Some(t), Some(p)) = (mtime, safe_join(dest, &rel)) {
                        dirs.push((p, t));
                    }
                }
                e.unpack_in(dest)?;
            }
        }
    }
    for (p, t) in dirs.iter().rev() {
        let _ = std::fs::File::open(p).and_then(|f| f.set_modified(*t));
    }
    Ok(())
}

fn to_ts(t: std::time::SystemTime) -> rustix::fs::Timespec {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    rustix::fs::Timespec {
        tv_sec: d.as_secs() as i64,
        tv_nsec: d.subsec_nanos() as _,
    }
}

fn escapes(rel: &Path) -> std::io::Error {
    std::io::Error::other(format!("{} escapes the target directory", rel.display()))
}

/// Where a base backup's tablespaces go. The stream holds each one's
/// files under `pg_tblspc/<oid>/` and, later, the data directory's link
/// `pg_tblspc/<oid>` to its original location.
#[derive(Debug, Clone, Default)]
pub struct Tablespaces {
    /// OID → the directory its files go to, linked from `pg_tblspc/<oid>`.
    /// A tablespace not listed stays inside the data directory, as a
    /// directory `pg_tblspc/<oid>` (an in-place tablespace).
    pub at: BTreeMap<u32, PathBuf>,
}

/// Where one entry goes.
#[derive(Debug, PartialEq, Eq)]
enum Placement {
    /// `dest/rel`.
    Here,
    /// Not unpacked.
    Skip,
    /// A symlink at `dest/rel` to this directory.
    Link(PathBuf),
    /// This exact path.
    At(PathBuf),
}

impl Tablespaces {
    fn place(&self, rel: &Path, kind: tar::EntryType) -> Placement {
        let parts: Vec<Component<'_>> = rel
            .components()
            .filter(|c| !matches!(c, Component::CurDir))
            .collect();
        let oid = match parts.as_slice() {
            [Component::Normal(a), Component::Normal(b), ..] if *a == "pg_tblspc" => {
                match b.to_str().and_then(|b| b.parse::<u32>().ok()) {
                    Some(oid) => oid,
                    None => return Placement::Here,
                }
            }
            _ => return Placement::Here,
        };
        let mapped = self.at.get(&oid);
        if parts.len() == 2 {
            return match (kind.is_symlink(), mapped) {
                (true, Some(to)) => Placement::Link(to.clone()),
                // In place: the tablespace's files make it a directory.
                (true, None) => Placement::Skip,
                (false, _) => Placement::Here,
            };
        }
        match mapped {
            Some(to) => {
                let mut p = to.clone();
                for c in &parts[2..] {
                    match c {
                        Component::Normal(n) => p.push(n),
                        _ => return Placement::Skip,
                    }
                }
                Placement::At(p)
            }
            None => Placement::Here,
        }
    }
}

/// `dest/rel` when `rel` stays inside `dest` (no root, no `..`).
fn safe_join(dest: &Path, rel: &Path) -> Option<PathBuf> {
    let mut out = dest.to_path_buf();
    for c in rel.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tar::EntryType;

    #[test]
    fn tablespace_entries_go_to_their_mapped_directory() {
        let mut t = Tablespaces::default();
        t.at.insert(16384, PathBuf::from("/srv/ts1"));
        let p = |s: &str, k| t.place(Path::new(s), k);
        assert_eq!(p("base/1/1259", EntryType::Regular), Placement::Here);
        assert_eq!(
            p(
                "pg_tblspc/16384/PG_15_202209061/5/16385",
                EntryType::Regular
            ),
            Placement::At(PathBuf::from("/srv/ts1/PG_15_202209061/5/16385"))
        );
        assert_eq!(
            p("pg_tblspc/16384/", EntryType::Symlink),
            Placement::Link(PathBuf::from("/srv/ts1"))
        );
        assert_eq!(
            p("pg_tblspc/16384/../x", EntryType::Regular),
            Placement::Skip
        );
        // Not mapped: in place, as a directory instead of the link.
        assert_eq!(p("pg_tblspc/99/", EntryType::Symlink), Placement::Skip);
        assert_eq!(
            p("pg_tblspc/99/PG_15/1", EntryType::Regular),
            Placement::Here
        );
        assert_eq!(p("pg_tblspc/", EntryType::Directory), Placement::Here);
    }
}
