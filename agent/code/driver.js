// The nsbox code context driver for JavaScript (Node 18+, no packages). It runs cells sent as
// JSON lines on stdin in one vm context that persists between them, and reports on fd 3, as
// JSON lines: stdout and stderr chunks (base64), results (MIME bundles: the last expression's
// value, display() calls), an error, and the end of each cell. What the process's fds 1 and 2
// get (subprocesses, process.stdout) the agent reads; each event here is fenced: a marker
// written into fds 1 and 2 first, which the agent waits for before it passes the event on, so
// that what was written there before comes before it.
'use strict';
const fs = require('fs');
const readline = require('readline');
const util = require('util');
const vm = require('vm');
const { Console } = require('console');
const { Writable } = require('stream');

const fenceToken = process.argv.splice(1, 1)[0]; // the agent's, for this interpreter
let fenceSeq = 0;

// writeAll writes the whole buffer (a write a signal cuts short is finished).
function writeAll(fd, buf) {
  for (let off = 0; off < buf.length;) off += fs.writeSync(fd, buf, off);
}

// send writes an event as one line on fd 3, after its fence in fds 1 and 2 (an event whose
// fence could not be written, fd 1 closed say, goes without: fence 0).
function send(ev) {
  fenceSeq++;
  const marker = Buffer.from(`\0nsbox-fence:${fenceToken}:${fenceSeq.toString(16).padStart(8, '0')}\0`);
  let fence = fenceSeq;
  try {
    writeAll(1, marker);
    writeAll(2, marker);
  } catch (e) {
    fence = 0;
  }
  writeAll(3, Buffer.from(JSON.stringify({ ...ev, fence }) + '\n'));
}

function stream(name) {
  return new Writable({
    write(chunk, encoding, done) {
      send({ type: name, data: Buffer.from(chunk, encoding).toString('base64') });
      done();
    },
  });
}

function bundle(value) {
  const out = { 'text/plain': util.inspect(value) };
  if (value !== null && typeof value === 'object' && (Array.isArray(value) || Object.getPrototypeOf(value) === Object.prototype)) {
    try {
      out['application/json'] = JSON.parse(JSON.stringify(value));
    } catch (e) { /* not JSON */ }
  }
  return out;
}

const globals = {
  require, module, process, Buffer, URL, URLSearchParams, TextEncoder, TextDecoder,
  setTimeout, clearTimeout, setInterval, clearInterval, setImmediate, clearImmediate, queueMicrotask,
  console: new Console(stream('stdout'), stream('stderr')),
  display: (...values) => values.forEach((v) => send({ type: 'result', data: bundle(v) })),
};
vm.createContext(globals);

async function run(req) {
  try {
    const options = { filename: '<cell>', displayErrors: false };
    if (req.timeoutMs > 0) options.timeout = req.timeoutMs;
    let value = vm.runInContext(req.code, globals, options);
    if (value && typeof value.then === 'function') value = await value;
    if (value !== undefined) send({ type: 'result', data: bundle(value) });
  } catch (e) {
    const timedOut = e && e.code === 'ERR_SCRIPT_EXECUTION_TIMEOUT';
    send({
      type: 'error',
      name: timedOut ? 'TimeoutError' : (e && e.name) || 'Error',
      value: String(e && e.message !== undefined ? e.message : e),
      traceback: (e && e.stack) || String(e),
    });
  }
  send({ type: 'end' });
}

let queue = Promise.resolve();
readline.createInterface({ input: process.stdin }).on('line', (line) => {
  const req = JSON.parse(line);
  queue = queue.then(() => run(req));
});
