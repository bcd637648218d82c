"""HTTP to the daemon on the standard library: a unix socket, https with a token, or http on loopback."""
from __future__ import annotations

import http.client
import ipaddress
import json
import os
import socket
import ssl
from typing import Any, BinaryIO, Dict, Iterable, Iterator, Mapping, Optional, Tuple, Union
from urllib.parse import quote, urlencode, urlsplit

from ._websocket import WebSocket
from .errors import DaemonUnreachable, NsboxError, error_for

DEFAULT_SOCKET = "/run/nsbox/nsbox.sock"
_BLOCK = 1 << 20  # bytes per read and write of a streamed body

Body = Union[None, bytes, str, BinaryIO, Iterable[bytes]]


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: Optional[float]) -> None:
        super().__init__("nsbox", timeout=timeout, blocksize=_BLOCK)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if self.timeout is not None:
            sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class Transport:
    """How a client reaches its daemon; one connection per request (streams keep theirs)."""

    def __init__(self, host: Optional[str], token: Optional[str], ca: Optional[str], timeout: Optional[float]) -> None:
        host = host or os.environ.get("NSBOX_HOST") or "unix://" + DEFAULT_SOCKET
        token = token if token is not None else os.environ.get("NSBOX_TOKEN")
        ca = ca if ca is not None else os.environ.get("NSBOX_CA")
        self.host, self.token, self.timeout = host, token or None, timeout
        u = urlsplit(host)
        self.scheme = u.scheme
        self.ssl: Optional[ssl.SSLContext] = None
        if u.scheme == "unix":
            if not u.path or u.netloc:
                raise ValueError(f"host {host!r}: write a socket as unix:///PATH")
            self.socket_path = u.path
            return
        if u.scheme not in ("https", "http"):
            raise ValueError(f"host {host!r}: use unix:///PATH, https://HOST:PORT or http://127.0.0.1:PORT")
        if u.port is None or u.path not in ("", "/"):
            raise ValueError(f"host {host!r}: give HOST:PORT and no path")
        self.hostname, self.port = u.hostname or "", u.port
        if u.scheme == "http" and not _loopback(self.hostname):
            raise ValueError(f"host {host!r}: plain http only to a loopback address; use https://")
        if u.scheme == "https":
            self.ssl = ssl.create_default_context(cafile=ca) if ca else ssl.create_default_context()
            self.ssl.set_alpn_protocols(["http/1.1"])

    def connection(self, timeout: Optional[float] = None) -> http.client.HTTPConnection:
        """A new connection to the daemon (not yet connected)."""
        t = timeout if timeout is not None else self.timeout
        if self.scheme == "unix":
            return _UnixConnection(self.socket_path, t)
        if self.ssl is not None:
            return http.client.HTTPSConnection(self.hostname, self.port, timeout=t, context=self.ssl, blocksize=_BLOCK)
        return http.client.HTTPConnection(self.hostname, self.port, timeout=t, blocksize=_BLOCK)

    def websocket(self, method: str, route: str, params: Mapping[str, str], query: Optional[Mapping[str, Any]] = None) -> WebSocket:
        """Opens a WebSocket to route (method is always GET; named so every route is written with its method)."""
        if method != "GET":
            raise ValueError(f"a WebSocket is opened with GET, not {method}")
        conn = self.connection()
        try:
            conn.connect()
        except (OSError, ssl.SSLError) as e:
            raise DaemonUnreachable(f"cannot reach the nsbox daemon at {self.host}: {e}") from e
        assert conn.sock is not None
        host = "nsbox" if self.scheme == "unix" else f"{self.hostname}:{self.port}"
        return WebSocket(conn.sock, host, path_of(route, params, query), self.headers())

    def headers(self) -> Dict[str, str]:
        """Headers every request carries (the token)."""
        return {"Authorization": "Bearer " + self.token} if self.token else {}

    def send(self, method: str, route: str, params: Optional[Mapping[str, str]] = None, *, query: Optional[Mapping[str, Any]] = None,
             json_body: Any = None, body: Body = None, size: Optional[int] = None, headers: Optional[Mapping[str, str]] = None,
             accept: str = "application/json", timeout: Optional[float] = None) -> http.client.HTTPResponse:
        """Sends a request to route (a template such as /v1/sandboxes/{id}) and returns a 2xx
        response, unread; any other answer is raised as its NsboxError."""
        path = path_of(route, params or {}, query)
        # Connection: close hands the socket to the response: closing the response releases it.
        h = {"Accept": accept, "Host": "nsbox" if self.scheme == "unix" else f"{self.hostname}:{self.port}", "Connection": "close",
             **self.headers()}
        if headers:
            h.update(headers)
        data: Any = None
        if json_body is not None:
            data = json.dumps(json_body).encode()
            h["Content-Type"] = "application/json"
        elif body is not None:
            h["Content-Type"] = "application/octet-stream"
            data = body.encode() if isinstance(body, str) else body
            if isinstance(data, (bytes, bytearray, memoryview)):
                size = len(data)
            if size is not None:
                h["Content-Length"] = str(size)
            elif not hasattr(data, "read"):
                data = _chunks(data)
        conn = self.connection(timeout)
        try:
            try:
                conn.request(method, path, body=data, headers=h)  # no Content-Length: chunked
            except (BrokenPipeError, ConnectionResetError):
                if conn.sock is None:
                    raise
                # The daemon answered before reading the whole body (a refused upload): read that answer.
            resp = conn.getresponse()
        except (ConnectionRefusedError, FileNotFoundError, PermissionError) as e:
            conn.close()
            raise DaemonUnreachable(f"cannot reach the nsbox daemon at {self.host} (is `nsbox daemon` running, and are you root?): {e}") from e
        except (socket.timeout, TimeoutError) as e:
            conn.close()
            raise TimeoutError(f"{method} {path}: no answer from the nsbox daemon within {conn.timeout}s") from e
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise DaemonUnreachable(f"{method} {path}: cannot reach the nsbox daemon at {self.host}: {e}") from e
        if resp.status // 100 != 2:
            try:
                raise read_error(resp)
            finally:
                resp.close()
                conn.close()
        return resp

    def call(self, method: str, route: str, params: Optional[Mapping[str, str]] = None, **kw: Any) -> Any:
        """send, then decode the JSON answer (None for an empty one)."""
        resp = self.send(method, route, params, **kw)
        try:
            data = resp.read()
        finally:
            resp.close()
        return json.loads(data) if data.strip() else None

    def events(self, method: str, route: str, params: Optional[Mapping[str, str]] = None, **kw: Any) -> "EventStream":
        """send asking for Server-Sent Events, and return them as a stream."""
        return EventStream(self.send(method, route, params, accept="text/event-stream", **kw))

    def frames(self, method: str, route: str, params: Optional[Mapping[str, str]] = None, **kw: Any) -> "FrameStream":
        """send asking for frames (an exec's output as raw bytes), and return them as a stream."""
        return FrameStream(self.send(method, route, params, accept=FRAMES, **kw))


def path_of(route: str, params: Mapping[str, str], query: Optional[Mapping[str, Any]] = None) -> str:
    """A route template filled with its escaped parameters, and the query (None values left out)."""
    path = route
    for k, v in params.items():
        path = path.replace("{" + k + "}", quote(str(v), safe=""))
    if "{" in path:
        raise ValueError(f"route {route}: parameters missing from {dict(params)}")
    q = {k: _query_value(v) for k, v in (query or {}).items() if v is not None and v is not False}
    return path + ("?" + urlencode(q) if q else "")


def read_error(resp: http.client.HTTPResponse) -> NsboxError:
    """The exception of a non-2xx answer, keeping the server's code and message."""
    data = resp.read()
    try:
        e = json.loads(data)["error"]
        return error_for(e.get("code", ""), e.get("message", ""), resp.status)
    except (ValueError, KeyError, TypeError):
        return error_for("", f"{resp.status} {resp.reason}: {data[:200].decode(errors='replace')}", resp.status)


FRAMES = "application/x-nsbox-frames"


class FrameStream:
    """Frames of one response (the event name's length in 1 byte, the name, the payload's length
    in 4 bytes big-endian, the payload): iterate over (event, payload bytes) pairs; an "error"
    frame is raised."""

    def __init__(self, resp: http.client.HTTPResponse) -> None:
        self.resp = resp

    def _read(self, n: int) -> bytes:
        data = self.resp.read(n)
        if len(data) != n:
            raise error_for("unavailable", f"the exec's answer ended inside a frame ({len(data)} of {n} bytes)")
        return data

    def __iter__(self) -> Iterator[Tuple[str, bytes]]:
        while True:
            head = self.resp.read(1)
            if not head:
                return
            event = self._read(head[0]).decode()
            payload = self._read(int.from_bytes(self._read(4), "big"))
            if event == "error":
                e = json.loads(payload).get("error") or {}
                raise error_for(e.get("code", ""), e.get("message", "the exec failed"))
            yield event, payload

    def close(self) -> None:
        """Ends the stream (closing its connection)."""
        self.resp.close()


class EventStream:
    """Server-Sent Events of one response: iterate over (event, data) pairs; an "error" event is raised."""

    def __init__(self, resp: http.client.HTTPResponse) -> None:
        self.resp = resp

    def __iter__(self) -> Iterator[Tuple[str, Any]]:
        event, data = "", None
        while True:
            line = self.resp.readline()
            if not line:
                return
            line = line.rstrip(b"\r\n")
            if line.startswith(b"event: "):
                event = line[7:].decode()
            elif line.startswith(b"data: "):
                data = json.loads(line[6:])
            elif not line and data is not None:
                if event == "error":
                    e = data.get("error") or {}
                    raise error_for(e.get("code", ""), e.get("message", "the stream failed"))
                yield event, data
                event, data = "", None

    def close(self) -> None:
        """Ends the stream (closing its connection)."""
        self.resp.close()


def _chunks(data: Iterable[bytes]) -> Iterator[bytes]:
    for chunk in data:
        if chunk:
            yield chunk


def _query_value(v: Any) -> str:
    if v is True:
        return "true"
    return str(v)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
