#!/usr/bin/env python3
"""Reconciler figures (bench/reconcile.sh), with a real single-member etcd on loopback.

For each volume count N: N volumes (file key sources, epochs 1...RUNS+1) at epoch 1, one
`epochfs reconcile --source etcd:...` daemon (timer and poll an hour away, so only the watch
starts a pass). Per run the epoch key is put to the next epoch through etcd's JSON gateway and
the clock runs from just before the put until the headers of all N volumes show the new
epoch, polled every 2 ms through the daemon's state file and then confirmed with `epochfs
info`. The figure is the median of RUNS runs. Then, with the daemon idle for IDLE seconds
(N = 10): its CPU time over that interval (utime + stime from /proc/PID/stat) as a percentage
of one core, and its VmRSS and VmHWM.
"""
import argparse, base64, json, os, shutil, signal, socket, statistics, subprocess, time, urllib.request

parser = argparse.ArgumentParser()
parser.add_argument("--epochfs", required=True)
parser.add_argument("--runs", type=int, default=5)
parser.add_argument("--counts", default="1,3,10")
parser.add_argument("--idle-seconds", type=int, default=30)
parser.add_argument("--dir", default="/var/tmp/epochfs-bench-reconcile")
args = parser.parse_args()
KEY = "/epochfs/epoch"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def put(port, key, value):
    body = json.dumps({"key": base64.b64encode(key.encode()).decode(), "value": base64.b64encode(value.encode()).decode()})
    urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/v3/kv/put", body.encode()), timeout=10).read()


def start_etcd(work):
    client, peer = free_port(), free_port()
    log = open(os.path.join(work, "etcd.log"), "w")
    etcd = subprocess.Popen(["/usr/bin/etcd", "--name", "b", "--data-dir", os.path.join(work, "etcd"),
                             "--listen-client-urls", f"http://127.0.0.1:{client}", "--advertise-client-urls", f"http://127.0.0.1:{client}",
                             "--listen-peer-urls", f"http://127.0.0.1:{peer}", "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                             "--initial-cluster", f"b=http://127.0.0.1:{peer}"], stdout=log, stderr=log)
    for _ in range(600):
        try:
            if json.load(urllib.request.urlopen(f"http://127.0.0.1:{client}/health", timeout=1)).get("health") == "true":
                return etcd, client
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit("etcd did not start")


def epoch_of(backing):
    out = subprocess.run([args.epochfs, "info", backing, "--json"], check=True, capture_output=True, text=True).stdout
    return json.loads(out)["epoch"]


def state_epochs(path):
    try:
        with open(path) as f:
            report = json.load(f)
        return [v.get("epoch") for v in report["volumes"]]
    except (OSError, ValueError, KeyError):
        return None


def measure(count, work, port, idle):
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(os.path.join(work, "keys"))
    for epoch in range(1, args.runs + 2):
        with open(os.path.join(work, "keys", f"{epoch}.key"), "w") as f:
            f.write(os.urandom(32).hex())
    backings = [os.path.join(work, f"v{i}") for i in range(count)]
    for backing in backings:
        subprocess.run([args.epochfs, "init", backing, "--key-source", f"file:{work}/keys/%d.key"], check=True, capture_output=True)
    key = f"{KEY}-{count}"
    put(port, key, "1")
    state = os.path.join(work, "state.json")
    log = open(os.path.join(work, "reconcile.log"), "w")
    daemon = subprocess.Popen([args.epochfs, "reconcile", "--source", f"etcd:127.0.0.1:{port}/{key}", "--interval", "3600",
                               "--state", state, "--member", f"bench-{count}"] + backings, stdout=log, stderr=log)
    try:
        while state_epochs(state) != [1] * count:
            time.sleep(0.01)
        times = []
        for epoch in range(2, args.runs + 2):
            start = time.monotonic()
            put(port, key, str(epoch))
            while state_epochs(state) != [epoch] * count:
                time.sleep(0.002)
            times.append(time.monotonic() - start)
            assert all(epoch_of(b) == epoch for b in backings)
        figures = {"median_ms": statistics.median(times) * 1000, "runs_ms": [round(t * 1000, 1) for t in times]}
        if idle:
            time.sleep(2)
            ticks = os.sysconf("SC_CLK_TCK")

            def cpu():
                fields = open(f"/proc/{daemon.pid}/stat").read().rsplit(")", 1)[1].split()
                return (int(fields[11]) + int(fields[12])) / ticks
            before, started = cpu(), time.monotonic()
            time.sleep(args.idle_seconds)
            figures["idle_cpu_percent"] = (cpu() - before) / (time.monotonic() - started) * 100
            status = dict(line.split(":", 1) for line in open(f"/proc/{daemon.pid}/status") if ":" in line)
            figures["rss_mb"] = int(status["VmRSS"].split()[0]) / 1024
            figures["hwm_mb"] = int(status["VmHWM"].split()[0]) / 1024
        return figures
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait()


def main():
    base = args.dir
    shutil.rmtree(base, ignore_errors=True)
    os.makedirs(base)
    etcd, port = start_etcd(base)
    try:
        counts = [int(c) for c in args.counts.split(",")]
        for count in counts:
            figures = measure(count, os.path.join(base, f"n{count}"), port, idle=(count == counts[-1]))
            line = f"{count:3d} volume(s): put to all at the new epoch {figures['median_ms']:7.1f} ms median  (runs: {figures['runs_ms']})"
            print(line, flush=True)
            if "rss_mb" in figures:
                print(f"idle reconciler ({count} volumes, {args.idle_seconds} s): CPU {figures['idle_cpu_percent']:.3f} % of a core, "
                      f"RSS {figures['rss_mb']:.1f} MB (peak {figures['hwm_mb']:.1f} MB)", flush=True)
    finally:
        etcd.terminate()
        etcd.wait()
        shutil.rmtree(base, ignore_errors=True)


main()
