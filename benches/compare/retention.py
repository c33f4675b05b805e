#!/usr/bin/env python3
"""coffer vs restic vs rustic vs borg: 30 nights of pg_dumps under retention.

The same database and nightly dumps as compare.py (datagen.py), one dump a
night dated a day apart, each backed up by every tool (rotating order),
then `keep-daily 7, keep-weekly 4` applied by each tool every night:

    coffer  forget --keep-daily 7 --keep-weekly 4 ; prune --grace 0
    restic  forget --keep-daily 7 --keep-weekly 4 --prune
    rustic  forget --keep-daily 7 --keep-weekly 4 --prune --instant-delete
    borg    prune --keep-daily 7 --keep-weekly 4 ; compact

(one host writes each repository, so coffer's grace 0 and rustic's
instant delete are the like-for-like settings). Reports per tool: stored
bytes after the last night, prune wall time and peak RSS (median and max
over the nights), restore time of night 1 (right after it was backed up)
and of the newest night after all the prunes; and coffer's prune RSS on a
vault with 10x the chunks of another (synthetic data, same shape).

    benches/compare/retention.py                      # 30 nights, ~40 min
    benches/compare/retention.py --nights 3 --tenants 2000 --scale 1   # smoke test

Missing peers are installed: restic and borgbackup from Debian, rustic
with `cargo install --locked rustic-rs --no-default-features` (~10 min).
Results: --out/retention.md and retention.json; see docs/benchmarks.md.
"""

import argparse
import calendar
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import compare  # noqa: E402
import datagen  # noqa: E402
from compare import BenchError, du, find_file, log, run, sha256, timed  # noqa: E402

MB = 1e6
TOOLS = ("coffer", "restic", "rustic", "borg")
POLICY = ["--keep-daily", "7", "--keep-weekly", "4"]


def night_time(night):
    """Nights are a day apart, at 02:00 UTC, from 2026-01-01."""
    t = time.gmtime(calendar.timegm((2026, 1, 1, 2, 0, 0)) + (night - 1) * 86400)
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", t), time.strftime("%Y-%m-%d %H:%M:%S", t)


def install_peers(tools):
    apt = [p for exe, p in (("restic", "restic"), ("borg", "borgbackup")) if exe in tools and not shutil.which(exe)]
    if apt:
        log(f"installing {' '.join(apt)} from Debian")
        run(["apt-get", "install", "-y", "-qq"] + apt, "apt-get install",
            env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    if "rustic" in tools and not shutil.which("rustic"):
        log("installing rustic (cargo install --locked rustic-rs --no-default-features; ~10 min)")
        p = subprocess.run(["cargo", "install", "--locked", "rustic-rs", "--no-default-features"],
                           stdout=sys.stderr, stderr=sys.stderr)
        if p.returncode != 0 or not shutil.which("rustic"):
            raise BenchError("rustic could not be installed; add ~/.cargo/bin to PATH or pass --tools")


class Coffer(compare.Coffer):
    def backup(self, night, dump):
        self.env_night = dict(self.env, COFFER_TEST_NOW=night_time(night)[0])
        return self.c("--json", "backup", "--job", "db", dump), None

    def forget_prune(self):
        return [self.c("--json", "forget", *POLICY), self.c("--json", "prune", "--grace", "0")]


class Restic(compare.Restic):
    def backup(self, night, dump):
        cmd, cwd = super().backup(night, dump)
        return cmd[:-1] + ["--time", night_time(night)[1]] + cmd[-1:], cwd

    def forget_prune(self):
        return [["restic", "-r", self.repo, "-q", "forget", *POLICY, "--prune"]]


class Rustic(compare.Tool):
    name = "rustic"

    def init(self):
        run(["rustic", "-r", self.repo, "init"], "rustic init", env=self.env)

    def backup(self, night, dump):
        return ["rustic", "-r", self.repo, "backup", "--host", "bench", "--time", night_time(night)[1] + "+0000",
                os.path.basename(dump)], os.path.dirname(dump)

    def forget_prune(self):
        return [["rustic", "-r", self.repo, "forget", *POLICY, "--prune", "--instant-delete"]]

    def restore(self, night, dest):
        os.makedirs(dest)
        return ["rustic", "-r", self.repo, "restore", "latest", dest], None

    def version(self):
        return run(["rustic", "--version"], "rustic --version", env=self.env).strip()


class Borg(compare.Borg):
    def backup(self, night, dump):
        return ["borg", "create", "--compression", "zstd,3", "--timestamp", night_time(night)[0].rstrip("Z"),
                f"{self.repo}::night{night}", os.path.basename(dump)], os.path.dirname(dump)

    def forget_prune(self):
        return [["borg", "prune", *POLICY, self.repo], ["borg", "compact", self.repo]]


def restore_timed(tool, night, want, work, logdir, tag, env):
    dest = os.path.join(work, f"restore-{tool.name}")
    cmd, cwd = tool.restore(night, dest)
    try:
        r = timed(cmd, logdir, f"{tool.name}-restore-{tag}", cwd=cwd, env=env)
        out = find_file(dest, "db.dump")
        r["identical"] = sha256(out) == want
    finally:
        shutil.rmtree(dest, ignore_errors=True)
    r.pop("stdout", None)
    return r


def restores(tools, night, want, work, logdir, tag, env, repeat):
    out = {}
    for name, t in tools.items():
        rs = [restore_timed(t, night, want, work, logdir, f"{tag}-{i}", env) for i in range(repeat)]
        med = sorted(rs, key=lambda x: x["wall"])[(repeat - 1) // 2]
        out[name] = dict(med, runs=[x["wall"] for x in rs], identical=all(x["identical"] for x in rs))
        log(f"  {name:6s} restore {tag}: {med['wall']:.2f} s (runs {', '.join(f'{x:.2f}' for x in out[name]['runs'])})"
            f"{'' if out[name]['identical'] else '  NOT IDENTICAL'}")
    return out


def nights(a, work, res, tools, env, logdir):
    cl = compare.Cluster(work, a.pg_bin)
    res["_cluster"] = cl
    cl.start()
    cl.psql("CREATE DATABASE bench", db="postgres")
    run([cl.exe("pgbench"), "-i", "-q", "-I", "dtGvp", "-s", str(a.scale), "bench"], "pgbench -i", env=cl.env)
    cl.psql_file(os.path.join(HERE, "schema.sql"))
    gen = datagen.Gen(a.tenants, a.seed)
    cl.psql_stream(gen.initial_load(), "tenant data load")
    cl.psql("VACUUM (ANALYZE)")
    dump = os.path.join(work, "dump", "db.dump")
    os.makedirs(os.path.dirname(dump))
    order = list(tools)
    res["nights"], res["prune"] = [], {n: [] for n in tools}
    for night in range(1, a.nights + 1):
        cl.psql_stream(gen.day(night), f"day {night}")
        cl.psql("VACUUM (ANALYZE)")
        run([cl.exe("pgbench"), "-n", "-c", "2", "-j", "2", "-t", str(max(1, a.scale * 250)),
             f"--random-seed={a.seed + night}", "bench"], "pgbench", env=cl.env)
        if os.path.exists(dump):
            os.unlink(dump)
        run([cl.exe("pg_dump"), "-Fc", "-Z0", "-f", dump, "bench"], "pg_dump", env=cl.env)
        want = sha256(dump)
        rec = {"night": night, "dump_bytes": os.path.getsize(dump), "stored": {}}
        rot = order[(night - 1) % len(order):] + order[:(night - 1) % len(order)]
        for name in rot:
            t = tools[name]
            cmd, cwd = t.backup(night, dump)
            timed(cmd, logdir, f"{name}-backup-{night}", cwd=cwd, env=getattr(t, "env_night", env))
        if night == 1:
            log("night 1: restore with each tool (the baseline)")
            res["restore_night1"] = restores(tools, night, want, work, logdir, "night1", env, a.repeat)
        for name in rot:
            walls, rss, cpu = 0.0, 0, 0.0
            report = None
            for i, cmd in enumerate(tools[name].forget_prune()):
                r = timed(cmd, logdir, f"{name}-prune-{night}-{i}", env=env)
                if name == "coffer" and "prune" in cmd:
                    try:
                        report = json.loads(r["stdout"])
                    except ValueError:
                        pass
                walls += r["wall"]
                rss = max(rss, r["rss_kib"])
                cpu += r["user"] + r["sys"]
            stored = tools[name].stored()
            rec["stored"][name] = stored
            res["prune"][name].append({"night": night, "wall": walls, "rss_kib": rss, "cpu": cpu, "stored": stored,
                                       "report": report})
        res["nights"].append(rec)
        log(f"night {night}: dump {rec['dump_bytes'] / MB:.0f} MB; stored " +
            ", ".join(f"{n} {rec['stored'][n] / MB:.0f} MB" for n in order) + "; prune " +
            ", ".join(f"{n} {res['prune'][n][-1]['wall']:.1f} s/{res['prune'][n][-1]['rss_kib'] // 1024} MiB" for n in order))
        last_want = want
    cl.stop()
    log(f"night {a.nights}: restore of the newest night after {a.nights} nights of prunes")
    res["restore_last"] = restores(tools, a.nights, last_want, work, logdir, "last", env, a.repeat)


def rss_scaling(a, work, res, binary, env, logdir):
    """coffer prune's peak RSS on two vaults, the second with 10x the chunks."""
    out = {}
    for label, size in (("1x", a.scale_mb), ("10x", a.scale_mb * 10)):
        d = tempfile.mkdtemp(prefix=f"scale-{label}-", dir=work)
        cfg = os.path.join(d, "cfg", "config.toml")
        c = lambda *args: [binary, "--config", cfg] + list(args)  # noqa: E731
        run(c("-q", "init", "--local", os.path.join(d, "vault")), "coffer init", env=env)
        src = os.path.join(d, "data")
        # Two nights of incompressible data; night 2 keeps half of night 1.
        with open(src, "wb") as f:
            f.write(os.urandom(size << 20))
        run(c("-q", "backup", "--job", "s", src), "backup", env=env)
        with open(src, "r+b") as f:
            f.seek((size << 20) // 2)
            f.write(os.urandom((size << 20) // 2))
        run(c("-q", "backup", "--job", "s", src), "backup", env=env)
        run(c("-q", "forget", "--keep-last", "1"), "forget", env=env)
        r = timed(c("--json", "prune", "--grace", "0"), logdir, f"scale-prune-{label}", env=env)
        rep = json.loads(r["stdout"])
        out[label] = {"data_mib": size, "chunks_scanned_packs": rep["packs"], "live_set_bytes": rep["live_set_bytes"],
                      "rss_kib": r["rss_kib"], "wall": r["wall"]}
        log(f"  prune at {label}: {size} MiB of data, {r['rss_kib'] // 1024} MiB RSS, {r['wall']:.2f} s")
        shutil.rmtree(d, ignore_errors=True)
    res["rss_scaling"] = out


def summary(a, res):
    tools = list(res["prune"])
    last = res["nights"][-1]["stored"]
    lines = [f"# Retention benchmark: {a.nights} nights, keep-daily 7 + keep-weekly 4 every night", "",
             f"Data: pgbench -s {a.scale} + {a.tenants} tenants (datagen.py, seed {a.seed}); "
             f"dumps of {res['nights'][0]['dump_bytes'] / MB:.0f}-{res['nights'][-1]['dump_bytes'] / MB:.0f} MB; "
             f"{res['machine']['cpus']} CPUs; versions: " + ", ".join(f"{k} {v}" for k, v in res["versions"].items()), "",
             "| tool | stored after last night | prune median | prune max | prune peak RSS | restore night 1 | restore newest | newest / night 1 |",
             "|---|---|---|---|---|---|---|---|"]
    for n in tools:
        p = res["prune"][n]
        r1, rl = res["restore_night1"][n]["wall"], res["restore_last"][n]["wall"]
        lines.append(f"| {n} | {last[n] / MB:.1f} MB | {statistics.median(x['wall'] for x in p):.2f} s | "
                     f"{max(x['wall'] for x in p):.2f} s | {max(x['rss_kib'] for x in p) / 1024:.0f} MiB | "
                     f"{r1:.2f} s | {rl:.2f} s | {rl / r1:.2f} |")
    c = "coffer"
    if c in tools:
        lines += ["", "Ratios (coffer against each peer): stored bytes, prune time (median), prune peak RSS, newest restore:"]
        for n in tools:
            if n == c:
                continue
            pc, pn = res["prune"][c], res["prune"][n]
            lines.append(f"- {n}: stored {last[n] / last[c]:.2f}x smaller, prune "
                         f"{statistics.median(x['wall'] for x in pn) / statistics.median(x['wall'] for x in pc):.2f}x faster, RSS "
                         f"{max(x['rss_kib'] for x in pn) / max(x['rss_kib'] for x in pc):.2f}x lower, restore "
                         f"{res['restore_last'][n]['wall'] / res['restore_last'][c]['wall']:.2f}x faster")
    s = res.get("rss_scaling")
    if s:
        lines += ["", f"coffer prune peak RSS: {s['1x']['rss_kib'] / 1024:.0f} MiB at {s['1x']['data_mib']} MiB of data, "
                      f"{s['10x']['rss_kib'] / 1024:.0f} MiB at {s['10x']['data_mib']} MiB (10x the chunks): "
                      f"{s['10x']['rss_kib'] / s['1x']['rss_kib']:.2f}x"]
    return "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nights", type=int, default=30)
    p.add_argument("--scale", type=int, default=10)
    p.add_argument("--tenants", type=int, default=35000)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--tools", default=",".join(TOOLS))
    p.add_argument("--repeat", type=int, default=3, help="restores per measurement (median)")
    p.add_argument("--scale-mb", type=int, default=200, help="data of the 1x vault for the RSS scaling (MiB)")
    p.add_argument("--workdir", default=os.environ.get("TMPDIR", "/var/tmp"))
    p.add_argument("--out", default=os.path.join(compare.ROOT, "target", "bench-retention"))
    p.add_argument("--coffer", default=None)
    p.add_argument("--no-build", action="store_true")
    p.add_argument("--pg-bin", default=None)
    p.add_argument("--keep", action="store_true", help="keep the work directory (repositories) for profiling")
    a = p.parse_args()
    a.tools = [t for t in a.tools.split(",") if t]
    a.idle_wait = 0
    compare.IDLE_WAIT = 0
    install_peers(a.tools)
    a.pg_bin = compare.find_pg_bin(a.pg_bin)
    os.makedirs(os.path.join(a.out, "logs"), exist_ok=True)
    work = tempfile.mkdtemp(prefix="coffer-retention-", dir=a.workdir)
    os.chmod(work, 0o711)
    home = os.path.join(work, "home")
    os.makedirs(home)
    pw = secrets.token_hex(16)
    env = dict(os.environ, HOME=home, TZ="UTC", XDG_CACHE_HOME=os.path.join(home, ".cache"),
               XDG_CONFIG_HOME=os.path.join(home, ".config"), XDG_DATA_HOME=os.path.join(home, ".local/share"),
               RESTIC_PASSWORD=pw, RESTIC_CACHE_DIR=os.path.join(home, "restic-cache"), RUSTIC_PASSWORD=pw,
               BORG_PASSPHRASE=pw, BORG_BASE_DIR=os.path.join(home, "borg"), BORG_DISPLAY_PASSPHRASE="no")
    for k in ("RESTIC_REPOSITORY", "BORG_REPO", "COFFER_CONFIG", "COFFER_IDENTITY", "BACKUP_RETENTION"):
        env.pop(k, None)
    binary = compare.build_coffer(a)
    classes = {"coffer": lambda: Coffer(work, env, binary), "restic": lambda: Restic(work, env),
               "rustic": lambda: Rustic(work, env), "borg": lambda: Borg(work, env)}
    tools = {n: classes[n]() for n in a.tools}
    res = {"machine": compare.machine_info(), "params": vars(a),
           "versions": {n: t.version() for n, t in tools.items()}}
    res["versions"]["coffer_git"] = compare.git_rev()
    for t in tools.values():
        t.init()
    status = 0
    try:
        nights(a, work, res, tools, env, os.path.join(a.out, "logs"))
        if "coffer" in tools:
            log("coffer prune RSS at 1x and 10x the chunks")
            rss_scaling(a, work, res, binary, env, os.path.join(a.out, "logs"))
    except (BenchError, KeyboardInterrupt) as e:
        log(f"error: {e}")
        status = 1
    finally:
        compare.cleanup(res, work, a.keep)
    if status:
        return status
    compare.write_results(a.out, "retention", summary(a, res), res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
