// Reading streams from a server that sends them in awkward pieces (no daemon needed).
import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer, type ServerResponse } from "node:http";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setImmediate as tick } from "node:timers/promises";
import { Client } from "../src/index.js";

/** Runs fn against a server whose every POST and stream is answered by answer, and every other GET with a sandbox. */
async function withServer(answer: (res: ServerResponse) => Promise<void>, fn: (c: Client) => Promise<void>) {
  const dir = mkdtempSync(join(tmpdir(), "nsbox-ts-"));
  const server = createServer((req, res) => {
    req.resume();
    if (req.method === "GET" && req.headers.accept !== "text/event-stream") return void res.writeHead(200, { "Content-Type": "application/json" }).end(JSON.stringify({ id: "box", status: "running" }));
    req.on("end", () => void answer(res));
  });
  const socket = join(dir, "d.sock");
  await new Promise<void>((resolve) => server.listen(socket, resolve));
  try {
    await fn(new Client({ host: `unix://${socket}` }));
  } finally {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
    rmSync(dir, { recursive: true, force: true });
  }
}

test("an event split inside a character and across many pieces", async () => {
  const text = "é".repeat(40000) + "€";
  const event = Buffer.from(`event: stdout\ndata: ${JSON.stringify({ type: "stdout", data: text, encoding: "utf-8" })}\n\n`);
  const exit = `event: exit\ndata: ${JSON.stringify({ type: "exit", result: { exitCode: 0, stdout: "", stderr: "", sessionId: "default" } })}\n\n`;
  await withServer(async (res) => {
    res.writeHead(200, { "Content-Type": "text/event-stream" });
    // Odd-sized pieces split the two-byte "é" (and the lines) over and over.
    for (let at = 0; at < event.length; at += 4097) {
      res.write(event.subarray(at, at + 4097));
      await tick();
    }
    res.end(exit);
  }, async (c) => {
    const sb = await c.getSandbox("box");
    let got = "";
    for await (const ev of await sb.execStream("x")) if (ev.type === "stdout") got += ev.data;
    assert.equal(got, text);
  });
});

test("frames split across many pieces, and a daemon's plain JSON answer", async () => {
  const frame = (event: string, payload: Buffer) => {
    const head = Buffer.alloc(1 + event.length + 4);
    head[0] = event.length;
    head.write(event, 1);
    head.writeUInt32BE(payload.length, 1 + event.length);
    return Buffer.concat([head, payload]);
  };
  const out = Buffer.alloc(3 << 20, "x");
  const body = Buffer.concat([frame("stdout", out), frame("stderr", Buffer.from([0xff])),
    frame("exit", Buffer.from(JSON.stringify({ type: "exit", result: { exitCode: 0, stdout: "", stderr: "", stdoutEncoding: "utf-8", stderrEncoding: "raw", sessionId: "default" } })))]);
  await withServer(async (res) => {
    res.writeHead(200, { "Content-Type": "application/x-nsbox-frames" });
    for (let at = 0; at < body.length; at += 65521) {
      res.write(body.subarray(at, at + 65521));
      await tick();
    }
    res.end();
  }, async (c) => {
    const r = await (await c.getSandbox("box")).exec("x");
    assert.deepEqual([r.stdoutBytes.equals(out), [...r.stderrBytes], r.exitCode], [true, [0xff], 0]);
  });
  await withServer(async (res) => {
    res.writeHead(200, { "Content-Type": "application/json" }).end(JSON.stringify({ exitCode: 3, stdout: "aGkK", stdoutEncoding: "base64",
      stderr: "oops\n", stderrEncoding: "utf-8", stdoutTruncated: true, truncated: true, sessionId: "default" }));
  }, async (c) => {
    const r = await (await c.getSandbox("box")).exec("x");
    assert.deepEqual([r.exitCode, r.stdout, r.stderr, r.stdoutTruncated, r.truncated, r.sessionId], [3, "hi\n", "oops\n", true, true, "default"]);
  });
});

test("a followed stream whose connection breaks throws; one closed ends", async () => {
  const stats = `event: stats\ndata: ${JSON.stringify([{ id: "box" }])}\n\n`;
  await withServer(async (res) => {
    res.writeHead(200, { "Content-Type": "text/event-stream" });
    res.write(stats);
    await tick();
    res.socket?.destroy();
  }, async (c) => {
    const seen: unknown[] = [];
    await assert.rejects(async () => {
      for await (const list of await c.streamStats()) seen.push(list);
    });
    assert.deepEqual(seen, [[{ id: "box" }]]);
  });
  await withServer(async (res) => {
    res.writeHead(200, { "Content-Type": "text/event-stream" });
    res.write(stats);
  }, async (c) => {
    const stream = await c.streamStats();
    const seen: unknown[] = [];
    for await (const list of stream) {
      seen.push(list);
      stream.close();
    }
    assert.deepEqual(seen, [[{ id: "box" }]]);
  });
});
