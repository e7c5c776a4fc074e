// Video and webcam: the attention of the frame on screen, computed in the model's worker while
// the video plays. The model is slower than the video, so while it works on one frame the
// others go by unanalysed; when paused or seeked, the frame shown is analysed. The result is
// drawn with the page's own figures (heads, mean, masks at the slider's threshold) and copied
// onto one canvas that can be recorded as WebM (MediaRecorder) or saved as a PNG.

const $ = (id) => document.getElementById(id);

// `page`: { model() -> the loaded model or null, size() -> short side in px, render(item),
//           resultElement(title) -> an <article> for a result }
export function initVideo(page) {
  const video = $('video');
  const out = $('video-out');
  const v = {
    source: null, // 'file' or 'webcam'
    busy: false,
    again: false,
    processed: 0, // frames analysed since the source was chosen
    item: null, // the last analysed frame, as the page's results are kept
    recorder: null,
    recorded: null, // { size, type } of the last recording
    fps: null, // the model's frames per second (moving average)
    stream: null,
  };
  const status = (text) => { $('video-status').textContent = text; };

  function describeSpeed() {
    const rate = v.fps ? `${v.fps.toFixed(1)} frames/s analysed` : '…';
    const r = v.item && v.item.r;
    const model = r ? ` (the model: ${r.ms.toFixed(0)} ms per frame on ${r.backend})` : '';
    return `${rate}${model}; ${v.processed} frame(s) so far` +
      (v.source === 'file' && !video.paused ? '; frames in between are skipped while it works' : '');
  }

  // the frame on screen through the model, unless it is busy with the previous one
  async function analyse() {
    const model = page.model();
    // a seek while the model works: the frame then shown is analysed next
    if (v.busy) { v.again = true; return; }
    if (!model || video.readyState < 2 || !video.videoWidth) return;
    v.busy = true;
    v.again = false;
    const started = performance.now();
    try {
      const time = video.currentTime;
      // (through a canvas: createImageBitmap(video) refuses some decoders' frames)
      const grab = new OffscreenCanvas(video.videoWidth, video.videoHeight);
      grab.getContext('2d').drawImage(video, 0, 0);
      const bitmap = grab.transferToImageBitmap();
      const size = page.size();
      const r = await model.attention(bitmap, { size });
      if (!v.item) {
        v.item = { el: page.resultElement('video'), size };
        $('video-results').replaceChildren(v.item.el);
        v.item.el.querySelector('.download').onclick = () => savePng();
      }
      Object.assign(v.item, { name: `frame at ${time.toFixed(2)} s`, time, r, bitmap, size });
      v.item.el.querySelector('h2').textContent = `${v.source === 'webcam' ? 'webcam' : 'video'}: frame at ${time.toFixed(2)} s`;
      page.render(v.item);
      copyToOut();
      v.processed++;
      const rate = 1000 / Math.max(performance.now() - started, 1);
      v.fps = v.fps ? 0.8 * v.fps + 0.2 * rate : rate;
      status(describeSpeed());
    } catch (e) {
      status(`Could not analyse the frame: ${e.message || e}`);
    } finally {
      v.busy = false;
    }
    if (v.again && video.paused) analyse();
  }

  // while the video plays (or the webcam runs): the next frame as soon as the worker is free
  async function loop() {
    while (v.source === 'webcam' ? v.stream : !video.paused && !video.ended) {
      await analyse();
      await new Promise((r) => requestAnimationFrame(r));
    }
  }

  // the masks-over-frame figure, onto the canvas that is recorded and saved
  function copyToOut() {
    const src = v.item.el.querySelector('canvas.overlay');
    if (!src) return;
    if (out.width !== src.width || out.height !== src.height) { out.width = src.width; out.height = src.height; }
    out.getContext('2d').drawImage(src, 0, 0);
  }

  function savePng() {
    out.toBlob((blob) => {
      const a = document.createElement('a');
      a.href = URL.createObjectURL(blob);
      a.download = `dino-frame-${v.item ? v.item.time.toFixed(2) : 0}s.png`;
      a.click();
    }, 'image/png');
  }

  function stopWebcam() {
    if (v.stream) v.stream.getTracks().forEach((t) => t.stop());
    v.stream = null;
    $('webcam').textContent = 'Use the webcam';
  }

  function reset(source) {
    v.source = source;
    v.processed = 0;
    v.fps = null;
    $('record').disabled = $('frame-png').disabled = false;
    $('video-pair').hidden = false;
  }

  function openFile(file) {
    if (!file) return;
    stopWebcam();
    video.srcObject = null;
    if (video.src) URL.revokeObjectURL(video.src);
    video.src = URL.createObjectURL(file);
    video.controls = true;
    reset('file');
    status(`Loading ${file.name}…`);
  }

  $('video-file').onchange = (e) => openFile(e.target.files[0]);
  const drop = $('video-drop');
  drop.ondragover = (e) => { e.preventDefault(); drop.classList.add('over'); };
  drop.ondragleave = () => drop.classList.remove('over');
  drop.ondrop = (e) => { e.preventDefault(); drop.classList.remove('over'); openFile(e.dataTransfer.files[0]); };
  video.addEventListener('loadeddata', () => analyse());
  video.addEventListener('seeked', () => { if (video.paused) analyse(); });
  video.addEventListener('play', () => loop());
  video.addEventListener('error', () => status(`This browser cannot play the video: ${video.error ? video.error.message || `error ${video.error.code}` : 'unknown format'}`));

  $('webcam').onclick = async () => {
    if (v.stream) { stopWebcam(); return; }
    try {
      const stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
      video.removeAttribute('src');
      video.srcObject = stream;
      video.controls = false;
      reset('webcam');
      v.stream = stream;
      $('webcam').textContent = 'Stop the webcam';
      await video.play();
      loop();
    } catch (e) {
      status(`No webcam: ${e.message || e}`);
    }
  };

  $('record').onclick = () => {
    if (v.recorder) { v.recorder.stop(); return; }
    const type = ['video/webm;codecs=vp9', 'video/webm;codecs=vp8', 'video/webm']
      .find((t) => MediaRecorder.isTypeSupported(t));
    const chunks = [];
    const recorder = new MediaRecorder(out.captureStream(), type ? { mimeType: type } : undefined);
    recorder.ondataavailable = (e) => { if (e.data.size) chunks.push(e.data); };
    recorder.onstop = () => {
      const blob = new Blob(chunks, { type: recorder.mimeType || 'video/webm' });
      v.recorded = { size: blob.size, type: blob.type };
      v.recorder = null;
      $('record').textContent = 'Record WebM';
      const a = document.createElement('a');
      a.href = URL.createObjectURL(blob);
      a.download = 'dino-attention.webm';
      a.click();
      status(`Recorded ${(blob.size / 1e6).toFixed(2)} MB of WebM. ${describeSpeed()}`);
    };
    recorder.start(250);
    v.recorder = recorder;
    $('record').textContent = 'Stop recording';
  };
  $('frame-png').onclick = savePng;

  return {
    state: v,
    // the slider, the head choice: redraw without the model; a new model or size: analyse again
    redraw() { if (v.item) { page.render(v.item); copyToOut(); } },
    rerun() { if (v.item) { v.item = null; analyse(); } },
  };
}
