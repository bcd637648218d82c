"""A small WebSocket client (RFC 6455) on the standard library, for session terminals."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import struct
from typing import Mapping, Optional, Tuple

from .errors import NsboxError, error_for

_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA


class WebSocket:
    """One client WebSocket over an already connected socket."""

    def __init__(self, sock: socket.socket, host: str, path: str, headers: Mapping[str, str]) -> None:
        self.sock = sock
        self._buf = b""
        self.closed = False
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}", "Upgrade: websocket", "Connection: Upgrade",
                 f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13", "Origin: http://localhost"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = self._read_until(b"\r\n\r\n")
        status_line, _, rest = head.partition(b"\r\n")
        parts = status_line.split(b" ", 2)
        status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        if status != 101:
            raise self._refusal(status, rest)
        accept = base64.b64encode(hashlib.sha1((key + _GUID).encode()).digest()).decode()
        answered = {}
        for line in rest.split(b"\r\n"):
            name, _, value = line.partition(b":")
            answered[name.strip().lower()] = value.strip().decode(errors="replace")
        if answered.get(b"sec-websocket-accept") != accept:
            raise NsboxError("the daemon's WebSocket handshake answered a wrong Sec-WebSocket-Accept")

    def _refusal(self, status: int, rest: bytes) -> NsboxError:
        """The error of a refused upgrade: the daemon answers an API error as JSON."""
        headers, _, body = rest.partition(b"\r\n\r\n")
        length = 0
        for line in headers.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(body) < length:
            more = self.sock.recv(length - len(body))
            if not more:
                break
            body += more
        self.sock.close()
        try:
            e = json.loads(body)["error"]
            return error_for(e.get("code", ""), e.get("message", ""), status)
        except (ValueError, KeyError, TypeError):
            return error_for("", f"WebSocket upgrade refused: HTTP {status}", status)

    def _read_until(self, marker: bytes) -> bytes:
        while marker not in self._buf:
            more = self.sock.recv(65536)
            if not more:
                raise NsboxError("the daemon closed the connection during the WebSocket handshake")
            self._buf += more
        head, _, self._buf = self._buf.partition(marker)
        return head

    def _read_exact(self, n: int) -> bytes:
        while len(self._buf) < n:
            more = self.sock.recv(max(65536, n - len(self._buf)))
            if not more:
                raise EOFError("the WebSocket connection ended")
            self._buf += more
        data, self._buf = self._buf[:n], self._buf[n:]
        return data

    def send(self, opcode: int, payload: bytes) -> None:
        """Sends one frame, masked as a client must."""
        header = bytes([0x80 | opcode])
        n = len(payload)
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def recv(self) -> Optional[Tuple[int, bytes]]:
        """The next message as (opcode, payload), answering pings; None once the connection closed."""
        message, kind = b"", 0
        while True:
            try:
                b0, b1 = self._read_exact(2)
            except (EOFError, OSError):
                self.closed = True
                return None
            fin, opcode, n = b0 & 0x80, b0 & 0x0F, b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._read_exact(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._read_exact(8))[0]
            mask = self._read_exact(4) if b1 & 0x80 else b""
            payload = self._read_exact(n)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if opcode == PING:
                self.send(PONG, payload)
                continue
            if opcode == PONG:
                continue
            if opcode == CLOSE:
                self.close()
                return None
            if opcode:
                kind = opcode
            message += payload
            if fin:
                return kind, message

    def close(self) -> None:
        """Sends a close frame (once) and closes the socket."""
        if not self.closed:
            self.closed = True
            try:
                self.send(CLOSE, struct.pack("!H", 1000))
            except OSError:
                pass
        self.sock.close()
