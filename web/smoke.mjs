// Smoke test of the built package (web/pkg) outside a browser: load the ES module in Node,
// instantiate the wasm, load fixture weights, run attention on a PNG given as bytes, and
// check the reference grid and a rejected promise on garbage.   node web/smoke.mjs
import { readFileSync } from 'node:fs';
import { initSync, Dino } from './pkg/dino_web.js';

initSync({ module: readFileSync(new URL('./pkg/dino_web_bg.wasm', import.meta.url)) });
const fixture = (p) => new Uint8Array(readFileSync(new URL(`../tests/fixtures/${p}`, import.meta.url)));
const model = await Dino.load(fixture('weights/s16_hf.safetensors'), { backend: 'auto' });
const r = await model.attention(fixture('images/chelsea.png'), { size: 'none', threshold: 0.6 });
const ok = model.backend === 'cpu' && r.heads === 2 && r.gridH === 18 && r.gridW === 28
  && r.attention.length === 2 * 18 * 28 && r.masks.length === 2 * 18 * 28;
let rejected = false;
try { await model.attention(new Uint8Array([1, 2, 3])); } catch (e) { rejected = String(e.message || e).length > 0; }
console.log(`dino-web package: backend ${model.backend} (${model.backendNote}), ${r.heads} heads, `
  + `${r.gridH}x${r.gridW} grid, ${r.ms.toFixed(1)} ms; garbage rejected: ${rejected}`);
if (!ok || !rejected) { console.error('smoke test failed'); process.exit(1); }
