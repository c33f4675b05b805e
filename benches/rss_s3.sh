#!/usr/bin/env bash
# Peak RSS and wall time of `coffer restore` from the S3 tier (to stdout:
# the ordered pipeline; to a file: the out-of-order one) against input size,
# with the same restores from the local tier beside them for comparison.
# Usage: [COFFER_BIN=path] benches/rss_s3.sh [SIZES_MIB...] (default: 256 1024).
#
# The S3 tier is a real SeaweedFS (`weed mini`, started here on 127.0.0.1
# with the flags tests/support/s3.rs uses, stopped on exit); `weed` comes
# from PATH or $COFFER_WEED (install it with scripts/install-seaweedfs).
# Data: the generator of benches/rss.sh (pseudo-random with some repeated
# text, generated on the fly), backed up into one fresh vault whose
# offsite tier is s3://coffer-bench/rss.
set -euo pipefail
cd "$(dirname "$0")/.."
# COFFER_BIN: measure that binary instead (e.g. a saved "before" build).
if [ -z "${COFFER_BIN:-}" ]; then cargo build --release --quiet --bin coffer; fi
BIN="${COFFER_BIN:-$PWD/target/release/coffer}"
command -v /usr/bin/time >/dev/null || { echo "install GNU time: apt-get install time" >&2; exit 1; }
WEED="${COFFER_WEED:-$(command -v weed || true)}"
[ -n "$WEED" ] && "$WEED" version >/dev/null 2>&1 ||
  { echo "SeaweedFS weed not found: run scripts/install-seaweedfs" >&2; exit 1; }
SIZES=("${@:-256 1024}")
BUCKET=coffer-bench
ACCESS_KEY=coffer-bench-access-key
SECRET_KEY=coffer-bench-secret-key-0123456789

W=$(mktemp -d)
WEED_PID=
PORTS=()
cleanup() {
  if [ -n "$WEED_PID" ]; then
    kill "$WEED_PID" 2>/dev/null || true
    for _ in $(seq 150); do kill -0 "$WEED_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$WEED_PID" 2>/dev/null || true
    wait "$WEED_PID" 2>/dev/null || true
  fi
  # weed leaves its gRPC unix sockets in /tmp, named after our ports.
  for p in "${PORTS[@]}"; do rm -f /tmp/seaweedfs-*-grpc-"$p".sock; done
  rm -rf "$W"
}
trap cleanup EXIT

# Every port set explicitly (the defaults collide, and a gRPC port defaults
# to its HTTP port + 10000); the admin gRPC port must be admin + 10000.
read -r -a PORTS < <(python3 -c '
import socket
held, ports = [], []
def take(p=0):
    s = socket.socket(); s.bind(("127.0.0.1", p)); held.append(s)
    return s.getsockname()[1]
while len(ports) < 8:
    p = take()
    if p not in ports: ports.append(p)
while True:
    hi = take()
    if hi >= 11024 and hi - 10000 not in ports:
        try: ports += [take(hi - 10000), hi]; break
        except OSError: pass
print(*ports)')
read -r S3 S3G MA MAG VO VOG FI FIG AD ADG <<<"${PORTS[*]}"
mkdir -p "$W/weed"
# weed mini makes its admin identity from the AWS_* variables.
env -u S3_BUCKET -u S3_TABLE_BUCKET -u S3_EXTERNAL_URL \
  AWS_ACCESS_KEY_ID=$ACCESS_KEY AWS_SECRET_ACCESS_KEY=$SECRET_KEY \
  "$WEED" -logdir="$W/weed" mini -dir="$W/weed" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
  -s3.port="$S3" -s3.port.grpc="$S3G" -master.port="$MA" -master.port.grpc="$MAG" \
  -volume.port="$VO" -volume.port.grpc="$VOG" -filer.port="$FI" -filer.port.grpc="$FIG" \
  -admin.port="$AD" -admin.port.grpc="$ADG" \
  -filer.localSocket="$W/weed/filer.sock" -s3.localSocket="$W/weed/s3.sock" \
  -admin.ui=false -webdav=false -s3.port.iceberg=0 -s3.port.lance=0 \
  -master.telemetry=false -volume.preStopSeconds=0 \
  </dev/null >"$W/weed/output.log" 2>&1 &
WEED_PID=$!
ready=
for _ in $(seq 600); do
  kill -0 "$WEED_PID" 2>/dev/null || break
  if [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$S3/healthz")" = 200 ]; then
    ready=1; break
  fi
  sleep 0.1
done
[ -n "$ready" ] || { echo "weed mini did not become ready:" >&2; tail -40 "$W/weed/output.log" >&2; exit 1; }
# Create the bucket with a signed PUT (curl >= 7.75 signs SigV4); the admin
# identity may take a moment after /healthz, so until a HEAD finds it.
s3curl() { curl -s -o /dev/null -w '%{http_code}' --aws-sigv4 aws:amz:us-east-1:s3 \
  --user "$ACCESS_KEY:$SECRET_KEY" "$@" "http://127.0.0.1:$S3/$BUCKET"; }
for _ in $(seq 100); do
  s3curl -X PUT >/dev/null || true
  [ "$(s3curl -I)" = 200 ] && break
  sleep 0.1
done
[ "$(s3curl -I)" = 200 ] || { echo "cannot create bucket $BUCKET" >&2; exit 1; }

export HOME="$W/home" COFFER_CONFIG="$W/cfg/config.toml"
export AWS_ACCESS_KEY_ID=$ACCESS_KEY AWS_SECRET_ACCESS_KEY=$SECRET_KEY AWS_REGION=us-east-1
"$BIN" -q init --local "$W/vault" --s3 "s3://$BUCKET/rss" --s3-endpoint "http://127.0.0.1:$S3" >/dev/null

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
# "RSS MiB (seconds)" of one restore; $1 tier, $2 target.
measure() {
  /usr/bin/time -f '%M %e' -o "$W/rss" "$BIN" -q restore "$(cat "$W/id")" --tier "$1" --to "$2" >/dev/null
  rm -f "$W/restored"
  read -r kib secs <"$W/rss"
  printf '%s MiB (%s s)' "$((kib / 1024))" "$secs"
}
printf '| input | backup | local to stdout | local to a file | S3 to stdout | S3 to a file |\n|---|---|---|---|---|---|\n'
for s in ${SIZES[@]}; do
  gen "$s" | /usr/bin/time -f '%M' -o "$W/rss" "$BIN" -q backup --job rss$s - >"$W/id"
  brss=$(cat "$W/rss")
  lo=$(measure local -)
  lf=$(measure local "$W/restored")
  so=$(measure s3 -)
  sf=$(measure s3 "$W/restored")
  printf '| %s MiB | %s MiB | %s | %s | %s | %s |\n' "$s" "$((brss / 1024))" "$lo" "$lf" "$so" "$sf"
done
