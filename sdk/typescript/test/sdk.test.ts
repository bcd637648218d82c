// The TypeScript SDK against the real daemon in NSBOX_HOST (cmd/nsbox's TestSDKTypeScript starts one).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { Readable } from "node:stream";
import { Client, ConflictError, ConditionNotMetError, DaemonUnreachableError, InvalidArgumentError, NotFoundError,
  PayloadTooLargeError, type Sandbox } from "../src/index.js";

const skip = !process.env.NSBOX_HOST && "NSBOX_HOST names no daemon";
const name = (p: string) => `${p}-${randomBytes(4).toString("hex")}`;
const client = new Client();
let sb: Sandbox;

before(async () => {
  if (!skip) sb = await client.createSandbox({ id: name("ts"), env: { FROM_CREATE: "yes" }, labels: { suite: "ts" } });
});
after(async () => {
  if (sb) await sb.destroy();
});

test("version, images, records", { skip }, async () => {
  assert.ok(await client.version());
  assert.ok((await client.images()).some((i) => i.name === "host"));
  assert.equal(sb.info.status, "running");
  assert.equal((await client.getSandbox(sb.id)).info.env?.FROM_CREATE, "yes");
  assert.ok((await client.listSandboxes()).some((s) => s.id === sb.id));
});

test("exec", { skip }, async () => {
  const r = await sb.exec("echo out; echo err >&2; exit 3");
  assert.deepEqual([r.stdout, r.stderr, r.exitCode, r.success, r.timedOut], ["out\n", "err\n", 3, false, false]);
  // The text is decoded when first read, and is a plain property for the rest.
  const copy = { ...(await sb.exec("echo copied")) };
  assert.deepEqual([copy.stdout, JSON.parse(JSON.stringify(r)).stderr], ["copied\n", "err\n"]);
  r.stdout = "changed";
  assert.equal(r.stdout, "changed");
  assert.equal((await sb.exec(["printf", "%s", "a b"])).stdout, "a b");
  const mixed = await sb.exec("printf '\\377\\000'; echo text >&2");
  assert.deepEqual([...mixed.stdoutBytes], [0xff, 0]);
  // Each stream in its own encoding: binary stdout, text stderr.
  assert.deepEqual([mixed.raw.stdoutEncoding, mixed.raw.stderrEncoding, mixed.stderr], ["raw", "utf-8", "text\n"]);
  // Large, binary and both streams at once come back whole (as raw frames).
  const big = await sb.exec("head -c 3000000 /dev/urandom > /tmp/r; cat /tmp/r; printf '\\377e' >&2");
  const digest = (await sb.exec("sha256sum /tmp/r")).stdout.split(" ")[0];
  assert.deepEqual([big.stdoutBytes.length, createHash("sha256").update(big.stdoutBytes).digest("hex"), [...big.stderrBytes]], [3000000, digest, [0xff, 0x65]]);
  const capped = await sb.exec("printf 0123456789; printf ab >&2", { maxOutputBytes: 4 });
  assert.deepEqual([capped.stdout, capped.stderr, capped.stdoutTruncated, capped.stderrTruncated, capped.truncated], ["0123", "ab", true, false, true]);
  assert.equal((await sb.exec("cat", { stdin: new Uint8Array([0, 1]) })).stdoutBytes.length, 2);
  assert.equal((await sb.exec("echo $X; pwd", { env: { X: "1" }, cwd: "/tmp" })).stdout, "1\n/tmp\n");
  assert.equal((await sb.exec("sleep 30", { timeout: 300 })).timedOut, true);
});

test("execStream", { skip }, async () => {
  let out = "";
  let last;
  for await (const ev of await sb.execStream("for i in 1 2 3; do echo $i; done; exit 4")) {
    if (ev.type === "stdout") out += ev.data;
    last = ev;
  }
  assert.equal(out, "1\n2\n3\n");
  assert.equal(last?.type, "exit");
  assert.equal(last?.result?.exitCode, 4);
});

test("errors", { skip }, async () => {
  await assert.rejects(client.getSandbox("no-such"), (e: any) => e instanceof NotFoundError && e.code === "not_found" && e.message.includes("no-such"));
  await assert.rejects(client.createSandbox({ id: sb.id }), ConflictError);
  await assert.rejects(client.createSandbox({ id: "bad id!" }), InvalidArgumentError);
  await assert.rejects(new Client({ host: "unix:///nonexistent.sock" }).version(), DaemonUnreachableError);
  assert.throws(() => new Client({ host: "http://10.0.0.1:8080" }), /loopback/);
});

test("sessions", { skip }, async () => {
  const s = await sb.createSession({ id: "work", env: { S: "1" }, cwd: "/tmp" });
  await s.exec("cd /workspace && export KEPT=yes");
  assert.equal((await s.exec("pwd; echo $KEPT $S")).stdout, "/workspace\nyes 1\n");
  assert.equal((await sb.getSession("work")).info.cwd, "/workspace");
  assert.ok((await sb.listSessions()).some((x) => x.id === "work"));
  await s.writeFile("rel.txt", "from session");
  assert.equal((await sb.readFile("/workspace/rel.txt")).content, "from session");
  const stream = await s.execStream("sleep 30");
  const it = stream[Symbol.asyncIterator]();
  assert.equal((await it.next()).value?.type, "start");
  await s.cancel();
  let ev;
  for (let n = await it.next(); !n.done; n = await it.next()) ev = n.value;
  assert.equal(ev?.result?.canceled, true);
  await s.delete();
  await assert.rejects(sb.getSession("work"), NotFoundError);
});

test("files", { skip }, async () => {
  const info = await sb.writeFile("/tmp/d/a.txt", "hello", { mkdir: true, mode: 0o600 });
  assert.deepEqual([info.size, info.mode], [5, "0600"]);
  assert.equal((await sb.readFile("/tmp/d/a.txt")).content, "hello");
  assert.deepEqual((await sb.readFile("/tmp/d/a.txt", { encoding: "binary" })).content, Buffer.from("hello"));
  await sb.mkdir("/tmp/d/sub/deep", { recursive: true });
  assert.deepEqual((await sb.listFiles("/tmp/d")).map((f) => f.name).sort(), ["a.txt", "sub"]);
  assert.equal((await sb.statFile("/tmp/d")).type, "dir");
  await sb.writeFile("/tmp/d/b.txt", Readable.from([Buffer.from("stre"), Buffer.from("am")]));
  await assert.rejects(sb.renameFile("/tmp/d/a.txt", "/tmp/d/b.txt"), ConflictError);
  await sb.moveFile("/tmp/d/a.txt", "/tmp/d/b.txt", { overwrite: true });
  assert.equal((await sb.readFile("/tmp/d/b.txt")).content, "hello");
  await assert.rejects(sb.writeFile("/tmp/d/big", "x".repeat(100), { maxBytes: 10 }), PayloadTooLargeError);
  await sb.deleteFile("/tmp/d", { recursive: true });
  await assert.rejects(sb.statFile("/tmp/d"), NotFoundError);
});

test("watch", { skip }, async () => {
  await sb.mkdir("/tmp/w");
  const w = await sb.watch("/tmp/w");
  await sb.writeFile("/tmp/w/new", "x");
  for await (const ev of w) if (ev.path === "/tmp/w/new") break;
  w.close();
});

test("100 MB streamed up and down without holding it", { skip }, async () => {
  const chunk = Buffer.alloc(1 << 20, 7);
  const want = createHash("sha256");
  for (let i = 0; i < 100; i++) want.update(chunk);
  async function* chunks() {
    for (let i = 0; i < 100; i++) yield chunk;
  }
  const before = process.memoryUsage().arrayBuffers;
  assert.equal((await sb.writeFile("/tmp/big.bin", chunks())).size, 100 << 20);
  const got = createHash("sha256");
  let n = 0;
  let peak = 0;
  for await (const c of await sb.readFileStream("/tmp/big.bin")) {
    got.update(c);
    n += c.length;
    peak = Math.max(peak, process.memoryUsage().arrayBuffers - before);
  }
  assert.equal(n, 100 << 20);
  assert.equal(got.digest("hex"), want.digest("hex"));
  assert.ok(peak < 64 << 20, `held ${peak} bytes of buffers while reading 100 MiB`);
  await sb.deleteFile("/tmp/big.bin");
});

test("processes", { skip }, async () => {
  const p = await sb.startProcess("echo started; read l; echo got $l; exit 7", { id: "reader", stdin: "pipe" });
  await p.waitForLog("started");
  await p.writeStdin("hi\n", { close: true });
  assert.equal((await p.waitForExit(10000)).exitCode, 7);
  assert.equal((await sb.getProcessLogs("reader")).stdout, "started\ngot hi\n");
  let streamed = "";
  for await (const ev of await sb.streamProcessLogs("reader")) streamed += ev.data;
  assert.equal(streamed, "started\ngot hi\n");
  assert.ok((await sb.listProcesses()).some((x) => x.id === "reader"));
  await p.remove();
  await assert.rejects(sb.getProcess("reader"), NotFoundError);
  const sleeper = await sb.startProcess(["sleep", "60"]);
  await assert.rejects(sleeper.waitForExit(200), ConditionNotMetError);
  await sb.killProcess(sleeper.id, "KILL");
  assert.equal((await sleeper.waitForExit()).status, "killed");
});

test("env, network, ports", { skip }, async () => {
  await sb.setEnvVars({ ADDED: "1", GONE: "x" });
  assert.equal((await sb.setEnvVars({}, { unset: ["GONE"] })).env?.GONE, undefined);
  assert.equal((await sb.exec("echo $ADDED")).stdout, "1\n");
  assert.equal((await sb.setNetwork({ mode: "none" })).network.mode, "none");
  assert.equal((await sb.setNetwork({ mode: "egress" })).network.mode, "egress");
  const web = await sb.startProcess(["python3", "-m", "http.server", "8001", "--directory", "/etc"]);
  try {
    await sb.waitForPort(web.id, 8001, { timeout: 20000 });
    const port = await sb.exposePort(8001);
    assert.equal(port.url, `http://127.0.0.1:${port.hostPort}`);
    assert.equal((await fetch(port.url + "/hostname")).status, 200);
    assert.deepEqual((await sb.getExposedPorts()).map((x) => x.port), [8001]);
    await sb.unexposePort(8001);
    assert.deepEqual(await sb.getExposedPorts(), []);
  } finally {
    await web.kill("KILL");
  }
});

test("terminal", { skip }, async () => {
  const s = await sb.createSession({ id: "tty", shell: "bash" });
  const term = await s.terminal();
  term.resize(100, 30);
  term.write("echo $((6*7))-$COLUMNS\r");
  await term.readUntil("42-100");
  term.close();
  await s.delete();
});

test("code contexts", { skip }, async () => {
  const cc = await sb.createCodeContext({ language: "python", cwd: "/tmp" });
  await sb.runCode("x = 41", { context: cc });
  const r = await sb.runCode("print('hi'); x + 1", { context: cc });
  assert.deepEqual([r.stdout, r.text], ["hi\n", "42"]);
  const mixed = await sb.runCode("import sys; print('t'); sys.stdout.flush(); sys.stderr.buffer.write(b'\\xff'); sys.stderr.flush()", { context: cc });
  assert.deepEqual([mixed.stdout, mixed.stdoutEncoding, mixed.stderrEncoding], ["t\n", "utf-8", "base64"]);
  assert.equal((await sb.runCode("1/0", { context: cc.id })).error?.name, "ZeroDivisionError");
  assert.ok((await sb.listCodeContexts()).some((c) => c.id === cc.id));
  await sb.deleteCodeContext(cc.id);
  assert.equal((await sb.runCode("2 + 3")).text, "5");
  assert.deepEqual(await sb.listCodeContexts(), []);
});

test("pause, resume, destroy", { skip }, async () => {
  const other = await client.createSandbox({ id: name("pause"), image: "busybox" });
  assert.equal((await other.pause()).status, "paused");
  assert.equal((await other.resume()).status, "running");
  await other.destroy();
  await assert.rejects(client.getSandbox(other.id), NotFoundError);
});
