"""The API's answers as typed objects; each keeps the whole JSON object it came from in ``raw``."""
from __future__ import annotations

import base64
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Type, TypeVar

T = TypeVar("T", bound="Model")


def _wire_name(f: "dataclasses.Field[Any]") -> str:
    if "wire" in f.metadata:
        return f.metadata["wire"]
    first, *rest = f.name.split("_")
    return first + "".join(p.title() for p in rest)


def decode_data(data: str, encoding: Optional[str]) -> bytes:
    """Output bytes from the API's (data, encoding) pair: utf-8 text, or base64 when not text."""
    return base64.b64decode(data) if encoding == "base64" else data.encode()


@dataclass
class Model:
    """Base of the answers: ``from_wire`` maps the API's camelCase fields to snake_case ones."""

    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_wire(cls: Type[T], d: Optional[Dict[str, Any]]) -> T:
        d = d or {}
        kw = {f.name: d[_wire_name(f)] for f in dataclasses.fields(cls) if f.name != "raw" and _wire_name(f) in d}
        obj = cls(**kw)
        obj.raw = d
        return obj


@dataclass
class SandboxInfo(Model):
    """A sandbox's record (GET /v1/sandboxes/{id})."""

    id: str = ""
    image: str = ""
    status: str = ""
    error: str = ""
    env: Dict[str, str] = field(default_factory=dict)
    cwd: str = ""
    user: str = ""
    limits: Dict[str, Any] = field(default_factory=dict)
    labels: Dict[str, str] = field(default_factory=dict)
    created_at: str = ""
    pid: int = 0
    network: Dict[str, Any] = field(default_factory=dict)
    lifecycle: Optional[Dict[str, Any]] = None
    workspace: Optional[Dict[str, Any]] = None
    mounts: List[Dict[str, Any]] = field(default_factory=list)
    capabilities: List[str] = field(default_factory=list)
    from_snapshot: str = ""  # the snapshot it was made from; "" when made from an image
    permissions: List[Dict[str, str]] = field(default_factory=list)  # its per-path rules ({"pattern", "level"})


@dataclass
class SessionInfo(Model):
    """A session's record."""

    id: str = ""
    shell: str = ""
    user: str = ""
    uid: int = 0
    gid: int = 0
    cwd: str = ""
    status: str = ""
    exit_code: int = 0
    pid: int = 0
    created_at: str = ""
    permission: str = ""
    private_dir: str = ""  # ~/.private of the session's user, "" without a private folder


@dataclass
class ExecResult(Model):
    """A finished command: ``stdout`` and ``stderr`` as bytes (``stdout_text``/``stderr_text`` as
    text), each decoded from its own wire encoding (``stdout_encoding``, ``stderr_encoding``:
    "utf-8" or "base64"; from ``exec``, which gets the bytes raw, "utf-8" or "raw"). ``stdout_truncated``/``stderr_truncated``: that stream had more than
    the exec's ``max_output_bytes`` and was cut; ``truncated`` is either."""

    exit_code: int = 0
    stdout: bytes = b""
    stderr: bytes = b""
    stdout_encoding: str = "utf-8"
    stderr_encoding: str = "utf-8"
    timed_out: bool = False
    canceled: bool = False
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    truncated: bool = False
    duration_ms: int = 0
    session_id: str = ""
    session_ended: bool = False
    session_reset: bool = False
    oom_killed: bool = False  # killed by the kernel for lack of memory (the sandbox's limit)

    @classmethod
    def from_wire(cls, d: Optional[Dict[str, Any]]) -> "ExecResult":
        r = super().from_wire(d)
        r.stdout = decode_data(r.raw.get("stdout", ""), r.stdout_encoding)
        r.stderr = decode_data(r.raw.get("stderr", ""), r.stderr_encoding)
        return r

    @property
    def stdout_text(self) -> str:
        """stdout decoded as UTF-8 (invalid bytes replaced)."""
        return self.stdout.decode(errors="replace")

    @property
    def stderr_text(self) -> str:
        """stderr decoded as UTF-8 (invalid bytes replaced)."""
        return self.stderr.decode(errors="replace")

    @property
    def text(self) -> str:
        """Same as stdout_text."""
        return self.stdout_text

    @property
    def ok(self) -> bool:
        """Whether the command exited 0 in time."""
        return self.exit_code == 0 and not self.timed_out


@dataclass
class ExecEvent(Model):
    """One event of a streamed command: ``type`` is "start", "stdout", "stderr" or "exit";
    ``data`` the output bytes; ``result`` the ExecResult on "exit"."""

    type: str = ""
    data: bytes = b""
    session_id: str = ""
    result: Optional[ExecResult] = None

    @classmethod
    def from_wire(cls, d: Optional[Dict[str, Any]]) -> "ExecEvent":
        ev = super().from_wire(d)
        ev.data = decode_data(ev.raw.get("data", ""), ev.raw.get("encoding"))
        ev.result = ExecResult.from_wire(ev.raw["result"]) if ev.raw.get("result") else None
        return ev


@dataclass
class FileInfo(Model):
    """A file's description."""

    name: str = ""
    path: str = ""
    type: str = ""
    size: int = 0
    mode: str = ""
    uid: int = 0
    gid: int = 0
    owner: str = ""
    group: str = ""
    mtime: str = ""
    link_target: str = ""

    @property
    def is_dir(self) -> bool:
        """Whether it is a directory."""
        return self.type == "dir"


@dataclass
class FileEvent(Model):
    """A change under a watched directory."""

    type: str = ""
    path: str = ""
    old_path: str = ""
    is_dir: bool = False


@dataclass
class ExposedPort(Model):
    """A sandbox port exposed on the host: fetch ``url`` (http://127.0.0.1:``host_port``)."""

    port: int = 0
    protocol: str = ""
    host_port: int = 0
    host_ip: str = field(default="", metadata={"wire": "hostIP"})
    url: str = ""
    public: bool = False
    token: str = ""


@dataclass
class ProcessInfo(Model):
    """A process's record."""

    id: str = ""
    pid: int = 0
    status: str = ""
    command: str = ""
    argv: List[str] = field(default_factory=list)
    session_id: str = ""
    user: str = ""
    cwd: str = ""
    stdin: str = ""
    exit_code: int = 0
    signal: str = ""
    error: str = ""
    oom_killed: bool = False  # killed by the kernel for lack of memory (the sandbox's limit)
    started_at: str = ""
    ended_at: str = ""
    log_bytes: int = 0
    log_end: int = 0


@dataclass
class ProcessEvent(Model):
    """A chunk of a process's output: ``type`` "stdout", "stderr" or "skipped"; ``data`` bytes."""

    type: str = ""
    data: bytes = b""
    cursor: int = 0
    skipped: int = 0

    @classmethod
    def from_wire(cls, d: Optional[Dict[str, Any]]) -> "ProcessEvent":
        ev = super().from_wire(d)
        ev.data = decode_data(ev.raw.get("data", ""), ev.raw.get("encoding"))
        return ev


@dataclass
class ProcessLogs(Model):
    """Output of a process after a cursor: ``chunks`` in order; ``stdout``/``stderr`` joined."""

    chunks: List[ProcessEvent] = field(default_factory=list)
    skipped: int = 0
    cursor: int = 0
    status: str = ""
    done: bool = False

    @classmethod
    def from_wire(cls, d: Optional[Dict[str, Any]]) -> "ProcessLogs":
        logs = super().from_wire(d)
        logs.chunks = [ProcessEvent.from_wire(c) for c in logs.raw.get("chunks") or []]
        return logs

    @property
    def stdout(self) -> bytes:
        """The stdout chunks joined."""
        return b"".join(c.data for c in self.chunks if c.type == "stdout")

    @property
    def stderr(self) -> bytes:
        """The stderr chunks joined."""
        return b"".join(c.data for c in self.chunks if c.type == "stderr")


@dataclass
class WaitResult(Model):
    """The answer of a process wait: ``met`` whether the condition held."""

    condition: str = ""
    met: bool = False
    timed_out: bool = False
    reason: str = ""
    match: str = ""
    cursor: int = 0
    process: Optional[ProcessInfo] = None

    @classmethod
    def from_wire(cls, d: Optional[Dict[str, Any]]) -> "WaitResult":
        w = super().from_wire(d)
        w.process = ProcessInfo.from_wire(w.raw.get("process"))
        return w


@dataclass
class CodeContextInfo(Model):
    """A code context's record."""

    id: str = ""
    language: str = ""
    cwd: str = ""
    user: str = ""
    created_at: str = ""


@dataclass
class RunCodeResult(Model):
    """A finished run of code: output, the rich ``results`` (MIME type → data), the ``error``."""

    stdout: str = ""
    stderr: str = ""
    stdout_encoding: str = "utf-8"  # each stream's wire encoding: "utf-8", or "base64" when not text
    stderr_encoding: str = "utf-8"
    results: List[Dict[str, Any]] = field(default_factory=list)
    error: Optional[Dict[str, str]] = None
    duration_ms: int = 0
    timed_out: bool = False
    restarted: bool = False
    truncated: bool = False

    @classmethod
    def from_wire(cls, d: Optional[Dict[str, Any]]) -> "RunCodeResult":
        r = super().from_wire(d)
        r.stdout = decode_data(r.raw.get("stdout", ""), r.stdout_encoding).decode(errors="replace")
        r.stderr = decode_data(r.raw.get("stderr", ""), r.stderr_encoding).decode(errors="replace")
        r.results = r.results or []
        return r

    @property
    def text(self) -> Optional[str]:
        """The text/plain form of the last result, if any."""
        for res in reversed(self.results):
            if "text/plain" in res:
                return str(res["text/plain"])
        return None


@dataclass
class TokenInfo(Model):
    """A scoped token (its secret only in the answer that minted it)."""

    id: str = ""
    secret: str = field(default="", metadata={"wire": "token"})
    sandbox: str = ""
    session: str = ""
    permission: str = ""
    expires_at: str = ""


@dataclass
class SessionToken(Model):
    """A token held to one session, with the URLs a browser or another client uses it on:
    ``api`` (the API's base URL), ``terminal`` (the terminal's WebSocket URL) and ``page`` (the
    daemon's web terminal, the token in its fragment)."""

    id: str = ""
    secret: str = field(default="", metadata={"wire": "token"})
    sandbox: str = ""
    session: str = ""
    permission: str = ""
    created_at: str = ""
    expires_at: str = ""
    api: str = ""
    terminal: str = ""
    page: str = ""


@dataclass
class ImageInfo(Model):
    """An OCI image stored by the daemon (GET /v1/images/{name}); ``config`` is its Env,
    WorkingDir, User, Entrypoint and Cmd."""

    id: str = ""
    names: List[str] = field(default_factory=list)
    repo_digests: List[str] = field(default_factory=list)
    digest: str = ""
    layers: List[str] = field(default_factory=list)
    size: int = 0
    platform: str = ""
    created: str = ""
    stored: str = ""
    config: Dict[str, Any] = field(default_factory=dict)


@dataclass
class ImageProgress(Model):
    """A layer's progress in a pull: ``status`` "downloading" (``current`` of ``total`` bytes),
    "exists" (already stored) or "done"."""

    layer: str = ""
    status: str = ""
    current: int = 0
    total: int = 0


@dataclass
class PruneResult(Model):
    """What a prune removed: image ids and layer digests."""

    images: List[str] = field(default_factory=list)
    layers: List[str] = field(default_factory=list)


@dataclass
class SnapshotInfo(Model):
    """A snapshot of a sandbox's files and sessions' state; make sandboxes from it with
    ``create_sandbox(from_snapshot=snapshot.id)``."""

    id: str = ""
    sandbox: str = ""
    name: str = ""
    image: str = ""
    layer: str = ""
    size_bytes: int = 0
    sessions: int = 0
    created_at: str = ""


@dataclass
class SandboxStats(Model):
    """A sandbox's resource use; ``network`` holds rxBytes, rxPackets, txBytes, txPackets.
    ``sessions``/``processes`` are None when the sandbox is not running or its agent did not say."""

    id: str = ""
    image: str = ""
    status: str = ""
    time: str = ""
    cpu_seconds: float = 0.0
    cpu_percent: float = 0.0
    memory_bytes: int = 0
    memory_limit_bytes: int = 0
    pids: int = 0
    oom_kills: int = 0
    disk_used_bytes: int = 0
    disk_limit_bytes: int = 0
    network: Dict[str, int] = field(default_factory=dict)
    sessions: Optional[int] = None
    processes: Optional[int] = None


@dataclass
class Event(Model):
    """Something that happened to a sandbox (``type`` such as "sandbox.created",
    "session.ended", "process.exited"); ``seq`` numbers them for ``follow_events(since=)``."""

    seq: int = 0
    time: str = ""
    type: str = ""
    sandbox: str = ""
    details: Dict[str, Any] = field(default_factory=dict)
