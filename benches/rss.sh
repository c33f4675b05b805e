#!/usr/bin/env bash
# Peak RSS of `coffer backup -` and `coffer restore` (to stdout and to a
# file) against input size
# (throughput is measured by benches/stages.rs, not here: the generator is slow):
# the pipeline is bounded, so a large stream must use no more memory than a
# small one. Usage: benches/rss.sh [SIZES_MIB...] (default: 256 1024 4096).
# Data: a repeating-free pseudo-random stream with some text, generated on
# the fly (no temporary copy), into a fresh vault in a temp dir.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin coffer
BIN="$PWD/target/release/coffer"
command -v /usr/bin/time >/dev/null || { echo "install GNU time: apt-get install time" >&2; exit 1; }
SIZES=("${@:-256 1024 4096}")
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
export HOME="$W/home" COFFER_CONFIG="$W/cfg/config.toml"
"$BIN" -q init --local "$W/vault" >/dev/null
gen() { python3 -c "
import sys, hashlib
n = int(sys.argv[1]) << 20
out = sys.stdout.buffer
h = b'seed'
w = 0
while w < n:
    h = hashlib.blake2b(h).digest()
    block = (h * 512)[:16384] if h[0] < 80 else hashlib.shake_256(h).digest(16384)
    out.write(block); w += len(block)
" "$1"; }
printf '| input | backup peak RSS | restore to stdout peak RSS | restore to a file peak RSS |\n|---|---|---|---|\n'
for s in ${SIZES[@]}; do
  gen "$s" | /usr/bin/time -f '%M' -o "$W/rss" "$BIN" -q backup --job rss$s - > "$W/id"
  brss=$(cat "$W/rss")
  # The ordered pipeline (pipes, trees, pg_restore) ...
  /usr/bin/time -f '%M' -o "$W/rss" "$BIN" -q restore "$(cat "$W/id")" --to - > /dev/null
  rrss=$(cat "$W/rss")
  # ... and the out-of-order one (regular files), which plans by windows.
  /usr/bin/time -f '%M' -o "$W/rss" "$BIN" -q restore "$(cat "$W/id")" --to "$W/restored" > /dev/null
  frss=$(cat "$W/rss")
  rm -f "$W/restored"
  printf '| %s MiB | %s MiB | %s MiB | %s MiB |\n' "$s" "$((brss/1024))" "$((rrss/1024))" "$((frss/1024))"
done
