#!/usr/bin/env python3
"""Measures epochfs, gocryptfs, bindfs and a plain directory side by side (bench/fs.sh).

Per file system and run: sequential write (fio, 1 MiB blocks, SIZE MiB, fsync at the end),
sequential read of that file after dropping caches, random 4 KiB read and write IOPS (fio,
psync, one job, caches dropped first), and untar / `ls -lR` / `rm -rf` seconds on a tarball of
/usr/include. Each figure is the median of RUNS runs. All four stay mounted; each phase
(sequential, random, small files) runs on every file system in turn, in an order that rotates
from run to run.
"""
import argparse, json, os, shutil, statistics, subprocess, sys, tarfile, tempfile, time

parser = argparse.ArgumentParser()
parser.add_argument("--epochfs", required=True)
parser.add_argument("--runs", type=int, default=3)
parser.add_argument("--size-mb", type=int, default=512)
parser.add_argument("--random-seconds", type=int, default=10)
parser.add_argument("--dir", default="/var/tmp/epochfs-bench")
parser.add_argument("--phases", default="sequential,random,small",
                    help="comma-separated subset of sequential, random, small")
args = parser.parse_args()

work = args.dir
shutil.rmtree(work, ignore_errors=True)
os.makedirs(work)
tarball = os.path.join(work, "usr-include.tar")
with tarfile.open(tarball, "w") as tar:
    tar.add("/usr/include", arcname="include")


def sh(*command, **kwargs):
    return subprocess.run(command, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def wait_mounted(path, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.ismount(path):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{path} did not mount")


class Plain:
    name = "plain"
    def __init__(self):
        self.mnt = os.path.join(work, "plain")
        os.makedirs(self.mnt)
    def mount(self): pass
    def unmount(self): pass


class FuseFS:
    def __init__(self, name):
        self.name = name
        self.backing = os.path.join(work, name + "-backing")
        self.mnt = os.path.join(work, name + "-mnt")
        os.makedirs(self.mnt)
    def unmount(self):
        if os.path.ismount(self.mnt):
            subprocess.run(["fusermount3", "-u", self.mnt], check=False)
        deadline = time.time() + 15
        while os.path.ismount(self.mnt) and time.time() < deadline:
            time.sleep(0.05)


class EpochFS(FuseFS):
    def __init__(self):
        super().__init__("epochfs")
        keys = os.path.join(work, "keys")
        os.makedirs(keys)
        with open(os.path.join(keys, "1.key"), "w") as f:
            f.write(os.urandom(32).hex())
        sh(args.epochfs, "init", self.backing, "--key-source", f"file:{keys}/%d.key")
    def mount(self):
        sh(args.epochfs, "mount", self.backing, self.mnt)
        wait_mounted(self.mnt)


class GocryptFS(FuseFS):
    def __init__(self):
        super().__init__("gocryptfs")
        os.makedirs(self.backing)
        self.passfile = os.path.join(work, "gocryptfs.pass")
        with open(self.passfile, "w") as f:
            f.write("benchmark passphrase\n")
        sh("gocryptfs", "-q", "-init", "-scryptn", "10", "-passfile", self.passfile, self.backing)
    def mount(self):
        sh("gocryptfs", "-q", "-passfile", self.passfile, self.backing, self.mnt)
        wait_mounted(self.mnt)


class BindFS(FuseFS):
    def __init__(self):
        super().__init__("bindfs")
        os.makedirs(self.backing)
    def mount(self):
        # Debian's bindfs uses libfuse2: without big_writes every write request is 4 KiB.
        sh("bindfs", "-o", "big_writes", self.backing, self.mnt)
        wait_mounted(self.mnt)


def fio(directory, name, rw, bs, size_mb, extra=()):
    out = sh("fio", "--name=" + name, "--directory=" + directory, "--rw=" + rw, "--bs=" + bs, f"--size={size_mb}M",
             "--ioengine=psync", "--numjobs=1", "--group_reporting", "--output-format=json", *extra).stdout
    job = json.loads(out)["jobs"][0]
    return job["read" if "read" in rw else "write"]


def sequential(fs):
    figures = {}
    drop_caches()
    write = fio(fs.mnt, "seq", "write", "1M", args.size_mb, ["--end_fsync=1"])
    figures["seq write MB/s"] = write["io_bytes"] / 1e6 / (write["runtime"] / 1000)
    drop_caches()
    read = fio(fs.mnt, "seq", "read", "1M", args.size_mb)
    figures["seq read MB/s"] = read["io_bytes"] / 1e6 / (read["runtime"] / 1000)
    os.unlink(os.path.join(fs.mnt, "seq.0.0"))
    return figures


def random_io(fs):
    figures = {}
    random_size = min(256, args.size_mb)
    fio(fs.mnt, "rand", "write", "1M", random_size)  # lay the file out first
    drop_caches()
    rr = fio(fs.mnt, "rand", "randread", "4k", random_size, ["--time_based", f"--runtime={args.random_seconds}"])
    figures["rand read IOPS"] = rr["iops"]
    rw = fio(fs.mnt, "rand", "randwrite", "4k", random_size, ["--time_based", f"--runtime={args.random_seconds}"])
    figures["rand write IOPS"] = rw["iops"]
    os.unlink(os.path.join(fs.mnt, "rand.0.0"))
    return figures


def small_files(fs):
    figures = {}
    drop_caches()
    start = time.time(); sh("tar", "-xf", tarball, "-C", fs.mnt); os.sync(); figures["untar s"] = time.time() - start
    drop_caches()
    start = time.time(); subprocess.run(["ls", "-lR", fs.mnt], stdout=subprocess.DEVNULL, check=True); figures["ls -lR s"] = time.time() - start
    start = time.time(); sh("rm", "-rf", os.path.join(fs.mnt, "include")); os.sync(); figures["rm -rf s"] = time.time() - start
    return figures


# The machine's speed drifts by tens of percent over minutes. So that a slow stretch does not
# land on one file system only, all four stay mounted and each phase (tens of seconds) runs on
# every file system in turn, starting with a different one each run.
phases = [{"sequential": sequential, "random": random_io, "small": small_files}[name] for name in args.phases.split(",")]
systems = []
try:
    systems = [EpochFS(), GocryptFS(), BindFS(), Plain()]
    results = {fs.name: {} for fs in systems}
    for fs in systems:
        fs.mount()
    for run in range(args.runs):
        order = systems[run % len(systems):] + systems[:run % len(systems)]
        for phase in phases:
            for fs in order:
                for key, value in phase(fs).items():
                    results[fs.name].setdefault(key, []).append(value)
        print(f"run {run + 1}/{args.runs} done", file=sys.stderr, flush=True)
finally:
    for fs in systems:
        fs.unmount()
    shutil.rmtree(work, ignore_errors=True)

metrics = list(results["epochfs"].keys())
median = {name: {m: statistics.median(values) for m, values in figures.items()} for name, figures in results.items()}
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print(f"Run: {time.strftime('%Y-%m-%d %H:%M')} UTC, {cpu}, {os.cpu_count()} cores; median of {args.runs} runs; "
      f"seq {args.size_mb} MiB, random {args.random_seconds} s on {min(256, args.size_mb)} MiB")
print(f"| metric | epochfs | gocryptfs | bindfs | plain | vs gocryptfs | vs bindfs | vs plain |")
print("|---|---|---|---|---|---|---|---|")
for m in metrics:
    e, g, b, p = (median[n][m] for n in ("epochfs", "gocryptfs", "bindfs", "plain"))
    # Times: lower is better, so the ratio is epochfs/other (target <= 0.8 vs gocryptfs).
    fmt = (lambda v: f"{v:.2f}") if m.endswith(" s") else (lambda v: f"{v:.0f}")
    print(f"| {m} | {fmt(e)} | {fmt(g)} | {fmt(b)} | {fmt(p)} | {e / g:.2f} | {e / b:.2f} | {e / p:.2f} |")
print("\nRatios are epochfs / other. For MB/s and IOPS higher is better; for seconds lower is better.")
print("Per-run values:", json.dumps(results))
