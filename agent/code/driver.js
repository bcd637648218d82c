// The nsbox code context driver for JavaScript (Node 18+, no packages). It runs cells sent as
// JSON lines on stdin in one vm context that persists between them, and reports on fd 3, as
// JSON lines: stdout and stderr chunks (base64), results (MIME bundles: the last expression's
// value, display() calls), an error, and the end of each cell.
'use strict';
const fs = require('fs');
const readline = require('readline');
const util = require('util');
const vm = require('vm');
const { Console } = require('console');
const { Writable } = require('stream');

// send writes an event as one whole line (a write a signal cuts short is finished).
function send(ev) {
  const line = Buffer.from(JSON.stringify(ev) + '\n');
  for (let off = 0; off < line.length;) off += fs.writeSync(3, line, off);
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
