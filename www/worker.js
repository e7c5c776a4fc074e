// The model runs here, off the page's main thread: the tab stays responsive while a large
// image is analysed. Messages: {id, op: 'load' | 'attention' | 'copyDescriptor', args}.
import init, { Dino, resolveBackend } from './dino-web.js';

const ready = init();
let model = null;
// The threads build of the CPU engine (threads/, when the site ships it), where the page is
// cross-origin isolated: every core for the CPU backend. Otherwise null: one thread.
const threaded = (self.crossOriginIsolated
  ? import('./threads/dino_web.js').then(async (t) => {
    await t.default();
    await t.initThreadPool(navigator.hardwareConcurrency);
    return t;
  })
  : Promise.reject(new Error('not cross-origin isolated'))).catch(() => null);

// A trap (allocation failure aborts in this build) or a failed memory.grow leaves the module
// unusable: every call in flight fails with `crashed`, and the page starts a fresh worker.
const inFlight = new Set();
const isCrash = (err) => err instanceof WebAssembly.RuntimeError || err instanceof RangeError;
const crashMessage = (err) =>
  `out of memory or a crash in WebAssembly (${(err && err.message) || err}): try a smaller size or model`;
function crashAll(err) {
  for (const id of inFlight) postMessage({ id, ok: false, error: crashMessage(err), crashed: true });
  inFlight.clear();
}
// traps inside async Rust code surface here (from a microtask), not in the awaiting call
addEventListener('error', (e) => { if (isCrash(e.error)) { e.preventDefault(); crashAll(e.error); } });
addEventListener('unhandledrejection', (e) => { if (isCrash(e.reason)) { e.preventDefault(); crashAll(e.reason); } });

onmessage = async (e) => {
  const { id, op, args } = e.data;
  inFlight.add(id);
  try {
    await ready;
    let result;
    if (op === 'load') {
      const t = await threaded;
      let next, note, threads = 1;
      // where the model runs is decided first (no weights loaded): the CPU goes to the threads
      // build when there is one, WebGPU to this module
      const where = t ? await resolveBackend(args.options.backend || 'auto') : null;
      if (where && where.backend === 'cpu') {
        next = await t.Dino.load(args.bytes, { ...args.options, backend: 'cpu' });
        note = where.note;
        threads = navigator.hardwareConcurrency;
      } else {
        next = await Dino.load(args.bytes, args.options);
        note = next.backendNote;
      }
      if (model) model.free();
      model = next;
      result = { backend: model.backend, backendNote: note, heads: model.heads,
        patch: model.patch, dim: model.dim, threads };
    } else if (!model) {
      throw new Error('no model is loaded');
    } else if (op === 'attention') {
      result = await model.attention(args.image, args.options);
    } else if (op === 'copyDescriptor') {
      result = await model.copyDescriptor(args.image, args.options);
    } else {
      throw new Error(`unknown operation ${op}`);
    }
    if (inFlight.delete(id)) postMessage({ id, ok: true, result });
  } catch (err) {
    if (!inFlight.delete(id)) return;
    const crashed = isCrash(err);
    postMessage({ id, ok: false, error: crashed ? crashMessage(err) : String((err && err.message) || err), crashed });
  }
};
