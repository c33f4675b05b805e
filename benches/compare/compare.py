#!/usr/bin/env python3
"""coffer vs restic vs borg on nightly pg_dump files of a realistic database.

Starts a throwaway PostgreSQL cluster, builds a database (pgbench's tables
plus a tenant-management schema with realistic entropy, see datagen.py),
simulates N nights of activity (appends, scattered updates, deletes, VACUUM,
pgbench transactions) with an uncompressed custom-format dump each night,
backs each dump up with coffer, restic and borg (all encrypted, tools in
rotating order), then restores the last night with each tool (checked byte
for byte) and runs each tool's deepest data check. Wall time, CPU time and
peak RSS come from /usr/bin/time -v; stored bytes from du -sb of each
repository after each night.

Writes results.md, results.json and chart.png to --out and prints the
markdown table on stdout; progress goes to stderr. See docs/benchmarks.md.

    benches/compare/compare.py                        # default: a few minutes
    benches/compare/compare.py --scale 50 --tenants 200000 --nights 7
"""

import argparse
import hashlib
import json
import os
import platform
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import datagen  # noqa: E402

TOOLS = ("coffer", "restic", "borg")
MB = 1e6
MIB = 1 << 20
T0 = time.monotonic()


def log(msg):
    t = time.monotonic() - T0
    print(f"[{int(t // 60):3d}:{t % 60:04.1f}] {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Progress goes to stderr; the results table to stdout and --out.")
    p.add_argument("--scale", type=int, default=10, help="pgbench -i scale factor (default 10, ~100 MB of dump)")
    p.add_argument("--tenants", "--tenant-rows", type=int, default=35000, dest="tenants",
                   help="tenants in the tenant schema; ~8.5 KB of dump per tenant with its "
                        "leases, readings, payments and audit rows (default 35000, ~300 MB)")
    p.add_argument("--nights", type=int, default=4, help="nights to simulate and back up (default 4)")
    p.add_argument("--pgbench-tx", type=int, default=None,
                   help="pgbench transactions per simulated day (default: scale x 500)")
    p.add_argument("--tools", default=",".join(TOOLS), help="comma-separated subset of coffer,restic,borg")
    p.add_argument("--workdir", default=os.environ.get("TMPDIR", "/var/tmp"),
                   help="where the temporary directory (cluster, dumps, repositories) is made; "
                        "all repositories share this disk (default $TMPDIR or /var/tmp)")
    p.add_argument("--out", default=os.path.join(ROOT, "target", "bench-compare"),
                   help="results directory (default target/bench-compare in the workspace)")
    p.add_argument("--pg-bin", default=None, help="PostgreSQL server binaries (default: newest /usr/lib/postgresql/*/bin)")
    p.add_argument("--coffer", default=None, help="coffer binary to use instead of building target/release/coffer")
    p.add_argument("--no-build", action="store_true", help="use target/release/coffer as it is")
    p.add_argument("--seed", type=int, default=42, help="data generator seed (default 42)")
    p.add_argument("--replot", metavar="DIR",
                   help="only redraw DIR/results.md and DIR/chart.png from DIR/results.json")
    p.add_argument("--keep", action="store_true",
                   help="keep the temporary directory (printed at the end) with every night's dump")
    p.add_argument("--idle-wait", type=float, default=0, metavar="SECONDS",
                   help="before each measured command wait up to SECONDS for the machine to be quiet "
                        "(two seconds in a row with other processes using < 10%% of the CPUs); the "
                        "'other CPU' column shows what other processes used during each measurement "
                        "either way (default 0: don't wait)")
    p.add_argument("--repeat", type=int, default=3,
                   help="restore and check each tool this many times (rotating) and report the run "
                        "with the median wall time (default 3; backups change the repository and run once)")
    a = p.parse_args()
    a.tools = [t.strip() for t in a.tools.split(",") if t.strip()]
    bad = [t for t in a.tools if t not in TOOLS]
    if bad or not a.tools:
        p.error(f"unknown tool(s) {bad}; choose from {','.join(TOOLS)}")
    if a.nights < 1 or a.scale < 1 or a.tenants < 100 or a.repeat < 1:
        p.error("--nights >= 1, --scale >= 1, --tenants >= 100 and --repeat >= 1")
    if a.pgbench_tx is None:
        a.pgbench_tx = a.scale * 500
    return a


# --------------------------------------------------------------------------
# prerequisites
# --------------------------------------------------------------------------

def find_pg_bin(given):
    if given:
        cands = [given]
    else:
        base = "/usr/lib/postgresql"
        vers = [v for v in os.listdir(base) if v.replace(".", "").isdigit()] if os.path.isdir(base) else []
        cands = [os.path.join(base, v, "bin") for v in sorted(vers, key=float, reverse=True)]
    for d in cands:
        if all(os.access(os.path.join(d, b), os.X_OK) for b in ("initdb", "postgres", "pg_dump", "psql", "pgbench", "pg_isready")):
            return d
    return None


def check_prereqs(a):
    missing = []
    a.pg_bin = find_pg_bin(a.pg_bin)
    if not a.pg_bin:
        missing.append(("PostgreSQL server binaries (initdb, postgres, pg_dump, pgbench)", "apt-get install -y postgresql"))
    need = {"zstd": "zstd"}
    if "restic" in a.tools:
        need["restic"] = "restic"
    if "borg" in a.tools:
        need["borg"] = "borgbackup"
    for exe, pkg in need.items():
        if not shutil.which(exe):
            missing.append((exe, f"apt-get install -y {pkg}"))
    if not os.access("/usr/bin/time", os.X_OK):
        missing.append(("GNU time (/usr/bin/time)", "apt-get install -y time"))
    if "coffer" in a.tools and not a.coffer and not a.no_build and not shutil.which("cargo"):
        missing.append(("cargo (to build coffer)", "install Rust, or pass --coffer BIN"))
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            missing.append(("the 'postgres' user (the cluster is run as it when started as root)",
                            "apt-get install -y postgresql, or run as an unprivileged user"))
    if missing:
        for what, how in missing:
            print(f"compare.py: missing {what}: {how}", file=sys.stderr)
        print("compare.py: on Debian: apt-get install -y restic borgbackup postgresql zstd time", file=sys.stderr)
        sys.exit(2)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        if shutil.which("gnuplot"):
            log("matplotlib missing (pip install matplotlib); will draw the chart with gnuplot")
        else:
            log("matplotlib missing: no chart will be drawn (pip install matplotlib, or apt-get install -y gnuplot-nox)")


# --------------------------------------------------------------------------
# measuring
# --------------------------------------------------------------------------

HZ = os.sysconf("SC_CLK_TCK")
IDLE_WAIT = 0.0


def cpu_busy():
    """CPU-seconds the whole machine has been busy (all CPUs, /proc/stat)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return (sum(v) - v[3] - v[4]) / HZ


def wait_idle():
    """Wait (up to --idle-wait seconds) for two quiet seconds in a row."""
    if IDLE_WAIT <= 0:
        return
    end = time.monotonic() + IDLE_WAIT
    quiet = 0
    waited = False
    while time.monotonic() < end and quiet < 2:
        b = cpu_busy()
        time.sleep(1.0)
        if (cpu_busy() - b) / os.cpu_count() < 0.10:
            quiet += 1
            continue
        quiet = 0
        if not waited:
            log(f"  waiting up to {IDLE_WAIT:.0f} s for other processes to quieten")
            waited = True
    if quiet < 2:
        log("  machine still busy; measuring anyway (see the 'other CPU' column)")


def timed(cmd, logdir, name, cwd=None, env=None, stdout=None):
    """Run CMD under /usr/bin/time -v; return wall, user, sys, rss_kib, other (CPU-seconds
    used by other processes meanwhile), stdout."""
    tfile = os.path.join(logdir, f"{name}.time")
    efile = os.path.join(logdir, f"{name}.stderr")
    # Flush (not drop) dirty pages first, so no tool pays for the writeback of
    # the dump or of the previous tool's repository (fsync on ext4 can).
    os.sync()
    wait_idle()
    with open(efile, "wb") as err:
        b = cpu_busy()
        t = time.monotonic()
        p = subprocess.run(["/usr/bin/time", "-v", "-o", tfile] + cmd, cwd=cwd, env=env,
                           stdout=stdout if stdout is not None else subprocess.PIPE, stderr=err)
        wall = time.monotonic() - t
        busy = cpu_busy() - b
    res = {"wall": wall, "user": 0.0, "sys": 0.0, "rss_kib": 0, "rc": p.returncode,
           "stdout": p.stdout.decode(errors="replace") if p.stdout else ""}
    try:
        for line in open(tfile):
            k, _, v = line.strip().rpartition(": ")
            if k == "User time (seconds)":
                res["user"] = float(v)
            elif k == "System time (seconds)":
                res["sys"] = float(v)
            elif k == "Maximum resident set size (kbytes)":
                res["rss_kib"] = int(v)
    except OSError:
        pass
    res["other"] = max(0.0, busy - res["user"] - res["sys"])
    if p.returncode != 0:
        tail = open(efile, errors="replace").read()[-2000:]
        raise BenchError(f"{name}: {' '.join(cmd)} exited {p.returncode}:\n{tail}")
    return res


def run(cmd, what, **kw):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)
    if p.returncode != 0:
        raise BenchError(f"{what}: {' '.join(map(str, cmd))} exited {p.returncode}:\n"
                         f"{p.stderr.decode(errors='replace')[-2000:]}")
    return p.stdout.decode(errors="replace")


def du(path):
    if not os.path.exists(path):
        return 0
    return int(run(["du", "-sb", path], "du").split()[0])


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(4 << 20)
            if not b:
                return h.hexdigest()
            h.update(b)


def find_file(top, name):
    for d, _, files in os.walk(top):
        if name in files:
            return os.path.join(d, name)
    raise BenchError(f"restored tree {top} has no {name}")


# --------------------------------------------------------------------------
# the throwaway cluster
# --------------------------------------------------------------------------

class Cluster:
    def __init__(self, work, pg_bin):
        self.bin = pg_bin
        self.dir = os.path.join(work, "pg")
        self.data = os.path.join(self.dir, "data")
        self.proc = None
        self.logf = None
        self.as_user = {}
        os.mkdir(self.dir, 0o700)
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self.as_user = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
        self.env = dict(os.environ, PGHOST=self.dir, PGUSER="postgres", PGDATABASE="bench", TZ="UTC")
        self.env.pop("PGPASSWORD", None)
        self.env.pop("PGSERVICE", None)

    def exe(self, name):
        return os.path.join(self.bin, name)

    def start(self):
        log(f"initdb {self.data}")
        run([self.exe("initdb"), "-D", self.data, "-U", "postgres", "--auth=trust", "--encoding=UTF8",
             "--locale=C.UTF-8", "--no-sync"], "initdb", cwd=self.dir, **self.as_user)
        self.logf = open(os.path.join(os.path.dirname(self.dir), "postgres.log"), "wb")
        self.proc = subprocess.Popen(
            [self.exe("postgres"), "-D", self.data, "-c", f"unix_socket_directories={self.dir}",
             "-c", "listen_addresses=", "-c", "fsync=off", "-c", "synchronous_commit=off",
             "-c", "full_page_writes=off", "-c", "shared_buffers=256MB", "-c", "maintenance_work_mem=256MB",
             "-c", "max_wal_size=4GB", "-c", "checkpoint_timeout=30min", "-c", "timezone=UTC",
             "-c", "autovacuum=off"],
            cwd=self.dir, stdout=self.logf, stderr=self.logf, start_new_session=True, **self.as_user)
        for _ in range(600):
            if self.proc.poll() is not None:
                raise BenchError(f"postgres exited {self.proc.returncode}; see {self.logf.name}")
            if subprocess.run([self.exe("pg_isready"), "-q", "-h", self.dir], env=self.env).returncode == 0:
                log(f"postgres up (pid {self.proc.pid}, socket in {self.dir})")
                return
            time.sleep(0.1)
        raise BenchError("postgres did not become ready in 60 s")

    def psql(self, sql, db="bench"):
        return run([self.exe("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", db, "-c", sql], "psql", env=self.env)

    def psql_file(self, path):
        return run([self.exe("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", path], "psql", env=self.env)

    def psql_stream(self, chunks, what):
        """Feed generated SQL/COPY text to one psql session."""
        p = subprocess.Popen([self.exe("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1"], env=self.env,
                             stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        n = 0
        try:
            for c in chunks:
                b = c.encode()
                n += len(b)
                p.stdin.write(b)
            p.stdin.close()
        except BrokenPipeError:
            pass
        err = p.stderr.read().decode(errors="replace")
        if p.wait() != 0:
            raise BenchError(f"{what}: psql exited {p.returncode}:\n{err[-2000:]}")
        return n

    def stop(self):
        if self.proc and self.proc.poll() is None:
            log("stopping postgres")
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.logf:
            self.logf.close()


# --------------------------------------------------------------------------
# the tools
# --------------------------------------------------------------------------

class Tool:
    name = ""

    def __init__(self, work, env):
        self.work = work
        self.repo = os.path.join(work, f"{self.name}-repo")
        self.env = env

    def stored(self):
        return du(self.repo)

    def cache(self):
        return 0


class Coffer(Tool):
    name = "coffer"

    def __init__(self, work, env, binary):
        super().__init__(work, env)
        self.bin = binary
        self.repo = os.path.join(work, "coffer-vault")
        self.cfgdir = os.path.join(work, "cfg")
        self.cfg = os.path.join(self.cfgdir, "config.toml")

    def c(self, *args):
        return [self.bin, "--config", self.cfg] + list(args)

    def init(self):
        run(self.c("-q", "init", "--local", self.repo), "coffer init", env=self.env)

    def backup(self, night, dump):
        return self.c("--json", "backup", "--job", "db", dump), None

    def restore(self, night, dest):
        os.makedirs(dest)
        return self.c("-q", "restore", "latest", "--job", "db", "--to", os.path.join(dest, "db.dump")), None

    def check(self):
        return self.c("--json", "verify", "--read-data"), None

    def cache(self):
        return du(self.cfgdir)  # catalog (SQLite) + keys + settings

    def version(self):
        return run([self.bin, "--version"], "coffer --version", env=self.env).strip()


class Restic(Tool):
    name = "restic"

    def init(self):
        run(["restic", "-r", self.repo, "init", "--repository-version", "2"], "restic init", env=self.env)

    def backup(self, night, dump):
        return ["restic", "-r", self.repo, "--compression", "auto", "-q", "backup", "--host", "bench",
                "--tag", f"night{night}", os.path.basename(dump)], os.path.dirname(dump)

    def restore(self, night, dest):
        os.makedirs(dest)
        return ["restic", "-r", self.repo, "-q", "restore", "latest", "--target", dest], None

    def check(self):
        return ["restic", "-r", self.repo, "check", "--read-data"], None

    def cache(self):
        return du(self.env["RESTIC_CACHE_DIR"])

    def version(self):
        return run(["restic", "version"], "restic version", env=self.env).strip()


class Borg(Tool):
    name = "borg"

    def init(self):
        run(["borg", "init", "-e", "repokey-blake2", self.repo], "borg init", env=self.env)

    def backup(self, night, dump):
        return ["borg", "create", "--compression", "zstd,3", f"{self.repo}::night{night}",
                os.path.basename(dump)], os.path.dirname(dump)

    def restore(self, night, dest):
        os.makedirs(dest)
        return ["borg", "extract", f"{self.repo}::night{night}"], dest

    def check(self):
        return ["borg", "check", "--verify-data", self.repo], None

    def cache(self):
        return du(os.path.join(self.env["BORG_BASE_DIR"], ".cache"))

    def version(self):
        return run(["borg", "--version"], "borg --version", env=self.env).strip()


def build_coffer(a):
    if a.coffer:
        return os.path.abspath(a.coffer)
    binary = os.path.join(ROOT, "target", "release", "coffer")
    if not a.no_build:
        log("cargo build --release --bin coffer (may wait on the build lock)")
        p = subprocess.run(["cargo", "build", "--release", "--bin", "coffer"], cwd=ROOT,
                           stdout=sys.stderr, stderr=sys.stderr)
        if p.returncode != 0:
            raise BenchError("cargo build --release --bin coffer failed")
    if not os.access(binary, os.X_OK):
        raise BenchError(f"{binary} missing: build it or pass --coffer BIN")
    return binary


# --------------------------------------------------------------------------
# the benchmark
# --------------------------------------------------------------------------

def machine_info():
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu_model": cpu, "memory_bytes": mem,
            "kernel": platform.release(), "python": platform.python_version()}


def git_rev():
    try:
        rev = run(["git", "rev-parse", "--short", "HEAD"], "git", cwd=ROOT).strip()
        dirty = run(["git", "status", "--porcelain", "--untracked-files=no"], "git", cwd=ROOT).strip()
        return rev + ("+dirty" if dirty else "")
    except (BenchError, OSError):
        return "?"


def bench(a, work, res):
    logdir = os.path.join(a.out, "logs")
    os.makedirs(logdir, exist_ok=True)
    home = os.path.join(work, "home")
    os.makedirs(home)
    password = secrets.token_hex(16)
    env = dict(os.environ, HOME=home, XDG_CACHE_HOME=os.path.join(home, ".cache"),
               XDG_CONFIG_HOME=os.path.join(home, ".config"), XDG_DATA_HOME=os.path.join(home, ".local/share"),
               RESTIC_PASSWORD=password, RESTIC_CACHE_DIR=os.path.join(home, "restic-cache"),
               BORG_PASSPHRASE=password, BORG_BASE_DIR=os.path.join(home, "borg"),
               BORG_DISPLAY_PASSPHRASE="no")
    for k in ("RESTIC_REPOSITORY", "RESTIC_PASSWORD_FILE", "BORG_REPO", "COFFER_CONFIG", "COFFER_IDENTITY"):
        env.pop(k, None)

    tools = {}
    if "coffer" in a.tools:
        tools["coffer"] = Coffer(work, env, build_coffer(a))
    if "restic" in a.tools:
        tools["restic"] = Restic(work, env)
    if "borg" in a.tools:
        tools["borg"] = Borg(work, env)
    res["versions"] = {n: t.version() for n, t in tools.items()}
    res["versions"]["coffer_git"] = git_rev()
    if "coffer" in tools:
        res["versions"]["coffer_sha256"] = sha256(tools["coffer"].bin)[:16]
    for t in tools.values():
        t.init()
        t.last = t.stored()
    log("repositories initialised: " + ", ".join(tools))

    cl = Cluster(work, a.pg_bin)
    res["_cluster"] = cl
    cl.start()
    res["versions"]["postgres"] = run([cl.exe("postgres"), "--version"], "postgres").strip()
    cl.psql("CREATE DATABASE bench", db="postgres")
    log(f"pgbench -i -s {a.scale}")
    t = time.monotonic()
    run([cl.exe("pgbench"), "-i", "-q", "-I", "dtGvp", "-s", str(a.scale), "bench"], "pgbench -i", env=cl.env)
    log(f"pgbench tables loaded in {time.monotonic() - t:.1f} s; generating {a.tenants} tenants "
        f"(~{a.tenants * 8.5e3 / MB:.0f} MB of tenant data)")
    cl.psql_file(os.path.join(HERE, "schema.sql"))
    gen = datagen.Gen(a.tenants, a.seed)
    t = time.monotonic()
    n = cl.psql_stream(gen.initial_load(), "tenant data load")
    cl.psql("VACUUM (ANALYZE)")
    res["load"] = {"tenant_copy_bytes": n, "seconds": time.monotonic() - t}
    log(f"tenant data loaded: {n / MB:.0f} MB of COPY text in {time.monotonic() - t:.1f} s")

    dumpdir = os.path.join(work, "dump")
    os.makedirs(dumpdir)
    dump = os.path.join(dumpdir, "db.dump")
    order = list(tools)
    res["nights"] = []
    res["backup"] = {n: [] for n in tools}
    failures = res["failures"] = []
    for night in range(1, a.nights + 1):
        log(f"night {night}/{a.nights}: simulating a day")
        t = time.monotonic()
        cl.psql_stream(gen.day(night), f"day {night}")
        cl.psql("VACUUM (ANALYZE)")
        run([cl.exe("pgbench"), "-n", "-c", "2", "-j", "2", "-t", str(max(1, a.pgbench_tx // 2)),
             f"--random-seed={a.seed + night}", "bench"], "pgbench", env=cl.env)
        day_s = time.monotonic() - t
        t = time.monotonic()
        if os.path.exists(dump):
            if a.keep:  # keep every night's dump for profiling
                os.rename(dump, os.path.join(dumpdir, f"night{night - 1}.dump"))
            else:
                os.unlink(dump)
        run([cl.exe("pg_dump"), "-Fc", "-Z0", "-f", dump, "bench"], "pg_dump", env=cl.env)
        dump_s = time.monotonic() - t
        size = os.path.getsize(dump)
        digest = sha256(dump)
        rec = {"night": night, "dump_bytes": size, "day_seconds": day_s, "pg_dump_seconds": dump_s, "sha256": digest}
        res["nights"].append(rec)
        log(f"night {night}: dump {size / MB:.1f} MB (day {day_s:.1f} s, pg_dump {dump_s:.1f} s)")
        if night == 1:
            measure_zstd(a, cl, dump, work, logdir, res)
        rot = order[(night - 1) % len(order):] + order[:(night - 1) % len(order)]
        for name in rot:
            tool = tools[name]
            cmd, cwd = tool.backup(night, dump)
            try:
                r = timed(cmd, logdir, f"{name}-backup-night{night}", cwd=cwd, env=env)
            except BenchError as e:
                log(f"FAILED {e}")
                failures.append(str(e))
                res["backup"][name].append({"night": night, "failed": True})
                continue
            stored = tool.stored()
            r.update(night=night, input_bytes=size, cumulative=stored, added=stored - tool.last, cache=tool.cache())
            tool.last = stored
            if name == "coffer":
                try:
                    r["report"] = json.loads(r["stdout"])
                except ValueError:
                    pass
            r.pop("stdout", None)
            res["backup"][name].append(r)
            log(f"  {name:6s} {size / MB / r['wall']:7.1f} MB/s  {r['wall']:6.2f} s wall  "
                f"{r['user'] + r['sys']:6.1f} s CPU  {r['rss_kib'] / 1024:6.0f} MiB RSS  "
                f"+{r['added'] / MB:.1f} MB (total {stored / MB:.1f} MB){noise_note(r)}")

    cl.stop()
    last = a.nights
    want = res["nights"][-1]["sha256"]
    if not a.keep:
        os.unlink(dump)
    res["restore"], res["check"] = {}, {}
    rot = order[last % len(order):] + order[:last % len(order)]
    runs = {"restore": {n: [] for n in tools}, "check": {n: [] for n in tools}}
    for rep in range(1, a.repeat + 1):
        log(f"restore of night {last} with each tool (round {rep}/{a.repeat})")
        for name in rot:
            if any(x.get("failed") for x in runs["restore"][name]):
                continue
            dest = os.path.join(work, f"restore-{name}")
            cmd, cwd = tools[name].restore(last, dest)
            try:
                r = timed(cmd, logdir, f"{name}-restore-{rep}", cwd=cwd, env=env)
                out = find_file(dest, "db.dump")
                r["bytes"] = os.path.getsize(out)
                r["identical"] = sha256(out) == want
            except BenchError as e:
                log(f"FAILED {e}")
                failures.append(str(e))
                runs["restore"][name].append({"failed": True})
                continue
            finally:
                shutil.rmtree(dest, ignore_errors=True)
            r.pop("stdout", None)
            runs["restore"][name].append(r)
            if not r["identical"]:
                failures.append(f"{name} restore differs from the dump")
            log(f"  {name:6s} restore {r['bytes'] / MB / r['wall']:7.1f} MB/s  {r['wall']:6.2f} s  "
                f"identical: {'yes' if r['identical'] else 'NO'}{noise_note(r)}")
        log(f"full data checks (round {rep}/{a.repeat})")
        for name in reversed(rot):
            if any(x.get("failed") for x in runs["check"][name]):
                continue
            cmd, cwd = tools[name].check()
            try:
                r = timed(cmd, logdir, f"{name}-check-{rep}", cwd=cwd, env=env)
            except BenchError as e:
                log(f"FAILED {e}")
                failures.append(str(e))
                runs["check"][name].append({"failed": True})
                continue
            if name == "coffer":
                try:
                    r["report"] = json.loads(r["stdout"])
                except ValueError:
                    pass
            r.pop("stdout", None)
            r["repo_bytes"] = tools[name].stored()
            runs["check"][name].append(r)
            log(f"  {name:6s} check {r['wall']:6.2f} s  {r['user'] + r['sys']:6.1f} s CPU  "
                f"{r['rss_kib'] / 1024:6.0f} MiB RSS{noise_note(r)}")
    # Report the run with the median wall time (restore and check are repeatable; backups are not).
    for kind in ("restore", "check"):
        for name, rs in runs[kind].items():
            if not rs or any(x.get("failed") for x in rs):
                res[kind][name] = {"failed": True}
                continue
            med = sorted(rs, key=lambda x: x["wall"])[(len(rs) - 1) // 2]
            res[kind][name] = dict(med, runs=[x["wall"] for x in rs], rss_kib=max(x["rss_kib"] for x in rs),
                                   identical=all(x.get("identical", True) for x in rs))


def noisy(r):
    """Other processes used more than 10% of the machine during the measurement."""
    return r.get("other", 0) > max(0.1, 0.10 * r["wall"] * os.cpu_count())


def noise_note(r):
    return f"  (noisy: other processes used {r['other']:.1f} CPU s)" if noisy(r) else ""


def measure_zstd(a, cl, dump, work, logdir, res):
    """zstd -3 -T1 of the whole first dump, and what each part of the database compresses to."""
    r = timed(["sh", "-c", f"zstd -3 -T1 -c {dump} | wc -c"], logdir, "zstd-night1")
    res["zstd"] = {"bytes": int(r["stdout"].split()[0]), "wall": r["wall"], "input": os.path.getsize(dump)}
    parts = {}
    for part, sel in (("tenant schema (app)", ["-n", "app"]), ("pgbench tables", ["-t", "pgbench_*"])):
        f = os.path.join(work, "part.dump")
        run([cl.exe("pg_dump"), "-Fc", "-Z0", "-f", f] + sel + ["bench"], "pg_dump part", env=cl.env)
        z = run(["sh", "-c", f"zstd -3 -T1 -c {f} | wc -c"], "zstd")
        parts[part] = {"bytes": os.path.getsize(f), "zstd": int(z.split()[0])}
        os.unlink(f)
    res["parts"] = parts
    z = res["zstd"]
    log(f"zstd -3 -T1 of night 1: {z['bytes'] / MB:.1f} MB ({z['input'] / z['bytes']:.2f}:1, "
        f"{z['input'] / MB / z['wall']:.0f} MB/s); " +
        "; ".join(f"{k}: {v['bytes'] / MB:.0f} MB, {v['bytes'] / v['zstd']:.1f}:1" for k, v in parts.items()))


# --------------------------------------------------------------------------
# reporting
# --------------------------------------------------------------------------

def fmt_mb(b):
    return f"{b / MB:,.1f}"


def targets(res):
    """The issue's targets: list of (target, measured, ratio text, met)."""
    b = res["backup"]
    ok = lambda n: n in b and b[n] and all(not r.get("failed") for r in b[n])  # noqa: E731
    rows = []
    if not ok("coffer"):
        return rows
    c = b["coffer"]
    nights = len(c)
    first = c[0]["added"]
    if nights > 1:
        worst = max(r["added"] for r in c[1:])
        mean = sum(r["added"] for r in c[1:]) / (nights - 1)
        rows.append(("each later night adds <= 35% of the first night's stored bytes",
                     f"worst night {fmt_mb(worst)} MB = {worst / first:.1%} of {fmt_mb(first)} MB "
                     f"(mean {mean / first:.1%})", f"{0.35 / (worst / first):.2f}x headroom" if worst <= 0.35 * first
                     else f"{(worst / first) / 0.35:.2f}x over", worst <= 0.35 * first))
    for other in ("restic", "borg"):
        if not ok(other):
            continue
        o = b[other]
        if nights >= 7:
            cv, ov, label = c[6]["cumulative"], o[6]["cumulative"], "after 7 nights (measured)"
        elif nights >= 2:
            ext = lambda s: s[0]["added"] + 6 * sum(r["added"] for r in s[1:]) / (len(s) - 1)  # noqa: E731
            cv, ov = ext(c) + c[0]["cumulative"] - c[0]["added"], ext(o) + o[0]["cumulative"] - o[0]["added"]
            label = f"after 7 nights (EXTRAPOLATED from {nights}: night 1 + 6 x mean later night)"
        else:
            continue
        rows.append((f"vault <= 1/3 of {other}'s {label}",
                     f"{fmt_mb(cv)} MB vs {fmt_mb(ov)} MB = {cv / ov:.2f} of {other}",
                     f"{ov / cv:.2f}x smaller (target 3x)", cv * 3 <= ov))
    for other in ("restic", "borg"):
        if not ok(other):
            continue
        o = b[other]
        r1 = o[0]["wall"] / c[0]["wall"]
        rows.append((f"first-night backup >= 3x {other}",
                     f"coffer {c[0]['input_bytes'] / MB / c[0]['wall']:.1f} MB/s vs {o[0]['input_bytes'] / MB / o[0]['wall']:.1f} MB/s",
                     f"{r1:.2f}x (target 3x)", r1 >= 3))
        if nights > 1:
            rs = [o[i]["wall"] / c[i]["wall"] for i in range(1, nights)]
            rows.append((f"later-night backup >= 5x {other}",
                         "per night: " + ", ".join(f"{x:.2f}x" for x in rs),
                         f"worst {min(rs):.2f}x (target 5x)", min(rs) >= 5))
    rc, rr = res["restore"].get("coffer", {}), res["restore"].get("restic", {})
    if rc.get("wall") and rr.get("wall"):
        x = rr["wall"] / rc["wall"]
        rows.append(("restore >= 3x restic, every chunk verified",
                     f"coffer {rc['bytes'] / MB / rc['wall']:.1f} MB/s vs restic {rr['bytes'] / MB / rr['wall']:.1f} MB/s"
                     f"{'' if rc.get('identical') else ' (coffer output DIFFERS)'}",
                     f"{x:.2f}x (target 3x)", x >= 3 and rc.get("identical")))
    cc, cr = res["check"].get("coffer", {}), res["check"].get("restic", {})
    if cc.get("wall") and cr.get("wall"):
        x = cr["wall"] / cc["wall"]
        rows.append(("verify --read-data >= 2x faster than restic check --read-data",
                     f"coffer {cc['wall']:.2f} s vs restic {cr['wall']:.2f} s", f"{x:.2f}x (target 2x)", x >= 2))
    rss = [r["rss_kib"] for r in c] + [x["rss_kib"] for x in (rc, cc) if x.get("rss_kib")]
    peak = max(rss) / 1024
    rows.append(("peak RSS <= 128 MiB (backup, restore, verify)", f"{peak:.0f} MiB",
                 f"{peak / 128:.2f} of the limit", peak <= 128))
    if "zstd" in res:
        z = res["zstd"]["bytes"]
        x = first / z
        rows.append(("first-night stored size within 10% of zstd -3 -T1 of the dump",
                     f"coffer {fmt_mb(first)} MB vs zstd {fmt_mb(z)} MB", f"{x:.3f}x zstd ({(x - 1):+.1%}; limit +10%)",
                     x <= 1.10))
    return rows


def markdown(a, res):
    L = []
    m = res["machine"]
    L.append(f"Machine: {m['cpus']} CPUs ({m['cpu_model']}), {m['memory_bytes'] / (1 << 30):.0f} GiB RAM, "
             f"Linux {m['kernel']}; all repositories on one disk ({res['workdir_fs']}), page cache warm.")
    v = res["versions"]
    L.append(f"Versions: {v.get('coffer', 'coffer -')} (git {v.get('coffer_git')}, binary sha256 "
             f"{v.get('coffer_sha256', '-')}), {v.get('restic', 'restic -')}, "
             f"{v.get('borg', 'borg -')}, {v.get('postgres')}.")
    L.append(f"Data: pgbench -s {a.scale} + {a.tenants} tenants (seed {a.seed}), {a.nights} nights, "
             f"{a.pgbench_tx} pgbench transactions a day; dumps `pg_dump -Fc -Z0`.")
    if "parts" in res:
        z = res["zstd"]
        L.append(f"Night 1 dump {fmt_mb(z['input'])} MB, zstd -3 -T1 {fmt_mb(z['bytes'])} MB "
                 f"({z['input'] / z['bytes']:.2f}:1, {z['input'] / MB / z['wall']:.0f} MB/s single-threaded); parts: " +
                 "; ".join(f"{k} {fmt_mb(p['bytes'])} MB at {p['bytes'] / p['zstd']:.1f}:1" for k, p in res["parts"].items()) + ".")
    L.append("")
    L.append("MB = 10^6 bytes. MB/s = dump bytes / wall seconds. CPU = user + sys. "
             "Stored = `du -sb` of the repository (coffer: the vault directory; its catalog, "
             "like restic's and borg's caches, is the \"local cache\" column). "
             "Other CPU = CPU-seconds other processes on the machine used during the measurement "
             "(noise: 0 on a quiet machine); * marks a wall time during which other processes used "
             "more than 10% of the machine.")
    L.append("")
    L.append("### Backup, per night")
    L.append("")
    L.append("| night | dump MB | tool | wall s | MB/s | CPU s | peak RSS MiB | stored added MB | stored total MB | local cache MB | other CPU s |")
    L.append("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for i, nrec in enumerate(res["nights"]):
        for name in a.tools:
            r = res["backup"][name][i]
            if r.get("failed"):
                L.append(f"| {nrec['night']} | {fmt_mb(nrec['dump_bytes'])} | {name} | FAILED | | | | | | | |")
                continue
            L.append(f"| {nrec['night']} | {fmt_mb(nrec['dump_bytes'])} | {name} | {r['wall']:.2f}{'*' if noisy(r) else ''} | "
                     f"{r['input_bytes'] / MB / r['wall']:.1f} | {r['user'] + r['sys']:.1f} | {r['rss_kib'] / 1024:.0f} | "
                     f"{fmt_mb(r['added'])} | {fmt_mb(r['cumulative'])} | {fmt_mb(r['cache'])} | {r['other']:.1f} |")
    L.append("")
    L.append(f"### Restore of night {a.nights} and full data check")
    L.append("")
    L.append(f"Each run {a.repeat} times, tools interleaved; the run with the median wall time is shown, "
             "peak RSS is the largest of the runs (all wall times are in results.json).")
    L.append("")
    L.append("| tool | restore wall s | restore MB/s | CPU s | peak RSS MiB | byte-identical | check command | check wall s | check CPU s | check peak RSS MiB | other CPU s (restore, check) |")
    L.append("|---|---:|---:|---:|---:|---|---|---:|---:|---:|---:|")
    cmds = {"coffer": "`coffer verify --read-data`", "restic": "`restic check --read-data`", "borg": "`borg check --verify-data`"}
    for name in a.tools:
        r, c = res["restore"].get(name, {}), res["check"].get(name, {})
        rs = ("FAILED | | | | " if r.get("failed") or not r else
              f"{r['wall']:.2f}{'*' if noisy(r) else ''} | {r['bytes'] / MB / r['wall']:.1f} | {r['user'] + r['sys']:.1f} | "
              f"{r['rss_kib'] / 1024:.0f} | {'yes' if r['identical'] else 'NO'} ")
        cs = ("FAILED | | " if c.get("failed") or not c else
              f"{c['wall']:.2f}{'*' if noisy(c) else ''} | {c['user'] + c['sys']:.1f} | {c['rss_kib'] / 1024:.0f}")
        oth = ", ".join(f"{x['other']:.1f}" if "other" in x else "-" for x in (r, c))
        L.append(f"| {name} | {rs}| {cmds[name]} | {cs} | {oth} |")
    rows = targets(res)
    if rows:
        L.append("")
        L.append("### Targets")
        L.append("")
        L.append("| target | measured | ratio | met |")
        L.append("|---|---|---|---|")
        for t, meas, ratio, met in rows:
            L.append(f"| {t} | {meas} | {ratio} | {'met' if met else '**missed**'} |")
    if res.get("failures"):
        L.append("")
        L.append("Failures: " + "; ".join(f.splitlines()[0] for f in res["failures"]))
    return "\n".join(L) + "\n"


COLORS = {"coffer": "#d95f02", "restic": "#1b9e77", "borg": "#7570b3"}


def chart(a, res, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return chart_gnuplot(a, res, path)
    nights = [n["night"] for n in res["nights"]]
    tools = [t for t in a.tools if all(not r.get("failed") for r in res["backup"][t])]
    fig, ax = plt.subplots(2, 2, figsize=(12, 8.5))
    fig.suptitle(f"coffer vs restic vs borg: nightly pg_dump -Fc -Z0 "
                 f"(pgbench -s {a.scale} + {a.tenants} tenants, {res['machine']['cpus']} CPUs)")
    a0 = ax[0][0]
    if "zstd" in res:
        a0.axhline(res["zstd"]["bytes"] / MB, color="grey", linestyle=":", label="zstd -3 of night 1")
    for t in tools:
        a0.plot(nights, [r["cumulative"] / MB for r in res["backup"][t]], "o-", color=COLORS[t], label=t)
    a0.set(title="stored bytes, cumulative (du -sb)", xlabel="night", ylabel="MB")
    a0.set_xticks(nights)
    a0.legend()
    w = 0.8 / max(1, len(tools))
    a1 = ax[0][1]
    for k, t in enumerate(tools):
        a1.bar([n + (k - (len(tools) - 1) / 2) * w for n in nights], [r["added"] / MB for r in res["backup"][t]],
               w, color=COLORS[t], label=t)
    a1.set(title="stored bytes added each night", xlabel="night", ylabel="MB")
    a1.set_xticks(nights)
    a1.set_ylim(top=a1.get_ylim()[1] * 1.2)
    a1.legend(ncol=3, loc="upper center")
    a2 = ax[1][0]
    for k, t in enumerate(tools):
        a2.bar([n + (k - (len(tools) - 1) / 2) * w for n in nights],
               [r["input_bytes"] / MB / r["wall"] for r in res["backup"][t]], w, color=COLORS[t], label=t)
    a2.set(title="backup throughput (dump MB / wall s, higher is better)", xlabel="night", ylabel="MB/s")
    a2.set_xticks(nights)
    a2.set_ylim(top=a2.get_ylim()[1] * 1.2)
    a2.legend(ncol=3, loc="upper center")
    a3 = ax[1][1]
    ops = [("restore", res["restore"]), ("full data check", res["check"])]
    for k, t in enumerate(a.tools):
        a3.bar([i + (k - (len(a.tools) - 1) / 2) * w for i in range(len(ops))],
               [d.get(t, {}).get("wall", 0) for _, d in ops], w, color=COLORS[t], label=t)
    a3.set_xticks(range(len(ops)), [f"restore night {a.nights}", "full data check"])
    a3.set(title="restore and deepest check, wall seconds (lower is better)", ylabel="s")
    a3.set_ylim(top=a3.get_ylim()[1] * 1.2)
    a3.legend(ncol=3, loc="upper center")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def chart_gnuplot(a, res, path):
    if not shutil.which("gnuplot"):
        log("no chart: pip install matplotlib (or apt-get install -y gnuplot-nox)")
        return False
    tools = [t for t in a.tools if all(not r.get("failed") for r in res["backup"][t])]
    dat = path + ".dat"
    with open(dat, "w") as f:
        f.write("night " + " ".join(f"{t}_total {t}_mbps" for t in tools) + "\n")
        for i, n in enumerate(res["nights"]):
            f.write(f"{n['night']} " + " ".join(
                f"{res['backup'][t][i]['cumulative'] / MB:.2f} {res['backup'][t][i]['input_bytes'] / MB / res['backup'][t][i]['wall']:.2f}"
                for t in tools) + "\n")
    p1 = ", ".join(f"'{dat}' using 1:{2 + 2 * k} with linespoints title '{t}'" for k, t in enumerate(tools))
    p2 = ", ".join(f"'{dat}' using 1:{3 + 2 * k} with linespoints title '{t}'" for k, t in enumerate(tools))
    script = (f"set terminal png size 1200,500; set output '{path}'; set multiplot layout 1,2;"
              f"set key autotitle columnhead; set xlabel 'night';"
              f"set title 'stored MB, cumulative'; plot {p1};"
              f"set title 'backup MB/s'; plot {p2}; unset multiplot")
    subprocess.run(["gnuplot", "-e", script], check=False)
    os.unlink(dat)
    return os.path.exists(path)



def write_results(out, stem, md, res):
    """Writes STEM.md and STEM.json into OUT and prints the markdown."""
    with open(os.path.join(out, f"{stem}.md"), "w") as f:
        f.write(md)
    with open(os.path.join(out, f"{stem}.json"), "w") as f:
        json.dump(res, f, indent=1, default=str)
    print(md)


def cleanup(res, work, keep):
    """Stops the cluster a run started and removes its work directory
    (unless asked to keep it)."""
    cl = res.pop("_cluster", None)
    if cl:
        cl.stop()
    if keep:
        log(f"kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)

def main():
    global IDLE_WAIT
    a = parse_args()
    IDLE_WAIT = a.idle_wait
    if a.replot:
        d = a.replot
        with open(os.path.join(d, "results.json")) as f:
            res = json.load(f)
        a = argparse.Namespace(**res["params"])
        md = markdown(a, res)
        with open(os.path.join(d, "results.md"), "w") as f:
            f.write(md)
        chart(a, res, os.path.join(d, "chart.png"))
        print(md)
        return 0
    check_prereqs(a)
    a.out = os.path.abspath(a.out)
    os.makedirs(a.out, exist_ok=True)
    shutil.rmtree(os.path.join(a.out, "logs"), ignore_errors=True)
    work = tempfile.mkdtemp(prefix="coffer-compare-", dir=a.workdir)
    os.chmod(work, 0o711)  # the postgres user must reach its directory inside
    log(f"work directory {work}; results to {a.out}")

    def on_signal(sig, _frame):
        raise KeyboardInterrupt(f"signal {sig}")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    res = {"machine": machine_info(), "params": {k: v for k, v in vars(a).items()},
           "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    try:
        res["workdir_fs"] = run(["df", "--output=source", work], "df").split()[-1]
    except BenchError:
        res["workdir_fs"] = "?"
    status = 0
    try:
        bench(a, work, res)
    except KeyboardInterrupt:
        log("interrupted: cleaning up")
        status = 130
    except BenchError as e:
        log(f"error: {e}")
        status = 1
    finally:
        cleanup(res, work, a.keep)
    if status or "restore" not in res:
        return status or 1
    md = markdown(a, res)
    write_results(a.out, "results", md, res)
    png = os.path.join(a.out, "chart.png")
    if chart(a, res, png):
        log(f"chart: {png}")
    log(f"results: {os.path.join(a.out, 'results.md')}")
    return 1 if res.get("failures") else 0


if __name__ == "__main__":
    sys.exit(main())
