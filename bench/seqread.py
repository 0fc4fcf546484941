#!/usr/bin/env python3
"""Sequential read of one or more epochfs builds beside gocryptfs, for comparing builds.

Each file system gets a 512 MiB file written with fio (1 MiB blocks, fsync at the end); then,
RUNS times and in an order that rotates from run to run, caches are dropped (and, with --warm,
the backing files read back into the page cache) and fio reads the file with 1 MiB blocks, as
bench/fs.py does. Prints per file system the median MB/s, its ratio to gocryptfs, and the
daemon's CPU seconds per GiB read (user + system, from /proc/PID/stat).

Usage: bench/seqread.py [--runs N] [--warm] EPOCHFS_BINARY...
(needs fio and gocryptfs: bench/fs.sh installs them)
"""
import argparse, os, shutil, statistics, subprocess

from benchfs import EpochFS, GocryptFS, drop_caches, fio, sh

parser = argparse.ArgumentParser()
parser.add_argument("--runs", type=int, default=8)
parser.add_argument("--warm", action="store_true", help="read the backing files into the page cache first")
parser.add_argument("--dir", default="/var/tmp/epochfs-seqread")
parser.add_argument("binaries", nargs="+")
args = parser.parse_args()
size_mb = 512


def daemon_cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


work = args.dir
shutil.rmtree(work, ignore_errors=True)
os.makedirs(work)
systems = []
try:
    for i, binary in enumerate(args.binaries):
        systems.append(EpochFS(work, binary, name=f"epochfs{i}"))
    systems.append(GocryptFS(work))
    for fs in systems:
        fs.mount()
        fio(fs.mnt, "seq", "write", "1M", size_mb, ["--end_fsync=1"])

    label = {fs.name: f"{fs.name} {fs.binary}" if isinstance(fs, EpochFS) else fs.name for fs in systems}
    speeds = {fs.name: [] for fs in systems}
    cpu = {fs.name: [] for fs in systems}
    for run in range(args.runs):
        for fs in systems[run % len(systems):] + systems[:run % len(systems)]:
            drop_caches()
            if args.warm:
                for root, _, files in os.walk(fs.backing):
                    for file in files:
                        subprocess.run(["cat", os.path.join(root, file)], stdout=subprocess.DEVNULL, check=True)
            pid = int(sh("pgrep", "-f", fs.backing).stdout.split()[0])
            before = daemon_cpu_seconds(pid)
            read = fio(fs.mnt, "seq", "read", "1M", size_mb)
            speeds[fs.name].append(read["io_bytes"] / 1e6 / (read["runtime"] / 1000))
            cpu[fs.name].append((daemon_cpu_seconds(pid) - before) / (size_mb / 1024))

    reference = statistics.median(speeds["gocryptfs"])
    print(f"Sequential read, {size_mb} MiB, {'warm' if args.warm else 'cold'} backing, median of {args.runs} runs")
    for fs in systems:
        median = statistics.median(speeds[fs.name])
        print(f"{label[fs.name]}: {median:.0f} MB/s, {median / reference:.2f}x gocryptfs, daemon CPU "
              f"{statistics.median(cpu[fs.name]):.2f} s/GiB (runs: {', '.join(f'{v:.0f}' for v in speeds[fs.name])} MB/s)")
finally:
    for fs in systems:
        fs.unmount()
    shutil.rmtree(work, ignore_errors=True)
