/**
 * @nsbox/sdk — the TypeScript SDK of the nsbox sandbox daemon, shaped like Cloudflare's Sandbox SDK.
 *
 *     import { Client } from "@nsbox/sdk";
 *     const sb = await new Client().createSandbox();
 *     const s = await sb.createSession({ id: "work", cwd: "/workspace" });
 *     await s.exec("cd /tmp && export A=1");
 *     console.log((await s.exec("echo $A $PWD")).stdout);
 *     await sb.destroy();
 *
 * Wire types are generated from api/openapi.json (src/generated/openapi.ts).
 */
import type { Readable } from "node:stream";
import type { components } from "./generated/openapi.js";
import { ConditionNotMetError, NsboxError, errorFor } from "./errors.js";
import { Transport, readAll, type Body, type ClientOptions, type EventStream } from "./http.js";
import { BINARY, TEXT, WebSocket, newKey } from "./websocket.js";

export * from "./errors.js";
export type { Body, ClientOptions } from "./http.js";

type S = components["schemas"];
export type SandboxInfo = S["Sandbox"];
export type CreateSandboxOptions = S["CreateSandboxRequest"];
export type SessionInfo = S["Session"];
export type CreateSessionOptions = S["CreateSessionRequest"];
export type FileInfo = S["FileInfo"];
export type FileEvent = S["FileEvent"];
export type ExposedPort = S["ExposedPort"];
export type ExposePortOptions = Partial<Omit<S["ExposePortRequest"], "port">>;
export type ProcessInfo = S["Process"];
export type StartProcessOptions = Partial<Omit<S["StartProcessRequest"], "command" | "argv">>;
export type WaitProcessResult = S["WaitProcessResult"];
export type CodeContextInfo = S["CodeContext"];
export type WireRunCodeResult = S["RunCodeResult"];
export type TokenInfo = S["Token"];
export type NewToken = S["NewToken"];
export type NetworkSpec = S["NetworkSpec"];
export type ImageInfo = S["ImageInfo"];
export type ImagePullEvent = S["ImagePullEvent"];
export type RegistryAuth = S["RegistryAuth"];
export type PruneImagesResult = S["PruneImagesResult"];
export type PermissionRule = S["PermissionRule"];
export type SessionToken = S["SessionToken"];
export type CreateSessionTokenOptions = S["CreateSessionTokenRequest"];
export type SnapshotInfo = S["Snapshot"];
export type SandboxStats = S["SandboxStats"];
export type DaemonEvent = S["Event"];
export type CodeEvent = S["CodeEvent"];
export type GitProgressEvent = S["GitProgressEvent"];
type WireExecResult = S["ExecResult"];

/** A command: a shell string, or an argv array. */
export type Command = string | string[];

/**
 * A finished command; stdout and stderr as text (and bytes, for binary output), each decoded
 * from its own wire encoding (raw.stdoutEncoding, raw.stderrEncoding: exec gets the output as
 * raw frames, so "utf-8" for text and "raw" for bytes that are not).
 */
export interface ExecResult {
  exitCode: number;
  success: boolean;
  stdout: string;
  stderr: string;
  stdoutBytes: Buffer;
  stderrBytes: Buffer;
  timedOut: boolean;
  canceled: boolean;
  /** stdout had more than maxOutputBytes and was cut. */
  stdoutTruncated: boolean;
  /** stderr had more than maxOutputBytes and was cut. */
  stderrTruncated: boolean;
  /** Either stream was cut. */
  truncated: boolean;
  durationMs: number;
  sessionId: string;
  /** The kernel killed the command for lack of memory (the sandbox's limit). */
  oomKilled: boolean;
  raw: WireExecResult;
}

/** One event of a streamed command: "start", "stdout", "stderr", or "exit" with its result. */
export interface ExecEvent {
  type: "start" | "stdout" | "stderr" | "exit";
  /** The output chunk as text (utf-8; binary output is decoded lossily, see `bytes`). */
  data: string;
  bytes: Buffer;
  result?: ExecResult;
}

export interface ExecOptions {
  env?: Record<string, string>;
  cwd?: string;
  /** Milliseconds before the command is stopped (result.timedOut). */
  timeout?: number;
  stdin?: string | Uint8Array;
  /**
   * Kill the command when its connection closes before it has finished (a stream closed
   * early, a request that fails on the client), so the session's next command does not wait
   * behind it. Default true; false lets it run to its end.
   */
  killOnDisconnect?: boolean;
  /** The session to run in (default: the sandbox's "default" session). */
  sessionId?: string;
  /** The most bytes kept of each of stdout and stderr (default 128 MiB for exec; none for execStream). */
  maxOutputBytes?: number;
}

function decode(data: string | undefined, encoding: string | undefined): Buffer {
  return encoding === "base64" ? Buffer.from(data ?? "", "base64") : Buffer.from(data ?? "", "utf8");
}

/** What exec keeps of each stream unless told (the API's default for an answer as JSON). */
const DEFAULT_MAX_OUTPUT_BYTES = 128 << 20;

/**
 * The result of a command, its output decoded from the wire or given as bytes (from frames).
 * Its stdout and stderr text is decoded from the bytes when first read: 100 MiB of binary
 * output took 3 s to decode (0.3 s for text) in a call whose caller may want only the bytes.
 */
function execResult(r: WireExecResult, stdoutBytes = decode(r.stdout, r.stdoutEncoding), stderrBytes = decode(r.stderr, r.stderrEncoding)): ExecResult {
  const res = {
    exitCode: r.exitCode, success: r.exitCode === 0 && !r.timedOut, stdoutBytes, stderrBytes, timedOut: r.timedOut, canceled: r.canceled,
    stdoutTruncated: r.stdoutTruncated, stderrTruncated: r.stderrTruncated,
    truncated: r.truncated, durationMs: r.durationMs, sessionId: r.sessionId, oomKilled: r.oomKilled ?? false, raw: r,
  } as ExecResult;
  lazyText(res, "stdout", stdoutBytes);
  lazyText(res, "stderr", stderrBytes);
  return res;
}

/** Makes o[key] the UTF-8 text of bytes, decoded on its first read (or replaced by a write). */
function lazyText(o: object, key: string, bytes: Buffer): void {
  const settle = (value: string) => Object.defineProperty(o, key, { value, writable: true, enumerable: true, configurable: true });
  Object.defineProperty(o, key, {
    enumerable: true, configurable: true,
    get: () => { const text = bytes.toString("utf8"); settle(text); return text; },
    set: settle,
  });
}

function command(cmd: Command): { command?: string; argv?: string[] } {
  if (typeof cmd === "string") return { command: cmd };
  if (cmd.length === 0) throw new TypeError("empty argv: give a command string or a non-empty array");
  return { argv: cmd };
}

function execBody(cmd: Command, o: ExecOptions): Record<string, unknown> {
  const body: Record<string, unknown> = { ...command(cmd), env: o.env, cwd: o.cwd, timeoutMs: o.timeout, killOnDisconnect: o.killOnDisconnect ?? true, maxOutputBytes: o.maxOutputBytes };
  if (typeof o.stdin === "string") body.stdin = o.stdin;
  else if (o.stdin) Object.assign(body, { stdin: Buffer.from(o.stdin).toString("base64"), stdinEncoding: "base64" });
  return body;
}

/** An exec's method, route template, route parameters and extra body fields. */
type ExecRoute = ["POST", string, Record<string, string>, Record<string, unknown>];

/** An endless stream of values (stats, events, file events): iterate it; close() ends it. */
export type Follow<T> = AsyncIterable<T> & { close(): void };

/**
 * The data of a stream's events as an async iterable. An "error" event is thrown as its
 * NsboxError, a broken connection as its error; close() ends the iteration (the aborted read
 * it causes is not an error).
 */
function follow<T>(events: EventStream): Follow<T> {
  let closed = false;
  return {
    close: () => {
      closed = true;
      events.close();
    },
    async *[Symbol.asyncIterator]() {
      try {
        for await (const [, data] of events) yield data as T;
      } catch (err) {
        if (!closed || err instanceof NsboxError) throw err;
      }
    },
  };
}

/** A client of one nsbox daemon (unix socket by default; https + token + CA for a TCP listener). */
export class Client {
  private readonly t: Transport;

  constructor(opts: ClientOptions = {}) {
    this.t = new Transport(opts);
  }

  /** The daemon's version. */
  async version(): Promise<string> {
    return (await this.versionInfo()).version;
  }

  /** The daemon's version and what it can do: `checkpoint.available` (hibernate with memory). */
  versionInfo(): Promise<S["Version"]> {
    return this.t.call("GET", "/v1/version");
  }

  /** The images sandboxes can be made from. */
  images(): Promise<S["Image"][]> {
    return this.t.call("GET", "/v1/images");
  }

  /**
   * Pulls an image from its registry (Docker Hub by default) and resolves with it once stored;
   * onProgress gets each layer's progress as the daemon streams it.
   */
  async pullImage(ref: string, opts: { auth?: RegistryAuth; onProgress?: (ev: ImagePullEvent) => void } = {}): Promise<ImageInfo> {
    const events = await this.t.events("POST", "/v1/images/pull", { json: { ref, auth: opts.auth } });
    for await (const [, ev] of events as AsyncIterable<[string, ImagePullEvent]>) {
      if (ev.type === "progress") opts.onProgress?.(ev);
      else if (ev.type === "done" && ev.image) return ev.image;
    }
    throw errorFor("unavailable", `the pull of ${ref} ended before its image was stored`);
  }

  /**
   * Imports the images of a `docker save` archive or an OCI layout tar (plain, gzip or zstd),
   * streamed; name names the archive's one image.
   */
  async importImages(archive: Body, opts: { name?: string; size?: number } = {}): Promise<ImageInfo[]> {
    return (await this.t.call<S["ImportImagesResult"]>("POST", "/v1/images/import", { query: { name: opts.name }, body: archive, size: opts.size })).images;
  }

  /** An OCI image by name, digest or id (NotFoundError for none; built-in images are in images()). */
  getImage(name: string): Promise<ImageInfo> {
    return this.t.call("GET", "/v1/images/{name}", { params: { name } });
  }

  /**
   * Removes an image, or only this name of an image that has several; resolves with the image as
   * it was. An image a sandbox uses is a ConflictError, unless force (its names go, it stays).
   */
  removeImage(name: string, opts: { force?: boolean } = {}): Promise<ImageInfo> {
    return this.t.call("DELETE", "/v1/images/{name}", { params: { name }, query: { force: opts.force } });
  }

  /** Removes the dangling images no sandbox uses (all: every unused image), then unreferenced layers. */
  pruneImages(opts: { all?: boolean } = {}): Promise<PruneImagesResult> {
    return this.t.call("POST", "/v1/images/prune", { query: { all: opts.all } });
  }

  /** The snapshots, oldest first. */
  listSnapshots(): Promise<SnapshotInfo[]> {
    return this.t.call("GET", "/v1/snapshots");
  }

  /** One snapshot (NotFoundError for none). */
  getSnapshot(id: string): Promise<SnapshotInfo> {
    return this.t.call("GET", "/v1/snapshots/{id}", { params: { id } });
  }

  /** Removes a snapshot; a ConflictError while a sandbox made from it exists. */
  async deleteSnapshot(id: string): Promise<void> {
    await this.t.call("DELETE", "/v1/snapshots/{id}", { params: { id } });
  }

  /** Every sandbox's resource use, ordered by id. */
  stats(): Promise<SandboxStats[]> {
    return this.t.call("GET", "/v1/stats");
  }

  /** Every sandbox's resource use, at once and then every second; close() ends it. */
  async streamStats(): Promise<Follow<SandboxStats[]>> {
    return follow(await this.t.events("GET", "/v1/stats", { query: { stream: true } }));
  }

  /** The daemon's metrics in Prometheus's text format. */
  async metrics(): Promise<string> {
    return (await readAll(await this.t.send("GET", "/metrics", { accept: "text/plain" }))).toString("utf8");
  }

  /**
   * The daemon's events as they happen (sandboxes created, started, paused, removed, ports,
   * sessions, processes); with since, the kept events after that `seq` first. A stream that
   * fell too far behind throws an UnavailableError: follow again from the last `seq` read.
   */
  async followEvents(opts: { since?: number } = {}): Promise<Follow<DaemonEvent>> {
    return follow(await this.t.events("GET", "/v1/events", { query: { since: opts.since } }));
  }

  /** Creates a sandbox and resolves once it runs. */
  async createSandbox(opts: CreateSandboxOptions = {}): Promise<Sandbox> {
    return new Sandbox(this.t, await this.t.call("POST", "/v1/sandboxes", { json: opts }));
  }

  /** An existing sandbox. */
  async getSandbox(id: string): Promise<Sandbox> {
    return new Sandbox(this.t, await this.t.call("GET", "/v1/sandboxes/{id}", { params: { id } }));
  }

  /** Every sandbox. */
  async listSandboxes(): Promise<Sandbox[]> {
    return (await this.t.call<SandboxInfo[]>("GET", "/v1/sandboxes")).map((i) => new Sandbox(this.t, i));
  }

  /** Mints a scoped token (an admin call); its secret is `token`. */
  createToken(req: S["CreateTokenRequest"]): Promise<NewToken> {
    return this.t.call("POST", "/v1/tokens", { json: req });
  }

  /** Scoped tokens that have not expired. */
  listTokens(): Promise<TokenInfo[]> {
    return this.t.call("GET", "/v1/tokens");
  }

  /** Revokes a token; its requests, streams and terminals are cut at once. */
  async revokeToken(id: string): Promise<void> {
    await this.t.call("DELETE", "/v1/tokens/{tid}", { params: { tid: id } });
  }
}

/** What runs commands and touches files: a sandbox (its default session) or a session bound to it. */
abstract class Runner {
  constructor(protected readonly t: Transport, readonly sandboxId: string, protected readonly session?: string) {}

  /** The exec's method and route template (adjacent literals, as every request writes them), its parameters and body fields. */
  protected abstract execRoute(o: ExecOptions): ExecRoute;

  /** Runs a command and resolves with its result (its output read as raw frames, not JSON). */
  async exec(cmd: Command, opts: ExecOptions = {}): Promise<ExecResult> {
    const [method, route, params, extra] = this.execRoute(opts);
    const json = { ...execBody(cmd, opts), maxOutputBytes: opts.maxOutputBytes ?? DEFAULT_MAX_OUTPUT_BYTES, ...extra };
    const out: Record<string, Buffer[]> = { stdout: [], stderr: [] };
    const frames = await this.t.frames(method, route, { params, json });
    // A daemon from before frames answers one JSON document: the whole result.
    if (frames.isJSON) return execResult(await frames.json());
    for await (const [event, payload] of frames) {
      if (event in out) out[event].push(payload);
      else if (event === "exit") return execResult(JSON.parse(payload.toString("utf8")).result, Buffer.concat(out.stdout), Buffer.concat(out.stderr));
    }
    throw errorFor("unavailable", "the exec's answer ended before the command did");
  }

  /** Runs a command and yields its events as they come, ending with "exit" (its `result`). */
  async execStream(cmd: Command, opts: ExecOptions = {}): Promise<AsyncIterable<ExecEvent> & { close(): void }> {
    const [method, route, params, extra] = this.execRoute(opts);
    const events = await this.t.events(method, route, { params, json: { ...execBody(cmd, opts), ...extra } });
    return { close: () => events.close(), [Symbol.asyncIterator]: () => execEvents(events) };
  }

  private q(extra: Record<string, unknown> = {}) {
    return { ...extra, sessionId: this.session } as Record<string, string | number | boolean | undefined>;
  }

  /** Writes a file atomically from a string, bytes, a Readable or an async iterable of chunks (streamed). */
  writeFile(path: string, content: Body, opts: { mode?: number; mkdir?: boolean; uid?: number; gid?: number; maxBytes?: number; size?: number } = {}): Promise<FileInfo> {
    const query = this.q({ path, mkdir: opts.mkdir, mode: opts.mode === undefined ? undefined : (opts.mode & 0o7777).toString(8).padStart(4, "0"),
      uid: opts.uid, gid: opts.gid, maxBytes: opts.maxBytes });
    return this.t.call("PUT", "/v1/sandboxes/{id}/files", { params: { id: this.sandboxId }, query, body: content, size: opts.size });
  }

  /** Reads a whole file: as text (default) or, with encoding "binary", as bytes. */
  async readFile(path: string, opts: { encoding?: "utf-8" | "binary" } = {}): Promise<{ path: string; content: string | Buffer }> {
    const data = await readAll(await this.readFileStream(path));
    return { path, content: opts.encoding === "binary" ? data : data.toString("utf8") };
  }

  /** A file as a stream (from offset, length bytes or to the end), never loaded whole. */
  async readFileStream(path: string, opts: { offset?: number; length?: number } = {}): Promise<Readable> {
    const { offset = 0, length } = opts;
    const headers: Record<string, string> = {};
    if (length !== undefined) headers.Range = `bytes=${offset}-${offset + length - 1}`;
    else if (offset) headers.Range = `bytes=${offset}-`;
    return this.t.send("GET", "/v1/sandboxes/{id}/files", { params: { id: this.sandboxId }, query: this.q({ path }), headers, accept: "application/octet-stream" });
  }

  /** Describes a file (NotFoundError when missing). */
  statFile(path: string): Promise<FileInfo> {
    return this.t.call("GET", "/v1/sandboxes/{id}/files/stat", { params: { id: this.sandboxId }, query: this.q({ path }) });
  }

  /** Lists a directory, down to depth levels. */
  listFiles(path = ".", opts: { depth?: number; hidden?: boolean } = {}): Promise<FileInfo[]> {
    return this.t.call("GET", "/v1/sandboxes/{id}/files/list", { params: { id: this.sandboxId }, query: this.q({ path, ...opts }) });
  }

  /** Creates a directory (recursive: its parents too, and no error when it exists). */
  mkdir(path: string, opts: { recursive?: boolean; mode?: number } = {}): Promise<FileInfo> {
    const json = { path, parents: opts.recursive, mode: opts.mode === undefined ? undefined : (opts.mode & 0o7777).toString(8).padStart(4, "0") };
    return this.t.call("POST", "/v1/sandboxes/{id}/files/mkdir", { params: { id: this.sandboxId }, query: this.q(), json });
  }

  /** Removes a file (recursive: a directory and its content). */
  async deleteFile(path: string, opts: { recursive?: boolean } = {}): Promise<void> {
    await this.t.call("DELETE", "/v1/sandboxes/{id}/files", { params: { id: this.sandboxId }, query: this.q({ path, recursive: opts.recursive }) });
  }

  /** Renames a file; an existing destination is a ConflictError unless overwrite. */
  moveFile(from: string, to: string, opts: { overwrite?: boolean } = {}): Promise<FileInfo> {
    return this.t.call("POST", "/v1/sandboxes/{id}/files/move", { params: { id: this.sandboxId }, query: this.q(), json: { from, to, overwrite: opts.overwrite } });
  }

  /** Renames a file (moveFile without overwrite). */
  renameFile(oldPath: string, newPath: string): Promise<FileInfo> {
    return this.moveFile(oldPath, newPath);
  }

  /** Watches a directory; resolves once the watch is in place. Iterate its events; close() ends it. */
  async watch(path = ".", opts: { recursive?: boolean } = {}): Promise<Follow<FileEvent>> {
    return follow(await this.t.events("GET", "/v1/sandboxes/{id}/files/watch", { params: { id: this.sandboxId }, query: this.q({ path, recursive: opts.recursive }) }));
  }

  /** Starts a long-running process (from this session's state when bound to one). */
  async startProcess(cmd: Command, opts: StartProcessOptions = {}): Promise<Process> {
    const json = { ...command(cmd), ...opts, sessionId: opts.sessionId ?? this.session };
    return new Process(this.t, this.sandboxId, await this.t.call("POST", "/v1/sandboxes/{id}/processes", { params: { id: this.sandboxId }, json }));
  }

  /** The sandbox's processes (this session's when bound to one). */
  async listProcesses(opts: { status?: string } = {}): Promise<Process[]> {
    const list = await this.t.call<ProcessInfo[]>("GET", "/v1/sandboxes/{id}/processes", { params: { id: this.sandboxId }, query: this.q(opts) });
    return list.map((p) => new Process(this.t, this.sandboxId, p));
  }

  /** One process. */
  async getProcess(id: string): Promise<Process> {
    return new Process(this.t, this.sandboxId, await this.t.call("GET", "/v1/sandboxes/{id}/processes/{pid}", { params: { id: this.sandboxId, pid: id } }));
  }

  /** Signals a process's group (default TERM). */
  killProcess(id: string, signal: string | number = "TERM", graceMs?: number): Promise<ProcessInfo> {
    return new Process(this.t, this.sandboxId, { id } as ProcessInfo).kill(signal, graceMs);
  }

  /** Signals every running process. */
  killAllProcesses(signal: string | number = "TERM"): Promise<ProcessInfo[]> {
    return this.t.call("POST", "/v1/sandboxes/{id}/processes/kill", { params: { id: this.sandboxId }, json: { signal } });
  }

  /** Forgets every process that has ended (its log with it); resolves with them. */
  removeFinishedProcesses(): Promise<ProcessInfo[]> {
    return this.t.call("DELETE", "/v1/sandboxes/{id}/processes", { params: { id: this.sandboxId } });
  }

  /** A process's output so far (from cursor, at most limit bytes): stdout and stderr as text. */
  getProcessLogs(id: string, opts: { cursor?: number; limit?: number } = {}): Promise<ProcessLogs> {
    return new Process(this.t, this.sandboxId, { id } as ProcessInfo).getLogs(opts.cursor, opts.limit);
  }

  /** A process's output as it comes, until it ends. */
  streamProcessLogs(id: string, cursor = 0): Promise<AsyncIterable<ProcessLogEvent> & { close(): void }> {
    return new Process(this.t, this.sandboxId, { id } as ProcessInfo).streamLogs(cursor);
  }

  /** Waits until a process's sandbox listens on port. */
  waitForPort(processId: string, port: number, opts: { timeout?: number; path?: string } = {}): Promise<WaitProcessResult> {
    return new Process(this.t, this.sandboxId, { id: processId } as ProcessInfo).waitForPort(port, opts);
  }
}

/** A process's output read so far: `cursor` is where to read on; `done` once it ended and all was read. */
export interface ProcessLogs {
  stdout: string;
  stderr: string;
  cursor: number;
  done: boolean;
}

/** A chunk of a process's output. */
export interface ProcessLogEvent {
  type: "stdout" | "stderr" | "skipped";
  data: string;
  bytes: Buffer;
  cursor: number;
}

async function* execEvents(events: EventStream): AsyncGenerator<ExecEvent> {
  for await (const [, d] of events) {
    const bytes = decode(d.data, d.encoding);
    const ev: ExecEvent = { type: d.type, data: bytes.toString("utf8"), bytes, result: d.result ? execResult(d.result) : undefined };
    yield ev;
    if (ev.type === "exit" && ev.result) return;
  }
  throw new NsboxError("the exec stream ended before the command did");
}

/** A sandbox. */
export class Sandbox extends Runner {
  readonly id: string;

  constructor(t: Transport, public info: SandboxInfo) {
    super(t, info.id);
    this.id = info.id;
  }

  protected execRoute(o: ExecOptions): ExecRoute {
    return ["POST", "/v1/sandboxes/{id}/exec", { id: this.id }, { sessionId: o.sessionId }];
  }

  /** Reads the sandbox's record again. */
  async refresh(): Promise<SandboxInfo> {
    return (this.info = await this.t.call("GET", "/v1/sandboxes/{id}", { params: { id: this.id } }));
  }

  /** Stops and removes the sandbox (force: without a grace period). */
  async destroy(opts: { force?: boolean } = { force: true }): Promise<void> {
    await this.t.call("DELETE", "/v1/sandboxes/{id}", { params: { id: this.id }, query: { force: opts.force } });
  }

  /** Freezes every process. */
  async pause(): Promise<SandboxInfo> {
    return (this.info = await this.t.call("POST", "/v1/sandboxes/{id}/pause", { params: { id: this.id } }));
  }

  /** Lets a paused sandbox run again. */
  async resume(): Promise<SandboxInfo> {
    return (this.info = await this.t.call("POST", "/v1/sandboxes/{id}/resume", { params: { id: this.id } }));
  }

  /**
   * Stops every process and frees the sandbox's memory, keeping its files, network and sessions'
   * state; it runs again on resume() or on any request that needs it. memory (a CRIU checkpoint)
   * is refused with an InvalidArgumentError where the daemon has none (version's `checkpoint`).
   */
  async hibernate(opts: S["HibernateRequest"] = {}): Promise<SandboxInfo> {
    return (this.info = await this.t.call("POST", "/v1/sandboxes/{id}/hibernate", { params: { id: this.id }, json: opts }));
  }

  /** Snapshots the sandbox's files and sessions' state; make sandboxes of it with createSandbox({ fromSnapshot }). */
  createSnapshot(opts: S["CreateSnapshotRequest"] = {}): Promise<SnapshotInfo> {
    return this.t.call("POST", "/v1/sandboxes/{id}/snapshots", { params: { id: this.id }, json: opts });
  }

  /** Snapshots the sandbox and makes `count` (default 1) sandboxes of the snapshot, running. */
  async fork(opts: Partial<S["ForkRequest"]> = {}): Promise<{ snapshot: SnapshotInfo; sandboxes: Sandbox[] }> {
    const res = await this.t.call<S["ForkResult"]>("POST", "/v1/sandboxes/{id}/fork", { params: { id: this.id }, json: opts });
    return { snapshot: res.snapshot, sandboxes: res.sandboxes.map((i) => new Sandbox(this.t, i)) };
  }

  /** Replaces the per-path permission rules of a sandbox created with some; resolves with its record. */
  async setPermissions(rules: PermissionRule[]): Promise<SandboxInfo> {
    return (this.info = await this.t.call("PATCH", "/v1/sandboxes/{id}/permissions", { params: { id: this.id }, json: { permissions: rules } }));
  }

  /** The sandbox's resource use: CPU, memory, pids, OOM kills, disk, network, sessions, processes. */
  stats(): Promise<SandboxStats> {
    return this.t.call("GET", "/v1/sandboxes/{id}/stats", { params: { id: this.id } });
  }

  /** The sandbox's resource use at once and then every second; NotFoundError once it is removed. */
  async streamStats(): Promise<Follow<SandboxStats>> {
    return follow(await this.t.events("GET", "/v1/sandboxes/{id}/stats", { params: { id: this.id }, query: { stream: true } }));
  }

  /**
   * Mints a short-lived token held to one session (for a browser), with the API, terminal and web
   * terminal page URLs.
   */
  createSessionToken(sessionId = "default", opts: CreateSessionTokenOptions = {}): Promise<SessionToken> {
    return this.t.call("POST", "/v1/sandboxes/{id}/sessions/{sid}/tokens", { params: { id: this.id, sid: sessionId }, json: opts });
  }

  /** Creates a session: a shell whose cwd and exports persist, with these methods bound to it. */
  async createSession(opts: CreateSessionOptions = {}): Promise<ExecutionSession> {
    return new ExecutionSession(this.t, this.id, await this.t.call("POST", "/v1/sandboxes/{id}/sessions", { params: { id: this.id }, json: opts }));
  }

  /** An existing session. */
  async getSession(id: string): Promise<ExecutionSession> {
    return new ExecutionSession(this.t, this.id, await this.t.call("GET", "/v1/sandboxes/{id}/sessions/{sid}", { params: { id: this.id, sid: id } }));
  }

  /** The sandbox's sessions. */
  async listSessions(): Promise<ExecutionSession[]> {
    const list = await this.t.call<SessionInfo[]>("GET", "/v1/sandboxes/{id}/sessions", { params: { id: this.id } });
    return list.map((s) => new ExecutionSession(this.t, this.id, s));
  }

  /** Ends a session and kills everything it started. */
  async deleteSession(id: string): Promise<void> {
    await this.t.call("DELETE", "/v1/sandboxes/{id}/sessions/{sid}", { params: { id: this.id, sid: id } });
  }

  /** Sets (and unsets) variables of the sandbox's environment. */
  async setEnvVars(vars: Record<string, string>, opts: { unset?: string[] } = {}): Promise<SandboxInfo> {
    return (this.info = await this.t.call("PATCH", "/v1/sandboxes/{id}/env", { params: { id: this.id }, json: { set: vars, unset: opts.unset } }));
  }

  /** Changes the network mode (none, egress, allowlist). */
  async setNetwork(spec: NetworkSpec): Promise<SandboxInfo> {
    return (this.info = await this.t.call("PATCH", "/v1/sandboxes/{id}/network", { params: { id: this.id }, json: spec }));
  }

  /** Exposes a sandbox port on the host; fetch its `url`. */
  exposePort(port: number, opts: ExposePortOptions = {}): Promise<ExposedPort> {
    return this.t.call("POST", "/v1/sandboxes/{id}/ports", { params: { id: this.id }, json: { port, ...opts } });
  }

  /** Stops exposing a port. */
  async unexposePort(port: number, opts: { protocol?: "tcp" | "udp" } = {}): Promise<void> {
    await this.t.call("DELETE", "/v1/sandboxes/{id}/ports/{port}", { params: { id: this.id, port }, query: { protocol: opts.protocol } });
  }

  /** The exposed ports. */
  getExposedPorts(): Promise<ExposedPort[]> {
    return this.t.call("GET", "/v1/sandboxes/{id}/ports", { params: { id: this.id } });
  }

  /** Attaches to a bash session's terminal (a WebSocket). */
  terminal(sessionId = "default", opts: { cursor?: number } = {}): Promise<Terminal> {
    return Terminal.open(this.t, this.id, sessionId, opts.cursor);
  }

  /** Starts an interpreter ("python" or "javascript") that keeps state between runs. */
  async createCodeContext(opts: S["CreateCodeContextRequest"] = { language: "python" }): Promise<CodeContextInfo> {
    return this.t.call("POST", "/v1/sandboxes/{id}/contexts", { params: { id: this.id }, json: opts });
  }

  /** The code contexts. */
  listCodeContexts(): Promise<CodeContextInfo[]> {
    return this.t.call("GET", "/v1/sandboxes/{id}/contexts", { params: { id: this.id } });
  }

  /** Ends a code context. */
  async deleteCodeContext(id: string): Promise<void> {
    await this.t.call("DELETE", "/v1/sandboxes/{id}/contexts/{cid}", { params: { id: this.id, cid: id } });
  }

  /** Runs code in a context; without one, in a new context of `language` deleted afterwards. */
  async runCode(code: string, opts: { context?: CodeContextInfo | string; language?: "python" | "javascript"; timeout?: number } = {}): Promise<RunCodeResult> {
    let cid = typeof opts.context === "string" ? opts.context : opts.context?.id;
    const temporary = cid === undefined;
    if (cid === undefined) cid = (await this.createCodeContext({ language: opts.language ?? "python" })).id;
    try {
      const r = await this.t.call<WireRunCodeResult>("POST", "/v1/sandboxes/{id}/contexts/{cid}/run", { params: { id: this.id, cid }, json: { code, timeoutMs: opts.timeout } });
      return runCodeResult(r);
    } finally {
      if (temporary) await this.deleteCodeContext(cid);
    }
  }

  /**
   * Runs code in a context and yields its events as they come: "stdout" and "stderr" chunks,
   * "result" MIME bundles, an "exception", then "end" with the run's result (its output empty:
   * it came as chunks). close() leaves the run going to its end.
   */
  async runCodeStream(code: string, opts: { context: CodeContextInfo | string; timeout?: number }): Promise<Follow<RunCodeEvent>> {
    const cid = typeof opts.context === "string" ? opts.context : opts.context.id;
    const events = await this.t.events("POST", "/v1/sandboxes/{id}/contexts/{cid}/run", { params: { id: this.id, cid }, json: { code, timeoutMs: opts.timeout } });
    return {
      close: () => events.close(),
      async *[Symbol.asyncIterator]() {
        for await (const [, ev] of events as AsyncIterable<[string, CodeEvent]>) {
          const bytes = decode(ev.data, ev.encoding);
          yield { type: ev.type, data: bytes.toString("utf8"), bytes, result: ev.result, error: ev.error, end: ev.end && runCodeResult(ev.end) };
          if (ev.type === "end") return;
        }
        throw new NsboxError("the run's stream ended before the run did");
      },
    };
  }

  /** What the sandbox changed in its copy-on-write workspace. */
  workspaceDiff(): Promise<S["WorkspaceChange"][]> {
    return this.t.call("GET", "/v1/sandboxes/{id}/workspace/diff", { params: { id: this.id } });
  }

  /** The workspace's changes as a tar stream. */
  exportWorkspace(): Promise<Readable> {
    return this.t.send("GET", "/v1/sandboxes/{id}/workspace/export", { params: { id: this.id }, accept: "application/x-tar" });
  }

  /**
   * Clones a repository into the sandbox (or fetches and checks out); onProgress gets git's
   * progress lines as they come.
   */
  async gitCheckout(req: S["GitCheckoutRequest"], opts: { onProgress?: (line: string) => void } = {}): Promise<S["GitCheckoutResult"]> {
    const o = { params: { id: this.id }, json: req };
    if (!opts.onProgress) return this.t.call("POST", "/v1/sandboxes/{id}/git/checkout", o);
    for await (const [, ev] of (await this.t.events("POST", "/v1/sandboxes/{id}/git/checkout", o)) as AsyncIterable<[string, GitProgressEvent]>) {
      if (ev.type === "progress" && ev.line !== undefined) opts.onProgress(ev.line);
      else if (ev.type === "done" && ev.result) return ev.result;
    }
    throw errorFor("unavailable", `the checkout of ${req.url} ended before its result`);
  }
}

/** One event of a streamed run of code. */
export interface RunCodeEvent {
  type: CodeEvent["type"];
  /** A "stdout" or "stderr" chunk as text (see `bytes` for output that is not UTF-8). */
  data: string;
  bytes: Buffer;
  /** "result": a MIME bundle (text/plain always). */
  result?: Record<string, unknown>;
  /** "exception": the error that ended the run. */
  error?: S["CodeError"];
  /** "end": the run's result. */
  end?: RunCodeResult;
}

/** A run of code: output as text, the last value's text, and rich results by MIME type. */
export interface RunCodeResult extends WireRunCodeResult {
  text?: string;
}

function runCodeResult(r: WireRunCodeResult): RunCodeResult {
  const plain = [...(r.results ?? [])].reverse().find((x) => "text/plain" in x);
  return { ...r, stdout: decode(r.stdout, r.stdoutEncoding).toString("utf8"), stderr: decode(r.stderr, r.stderrEncoding).toString("utf8"),
    text: plain ? String(plain["text/plain"]) : undefined };
}

/** A session: exec, files and processes bound to it (its cwd, exports, user). */
export class ExecutionSession extends Runner {
  readonly id: string;

  constructor(t: Transport, sandboxId: string, public info: SessionInfo) {
    super(t, sandboxId, info.id);
    this.id = info.id;
  }

  protected execRoute(o: ExecOptions): ExecRoute {
    if (o.sessionId !== undefined && o.sessionId !== this.id) throw new TypeError(`session ${this.id} cannot exec in session ${o.sessionId}`);
    return ["POST", "/v1/sandboxes/{id}/sessions/{sid}/exec", { id: this.sandboxId, sid: this.id }, {}];
  }

  /** Stops the command the session runs, as a timeout would. */
  async cancel(): Promise<void> {
    await this.t.call("POST", "/v1/sandboxes/{id}/sessions/{sid}/cancel", { params: { id: this.sandboxId, sid: this.id } });
  }

  /** Ends the session and kills everything it started. */
  async delete(): Promise<void> {
    await this.t.call("DELETE", "/v1/sandboxes/{id}/sessions/{sid}", { params: { id: this.sandboxId, sid: this.id } });
  }

  /** The session's terminal. */
  terminal(opts: { cursor?: number } = {}): Promise<Terminal> {
    return Terminal.open(this.t, this.sandboxId, this.id, opts.cursor);
  }

  /** Mints a short-lived token held to this session (see Sandbox.createSessionToken). */
  createToken(opts: CreateSessionTokenOptions = {}): Promise<SessionToken> {
    return new Sandbox(this.t, { id: this.sandboxId } as SandboxInfo).createSessionToken(this.id, opts);
  }
}

/** A process of a sandbox; `info` is its last known record. */
export class Process {
  readonly id: string;
  private readonly p: Record<string, string>;

  constructor(private readonly t: Transport, readonly sandboxId: string, public info: ProcessInfo) {
    this.id = info.id;
    this.p = { id: sandboxId, pid: info.id };
  }

  get pid(): number {
    return this.info.pid;
  }

  get status(): string {
    return this.info.status;
  }

  private async wait(req: S["WaitProcessRequest"]): Promise<WaitProcessResult> {
    const res = await this.t.call<WaitProcessResult>("POST", "/v1/sandboxes/{id}/processes/{pid}/wait", { params: this.p, json: req });
    if (res.process?.id) this.info = res.process;
    if (!res.met) throw new ConditionNotMetError(`process ${this.id}: ${res.condition} not met: ${res.reason ?? "timed out"}`, res);
    return res;
  }

  /** Waits for the process to end (ConditionNotMetError on timeout). */
  async waitForExit(timeout?: number): Promise<ProcessInfo> {
    await this.wait({ timeoutMs: timeout });
    return this.info;
  }

  /** Waits until the sandbox listens on port (answers `path` over HTTP when given). */
  waitForPort(port: number, opts: { timeout?: number; path?: string } = {}): Promise<WaitProcessResult> {
    return this.wait({ port, httpPath: opts.path, timeoutMs: opts.timeout });
  }

  /** Waits for an output line matching the regular expression. */
  waitForLog(pattern: string, opts: { timeout?: number } = {}): Promise<WaitProcessResult> {
    return this.wait({ log: pattern, timeoutMs: opts.timeout });
  }

  /** Signals the process's group. */
  async kill(signal: string | number = "TERM", graceMs?: number): Promise<ProcessInfo> {
    return (this.info = await this.t.call("POST", "/v1/sandboxes/{id}/processes/{pid}/kill", { params: this.p, json: { signal, graceMs } }));
  }

  /**
   * The output so far, from cursor, at most limit bytes (default 4 MiB): read on from the
   * answer's cursor until done.
   */
  async getLogs(cursor = 0, limit?: number): Promise<ProcessLogs> {
    const logs = await this.t.call<S["ProcessLogs"]>("GET", "/v1/sandboxes/{id}/processes/{pid}/logs", { params: this.p, query: { cursor, limit } });
    const join = (type: string) => Buffer.concat(logs.chunks.filter((c) => c.type === type).map((c) => decode(c.data, c.encoding))).toString("utf8");
    return { stdout: join("stdout"), stderr: join("stderr"), cursor: logs.cursor, done: logs.done };
  }

  /** The output as it comes, until the process ends. */
  async streamLogs(cursor = 0): Promise<AsyncIterable<ProcessLogEvent> & { close(): void }> {
    const events = await this.t.events("GET", "/v1/sandboxes/{id}/processes/{pid}/logs", { params: this.p, query: { cursor, follow: 1 } });
    const self = this;
    return {
      close: () => events.close(),
      async *[Symbol.asyncIterator]() {
        for await (const [, d] of events) {
          if (d.type === "exit") {
            self.info = d.process;
            return;
          }
          const bytes = decode(d.data, d.encoding);
          yield { type: d.type, data: bytes.toString("utf8"), bytes, cursor: d.cursor };
        }
      },
    };
  }

  /** Appends to the process's stdin (started with stdin "pipe"). */
  async writeStdin(data: string | Uint8Array, opts: { close?: boolean } = {}): Promise<void> {
    await this.t.call("POST", "/v1/sandboxes/{id}/processes/{pid}/stdin", { params: this.p, query: { close: opts.close }, body: data });
  }

  /** Closes the process's stdin. */
  async closeStdin(): Promise<void> {
    await this.t.call("DELETE", "/v1/sandboxes/{id}/processes/{pid}/stdin", { params: this.p });
  }

  /** Forgets a process that has ended. */
  async remove(): Promise<void> {
    await this.t.call("DELETE", "/v1/sandboxes/{id}/processes/{pid}", { params: this.p });
  }
}

/** A session's terminal over a WebSocket: output as an async iterable, `write`, `resize`. */
export class Terminal implements AsyncIterable<Buffer> {
  /** Notices received ("skipped", "ended", "error"). */
  readonly notices: TerminalNotice[] = [];
  private readonly messages: AsyncIterator<{ opcode: number; data: Buffer }>;

  private constructor(private readonly ws: WebSocket) {
    this.messages = ws[Symbol.asyncIterator]();
  }

  static async open(t: Transport, sandboxId: string, sessionId: string, cursor?: number): Promise<Terminal> {
    const key = newKey();
    const socket = await t.upgrade("GET", "/v1/sandboxes/{id}/sessions/{sid}/terminal", { params: { id: sandboxId, sid: sessionId }, query: { cursor } }, key);
    return new Terminal(new WebSocket(socket));
  }

  /** The next output (an empty buffer after a notice, kept in `notices`); undefined once closed. */
  async read(): Promise<Buffer | undefined> {
    const next = await this.messages.next();
    if (next.done) return undefined;
    if (next.value.opcode === BINARY) return next.value.data;
    this.notices.push(JSON.parse(next.value.data.toString("utf8")));
    return Buffer.alloc(0);
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Buffer> {
    for (let chunk = await this.read(); chunk !== undefined; chunk = await this.read()) yield chunk;
  }

  /** Reads output until it holds marker; resolves with all of it. */
  async readUntil(marker: string): Promise<string> {
    let out = "";
    while (!out.includes(marker)) {
      const chunk = await this.read();
      if (chunk === undefined) throw new NsboxError(`the terminal ended before ${JSON.stringify(marker)}`);
      out += chunk.toString("utf8");
    }
    return out;
  }

  /** Types into the terminal. */
  write(data: string | Uint8Array): void {
    this.ws.send(BINARY, typeof data === "string" ? Buffer.from(data) : data);
  }

  /** Sets the terminal's size. */
  resize(cols: number, rows: number): void {
    this.ws.send(TEXT, Buffer.from(JSON.stringify({ type: "resize", cols, rows })));
  }

  /** Detaches. */
  close(): void {
    this.ws.close();
  }
}

/** A terminal notice (a text frame): output "skipped", the session "ended", or an input "error". */
export interface TerminalNotice {
  type: string;
  data?: string;
  cursor: number;
  skipped?: number;
}
