#!/usr/bin/env python3
"""coffer vs pgBackRest 2.45: WAL archiving, nightly base backups and PITR.

One PostgreSQL 15 cluster (wal_level=replica, archive_mode=on) feeds every
tool at once: its archive_command is a small bash wrapper that pushes each
WAL file with coffer and with pgBackRest (one stanza per pgBackRest
variant), in an order that rotates with the segment number, and logs each
push's wall time (`date +%s%N` before and after) to a file. So all tools
archive the same bytes, live, at the moment PostgreSQL hands them over.

    coffer      archive_command: coffer wal push --job main %p
                nightly: coffer backup pg --physical --job main
                PITR:    coffer restore pitr --target-time T --target-action promote
    pgBackRest  archive_command: pgbackrest archive-push %p (synchronous)
                nightly: backup --type=full every night ("full"), and in a
                second stanza full on night 1 then --type=incr ("full+incr")
                PITR:    restore --type=time --target=T --target-action=promote

pgBackRest runs with compress-type=zst (2.45 has it; gz is the default),
repo1-cipher-type=aes-256-cbc (coffer always encrypts), start-fast=y (as
coffer's default fast checkpoint), process-max = CPUs, no archive-async.

Workload: pgbench -i -s SCALE, pgbench load until --segments segments are
archived (a CHECKPOINT before each round, so the WAL has the full-page images
a busy server's WAL has), then N nights: a base backup with each tool
(rotating order), then a day of --tx pgbench transactions. The PITR target is taken after 90% of
the last day, so each recovery restores the newest base backup and replays
WAL archived since. Reported: push latency per segment (median, p99),
backup wall time per night, stored bytes (du -sb of each repository) before
night 1 and after the last, time to recover (restore command start until
pg_is_in_recovery() is false; median of --repeat runs) and the recovered
pgbench_history row count against the live count at the target. Note:
coffer compresses WAL with zstd level 1 (src/wal/push.rs), pgBackRest's zst
default level is 3.

    benches/compare/wal.py                  # scale 20, 7 nights, 200 segments: ~3 min on 2 cores
    benches/compare/wal.py --smoke          # scale 2, 2 nights: ~30 s

Run as root: the cluster, coffer and pgBackRest run as the postgres user in
a postgres-owned temporary directory (the coffer binary is copied into it).
pgBackRest is installed with `apt-get install -y pgbackrest` if missing.
Results: --out/wal.md and wal.json (default /tmp/walbench-out).
"""

import argparse
import json
import os
import pwd
import re
import secrets
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import compare  # noqa: E402
from compare import BenchError, du, log, run, timed  # noqa: E402

MB = 1e6
PGBIN = "/usr/lib/postgresql/15/bin"
rotate = lambda xs, k: xs[k % len(xs):] + xs[:k % len(xs)]  # noqa: E731
SEG = re.compile(r"^[0-9A-F]{24}$")  # a WAL segment (not .history/.backup)
LABEL = {"coffer": "coffer", "pgbr": "pgBackRest full nightly", "pgbr_incr": "pgBackRest full+incr"}


class Ctx:
    """Paths, users and environment shared by every step."""

    def __init__(self, a, work):
        self.a, self.work = a, work
        pw = pwd.getpwnam("postgres")
        self.uid, self.gid = pw.pw_uid, pw.pw_gid
        self.home = self.mk("home")
        self.sock = self.mk("sock")
        self.logdir = os.path.join(a.out, "logs")
        self.pushlog = os.path.join(work, "push-times.log")
        self.cfg = os.path.join(self.mk("coffer"), "config.toml")
        self.vault = os.path.join(work, "coffer", "vault")
        self.pgbr_cfg = os.path.join(work, "pgbackrest.conf")
        self.env = dict(os.environ, HOME=self.home, TZ="UTC", PGUSER="postgres", PGHOST=self.sock,
                        COFFER_PG_BINDIR=PGBIN, PATH=f"{PGBIN}:{os.environ['PATH']}")
        for k in ("COFFER_CONFIG", "COFFER_IDENTITY", "PGDATABASE", "PGPASSWORD", "PGSERVICE", "PGPORT"):
            self.env.pop(k, None)
        self.tools = ["coffer", "pgbr"] + ([] if a.no_incr else ["pgbr_incr"])

    def mk(self, name):
        d = os.path.join(self.work, name)
        os.makedirs(d, mode=0o700)
        os.chown(d, self.uid, self.gid)
        return d

    def as_pg(self, cmd):
        """CMD as the postgres user (runuser resets HOME; put ours back)."""
        return ["runuser", "-u", "postgres", "--", "env", f"HOME={self.home}"] + cmd

    def pg(self, cmd, what):
        return run(self.as_pg(cmd), what, env=self.env, cwd=self.work)

    def coffer(self, *args):
        return [self.bin, "--config", self.cfg] + list(args)

    def pgbr(self, stanza, *args):
        return ["pgbackrest", f"--config={self.pgbr_cfg}", f"--stanza={stanza}"] + list(args)


class Server:
    """A PostgreSQL server run with pg_ctl as postgres, on a Unix socket only."""

    def __init__(self, ctx, data, port):
        self.ctx, self.data, self.port = ctx, data, port
        self.logfile = os.path.join(ctx.work, f"postgres-{port}.log")
        self.up = False

    def start(self, opts="", wait=True):
        o = f"-p {self.port} -c unix_socket_directories={self.ctx.sock} -c listen_addresses='' {opts}"
        self.up = True
        self.ctx.pg([f"{PGBIN}/pg_ctl", "-D", self.data, "-l", self.logfile, "-o", o,
                     "-w" if wait else "-W", "-t", "120", "start"], "pg_ctl start")

    def stop(self):
        if self.up:
            self.up = False
            subprocess.run(self.ctx.as_pg([f"{PGBIN}/pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop"]),
                           env=self.ctx.env, cwd=self.ctx.work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def sql(self, q, db="postgres"):
        return run([f"{PGBIN}/psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-p", str(self.port), "-d", db,
                    "-c", q], "psql", env=self.ctx.env).strip()

    def pgbench(self, *args):
        run([f"{PGBIN}/pgbench", "-p", str(self.port)] + list(args) + ["postgres"], "pgbench", env=self.ctx.env)

    def archived(self):
        """Switch to a new segment and wait until the archiver has pushed the
        old one: then every tool holds all WAL written so far."""
        seg = self.sql("SELECT pg_walfile_name(pg_switch_wal())")
        self.wait_archived(seg)

    def wait_archived(self, seg):
        end = time.monotonic() + 600
        while self.sql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver") < seg:
            if time.monotonic() > end:
                raise BenchError(f"{seg} not archived in 600 s; see {self.logfile}")
            time.sleep(0.1)

    def log_tail(self):
        return open(self.logfile, errors="replace").read()[-3000:] if os.path.exists(self.logfile) else ""


def setup(ctx):
    """coffer vault, pgBackRest config, the archive wrapper, the cluster."""
    a = ctx.a
    ctx.bin = os.path.join(ctx.work, "coffer-bin")
    shutil.copy(compare.build_coffer(a), ctx.bin)  # postgres may not reach the checkout
    os.chmod(ctx.bin, 0o755)
    ctx.pg(ctx.coffer("--quiet", "init", "--local", ctx.vault), "coffer init")
    data, port = os.path.join(ctx.work, "data"), a.port
    stanzas = {"pgbr": "full", "pgbr_incr": "incr"}
    conf = ["[global]", f"log-path={ctx.mk('pgbr-log')}", f"lock-path={ctx.mk('pgbr-lock')}",
            f"spool-path={ctx.mk('pgbr-spool')}", "compress-type=zst", f"process-max={os.cpu_count()}",
            "start-fast=y", "repo1-cipher-type=aes-256-cbc", f"repo1-cipher-pass={secrets.token_hex(24)}",
            "repo1-retention-full=9999", "log-level-console=warn", ""]
    for t in ctx.tools[1:]:
        conf += [f"[{stanzas[t]}]", f"repo1-path={ctx.mk('repo-' + stanzas[t])}", f"pg1-path={data}",
                 f"pg1-socket-path={ctx.sock}", f"pg1-port={port}", "pg1-user=postgres", ""]
    with open(ctx.pgbr_cfg, "w") as f:
        f.write("\n".join(conf))
    os.chown(ctx.pgbr_cfg, ctx.uid, ctx.gid)
    os.chmod(ctx.pgbr_cfg, 0o600)  # it holds the cipher passphrase
    ctx.stanzas = stanzas
    ctx.repo = {"coffer": ctx.vault, "pgbr": os.path.join(ctx.work, "repo-full"),
                "pgbr_incr": os.path.join(ctx.work, "repo-incr")}

    # The wrapper: every tool pushes every file; the order rotates with the
    # segment number so no tool always reads the segment first (cold cache).
    # Any failure exits 1, PostgreSQL retries, and both tools accept a
    # repeated push of the same content.
    q = shlex.quote
    cmds = {"coffer": ctx.coffer("--quiet", "wal", "push", "--job", "main"),
            "pgbr": ctx.pgbr("full", "archive-push"), "pgbr_incr": ctx.pgbr("incr", "archive-push")}
    cases = "\n".join(f"    {t}) {' '.join(map(q, cmds[t]))} \"$p\" ;;" for t in ctx.tools)
    # The name must contain "pgbackrest": pgBackRest checks archive_command for it.
    wrapper = os.path.join(ctx.work, "archive-coffer-pgbackrest.sh")
    with open(wrapper, "w") as f:
        f.write(f"""#!/bin/bash
# archive_command of the benchmark ({os.path.basename(__file__)}): push $1 (%p) with each tool.
export HOME={q(ctx.home)}
p=$1 f=${{1##*/}}
tools=({' '.join(ctx.tools)})
n=${{#tools[@]}}
r=0; [[ $f =~ ^[0-9A-F]{{24}}$ ]] && r=$(( 16#${{f:23:1}} % n ))
push() {{
  case $1 in
{cases}
  esac
}}
status=0
for ((i = 0; i < n; i++)); do
  t=${{tools[$(( (i + r) % n ))]}}
  t0=$(date +%s%N)
  push "$t" >>{q(ctx.work)}/archive-$t.out 2>&1; rc=$?
  echo "$f $t $rc $t0 $(date +%s%N)" >>{q(ctx.pushlog)}
  [ $rc = 0 ] || status=1
done
exit $status
""")
    os.chmod(wrapper, 0o755)

    ctx.pg([f"{PGBIN}/initdb", "-D", data, "-U", "postgres", "--auth=trust", "--encoding=UTF8",
            "--locale=C.UTF-8", "--no-sync"], "initdb")
    # Realistic WAL (full_page_writes on, the default); fsync and synchronous
    # commit off only so the load runs quickly: the tools fsync their own files.
    with open(os.path.join(data, "postgresql.conf"), "a") as f:
        f.write(f"\nwal_level = replica\narchive_mode = on\narchive_command = '{wrapper} %p'\nfsync = off\n"
                "synchronous_commit = off\nshared_buffers = 256MB\nmax_wal_size = 2GB\ntimezone = 'UTC'\n")
    srv = Server(ctx, data, port)
    ctx.servers.append(srv)  # stopped in main's finally whatever happens
    srv.start()
    for t in ctx.tools[1:]:
        ctx.pg(ctx.pgbr(stanzas[t], "stanza-create"), "pgbackrest stanza-create")
    return srv


def push_times(ctx):
    """{tool: [ms per successful push of a 16 MiB segment]}, and failures."""
    out, failed = {t: [] for t in ctx.tools}, []
    if os.path.exists(ctx.pushlog):
        for line in open(ctx.pushlog):
            f, t, rc, t0, t1 = line.split()
            if rc != "0":
                failed.append(line.strip())
            elif SEG.match(f):
                out[t].append((int(t1) - int(t0)) / 1e6)
    return out, failed


def segments_pushed(ctx):
    return min(len(v) for v in push_times(ctx)[0].values())


def stored(ctx):
    return {t: du(ctx.repo[t]) for t in ctx.tools}


def backup(ctx, srv, tool, night):
    if tool == "coffer":
        cmd = ctx.coffer("--quiet", "backup", "pg", "--physical", "--job", "main", "--dbname",
                         f"host={ctx.sock} port={srv.port} user=postgres dbname=postgres")
    else:
        kind = "full" if tool == "pgbr" or night == 1 else "incr"
        cmd = ctx.pgbr(ctx.stanzas[tool], f"--type={kind}", "backup")
    r = timed(ctx.as_pg(cmd), ctx.logdir, f"{tool}-backup-{night}", cwd=ctx.work, env=ctx.env)
    return {"wall": r["wall"], "cpu": r["user"] + r["sys"], "rss_kib": r["rss_kib"]}


def pitr(ctx, tool, target, port, run_no):
    """Restore to TARGET into a new directory, start it, wait until promoted."""
    dest = os.path.join(ctx.work, f"pitr-{tool}")
    shutil.rmtree(dest, ignore_errors=True)
    ctx.mk(f"pitr-{tool}")  # empty and postgres-owned: both tools accept that
    if tool == "coffer":
        cmd = ctx.coffer("--quiet", "restore", "pitr", "--job", "main", "--to", dest, "--target-time", target,
                         "--target-action", "promote")
    else:
        cmd = ctx.pgbr(ctx.stanzas[tool], f"--pg1-path={dest}", "--type=time", f"--target={target}",
                       "--target-action=promote", "restore")
    srv = Server(ctx, dest, port)
    ctx.servers.append(srv)
    os.sync()
    t0 = time.monotonic()
    r = timed(ctx.as_pg(cmd), ctx.logdir, f"{tool}-pitr-{run_no}", cwd=ctx.work, env=ctx.env)
    # archive_mode off: the promoted copy must not archive into the repositories.
    srv.start("-c archive_mode=off", wait=False)
    while True:
        try:
            if srv.sql("SELECT pg_is_in_recovery()") == "f":
                break
        except BenchError:
            pass  # not accepting connections yet
        if any(re.search(r"FATAL|PANIC", x) and "the database system is" not in x
               for x in srv.log_tail().splitlines()):
            raise BenchError(f"{tool}: recovered server failed:\n{srv.log_tail()}")
        if time.monotonic() - t0 > 1200:
            raise BenchError(f"{tool}: not promoted after 20 min:\n{srv.log_tail()}")
        time.sleep(0.05)
    total = time.monotonic() - t0
    rows = int(srv.sql("SELECT count(*) FROM pgbench_history"))
    srv.stop()
    shutil.rmtree(dest, ignore_errors=True)
    log(f"  {tool:9s} restore {r['wall']:6.1f} s, promoted after {total:6.1f} s, {rows} history rows")
    return {"restore_wall": r["wall"], "total_wall": total, "replay_wall": total - r["wall"], "rows": rows}


def bench(ctx, res):
    a = ctx.a
    srv = setup(ctx)
    log(f"pgbench -i -s {a.scale}")
    srv.pgbench("-i", "-q", "-s", str(a.scale))
    pages = res["accounts_pages"] = int(srv.sql("SELECT relpages FROM pg_class WHERE relname = 'pgbench_accounts'"))
    res["pages_touched_est"] = 1 - (1 - 1 / pages) ** a.tx  # a day's updates, uniform keys: an estimate
    # The latency sample: pgbench load until enough segments were pushed
    # (waiting for the archiver without switching: no mostly-empty segments).
    # A checkpoint before each round, as checkpoint_timeout would on a busy
    # server: without the full-page images after one, pgbench writes <1 KB
    # of WAL a transaction and 50 segments would take ~1M transactions.
    while segments_pushed(ctx) < a.segments:
        log(f"  {segments_pushed(ctx)} segments pushed; CHECKPOINT and {2 * a.tx} pgbench transactions")
        srv.sql("CHECKPOINT")
        srv.pgbench("-n", "-c", "2", "-j", "2", "-t", str(max(1, a.tx)))
        srv.wait_archived(srv.sql("SELECT pg_walfile_name(pg_current_wal_lsn() - 16777216)"))
    srv.archived()
    res["stored_before"] = stored(ctx)
    log(f"{segments_pushed(ctx)} segments pushed; stored " +
        ", ".join(f"{t} {v / MB:.0f} MB" for t, v in res["stored_before"].items()))
    res["nights"] = []
    for night in range(1, a.nights + 1):
        rec = {"night": night, "backup": {t: backup(ctx, srv, t, night) for t in rotate(ctx.tools, night - 1)}}
        log(f"night {night}: backups " + ", ".join(f"{t} {rec['backup'][t]['wall']:.1f} s" for t in ctx.tools))
        # The day's load, in two halves around the PITR target on the last day.
        first = a.tx * 9 // 10 if night == a.nights else a.tx
        srv.pgbench("-n", "-c", "2", "-j", "2", "-t", str(max(1, first // 2)))
        if night == a.nights:
            res["target"] = srv.sql("SELECT now()")
            res["target_rows"] = int(srv.sql("SELECT count(*) FROM pgbench_history"))
            time.sleep(1.1)  # the rest of the day commits strictly after the target
            srv.pgbench("-n", "-c", "2", "-j", "2", "-t", str(max(1, (a.tx - first) // 2)))
        srv.archived()
        rec["stored"] = stored(ctx)
        res["nights"].append(rec)
    res["final_rows"] = int(srv.sql("SELECT count(*) FROM pgbench_history"))
    srv.stop()  # as in a real recovery, the old server is gone; no CPU contention
    res["stored_after"] = stored(ctx)
    res["pgbr_split"] = {t: {k: du(os.path.join(ctx.repo[t], k)) for k in ("archive", "backup")} for t in ctx.tools[1:]}
    res["coffer_catalog"] = du(os.path.dirname(ctx.cfg)) - du(ctx.vault)
    times, failed = push_times(ctx)
    res["push_ms"], res["push_failures"] = times, failed
    log(f"PITR to {res['target']} ({res['target_rows']} history rows then, {res['final_rows']} at the end)")
    # Each tool --repeat times, rotating; the run with the median total counts.
    runs = {t: [] for t in ctx.tools}
    for rep in range(a.repeat):
        for i, t in enumerate(rotate(ctx.tools, rep)):
            runs[t].append(pitr(ctx, t, res["target"], a.port + 1 + i, rep + 1))
    res["pitr"] = {t: dict(sorted(v, key=lambda x: x["total_wall"])[(len(v) - 1) // 2],
                           runs=[x["total_wall"] for x in v], rows_all=[x["rows"] for x in v])
                   for t, v in runs.items()}


def pct(v, p):
    s = sorted(v)
    return s[min(len(s) - 1, max(0, -(-len(s) * p // 100) - 1))]  # nearest rank


def markdown(ctx, res):
    a, tools, pg = ctx.a, ctx.tools, [t for t in ctx.tools if t != "coffer"]
    L = [f"# WAL archiving, nightly base backups and PITR: coffer vs pgBackRest", "",
         f"pgbench -s {a.scale} ({res['accounts_pages']} pages in pgbench_accounts), {a.nights} nights of "
         f"{a.tx} pgbench transactions (~{res['pages_touched_est'] * 100:.0f}% of pgbench_accounts pages each, "
         f"estimated); {res['machine']['cpus']} CPUs; " + ", ".join(f"{k} {v}" for k, v in res["versions"].items()),
         "", "pgBackRest: compress-type=zst, repo1-cipher-type=aes-256-cbc, start-fast=y, "
         f"process-max={os.cpu_count()}, synchronous archive-push/get. coffer: defaults (always encrypted).", "",
         "## WAL push latency per 16 MiB segment (archive_command, same segments, rotating order)", "",
         "| tool | segments | median | p99 | max | mean |", "|---|---|---|---|---|---|"]
    for t in tools:
        v = res["push_ms"][t]
        L.append(f"| {LABEL[t]} | {len(v)} | {statistics.median(v):.0f} ms | {pct(v, 99):.0f} ms | "
                 f"{max(v):.0f} ms | {statistics.mean(v):.0f} ms |")
    L += ["", "## Nightly base backups: wall time", "",
          "| night | " + " | ".join(LABEL[t] for t in tools) + " |", "|---" * (len(tools) + 1) + "|"]
    for n in res["nights"]:
        L.append(f"| {n['night']} | " + " | ".join(f"{n['backup'][t]['wall']:.1f} s" for t in tools) + " |")
    med = {t: statistics.median(n["backup"][t]["wall"] for n in res["nights"]) for t in tools}
    L.append("| median | " + " | ".join(f"{med[t]:.1f} s" for t in tools) + " |")
    b, e = res["stored_before"], res["stored_after"]
    L += ["", f"## Stored bytes (du -sb of the repository; base backups + WAL)", "",
          f"| tool | before night 1 (WAL of init + load) | after {a.nights} nights | added by the nights "
          "| of which WAL / base backups |", "|---|---|---|---|---|"]
    for t in tools:
        sp = res["pgbr_split"].get(t)
        sp = f"{sp['archive'] / MB:.1f} MB / {sp['backup'] / MB:.1f} MB" if sp else "(one store)"
        L.append(f"| {LABEL[t]} | {b[t] / MB:.1f} MB | {e[t] / MB:.1f} MB | {(e[t] - b[t]) / MB:.1f} MB | {sp} |")
    L.append(f"\ncoffer's catalog and keys (settings directory, not counted above): {res['coffer_catalog'] / MB:.1f} MB")
    L += ["", f"## Point-in-time recovery to {res['target']} (inside the last day, after its newest base backup)", "",
          "| tool | restore command | replay until promoted | total (all runs) | pgbench_history rows |", "|---|---|---|---|---|"]
    for t in tools:
        p = res["pitr"][t]
        ok = "ok" if set(p["rows_all"]) == {res["target_rows"]} else f"MISMATCH (want {res['target_rows']})"
        L.append(f"| {LABEL[t]} | {p['restore_wall']:.1f} s | {p['replay_wall']:.1f} s | {p['total_wall']:.1f} s "
                 f"({', '.join(f'{x:.1f}' for x in p['runs'])}) | {p['rows']} {ok} |")
    L += ["", "## Ratios coffer / pgBackRest (below 1: coffer smaller or faster)", ""]
    r = res["ratios"] = {}
    for t in pg:
        c, p = res["push_ms"]["coffer"], res["push_ms"][t]
        r[t] = {"push_median": statistics.median(c) / statistics.median(p), "push_p99": pct(c, 99) / pct(p, 99),
                "backup_median": med["coffer"] / med[t], "stored_after": e["coffer"] / e[t],
                "stored_added": (e["coffer"] - b["coffer"]) / max(1, e[t] - b[t]),
                "pitr_total": res["pitr"]["coffer"]["total_wall"] / res["pitr"][t]["total_wall"]}
        L.append(f"- vs {LABEL[t]}: push median {r[t]['push_median']:.2f}, push p99 {r[t]['push_p99']:.2f}, "
                 f"backup median {r[t]['backup_median']:.2f}, stored after {a.nights} nights "
                 f"{r[t]['stored_after']:.2f} (added by the nights {r[t]['stored_added']:.2f}), "
                 f"time to recover {r[t]['pitr_total']:.2f}")
    if res["push_failures"]:
        L += ["", f"Failed pushes (retried by PostgreSQL): {len(res['push_failures'])}; see wal.json"]
    return "\n".join(L) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=int, default=20, help="pgbench -i scale (default 20)")
    p.add_argument("--nights", type=int, default=7, help="nightly base backups (default 7)")
    p.add_argument("--tx", type=int, default=None, help="pgbench transactions per day (default 125 x scale)")
    p.add_argument("--segments", type=int, default=200,
                   help="WAL segments pushed before night 1, the latency sample (default 200)")
    p.add_argument("--repeat", type=int, default=3, help="PITR runs per tool; the median counts (default 3)")
    p.add_argument("--no-incr", action="store_true", help="skip the pgBackRest full+incr stanza")
    p.add_argument("--smoke", action="store_true", help="scale 2, 2 nights, 8 segments: a quick check")
    p.add_argument("--port", type=int, default=54320, help="first port (Unix socket only; default 54320)")
    p.add_argument("--workdir", default="/tmp", help="where the walbench-* work directory is made")
    p.add_argument("--out", default="/tmp/walbench-out")
    p.add_argument("--coffer", default=None, help="coffer binary instead of building target/release/coffer")
    p.add_argument("--no-build", action="store_true", help="use target/release/coffer as it is")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    a = p.parse_args()
    if a.smoke:
        a.scale, a.nights, a.segments, a.repeat = 2, 2, 8, 1
    a.tx = a.tx or 125 * a.scale
    if os.geteuid() != 0:
        p.error("run as root: the cluster and tools run as the postgres user")
    if not shutil.which("pgbackrest"):
        log("installing pgbackrest (apt-get install -y pgbackrest)")
        run(["apt-get", "install", "-y", "-qq", "pgbackrest"], "apt-get install",
            env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    os.makedirs(os.path.join(a.out, "logs"), exist_ok=True)
    work = tempfile.mkdtemp(prefix="walbench-", dir=a.workdir)
    ctx = Ctx(a, work)
    os.chown(work, ctx.uid, ctx.gid)
    ctx.servers = []
    res = {"machine": compare.machine_info(), "params": vars(a), "versions": {
        "pgbackrest": run(["pgbackrest", "version"], "pgbackrest version").strip(),
        "postgres": run([f"{PGBIN}/postgres", "--version"], "postgres").strip(), "coffer_git": compare.git_rev()}}
    status = 0
    try:
        bench(ctx, res)
        res["versions"]["coffer"] = run([ctx.bin, "--version"], "coffer --version").strip()
    except (BenchError, KeyboardInterrupt) as e:
        log(f"error: {e}")
        status = 1
    finally:
        for s in ctx.servers:  # every server this run started, even on failure
            s.stop()
        if a.keep or status:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    if status:
        return status
    compare.write_results(a.out, "wal", markdown(ctx, res), res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
