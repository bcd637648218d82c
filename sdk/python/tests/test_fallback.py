"""exec against a daemon from before frames, which answers one JSON document (no daemon needed)."""
import http.server
import json
import os
import socketserver
import tempfile
import threading
import unittest

from tests import helpers  # noqa: F401 (puts the SDK on the path)

import nsbox


class _OldDaemon(http.server.BaseHTTPRequestHandler):
    """Answers every GET with a sandbox and every POST (an exec, whatever it Accepts) with one ExecResult as JSON."""

    def _answer(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._answer({"id": "box", "status": "running"})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.server.accepts.append(self.headers["Accept"])
        self._answer({"exitCode": 3, "stdout": "aGkK", "stdoutEncoding": "base64", "stderr": "oops\n",
                      "stderrEncoding": "utf-8", "stdoutTruncated": True, "truncated": True, "sessionId": "default"})

    def log_message(self, *args) -> None:
        pass


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def get_request(self):
        conn, _ = super().get_request()
        return conn, ("local", 0)  # BaseHTTPRequestHandler wants an address pair


class ExecFallbackTest(unittest.TestCase):
    def test_exec_from_a_daemon_without_frames(self):
        with tempfile.TemporaryDirectory() as d:
            server = _Server(os.path.join(d, "d.sock"), _OldDaemon)
            server.accepts = []
            threading.Thread(target=server.serve_forever, daemon=True).start()
            try:
                sb = nsbox.Client(host="unix://" + server.server_address, timeout=10).get_sandbox("box")
                res = sb.exec("x")
            finally:
                server.shutdown()
                server.server_close()
        self.assertEqual(server.accepts, ["application/x-nsbox-frames"])
        self.assertEqual((res.exit_code, res.stdout, res.stderr), (3, b"hi\n", b"oops\n"))
        self.assertEqual((res.stdout_encoding, res.stdout_truncated, res.truncated, res.session_id), ("base64", True, True, "default"))


if __name__ == "__main__":
    unittest.main()
