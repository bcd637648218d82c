// The example script runs as a user would run it, from the repository root, after the build.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("../../../../", import.meta.url));

test("examples/done-when.mjs", { skip: !process.env.NSBOX_HOST && "NSBOX_HOST names no daemon" }, () => {
  const out = execFileSync("node", ["sdk/typescript/examples/done-when.mjs"], { cwd: root, encoding: "utf8" });
  assert.match(out, /100 MB file: wrote 104857600 bytes/);
  assert.match(out, /served from nsbox/);
  assert.match(out, /removed /);
});
