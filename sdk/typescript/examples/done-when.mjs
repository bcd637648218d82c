// The "done when" scenario with nothing but the SDK: a session that keeps cd and export,
// a streamed command, a 100 MB file written and read, a web server exposed and fetched, and the
// sandbox removed. Run from the repository root as root, after `npm ci && npm run build` in
// sdk/typescript:   node sdk/typescript/examples/done-when.mjs
import { createHash } from "node:crypto";
import { Client } from "../dist/src/index.js";

const MB = 1 << 20;
const client = new Client();
const sb = await client.createSandbox();
console.log("sandbox", sb.id);
try {
  const s = await sb.createSession({ id: "work", cwd: "/tmp" });
  await s.exec("mkdir -p /workspace/app && cd /workspace/app && export GREETING=hello");
  const res = await s.exec('echo "$GREETING from $(pwd)"');
  if (res.stdout !== "hello from /workspace/app\n") throw new Error(`session lost its state: ${res.stdout}`);
  console.log("session:", res.stdout.trim());

  for await (const ev of await sb.execStream("for i in 1 2 3; do echo line $i; sleep 0.1; done")) {
    if (ev.type === "stdout") console.log("streamed:", ev.data.trim());
    if (ev.type === "exit" && ev.result.exitCode !== 0) throw new Error("stream failed");
  }

  const block = Buffer.alloc(MB, "nsbox");
  async function* hundred() {
    for (let i = 0; i < 100; i++) yield block;
  }
  const info = await sb.writeFile("/workspace/big.bin", hundred());
  const want = createHash("sha256");
  for (let i = 0; i < 100; i++) want.update(block);
  const got = createHash("sha256");
  let n = 0;
  for await (const chunk of await sb.readFileStream("/workspace/big.bin")) {
    got.update(chunk);
    n += chunk.length;
  }
  if (n !== 100 * MB || info.size !== n || got.digest("hex") !== want.digest("hex")) throw new Error("the 100 MB file differs");
  console.log(`100 MB file: wrote ${info.size} bytes, read ${n} back, same sha256`);

  await sb.writeFile("/workspace/site/index.html", "<h1>served from nsbox</h1>\n", { mkdir: true });
  const web = await sb.startProcess(["python3", "-m", "http.server", "8000", "--directory", "/workspace/site"]);
  await web.waitForPort(8000, { timeout: 20000 });
  const port = await sb.exposePort(8000);
  const body = await (await fetch(port.url)).text(); // http://127.0.0.1:HOSTPORT
  if (body !== "<h1>served from nsbox</h1>\n") throw new Error(`fetched ${body}`);
  console.log("fetched", port.url, "->", body.trim());
} finally {
  await sb.destroy();
}
console.log("removed", sb.id);
