#![allow(dead_code)]
//! What the backward-compatibility fixtures (tests/fixtures/vaults) hold,
//! made again from seeds so that the data itself is never committed.
//!
//! Pinned: the committed fixture vaults hold exactly what these functions
//! make, so changing any of them (the generator, a seed, a size, a name, a
//! mode or a time) makes every fixture look corrupt. The known-answer test
//! `fixture_data_is_still_what_the_fixtures_hold` in
//! tests/backward_compatibility.rs fails first and says so. The bytes come
//! from the shared `vault_format::testdata::Xof`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

/// Every file and directory of [`make_tree`] has this mtime
/// (2025-11-24T16:00:00Z), so the tree made again compares equal, times
/// included.
pub const TREE_MTIME: u64 = 1_764_000_000;

/// The seeded stream the fixtures were made from: the shared generator's.
pub use vault_format::testdata::Xof as Rng;

/// `n` bytes shaped like the data section of a plain-text `pg_dump`: rows of
/// an id, a hex name, an amount and a status, tab-separated. Compressible
/// (zstd packs it into well under half), as real dumps are.
pub fn dump_text(seed: u64, n: usize) -> Vec<u8> {
    const STATUS: [&str; 4] = ["new", "paid", "shipped", "refunded"];
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(n + 64);
    let mut id = seed * 1_000_000;
    while out.len() < n {
        id += 1;
        let r = rng.next_u64();
        let line = format!(
            "{id}\tcustomer-{:08x}\t{}.{:02}\t{}\n",
            r as u32,
            (r >> 32) % 100_000,
            (r >> 48) % 100,
            STATUS[(r >> 62) as usize]
        );
        out.extend_from_slice(line.as_bytes());
    }
    out.truncate(n);
    out
}

/// Night one's dump: 300,000 bytes.
pub fn night_1() -> Vec<u8> {
    dump_text(1, 300_000)
}

/// Night two's dump: night one with 3,000 bytes in the middle rewritten, so
/// that it restores from night one's blob and a new one.
pub fn night_2() -> Vec<u8> {
    let mut d = night_1();
    d[150_000..153_000].copy_from_slice(&dump_text(2, 3_000));
    d
}

/// A small volume at `root` (created): two files with content in a
/// subdirectory (one of them random, so its blob is stored raw), a text
/// file at the top, an empty file, a symlink and an empty directory, with
/// fixed modes and [`TREE_MTIME`].
pub fn make_tree(root: &Path) {
    let data = root.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::create_dir(root.join("empty")).unwrap();
    let files: [(&Path, Vec<u8>, u32); 4] = [
        (
            Path::new("README.txt"),
            b"coffer backward-compatibility fixture volume\n".to_vec(),
            0o644,
        ),
        (
            Path::new("data/table.bin"),
            Rng::new(3).bytes(20_000),
            0o640,
        ),
        (
            Path::new("data/settings.conf"),
            b"listen = 127.0.0.1\nmax_connections = 20\n".to_vec(),
            0o600,
        ),
        (Path::new("data/empty.log"), Vec::new(), 0o644),
    ];
    for (rel, content, mode) in &files {
        let p = root.join(rel);
        std::fs::write(&p, content).unwrap();
        set_mode_and_time(&p, *mode);
    }
    std::os::unix::fs::symlink("data/table.bin", root.join("latest")).unwrap();
    // Directories last, deepest first: writing into one changes its mtime.
    for (rel, mode) in [("data", 0o750), ("empty", 0o700)] {
        set_mode_and_time(&root.join(rel), mode);
    }
}

fn set_mode_and_time(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    let t = UNIX_EPOCH + Duration::from_secs(TREE_MTIME);
    std::fs::File::open(p)
        .unwrap()
        .set_times(std::fs::FileTimes::new().set_modified(t).set_accessed(t))
        .unwrap();
}
