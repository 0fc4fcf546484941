"""What bench/fs.py and bench/seqread.py share: the file systems they mount side by side and
the tools they run on them."""
import json, os, subprocess, time


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
    def __init__(self, work):
        self.mnt = os.path.join(work, "plain")
        os.makedirs(self.mnt)
    def mount(self): pass
    def unmount(self): pass


class FuseFS:
    def __init__(self, work, name):
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
    """A new volume, keyed by a key file `WORK/keys/1.key` made on first use."""
    def __init__(self, work, binary, name="epochfs", options=""):
        super().__init__(work, name)
        self.binary = binary
        self.options = ["-o", options] if options else []
        keys = os.path.join(work, "keys")
        if not os.path.exists(os.path.join(keys, "1.key")):
            os.makedirs(keys, exist_ok=True)
            with open(os.path.join(keys, "1.key"), "w") as f:
                f.write(os.urandom(32).hex())
        sh(binary, "init", self.backing, "--key-source", f"file:{keys}/%d.key")
    def mount(self):
        sh(self.binary, "mount", self.backing, self.mnt, *self.options)
        wait_mounted(self.mnt)
    def transport(self):
        """The FUSE transport the mount serves on (io_uring or dev_fuse); builds before the ring
        do not report one."""
        try:
            return json.loads(sh(self.binary, "status", self.mnt, "--json").stdout)["transport"]["kind"]
        except (subprocess.CalledProcessError, KeyError, ValueError):
            return "dev_fuse (not reported)"


class GocryptFS(FuseFS):
    def __init__(self, work):
        super().__init__(work, "gocryptfs")
        os.makedirs(self.backing)
        self.passfile = os.path.join(work, "gocryptfs.pass")
        with open(self.passfile, "w") as f:
            f.write("benchmark passphrase\n")
        sh("gocryptfs", "-q", "-init", "-scryptn", "10", "-passfile", self.passfile, self.backing)
    def mount(self):
        sh("gocryptfs", "-q", "-passfile", self.passfile, self.backing, self.mnt)
        wait_mounted(self.mnt)


class BindFS(FuseFS):
    def __init__(self, work):
        super().__init__(work, "bindfs")
        os.makedirs(self.backing)
    def mount(self):
        # Debian's bindfs uses libfuse2: without big_writes every write request is 4 KiB.
        sh("bindfs", "-o", "big_writes", self.backing, self.mnt)
        wait_mounted(self.mnt)


class PassthroughHP(FuseFS):
    """libfuse's low-level example (example/passthrough_hp.cc of the installed libfuse, built
    outside the repository): a plaintext passthrough with its defaults (writeback cache,
    keep_cache, 86,400 s timeouts, splice)."""
    def __init__(self, work, binary):
        super().__init__(work, "passthrough_hp")
        os.makedirs(self.backing)
        self.binary = binary
    def mount(self):
        sh(self.binary, self.backing, self.mnt)
        wait_mounted(self.mnt)


def fio(directory, name, rw, bs, size_mb, extra=()):
    out = sh("fio", "--name=" + name, "--directory=" + directory, "--rw=" + rw, "--bs=" + bs, f"--size={size_mb}M",
             "--ioengine=psync", "--numjobs=1", "--group_reporting", "--output-format=json", *extra).stdout
    job = json.loads(out)["jobs"][0]
    return job["read" if "read" in rw else "write"]
