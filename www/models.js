// Where the page's models come from: the official DINO ViTs on the Hugging Face hub, any URL,
// and the browser's Cache API, so that a model is downloaded once and then loads from disk
// (also offline). Downloads stream with progress and can be cancelled.

export const HUB_MODELS = [
  { repo: 'facebook/dino-vits8', name: 'ViT-S/8', approxMB: 87 },
  { repo: 'facebook/dino-vits16', name: 'ViT-S/16', approxMB: 87 },
  { repo: 'facebook/dino-vitb8', name: 'ViT-B/8', approxMB: 343 },
  { repo: 'facebook/dino-vitb16', name: 'ViT-B/16', approxMB: 343 },
];

// the file the hub serves for a repository (a redirect to its CDN, CORS-enabled)
export const hubUrl = (repo) => `https://huggingface.co/${repo}/resolve/main/model.safetensors`;

// one cache for every model the page downloaded, keyed by URL; a new name drops old entries
const CACHE = 'dino-models-v1';
const hasCache = () => typeof caches !== 'undefined';

export const megabytes = (n) => `${(n / 1e6).toFixed(1)} MB`;

// Whether `url` is in the cache (without reading it).
export async function isCached(url) {
  if (!hasCache()) return false;
  try {
    return Boolean(await (await caches.open(CACHE)).match(url));
  } catch {
    return false;
  }
}

// The bytes of `url` from the cache, or null when it was never downloaded (or the browser
// keeps no cache for this page: an insecure origin, a private window that refuses storage).
export async function cachedModel(url) {
  if (!hasCache()) return null;
  try {
    const hit = await (await caches.open(CACHE)).match(url);
    return hit ? new Uint8Array(await hit.arrayBuffer()) : null;
  } catch {
    return null;
  }
}

// The size the server announces before any byte is downloaded (HEAD), or null (also when it
// takes longer than `waitMs`: the download then starts without it).
export async function remoteSize(url, signal, waitMs = 10000) {
  const head = fetch(url, { method: 'HEAD', signal }).then((res) => {
    const n = Number(res.headers.get('content-length'));
    return res.ok && n > 0 ? n : null;
  }, (e) => {
    if (signal && signal.aborted) throw e;
    return null;
  });
  const late = new Promise((resolve) => setTimeout(() => resolve(null), waitMs));
  return Promise.race([head, late]);
}

// Downloads `url` with `onProgress({ loaded, total })` after every chunk (total 0 when the
// server does not say), stops on `signal`, stores the complete file in the cache and returns
// its bytes. A download that ends short of the announced size is an error, never cached.
export async function download(url, { signal, onProgress = () => {} } = {}) {
  const res = await fetch(url, { signal });
  if (!res.ok) throw new Error(`HTTP ${res.status} ${res.statusText}`.trim());
  const total = Number(res.headers.get('content-length')) || 0;
  const chunks = [];
  let loaded = 0;
  onProgress({ loaded, total });
  const reader = res.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    loaded += value.length;
    onProgress({ loaded, total });
  }
  if (total && loaded < total) throw new Error(`the download stopped at ${loaded} of ${total} bytes`);
  const bytes = new Uint8Array(loaded);
  let at = 0;
  for (const c of chunks) { bytes.set(c, at); at += c.length; }
  if (hasCache()) {
    try {
      await (await caches.open(CACHE)).put(url, new Response(bytes, {
        headers: { 'content-type': 'application/octet-stream', 'content-length': String(loaded) },
      }));
    } catch (e) {
      // a full disk or a refused quota: the model still loads, it will be downloaded again
      console.warn(`not cached: ${e.message || e}`);
    }
  }
  return bytes;
}

// What the cache holds: { count, bytes }.
export async function cacheSummary() {
  if (!hasCache()) return { count: 0, bytes: 0 };
  const cache = await caches.open(CACHE);
  let count = 0, bytes = 0;
  for (const req of await cache.keys()) {
    const res = await cache.match(req);
    count++;
    bytes += Number(res.headers.get('content-length')) || 0;
  }
  return { count, bytes };
}

export async function clearCache() {
  if (hasCache()) await caches.delete(CACHE);
}
