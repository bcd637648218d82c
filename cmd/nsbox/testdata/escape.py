# Tries, from inside a sandbox as its root, what would break out of it or reach the host's
# kernel state, and prints one line for each attempt: "BLOCKED name: how" or "ESCAPED name:
# what happened". Run by TestEscapeSuite (escape_test.go) through the processes API.
import ctypes, errno, os, socket, stat, sys

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

# x86_64 syscall numbers
NR = {"pivot_root": 155, "unshare": 272, "setns": 308, "ptrace": 101, "keyctl": 250, "bpf": 321,
      "perf_event_open": 298, "userfaultfd": 323, "kexec_load": 246, "init_module": 175,
      "open_by_handle_at": 304, "mknodat": 259}


def report(name, ok, how):
    print(("ESCAPED " if ok else "BLOCKED ") + name + ": " + how, flush=True)


def syscall(name, *args):
    r = libc.syscall(NR[name], *args)
    e = ctypes.get_errno()
    report(name, r >= 0, "returned %d" % r if r >= 0 else errno.errorcode.get(e, str(e)))


def attempt(name, fn):
    try:
        what = fn()
        report(name, True, str(what))
    except OSError as e:
        report(name, False, errno.errorcode.get(e.errno, str(e.errno)))


def mount_tmpfs():
    r = libc.mount(b"none", b"/mnt", b"tmpfs", 0, None)
    if r != 0:
        raise OSError(ctypes.get_errno(), "mount")
    return "mounted"


def write(path, data=b"x"):
    def fn():
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        return "wrote " + path
    return fn


def read_some(path):
    def fn():
        with open(path, "rb") as f:
            data = f.read(4096)
        if not data:
            raise OSError(errno.ENODATA, "empty")
        return "read %d bytes" % len(data)
    return fn


def raw_socket():
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    s.close()
    return "opened"


def vsock():
    s = socket.socket(40, socket.SOCK_STREAM, 0)  # AF_VSOCK
    s.close()
    return "opened"


def vsock_upper_half():
    # socket()'s family is an int, whose register's upper half the kernel drops: a filter that
    # compared all 64 bits let AF_VSOCK through with an upper bit set.
    r = libc.syscall(41, ctypes.c_long(1 << 32 | 40), socket.SOCK_STREAM, 0)  # socket(AF_VSOCK)
    if r < 0:
        raise OSError(ctypes.get_errno(), "socket")
    os.close(r)
    return "opened"


def dev_nodes():
    # The only devices are runc's defaults (and what the kernel gives a pts mount): none of
    # the host's disks, memory, kernel log or hypervisor channels.
    allowed = {"null", "zero", "full", "random", "urandom", "tty", "ptmx", "console", "pts/ptmx"}
    found = []
    for root, dirs, files in os.walk("/dev"):
        for name in files:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, "/dev")
            st = os.lstat(path)
            if (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)) and rel not in allowed and not (rel.startswith("pts/") and rel[4:].isdigit()):
                found.append(rel)
    if found:
        return "device nodes %s" % found
    raise OSError(errno.ENOENT, "no other device nodes")


def chroot():
    os.chroot("/tmp")
    return "chrooted"


def mknod():
    os.mknod("/tmp/escape-sda", 0o600 | 0o060000, os.makedev(8, 0))
    return "made a block device"


attempt("mount", mount_tmpfs)
syscall("pivot_root", ctypes.c_char_p(b"/tmp"), ctypes.c_char_p(b"/tmp"))
syscall("unshare", 0x10000000)  # CLONE_NEWUSER
ns = os.open("/proc/1/ns/mnt", os.O_RDONLY) if os.path.exists("/proc/1/ns/mnt") else -1
syscall("setns", ns, 0)
syscall("ptrace", 16, 1, 0, 0)  # PTRACE_ATTACH to the agent
syscall("keyctl", 0, -3, 0)  # KEYCTL_GET_KEYRING_ID of the session keyring
syscall("bpf", 0, 0, 0)
syscall("perf_event_open", 0, 0, -1, -1, 0)
syscall("userfaultfd", 0)
syscall("kexec_load", 0, 0, 0, 0)
syscall("init_module", 0, 0, ctypes.c_char_p(b""))
syscall("open_by_handle_at", -100, 0, 0)
attempt("chroot", chroot)
attempt("mknod", mknod)
attempt("raw-socket", raw_socket)
attempt("vsock", vsock)
attempt("vsock-upper-half", vsock_upper_half)
attempt("write-proc-sys", write("/proc/sys/kernel/hostname"))
attempt("sysrq-trigger", write("/proc/sysrq-trigger", b"h"))
attempt("write-cgroupfs", write("/sys/fs/cgroup/pids/pids.max" if os.path.exists("/sys/fs/cgroup/pids") else "/sys/fs/cgroup/pids.max", b"max"))
attempt("read-kcore", read_some("/proc/kcore"))
attempt("read-keys", read_some("/proc/keys"))
attempt("read-kpageflags", read_some("/proc/kpageflags"))
attempt("read-slabinfo", read_some("/proc/slabinfo"))
attempt("read-config-gz", read_some("/proc/config.gz"))
attempt("dev-nodes", dev_nodes)
attempt("read-dev-kmsg", read_some("/dev/kmsg"))
attempt("read-dev-mem", read_some("/dev/mem"))
attempt("write-agent-exe", write("/proc/1/exe"))
attempt("write-self-exe-agent", write("/.nsbox/nsbox"))
# The agent's OOM score, raised to 1000, would make it the OOM killer's first choice.
attempt("agent-oom-score", write("/proc/1/oom_score_adj", b"1000"))
attempt("agent-task-oom-score", write("/proc/1/task/1/oom_score_adj", b"1000"))
def agent_fds():
    # Reaching one of the agent's open files (its listener, a host directory) is the
    # CVE-2024-21626 class; its fd numbers alone tell nothing.
    reached = []
    for fd in os.listdir("/proc/1/fd"):
        for how in (os.readlink, lambda p: os.close(os.open(p, os.O_RDONLY))):
            try:
                how("/proc/1/fd/" + fd)
                reached.append(fd)
            except OSError:
                pass
    if not reached:
        raise OSError(errno.EACCES, "none reachable")
    return "reached fds %s" % reached


attempt("agent-fds", agent_fds)
leaked = [fd for fd in os.listdir("/proc/self/fd") if int(fd) > 2 and os.path.exists("/proc/self/fd/" + fd)
          and not os.readlink("/proc/self/fd/" + fd).startswith("/proc/")]
report("inherited-fds", bool(leaked), "fds beyond 0-2: %s" % [(fd, os.readlink("/proc/self/fd/" + fd)) for fd in leaked])


def connect(host, port):
    def fn():
        s = socket.create_connection((host, int(port)), timeout=3)
        s.close()
        return "connected to %s:%s" % (host, port)
    return fn


# The test's listeners: a port of the host's 127.0.0.1, the host side of the veth (the gateway)
# and a port on it, another sandbox's address and a port it serves.
# Last, the pid of a session's shell (root, like this process, in a Landlock domain of its own).
# Then the host paths of the daemon's API socket and of the other sandbox's agent socket.
_, lo_port, gateway, gw_port, peer, peer_port, session_shell, daemon_sock, peer_agent_sock = sys.argv
r = libc.syscall(NR["ptrace"], 16, int(session_shell), 0, 0)  # PTRACE_ATTACH
report("ptrace-session", r >= 0, "returned %d" % r if r >= 0 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno())))
attempt("host-loopback-listener", connect("127.0.0.1", lo_port))
attempt("host-veth-listener", connect(gateway, gw_port))
attempt("other-sandbox", connect(peer, peer_port))


def connect_unix(path):
    def fn():
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
        finally:
            s.close()
        return "connected to " + path
    return fn


attempt("daemon-socket", connect_unix(daemon_sock))
attempt("other-sandbox-agent-socket", connect_unix(peer_agent_sock))
