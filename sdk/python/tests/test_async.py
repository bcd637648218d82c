"""AsyncClient: the same surface on asyncio, against the real daemon."""
import asyncio
import unittest

from tests.helpers import name, needs_daemon

import nsbox


@needs_daemon
class AsyncClientTest(unittest.TestCase):
    def test_surface(self):
        async def main():
            client = nsbox.AsyncClient(timeout=120)
            self.assertTrue(await client.version())
            async with client.sandbox(id=name("aio"), image="busybox") as sb:
                self.assertEqual(sb.id, sb.info.id)
                self.assertEqual((await sb.exec("echo hi")).text, "hi\n")
                async with sb.session(id="s") as s:
                    await s.exec("cd /tmp && export A=1")
                    self.assertEqual((await s.exec("echo $A $PWD")).text, "1 /tmp\n")
                out = b""
                async for ev in await sb.exec_stream("echo 1; echo 2"):
                    out += ev.data if ev.type == "stdout" else b""
                self.assertEqual(out, b"1\n2\n")
                await sb.files.write("/tmp/f", b"data")
                self.assertEqual(await sb.files.read("/tmp/f"), b"data")
                p = await sb.processes.start(["sleep", "30"])
                await p.kill(signal="KILL")
                self.assertEqual((await p.wait()).status, "killed")
                # Concurrent calls on one loop.
                results = await asyncio.gather(*(sb.exec(["echo", str(i)], session_id=None) for i in range(3)))
                self.assertEqual(sorted(r.text for r in results), ["0\n", "1\n", "2\n"])
                with self.assertRaises(nsbox.NotFound):
                    await sb.get_session("none")
            with self.assertRaises(nsbox.NotFound):
                await client.get_sandbox(sb.id)

        asyncio.run(main())

    def test_operations(self):
        """The calls added for the whole API: handles they return are async too."""

        async def main():
            client = nsbox.AsyncClient(timeout=120)
            events = await client.follow_events()
            async with client.sandbox(id=name("aiops"), image="busybox") as sb:
                await sb.files.write("/tmp/f", b"forked")
                fork = await sb.fork_many(1, prefix=sb.id)
                child = fork.sandboxes[0]
                self.assertEqual(child.id, sb.id + "-1")
                self.assertEqual(await child.files.read("/tmp/f"), b"forked")  # a coroutine: the handle is async
                await child.remove(force=True)
                self.assertIn(fork.snapshot.id, [x.id for x in await client.snapshots.list()])
                await client.snapshots.remove(fork.snapshot.id)
                with self.assertRaises(nsbox.NotFound):
                    await client.snapshots.get(fork.snapshot.id)
                self.assertEqual((await sb.hibernate()).status, "hibernated")
                self.assertEqual((await sb.stats()).status, "hibernated")
                self.assertEqual((await sb.resume()).status, "running")
                self.assertIn(f'sandbox="{sb.id}"', await client.metrics())
            seen = []
            async for ev in events:
                if ev.sandbox == sb.id:
                    seen.append(ev.type)
                    if ev.type == "sandbox.removed":
                        break
            self.assertEqual(seen, ["sandbox.created", "sandbox.started", "sandbox.hibernated", "sandbox.resumed", "sandbox.stopping",
                                    "sandbox.removed"])

        asyncio.run(main())
