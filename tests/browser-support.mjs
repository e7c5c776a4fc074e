// What the Node-driven browser tests share (www/e2e.mjs, web/examples/test.mjs): Chromium
// through playwright-core, a pass/fail line per check, the native CLI's attention as the
// reference (its .npy outputs read back) and a static file server for a built site.
import http from 'node:http';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';

const tools = process.env.NPM_TOOLS || path.join(os.homedir(), '.cache/dino-rs/npm-tools');
export const { chromium } = await import(path.join(tools, 'node_modules/playwright-core/index.mjs'));

// The headers that make a page cross-origin isolated (SharedArrayBuffer: WebAssembly threads).
export const ISOLATION = { 'Cross-Origin-Opener-Policy': 'same-origin', 'Cross-Origin-Embedder-Policy': 'require-corp' };

// A temporary folder removed when the process exits, passed or failed (KEEP=1 keeps them, as
// tests/soak.sh does): each run of the test command used to leave ~30 MB of them in /tmp.
const scratch = [];
process.on('exit', () => {
  if (!process.env.KEEP) for (const dir of scratch) fs.rmSync(dir, { recursive: true, force: true });
});
export function scratchDir(prefix) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  scratch.push(dir);
  return dir;
}

export function check(ok, what) {
  if (!ok) { console.error(`FAIL: ${what}`); process.exit(1); }
  console.log(`ok: ${what}`);
}

export const maxAbs = (a, b) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);

// A .npy the CLI wrote: f32 as Float32Array, anything else (the u8 masks) as Uint8Array.
export function readNpy(file) {
  const b = fs.readFileSync(file);
  const len = b.readUInt16LE(8);
  const header = b.subarray(10, 10 + len).toString();
  const data = b.subarray(10 + len);
  return header.includes("'<f4'") ? new Float32Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.length)) : Uint8Array.from(data);
}

// `dino attention` on one image: { attention, masks } as the CLI writes them.
export function nativeAttention(dino, { weights, image, size = 480, threshold = 0.6 }) {
  const out = scratchDir('dino-native-');
  execFileSync(dino, ['attention', '-w', weights, '--resize', String(size), '--threshold', String(threshold), image, '-o', out]);
  return { attention: readNpy(path.join(out, 'attention.npy')), masks: readNpy(path.join(out, 'masks.npy')) };
}

// Serves the files of `dir` (a folder's index.html for the folder) on 127.0.0.1 with `headers`
// on every answer; resolves to { server, url }.
export async function serveDir(dir, headers = {}) {
  const types = { '.html': 'text/html', '.js': 'text/javascript', '.wasm': 'application/wasm', '.css': 'text/css' };
  const server = http.createServer((req, res) => {
    const file = path.join(dir, decodeURIComponent(new URL(req.url, 'http://x').pathname));
    const target = fs.existsSync(file) && fs.statSync(file).isDirectory() ? path.join(file, 'index.html') : file;
    if (!target.startsWith(dir) || !fs.existsSync(target)) { res.writeHead(404); res.end(); return; }
    res.writeHead(200, { ...headers, 'content-type': types[path.extname(target)] || 'application/octet-stream' });
    fs.createReadStream(target).pipe(res);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return { server, url: `http://127.0.0.1:${server.address().port}/` };
}
