// Images, snapshots, hibernation, permissions, stats, metrics, events, session tokens: the SDK's
// calls beyond a sandbox's own work, against the real daemon in NSBOX_HOST.
import { test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { chmodSync, mkdtempSync, readFileSync, realpathSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Client, ConflictError, InvalidArgumentError, NotFoundError, type ImagePullEvent, type RunCodeEvent, type Sandbox } from "../src/index.js";
import { Registry, image, layoutTar } from "../testlib/oci.js";

const skip = !process.env.NSBOX_HOST && "NSBOX_HOST names no daemon";
const name = (p: string) => `${p}-${randomBytes(4).toString("hex")}`;
const client = new Client();
/**
 * A test that waits for something the SDK got wrong fails after this rather than hanging; the
 * streams it follows are closed then (see ending), so that the suite's process can exit.
 */
const timeout = 180_000;

/** Closes stream when the test t times out. */
function ending<T extends { close(): void }>(t: { signal: AbortSignal }, stream: T): T {
  t.signal.addEventListener("abort", () => stream.close());
  return stream;
}

/** Runs fn with a new sandbox, removed afterwards. */
async function withSandbox(opts: Parameters<Client["createSandbox"]>[0], fn: (sb: Sandbox) => Promise<void>) {
  const sb = await client.createSandbox(opts);
  try {
    await fn(sb);
  } finally {
    await sb.destroy().catch((err) => {
      if (!(err instanceof NotFoundError)) throw err;
    });
  }
}

test("images: pull, get, import, remove, prune", { skip, timeout }, async () => {
  const reg = await Registry.start();
  const tag = name("app");
  const ref = `${reg.host}/ts/${tag}:v1`;
  const a = image({ "hello.txt": "first\n" });
  const b = image({ "hello.txt": "second\n" });
  reg.tags.set(`ts/${tag}:v1`, a);
  try {
    const progress: ImagePullEvent[] = [];
    const imgA = await client.pullImage(ref, { onProgress: (ev) => progress.push(ev) });
    assert.deepEqual(imgA.names, [ref]);
    assert.equal(imgA.digest, a.digest);
    assert.ok(progress.some((ev) => ev.status === "done"), `progress: ${JSON.stringify(progress)}`);
    assert.equal((await client.getImage(ref)).id, imgA.id);
    await assert.rejects(client.pullImage(`${reg.host}/ts/${tag}:nope`), NotFoundError);
    await assert.rejects(client.pullImage("Not A Reference"), InvalidArgumentError);
    await assert.rejects(client.getImage(`${reg.host}/ts/${tag}:nope`), NotFoundError);

    // The tag moves to b: a, pulled again, is left without names, and a prune removes it.
    reg.tags.set(`ts/${tag}:v1`, b);
    const imgB = await client.pullImage(ref);
    assert.notEqual(imgB.id, imgA.id);
    assert.deepEqual((await client.getImage(imgA.id)).names, []);
    const pruned = await client.pruneImages();
    assert.ok(pruned.images.includes(imgA.id), `pruned ${JSON.stringify(pruned)}`);
    assert.equal(pruned.layers.length >= 1, true);
    await assert.rejects(client.getImage(imgA.id), NotFoundError);
    assert.equal((await client.getImage(ref)).id, imgB.id);

    // An image a sandbox uses is removed only with force, which leaves it (dangling) until a
    // prune finds it unused.
    await withSandbox({ id: name("img"), image: ref }, async (sb) => {
      await assert.rejects(client.removeImage(ref), ConflictError);
      assert.deepEqual((await client.removeImage(ref, { force: true })).names, [ref]);
      await assert.rejects(client.getImage(ref), NotFoundError);
      assert.ok(!(await client.pruneImages()).images.includes(imgB.id));
      await sb.destroy();
    });
    assert.ok((await client.pruneImages()).images.includes(imgB.id));

    // An OCI layout archive, streamed, named by the call.
    const c = image({ "hello.txt": "imported\n" });
    const archive = layoutTar(c);
    const imported = await client.importImages((async function* () {
      for (let at = 0; at < archive.length; at += 1000) yield archive.subarray(at, at + 1000);
    })(), { name: `ts/${tag}-imported:v1` });
    assert.deepEqual(imported.map((i) => [i.names, i.digest]), [[[`docker.io/ts/${tag}-imported:v1`], c.digest]]);
    await assert.rejects(client.importImages("not a tar"), InvalidArgumentError);
    assert.equal((await client.removeImage(`ts/${tag}-imported:v1`)).id, imported[0].id);
    await assert.rejects(client.getImage(imported[0].id), NotFoundError);
  } finally {
    await reg.close();
  }
});

/** A host directory the daemon can reach (searchable by others) holding files; removed by the caller. */
function hostDir(files: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), "nsbox-ts-"));
  chmodSync(dir, 0o755);
  for (const [rel, content] of Object.entries(files)) writeFileSync(join(dir, rel), content);
  return dir;
}

test("createSandbox: every option", { skip, timeout }, async () => {
  const ws = hostDir({ f: "workspace\n" });
  const mnt = hostDir({ g: "mounted\n" });
  try {
    const lifecycle = { idleSeconds: 600, onIdle: "hibernate" as const, ttlSeconds: 3600 };
    await withSandbox({ id: name("opts"), image: "busybox", env: { A: "1" }, cwd: "/work", limits: { memoryMB: 256, pids: 64 },
      labels: { l: "v" }, workspace: { hostPath: ws }, mounts: [{ source: mnt, target: "/mnt/m", readOnly: true }],
      network: { mode: "none" }, lifecycle }, async (sb) => {
      const i = sb.info;
      assert.deepEqual([i.env?.A, i.cwd, i.limits?.memoryMB, i.limits?.pids, i.labels], ["1", "/work", 256, 64, { l: "v" }]);
      assert.deepEqual([i.workspace?.hostPath, i.mounts?.[0].target, i.mounts?.[0].readOnly], [realpathSync(ws), "/mnt/m", true]);
      assert.deepEqual([i.network.mode, i.lifecycle], ["none", lifecycle]);
      const res = await sb.exec("echo $A; pwd; cat /workspace/f /mnt/m/g; touch /mnt/m/x");
      assert.equal(res.stdout, "1\n/work\nworkspace\nmounted\n");
      assert.notEqual(res.exitCode, 0);
    });
  } finally {
    rmSync(ws, { recursive: true, force: true });
    rmSync(mnt, { recursive: true, force: true });
  }
  // The test's daemon allows no extra capability (--allow-cap); the built-in image has no entrypoint.
  await assert.rejects(client.createSandbox({ image: "busybox", capabilities: ["NET_RAW"] }), InvalidArgumentError);
  await assert.rejects(client.createSandbox({ image: "busybox", runEntrypoint: true }), InvalidArgumentError);

  // pull "missing" fetches an image at create; runEntrypoint starts its Entrypoint as `user`.
  const reg = await Registry.start();
  const ref = `${reg.host}/ts/${name("entry")}:v1`;
  reg.tags.set(ref.slice(reg.host.length + 1), image({
    "bin/busybox": { data: readFileSync("/bin/busybox"), mode: 0o755 }, "etc/passwd": "root:x:0:0:root:/root:/bin/busybox\nu:x:1000:1000::/tmp:/bin/busybox\n",
    "etc/group": "root:x:0:\nu:x:1000:\n",
  }, { Entrypoint: ["/bin/busybox", "sh", "-c"], Cmd: ["echo hi from $(/bin/busybox id -u)"] }));
  try {
    await assert.rejects(client.createSandbox({ image: ref, pull: "sometimes" as "never" }), InvalidArgumentError);
    await assert.rejects(client.createSandbox({ image: ref }), NotFoundError);
    await withSandbox({ id: name("entry"), image: ref, pull: "missing", runEntrypoint: true, user: "u" }, async (sb) => {
      const entry = await sb.getProcess("entrypoint");
      await entry.waitForExit(30000);
      assert.deepEqual([entry.info.argv, (await entry.getLogs()).stdout], [["/bin/busybox", "sh", "-c", "echo hi from $(/bin/busybox id -u)"], "hi from 1000\n"]);
    });
    await client.removeImage(ref);
  } finally {
    await reg.close();
  }
});

test("snapshots, fork, hibernate", { skip, timeout }, async () => {
  await withSandbox({ id: name("snap") }, async (sb) => {
    await sb.writeFile("/root/kept", "from the source\n");
    const s = await sb.createSession({ id: "work" });
    await s.exec("cd /tmp && export KEPT=yes");

    const snap = await sb.createSnapshot({ name: "ts" });
    assert.match(snap.id, /^snap-[0-9a-f]{12}$/);
    assert.deepEqual([snap.sandbox, snap.name], [sb.id, "ts"]);
    assert.equal((await client.getSnapshot(snap.id)).layer, snap.layer);
    assert.ok((await client.listSnapshots()).some((x) => x.id === snap.id));
    await assert.rejects(sb.createSnapshot({ name: "bad\nname" }), InvalidArgumentError);

    await withSandbox({ id: name("child"), fromSnapshot: snap.id }, async (child) => {
      assert.equal((await child.readFile("/root/kept")).content, "from the source\n");
      assert.equal((await (await child.getSession("work")).exec("echo $KEPT $PWD")).stdout, "yes /tmp\n");
      await assert.rejects(client.deleteSnapshot(snap.id), ConflictError);
    });
    await client.deleteSnapshot(snap.id);
    await assert.rejects(client.getSnapshot(snap.id), NotFoundError);
    await assert.rejects(client.deleteSnapshot(snap.id), NotFoundError);

    const prefix = name("fork");
    const fork = await sb.fork({ count: 2, prefix, name: "forked" });
    try {
      assert.deepEqual(fork.sandboxes.map((x) => [x.id, x.info.status]), [[`${prefix}-1`, "running"], [`${prefix}-2`, "running"]]);
      assert.equal(fork.snapshot.name, "forked");
      for (const f of fork.sandboxes) assert.equal((await f.exec("cat /root/kept")).stdout, "from the source\n");
      await assert.rejects(sb.fork({ count: 101 }), InvalidArgumentError);
    } finally {
      for (const f of fork.sandboxes) await f.destroy();
      await client.deleteSnapshot(fork.snapshot.id);
    }

    // No daemon checkpoints memory yet: memory is refused, a plain hibernation works and the
    // session's state is back when the sandbox runs again, with a process started again.
    const again = await sb.startProcess("sleep 600", { id: "again", restart: "on-resume" });
    const once = await sb.startProcess("sleep 600", { id: "once" });
    await assert.rejects(sb.hibernate({ memory: true }), InvalidArgumentError);
    assert.equal((await sb.hibernate()).status, "hibernated");
    assert.equal(sb.info.status, "hibernated");
    await assert.rejects(sb.hibernate(), ConflictError);
    assert.equal((await s.exec("echo $KEPT $PWD")).stdout, "yes /tmp\n");
    assert.equal((await sb.refresh()).status, "running");
    const [a, o] = [await sb.getProcess(again.id), await sb.getProcess(once.id)];
    assert.deepEqual([a.status, o.status], ["running", "stopped"]);
    // Started again: a new start (its pid may be the same: the new container's pid namespace
    // counts from 1 again).
    assert.notEqual(a.info.startedAt, again.info.startedAt);
    await a.kill("KILL");
  });
  await assert.rejects(client.getSandbox("no-such").then((sb) => sb.hibernate()), NotFoundError);
});

test("permissions", { skip, timeout }, async () => {
  const rule = (level: "none" | "view" | "read" | "write") => [{ pattern: "/root/secret", level }];
  await withSandbox({ id: name("perm"), permissions: rule("none") }, async (sb) => {
    assert.deepEqual(sb.info.permissions, rule("none"));
    assert.match((await sb.exec("echo x > /root/secret")).stderr, /Permission denied/);
    const info = await sb.setPermissions(rule("write"));
    assert.deepEqual([info.permissions, sb.info.permissions], [rule("write"), rule("write")]);
    assert.equal((await sb.exec("echo x > /root/secret && cat /root/secret")).stdout, "x\n");
    await sb.setPermissions(rule("read"));
    const denied = await sb.exec("echo y > /root/secret; cat /root/secret");
    assert.deepEqual([denied.stdout, denied.stderr.includes("Permission denied")], ["x\n", true]);
    await sb.setPermissions(rule("none"));
    assert.match((await sb.exec("cat /root/secret")).stderr, /No such file/);
    await assert.rejects(sb.setPermissions([{ pattern: "/root/secret", level: "secret" as "none" }]), InvalidArgumentError);

    // A session's rules narrow the sandbox's for it alone.
    await sb.setPermissions(rule("write"));
    const narrow = await sb.createSession({ id: "narrow", permissions: rule("none") });
    assert.match((await narrow.exec("cat /root/secret")).stderr, /No such file/);
    assert.equal((await sb.exec("cat /root/secret")).stdout, "x\n");
  });
  await withSandbox({ id: name("noperm") }, async (sb) => {
    await assert.rejects(sb.setPermissions(rule("none")), ConflictError);
  });
});

test("stats, metrics, events", { skip, timeout }, async (t) => {
  const id = name("stats");
  const events = ending(t, await client.followEvents({ since: 0 }));
  await withSandbox({ id }, async (sb) => {
    const seen: string[] = [];
    for await (const ev of events) {
      if (ev.sandbox !== id) continue;
      seen.push(ev.type);
      if (ev.type === "sandbox.started") break;
    }
    assert.deepEqual(seen, ["sandbox.created", "sandbox.started"]);
    events.close();

    const st = await sb.stats();
    assert.deepEqual([st.id, st.status], [id, "running"]);
    assert.ok(st.memoryBytes > 0 && st.pids > 0, JSON.stringify(st));
    assert.ok((await client.stats()).some((x) => x.id === id && x.status === "running"));
    const all = ending(t, await client.streamStats());
    let readings = 0;
    for await (const list of all) {
      assert.ok(list.some((x) => x.id === id));
      if (++readings === 2) break;
    }
    all.close();

    const metrics = await client.metrics();
    assert.match(metrics, /^# (HELP|TYPE) /m);
    assert.match(metrics, new RegExp(`^nsbox_sandbox_memory_bytes\\{[^}]*sandbox="${id}"[^}]*\\} [1-9]`, "m"));

    // A sandbox's stream ends with NotFoundError once the sandbox is removed.
    const mine = ending(t, await sb.streamStats());
    const it = mine[Symbol.asyncIterator]();
    assert.equal((await it.next()).value?.id, id);
    await sb.destroy();
    await assert.rejects(async () => {
      while (!(await it.next()).done);
    }, NotFoundError);
  });
  await assert.rejects(client.getSandbox(id), NotFoundError);
  // Followed from the start, the kept events replay the sandbox's whole life.
  const replay = ending(t, await client.followEvents({ since: 0 }));
  const life: string[] = [];
  for await (const ev of replay) {
    if (ev.sandbox === id) life.push(ev.type);
    if (ev.sandbox === id && ev.type === "sandbox.removed") break;
  }
  replay.close();
  assert.deepEqual([life[0], life.at(-1)], ["sandbox.created", "sandbox.removed"]);
});

test("session tokens", { skip, timeout }, async () => {
  await withSandbox({ id: name("stok") }, async (sb) => {
    const s = await sb.createSession({ id: "browser" });
    const tok = await s.createToken({ permission: "read", ttlSeconds: 60 });
    assert.deepEqual([tok.sandbox, tok.session, tok.permission], [sb.id, "browser", "read"]);
    assert.match(tok.token, /^nsbox\.[0-9a-f]{16}\.[0-9a-f]{64}$/);
    assert.match(tok.page, /\/ui\/terminal\?sandbox=.*session=browser#token=nsbox\./);
    assert.equal((await sb.createSessionToken()).session, "default");
    await assert.rejects(sb.createSessionToken("none"), NotFoundError);
    await assert.rejects(s.createToken({ ttlSeconds: 3e6 }), InvalidArgumentError);
  });
});

test("processes: remove the finished ones, logs by pieces", { skip, timeout }, async () => {
  await withSandbox({ id: name("procs") }, async (sb) => {
    const done = await sb.startProcess("printf 0123456789", { id: "done" });
    await done.waitForExit(10000);
    const first = await sb.getProcessLogs("done", { limit: 4 });
    assert.deepEqual([first.stdout, first.cursor, first.done], ["0123", 4, false]);
    const rest = await done.getLogs(first.cursor);
    assert.deepEqual([rest.stdout, rest.done], ["456789", true]);
    const sleeper = await sb.startProcess(["sleep", "60"], { id: "sleeper" });
    const removed = await sb.removeFinishedProcesses();
    assert.deepEqual(removed.map((p) => p.id), ["done"]);
    await assert.rejects(sb.getProcess("done"), NotFoundError);
    assert.equal((await sb.getProcess("sleeper")).status, "running");

    const cat = await sb.startProcess("cat", { id: "cat", stdin: "pipe" });
    await cat.writeStdin("through stdin");
    await cat.closeStdin();
    assert.equal((await cat.waitForExit(10000)).exitCode, 0);
    assert.equal((await cat.getLogs()).stdout, "through stdin");
    const killed = await sb.killAllProcesses("KILL");
    assert.deepEqual(killed.map((p) => p.id), ["sleeper"]);
    assert.equal((await sleeper.waitForExit(10000)).status, "killed");
    await sb.createSession({ id: "gone" });
    await sb.deleteSession("gone");
    await assert.rejects(sb.getSession("gone"), NotFoundError);
  });
});

test("workspace diff and export, git checkout, code streamed", { skip, timeout }, async () => {
  const host = hostDir({ old: "old\n", kept: "kept\n" });
  try {
    await withSandbox({ id: name("ws"), workspace: { hostPath: host } }, async (sb) => {
      await sb.exec("cd /workspace && echo new > new && rm old && echo changed > kept");
      const diff = (await sb.workspaceDiff()).map((c) => `${c.kind} ${c.path}`).sort();
      assert.deepEqual(diff, ["added new", "deleted old", "modified kept"]);
      const chunks: Buffer[] = [];
      for await (const c of await sb.exportWorkspace()) chunks.push(c);
      const tar = Buffer.concat(chunks);
      assert.ok(tar.includes("changed\n") && tar.includes(Buffer.from("new")), "the export holds the changes");

      await sb.exec(`set -e; export GIT_AUTHOR_NAME=t GIT_AUTHOR_EMAIL=t@t GIT_COMMITTER_NAME=t GIT_COMMITTER_EMAIL=t@t
git init -q -b main /tmp/src && cd /tmp/src && echo one > f && git add f && git commit -qm one`);
      const lines: string[] = [];
      const res = await sb.gitCheckout({ url: "file:///tmp/src", targetDir: "repo" }, { onProgress: (l) => lines.push(l) });
      assert.deepEqual([res.dir, res.branch, res.cloned, res.commit.length], ["/workspace/repo", "main", true, 40]);
      assert.ok(lines.some((l) => /Cloning/.test(l)), `progress: ${JSON.stringify(lines)}`);
      const again = await sb.gitCheckout({ url: "file:///tmp/src", targetDir: "/workspace/repo" });
      assert.deepEqual([again.commit, again.cloned], [res.commit, false]);
      await assert.rejects(sb.gitCheckout({ url: "file:///tmp/nope", targetDir: "a" }, { onProgress: () => {} }), NotFoundError);

      const cc = await sb.createCodeContext({ language: "python" });
      const evs: RunCodeEvent[] = [];
      for await (const ev of await sb.runCodeStream("print('a'); import sys; sys.stdout.flush(); 6 * 7", { context: cc })) evs.push(ev);
      assert.deepEqual(evs.map((e) => e.type), ["stdout", "result", "end"]);
      assert.deepEqual([evs[0].data, evs[1].result?.["text/plain"], evs[2].end?.error], ["a\n", "42", undefined]);
      const failed: RunCodeEvent[] = [];
      for await (const ev of await sb.runCodeStream("1/0", { context: cc.id })) failed.push(ev);
      assert.deepEqual(failed.map((e) => [e.type, e.error?.name ?? e.end?.error?.name]), [["exception", "ZeroDivisionError"], ["end", "ZeroDivisionError"]]);
      await assert.rejects(sb.runCodeStream("1", { context: "none" }), NotFoundError);
    });
  } finally {
    rmSync(host, { recursive: true, force: true });
  }
});
