// The SDK over TLS with a token (cmd/nsbox's TestSDKRemote sets NSBOX_HOST=https://…, NSBOX_TOKEN, NSBOX_CA).
import { test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { Client, DaemonUnreachableError, ForbiddenError, UnauthorizedError } from "../src/index.js";

const skip = !process.env.NSBOX_HOST?.startsWith("https://") && "needs a TLS listener in NSBOX_HOST";

test("TLS, tokens, terminal", { skip }, async () => {
  const admin = new Client();
  assert.ok(await admin.version());
  await assert.rejects(new Client({ token: "wrong" }).listSandboxes(), UnauthorizedError);
  await assert.rejects(new Client({ ca: "/etc/ssl/certs/ca-certificates.crt" }).version(), DaemonUnreachableError);
  const sb = await admin.createSandbox({ id: `remote-${randomBytes(4).toString("hex")}` });
  try {
    assert.equal((await sb.exec("echo over tls")).stdout, "over tls\n");
    await sb.writeFile("/tmp/x", "bytes");
    const tok = await admin.createToken({ sandbox: sb.id, permission: "read", ttlSeconds: 600 });
    assert.ok((await admin.listTokens()).some((t) => t.id === tok.id));
    const reader = new Client({ token: tok.token });
    const mine = await reader.getSandbox(sb.id);
    assert.equal((await mine.readFile("/tmp/x")).content, "bytes");
    await assert.rejects(mine.writeFile("/tmp/y", "no"), ForbiddenError);
    await assert.rejects(reader.listSandboxes(), ForbiddenError);
    await admin.revokeToken(tok.id);
    await assert.rejects(reader.getSandbox(sb.id), UnauthorizedError);
    const s = await sb.createSession({ id: "term" });
    const term = await s.terminal();
    term.write("echo $((40+2))\r");
    await term.readUntil("42");
    term.close();

    // A session token: its URLs are this listener's, it reaches its own session and no other.
    const st = await s.createToken({ permission: "write", ttlSeconds: 600 });
    assert.deepEqual([st.api, st.terminal], [process.env.NSBOX_HOST, `${process.env.NSBOX_HOST!.replace("https:", "wss:")}/v1/sandboxes/${sb.id}/sessions/term/terminal`]);
    const browser = await new Client({ token: st.token }).getSandbox(sb.id);
    assert.equal((await (await browser.getSession("term")).exec("echo mine")).stdout, "mine\n");
    await assert.rejects(browser.exec("echo default"), ForbiddenError);
    await assert.rejects(new Client({ token: st.token }).metrics(), ForbiddenError);
    assert.match(await admin.metrics(), /^nsbox_api_requests_total\{/m);
  } finally {
    await sb.destroy();
  }
});
