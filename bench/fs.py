#!/usr/bin/env python3
"""Measures epochfs, gocryptfs, bindfs and a plain directory side by side (bench/fs.sh).

Per file system and run: sequential write (fio, 1 MiB blocks, SIZE MiB, fsync at the end),
sequential read of that file after dropping caches, random 4 KiB read and write IOPS (fio,
psync, one job, caches dropped first), untar / `ls -lR` / `rm -rf` seconds on a tarball of
/usr/include, and a raft log's 4 KiB appends each followed by fdatasync (fio --fdatasync=1,
16 MiB), and durable names: a database's pattern of a file written, fsync'd, renamed into place
and its directory fsync'd, then the previous one unlinked (2,000 times). Each figure is the median of RUNS runs. All stay mounted; each phase (sequential,
random, small files, wal) runs on every file system in turn, in an order that rotates from run
to run. --baseline adds a second epochfs build to the same run.
"""
import argparse, json, os, shutil, statistics, subprocess, sys, tarfile, time

from benchfs import BindFS, EpochFS, GocryptFS, PassthroughHP, Plain, drop_caches, fio, sh

parser = argparse.ArgumentParser()
parser.add_argument("--epochfs", required=True)
parser.add_argument("--baseline", help="another epochfs build, measured in the same run (an A/B of two builds)")
parser.add_argument("--epochfs-options", default="",
                    help="-o options for the epochfs mount (io_uring=off: /dev/fuse, to compare with a build that has no ring)")
parser.add_argument("--baseline-options", default="",
                    help="-o options for the baseline's mount (io_uring=off: the same build on /dev/fuse)")
parser.add_argument("--peers", default="gocryptfs,bindfs,plain", help="comma-separated subset of gocryptfs, bindfs, plain, passthrough_hp, or none")
parser.add_argument("--passthrough-hp", default="passthrough_hp",
                    help="libfuse's example/passthrough_hp binary, for the passthrough_hp peer")
parser.add_argument("--runs", type=int, default=3)
parser.add_argument("--size-mb", type=int, default=512)
parser.add_argument("--random-seconds", type=int, default=10)
parser.add_argument("--dir", default="/var/tmp/epochfs-bench")
parser.add_argument("--phases", default="sequential,random,small,wal,names",
                    help="comma-separated subset of sequential, random, small, wal, names")
args = parser.parse_args()

work = args.dir
shutil.rmtree(work, ignore_errors=True)
os.makedirs(work)
tarball = os.path.join(work, "usr-include.tar")
with tarfile.open(tarball, "w") as tar:
    tar.add("/usr/include", arcname="include")


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


def wal(fs):
    # A raft log's pattern: appends, each made durable with fdatasync before the next. 4 KiB
    # appends fill whole blocks; 300-byte ones (an etcd entry's size) rewrite the partial last
    # block every time, which epochfs protects with its shadow slots (FORMAT.md §6).
    drop_caches()
    appends = fio(fs.mnt, "wal", "write", "4k", 16, ["--fdatasync=1"])
    os.unlink(os.path.join(fs.mnt, "wal.0.0"))
    small = fio(fs.mnt, "walsmall", "write", "300", 4, ["--fdatasync=1"])
    os.unlink(os.path.join(fs.mnt, "walsmall.0.0"))
    return {"wal appends/s": appends["iops"], "wal 300 B appends/s": small["iops"]}


def durable_names(fs):
    # What careful programs do to make a name durable (etcd's snapshot and WAL files, a
    # database's journal): write a temporary file, fsync it, rename it into place, fsync the
    # directory; the name it replaces goes. On epochfs (format 4) each fsync of the directory
    # commits its record, and each replaced name is let go in it first (FORMAT.md §5.6).
    directory = os.path.join(fs.mnt, "names")
    os.makedirs(directory, exist_ok=True)
    block, count = os.urandom(4096), 2000
    dirfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        start = time.time()
        for i in range(count):
            temporary = os.path.join(directory, "tmp")
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(fd, block)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(temporary, os.path.join(directory, f"file{i % 8}"))
            os.fsync(dirfd)
        elapsed = time.time() - start
    finally:
        os.close(dirfd)
        shutil.rmtree(directory, ignore_errors=True)
    return {"durable names/s": count / elapsed}


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
phases = [{"sequential": sequential, "random": random_io, "small": small_files, "wal": wal, "names": durable_names}[name]
          for name in args.phases.split(",")]
systems = []
try:
    peers = {"gocryptfs": GocryptFS, "bindfs": BindFS, "plain": Plain,
             "passthrough_hp": lambda work: PassthroughHP(work, args.passthrough_hp)}
    systems = ([EpochFS(work, args.epochfs, options=args.epochfs_options)]
               + [peers[name](work) for name in args.peers.split(",") if name in peers])
    if args.baseline:
        systems.insert(1, EpochFS(work, args.baseline, name="baseline", options=args.baseline_options))
    results = {fs.name: {} for fs in systems}
    failures = []
    for fs in systems:
        fs.mount()
        if isinstance(fs, EpochFS):
            print(f"{fs.name}: {fs.binary} {' '.join(fs.options)} on {fs.transport()}", file=sys.stderr, flush=True)
    for run in range(args.runs):
        order = systems[run % len(systems):] + systems[:run % len(systems)]
        for phase in phases:
            for fs in order:
                try:
                    figures = phase(fs)
                except (OSError, subprocess.CalledProcessError) as error:
                    # A file system that fails a phase loses that run's figures, not the others'.
                    failures.append(f"run {run + 1}, {phase.__name__}, {fs.name}: {error}")
                    print(f"FAILED: {failures[-1]}", file=sys.stderr, flush=True)
                    continue
                for key, value in figures.items():
                    results[fs.name].setdefault(key, []).append(value)
        print(f"run {run + 1}/{args.runs} done: {json.dumps(results)}", file=sys.stderr, flush=True)
finally:
    for fs in systems:
        fs.unmount()
    shutil.rmtree(work, ignore_errors=True)

metrics = list(results["epochfs"].keys())
median = {name: {m: statistics.median(values) for m, values in figures.items()} for name, figures in results.items()}
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print(f"Run: {time.strftime('%Y-%m-%d %H:%M')} UTC, {cpu}, {os.cpu_count()} cores; median of {args.runs} runs; "
      f"seq {args.size_mb} MiB, random {args.random_seconds} s on {min(256, args.size_mb)} MiB")
others = [fs.name for fs in systems[1:]]
print("| metric | epochfs | " + " | ".join(others) + " | " + " | ".join(f"vs {n}" for n in others) + " |")
print("|---" * (1 + 2 * len(others) + 1) + "|")
for m in metrics:
    e = median["epochfs"][m]
    # Times: lower is better, so the ratio is epochfs/other (target <= 0.8 vs gocryptfs).
    fmt = (lambda v: f"{v:.2f}") if m.endswith(" s") else (lambda v: f"{v:.0f}")
    print(f"| {m} | {fmt(e)} | " + " | ".join(fmt(median[n][m]) if m in median[n] else "–" for n in others) + " | "
          + " | ".join(f"{e / median[n][m]:.2f}" if m in median[n] else "–" for n in others) + " |")
print("\nRatios are epochfs / other. For MB/s and IOPS higher is better; for seconds lower is better.")
print("Per-run values:", json.dumps(results))
for failure in failures:
    print("Failed (no figure for that run):", failure)
