//! One tar stream from the archives of a `BASE_BACKUP` with tablespaces.
//!
//! The server sends one tar per tablespace (`<oid>.tar`), then the data
//! directory's, then the manifest. A snapshot is one stream, so they are
//! merged as they arrive, without buffering an archive:
//!
//! - a tablespace's entries are renamed under `pg_tblspc/<oid>/`, where
//!   the data directory links to it (the link itself, in the data
//!   directory's archive, keeps pointing at the original location);
//! - each archive's end blocks are dropped;
//! - `backup_manifest` is appended as an entry, as `pg_basebackup -D -`
//!   does, then one end-of-archive marker.
//!
//! `coffer restore ID --to DIR` of the result leaves each tablespace inside
//! `pg_tblspc/` (PostgreSQL 15 reads such in-place tablespaces), skipping
//! the link; `coffer restore pitr` puts each at its location or its
//! `--tablespace-mapping` and links it. A plain `tar -x` extracts the same
//! tree but reports the link (`pg_tblspc/<oid>` already exists as the
//! tablespace's directory) and exits 2.

use std::io::{self, Write};

use super::tar_watch::{Piece, TarBlocks};

/// Where a tablespace's entries go in the merged stream.
pub fn tablespace_prefix(oid: u32) -> String {
    format!("pg_tblspc/{oid}/")
}

/// The merge's state between writes.
#[derive(Default)]
pub struct TarMerge {
    /// The current archive's rename prefix (`None`: the data directory).
    prefix: Option<String>,
    blocks: TarBlocks,
}

impl TarMerge {
    /// A new archive begins (`None`: the data directory).
    pub fn begin(&mut self, tablespace: Option<u32>) {
        *self = TarMerge {
            prefix: tablespace.map(tablespace_prefix),
            blocks: TarBlocks::default(),
        };
    }

    /// Bytes of the current archive; its end blocks are dropped.
    ///
    /// # Errors
    /// `out`'s errors; a tablespace path too long for a tar header.
    pub fn write(&mut self, out: &mut dyn Write, mut buf: &[u8]) -> io::Result<()> {
        while let Some(piece) = self.blocks.next(&mut buf) {
            match piece {
                Piece::Data(d) | Piece::Pad(d) => out.write_all(d)?,
                Piece::Header(block) => {
                    let mut h = tar::Header::new_old();
                    h.as_mut_bytes().copy_from_slice(&block);
                    let size = h.entry_size()?;
                    if let Some(prefix) = &self.prefix {
                        let path = String::from_utf8_lossy(&h.path_bytes()).into_owned();
                        let renamed = format!("{prefix}{}", path.trim_start_matches("./"));
                        h.set_path(&renamed).map_err(|e| {
                            io::Error::other(format!("tablespace file {renamed}: {e}"))
                        })?;
                        h.set_cksum();
                    }
                    out.write_all(h.as_bytes())?;
                    self.blocks.entry(size);
                }
                Piece::End => {}
            }
        }
        Ok(())
    }

    /// Appends `backup_manifest` (mode 0600, uid 0: restore as root gives
    /// it the data directory's owner with the rest) and the end-of-archive
    /// marker.
    ///
    /// # Errors
    /// `out`'s.
    pub fn finish(&mut self, out: &mut dyn Write, manifest: Option<&[u8]>) -> io::Result<()> {
        if let Some(m) = manifest {
            let mut h = tar::Header::new_ustar();
            h.set_path("backup_manifest")?;
            h.set_size(m.len() as u64);
            h.set_mode(0o600);
            h.set_mtime(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
            );
            h.set_entry_type(tar::EntryType::Regular);
            h.set_cksum();
            out.write_all(h.as_bytes())?;
            out.write_all(m)?;
            out.write_all(&vec![0u8; (512 - m.len() % 512) % 512])?;
        }
        out.write_all(&[0u8; 1024])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, body) in entries {
            let mut h = tar::Header::new_ustar();
            h.set_size(body.len() as u64);
            h.set_mode(0o600);
            h.set_cksum();
            b.append_data(&mut h, name, *body).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn tablespaces_are_renamed_and_archives_joined_into_one_tar() {
        let ts = archive(&[
            ("PG_15_202209061/5/16390", &[1u8; 700][..]),
            ("PG_15_202209061/5/16390_fsm", b"fsm"),
        ]);
        let base = archive(&[("PG_VERSION", b"15\n"), ("global/pg_control", &[2u8; 8192])]);
        let mut out = Vec::new();
        let mut m = TarMerge::default();
        m.begin(Some(16389));
        // In odd pieces, as CopyData messages split them.
        for piece in ts.chunks(301) {
            m.write(&mut out, piece).unwrap();
        }
        m.begin(None);
        for piece in base.chunks(1000) {
            m.write(&mut out, piece).unwrap();
        }
        m.finish(&mut out, Some(b"{\"manifest\": 1}")).unwrap();

        let mut a = tar::Archive::new(&out[..]);
        let got: Vec<(String, Vec<u8>)> = a
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let p = e.path().unwrap().display().to_string();
                let mut body = Vec::new();
                std::io::Read::read_to_end(&mut e, &mut body).unwrap();
                (p, body)
            })
            .collect();
        let names: Vec<&str> = got.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            names,
            [
                "pg_tblspc/16389/PG_15_202209061/5/16390",
                "pg_tblspc/16389/PG_15_202209061/5/16390_fsm",
                "PG_VERSION",
                "global/pg_control",
                "backup_manifest",
            ]
        );
        assert_eq!(got[0].1, vec![1u8; 700]);
        assert_eq!(got[3].1, vec![2u8; 8192]);
        assert_eq!(got[4].1, b"{\"manifest\": 1}");
    }
}
