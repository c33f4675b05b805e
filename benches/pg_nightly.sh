#!/usr/bin/env bash
# Nightly PostgreSQL backups with coffer against plain pg_dump/pg_restore.
#
# Builds a pgbench database of scale SCALE in a throwaway cluster (the test
# harness's recipe: initdb + postgres in a temporary directory, run as the
# postgres user when invoked as root, Unix socket only, fsync=off), then
# runs NIGHTS nights. Between nights: TX pgbench transactions (scattered
# account updates, history inserts), 1 000 contiguous accounts deleted,
# 2 000 accounts added, and a VACUUM (standing in for autovacuum, so that
# every run sees the same physical layout). Per night it reports:
#   - pg_dump -Fc -Z0 to /dev/null, wall time (the floor for any backup)
#   - coffer backup pg, wall time (pg_dump + facts + chunk/dedup/compress/
#     encrypt + commit; globals included), bytes stored, chunks new/reused
#   - pg_restore from a local file into a new database, wall time
#   - coffer restore --dbname into a new database, wall time (vault read,
#     decrypt, verify, pg_restore, then the row-count/checksum comparison)
# Both restores use --single-transaction --exit-on-error, as coffer does.
#
# Usage: benches/pg_nightly.sh [SCALE] [NIGHTS]      (default: 20 3)
#   TX=N          pgbench transactions per night (default 2000)
#   COFFER_PG_BINDIR  PostgreSQL bin directory (default: pg_config --bindir,
#                 else the newest /usr/lib/postgresql/*/bin)
# Needs: cargo, python3, PostgreSQL server + client + pgbench.
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE=${1:-20}
NIGHTS=${2:-3}
TX=${TX:-2000}

cargo build --release --quiet --bin coffer
BIN="$PWD/target/release/coffer"

if [ -n "${COFFER_PG_BINDIR:-}" ]; then
  PGBIN=$COFFER_PG_BINDIR
elif command -v pg_config >/dev/null && [ -x "$(pg_config --bindir)/initdb" ]; then
  PGBIN=$(pg_config --bindir)
else
  PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
fi
[ -x "$PGBIN/initdb" ] || { echo "no PostgreSQL server binaries (set COFFER_PG_BINDIR)" >&2; exit 1; }
export COFFER_PG_BINDIR=$PGBIN PATH="$PGBIN:$PATH"

W=$(mktemp -d /tmp/coffer-pg-nightly.XXXXXX)
chmod 755 "$W"
as_server() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
  as_server "$PGBIN/pg_ctl" -D "$W/pg/data" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$W"
}
trap cleanup EXIT
mkdir -p "$W/pg"
[ "$(id -u)" = 0 ] && chown postgres "$W/pg"
chmod 700 "$W/pg"
as_server "$PGBIN/initdb" -D "$W/pg/data" -U postgres --auth=trust -E UTF8 \
  --locale=C.UTF-8 --no-sync >/dev/null
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
as_server "$PGBIN/pg_ctl" -D "$W/pg/data" -l "$W/pg/server.log" -w \
  -o "-p $PORT -c unix_socket_directories=$W/pg -c listen_addresses= -c fsync=off" start >/dev/null

unset PGHOSTADDR PGDATABASE PGSERVICE PGPASSWORD PGPASSFILE PGOPTIONS PGSSLMODE
export PGHOST=$W/pg PGPORT=$PORT PGUSER=postgres
export HOME=$W/home COFFER_CONFIG=$W/cfg/config.toml
mkdir -p "$HOME"
psql() { command psql -X -q -v ON_ERROR_STOP=1 "$@"; }

now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$1" "$(now)"; }
field() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2], {}, {'d': d}))" "$@"; }

echo "pgbench -i -s $SCALE ..." >&2
psql -d postgres -c "create database bench"
pgbench -i -q -s "$SCALE" bench 2>/dev/null
"$BIN" -q init --local "$W/vault" >/dev/null
echo "PostgreSQL $(psql -d bench -Atc 'show server_version'), scale $SCALE ($(psql -d bench -Atc "select pg_size_pretty(pg_database_size('bench'))")), $TX transactions/night, $(nproc) cores"
echo
echo "| night | dump size | pg_dump >/dev/null | coffer backup pg | stored | new / reused chunks | pg_restore (file) | coffer restore --dbname |"
echo "|---|---|---|---|---|---|---|---|"
accounts=$((SCALE * 100000))
for night in $(seq 1 "$NIGHTS"); do
  if [ "$night" -gt 1 ]; then
    pgbench -n -c 2 -j 2 -t $((TX / 2)) bench >/dev/null 2>&1
    lo=$(( (night * 7919) % (accounts - 2000) + 1 ))
    psql -d bench -c "delete from pgbench_accounts where aid between $lo and $((lo + 999))"
    psql -d bench -c "insert into pgbench_accounts (aid, bid, abalance, filler)
      select $accounts + ($night - 2) * 2000 + g, 1, 0, '' from generate_series(1, 2000) g"
    psql -d bench -c "vacuum"
  fi

  t=$(now); pg_dump -Fc -Z0 -d bench > /dev/null; t_dump=$(since "$t")

  t=$(now); "$BIN" --json backup pg --job bench --dbname bench > "$W/backup.json"; t_backup=$(since "$t")
  id=$(field "$W/backup.json" 'd["id"]')
  raw=$(field "$W/backup.json" 'd["raw_size"]')
  stored=$(field "$W/backup.json" 'd["stored_size"] + d["globals"]["stored_size"]')
  chunks=$(field "$W/backup.json" 'str(d["new_chunks"]) + " / " + str(d["reused_chunks"])')

  pg_dump -Fc -Z0 -d bench -f "$W/night.dump"
  psql -d postgres -c "create database r_file"
  t=$(now); pg_restore --single-transaction --exit-on-error -d r_file "$W/night.dump"; t_pgr=$(since "$t")
  psql -d postgres -c "create database r_coffer"
  t=$(now); "$BIN" -q restore "$id" --dbname r_coffer; t_cr=$(since "$t")
  psql -d postgres -c "drop database r_file" -c "drop database r_coffer"
  rm -f "$W/night.dump"

  mib() { python3 -c "print(f'{int(float(\"$1\")) / 1048576:.1f} MiB')"; }
  echo "| $night | $(mib "$raw") | ${t_dump} s | ${t_backup} s | $(mib "$stored") | $chunks | ${t_pgr} s | ${t_cr} s |"
done
echo
echo "vault: $(du -sh "$W/vault" | cut -f1) on disk for $NIGHTS nights"
