//! vault-format/SPEC.md shows a real `config` and a real manifest; these
//! tests keep them real. A vault is made through the binary as an operator
//! would, its config read and its manifest decrypted, and SPEC.md's
//! examples must have the same manifest fields and the same chunker and
//! pack settings, and the manifest example must have been cut with that
//! chunker. `scripts/spec-examples` prints fresh examples to paste when
//! they are stale; it is run here too, so it cannot rot either.

#[path = "support/cli.rs"]
mod cli_support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use cli_support::*;
use serde_json::Value;
use vault_format::keys::Identity;
use vault_format::manifest::MAX_MANIFEST_LEN;

/// The first ```json block of SPEC.md's section `## {heading}`, parsed.
fn spec_example(heading: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("vault-format/SPEC.md");
    let spec = std::fs::read_to_string(&path).unwrap();
    let section = spec
        .split("\n## ")
        .find(|s| s.lines().next() == Some(heading))
        .unwrap_or_else(|| panic!("SPEC.md has no section `## {heading}`"));
    let block = section
        .split_once("```json\n")
        .and_then(|(_, rest)| rest.split_once("\n```"))
        .unwrap_or_else(|| panic!("SPEC.md's {heading} section has no ```json example"))
        .0;
    serde_json::from_str(block)
        .unwrap_or_else(|e| panic!("SPEC.md's {heading} example is not JSON: {e}\n{block}"))
}

/// A new vault's config and the decrypted manifest of a directory backed
/// up into it, both as the tier holds them.
fn real_config_and_manifest() -> (Value, Value) {
    let v = Vault::new();
    let src = v.work.join("docs");
    std::fs::create_dir(&src).unwrap();
    write_random_file(&src.join("a.bin"), 1, 100_000);
    std::fs::write(src.join("b.md"), "# notes\n".repeat(2000)).unwrap();
    let id = v.backup(&src, &["--job", "docs"]);
    let config = serde_json::from_slice(&std::fs::read(v.vault.join("config")).unwrap()).unwrap();
    let identity = Identity::parse(&std::fs::read_to_string(v.identity()).unwrap()).unwrap();
    let sealed = std::fs::read(v.vault.join("snapshots").join(&id)).unwrap();
    let plain = vault_format::seal::open(&identity, &sealed, "manifest", MAX_MANIFEST_LEN).unwrap();
    (config, serde_json::from_slice(&plain).unwrap())
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .unwrap_or_else(|| panic!("not a JSON object: {v}"))
        .keys()
        .cloned()
        .collect()
}

/// The fields a new vault's config and manifest have, and SPEC.md's
/// examples (`scripts/spec-examples` prints fresh ones).
fn assert_examples_match(config: &Value, manifest: &Value, what: &str) {
    let (real_config, real_manifest) = real_config_and_manifest();
    assert_eq!(
        keys(manifest),
        keys(&real_manifest),
        "{what}: manifest fields differ from a real manifest's {real_manifest:#}"
    );
    for k in ["chunker", "pack"] {
        assert_eq!(
            config[k], real_config[k],
            "{what}: config `{k}` differs from a new vault's"
        );
    }
}

#[test]
fn spec_examples_have_the_fields_and_settings_of_a_new_vault() {
    let (config, manifest) = (spec_example("config"), spec_example("Manifests"));
    assert_examples_match(&config, &manifest, "SPEC.md");
}

/// Asserts that `manifest` was cut with `config`'s chunker. A manifest
/// example made before the chunker changed keeps all its fields, so the
/// field check alone misses it; its chunk count does not: over a stream of
/// eight average chunks or more, FastCDC's mean chunk stays within a factor
/// of two of `avg_size`.
fn assert_cut_with_chunker_of(config: &Value, manifest: &Value, what: &str) {
    let avg_size = config["chunker"]["avg_size"].as_u64().unwrap();
    let raw = manifest["raw_size"].as_u64().unwrap();
    let chunks = manifest["chunk_count"].as_u64().unwrap();
    assert!(
        raw >= 8 * avg_size,
        "{what}: the manifest's stream ({raw} bytes) is too short to tell its chunker"
    );
    let avg = raw / chunks;
    assert!(
        (avg_size / 2..=avg_size * 2).contains(&avg),
        "{what}: the manifest averages {avg}-byte chunks ({raw} bytes in {chunks}), \
         so it was not cut with avg_size {avg_size}; paste a fresh one from scripts/spec-examples"
    );
}

#[test]
fn spec_manifest_example_was_cut_with_the_config_examples_chunker() {
    let (config, manifest) = (spec_example("config"), spec_example("Manifests"));
    assert_cut_with_chunker_of(&config, &manifest, "SPEC.md");
}

#[test]
fn spec_examples_script_prints_a_real_config_and_manifest() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/spec-examples");
    let o = Command::new(&script).env("COFFER", BIN).output().unwrap();
    assert!(
        o.status.success(),
        "{} failed (it needs age and jq): {}",
        script.display(),
        stderr(&o)
    );
    // Two JSON documents, each after a `# ` comment line.
    let out = stdout(&o);
    let docs: Vec<Value> = out
        .split("\n# ")
        .map(|part| part.split_once('\n').map_or("", |(_, json)| json))
        .map(|json| serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: not JSON:\n{json}")))
        .collect();
    assert_eq!(docs.len(), 2, "{out}");
    let dedup_key = docs[0]["dedup_key"].as_str().unwrap();
    assert!(
        dedup_key.starts_with("-----BEGIN AGE ENCRYPTED FILE-----\n")
            && dedup_key.contains("\n…\n"),
        "the dedup key is shortened as in SPEC.md: {dedup_key:?}"
    );
    assert_examples_match(&docs[0], &docs[1], "scripts/spec-examples");
    assert_cut_with_chunker_of(&docs[0], &docs[1], "scripts/spec-examples");
}
