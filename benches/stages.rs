//! Stage and end-to-end throughput benchmarks (criterion).
//!
//! `cargo bench --bench stages` — each stage on 16 MiB of dump-like data
//! (text rows with numbers, names and JSON, ~4:1 under zstd -3, roughly what
//! a `pg_dump -Fc -Z0` of an application database looks like), then a whole
//! backup and restore through the library on 64 MiB. Figures are quoted in
//! docs/performance.md with the machine they were taken on.

use std::io::{Cursor, Read};
use std::sync::Arc;

#[path = "../tests/support/s3.rs"]
mod s3;

use coffer::pipeline::backup::{self, BackupContext, BackupRequest};
use coffer::pipeline::restore::{self, ReadContext};
use coffer::pipeline::restore_file;
use coffer::progress::Silent;
use coffer::source::Source;
use coffer::tier::local::LocalTier;
use coffer::tier::Tier;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vault_format::blob::{BlobDecoder, BlobEncoder};
use vault_format::chunker::{Chunker, ChunkerParams};
use vault_format::config::VaultConfig;
use vault_format::keys::{DedupKey, Identity};
use vault_format::pack::{ChunkKind, PackParams, PackReader, PackWriter};
use vault_format::VaultId;

/// Deterministic dump-like rows (the shared test-data generator's).
fn dump_like(len: usize) -> Vec<u8> {
    vault_format::testdata::dump_like(len)
}

fn stages(c: &mut Criterion) {
    let data = dump_like(16 << 20);
    let key = DedupKey::from_bytes([7; 32]);
    let chunker = Chunker::new(&ChunkerParams::default(), &key).unwrap();
    let idkey = key.chunk_id_key();
    let identity = Identity::generate();
    let recipients = identity.to_recipients();

    let mut g = c.benchmark_group("stage");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("chunk (FastCDC 8 KiB)", |b| {
        b.iter(|| chunker.split(&data).len())
    });
    let chunks = chunker.split(&data);
    g.bench_function("hash (keyed BLAKE3 per chunk)", |b| {
        b.iter(|| chunks.iter().map(|c| idkey.id(c).0[0] as u64).sum::<u64>())
    });
    let mut enc = BlobEncoder::new(3).unwrap();
    let mut out = Vec::new();
    g.bench_function("compress (zstd -3, 1 MiB blobs)", |b| {
        b.iter(|| {
            data.chunks(1 << 20)
                .map(|blob| {
                    enc.encode(blob, &mut out).unwrap();
                    out.len()
                })
                .sum::<usize>()
        })
    });
    g.bench_function("seal (age pack)", |b| {
        b.iter(|| {
            let mut w =
                PackWriter::new(&recipients, Vec::with_capacity(data.len() + 4096)).unwrap();
            for blob in data.chunks(1 << 20) {
                w.add_blob(
                    vault_format::blob::Codec::Raw,
                    ChunkKind::Data,
                    blob,
                    vec![(idkey.id(&blob[..16]), blob.len() as u32)],
                )
                .unwrap();
            }
            w.finish().unwrap().size
        })
    });
    let mut w = PackWriter::new(&recipients, Vec::new()).unwrap();
    let mut stored = Vec::new();
    for blob in data.chunks(1 << 20) {
        let codec = enc.encode(blob, &mut stored).unwrap();
        w.add_blob(
            codec,
            ChunkKind::Data,
            &stored,
            vec![(idkey.id(blob), blob.len() as u32)],
        )
        .unwrap();
    }
    let pack = w.finish().unwrap().writer;
    let mut dec = BlobDecoder::new().unwrap();
    g.bench_function("open (decrypt + decompress + verify)", |b| {
        b.iter(|| {
            let mut r = PackReader::open(&identity, Cursor::new(&pack)).unwrap();
            let blobs = r.index().blobs.clone();
            let (mut s, mut raw) = (Vec::new(), Vec::new());
            let mut n = 0;
            for bl in &blobs {
                r.read_blob(bl, &mut s).unwrap();
                dec.decode(bl.codec, &s, bl.raw_len as usize, &mut raw)
                    .unwrap();
                assert_eq!(idkey.id(&raw), bl.chunks[0].0);
                n += raw.len();
            }
            n
        })
    });
    g.finish();
}

struct CursorSource(Cursor<Vec<u8>>);
impl Source for CursorSource {
    fn kind(&self) -> &str {
        "stdin"
    }
    fn reader(&mut self) -> &mut (dyn Read + Send) {
        &mut self.0
    }
    fn finish(&mut self) -> coffer::Result<serde_json::Map<String, serde_json::Value>> {
        Ok(Default::default())
    }
}

/// A fresh identity, dedup key and vault config with default parameters.
fn new_vault_keys() -> (Identity, DedupKey, VaultConfig) {
    let identity = Identity::generate();
    let key = DedupKey::generate();
    let config = VaultConfig::new(
        VaultId::random(),
        "2026-11-24T00:00:00Z".into(),
        ChunkerParams::default(),
        PackParams::default(),
        &identity.to_recipients(),
        &key,
    )
    .unwrap();
    (identity, key, config)
}

fn end_to_end(c: &mut Criterion) {
    let data = dump_like(64 << 20);
    let dir = tempfile::tempdir().unwrap();
    let (identity, key, config) = new_vault_keys();
    let tier = Arc::new(LocalTier::create("local", &dir.path().join("vault")).unwrap());
    tier.put_bytes("config", &config.encode()).unwrap();
    let mut g = c.benchmark_group("end-to-end");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(data.len() as u64));
    let mut n = 0;
    let fresh_ctx = |n: usize| BackupContext {
        tier: tier.clone(),
        offsite: vec![],
        catalog_path: dir.path().join(format!("catalog-{n}.sqlite")),
        config: config.clone(),
        recipients: identity.to_recipients(),
        dedup_key: key.clone(),
        threads: coffer::pipeline::threads(),
        offsite_retry: std::time::Duration::ZERO,
    };
    g.bench_function("backup, first night (new catalog each run)", |b| {
        b.iter(|| {
            n += 1;
            let ctx = fresh_ctx(n);
            let mut src = CursorSource(Cursor::new(data.clone()));
            backup::run(&ctx, &mut src, &BackupRequest::default(), &Silent)
                .unwrap()
                .report
                .stored_size
        })
    });
    let ctx = fresh_ctx(0);
    let rep = backup::run(
        &ctx,
        &mut CursorSource(Cursor::new(data.clone())),
        &BackupRequest::default(),
        &Silent,
    )
    .unwrap();
    g.bench_function("backup, unchanged data (all chunks reused)", |b| {
        b.iter(|| {
            let mut src = CursorSource(Cursor::new(data.clone()));
            backup::run(&ctx, &mut src, &BackupRequest::default(), &Silent)
                .unwrap()
                .report
                .reused_chunks
        })
    });
    let catalog = coffer::catalog::Catalog::open(&ctx.catalog_path).unwrap();
    let manifest = catalog.manifest(&rep.report.id).unwrap();
    let rctx = ReadContext {
        tiers: vec![tier.clone()],
        catalog_path: ctx.catalog_path.clone(),
        identity: Arc::new(identity),
        idkey: key.chunk_id_key(),
        threads: coffer::pipeline::threads(),
        fallbacks: Default::default(),
    };
    g.bench_function("restore in order to a pipe (every chunk verified)", |b| {
        b.iter(|| {
            restore::run(&rctx, &manifest, &mut std::io::sink(), &Silent)
                .unwrap()
                .bytes
        })
    });
    g.bench_function(
        "restore to a file, out of order (every chunk verified)",
        |b| {
            b.iter(|| {
                // A fresh (unlinked) file each time; no fsync: the pipeline only.
                let f = tempfile::tempfile_in(dir.path()).unwrap();
                restore_file::run(&rctx, &manifest, &f, &Silent)
                    .unwrap()
                    .bytes
            })
        },
    );
    g.finish();
}

/// The offsite tier against an S3 server on loopback (s3s-fs, in process):
/// backup with and without it on the same data, the lag from the end of
/// ingest to "offsite complete", and a restore that reads only from S3.
fn offsite(c: &mut Criterion) {
    let server = s3::s3s_fs();
    for (k, v) in server.env() {
        // Edition 2021: set_var is safe; nothing else runs yet.
        std::env::set_var(k, v);
    }
    let data = dump_like(64 << 20);
    let dir = tempfile::tempdir().unwrap();
    let (identity, key, config) = new_vault_keys();
    let mut g = c.benchmark_group("offsite");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(data.len() as u64));
    let mut n = 0;
    let mut lag = Vec::new();
    let mut run = |with_s3: bool, lag: &mut Vec<f64>| {
        n += 1;
        let local =
            Arc::new(LocalTier::create("local", &dir.path().join(format!("v{n}"))).unwrap());
        local.put_bytes("config", &config.encode()).unwrap();
        let mut settings =
            coffer::tier::s3::S3Settings::from_url(&format!("s3://{}/run{n}", server.bucket()))
                .unwrap();
        settings.endpoint = Some(server.endpoint());
        let offsite: Vec<Arc<dyn Tier>> = if with_s3 {
            vec![Arc::new(
                coffer::tier::s3::S3Tier::new("s3", &settings).unwrap(),
            )]
        } else {
            vec![]
        };
        let ctx = BackupContext {
            tier: local,
            offsite,
            catalog_path: dir.path().join(format!("c{n}.sqlite")),
            config: config.clone(),
            recipients: identity.to_recipients(),
            dedup_key: key.clone(),
            threads: coffer::pipeline::threads(),
            offsite_retry: std::time::Duration::ZERO,
        };
        // The command-level backup: the pipeline plus completing offsite.
        let rep = coffer::commands::backup::backup_with(
            &ctx,
            &mut CursorSource(Cursor::new(data.clone())),
            &BackupRequest::default(),
            &Silent,
        )
        .unwrap();
        assert!(!rep.offsite_pending());
        lag.push(rep.offsite_lag_seconds);
        (ctx, rep)
    };
    g.bench_function("backup, local tier only", |b| {
        b.iter(|| run(false, &mut Vec::new()).1.stored_size)
    });
    g.bench_function("backup, local + S3 (loopback)", |b| {
        b.iter(|| run(true, &mut lag).1.stored_size)
    });
    lag.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if !lag.is_empty() {
        eprintln!(
            "offsite lag (end of ingest -> offsite complete) over {} runs: median {:.3} s, max {:.3} s",
            lag.len(),
            lag[lag.len() / 2],
            lag[lag.len() - 1]
        );
    }
    let (ctx, rep) = run(true, &mut Vec::new());
    let manifest = coffer::catalog::Catalog::open(&ctx.catalog_path)
        .unwrap()
        .manifest(&rep.id)
        .unwrap();
    let rctx = ReadContext {
        tiers: ctx.offsite.clone(),
        catalog_path: ctx.catalog_path.clone(),
        identity: Arc::new(Identity::parse(&identity.to_file_text("bench")).unwrap()),
        idkey: key.chunk_id_key(),
        threads: coffer::pipeline::threads(),
        fallbacks: Default::default(),
    };
    g.bench_function("restore from S3 only (every chunk verified)", |b| {
        b.iter(|| {
            restore::run(&rctx, &manifest, &mut std::io::sink(), &Silent)
                .unwrap()
                .bytes
        })
    });
    let pack_file = std::fs::read_dir(dir.path().join(format!("v{n}/packs")))
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .map(|e| e.unwrap().path())
        .next()
        .unwrap();
    let size = std::fs::metadata(&pack_file).unwrap().len();
    g.throughput(Throughput::Bytes(size));
    let s3tier = &ctx.offsite[0];
    let mut i = 0;
    g.bench_function("upload one pack to S3 (loopback)", |b| {
        b.iter(|| {
            i += 1;
            s3tier
                .put_file(&format!("upload-bench/{i}"), &pack_file)
                .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, stages, end_to_end, offsite);
criterion_main!(benches);
