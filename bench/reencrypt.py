#!/usr/bin/env python3
"""Re-encryption speed beside the mount's sequential write speed, in one run (bench/reencrypt.sh).

Per run, on a new volume: fio writes 16 files of 64 MiB (1 GiB, 1 MiB blocks, fsync at the
end) through the mount, which is the sequential write figure; `rekey 2`, unmount, drop caches,
and `epochfs reencrypt BACKING` is timed (wall clock, process start to exit) over the 1 GiB.
Then, mounted again after `rekey 3`: fio random 4 KiB reads (psync, one job, SECONDS s) of a
256 MiB file, idle, and again while `reencrypt start` runs at its default rate. Each figure is
the median of RUNS runs.
"""
import argparse, os, shutil, statistics, subprocess, time

from benchfs import EpochFS, drop_caches, fio, sh

parser = argparse.ArgumentParser()
parser.add_argument("--epochfs", required=True)
parser.add_argument("--runs", type=int, default=3)
parser.add_argument("--files", type=int, default=16)
parser.add_argument("--file-mb", type=int, default=64)
parser.add_argument("--random-seconds", type=int, default=10)
parser.add_argument("--dir", default="/var/tmp/epochfs-bench-reencrypt")
args = parser.parse_args()


def control(fs, command):
    with open(os.path.join(fs.mnt, ".epochfs", "control"), "w") as f:
        f.write(command)


def one_run(work):
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(os.path.join(work, "keys"))
    for epoch in (1, 2, 3):
        with open(os.path.join(work, "keys", f"{epoch}.key"), "w") as f:
            f.write(os.urandom(32).hex())
    fs = EpochFS(work, args.epochfs)
    figures = {}
    total_mb = args.files * args.file_mb
    fs.mount()
    try:
        drop_caches()
        write = fio(fs.mnt, "data", "write", "1M", total_mb, [f"--nrfiles={args.files}", "--end_fsync=1"])
        figures["seq write MB/s"] = write["io_bytes"] / 1e6 / (write["runtime"] / 1000)
        control(fs, "rekey 2")
    finally:
        fs.unmount()
    drop_caches()
    started = time.monotonic()
    sh(args.epochfs, "reencrypt", fs.backing)
    figures["reencrypt MB/s"] = total_mb * 2**20 / 1e6 / (time.monotonic() - started)
    figures["reencrypt / seq write"] = figures["reencrypt MB/s"] / figures["seq write MB/s"]

    fs.mount()
    try:
        fio(fs.mnt, "rand", "write", "1M", 256)  # lay the file out first
        control(fs, "rekey 3")
        random_read = ["--time_based", f"--runtime={args.random_seconds}"]
        drop_caches()
        figures["rand read IOPS idle"] = fio(fs.mnt, "rand", "randread", "4k", 256, random_read)["iops"]
        drop_caches()
        control(fs, "reencrypt start")
        figures["rand read IOPS reencrypting"] = fio(fs.mnt, "rand", "randread", "4k", 256, random_read)["iops"]
        control(fs, "reencrypt stop")
        figures["rand read reencrypting / idle"] = figures["rand read IOPS reencrypting"] / figures["rand read IOPS idle"]
    finally:
        fs.unmount()
    shutil.rmtree(work, ignore_errors=True)
    return figures


runs = [one_run(args.dir) for _ in range(args.runs)]
print(f"{args.files} files of {args.file_mb} MiB, medians of {args.runs} runs")
for name in runs[0]:
    values = [run[name] for run in runs]
    print(f"{name:34} {statistics.median(values):10.2f}   (runs: {', '.join(f'{v:.2f}' for v in values)})")
