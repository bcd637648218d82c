"""The synchronous client against the real daemon: every call, streams, errors, timeouts, large files."""
import hashlib
import io
import os
import tracemalloc
import unittest
import urllib.request

from tests.helpers import client, name, needs_daemon

import nsbox


@needs_daemon
class SandboxTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.c = client()
        cls.sb = cls.c.create_sandbox(id=name("py"), env={"FROM_CREATE": "yes"}, labels={"suite": "python"},
                                      limits={"memoryMB": 512})

    @classmethod
    def tearDownClass(cls):
        cls.sb.remove(force=True)

    def test_version_and_images(self):
        self.assertTrue(self.c.version())
        self.assertIn("host", [i["name"] for i in self.c.images()])

    def test_sandbox_records(self):
        self.assertEqual(self.sb.info.status, "running")
        self.assertEqual(self.sb.info.labels, {"suite": "python"})
        self.assertEqual(self.c.get_sandbox(self.sb.id).info.env.get("FROM_CREATE"), "yes")
        self.assertIn(self.sb.id, [s.id for s in self.c.list_sandboxes()])
        self.assertEqual(self.sb.refresh().limits.get("memoryMB"), 512)

    def test_exec(self):
        res = self.sb.exec("echo out; echo err >&2; exit 3")
        self.assertEqual((res.stdout, res.stderr, res.exit_code, res.timed_out), (b"out\n", b"err\n", 3, False))
        self.assertEqual(res.stdout_text, "out\n")
        self.assertEqual(self.sb.exec(["printf", "%s", "a b"]).text, "a b")
        binary = self.sb.exec("printf '\\377\\000'; echo text >&2")
        self.assertEqual(binary.stdout, b"\xff\x00")
        # Each stream in its own encoding: binary stdout, text stderr.
        self.assertEqual((binary.stdout_encoding, binary.stderr_encoding, binary.stderr), ("raw", "utf-8", b"text\n"))
        # Large, binary and both streams at once come back whole (as raw frames).
        big = self.sb.exec("head -c 3000000 /dev/urandom > /tmp/r; cat /tmp/r; printf '\\377e' >&2")
        digest = self.sb.exec("sha256sum /tmp/r").text.split()[0]
        self.assertEqual((len(big.stdout), hashlib.sha256(big.stdout).hexdigest(), big.stderr), (3000000, digest, b"\xffe"))
        capped = self.sb.exec("printf 0123456789; printf ab >&2", max_output_bytes=4)
        self.assertEqual((capped.stdout, capped.stderr), (b"0123", b"ab"))
        self.assertEqual((capped.stdout_truncated, capped.stderr_truncated, capped.truncated), (True, False, True))
        self.assertEqual(self.sb.exec("cat", stdin=b"\x00\x01raw").stdout, b"\x00\x01raw")
        self.assertEqual(self.sb.exec("echo $X; pwd", env={"X": "1"}, cwd="/tmp").text, "1\n/tmp\n")

    def test_exec_timeout(self):
        res = self.sb.exec("sleep 30", timeout_ms=300)
        self.assertTrue(res.timed_out)
        self.assertFalse(res.ok)

    def test_exec_stream(self):
        stream = self.sb.exec_stream("for i in 1 2 3; do echo $i; done; echo e >&2; exit 4")
        events = list(stream)
        out = b"".join(e.data for e in events if e.type == "stdout")
        self.assertEqual(out, b"1\n2\n3\n")
        self.assertEqual(b"".join(e.data for e in events if e.type == "stderr"), b"e\n")
        self.assertEqual(events[-1].type, "exit")
        self.assertEqual(events[-1].result.exit_code, 4)
        self.assertEqual(stream.result.exit_code, 4)
        capped = self.sb.exec_stream("printf 0123456789", max_output_bytes=4)
        self.assertEqual(b"".join(e.data for e in capped if e.type == "stdout"), b"0123")
        self.assertTrue(capped.result.stdout_truncated)

    def test_errors(self):
        with self.assertRaises(nsbox.NotFound) as cm:
            self.c.get_sandbox("no-such-sandbox")
        self.assertIn("no-such-sandbox", cm.exception.message)
        self.assertEqual(cm.exception.code, "not_found")
        with self.assertRaises(nsbox.Conflict):
            self.c.create_sandbox(id=self.sb.id)
        with self.assertRaises(nsbox.InvalidArgument):
            self.c.create_sandbox(id="bad id!")
        with self.assertRaises(nsbox.NotFound):
            self.sb.files.read("/no/such/file")
        with self.assertRaises(nsbox.NsboxError):
            self.sb.processes.get("p-none")
        with self.assertRaises(ValueError):
            nsbox.Client(host="ftp://x")
        with self.assertRaises(ValueError):
            nsbox.Client(host="http://10.0.0.1:80")
        with self.assertRaises(nsbox.DaemonUnreachable):
            nsbox.Client(host="unix:///nonexistent/nsbox.sock").version()

    def test_sessions(self):
        with self.sb.session(id="work", env={"S": "1"}, cwd="/tmp") as s:
            s.exec("cd /workspace && export KEPT=yes && f() { echo fn; }")
            self.assertEqual(s.exec("pwd; echo $KEPT $S; f").text, "/workspace\nyes 1\nfn\n")
            self.assertEqual(self.sb.get_session("work").info.cwd, "/workspace")
            self.assertIn("work", [x.id for x in self.sb.list_sessions()])
            self.assertEqual(self.sb.exec("pwd", session_id="work").text, "/workspace\n")
            # Session-bound files: relative to its cwd.
            s.files.write("from-session.txt", b"hi")
            self.assertEqual(self.sb.files.read("/workspace/from-session.txt"), b"hi")
            self.sb.files.remove("/workspace/from-session.txt")
            self.assertEqual([e.type for e in s.exec_stream("echo x")][-1], "exit")
        with self.assertRaises(nsbox.NotFound):
            self.sb.get_session("work")

    def test_session_cancel(self):
        with self.sb.session() as s:
            stream = s.exec_stream("sleep 30")
            it = iter(stream)
            self.assertEqual(next(it).type, "start")
            s.cancel()
            rest = list(it)
            self.assertTrue(rest[-1].result.canceled)

    def test_files(self):
        f = self.sb.files
        info = f.write("/tmp/dir/a.txt", "hello", make_parents=True, mode=0o600)
        self.assertEqual((info.size, info.mode, info.name), (5, "0600", "a.txt"))
        self.assertEqual(f.read_text("/tmp/dir/a.txt"), "hello")
        with f.open("/tmp/dir/a.txt", offset=1, length=3) as r:
            self.assertEqual(r.read(), b"ell")
        self.assertTrue(f.stat("/tmp/dir").is_dir)
        self.assertTrue(f.exists("/tmp/dir/a.txt"))
        self.assertFalse(f.exists("/tmp/dir/none"))
        f.mkdir("/tmp/dir/sub/deep", parents=True)
        self.assertEqual(sorted(e.name for e in f.list("/tmp/dir")), ["a.txt", "sub"])
        self.assertEqual(len(f.list("/tmp/dir", depth=3)), 3)
        f.write("/tmp/dir/b.txt", io.BytesIO(b"from a file object"))
        with self.assertRaises(nsbox.Conflict):
            f.move("/tmp/dir/a.txt", "/tmp/dir/b.txt")
        f.move("/tmp/dir/a.txt", "/tmp/dir/b.txt", overwrite=True)
        self.assertEqual(f.read("/tmp/dir/b.txt"), b"hello")
        with self.assertRaises(nsbox.PayloadTooLarge):
            f.write("/tmp/dir/big", b"x" * 100, max_bytes=10)
        with self.assertRaises(nsbox.NsboxError):
            f.remove("/tmp/dir")
        f.remove("/tmp/dir", recursive=True)
        self.assertFalse(f.exists("/tmp/dir"))

    def test_watch(self):
        self.sb.files.mkdir("/tmp/watched")
        with self.sb.files.watch("/tmp/watched") as w:
            self.sb.files.write("/tmp/watched/new", b"x")
            for ev in w:
                if ev.path == "/tmp/watched/new":
                    break
        self.assertFalse(ev.is_dir)

    def test_large_file_streamed(self):
        """100 MB up and down, counted and hashed, with the SDK's Python allocations staying far below it."""
        size, chunk = 100 << 20, bytes(range(256)) * 4096  # 1 MiB

        def chunks():
            for _ in range(size // len(chunk)):
                yield chunk

        want = hashlib.sha256()
        for c in chunks():
            want.update(c)
        tracemalloc.start()
        try:
            info = self.sb.files.write("/tmp/big.bin", chunks())
            self.assertEqual(info.size, size)
            got, n = hashlib.sha256(), 0
            with self.sb.files.open("/tmp/big.bin") as r:
                while True:
                    b = r.read(1 << 20)
                    if not b:
                        break
                    got.update(b)
                    n += len(b)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        self.assertEqual((n, got.hexdigest()), (size, want.hexdigest()))
        self.assertLess(peak, 16 << 20, "the SDK held more than 16 MiB at once while streaming 100 MiB")
        self.sb.files.remove("/tmp/big.bin")

    def test_processes(self):
        p = self.sb.processes.start("echo started; read line; echo got $line; echo oops >&2; exit 7", id="reader", stdin="pipe")
        self.assertEqual(p.id, "reader")
        p.wait_for_log("started")
        p.write_stdin("hello\n", close=True)
        info = p.wait(timeout_ms=10000)
        self.assertEqual((info.status, info.exit_code), ("exited", 7))
        logs = p.logs()
        self.assertEqual((logs.stdout, logs.stderr), (b"started\ngot hello\n", b"oops\n"))
        self.assertIn("reader", [x.id for x in self.sb.processes.list()])
        follow = p.follow_logs()
        self.assertEqual(b"".join(e.data for e in follow if e.type == "stdout"), b"started\ngot hello\n")
        self.assertEqual(follow.process.exit_code, 7)
        p.remove()
        with self.assertRaises(nsbox.NotFound):
            self.sb.processes.get("reader")

        sleeper = self.sb.processes.start(["sleep", "60"])
        with self.assertRaises(nsbox.ConditionNotMet) as cm:
            sleeper.wait(timeout_ms=200)
        self.assertTrue(cm.exception.result.timed_out)
        self.assertEqual(sleeper.kill(signal="KILL").id, sleeper.id)
        self.assertEqual(sleeper.wait().status, "killed")
        self.assertIn(sleeper.id, [x.id for x in self.sb.processes.remove_finished()])
        failed = self.sb.processes.start(["/no/such/program"])
        self.assertEqual(failed.status, "failed")
        self.assertTrue(failed.info.error)

    def test_env_and_network(self):
        self.sb.set_env({"ADDED": "1", "GONE": "x"})
        self.assertEqual(self.sb.set_env(unset=["GONE"]).env.get("ADDED"), "1")
        with self.sb.session(id="envcheck"):
            self.assertEqual(self.sb.exec("echo ${ADDED}-${GONE:-gone}", session_id="envcheck").text, "1-gone\n")
        self.assertEqual(self.sb.set_network("none").network["mode"], "none")
        self.assertEqual(self.sb.set_network("egress").network["mode"], "egress")

    def test_ports(self):
        web = self.sb.processes.start(["python3", "-m", "http.server", "8000", "--bind", "0.0.0.0", "--directory", "/etc"])
        try:
            web.wait_for_port(8000, timeout_ms=20000)
            p = self.sb.ports.expose(8000)
            self.assertTrue(p.url.startswith("http://127.0.0.1:"))
            self.assertEqual(p.url, f"http://127.0.0.1:{p.host_port}")
            with urllib.request.urlopen(p.url + "/hostname", timeout=30) as resp:
                self.assertEqual(resp.status, 200)
            self.assertEqual([x.port for x in self.sb.ports.list()], [8000])
            self.sb.ports.unexpose(8000)
            self.assertEqual(self.sb.ports.list(), [])
        finally:
            web.kill(signal="KILL")

    def test_terminal(self):
        with self.sb.session(id="tty", shell="bash") as s:
            with s.terminal() as term:
                term.resize(100, 30)
                term.write("echo $((6*7))-$COLUMNS\r")
                term.read_until(b"42-100")

    def test_code_contexts(self):
        with self.sb.create_code_context("python", cwd="/tmp") as cc:
            self.assertEqual(cc.info.cwd, "/tmp")
            cc.run("x = 41")
            self.assertEqual(cc.run("print('hi'); x + 1").text, "42")
            self.assertEqual(cc.run("print('hi')").stdout, "hi\n")
            mixed = cc.run("import sys; print('t'); sys.stdout.flush(); sys.stderr.buffer.write(b'\\xff'); sys.stderr.flush()")
            self.assertEqual((mixed.stdout, mixed.stdout_encoding, mixed.stderr_encoding), ("t\n", "utf-8", "base64"))
            self.assertEqual(cc.run("1/0").error["name"], "ZeroDivisionError")
            self.assertTrue(cc.run("while True: pass", timeout_ms=300).timed_out)
            events = list(cc.run_stream("print('streamed'); 7"))
            self.assertEqual(events[-1]["type"], "end")
            self.assertIn(b"streamed\n", [e.get("data") for e in events])
            self.assertEqual(self.sb.run_code("x * 2", context=cc).text, "82")
            self.assertIn(cc.id, [x.id for x in self.sb.list_code_contexts()])
        self.assertEqual(self.sb.run_code("2 + 3").text, "5")
        self.assertEqual(self.sb.list_code_contexts(), [])

    def test_pause_resume(self):
        other = self.c.create_sandbox(id=name("pause"), image="busybox")
        with other:
            self.assertEqual(other.pause().status, "paused")
            self.assertEqual(other.resume().status, "running")
        with self.assertRaises(nsbox.NotFound):
            self.c.get_sandbox(other.id)


@needs_daemon
class ContextManagerTest(unittest.TestCase):
    def test_sandbox_removed_on_exit(self):
        c = client()
        with c.sandbox(id=name("cm"), image="busybox") as sb:
            self.assertEqual(sb.exec("echo ok").text, "ok\n")
        with self.assertRaises(nsbox.NotFound):
            c.get_sandbox(sb.id)

    def test_removed_on_error(self):
        c = client()
        with self.assertRaises(RuntimeError):
            with c.sandbox(id=name("err"), image="busybox") as sb:
                raise RuntimeError("boom")
        with self.assertRaises(nsbox.NotFound):
            c.get_sandbox(sb.id)

    def test_client_timeout(self):
        # The create may take longer than the short timeout on a loaded machine: only the
        # exec goes through the client with it.
        with client().sandbox(id=name("to"), image="busybox") as sb:
            short = nsbox.Client(timeout=0.5).get_sandbox(sb.id)
            with self.assertRaises(TimeoutError):
                short.exec("sleep 5")


if __name__ == "__main__":
    unittest.main()
