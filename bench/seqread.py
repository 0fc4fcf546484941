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
import argparse, json, os, shutil, statistics, subprocess, time

parser = argparse.ArgumentParser()
parser.add_argument("--runs", type=int, default=8)
parser.add_argument("--warm", action="store_true", help="read the backing files into the page cache first")
parser.add_argument("--dir", default="/var/tmp/epochfs-seqread")
parser.add_argument("binaries", nargs="+")
args = parser.parse_args()
size_mb = 512


def sh(*command):
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


def daemon_cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fio_read_mbs(directory):
    job = json.loads(sh("fio", "--name=seq", "--directory=" + directory, "--rw=read", "--bs=1M", f"--size={size_mb}M",
                        "--ioengine=psync", "--output-format=json"))["jobs"][0]["read"]
    return job["io_bytes"] / 1e6 / (job["runtime"] / 1000)


work = args.dir
shutil.rmtree(work, ignore_errors=True)
os.makedirs(f"{work}/keys")
with open(f"{work}/keys/1.key", "w") as f:
    f.write(os.urandom(32).hex())
with open(f"{work}/gocryptfs.pass", "w") as f:
    f.write("benchmark passphrase\n")

systems = {}  # name -> (backing, mountpoint)
try:
    for i, binary in enumerate(args.binaries):
        backing, mnt = f"{work}/epochfs{i}-backing", f"{work}/epochfs{i}-mnt"
        os.makedirs(mnt)
        sh(binary, "init", backing, "--key-source", f"file:{work}/keys/%d.key")
        sh(binary, "mount", backing, mnt)
        systems[f"epochfs#{i} {binary}"] = (backing, mnt)
    backing, mnt = f"{work}/gocryptfs-backing", f"{work}/gocryptfs-mnt"
    os.makedirs(backing)
    os.makedirs(mnt)
    sh("gocryptfs", "-q", "-init", "-scryptn", "10", "-passfile", f"{work}/gocryptfs.pass", backing)
    sh("gocryptfs", "-q", "-passfile", f"{work}/gocryptfs.pass", backing, mnt)
    systems["gocryptfs"] = (backing, mnt)
    for _, mnt in systems.values():
        deadline = time.time() + 15
        while not os.path.ismount(mnt) and time.time() < deadline:
            time.sleep(0.05)
        sh("fio", "--name=seq", "--directory=" + mnt, "--rw=write", "--bs=1M", f"--size={size_mb}M",
           "--ioengine=psync", "--end_fsync=1", "--output-format=json")

    names = list(systems)
    speeds = {name: [] for name in names}
    cpu = {name: [] for name in names}
    for run in range(args.runs):
        for name in names[run % len(names):] + names[:run % len(names)]:
            backing, mnt = systems[name]
            os.sync()
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("3\n")
            if args.warm:
                for root, _, files in os.walk(backing):
                    for file in files:
                        subprocess.run(["cat", os.path.join(root, file)], stdout=subprocess.DEVNULL, check=True)
            pid = int(sh("pgrep", "-f", backing).split()[0])
            before = daemon_cpu_seconds(pid)
            speeds[name].append(fio_read_mbs(mnt))
            cpu[name].append((daemon_cpu_seconds(pid) - before) / (size_mb / 1024))

    reference = statistics.median(speeds["gocryptfs"])
    print(f"Sequential read, {size_mb} MiB, {'warm' if args.warm else 'cold'} backing, median of {args.runs} runs")
    for name in names:
        median = statistics.median(speeds[name])
        print(f"{name}: {median:.0f} MB/s, {median / reference:.2f}x gocryptfs, daemon CPU "
              f"{statistics.median(cpu[name]):.2f} s/GiB (runs: {', '.join(f'{v:.0f}' for v in speeds[name])} MB/s)")
finally:
    for _, mnt in systems.values():
        subprocess.run(["fusermount3", "-u", mnt], check=False)
    shutil.rmtree(work, ignore_errors=True)
