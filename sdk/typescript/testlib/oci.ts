// OCI images made in the test, a registry serving them on loopback, and an OCI layout archive of
// them: what the image calls of the SDK are tested with, without reaching any other registry.
import { createHash } from "node:crypto";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { gzipSync } from "node:zlib";

const MANIFEST = "application/vnd.oci.image.manifest.v1+json";

const sha256 = (b: Buffer) => "sha256:" + createHash("sha256").update(b).digest("hex");

/** A file of an archive: its content, or its content and mode (default 0644). */
export type File = string | Buffer | { data: Buffer; mode: number };

/** A ustar archive of regular files (path → content), as a layer or an OCI layout holds them. */
export function tar(files: Record<string, File>): Buffer {
  const blocks: Buffer[] = [];
  for (const [name, file] of Object.entries(files)) {
    const [data, mode] = typeof file === "string" || Buffer.isBuffer(file) ? [Buffer.from(file), 0o644] : [file.data, file.mode];
    const h = Buffer.alloc(512);
    h.write(name, 0, 100);
    h.write(mode.toString(8).padStart(7, "0") + "\0", 100);
    h.write("0000000\0", 108); // uid
    h.write("0000000\0", 116); // gid
    h.write(data.length.toString(8).padStart(11, "0") + "\0", 124);
    h.write("00000000000\0", 136); // mtime
    h.write("        ", 148); // the checksum counts as spaces while it is summed
    h.write("0", 156); // a regular file
    h.write("ustar\x0000", 257);
    let sum = 0;
    for (const b of h) sum += b;
    h.write(sum.toString(8).padStart(6, "0") + "\0 ", 148);
    blocks.push(h, data, Buffer.alloc((512 - (data.length % 512)) % 512));
  }
  blocks.push(Buffer.alloc(1024));
  return Buffer.concat(blocks);
}

/** An image of one gzipped layer: its blobs by digest, and its manifest's digest. */
export interface Image {
  manifest: Buffer;
  digest: string;
  blobs: Map<string, Buffer>;
}

/** An image for this host's platform whose one layer holds files, with config's Entrypoint, User, … */
export function image(files: Record<string, File>, imageConfig: Record<string, unknown> = {}): Image {
  const layerTar = tar(files);
  const layer = gzipSync(layerTar);
  const arch = { x64: "amd64", arm64: "arm64" }[process.arch as string] ?? process.arch;
  const config = Buffer.from(JSON.stringify({
    architecture: arch, os: "linux", config: { Env: ["PATH=/bin"], WorkingDir: "/", ...imageConfig },
    rootfs: { type: "layers", diff_ids: [sha256(layerTar)] },
  }));
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: MANIFEST,
    config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: sha256(config), size: config.length },
    layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: sha256(layer), size: layer.length }],
  }));
  return { manifest, digest: sha256(manifest), blobs: new Map([[sha256(config), config], [sha256(layer), layer]]) };
}

/** An OCI image layout of one image, as a tar (what `POST /v1/images/import` reads). */
export function layoutTar(img: Image): Buffer {
  const files: Record<string, File> = {
    "oci-layout": JSON.stringify({ imageLayoutVersion: "1.0.0" }),
    "index.json": JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: MANIFEST, digest: img.digest, size: img.manifest.length }] }),
    [`blobs/sha256/${img.digest.slice(7)}`]: img.manifest,
  };
  for (const [digest, blob] of img.blobs) files[`blobs/sha256/${digest.slice(7)}`] = blob;
  return tar(files);
}

/** A registry on 127.0.0.1 (plain HTTP, which the daemon allows for loopback) serving tags. */
export class Registry {
  /** repository:tag → image; change it to move a tag. */
  readonly tags = new Map<string, Image>();
  private constructor(private readonly server: Server, readonly host: string) {}

  static async start(): Promise<Registry> {
    let reg: Registry | undefined;
    const server = createServer((req, res) => reg!.serve(req.method ?? "", req.url ?? "", res));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    reg = new Registry(server, `127.0.0.1:${(server.address() as AddressInfo).port}`);
    return reg;
  }

  private serve(method: string, url: string, res: import("node:http").ServerResponse): void {
    const send = (status: number, body: Buffer, headers: Record<string, string> = {}) => {
      res.writeHead(status, { "Content-Length": String(body.length), ...headers });
      res.end(method === "HEAD" ? undefined : body);
    };
    if (url === "/v2/") return send(200, Buffer.from("{}"), { "Content-Type": "application/json" });
    const m = /^\/v2\/(.+)\/(manifests|blobs)\/([^/]+)$/.exec(url);
    const imgs = [...this.tags.values()];
    if (m?.[2] === "manifests") {
      const img = this.tags.get(`${m[1]}:${m[3]}`) ?? imgs.find((i) => i.digest === m[3]);
      if (img) return send(200, img.manifest, { "Content-Type": MANIFEST, "Docker-Content-Digest": img.digest });
    }
    if (m?.[2] === "blobs") {
      const blob = imgs.map((i) => i.blobs.get(m[3])).find((b) => b);
      if (blob) return send(200, blob, { "Content-Type": "application/octet-stream", "Docker-Content-Digest": m[3] });
    }
    send(404, Buffer.from(JSON.stringify({ errors: [{ code: m?.[2] === "blobs" ? "BLOB_UNKNOWN" : "MANIFEST_UNKNOWN", message: "unknown" }] })),
      { "Content-Type": "application/json" });
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}
