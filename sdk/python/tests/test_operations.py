"""Images, snapshots and forks, hibernation, permissions, stats, events and metrics against the real daemon."""
import os
import shutil
import tempfile
import unittest

from tests.helpers import client, name, needs_daemon

import nsbox

IMAGE_REF = os.environ.get("NSBOX_TEST_IMAGE_REF", "")
IMAGE_ARCHIVE = os.environ.get("NSBOX_TEST_IMAGE_ARCHIVE", "")


@needs_daemon
@unittest.skipUnless(IMAGE_REF and IMAGE_ARCHIVE, "needs the registry and archive TestSDKPython serves (NSBOX_TEST_IMAGE_REF, NSBOX_TEST_IMAGE_ARCHIVE)")
class ImagesTest(unittest.TestCase):
    def test_pull_import_remove_prune(self):
        c = client()
        progress = []
        img = c.pull_image(IMAGE_REF, on_progress=progress.append)
        self.assertEqual((img.names, len(img.layers), img.config.get("workingDir")), ([IMAGE_REF], 2, "/srv"))
        self.assertTrue(progress)
        self.assertTrue({p.status for p in progress} <= {"downloading", "exists", "done"}, progress)
        self.assertEqual(len({p.layer for p in progress if p.status == "done"}), 2)
        self.assertEqual(c.get_image(IMAGE_REF).id, img.id)
        self.assertEqual(c.get_image(img.id[len("sha256:"):][:12]).id, img.id)  # an id prefix
        with self.assertRaises(nsbox.NotFound):
            c.pull_image(IMAGE_REF.rsplit(":", 1)[0] + ":nope")
        with self.assertRaises(nsbox.InvalidArgument):
            c.pull_image("Not A Reference")
        with self.assertRaises(nsbox.NotFound):
            c.get_image("example.com/none:v1")

        # The same image from a `docker save` archive, streamed from the file: one record, all the names.
        with open(IMAGE_ARCHIVE, "rb") as f:
            imported = c.import_images(f, name="local/sdkapp")
        self.assertEqual([i.id for i in imported], [img.id])
        names = c.get_image(img.id).names
        for n in (IMAGE_REF, "example.com/sdk/app:v1", "docker.io/local/sdkapp:latest"):
            self.assertIn(n, names)
        with self.assertRaises(nsbox.InvalidArgument):
            c.import_images(b"not a tar archive")

        with c.sandbox(id=name("img"), image="example.com/sdk/app:v1") as sb:
            self.assertEqual(sb.exec("busybox cat /etc/issue; pwd").text, "v2\n/srv\n")
            with self.assertRaises(nsbox.Conflict):
                c.remove_image(img.id)
            # force: only the names of an image in use go.
            self.assertEqual(c.remove_image("example.com/sdk/app:v1", force=True).id, img.id)
            with self.assertRaises(nsbox.NotFound):
                c.get_image("example.com/sdk/app:v1")
        # One name of several: the image stays.
        self.assertEqual(c.remove_image("docker.io/local/sdkapp:latest").id, img.id)
        self.assertEqual(c.get_image(IMAGE_REF).names, [IMAGE_REF])
        self.assertEqual(c.prune_images().images, [])  # named: not dangling
        pruned = c.prune_images(all=True)
        self.assertEqual((pruned.images, len(pruned.layers)), ([img.id], 2))
        with self.assertRaises(nsbox.NotFound):
            c.get_image(IMAGE_REF)

    def test_create_pulls_when_asked(self):
        c = client()
        with self.assertRaises(nsbox.InvalidArgument):
            c.create_sandbox(image=IMAGE_REF, pull="sometimes")
        with c.sandbox(id=name("pull"), image=IMAGE_REF, pull="missing", run_entrypoint=True, user="root") as sb:
            self.assertEqual(sb.exec("busybox cat /etc/issue; busybox id -u").text, "v2\n0\n")
            entry = sb.processes.get("entrypoint")
            entry.wait(timeout_ms=30000)
            self.assertEqual((entry.info.argv, entry.logs().stdout), (["/bin/sh", "-c", "echo hi"], b"hi\n"))
        c.remove_image(IMAGE_REF)


def host_dir(test: unittest.TestCase, files: dict) -> str:
    """A host directory the daemon can reach, holding files, removed after the test."""
    d = tempfile.mkdtemp(prefix="nsbox-sdk-")
    test.addCleanup(shutil.rmtree, d)
    os.chmod(d, 0o755)
    for rel, content in files.items():
        os.makedirs(os.path.dirname(os.path.join(d, rel)), exist_ok=True)
        with open(os.path.join(d, rel), "w") as f:
            f.write(content)
    return d


@needs_daemon
class CreateOptionsTest(unittest.TestCase):
    def test_every_option(self):
        c = client()
        ws, mnt = host_dir(self, {"f": "workspace\n"}), host_dir(self, {"g": "mounted\n"})
        with c.sandbox(id=name("opts"), image="busybox", env={"A": "1"}, cwd="/work", limits={"memoryMB": 256, "pids": 64},
                       labels={"l": "v"}, workspace={"hostPath": ws}, mounts=[{"source": mnt, "target": "/mnt/m", "readOnly": True}],
                       network={"mode": "none"}, lifecycle={"idleSeconds": 600, "onIdle": "hibernate", "ttlSeconds": 3600}) as sb:
            i = sb.info
            self.assertEqual((i.env.get("A"), i.cwd, i.limits.get("memoryMB"), i.limits.get("pids"), i.labels), ("1", "/work", 256, 64, {"l": "v"}))
            self.assertEqual((i.workspace["hostPath"], i.mounts[0]["target"], i.mounts[0].get("readOnly")), (os.path.realpath(ws), "/mnt/m", True))
            self.assertEqual((i.network["mode"], i.lifecycle), ("none", {"idleSeconds": 600, "onIdle": "hibernate", "ttlSeconds": 3600}))
            res = sb.exec("echo $A; pwd; cat /workspace/f /mnt/m/g; touch /mnt/m/x")
            self.assertEqual(res.text, "1\n/work\nworkspace\nmounted\n")
            self.assertNotEqual(res.exit_code, 0)
        with self.assertRaises(nsbox.InvalidArgument):  # the daemon allows no extra capability (--allow-cap)
            c.create_sandbox(image="busybox", capabilities=["NET_RAW"])
        with self.assertRaises(nsbox.InvalidArgument):  # the built-in image has no entrypoint
            c.create_sandbox(image="busybox", run_entrypoint=True)


@needs_daemon
class SnapshotsTest(unittest.TestCase):
    def test_snapshot_create_from_fork_remove(self):
        c = client()
        made = []
        try:
            sb = c.create_sandbox(id=name("snap"), image="busybox", labels={"kind": "source"})
            made.append(sb)
            with sb.session(id="work") as s:
                s.exec("cd /tmp && export KEPT=yes")
                sb.files.write("/tmp/f", b"snapshotted")
                snap = sb.snapshot(name="first")
            self.assertEqual((snap.sandbox, snap.name, snap.image), (sb.id, "first", "busybox"))
            self.assertTrue(snap.layer.startswith("sha256:"))
            self.assertGreater(snap.size_bytes, 0)
            self.assertGreaterEqual(snap.sessions, 1)
            self.assertEqual(c.snapshots.get(snap.id).layer, snap.layer)
            self.assertIn(snap.id, [x.id for x in c.snapshots.list()])
            with self.assertRaises(nsbox.NotFound):
                c.snapshots.get("no-such-snapshot")

            child = c.create_sandbox(id=name("child"), from_snapshot=snap.id)
            made.append(child)
            self.assertEqual((child.info.from_snapshot, child.info.labels), (snap.id, {"kind": "source"}))
            self.assertEqual(child.files.read("/tmp/f"), b"snapshotted")
            self.assertEqual(child.exec("echo $KEPT $PWD", session_id="work").text, "yes /tmp\n")
            with self.assertRaises(nsbox.Conflict):
                c.snapshots.remove(snap.id)  # a sandbox was made from it

            forked = sb.fork(name="one")
            made.append(forked)
            self.assertIsInstance(forked, nsbox.Sandbox)
            self.assertNotEqual(forked.id, sb.id)
            self.assertEqual(forked.files.read("/tmp/f"), b"snapshotted")
            self.assertEqual(c.snapshots.get(forked.info.from_snapshot).name, "one")

            prefix = name("many")
            many = sb.fork_many(2, prefix=prefix, name="two")
            made.extend(many.sandboxes)
            self.assertEqual([x.id for x in many.sandboxes], [prefix + "-1", prefix + "-2"])
            self.assertEqual({x.info.from_snapshot for x in many.sandboxes}, {many.snapshot.id})
            self.assertEqual(many.sandboxes[1].exec("cat /tmp/f").text, "snapshotted")
            with self.assertRaises(nsbox.Conflict):
                sb.fork_many(1, prefix=prefix)  # prefix-1 exists
        finally:
            snaps = {x.info.from_snapshot for x in made if x.info.from_snapshot}
            for x in made:
                x.remove(force=True)
        for sid in snaps | {snap.id}:
            c.snapshots.remove(sid)
            with self.assertRaises(nsbox.NotFound):
                c.snapshots.get(sid)


@needs_daemon
class HibernateTest(unittest.TestCase):
    def test_hibernate_and_resume(self):
        c = client()
        with c.sandbox(id=name("hib"), image="busybox") as sb:
            with sb.session(id="h") as s:
                s.exec("cd /tmp && export X=2")
                kept = sb.processes.start(["sleep", "1000"], id="kept", restart="on-resume")
                sb.processes.start(["sleep", "1000"], id="once")
                with self.assertRaises(nsbox.InvalidArgument):
                    sb.hibernate(memory=True)  # no CRIU checkpoints in this daemon
                self.assertEqual(sb.hibernate().status, "hibernated")
                self.assertEqual(c.get_sandbox(sb.id).info.status, "hibernated")
                self.assertEqual(sb.stats().status, "hibernated")
                with self.assertRaises(nsbox.Conflict):
                    sb.hibernate()
                self.assertEqual(sb.resume().status, "running")
                self.assertEqual(s.exec("echo $X $PWD").text, "2 /tmp\n")
                self.assertEqual(kept.refresh().status, "running")
                self.assertEqual(sb.processes.get("once").status, "stopped")


@needs_daemon
class PermissionsTest(unittest.TestCase):
    def test_rules(self):
        c = client()
        ws = host_dir(self, {"docs/a": "from the host\n"})
        rules = [{"pattern": "docs/**", "level": "read"}]
        with c.sandbox(id=name("perm"), image="busybox", workspace={"hostPath": ws}, permissions=rules) as sb:
            self.assertEqual(sb.info.permissions, rules)
            self.assertEqual(sb.exec("cat /workspace/docs/a").text, "from the host\n")
            self.assertIn("Permission denied", sb.exec("echo x > /workspace/docs/a").stderr_text)
            with self.assertRaises(nsbox.Forbidden):
                sb.files.write("/workspace/docs/a", b"x")
            info = sb.set_permissions([{"pattern": "docs/**", "level": "write"}])
            self.assertEqual(info.permissions, [{"pattern": "docs/**", "level": "write"}])
            self.assertEqual(sb.exec("echo x > /workspace/docs/a && cat /workspace/docs/a").text, "x\n")
            # A session narrowed further than its sandbox.
            with sb.session(id="narrow", permissions=[{"pattern": "docs/**", "level": "none"}]) as s:
                self.assertNotEqual(s.exec("cat /workspace/docs/a").exit_code, 0)
            with self.assertRaises(nsbox.InvalidArgument):
                sb.set_permissions([{"pattern": "docs/**", "level": "secret"}])
            self.assertEqual(sb.set_permissions([]).permissions, [])
        with c.sandbox(id=name("noperm"), image="busybox") as plain:
            with self.assertRaises(nsbox.Conflict):
                plain.set_permissions([{"pattern": "docs/**", "level": "read"}])


@needs_daemon
class OperationsTest(unittest.TestCase):
    def test_stats(self):
        c = client()
        sb = c.create_sandbox(id=name("stats"), image="busybox")
        try:
            st = sb.stats()
            self.assertEqual((st.id, st.image, st.status), (sb.id, "busybox", "running"))
            self.assertGreater(st.memory_bytes, 0)
            self.assertGreater(st.pids, 0)
            self.assertIn("rxBytes", st.network)
            self.assertIn(sb.id, [x.id for x in c.stats()])
            with c.follow_stats() as feed:
                first = next(iter(feed))
            self.assertIn(sb.id, [x.id for x in first])
            feed = sb.follow_stats()
            it = iter(feed)
            self.assertEqual(next(it).id, sb.id)
        finally:
            sb.remove(force=True)
        with self.assertRaises(nsbox.NotFound):  # the stream ends when its sandbox is removed
            for _ in it:
                pass
        with self.assertRaises(nsbox.NotFound):
            sb.stats()

    def test_events(self):
        c = client()
        live = c.follow_events()
        try:
            sb = c.create_sandbox(id=name("ev"), image="busybox")
            sb.remove(force=True)
            seen = []
            for ev in live:
                if ev.sandbox == sb.id:
                    seen.append(ev.type)
                    if ev.type == "sandbox.removed":
                        break
        finally:
            live.close()
        self.assertEqual((seen[0], seen[-1]), ("sandbox.created", "sandbox.removed"))
        # Replayed from the start: the same events, numbered in order.
        with c.follow_events(since=0) as replay:
            got = []
            for ev in replay:
                if ev.sandbox == sb.id:
                    got.append(ev)
                    if ev.type == "sandbox.removed":
                        break
        self.assertEqual([e.type for e in got], seen)
        self.assertEqual([e.seq for e in got], sorted(e.seq for e in got))
        with self.assertRaises(nsbox.InvalidArgument):
            for _ in c.follow_events(since=-1):
                pass

    def test_metrics(self):
        c = client()
        with c.sandbox(id=name("met"), image="busybox") as sb:
            text = c.metrics()
            self.assertIn("# TYPE nsbox_sandboxes gauge", text)
            self.assertIn(f'sandbox="{sb.id}"', text)


if __name__ == "__main__":
    unittest.main()
