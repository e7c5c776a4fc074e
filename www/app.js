// The demo page: loads a DINO model with the dino-web package (built in by trunk), runs the
// last-layer attention of uploaded images and draws maps and masks.
import {
  HUB_MODELS, hubUrl, isCached, cachedModel, remoteSize, download, cacheSummary, clearCache, megabytes,
} from './models.js';
import { initVideo } from './video.js';

const $ = (id) => document.getElementById(id);
// downloads: every progress event ({loaded, total}) of the page's model downloads
const state = { bindings: null, model: null, bytes: null, items: [], busy: false, downloads: [] };
// for end-to-end tests and curious users
window.dinoDemo = state;

const VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
const HEAD_COLOURS = [[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189],
  [140, 86, 75], [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207]];

function viridis(t) {
  const x = Math.min(Math.max(t, 0), 1) * (VIRIDIS.length - 1);
  const i = Math.min(Math.floor(x), VIRIDIS.length - 2), f = x - i;
  return VIRIDIS[i].map((a, k) => Math.round(a + (VIRIDIS[i + 1][k] - a) * f));
}

function status(text) { $('status').textContent = text; }
function showError(text) { const e = $('error'); e.textContent = text; e.hidden = !text; }
function showNotice(text) { const e = $('notice'); e.textContent = text; e.hidden = !text; }
const tick = () => new Promise((r) => setTimeout(r, 0));

async function bindings() {
  if (window.wasmBindings) return window.wasmBindings;
  return new Promise((resolve) => addEventListener('TrunkApplicationStarted',
    () => resolve(window.wasmBindings), { once: true }));
}

// the model lives in a Web Worker (worker.js); calls are promises over messages
const pending = new Map();
let seq = 0;
let worker = startWorker();
function startWorker() {
  const w = new Worker('./worker.js', { type: 'module' });
  w.onmessage = (e) => {
    const p = pending.get(e.data.id);
    pending.delete(e.data.id);
    if (p && e.data.ok) p.resolve(e.data.result);
    else if (p) p.reject(new Error(e.data.error));
    if (e.data.crashed) recoverFromCrash();
  };
  w.onerror = (e) => showError(`The model worker failed: ${e.message || e}`);
  return w;
}
// A WebAssembly trap (out of memory, most likely) leaves the module unusable: start a fresh
// worker and load the same model again, so the page keeps working.
let recovering = null;
function recoverFromCrash() {
  recovering ||= restartWorker().finally(() => { recovering = null; });
  return recovering;
}
async function restartWorker() {
  worker.terminate();
  for (const p of pending.values()) p.reject(new Error('the model worker was restarted'));
  pending.clear();
  worker = startWorker();
  if (!state.bytes) return;
  try {
    state.model = await loadInWorker(state.bytes, state.model ? state.model.backend : 'cpu');
    showNotice('The model crashed (most likely out of memory) and was reloaded: try a smaller size or model.');
  } catch (err) {
    showError(`The model crashed and could not be reloaded: ${err.message || err}`);
  }
}
function call(op, args) {
  return new Promise((resolve, reject) => {
    const id = ++seq;
    pending.set(id, { resolve, reject });
    worker.postMessage({ id, op, args });
  });
}

async function loadInWorker(bytes, backend) {
  const info = await call('load', { bytes: bytes.slice(), options: { backend } });
  return {
    ...info,
    attention: (image, options) => call('attention', { image, options }),
    copyDescriptor: (image, options) => call('copyDescriptor', { image, options }),
  };
}

async function loadModel(bytes, label) {
  const backend = $('backend').value;
  status(`Loading ${label} (${backend})…`);
  let model;
  showNotice('');
  try {
    model = await loadInWorker(bytes, backend);
  } catch (e) {
    if (backend !== 'webgpu') throw e;
    showNotice(`WebGPU: ${e.message || e} — falling back to the CPU.`);
    $('backend').value = 'cpu';
    model = await loadInWorker(bytes, 'cpu');
  }
  // auto without a WebGPU adapter: say why the CPU runs it
  if (backend === 'auto' && model.backend === 'cpu' && model.backendNote) showNotice(`${model.backendNote}.`);
  state.model = model;
  state.bytes = bytes;
  state.label = label;
  document.body.dataset.model = label;
  const heads = $('head');
  heads.innerHTML = '<option value="all">all heads</option>' +
    Array.from({ length: model.heads }, (_, h) => `<option value="${h}">head ${h}</option>`).join('');
  const on = model.threads > 1 ? `${model.backend}, ${model.threads} threads` : model.backend;
  $('model-note').textContent = `Model: ${label}, ${model.heads} heads, patch ${model.patch}, ` +
    `${model.dim} dims, backend ${on}${model.backendNote ? ` (${model.backendNote})` : ''}.`;
  status(`Ready: ${label}${state.source === 'cache' ? ' (from the browser\'s cache)' : ''} on ${on}. Choose images.`);
  document.body.dataset.ready = '1';
}

async function fetchBytes(url) {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
  return new Uint8Array(await res.arrayBuffer());
}

function drawGrid(values, gh, gw, colour) {
  const c = document.createElement('canvas');
  c.width = gw; c.height = gh;
  const ctx = c.getContext('2d');
  const img = ctx.createImageData(gw, gh);
  let lo = Infinity, hi = -Infinity;
  for (const v of values) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  values.forEach((v, i) => {
    const [r, g, b] = colour((v - lo) / ((hi - lo) || 1));
    img.data.set([r, g, b, 255], 4 * i);
  });
  ctx.putImageData(img, 0, 0);
  return c;
}

function figure(canvas, caption) {
  const f = document.createElement('figure');
  const cap = document.createElement('figcaption');
  cap.textContent = caption;
  f.append(canvas, cap);
  return f;
}

// the image as the model saw it: short side resized to `size`, cropped to whole patches
// from the top-left corner (the browser's resampling stands in for the model's bicubic)
function baseCanvas(item) {
  const { r } = item;
  const c = document.createElement('canvas');
  c.width = r.width; c.height = r.height;
  if (item.bitmap) {
    const b = item.bitmap, s = item.size / Math.min(b.width, b.height);
    c.getContext('2d').drawImage(b, 0, 0, b.width * s, b.height * s);
  }
  return c;
}

function overlay(item) {
  const { r } = item;
  const c = baseCanvas(item);
  const ctx = c.getContext('2d');
  const img = ctx.getImageData(0, 0, c.width, c.height);
  const n = r.gridH * r.gridW, p = r.width / r.gridW;
  const sel = $('head').value;
  const heads = sel === 'all' ? [...Array(r.heads).keys()] : [Number(sel)];
  for (let y = 0; y < c.height; y++) {
    for (let x = 0; x < c.width; x++) {
      const cell = Math.floor(y / p) * r.gridW + Math.floor(x / p);
      let mix = null, count = 0;
      for (const h of heads) {
        if (item.masks[h * n + cell]) {
          const col = HEAD_COLOURS[h % HEAD_COLOURS.length];
          mix = mix ? mix.map((v, k) => v + col[k]) : [...col];
          count++;
        }
      }
      if (mix) {
        const o = 4 * (y * c.width + x);
        for (let k = 0; k < 3; k++) img.data[o + k] = (img.data[o + k] + mix[k] / count) / 2;
      }
    }
  }
  ctx.putImageData(img, 0, 0);
  return c;
}

function render(item) {
  const { r, el } = item;
  const t = Number($('threshold').value);
  item.masks = state.bindings.thresholdMasks(r.attention, r.heads, t);
  const n = r.gridH * r.gridW;
  const maps = el.querySelector('.maps');
  maps.replaceChildren();
  maps.append(figure(baseCanvas(item), 'image'));
  const mean = new Float32Array(n);
  for (let h = 0; h < r.heads; h++) {
    const a = r.attention.subarray(h * n, (h + 1) * n);
    a.forEach((v, i) => { mean[i] += v / r.heads; });
    maps.append(figure(drawGrid(a, r.gridH, r.gridW, viridis), `head ${h}`));
  }
  maps.append(figure(drawGrid(mean, r.gridH, r.gridW, viridis), 'mean'));
  const ov = overlay(item);
  ov.className = 'overlay';
  maps.append(figure(ov, `masks ${Math.round(t * 100)}% of the mass`));
  const pixels = item.masks.reduce((s, v) => s + v, 0);
  el.dataset.heads = r.heads;
  el.dataset.maskPatches = pixels;
  el.querySelector('.meta').textContent = `${r.heads} heads, ${r.gridH}x${r.gridW} patches ` +
    `(${r.width}x${r.height} px), ${r.ms.toFixed(0)} ms on ${r.backend}; ${pixels} mask patches`;
}

// the figure set of one analysed image: title, a line of facts, the maps, a PNG download
function resultElement(title) {
  const el = document.createElement('article');
  el.className = 'result';
  el.innerHTML = '<h2></h2><p class="meta"></p><div class="maps"></div><button class="download">Download overlay PNG</button>';
  el.querySelector('h2').textContent = title;
  return el;
}

async function analyse(files) {
  if (!state.model) { showError('No model is loaded.'); return; }
  showError('');
  const errors = [];
  let k = 0;
  for (const file of files) {
    k++;
    status(`Computing attention for ${file.name} (${k}/${files.length})…`);
    await tick();
    try {
      const size = Number($('size').value);
      const r = await state.model.attention(file, { size, threshold: Number($('threshold').value) });
      let bitmap = null;
      try { bitmap = await createImageBitmap(file); } catch { /* shown without the photo */ }
      const el = resultElement(file.name);
      const item = { name: file.name, file, r, bitmap, el, size, masks: null };
      el.querySelector('.download').onclick = () => {
        el.querySelector('canvas.overlay').toBlob((blob) => {
          const a = document.createElement('a');
          a.href = URL.createObjectURL(blob);
          a.download = file.name.replace(/\.[^.]*$/, '') + '-dino-masks.png';
          a.click();
        });
      };
      state.items.push(item);
      $('results').prepend(el);
      render(item);
    } catch (e) {
      errors.push(`${file.name}: ${e.message || e}`);
    }
  }
  showError(errors.length ? `Could not analyse ${errors.join('; ')}` : '');
  status(`Done: ${state.items.length} image(s) on ${state.model.backend}.`);
}

// near-duplicates: one descriptor per image, regrouped instantly when the threshold moves
const dup = { files: [], rows: [], dim: 0 };
state.dup = dup;

function showGroups() {
  const out = $('dup-results');
  out.replaceChildren();
  if (dup.files.length < 2) return;
  const t = Number($('dup-threshold').value);
  const flat = new Float32Array(dup.rows.length * dup.dim);
  dup.rows.forEach((r, i) => flat.set(r, i * dup.dim));
  const found = state.bindings.findDuplicates(flat, dup.dim, t, 10);
  dup.groups = found.groups.map((g) => g.members.map((i) => dup.files[i].name));
  out.dataset.groups = found.groups.length;
  for (const g of found.groups) {
    const div = document.createElement('div');
    div.className = 'dup-group';
    const title = document.createElement('p');
    title.textContent = `${g.members.length} images, similarity ${g.minScore.toFixed(3)} to ${g.maxScore.toFixed(3)}: ` +
      g.members.map((i) => dup.files[i].name).join(', ');
    div.append(title);
    for (const i of g.members) {
      const img = document.createElement('img');
      img.src = dup.files[i].url;
      img.alt = img.title = dup.files[i].name;
      div.append(img);
    }
    out.append(div);
  }
  $('dup-status').textContent = `${dup.files.length} images, ${found.groups.length} group(s) of near-duplicates at ${t.toFixed(3)}.`;
}

async function describe(files) {
  if (!state.model) { showError('No model is loaded.'); return; }
  const errors = [];
  let k = 0;
  for (const file of files) {
    k++;
    $('dup-status').textContent = `Describing ${file.name} (${k}/${files.length})…`;
    await tick();
    try {
      const d = await state.model.copyDescriptor(file);
      dup.dim = d.length;
      dup.rows.push(d);
      dup.files.push({ name: file.name, file, url: URL.createObjectURL(file) });
    } catch (e) {
      errors.push(`${file.name}: ${e.message || e}`);
    }
  }
  showError(errors.length ? `Skipped ${errors.join('; ')}` : '');
  showGroups();
}

async function redescribe() {
  const files = dup.files.map((f) => f.file);
  dup.files = []; dup.rows = [];
  if (files.length) await describe(files);
}

async function rerunAll() {
  if (state.video) state.video.rerun();
  await redescribe();
  const files = state.items.map((i) => i.file);
  state.items = [];
  $('results').replaceChildren();
  if (files.length) await analyse(files);
}

// Models picked from the hub or a URL: downloaded once with progress (cancellable), then
// read from the browser's cache; the last one is remembered for the next visit.
const REMEMBERED = 'dino-demo-model';
let current = 'default';
let downloading = null;

function remembered() {
  try { return JSON.parse(localStorage.getItem(REMEMBERED)); } catch { return null; }
}

async function showCache() {
  const { count, bytes } = await cacheSummary();
  const info = $('cache-info');
  info.textContent = count ? `${count} model(s) kept in this browser's cache (${megabytes(bytes)}).`
    : 'No downloaded model in this browser\'s cache.';
  info.dataset.count = count;
  $('cache-clear').disabled = !count;
  const group = $('hub-models');
  const options = await Promise.all(HUB_MODELS.map(async (m) => {
    const o = document.createElement('option');
    o.value = `hub:${m.repo}`;
    o.textContent = `${m.name}: ${m.repo} (${await isCached(hubUrl(m.repo)) ? 'cached' : `≈ ${m.approxMB} MB download`})`;
    return o;
  }));
  const selected = $('model-kind').value;
  group.replaceChildren(...options);
  $('model-kind').value = selected;
}

async function fetchModel(url, label) {
  const hit = await cachedModel(url);
  if (hit) { state.source = 'cache'; return hit; }
  const ctrl = new AbortController();
  downloading = ctrl;
  const bar = $('download-progress'), text = $('download-text');
  $('download').hidden = false;
  bar.removeAttribute('value');
  text.textContent = `${label}: asking for its size…`;
  try {
    const size = await remoteSize(url, ctrl.signal);
    text.textContent = `${label}: ${size ? megabytes(size) : 'size not announced'}, downloading…`;
    const bytes = await download(url, {
      signal: ctrl.signal,
      onProgress: ({ loaded, total }) => {
        state.downloads.push({ loaded, total });
        const all = total || size || 0;
        if (all) { bar.max = all; bar.value = loaded; } else bar.removeAttribute('value');
        text.textContent = `${label}: ${megabytes(loaded)} of ${all ? megabytes(all) : '?'}`;
      },
    });
    state.source = 'network';
    return bytes;
  } finally {
    // (a newer choice may have replaced this download: its bar stays)
    if (downloading === ctrl) { $('download').hidden = true; downloading = null; }
  }
}

let choices = 0;
async function chooseModel(kind, typedUrl) {
  if (downloading) downloading.abort();
  const mine = ++choices;
  let url, label;
  if (kind === 'default') { url = './default-model.safetensors'; label = 'bundled demo model'; }
  else if (kind.startsWith('hub:')) { label = kind.slice(4); url = hubUrl(label); }
  else { url = label = typedUrl; }
  if (!url) { showError('Give the URL of a weights file.'); return; }
  try {
    let bytes;
    if (kind === 'default') { bytes = await fetchBytes(url); state.source = 'bundled'; }
    else bytes = await fetchModel(url, label);
    if (mine !== choices) return; // a newer choice came while this one downloaded
    await loadModel(bytes, label);
    current = kind;
    if (kind === 'default') localStorage.removeItem(REMEMBERED);
    else localStorage.setItem(REMEMBERED, JSON.stringify({ kind, url, label }));
    showError('');
    await showCache();
    await rerunAll();
  } catch (err) {
    if (mine !== choices) return; // replaced by a newer choice, which reports for itself
    $('model-kind').value = current;
    if (err.name === 'AbortError') {
      status(`Download of ${label} cancelled; still using ${state.label}.`);
      return;
    }
    showError(`Could not load ${label}: ${err.message || err}` +
      (/fetch|network/i.test(String(err.message)) ? ' (offline, or the server does not allow cross-origin downloads)' : ''));
  }
}

async function main() {
  state.bindings = await bindings();
  await showCache();
  // the model of the last visit, when the browser still has it: from disk, no network
  const last = remembered();
  const cached = last ? await cachedModel(last.url) : null;
  try {
    if (cached) {
      state.source = 'cache';
      await loadModel(cached, last.label);
      current = last.kind;
      $('model-kind').value = last.kind.startsWith('hub:') ? last.kind : 'url';
      if (last.kind === 'url') { $('model-url').value = last.url; $('model-url').hidden = $('model-load').hidden = false; }
    } else {
      state.source = 'bundled';
      await loadModel(await fetchBytes('./default-model.safetensors'), 'bundled demo model');
    }
  } catch (e) {
    showError(`Could not load the model: ${e.message || e}`);
  }
  state.video = initVideo({
    model: () => state.model, size: () => Number($('size').value), render, resultElement,
  });
  $('files').onchange = (e) => analyse([...e.target.files]);
  const drop = $('drop');
  drop.ondragover = (e) => { e.preventDefault(); drop.classList.add('over'); };
  drop.ondragleave = () => drop.classList.remove('over');
  drop.ondrop = (e) => { e.preventDefault(); drop.classList.remove('over'); analyse([...e.dataTransfer.files]); };
  $('threshold').oninput = () => {
    $('threshold-value').textContent = Number($('threshold').value).toFixed(2);
    state.items.forEach(render);
    state.video.redraw();
  };
  $('head').onchange = () => { state.items.forEach(render); state.video.redraw(); };
  $('dup-files').onchange = (e) => describe([...e.target.files]);
  const dupDrop = $('dup-drop');
  dupDrop.ondragover = (e) => { e.preventDefault(); dupDrop.classList.add('over'); };
  dupDrop.ondragleave = () => dupDrop.classList.remove('over');
  dupDrop.ondrop = (e) => { e.preventDefault(); dupDrop.classList.remove('over'); describe([...e.dataTransfer.files]); };
  $('dup-threshold').oninput = () => {
    $('dup-threshold-value').textContent = Number($('dup-threshold').value).toFixed(3);
    showGroups();
  };
  $('size').onchange = rerunAll;
  $('model-kind').onchange = () => {
    const kind = $('model-kind').value;
    $('model-file').hidden = kind !== 'file';
    $('model-url').hidden = kind !== 'url';
    $('model-load').hidden = kind !== 'url';
    if (kind === 'default' || kind.startsWith('hub:')) chooseModel(kind);
  };
  $('model-file').onchange = async (e) => {
    const f = e.target.files[0];
    if (!f) return;
    state.source = 'file';
    try { await loadModel(new Uint8Array(await f.arrayBuffer()), f.name); current = 'file'; showError(''); await rerunAll(); }
    catch (err) { showError(`${f.name}: ${err.message || err}`); }
  };
  $('model-load').onclick = () => chooseModel('url', $('model-url').value.trim());
  $('download-cancel').onclick = () => { if (downloading) downloading.abort(); };
  $('cache-clear').onclick = async () => {
    await clearCache();
    localStorage.removeItem(REMEMBERED);
    await showCache();
  };
  $('backend').onchange = async () => {
    try { await loadModel(state.bytes, state.label); await rerunAll(); }
    catch (err) { showError(String(err.message || err)); }
  };
}
main();
