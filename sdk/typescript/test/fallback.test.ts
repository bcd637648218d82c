// exec against a daemon from before frames, which answers one JSON document (no daemon needed).
import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Client } from "../src/index.js";

test("exec from a daemon without frames", async () => {
  const dir = mkdtempSync(join(tmpdir(), "nsbox-ts-"));
  const accepts: (string | undefined)[] = [];
  const server = createServer((req, res) => {
    const body = req.method === "GET" ? { id: "box", status: "running" }
      : { exitCode: 3, stdout: "aGkK", stdoutEncoding: "base64", stderr: "oops\n", stderrEncoding: "utf-8", stdoutTruncated: true, truncated: true, sessionId: "default" };
    if (req.method === "POST") accepts.push(req.headers.accept);
    req.resume();
    req.on("end", () => res.writeHead(200, { "Content-Type": "application/json" }).end(JSON.stringify(body)));
  });
  const socket = join(dir, "d.sock");
  await new Promise<void>((resolve) => server.listen(socket, resolve));
  try {
    const sb = await new Client({ host: `unix://${socket}` }).getSandbox("box");
    const r = await sb.exec("x");
    assert.deepEqual(accepts, ["application/x-nsbox-frames"]);
    assert.deepEqual([r.exitCode, r.stdout, r.stderr, r.stdoutTruncated, r.truncated, r.sessionId], [3, "hi\n", "oops\n", true, true, "default"]);
  } finally {
    await new Promise((resolve) => server.close(resolve));
    rmSync(dir, { recursive: true, force: true });
  }
});
