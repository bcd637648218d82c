/** A small WebSocket client (RFC 6455) over a connection Transport.upgrade made, for session terminals. */
import { createHash, randomBytes } from "node:crypto";
import type { Duplex } from "node:stream";

export const TEXT = 1;
export const BINARY = 2;
const CLOSE = 8;
const PING = 9;
const PONG = 10;

export function newKey(): string {
  return randomBytes(16).toString("base64");
}

export function acceptOf(key: string): string {
  return createHash("sha1").update(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest("base64");
}

export interface Message {
  opcode: number;
  data: Buffer;
}

/** A client WebSocket: send frames, and read messages with the async iterator. */
export class WebSocket implements AsyncIterable<Message> {
  private buf = Buffer.alloc(0);
  private closed = false;

  constructor(private readonly socket: Duplex) {}

  /** Sends one masked frame. */
  send(opcode: number, payload: Uint8Array): void {
    const n = payload.length;
    const head = n < 126 ? Buffer.from([0x80 | opcode, 0x80 | n])
      : n < 65536 ? Buffer.from([0x80 | opcode, 0x80 | 126, n >> 8, n & 255])
      : Buffer.concat([Buffer.from([0x80 | opcode, 0x80 | 127]), bigEndian64(n)]);
    const mask = randomBytes(4);
    const masked = Buffer.alloc(n);
    for (let i = 0; i < n; i++) masked[i] = payload[i] ^ mask[i & 3];
    this.socket.write(Buffer.concat([head, mask, masked]));
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Message> {
    let message: Buffer[] = [];
    let kind = 0;
    for await (const chunk of this.socket) {
      this.buf = Buffer.concat([this.buf, chunk as Buffer]);
      for (;;) {
        const frame = this.nextFrame();
        if (!frame) break;
        const { fin, opcode, payload } = frame;
        if (opcode === PING) this.send(PONG, payload);
        else if (opcode === CLOSE) {
          this.close();
          return;
        } else if (opcode !== PONG) {
          if (opcode) kind = opcode;
          message.push(payload);
          if (fin) {
            yield { opcode: kind, data: Buffer.concat(message) };
            message = [];
          }
        }
      }
    }
  }

  private nextFrame(): { fin: boolean; opcode: number; payload: Buffer } | undefined {
    const b = this.buf;
    if (b.length < 2) return undefined;
    let n = b[1] & 0x7f;
    let off = 2;
    if (n === 126) {
      if (b.length < 4) return undefined;
      n = b.readUInt16BE(2);
      off = 4;
    } else if (n === 127) {
      if (b.length < 10) return undefined;
      n = Number(b.readBigUInt64BE(2));
      off = 10;
    }
    const masked = (b[1] & 0x80) !== 0;
    const start = off + (masked ? 4 : 0);
    if (b.length < start + n) return undefined;
    const payload = Buffer.from(b.subarray(start, start + n));
    if (masked) for (let i = 0; i < n; i++) payload[i] ^= b[off + (i & 3)];
    this.buf = b.subarray(start + n);
    return { fin: (b[0] & 0x80) !== 0, opcode: b[0] & 0x0f, payload };
  }

  /** Sends a close frame (once) and ends the connection. */
  close(): void {
    if (!this.closed) {
      this.closed = true;
      try {
        this.send(CLOSE, Buffer.from([0x03, 0xe8]));
      } catch {
        // the connection is gone already
      }
    }
    this.socket.end();
    this.socket.destroy();
  }
}

function bigEndian64(n: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(n));
  return b;
}
