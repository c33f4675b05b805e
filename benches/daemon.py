#!/usr/bin/env python3
"""coffer daemon: what idling costs, and how fast a failure becomes an alert.

    benches/daemon.py [--seconds 120] [--coffer target/release/coffer]

1. Idle: a daemon with one job due every 24 hours (it runs once at start,
   then has nothing to do) is watched for --seconds: CPU time (utime +
   stime from /proc/PID/stat), resident memory (VmRSS, VmHWM) and context
   switches (how often it woke). Reported per hour and per week.
2. Alert latency: a job whose producer writes the time and exits 3 is run
   10 times (`coffer run fail`) with a webhook pointing at an HTTP server
   in this script; latency = the webhook's arrival - the producer's exit.
"""

import argparse
import http.server
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def proc_stats(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    status = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            status[k] = v.strip()
    switches = int(status["voluntary_ctxt_switches"]) + int(status["nonvoluntary_ctxt_switches"])
    return cpu, status["VmRSS"], status["VmHWM"], switches


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=int, default=120)
    p.add_argument("--coffer", default=os.path.join(ROOT, "target/release/coffer"))
    a = p.parse_args()
    work = tempfile.mkdtemp(prefix="coffer-daemon-bench-")
    env = dict(os.environ, HOME=work)
    cfg = os.path.join(work, "config.toml")
    coffer = [a.coffer, "--config", cfg]
    subprocess.run(coffer + ["init", "--local", os.path.join(work, "vault")], env=env,
                   check=True, capture_output=True)
    data = os.path.join(work, "data")
    with open(data, "wb") as f:
        f.write(os.urandom(1 << 20))

    received = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(time.time())
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stamp = os.path.join(work, "failed-at")
    with open(cfg, "a") as f:
        f.write(f'''
[alerts]
webhook = "http://127.0.0.1:{server.server_port}/hook"

[[jobs]]
name = "idle"
file = "{data}"
every = "24h"

[[jobs]]
name = "fail"
command = ["sh", "-c", "date +%s.%N > {stamp}; exit 3"]
''')

    # 1. Idle.
    d = subprocess.Popen(coffer + ["daemon", "--log-format", "json"], env=env,
                         stderr=subprocess.PIPE, text=True)
    for line in d.stderr:
        if json.loads(line).get("event") == "job-finished":
            break
    c0, _, _, s0 = proc_stats(d.pid)
    time.sleep(a.seconds)
    c1, rss, hwm, s1 = proc_stats(d.pid)
    d.terminate()
    d.wait()
    per_hour = (c1 - c0) * 3600 / a.seconds
    print(f"## coffer daemon idle ({a.seconds} s watched, one job every 24 h)\n")
    print(f"- CPU: {c1 - c0:.3f} s in {a.seconds} s: {per_hour:.2f} s per hour, {per_hour * 168:.1f} s per week")
    print(f"- memory: VmRSS {rss}, peak VmHWM {hwm}")
    print(f"- wake-ups (context switches): {s1 - s0} in {a.seconds} s")

    # 2. Alert latency.
    lat = []
    for _ in range(10):
        n = len(received)
        subprocess.run(coffer + ["--quiet", "run", "fail"], env=env, capture_output=True)
        assert len(received) == n + 1, "the webhook was not called"
        with open(stamp) as f:
            failed = float(f.read())
        lat.append((received[-1] - failed) * 1000)
    lat.sort()
    print(f"\n## failure to alert (10 runs of a job whose producer exits 3)\n")
    print(f"- median {statistics.median(lat):.0f} ms, max {lat[-1]:.0f} ms "
          f"(producer exit to webhook arrival, same host)")
    server.shutdown()


if __name__ == "__main__":
    sys.exit(main())
