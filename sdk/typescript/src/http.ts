/** HTTP to the daemon on Node's standard library: a unix socket, https with a token, or http on loopback. */
import * as http from "node:http";
import * as https from "node:https";
import { readFileSync } from "node:fs";
import { isIP } from "node:net";
import { Readable } from "node:stream";
import type { Duplex } from "node:stream";
import { DaemonUnreachableError, errorFor, NsboxError } from "./errors.js";
import { acceptOf } from "./websocket.js";

export const DEFAULT_SOCKET = "/run/nsbox/nsbox.sock";

/** How a Client reaches its daemon. Every field falls back to NSBOX_HOST, NSBOX_TOKEN, NSBOX_CA. */
export interface ClientOptions {
  /** unix:///PATH (default unix:///run/nsbox/nsbox.sock), https://HOST:PORT, or http://127.0.0.1:PORT. */
  host?: string;
  /** Bearer token (admin or scoped), for TCP. */
  token?: string;
  /** PEM file of the CA that signed the daemon's certificate (https). */
  ca?: string;
  /** Milliseconds a request may stay idle before it fails (default: none). */
  timeoutMs?: number;
}

/** A body to upload: streamed, never gathered first. */
export type Body = string | Uint8Array | Readable | AsyncIterable<Uint8Array>;

export type Query = Record<string, string | number | boolean | undefined | null>;

export interface SendOptions {
  params?: Record<string, string | number>;
  query?: Query;
  json?: unknown;
  body?: Body;
  size?: number;
  headers?: Record<string, string>;
  accept?: string;
}

/** A route template filled with its escaped parameters, and the query (empty values left out). */
export function pathOf(route: string, params: Record<string, string | number> = {}, query: Query = {}): string {
  let path = route;
  for (const [k, v] of Object.entries(params)) path = path.replace(`{${k}}`, encodeURIComponent(String(v)));
  if (path.includes("{")) throw new Error(`route ${route}: parameters missing`);
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null && v !== false && v !== "") q.set(k, String(v));
  const qs = q.toString();
  return qs ? `${path}?${qs}` : path;
}

export class Transport {
  readonly host: string;
  private readonly token?: string;
  private readonly socketPath?: string;
  private readonly url?: URL;
  private readonly ca?: Buffer;
  private readonly timeoutMs?: number;

  constructor(opts: ClientOptions = {}) {
    this.host = opts.host ?? process.env.NSBOX_HOST ?? `unix://${DEFAULT_SOCKET}`;
    this.token = opts.token ?? (process.env.NSBOX_TOKEN || undefined);
    const ca = opts.ca ?? (process.env.NSBOX_CA || undefined);
    this.timeoutMs = opts.timeoutMs;
    const u = new URL(this.host);
    if (u.protocol === "unix:") {
      if (!u.pathname || u.host) throw new Error(`host ${this.host}: write a socket as unix:///PATH`);
      this.socketPath = decodeURIComponent(u.pathname);
      return;
    }
    if (u.protocol !== "https:" && u.protocol !== "http:") {
      throw new Error(`host ${this.host}: use unix:///PATH, https://HOST:PORT or http://127.0.0.1:PORT`);
    }
    if (!u.port || (u.pathname !== "/" && u.pathname !== "")) throw new Error(`host ${this.host}: give HOST:PORT and no path`);
    const name = u.hostname.replace(/^\[|\]$/g, "");
    const loopback = name === "localhost" || name === "::1" || (isIP(name) === 4 && name.startsWith("127."));
    if (u.protocol === "http:" && !loopback) throw new Error(`host ${this.host}: plain http only to a loopback address; use https://`);
    this.url = u;
    if (ca) this.ca = readFileSync(ca);
  }

  private options(method: string, path: string, headers: Record<string, string>): https.RequestOptions {
    const h: Record<string, string> = { ...headers };
    if (this.token) h.Authorization = `Bearer ${this.token}`;
    if (this.socketPath) return { socketPath: this.socketPath, method, path, headers: { Host: "nsbox", ...h }, agent: false };
    return { host: this.url!.hostname.replace(/^\[|\]$/g, ""), port: Number(this.url!.port), method, path, headers: h, ca: this.ca, agent: false };
  }

  private request(opts: https.RequestOptions): http.ClientRequest {
    return this.url?.protocol === "https:" ? https.request(opts) : http.request(opts);
  }

  /** Sends a request and resolves with a 2xx response, unread; anything else rejects with its NsboxError. */
  send(method: string, route: string, o: SendOptions = {}): Promise<http.IncomingMessage> {
    const path = pathOf(route, o.params, o.query);
    const headers: Record<string, string> = { Accept: o.accept ?? "application/json", ...o.headers };
    let payload: Body | undefined;
    if (o.json !== undefined) {
      payload = JSON.stringify(o.json);
      headers["Content-Type"] = "application/json";
    } else if (o.body !== undefined) {
      payload = o.body;
      headers["Content-Type"] = "application/octet-stream";
    }
    if (typeof payload === "string") payload = Buffer.from(payload);
    if (payload instanceof Uint8Array) headers["Content-Length"] = String(payload.byteLength);
    else if (o.size !== undefined) headers["Content-Length"] = String(o.size);
    return new Promise((resolve, reject) => {
      const req = this.request(this.options(method, path, headers));
      if (this.timeoutMs) req.setTimeout(this.timeoutMs, () => req.destroy(new NsboxError(`${method} ${path}: no answer within ${this.timeoutMs}ms`, "timeout")));
      req.on("error", (err: NodeJS.ErrnoException) => {
        if (err instanceof NsboxError) return reject(err);
        reject(new DaemonUnreachableError(`${method} ${path}: cannot reach the nsbox daemon at ${this.host}: ${err.message}`, "unreachable"));
      });
      req.on("response", (resp) => {
        if (resp.statusCode! >= 200 && resp.statusCode! < 300) return resolve(resp);
        readAll(resp).then((data) => reject(parseError(resp.statusCode!, data)), reject);
      });
      if (payload === undefined) return void req.end();
      if (payload instanceof Uint8Array) return void req.end(payload);
      const src = payload instanceof Readable ? payload : Readable.from(payload);
      src.on("error", (err) => req.destroy(err));
      src.pipe(req);
    });
  }

  /** send, then the JSON answer (undefined for an empty one). */
  async call<T>(method: string, route: string, o: SendOptions = {}): Promise<T> {
    const data = await readAll(await this.send(method, route, o));
    return (data.length ? JSON.parse(data.toString("utf8")) : undefined) as T;
  }

  /** send asking for Server-Sent Events, as an async iterator of [event, data]. */
  async events(method: string, route: string, o: SendOptions = {}): Promise<EventStream> {
    return new EventStream(await this.send(method, route, { ...o, accept: "text/event-stream" }));
  }

  /** send asking for frames (an exec's output as raw bytes), as an async iterator of [event, payload]. */
  async frames(method: string, route: string, o: SendOptions = {}): Promise<FrameStream> {
    return new FrameStream(await this.send(method, route, { ...o, accept: FRAMES }));
  }

  /** Opens a connection upgraded to a WebSocket on route (method is always GET). */
  upgrade(method: "GET", route: string, o: SendOptions, key: string): Promise<Duplex> {
    const path = pathOf(route, o.params, o.query);
    const headers = { Connection: "Upgrade", Upgrade: "websocket", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": key,
      Origin: "http://localhost", ...o.headers };
    return new Promise((resolve, reject) => {
      const req = this.request(this.options(method, path, headers));
      req.on("error", (err) => reject(new DaemonUnreachableError(`cannot reach the nsbox daemon at ${this.host}: ${err.message}`, "unreachable")));
      req.on("upgrade", (resp, socket, head) => {
        if (resp.headers["sec-websocket-accept"] !== acceptOf(key)) {
          socket.destroy();
          return reject(new NsboxError("the daemon's WebSocket handshake answered a wrong Sec-WebSocket-Accept"));
        }
        if (head.length) socket.unshift(head);
        resolve(socket);
      });
      req.on("response", (resp) => readAll(resp).then((data) => reject(parseError(resp.statusCode!, data)), reject));
      req.end();
    });
  }
}

/** Reads a whole response. */
export async function readAll(stream: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(Buffer.from(c));
  return Buffer.concat(chunks);
}

function parseError(status: number, data: Buffer): NsboxError {
  try {
    const e = JSON.parse(data.toString("utf8")).error;
    if (e) return errorFor(e.code ?? "", e.message ?? "", status);
  } catch {
    // not an API error envelope
  }
  return errorFor("", `HTTP ${status}: ${data.subarray(0, 200).toString("utf8")}`, status);
}

export const FRAMES = "application/x-nsbox-frames";

/**
 * Frames of one response: each is the event name's length (1 byte), the name, the payload's
 * length (4 bytes, big-endian), the payload. An "error" frame is thrown as its NsboxError.
 */
export class FrameStream implements AsyncIterable<[string, Buffer]> {
  /** The daemon answered one JSON document instead (it predates frames): read it with json(). */
  readonly isJSON: boolean;

  constructor(private readonly resp: http.IncomingMessage) {
    this.isJSON = (resp.headers["content-type"] ?? "").startsWith("application/json");
  }

  /** The whole answer as JSON (when isJSON). */
  async json(): Promise<any> {
    return JSON.parse((await readAll(this.resp)).toString("utf8"));
  }

  async *[Symbol.asyncIterator](): AsyncIterator<[string, Buffer]> {
    // A frame (up to 1 MiB of output) comes in many chunks: they are joined once it is whole,
    // not one by one.
    let buf = Buffer.alloc(0);
    const more: Buffer[] = [];
    let have = 0; // buf's bytes and more's
    let need = 1; // what buf must hold before the next frame can be read further
    try {
      for await (const chunk of this.resp) {
        more.push(chunk);
        have += chunk.length;
        if (have < need) continue;
        buf = Buffer.concat([buf, ...more]);
        more.length = 0;
        for (;;) {
          const n = buf.length ? buf[0] : 0;
          need = 1 + n + 4;
          if (buf.length < need) break;
          need += buf.readUInt32BE(1 + n);
          if (buf.length < need) break;
          const end = need;
          const event = buf.toString("utf8", 1, 1 + n);
          const payload = buf.subarray(1 + n + 4, end);
          buf = buf.subarray(end);
          if (event === "error") {
            const e = JSON.parse(payload.toString("utf8")).error ?? {};
            throw errorFor(e.code ?? "", e.message ?? "the exec failed");
          }
          yield [event, payload];
        }
        have = buf.length;
      }
      if (have) throw errorFor("unavailable", `the exec's answer ended inside a frame (${have} bytes left)`);
    } finally {
      this.close();
    }
  }

  /** Ends the stream (closing its connection). */
  close(): void {
    this.resp.destroy();
  }
}

/** Server-Sent Events of one response; an "error" event is thrown as its NsboxError. */
export class EventStream implements AsyncIterable<[string, any]> {
  constructor(private readonly resp: http.IncomingMessage) {}

  async *[Symbol.asyncIterator](): AsyncIterator<[string, any]> {
    // An event (up to 1 MiB of output) comes in many chunks: each is searched once for line
    // ends, and a line is joined once whole. Chunks are decoded as a stream, so that a
    // character split between two stays whole.
    const partial: string[] = [];
    let event = "";
    let data: unknown;
    this.resp.setEncoding("utf8");
    try {
      for await (const chunk of this.resp as AsyncIterable<string>) {
        let at = 0;
        let nl: number;
        while ((nl = chunk.indexOf("\n", at)) >= 0) {
          partial.push(chunk.slice(at, nl));
          at = nl + 1;
          const line = partial.join("").replace(/\r$/, "");
          partial.length = 0;
          if (line.startsWith("event: ")) event = line.slice(7);
          else if (line.startsWith("data: ")) data = JSON.parse(line.slice(6));
          else if (line === "" && data !== undefined) {
            if (event === "error") {
              const e = (data as any).error ?? {};
              throw errorFor(e.code ?? "", e.message ?? "the stream failed");
            }
            yield [event, data];
            event = "";
            data = undefined;
          }
        }
        if (at < chunk.length) partial.push(chunk.slice(at));
      }
    } finally {
      this.close();
    }
  }

  /** Ends the stream (closing its connection). */
  close(): void {
    this.resp.destroy();
  }
}
