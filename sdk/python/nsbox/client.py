"""The synchronous client: Client, and the handles it returns (Sandbox, Session, Process, …)."""
from __future__ import annotations

import base64
import json
import os
from typing import Any, BinaryIO, Callable, Dict, Generic, Iterator, List, Mapping, Optional, Sequence, TypeVar, Union

from ._transport import Body, EventStream, Transport
from ._websocket import BINARY, TEXT
from .errors import ConditionNotMet, NotFound, NsboxError, error_for
from .models import (CodeContextInfo, Event, ExecEvent, ExecResult, ExposedPort, FileEvent, FileInfo, ImageInfo, ImageProgress,
                     ProcessEvent, ProcessInfo, ProcessLogs, PruneResult, RunCodeResult, SandboxInfo, SandboxStats, SessionInfo,
                     SessionToken, SnapshotInfo, TokenInfo, WaitResult, decode_data)

Command = Union[str, Sequence[str]]
Rules = Sequence[Mapping[str, str]]  # per-path permission rules: [{"pattern": "docs/**", "level": "read"}, …]
T = TypeVar("T")

# What exec keeps of each stream unless told (the API's default for an answer as JSON).
DEFAULT_MAX_OUTPUT_BYTES = 128 << 20


def _wire(**kw: Any) -> Dict[str, Any]:
    """A request body from keyword arguments: snake_case names to camelCase, None left out."""
    out = {}
    for k, v in kw.items():
        if v is None:
            continue
        first, *rest = k.split("_")
        out[first + "".join(p.title() for p in rest)] = v
    return out


def _command(cmd: Command) -> Dict[str, Any]:
    """A command as the API takes it: a string runs in the shell, a list is an argv."""
    if isinstance(cmd, str):
        return {"command": cmd}
    argv = list(cmd)
    if not argv:
        raise ValueError("empty argv: give a command string or a non-empty list")
    return {"argv": argv}


class Client:
    """A client of one nsbox daemon.

    ``Client()`` talks to the local unix socket (``$NSBOX_HOST`` or /run/nsbox/nsbox.sock);
    ``Client(host="https://HOST:PORT", token=..., ca="ca.pem")`` to a TCP listener over TLS.
    ``timeout`` bounds each socket operation in seconds (None: no bound).
    """

    def __init__(self, host: Optional[str] = None, token: Optional[str] = None, ca: Optional[str] = None,
                 timeout: Optional[float] = None) -> None:
        self._t = Transport(host, token, ca, timeout)
        self.snapshots = Snapshots(self._t)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Nothing to release: every request opens its own connection. Kept for symmetry."""

    def version(self) -> str:
        """The daemon's version."""
        return self._t.call("GET", "/v1/version")["version"]

    def images(self) -> List[Dict[str, Any]]:
        """The images sandboxes can be made from (built-in ones and the OCI images stored)."""
        return self._t.call("GET", "/v1/images")

    def pull_image(self, ref: str, *, auth: Optional[Mapping[str, str]] = None,
                   on_progress: Optional[Callable[[ImageProgress], None]] = None) -> ImageInfo:
        """Pulls an image from its registry (``alpine:3.20``, ``host:port/repo@sha256:…``) and
        returns it once stored. ``auth`` is the API's RegistryAuth (username/password,
        identityToken or registryToken); ``on_progress`` gets each layer's progress as it comes
        (on AsyncClient, from a worker thread)."""
        stream = self._t.events("POST", "/v1/images/pull", json_body=_wire(ref=ref, auth=dict(auth) if auth else None))
        try:
            for _, data in stream:
                if data.get("type") == "progress" and on_progress is not None:
                    on_progress(ImageProgress.from_wire(data))
                elif data.get("type") == "done":
                    return ImageInfo.from_wire(data.get("image"))
        finally:
            stream.close()
        raise error_for("unavailable", f"pull {ref}: the stream ended before the pull did")

    def import_images(self, archive: Body, *, name: Optional[str] = None, size: Optional[int] = None) -> List[ImageInfo]:
        """Stores the images of a ``docker save`` archive or an OCI layout tar (plain, gzip or
        zstd), given as bytes, a readable binary file or an iterable of chunks (streamed);
        ``name`` names an archive's one image."""
        res = self._t.call("POST", "/v1/images/import", query={"name": name}, body=archive, size=size)
        return [ImageInfo.from_wire(d) for d in res.get("images") or []]

    def get_image(self, name: str) -> ImageInfo:
        """An OCI image by name, digest or id (12 or more hex digits)."""
        return ImageInfo.from_wire(self._t.call("GET", "/v1/images/{name}", {"name": name}))

    def remove_image(self, name: str, force: bool = False) -> ImageInfo:
        """Removes an image, or only this name of an image that has several; an image a
        sandbox uses is a Conflict unless force (then only its names go). Returns it as it was."""
        return ImageInfo.from_wire(self._t.call("DELETE", "/v1/images/{name}", {"name": name}, query={"force": force}))

    def prune_images(self, all: bool = False) -> PruneResult:
        """Removes the dangling images no sandbox uses (all: every image no sandbox uses), then
        the layers no image references."""
        return PruneResult.from_wire(self._t.call("POST", "/v1/images/prune", query={"all": all}))

    def create_sandbox(self, *, id: Optional[str] = None, image: Optional[str] = None, env: Optional[Mapping[str, str]] = None,
                       cwd: Optional[str] = None, limits: Optional[Mapping[str, Any]] = None, labels: Optional[Mapping[str, str]] = None,
                       workspace: Optional[Mapping[str, Any]] = None, mounts: Optional[Sequence[Mapping[str, Any]]] = None,
                       network: Optional[Mapping[str, Any]] = None, lifecycle: Optional[Mapping[str, Any]] = None,
                       pull: Optional[str] = None, user: Optional[str] = None, run_entrypoint: Optional[bool] = None,
                       capabilities: Optional[Sequence[str]] = None, from_snapshot: Optional[str] = None,
                       permissions: Optional[Rules] = None) -> "Sandbox":
        """Creates a sandbox and returns it once it runs. Nested options (limits, workspace,
        mounts, network, lifecycle) are the API's JSON objects, e.g. ``limits={"memoryMB": 256}``.
        ``pull``: "never" (default), "missing" or "always" to pull the image first;
        ``from_snapshot``: a snapshot's id, whose files, env, sessions' state and more the
        sandbox starts with; ``permissions``: per-path rules such as
        ``[{"pattern": "docs/**", "level": "read"}]`` (levels none, view, read, write)."""
        body = _wire(id=id, image=image, env=env, cwd=cwd, limits=limits, labels=labels, workspace=workspace,
                     mounts=mounts, network=network, lifecycle=lifecycle, pull=pull, user=user,
                     run_entrypoint=run_entrypoint, capabilities=capabilities, from_snapshot=from_snapshot,
                     permissions=None if permissions is None else [dict(r) for r in permissions])
        return Sandbox(self._t, SandboxInfo.from_wire(self._t.call("POST", "/v1/sandboxes", json_body=body)))

    def sandbox(self, **options: Any) -> "Sandbox":
        """create_sandbox; use it as ``with client.sandbox(...) as sb:`` to remove it on exit."""
        return self.create_sandbox(**options)

    def get_sandbox(self, id: str) -> "Sandbox":
        """An existing sandbox."""
        return Sandbox(self._t, SandboxInfo.from_wire(self._t.call("GET", "/v1/sandboxes/{id}", {"id": id})))

    def list_sandboxes(self) -> List["Sandbox"]:
        """Every sandbox."""
        return [Sandbox(self._t, SandboxInfo.from_wire(d)) for d in self._t.call("GET", "/v1/sandboxes")]

    def remove_sandbox(self, id: str, force: bool = False) -> None:
        """Stops and removes a sandbox; force kills it without a grace period."""
        self._t.call("DELETE", "/v1/sandboxes/{id}", {"id": id}, query={"force": force})

    def create_token(self, sandbox: str, permission: str, ttl_seconds: int, session: Optional[str] = None) -> TokenInfo:
        """Mints a scoped token for a sandbox or one of its sessions (an admin call); its secret is ``.secret``."""
        body = _wire(sandbox=sandbox, session=session, permission=permission, ttl_seconds=ttl_seconds)
        return TokenInfo.from_wire(self._t.call("POST", "/v1/tokens", json_body=body))

    def list_tokens(self) -> List[TokenInfo]:
        """The scoped tokens that have not expired (without secrets)."""
        return [TokenInfo.from_wire(d) for d in self._t.call("GET", "/v1/tokens")]

    def revoke_token(self, id: str) -> None:
        """Revokes a token: its requests, streams and terminals are cut at once."""
        self._t.call("DELETE", "/v1/tokens/{tid}", {"tid": id})

    def stats(self) -> List[SandboxStats]:
        """Every sandbox's resource use, ordered by id."""
        return [SandboxStats.from_wire(d) for d in self._t.call("GET", "/v1/stats")]

    def follow_stats(self) -> "Feed[List[SandboxStats]]":
        """Every sandbox's resource use at once and then every second; ``close`` (or ``with``) ends it."""
        return Feed(self._t.events("GET", "/v1/stats", query={"stream": True}), lambda d: [SandboxStats.from_wire(x) for x in d])

    def follow_events(self, since: Optional[int] = None) -> "Feed[Event]":
        """The daemon's events as they happen; with ``since``, the kept events after that
        ``seq`` first (0: all kept). A reader that falls too far behind gets Unavailable:
        follow again with ``since`` the last ``seq`` read."""
        return Feed(self._t.events("GET", "/v1/events", query={"since": since}), Event.from_wire)

    def metrics(self) -> str:
        """The daemon's metrics in Prometheus's text format."""
        resp = self._t.send("GET", "/metrics", accept="text/plain")
        try:
            return resp.read().decode()
        finally:
            resp.close()


class Snapshots:
    """The daemon's snapshots (take one with ``sb.snapshot()``; make a sandbox from one with
    ``client.create_sandbox(from_snapshot=...)``)."""

    def __init__(self, t: Transport) -> None:
        self._t = t

    def list(self) -> List[SnapshotInfo]:
        """Every snapshot, oldest first."""
        return [SnapshotInfo.from_wire(d) for d in self._t.call("GET", "/v1/snapshots")]

    def get(self, id: str) -> SnapshotInfo:
        """One snapshot."""
        return SnapshotInfo.from_wire(self._t.call("GET", "/v1/snapshots/{id}", {"id": id}))

    def remove(self, id: str) -> None:
        """Removes a snapshot (a Conflict while a sandbox made from it exists)."""
        self._t.call("DELETE", "/v1/snapshots/{id}", {"id": id})


class Feed(Generic[T]):
    """A stream of the daemon's Server-Sent Events, each decoded: iterate over it; ``close``
    (or ``with``) ends it. An error the stream ends with is raised (NotFound once a followed
    sandbox is removed, Unavailable for a reader that fell behind)."""

    def __init__(self, events: EventStream, decode: Callable[[Any], T]) -> None:
        self._events, self._decode = events, decode

    def __iter__(self) -> Iterator[T]:
        try:
            for _, data in self._events:
                yield self._decode(data)
        except (OSError, ValueError):
            return  # closed while reading

    def __enter__(self) -> "Feed[T]":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Ends the stream."""
        self._events.close()


class Fork:
    """What a fork made: the ``snapshot`` it took and the ``sandboxes`` made from it, in order."""

    def __init__(self, snapshot: SnapshotInfo, sandboxes: List["Sandbox"]) -> None:
        self.snapshot, self.sandboxes = snapshot, sandboxes

    def __repr__(self) -> str:
        return f"Fork({self.snapshot.id!r}, {[sb.id for sb in self.sandboxes]!r})"


class _Runner:
    """exec and exec_stream, for a sandbox (its default session, or session_id) and a session."""

    _t: Transport
    id: str

    def _exec_route(self, session_id: Optional[str]) -> tuple:
        """The exec's (method, route, route parameters, session id for the body)."""
        raise NotImplementedError

    def _exec_body(self, cmd: Command, session_id: Optional[str], env: Optional[Mapping[str, str]], cwd: Optional[str],
                   stdin: Union[None, str, bytes], timeout_ms: Optional[int], kill_on_disconnect: Optional[bool],
                   max_output_bytes: Optional[int]) -> tuple:
        method, route, params, session_in_body = self._exec_route(session_id)
        body = {**_command(cmd), **_wire(env=env, cwd=cwd, timeout_ms=timeout_ms, kill_on_disconnect=kill_on_disconnect,
                                         max_output_bytes=max_output_bytes)}
        if session_in_body:
            body["sessionId"] = session_in_body
        if isinstance(stdin, bytes):
            body["stdin"], body["stdinEncoding"] = base64.b64encode(stdin).decode(), "base64"
        elif stdin is not None:
            body["stdin"] = stdin
        return method, route, params, body

    def exec(self, cmd: Command, *, session_id: Optional[str] = None, env: Optional[Mapping[str, str]] = None, cwd: Optional[str] = None,
             stdin: Union[None, str, bytes] = None, timeout_ms: Optional[int] = None, kill_on_disconnect: bool = True,
             max_output_bytes: Optional[int] = None) -> ExecResult:
        """Runs a command (a shell string, or an argv list) and returns its result. A command
        that runs past ``timeout_ms`` is stopped: ``result.timed_out``. A call that is
        interrupted (KeyboardInterrupt, the transport's timeout) closes its connection, which
        kills the command so that the session's next command does not wait behind it; with
        ``kill_on_disconnect=False`` it runs to its end instead. Each of stdout and stderr keeps
        at most ``max_output_bytes`` (default 128 MiB): ``result.stdout_truncated``,
        ``result.stderr_truncated`` say whether more was dropped. The output comes as raw bytes
        (frames), not JSON: ``stdout_encoding``/``stderr_encoding`` are "utf-8" (text) or "raw" (from a
        daemon that predates frames, which answers JSON: "utf-8" or "base64")."""
        method, route, params, body = self._exec_body(cmd, session_id, env, cwd, stdin, timeout_ms, kill_on_disconnect,
                                                      max_output_bytes or DEFAULT_MAX_OUTPUT_BYTES)
        # Each stream's payloads, joined once at the exit: growing one buffer and copying it
        # into the result touched every page twice more (100 MiB took ~1 s of CPU in page faults).
        out: Dict[str, List[bytes]] = {"stdout": [], "stderr": []}
        stream = self._t.frames(method, route, params, json_body=body)
        try:
            if (stream.resp.getheader("Content-Type") or "").startswith("application/json"):
                # A daemon from before frames answers one JSON document: the whole result.
                return ExecResult.from_wire(json.loads(stream.resp.read()))
            for event, payload in stream:
                if event in out:
                    out[event].append(payload)
                elif event == "exit":
                    res = ExecResult.from_wire(json.loads(payload).get("result"))
                    res.stdout, res.stderr = b"".join(out["stdout"]), b"".join(out["stderr"])
                    return res
        finally:
            stream.close()
        raise error_for("unavailable", "the exec's answer ended before the command did")

    def exec_stream(self, cmd: Command, *, session_id: Optional[str] = None, env: Optional[Mapping[str, str]] = None,
                    cwd: Optional[str] = None, stdin: Union[None, str, bytes] = None, timeout_ms: Optional[int] = None,
                    kill_on_disconnect: bool = True, max_output_bytes: Optional[int] = None) -> "ExecStream":
        """Runs a command and yields its events as they come ("start", "stdout", "stderr", then
        "exit" carrying ``.result``). Closing the stream early kills the command, unless
        ``kill_on_disconnect=False``: then it runs to its end. The output has no bound unless
        ``max_output_bytes`` (per stream) is given."""
        method, route, params, body = self._exec_body(cmd, session_id, env, cwd, stdin, timeout_ms, kill_on_disconnect,
                                                      max_output_bytes)
        return ExecStream(self._t.events(method, route, params, json_body=body))


class ExecStream:
    """The events of a streamed command; ``result`` is set once "exit" came."""

    def __init__(self, events: EventStream) -> None:
        self._events = events
        self.result: Optional[ExecResult] = None

    def __iter__(self) -> Iterator[ExecEvent]:
        try:
            for _, data in self._events:
                ev = ExecEvent.from_wire(data)
                if ev.type == "exit" and ev.result is not None:
                    self.result = ev.result
                yield ev
                if self.result is not None:
                    return
            raise NsboxError("the exec stream ended before the command did")
        finally:
            self._events.close()

    def __enter__(self) -> "ExecStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Stops reading the stream."""
        self._events.close()


class Sandbox(_Runner):
    """A sandbox. ``with`` removes it on exit; ``files``, ``processes`` and ``ports`` work in it."""

    def __init__(self, t: Transport, info: SandboxInfo) -> None:
        self._t, self.info, self.id = t, info, info.id
        self.files = Files(t, self.id, None)
        self.processes = Processes(t, self.id, None)
        self.ports = Ports(t, self.id)

    def __repr__(self) -> str:
        return f"Sandbox({self.id!r}, status={self.info.status!r})"

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove(force=True)

    def _exec_route(self, session_id: Optional[str]) -> tuple:
        return "POST", "/v1/sandboxes/{id}/exec", {"id": self.id}, session_id

    def refresh(self) -> SandboxInfo:
        """Reads the sandbox's record again (also kept in ``info``)."""
        self.info = SandboxInfo.from_wire(self._t.call("GET", "/v1/sandboxes/{id}", {"id": self.id}))
        return self.info

    def remove(self, force: bool = False) -> None:
        """Stops and removes the sandbox; force kills it without a grace period."""
        self._t.call("DELETE", "/v1/sandboxes/{id}", {"id": self.id}, query={"force": force})

    def pause(self) -> SandboxInfo:
        """Freezes every process of the sandbox."""
        self.info = SandboxInfo.from_wire(self._t.call("POST", "/v1/sandboxes/{id}/pause", {"id": self.id}))
        return self.info

    def resume(self) -> SandboxInfo:
        """Lets a paused sandbox run again, or starts a hibernated one again."""
        self.info = SandboxInfo.from_wire(self._t.call("POST", "/v1/sandboxes/{id}/resume", {"id": self.id}))
        return self.info

    def hibernate(self, memory: Optional[bool] = None) -> SandboxInfo:
        """Stops every process and frees the sandbox's memory, keeping its files, network and
        sessions' state (status "hibernated" until ``resume`` or any request that needs it).
        ``memory=True`` asks for a checkpoint of the processes' memory (CRIU), which a daemon
        without it refuses with InvalidArgument."""
        body = _wire(memory=memory) or None
        self.info = SandboxInfo.from_wire(self._t.call("POST", "/v1/sandboxes/{id}/hibernate", {"id": self.id}, json_body=body))
        return self.info

    def snapshot(self, name: Optional[str] = None) -> SnapshotInfo:
        """Snapshots the sandbox's files and sessions' state (and its image, env, labels,
        limits, cwd, user, network policy); it outlives the sandbox."""
        return SnapshotInfo.from_wire(self._t.call("POST", "/v1/sandboxes/{id}/snapshots", {"id": self.id},
                                                   json_body=_wire(name=name) or None))

    def fork(self, name: Optional[str] = None) -> "Sandbox":
        """A new sandbox made from a snapshot of this one (named ``name``): its files, env and
        sessions with their state, its own network address and writable layer."""
        return self.fork_many(1, name=name).sandboxes[0]

    def fork_many(self, count: int, prefix: Optional[str] = None, name: Optional[str] = None) -> Fork:
        """Snapshots the sandbox and makes ``count`` sandboxes from it (ids PREFIX-1 …
        PREFIX-COUNT when ``prefix`` is given); all are made or none."""
        res = self._t.call("POST", "/v1/sandboxes/{id}/fork", {"id": self.id}, json_body=_wire(count=count, prefix=prefix, name=name))
        return Fork(SnapshotInfo.from_wire(res.get("snapshot")),
                    [Sandbox(self._t, SandboxInfo.from_wire(d)) for d in res.get("sandboxes") or []])

    def set_permissions(self, rules: Rules) -> SandboxInfo:
        """Replaces the per-path rules of a sandbox created with ``permissions`` ([] is write
        everywhere); a sandbox created without any is a Conflict."""
        body = {"permissions": [dict(r) for r in rules]}
        self.info = SandboxInfo.from_wire(self._t.call("PATCH", "/v1/sandboxes/{id}/permissions", {"id": self.id}, json_body=body))
        return self.info

    def stats(self) -> SandboxStats:
        """The sandbox's resource use (reading it is not activity)."""
        return SandboxStats.from_wire(self._t.call("GET", "/v1/sandboxes/{id}/stats", {"id": self.id}))

    def follow_stats(self) -> Feed[SandboxStats]:
        """The sandbox's resource use at once and then every second, until ``close`` (or
        ``with``); removing the sandbox ends it with NotFound."""
        return Feed(self._t.events("GET", "/v1/sandboxes/{id}/stats", {"id": self.id}, query={"stream": True}), SandboxStats.from_wire)

    def session(self, id: Optional[str] = None, *, shell: Optional[str] = None, env: Optional[Mapping[str, str]] = None,
                cwd: Optional[str] = None, user: Optional[str] = None, permission: Optional[str] = None,
                permissions: Optional[Rules] = None) -> "Session":
        """Creates a session (a shell that keeps its cwd and exports); ``with`` deletes it on exit.
        ``permission`` "read" makes it read-only; ``permissions`` narrows the sandbox's
        per-path rules for this session only."""
        body = _wire(id=id, shell=shell, env=env, cwd=cwd, user=user, permission=permission,
                     permissions=None if permissions is None else [dict(r) for r in permissions])
        info = SessionInfo.from_wire(self._t.call("POST", "/v1/sandboxes/{id}/sessions", {"id": self.id}, json_body=body))
        return Session(self._t, self.id, info)

    create_session = session

    def get_session(self, id: str) -> "Session":
        """An existing session."""
        return Session(self._t, self.id, SessionInfo.from_wire(
            self._t.call("GET", "/v1/sandboxes/{id}/sessions/{sid}", {"id": self.id, "sid": id})))

    def list_sessions(self) -> List["Session"]:
        """The sandbox's sessions."""
        return [Session(self._t, self.id, SessionInfo.from_wire(d))
                for d in self._t.call("GET", "/v1/sandboxes/{id}/sessions", {"id": self.id})]

    def delete_session(self, id: str) -> None:
        """Ends a session and kills everything it started."""
        self._t.call("DELETE", "/v1/sandboxes/{id}/sessions/{sid}", {"id": self.id, "sid": id})

    def set_env(self, set: Optional[Mapping[str, str]] = None, unset: Optional[Sequence[str]] = None) -> SandboxInfo:
        """Sets and unsets variables of the sandbox's environment (new sessions and processes,
        and existing sessions at their next exec, see them)."""
        body = _wire(set=dict(set) if set else None, unset=list(unset) if unset else None)
        self.info = SandboxInfo.from_wire(self._t.call("PATCH", "/v1/sandboxes/{id}/env", {"id": self.id}, json_body=body))
        return self.info

    def set_network(self, mode: str, allow: Optional[Sequence[str]] = None) -> SandboxInfo:
        """Changes the sandbox's network mode (none, egress, or allowlist with ``allow``)."""
        body = _wire(mode=mode, allow=list(allow) if allow is not None else None)
        self.info = SandboxInfo.from_wire(self._t.call("PATCH", "/v1/sandboxes/{id}/network", {"id": self.id}, json_body=body))
        return self.info

    def terminal(self, session_id: str = "default", cursor: Optional[int] = None) -> "Terminal":
        """Attaches to a bash session's terminal (a WebSocket)."""
        return Terminal(self._t, self.id, session_id, cursor)

    def create_code_context(self, language: str = "python", *, cwd: Optional[str] = None, env: Optional[Mapping[str, str]] = None,
                            session_id: Optional[str] = None) -> "CodeContext":
        """Starts an interpreter ("python" or "javascript") that keeps its state between runs."""
        body = _wire(language=language, cwd=cwd, env=env, session_id=session_id)
        info = CodeContextInfo.from_wire(self._t.call("POST", "/v1/sandboxes/{id}/contexts", {"id": self.id}, json_body=body))
        return CodeContext(self._t, self.id, info)

    def list_code_contexts(self) -> List["CodeContext"]:
        """The sandbox's code contexts."""
        return [CodeContext(self._t, self.id, CodeContextInfo.from_wire(d))
                for d in self._t.call("GET", "/v1/sandboxes/{id}/contexts", {"id": self.id})]

    def run_code(self, code: str, *, context: Union[None, str, "CodeContext"] = None, language: str = "python",
                 timeout_ms: Optional[int] = None) -> RunCodeResult:
        """Runs code in a context (an id or CodeContext); without one, in a new context of
        ``language`` that is deleted afterwards."""
        if context is None:
            with self.create_code_context(language) as cc:
                return cc.run(code, timeout_ms=timeout_ms)
        cid = context.id if isinstance(context, CodeContext) else context
        return CodeContext(self._t, self.id, CodeContextInfo(id=cid)).run(code, timeout_ms=timeout_ms)

    def workspace_diff(self) -> List[Dict[str, Any]]:
        """What the sandbox changed in its copy-on-write workspace."""
        return self._t.call("GET", "/v1/sandboxes/{id}/workspace/diff", {"id": self.id})

    def export_workspace(self) -> BinaryIO:
        """The workspace's changes as a tar stream; close it when done."""
        return self._t.send("GET", "/v1/sandboxes/{id}/workspace/export", {"id": self.id}, accept="application/x-tar")  # type: ignore[return-value]

    def git_checkout(self, url: str, target_dir: str, *, branch: Optional[str] = None, depth: Optional[int] = None,
                     session_id: Optional[str] = None, token: Optional[str] = None) -> Dict[str, Any]:
        """Clones a repository into a directory of the sandbox (or fetches and checks out)."""
        body = _wire(url=url, target_dir=target_dir, branch=branch, depth=depth, session_id=session_id, token=token)
        return self._t.call("POST", "/v1/sandboxes/{id}/git/checkout", {"id": self.id}, json_body=body)


class Session(_Runner):
    """A session: a shell whose cwd, exports and functions persist between execs. ``with``
    deletes it on exit. ``files`` and ``processes`` work from the session (its cwd, user, env)."""

    def __init__(self, t: Transport, sandbox_id: str, info: SessionInfo) -> None:
        self._t, self.sandbox_id, self.info, self.id = t, sandbox_id, info, info.id
        self.files = Files(t, sandbox_id, self.id)
        self.processes = Processes(t, sandbox_id, self.id)

    def __repr__(self) -> str:
        return f"Session({self.sandbox_id!r}, {self.id!r})"

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self.delete()
        except NsboxError:
            pass  # the sandbox went first

    def _exec_route(self, session_id: Optional[str]) -> tuple:
        if session_id not in (None, self.id):
            raise ValueError(f"session {self.id!r} cannot exec in session {session_id!r}")
        return "POST", "/v1/sandboxes/{id}/sessions/{sid}/exec", {"id": self.sandbox_id, "sid": self.id}, None

    def refresh(self) -> SessionInfo:
        """Reads the session's record again (also kept in ``info``)."""
        self.info = SessionInfo.from_wire(self._t.call("GET", "/v1/sandboxes/{id}/sessions/{sid}", {"id": self.sandbox_id, "sid": self.id}))
        return self.info

    def cancel(self) -> None:
        """Stops the command the session is running, as a timeout would."""
        self._t.call("POST", "/v1/sandboxes/{id}/sessions/{sid}/cancel", {"id": self.sandbox_id, "sid": self.id})

    def create_token(self, permission: Optional[str] = None, ttl_seconds: Optional[int] = None) -> SessionToken:
        """Mints a short-lived token held to this session (default: the session's permission,
        15 minutes) with its API, terminal and web terminal URLs, e.g. to hand to a browser."""
        body = _wire(permission=permission, ttl_seconds=ttl_seconds) or None
        return SessionToken.from_wire(self._t.call("POST", "/v1/sandboxes/{id}/sessions/{sid}/tokens",
                                                   {"id": self.sandbox_id, "sid": self.id}, json_body=body))

    def delete(self) -> None:
        """Ends the session and kills everything it started."""
        self._t.call("DELETE", "/v1/sandboxes/{id}/sessions/{sid}", {"id": self.sandbox_id, "sid": self.id})

    def terminal(self, cursor: Optional[int] = None) -> "Terminal":
        """Attaches to the session's terminal (a bash session's)."""
        return Terminal(self._t, self.sandbox_id, self.id, cursor)

    def create_code_context(self, language: str = "python", *, cwd: Optional[str] = None,
                            env: Optional[Mapping[str, str]] = None) -> "CodeContext":
        """A code context with the session's user and working directory."""
        body = _wire(language=language, cwd=cwd, env=env, session_id=self.id)
        info = CodeContextInfo.from_wire(self._t.call("POST", "/v1/sandboxes/{id}/contexts", {"id": self.sandbox_id}, json_body=body))
        return CodeContext(self._t, self.sandbox_id, info)


class Files:
    """File operations in a sandbox; relative paths start at the sandbox's (or session's) cwd."""

    def __init__(self, t: Transport, sandbox_id: str, session_id: Optional[str]) -> None:
        self._t, self._id, self._session = t, sandbox_id, session_id

    def _q(self, **kw: Any) -> Dict[str, Any]:
        return {**kw, "sessionId": self._session}

    def open(self, path: str, offset: int = 0, length: Optional[int] = None) -> BinaryIO:
        """A readable stream of a file (from offset, length bytes or to the end); close it when done."""
        headers = {}
        if offset < 0 or (length is not None and length <= 0):
            raise ValueError(f"read {path}: invalid range: offset {offset}, length {length}")
        if length is not None:
            headers["Range"] = f"bytes={offset}-{offset + length - 1}"
        elif offset:
            headers["Range"] = f"bytes={offset}-"
        return self._t.send("GET", "/v1/sandboxes/{id}/files", {"id": self._id}, query=self._q(path=path), headers=headers,
                            accept="application/octet-stream")  # type: ignore[return-value]

    def read(self, path: str) -> bytes:
        """A whole file's bytes (use ``open`` or ``download`` for large files)."""
        with self.open(path) as f:
            return f.read()

    def read_text(self, path: str) -> str:
        """A whole file as UTF-8 text."""
        return self.read(path).decode()

    def download(self, path: str, dest: Union[str, BinaryIO]) -> int:
        """Streams a file into a local path or writable binary file; returns the bytes copied."""
        with self.open(path) as src:
            if isinstance(dest, str):
                with open(dest, "wb") as out:
                    return _copy(src, out)
            return _copy(src, dest)

    def write(self, path: str, data: Body, *, mode: Optional[int] = None, make_parents: bool = False, uid: Optional[int] = None,
              gid: Optional[int] = None, max_bytes: Optional[int] = None, size: Optional[int] = None) -> FileInfo:
        """Writes a file atomically from bytes, str, a readable binary file or an iterable of
        bytes chunks — streamed, never loaded whole; ``size`` (when known) lets the daemon refuse
        a too large upload up front. ``mode`` is Unix bits (0o644)."""
        q = self._q(path=path, mkdir=make_parents or None, mode=None if mode is None else f"{mode & 0o7777:04o}", uid=uid, gid=gid,
                    maxBytes=max_bytes)
        if data is None:
            data = b""
        return FileInfo.from_wire(self._t.call("PUT", "/v1/sandboxes/{id}/files", {"id": self._id}, query=q, body=data, size=size))

    def upload(self, local_path: str, path: str, **kw: Any) -> FileInfo:
        """Streams a local file into the sandbox."""
        with open(local_path, "rb") as f:
            return self.write(path, f, size=os.fstat(f.fileno()).st_size, **kw)

    def stat(self, path: str) -> FileInfo:
        """Describes a file (a missing one raises NotFound)."""
        return FileInfo.from_wire(self._t.call("GET", "/v1/sandboxes/{id}/files/stat", {"id": self._id}, query=self._q(path=path)))

    def exists(self, path: str) -> bool:
        """Whether path exists."""
        try:
            self.stat(path)
            return True
        except NotFound:
            return False

    def list(self, path: str = ".", depth: Optional[int] = None, hidden: bool = False) -> List[FileInfo]:
        """Lists a directory, down to depth levels (1: its entries)."""
        q = self._q(path=path, depth=depth, hidden=hidden)
        return [FileInfo.from_wire(d) for d in self._t.call("GET", "/v1/sandboxes/{id}/files/list", {"id": self._id}, query=q)]

    def mkdir(self, path: str, parents: bool = False, mode: Optional[int] = None) -> FileInfo:
        """Creates a directory (parents: missing ancestors too, and no error when it exists)."""
        body = _wire(path=path, parents=parents or None, mode=None if mode is None else f"{mode & 0o7777:04o}")
        return FileInfo.from_wire(self._t.call("POST", "/v1/sandboxes/{id}/files/mkdir", {"id": self._id}, query=self._q(), json_body=body))

    def move(self, src: str, dst: str, overwrite: bool = False) -> FileInfo:
        """Renames src to dst; an existing dst is a Conflict unless overwrite."""
        body = _wire(**{"from": src}, to=dst, overwrite=overwrite or None)
        return FileInfo.from_wire(self._t.call("POST", "/v1/sandboxes/{id}/files/move", {"id": self._id}, query=self._q(), json_body=body))

    def remove(self, path: str, recursive: bool = False) -> None:
        """Removes a file, symlink or empty directory; recursive: a directory and its content."""
        self._t.call("DELETE", "/v1/sandboxes/{id}/files", {"id": self._id}, query=self._q(path=path, recursive=recursive))

    def watch(self, path: str = ".", recursive: bool = False) -> "FileWatch":
        """Watches a directory; returns once the watch is in place. Iterate for FileEvents; close to end."""
        return FileWatch(self._t.events("GET", "/v1/sandboxes/{id}/files/watch", {"id": self._id},
                                        query=self._q(path=path, recursive=recursive)))


class FileWatch(Feed[FileEvent]):
    """A running watch: iterate over its FileEvents; ``close`` (or ``with``) ends it."""

    def __init__(self, events: EventStream) -> None:
        super().__init__(events, FileEvent.from_wire)


class Processes:
    """Long-running processes of a sandbox (started from a session's state when made by one)."""

    def __init__(self, t: Transport, sandbox_id: str, session_id: Optional[str]) -> None:
        self._t, self._id, self._session = t, sandbox_id, session_id

    def start(self, cmd: Command, *, id: Optional[str] = None, session_id: Optional[str] = None, env: Optional[Mapping[str, str]] = None,
              cwd: Optional[str] = None, user: Optional[str] = None, stdin: Optional[str] = None,
              log_bytes: Optional[int] = None, restart: Optional[str] = None) -> "Process":
        """Starts a process (a shell string, or an argv list); ``stdin="pipe"`` to write to it;
        ``restart="on-resume"`` starts it again when its hibernated sandbox resumes.
        A program that cannot start is a Process with status "failed" and its ``error``."""
        body = {**_command(cmd), **_wire(id=id, session_id=session_id or self._session, env=env, cwd=cwd, user=user,
                                         stdin=stdin, log_bytes=log_bytes, restart=restart)}
        return Process(self._t, self._id, ProcessInfo.from_wire(
            self._t.call("POST", "/v1/sandboxes/{id}/processes", {"id": self._id}, json_body=body)))

    def list(self, status: Optional[str] = None, session_id: Optional[str] = None) -> List["Process"]:
        """The sandbox's processes, filtered by status and session."""
        q = {"status": status, "sessionId": session_id or self._session}
        return [Process(self._t, self._id, ProcessInfo.from_wire(d))
                for d in self._t.call("GET", "/v1/sandboxes/{id}/processes", {"id": self._id}, query=q)]

    def get(self, id: str) -> "Process":
        """One process."""
        return Process(self._t, self._id, ProcessInfo.from_wire(
            self._t.call("GET", "/v1/sandboxes/{id}/processes/{pid}", {"id": self._id, "pid": id})))

    def kill(self, id: str, signal: Union[str, int] = "TERM", grace_ms: Optional[int] = None) -> ProcessInfo:
        """Signals a process's group (TERM, then KILL after grace_ms)."""
        return Process(self._t, self._id, ProcessInfo(id=id)).kill(signal, grace_ms)

    def kill_all(self, signal: Union[str, int] = "TERM", grace_ms: Optional[int] = None) -> List[ProcessInfo]:
        """Signals every running process."""
        body = _wire(signal=signal, grace_ms=grace_ms)
        return [ProcessInfo.from_wire(d) for d in self._t.call("POST", "/v1/sandboxes/{id}/processes/kill", {"id": self._id}, json_body=body)]

    def remove_finished(self) -> List[ProcessInfo]:
        """Forgets every process that has ended."""
        return [ProcessInfo.from_wire(d) for d in self._t.call("DELETE", "/v1/sandboxes/{id}/processes", {"id": self._id})]


class Process:
    """A process of a sandbox; ``info`` is its last known record."""

    def __init__(self, t: Transport, sandbox_id: str, info: ProcessInfo) -> None:
        self._t, self.sandbox_id, self.info, self.id = t, sandbox_id, info, info.id
        self._p = {"id": sandbox_id, "pid": self.id}

    def __repr__(self) -> str:
        return f"Process({self.id!r}, status={self.info.status!r})"

    @property
    def status(self) -> str:
        """The status last read: running, exited, killed or failed."""
        return self.info.status

    def refresh(self) -> ProcessInfo:
        """Reads the process's record again."""
        self.info = ProcessInfo.from_wire(self._t.call("GET", "/v1/sandboxes/{id}/processes/{pid}", self._p))
        return self.info

    def _wait(self, check: bool, **cond: Any) -> WaitResult:
        res = WaitResult.from_wire(self._t.call("POST", "/v1/sandboxes/{id}/processes/{pid}/wait", self._p, json_body=_wire(**cond)))
        if res.process is not None and res.process.id:
            self.info = res.process
        if check and not res.met:
            raise ConditionNotMet(f"process {self.id}: {res.condition} not met: {res.reason or 'timed out'}", res)
        return res

    def wait(self, timeout_ms: Optional[int] = None, check: bool = True) -> ProcessInfo:
        """Waits for the process to end and returns its record; raises ConditionNotMet on timeout (unless not check)."""
        self._wait(check, timeout_ms=timeout_ms)
        return self.info

    def wait_for_port(self, port: int, http_path: Optional[str] = None, timeout_ms: Optional[int] = None, check: bool = True) -> WaitResult:
        """Waits until the process's sandbox listens on port (answers http_path with a 2xx/3xx when given)."""
        return self._wait(check, port=port, http_path=http_path, timeout_ms=timeout_ms)

    def wait_for_log(self, pattern: str, timeout_ms: Optional[int] = None, cursor: Optional[int] = None, check: bool = True) -> WaitResult:
        """Waits for an output line matching the regular expression pattern; ``.match`` is the line."""
        return self._wait(check, log=pattern, cursor=cursor, timeout_ms=timeout_ms)

    def logs(self, cursor: int = 0, limit: Optional[int] = None) -> ProcessLogs:
        """The output after cursor (at most limit bytes)."""
        return ProcessLogs.from_wire(self._t.call("GET", "/v1/sandboxes/{id}/processes/{pid}/logs", self._p,
                                                  query={"cursor": cursor, "limit": limit}))

    def follow_logs(self, cursor: int = 0) -> "LogStream":
        """The output as it comes, until the process ends (then ``stream.process`` is its record)."""
        return LogStream(self._t.events("GET", "/v1/sandboxes/{id}/processes/{pid}/logs", self._p,
                                         query={"cursor": cursor, "follow": 1}))

    def kill(self, signal: Union[str, int] = "TERM", grace_ms: Optional[int] = None) -> ProcessInfo:
        """Signals the process's group (TERM, then KILL after grace_ms)."""
        self.info = ProcessInfo.from_wire(self._t.call("POST", "/v1/sandboxes/{id}/processes/{pid}/kill", self._p,
                                                       json_body=_wire(signal=signal, grace_ms=grace_ms)))
        return self.info

    def write_stdin(self, data: Union[bytes, str], close: bool = False) -> None:
        """Appends to the process's stdin (started with stdin="pipe"), closing it after when close."""
        self._t.call("POST", "/v1/sandboxes/{id}/processes/{pid}/stdin", self._p, query={"close": close}, body=data)

    def close_stdin(self) -> None:
        """Closes the process's stdin: it reads end-of-file."""
        self._t.call("DELETE", "/v1/sandboxes/{id}/processes/{pid}/stdin", self._p)

    def remove(self) -> None:
        """Forgets a process that has ended."""
        self._t.call("DELETE", "/v1/sandboxes/{id}/processes/{pid}", self._p)


class LogStream:
    """A process's followed output: iterate over ProcessEvents; ``process`` is set once it ended."""

    def __init__(self, events: EventStream) -> None:
        self._events = events
        self.process: Optional[ProcessInfo] = None

    def __iter__(self) -> Iterator[ProcessEvent]:
        try:
            for event, data in self._events:
                if data.get("type") == "exit":
                    self.process = ProcessInfo.from_wire(data.get("process"))
                    return
                yield ProcessEvent.from_wire(data)
        finally:
            self._events.close()

    def __enter__(self) -> "LogStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Stops following."""
        self._events.close()


class Ports:
    """Sandbox ports exposed on the host."""

    def __init__(self, t: Transport, sandbox_id: str) -> None:
        self._t, self._id = t, sandbox_id

    def expose(self, port: int, protocol: Optional[str] = None, host_port: Optional[int] = None, host_ip: Optional[str] = None,
               public: bool = False) -> ExposedPort:
        """Exposes a sandbox port on a host port (chosen by the daemon unless given)."""
        body = {"port": port, **_wire(protocol=protocol, host_port=host_port, public=public or None)}
        if host_ip is not None:
            body["hostIP"] = host_ip
        return ExposedPort.from_wire(self._t.call("POST", "/v1/sandboxes/{id}/ports", {"id": self._id}, json_body=body))

    def list(self) -> List[ExposedPort]:
        """The exposed ports."""
        return [ExposedPort.from_wire(d) for d in self._t.call("GET", "/v1/sandboxes/{id}/ports", {"id": self._id})]

    def unexpose(self, port: int, protocol: Optional[str] = None) -> None:
        """Stops exposing a port; connections through it are cut."""
        self._t.call("DELETE", "/v1/sandboxes/{id}/ports/{port}", {"id": self._id, "port": str(port)}, query={"protocol": protocol})


class CodeContext:
    """An interpreter in a sandbox that keeps its state between runs; ``with`` deletes it."""

    def __init__(self, t: Transport, sandbox_id: str, info: CodeContextInfo) -> None:
        self._t, self.sandbox_id, self.info, self.id = t, sandbox_id, info, info.id
        self._p = {"id": sandbox_id, "cid": self.id}

    def __enter__(self) -> "CodeContext":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.delete()

    def run(self, code: str, timeout_ms: Optional[int] = None) -> RunCodeResult:
        """Runs code; its last expression's value is in ``results`` (``.text``), an exception in ``error``."""
        return RunCodeResult.from_wire(self._t.call("POST", "/v1/sandboxes/{id}/contexts/{cid}/run", self._p,
                                                    json_body=_wire(code=code, timeout_ms=timeout_ms)))

    def run_stream(self, code: str, timeout_ms: Optional[int] = None) -> Iterator[Dict[str, Any]]:
        """Runs code and yields its events (stdout, stderr, result, exception, then end with the
        RunCodeResult as ``event["end"]``), output data decoded to bytes."""
        events = self._t.events("POST", "/v1/sandboxes/{id}/contexts/{cid}/run", self._p, json_body=_wire(code=code, timeout_ms=timeout_ms))
        try:
            for _, data in events:
                if "data" in data:
                    data["data"] = decode_data(data["data"], data.get("encoding"))
                if data.get("type") == "end":
                    data["end"] = RunCodeResult.from_wire(data.get("end"))
                yield data
                if data.get("type") == "end":
                    return
        finally:
            events.close()

    def delete(self) -> None:
        """Ends the context."""
        self._t.call("DELETE", "/v1/sandboxes/{id}/contexts/{cid}", self._p)


class Terminal:
    """A session's terminal over a WebSocket: ``read`` output, ``write`` input, ``resize``."""

    def __init__(self, t: Transport, sandbox_id: str, session_id: str, cursor: Optional[int]) -> None:
        self._ws = t.websocket("GET", "/v1/sandboxes/{id}/sessions/{sid}/terminal", {"id": sandbox_id, "sid": session_id},
                               {"cursor": cursor})
        self.notices: List[Dict[str, Any]] = []

    def __enter__(self) -> "Terminal":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def read(self) -> Optional[bytes]:
        """The next output (b"" after a notice, kept in ``notices``: "skipped", "ended", "error"); None once closed."""
        msg = self._ws.recv()
        if msg is None:
            return None
        kind, payload = msg
        if kind == BINARY:
            return payload
        self.notices.append(json.loads(payload))
        return b""

    def read_until(self, marker: bytes) -> bytes:
        """Reads output until it holds marker; returns all of it (raises EOFError if the terminal ends first)."""
        out = b""
        while marker not in out:
            chunk = self.read()
            if chunk is None:
                raise EOFError(f"the terminal ended before {marker!r}; got {out[-200:]!r}")
            out += chunk
        return out

    def write(self, data: Union[bytes, str]) -> None:
        """Types into the terminal."""
        self._ws.send(BINARY, data.encode() if isinstance(data, str) else data)

    def resize(self, cols: int, rows: int) -> None:
        """Sets the terminal's size."""
        self._ws.send(TEXT, json.dumps({"type": "resize", "cols": cols, "rows": rows}).encode())

    def close(self) -> None:
        """Detaches."""
        self._ws.close()


def _copy(src: Any, dst: Any) -> int:
    n = 0
    while True:
        chunk = src.read(1 << 20)
        if not chunk:
            return n
        dst.write(chunk)
        n += len(chunk)


__all__ = ["Client", "Sandbox", "Session", "Files", "FileWatch", "Processes", "Process", "LogStream", "Ports", "CodeContext",
           "Terminal", "ExecStream", "Snapshots", "Feed", "Fork"]
