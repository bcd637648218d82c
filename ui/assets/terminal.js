// nsbox's web terminal: attaches xterm.js to a session's terminal WebSocket (see
// docs/architecture.md, "The web terminal"). The URL names the session and carries the token:
//   /ui/terminal?sandbox=ID&session=SID#token=TOKEN
// The token goes in the WebSocket's subprotocol (browsers cannot set headers on a WebSocket);
// one given as ?token= is moved into the fragment, which browsers never send to a server.
import { Terminal } from './vendor/xterm.mjs';
import { FitAddon } from './vendor/addon-fit.mjs';

const query = new URLSearchParams(location.search);
const fragment = new URLSearchParams(location.hash.slice(1));
if (query.has('token')) {
  fragment.set('token', query.get('token'));
  query.delete('token');
  history.replaceState(null, '', `${location.pathname}?${query}#${fragment}`);
}
const token = fragment.get('token');
const sandbox = query.get('sandbox');
const session = query.get('session') || 'default';

const statusEl = document.getElementById('status');
const modeEl = document.getElementById('mode');
function status(text, error = false) {
  statusEl.textContent = text;
  statusEl.classList.toggle('error', error);
}

const term = new Terminal({ cursorBlink: true, scrollback: 10000, convertEol: false });
const fit = new FitAddon();
term.loadAddon(fit);
term.open(document.getElementById('terminal'));
fit.fit();
// State a test (or an embedding page) can read: the terminal, and whether it may type.
// replaying: the scrollback is being drawn; nothing is sent until it is (see 'live' below).
const state = { term, readOnly: false, connected: false, ended: false, replaying: true };
window.nsboxTerminal = state;

const encoder = new TextEncoder();
let ws = null;

function send(data) {
  if (ws && ws.readyState === WebSocket.OPEN && !state.readOnly && !state.replaying) ws.send(data);
}
function sendSize() {
  send(JSON.stringify({ type: 'resize', cols: term.cols, rows: term.rows }));
}
term.onData((d) => send(encoder.encode(d)));
term.onBinary((d) => send(Uint8Array.from(d, (c) => c.charCodeAt(0))));
term.onResize(sendSize);
new ResizeObserver(() => fit.fit()).observe(document.getElementById('terminal'));

function setReadOnly(reason) {
  state.readOnly = true;
  term.options.disableStdin = true;
  modeEl.textContent = 'read-only';
  modeEl.title = reason;
}

// notice handles a text frame: the server's TerminalEvent notices.
function notice(ev) {
  switch (ev.type) {
    case 'readonly':
      setReadOnly(ev.data);
      break;
    case 'live':
      // The replay is over. Once xterm.js has drawn it (a write's callback runs after the data
      // before it is parsed), send again: keys, and the focus or mouse reports of modes the
      // replay left on. Reports made while modes the replay turned on and off again were on
      // (say, a focus report of a vim that has since quit) must not reach the shell.
      term.write('', () => {
        state.replaying = false;
        sendSize();
      });
      break;
    case 'skipped':
      term.write(`\r\n\x1b[2m[nsbox: ${ev.skipped} bytes of output were dropped]\x1b[0m\r\n`);
      break;
    case 'ended':
      state.ended = true;
      status('the session ended', true);
      break;
    default:
      status(ev.data || ev.type, ev.type === 'error');
  }
}

let retry = 0;
// How long a handshake may take before it is given up and tried again: one that hangs (a lost
// packet, a connection the browser or a proxy holds) would otherwise leave the page connecting
// for good, since the socket then neither opens nor closes.
const connectTimeout = 5000;
function connect() {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const url = `${scheme}//${location.host}/v1/sandboxes/${encodeURIComponent(sandbox)}/sessions/${encodeURIComponent(session)}/terminal`;
  ws = new WebSocket(url, ['nsbox.terminal', `nsbox.token.${token}`]);
  ws.binaryType = 'arraybuffer';
  let opened = false;
  const sock = ws;
  const giveUp = setTimeout(() => sock.close(), connectTimeout); // closing it fires onclose
  ws.onopen = () => {
    clearTimeout(giveUp);
    opened = true;
    retry = 0;
    state.connected = true;
    state.replaying = true;
    // Each connection starts with the scrollback: draw it on a clean screen.
    term.reset();
    status(`${sandbox} / ${session}`);
    term.focus();
  };
  ws.onmessage = (m) => {
    if (typeof m.data === 'string') notice(JSON.parse(m.data));
    else term.write(new Uint8Array(m.data));
  };
  ws.onclose = (e) => {
    clearTimeout(giveUp);
    state.connected = false;
    if (state.ended) return;
    // A refused handshake (a bad, expired or revoked token; no such session) closes before
    // opening; the browser does not say why. Either way, try again, less and less often.
    const delay = Math.min(10000, 500 * 2 ** retry++);
    status(opened ? `disconnected (${e.code}); reconnecting…` : 'cannot connect (is the token valid and the session there?); retrying…', true);
    setTimeout(connect, delay);
  };
}

document.getElementById('title').textContent = `nsbox · ${sandbox} · ${session}`;
if (!token || !sandbox) {
  status('the URL needs ?sandbox=ID&session=SID#token=TOKEN', true);
} else {
  connect();
}
