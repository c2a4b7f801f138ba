// The views of single images: denoise (digits and photographs), super-resolve, reconstruct, embeddings.

import { models, pngDataUrl } from "./api.js";
import { exampleUrl, input, inputBlobs } from "./input.js";
import {
  addGaussianNoise, bicubic, crop, decodeFile, errorHeatMap, formatDb, fromDrawable, loadUrl, psnr, shrink,
  toDataUrl, toPngBlob,
} from "./pixels.js";
import { Runner, blobToDataUrl, element, fillModelSelect } from "./ui.js";

const byTestId = (section, id) => section.querySelector(`[data-testid="${id}"]`);
const query = (params) => new URLSearchParams(params).toString();

/** A photo chosen in the Photo view; the Super-resolve view can use it too. */
export const photo = { file: null, bitmap: null };

// -- denoise a digit ---------------------------------------------------------------------------------

export function denoiseView() {
  const section = document.getElementById("view-denoise");
  const runner = new Runner("denoise");
  const select = document.getElementById("denoise-model");
  const slider = document.getElementById("denoise-sigma");
  const sigmaValue = document.getElementById("denoise-sigma-value");
  // An upload is most likely noisy already: by default it is denoised as it is, and with no clean picture
  // to compare with, no PSNR is shown. Examples and drawings are clean: noise is added in the page.
  const asUploaded = document.getElementById("denoise-as-uploaded");
  const noReference = "– (no clean reference)";
  let lastSource = null;
  let seed = 1;

  function show(clean, noisy) {
    const cleanImage = byTestId(section, "denoise-clean");
    cleanImage.hidden = !clean;
    if (clean) cleanImage.src = toDataUrl(clean);
    byTestId(section, "denoise-clean-caption").textContent = clean ? "input (clean)" : "no clean reference";
    byTestId(section, "denoise-noisy").src = toDataUrl(noisy);
    byTestId(section, "denoise-noisy-caption").textContent = clean ? "noisy" : "as uploaded";
    byTestId(section, "psnr-noisy").textContent = clean ? formatDb(psnr(noisy, clean)) : noReference;
  }

  async function run() {
    await runner.run(async (request) => {
      await fillModelSelect(select, { preferred: "mnist-denoise" });
      const path = `/v1/denoise?${query({ model: select.value })}`;
      if (input.rawFile) { await request("POST", path, { images: [input.rawFile] }); return; }
      if (!input.digit) throw new Error("no input yet: pick an example, draw or upload a digit");
      if (input.source !== lastSource) { // a new input: an upload's default is "as uploaded"
        asUploaded.checked = input.source.startsWith("Upload");
        lastSource = input.source;
      }
      slider.disabled = asUploaded.checked;
      const clean = asUploaded.checked ? null : input.digit;
      const sent = clean ? addGaussianNoise(clean, Number(slider.value), seed) : input.digit;
      show(clean, sent);
      const { data } = await request("POST", path, { images: [await toPngBlob(sent, "noisy.png")] });
      const url = await blobToDataUrl(data);
      byTestId(section, "denoise-output").src = url;
      byTestId(section, "psnr-denoised").textContent = clean ? formatDb(psnr(await loadUrl(url, 1), clean)) : noReference;
    });
  }

  slider.addEventListener("input", () => { sigmaValue.textContent = Number(slider.value).toFixed(2); });
  slider.addEventListener("change", run);
  select.addEventListener("change", run);
  asUploaded.addEventListener("change", run);
  document.getElementById("denoise-reseed").addEventListener("click", () => { seed += 1; run(); });
  byTestId(section, "run-denoise").addEventListener("click", run);
  return { name: "denoise", activate: run, onInput: run };
}

// -- denoise a photograph --------------------------------------------------------------------------

function limitSize(bitmap, maxSide) {
  const scale = maxSide > 0 ? Math.min(1, maxSide / Math.max(bitmap.width, bitmap.height)) : 1;
  return [Math.max(1, Math.round(bitmap.width * scale)), Math.max(1, Math.round(bitmap.height * scale))];
}

export async function choosePhoto(file) {
  photo.file = file;
  photo.bitmap = await decodeFile(file);
}

export function photoView() {
  const section = document.getElementById("view-photo");
  const runner = new Runner("photo");
  const select = document.getElementById("photo-model");
  const slider = document.getElementById("photo-sigma");
  const maxSide = document.getElementById("photo-max-side");
  const compare = document.getElementById("photo-compare");
  const before = document.getElementById("photo-before");
  const after = document.getElementById("photo-after");
  const afterClip = document.getElementById("photo-after-clip");
  const split = document.getElementById("photo-split");
  const download = document.getElementById("photo-download");
  const sigmaUsed = byTestId(section, "photo-sigma-used");
  const level = document.getElementById("photo-level");
  const levelValue = document.getElementById("photo-level-value");
  let urls = [];
  let trained = {}; // model name -> the noise sigma it was trained for (0..255), from its card; NaN: every level
  let everyLevel = []; // the models of every noise level (they take `sigma` and estimate it when left out)
  let modelChosen = false; // by the page for this picture, or by the user: then kept
  let levelChosen = false; // the user moved the level slider: send it; otherwise the service estimates it

  async function fill() {
    const matching = await fillModelSelect(select);
    trained = Object.fromEntries(matching.map((m) => [m.name, Number(m.training && m.training.sigma)]));
    everyLevel = matching.filter((m) => !Number.isFinite(trained[m.name]));
  }

  function pickModelForNoise() { // a model of one level: the one trained for the level nearest the noise added
    if (!Number.isFinite(trained[select.value])) return;
    const sigma = Number(slider.value);
    const names = Object.keys(trained).filter((name) => Number.isFinite(trained[name]));
    if (names.length) select.value = names.reduce((a, b) => (Math.abs(trained[a] - sigma) <= Math.abs(trained[b] - sigma) ? a : b));
  }

  function isGray(bitmap) {
    const image = fromDrawable(bitmap, 3, Math.min(bitmap.width, 64), Math.min(bitmap.height, 64));
    for (let i = 0; i < image.data.length; i += 3) {
      if (Math.abs(image.data[i] - image.data[i + 1]) > 2 / 255 || Math.abs(image.data[i] - image.data[i + 2]) > 2 / 255) return false;
    }
    return true;
  }

  function pickModelForPicture(channels) { // the model of every noise level for the picture's colour mode
    const fitting = everyLevel.find((m) => m.input && m.input.channels === channels) || everyLevel[0];
    if (fitting) select.value = fitting.name;
  }

  async function run() {
    await runner.run(async (request) => {
      await fill();
      if (!photo.file) throw new Error("choose a photo first (or the example photo)");
      const channels = photo.bitmap && isGray(photo.bitmap) ? 1 : 3;
      if (!modelChosen) { pickModelForPicture(channels); modelChosen = true; }
      const takesLevel = !Number.isFinite(trained[select.value]);
      level.disabled = !takesLevel;
      const params = { model: select.value };
      if (takesLevel && levelChosen) params.sigma = level.value;
      const path = `/v1/denoise?${query(params)}`;
      if (!photo.bitmap) { await request("POST", path, { images: [photo.file] }); return; }
      const [width, height] = limitSize(photo.bitmap, Number(maxSide.value));
      const clean = fromDrawable(photo.bitmap, channels, width, height);
      const sigma = Number(slider.value);
      const noisy = sigma > 0 ? addGaussianNoise(clean, sigma / 255, 7) : clean;
      const sent = await toPngBlob(noisy, "photo.png");
      urls.forEach((url) => URL.revokeObjectURL(url));
      urls = [URL.createObjectURL(sent)];
      before.src = urls[0];
      const { data, response } = await request("POST", path, { images: [sent] });
      urls.push(URL.createObjectURL(data));
      after.src = urls[1];
      download.href = urls[1];
      compare.hidden = false;
      const reported = response.headers.get("X-Noise-Sigma");
      const model = takesLevel ? `${select.value} (every noise level)` : `${select.value} (trained for σ = ${trained[select.value]})`;
      let text;
      if (reported === null) {
        text = `Noise added in the page: σ = ${sigma} (0..255 scale) · model ${model}`;
      } else if (levelChosen) {
        text = `Denoised at σ = ${reported} (chosen with the slider) · model ${model}`;
      } else { // the service's estimate: the slider starts there
        level.value = reported;
        levelValue.textContent = `${reported} (estimated)`;
        text = `Estimated noise level σ = ${reported} (by the service) · model ${model}`;
      }
      if (sigma > 0) { // only then is there a clean reference to score against
        const denoised = await loadUrl(urls[1], channels);
        text += ` · PSNR noisy ${formatDb(psnr(noisy, clean))} → denoised ${formatDb(psnr(denoised, clean))}`;
      }
      sigmaUsed.textContent = `${text} · ${width}×${height} px`;
    });
  }

  function newPicture() { modelChosen = false; levelChosen = false; levelValue.textContent = "estimated"; run(); }

  const setSplit = () => { afterClip.style.clipPath = `inset(0 0 0 ${split.value}%)`; };
  split.addEventListener("input", setSplit);
  setSplit();
  slider.addEventListener("input", () => {
    document.getElementById("photo-sigma-value").textContent = slider.value;
    pickModelForNoise();
    levelChosen = false; // other noise: estimated again
    levelValue.textContent = "estimated";
  });
  level.addEventListener("input", () => { levelValue.textContent = level.value; });
  level.addEventListener("change", () => { levelChosen = true; run(); });
  select.addEventListener("change", () => { modelChosen = true; run(); });
  document.getElementById("photo-input").addEventListener("change", async (event) => {
    if (event.target.files[0]) { await choosePhoto(event.target.files[0]); newPicture(); }
  });
  byTestId(section, "photo-example").addEventListener("click", async () => {
    const response = await fetch(new URL("./examples/photo.jpg", import.meta.url));
    await choosePhoto(new File([await response.blob()], "photo.jpg", { type: "image/jpeg" }));
    newPicture();
  });
  byTestId(section, "run-photo").addEventListener("click", run);
  // Before any picture: the colour model of every noise level (a picture then picks its own colour mode).
  const activate = () => runner.run(async () => { await fill(); if (!modelChosen) pickModelForPicture(3); });
  return { name: "photo", activate, onInput: () => {} };
}

// -- super-resolve ---------------------------------------------------------------------------------

export function superResolveView() {
  const section = document.getElementById("view-super-resolve");
  const runner = new Runner("super-resolve");
  const scale = document.getElementById("sr-scale");
  const source = () => section.querySelector('input[name="sr-source"]:checked').value;

  async function fillScales() {
    const domain = source() === "photo" ? "natural" : "mnist";
    const matching = (await models()).filter((m) => m.state !== "unavailable" && m.tasks.includes("super-resolve")
      && m.input && m.input.domain === domain).sort((a, b) => a.scale - b.scale);
    const current = scale.value;
    scale.replaceChildren(...matching.map((m) => element("option", { value: m.name }, `×${m.scale} (${m.name})`)));
    if (matching.some((m) => m.name === current)) scale.value = current;
    return matching;
  }

  async function run() {
    await runner.run(async (request) => {
      const matching = await fillScales();
      const model = matching.find((m) => m.name === scale.value);
      if (!model) throw new Error("no super-resolution model for this kind of input is served");
      const path = `/v1/super-resolve?${query({ model: model.name })}`;
      let reference;
      if (source() === "photo") {
        if (!photo.file) throw new Error("choose a photo in the Photo view first");
        if (!photo.bitmap) { await request("POST", path, { images: [photo.file] }); return; }
        const [width, height] = limitSize(photo.bitmap, 256);
        reference = fromDrawable(photo.bitmap, 3, width, height);
      } else {
        if (input.rawFile) { await request("POST", path, { images: [input.rawFile] }); return; }
        if (!input.digit) throw new Error("no input yet: pick an example, draw or upload a digit");
        reference = input.digit;
      }
      const factor = model.scale;
      reference = crop(reference, reference.width - (reference.width % factor), reference.height - (reference.height % factor));
      const low = shrink(reference, factor);
      const upscaled = bicubic(low, factor);
      byTestId(section, "sr-low").src = toDataUrl(low);
      byTestId(section, "sr-low-size").textContent = `${low.width}×${low.height}`;
      byTestId(section, "sr-bicubic").src = toDataUrl(upscaled);
      byTestId(section, "sr-reference").src = toDataUrl(reference);
      byTestId(section, "psnr-bicubic").textContent = formatDb(psnr(upscaled, reference));
      byTestId(section, "sr-model-name").textContent = model.name;
      const { data } = await request("POST", path, { images: [await toPngBlob(low, "low.png")] });
      const url = await blobToDataUrl(data);
      const output = await loadUrl(url, reference.channels);
      byTestId(section, "sr-output").src = url;
      byTestId(section, "psnr-sr").textContent = formatDb(psnr(output, reference));
    });
  }

  section.querySelectorAll('input[name="sr-source"]').forEach((radio) => radio.addEventListener("change", run));
  scale.addEventListener("change", run);
  byTestId(section, "run-super-resolve").addEventListener("click", run);
  return { name: "super-resolve", activate: run, onInput: () => { if (source() === "digit") run(); } };
}

// -- reconstruct -----------------------------------------------------------------------------------

export function reconstructView() {
  const section = document.getElementById("view-reconstruct");
  const runner = new Runner("reconstruct");
  const select = document.getElementById("rec-model");

  async function run() {
    await runner.run(async (request) => {
      const matching = await fillModelSelect(select, { preferred: "mnist-ae" });
      const path = `/v1/reconstruct?${query({ model: select.value, response_format: "json" })}`;
      const { data } = await request("POST", path, { images: await inputBlobs() });
      const item = data.data[0];
      const reconstruction = await loadUrl(pngDataUrl(item), 1);
      const heat = errorHeatMap(input.digit, reconstruction);
      byTestId(section, "reconstruct-input").src = toDataUrl(input.digit);
      byTestId(section, "reconstruct-output").src = pngDataUrl(item);
      byTestId(section, "reconstruct-heatmap").src = toDataUrl(heat.image);
      byTestId(section, "heatmap-max").textContent = heat.max.toFixed(2);
      const score = item.reconstruction_error;
      byTestId(section, "anomaly-score").textContent = score.toFixed(4);
      const card = matching.find((m) => m.name === select.value);
      const typical = card && card.metrics.reconstruct && card.metrics.reconstruct.scores.model.mse;
      byTestId(section, "anomaly-context").textContent = typical
        ? `${(score / typical).toFixed(1)}× this model's mean on the MNIST test set (${typical.toFixed(4)}); far above 1 suggests an unusual input`
        : "";
    });
  }

  select.addEventListener("change", run);
  byTestId(section, "run-reconstruct").addEventListener("click", run);
  return { name: "reconstruct", activate: run, onInput: run };
}

// -- embeddings ------------------------------------------------------------------------------------

let referenceBlobs = null;
async function referenceDigits() { // the ten example digits, fetched once
  referenceBlobs ??= Promise.all([...Array(10).keys()].map(async (digit) => {
    const response = await fetch(exampleUrl(digit));
    return new File([await response.blob()], `digit-${digit}.png`, { type: "image/png" });
  }));
  return referenceBlobs;
}

function cosine(a, b) {
  let dot = 0; let na = 0; let nb = 0;
  for (let i = 0; i < a.length; i++) { dot += a[i] * b[i]; na += a[i] ** 2; nb += b[i] ** 2; }
  return na && nb ? dot / Math.sqrt(na * nb) : 0;
}

function drawBars(svg, vector) {
  const ns = "http://www.w3.org/2000/svg";
  const title = svg.querySelector("title");
  svg.replaceChildren(title);
  const width = 320; const height = 140; const middle = height / 2;
  const largest = Math.max(...vector.map(Math.abs), 1e-6);
  const step = width / vector.length;
  const axis = document.createElementNS(ns, "line");
  Object.entries({ x1: 0, x2: width, y1: middle, y2: middle, class: "axis" }).forEach(([k, v]) => axis.setAttribute(k, v));
  svg.append(axis);
  vector.forEach((value, i) => {
    const bar = document.createElementNS(ns, "rect");
    const size = (Math.abs(value) / largest) * (middle - 4);
    const attributes = { x: i * step + step * 0.1, width: step * 0.8, y: value >= 0 ? middle - size : middle, height: Math.max(size, 0.5), class: value >= 0 ? "positive" : "negative" };
    Object.entries(attributes).forEach(([k, v]) => bar.setAttribute(k, v));
    const tip = document.createElementNS(ns, "title");
    tip.textContent = `dimension ${i}: ${value.toFixed(3)}`;
    bar.append(tip);
    svg.append(bar);
  });
}

export function embeddingsView() {
  const section = document.getElementById("view-embeddings");
  const runner = new Runner("embeddings");
  const select = document.getElementById("emb-model");

  async function run() {
    await runner.run(async (request) => {
      await fillModelSelect(select, { preferred: "mnist-ae" });
      const path = `/v1/embeddings?${query({ model: select.value })}`;
      const images = [...(await inputBlobs()), ...(await referenceDigits())];
      const { data } = await request("POST", path, { images });
      const [vector, ...references] = data.data.map((item) => item.embedding);
      drawBars(byTestId(section, "embedding-chart"), vector);
      byTestId(section, "embedding-size").textContent = String(vector.length);
      const ranked = references.map((ref, digit) => ({ digit, similarity: cosine(vector, ref) }))
        .sort((a, b) => b.similarity - a.similarity);
      byTestId(section, "nearest-digit").textContent = `${ranked[0].digit} (cosine ${ranked[0].similarity.toFixed(3)})`;
      byTestId(section, "similarities").replaceChildren(...ranked.map(({ digit, similarity }) => element("li", {},
        element("img", { src: exampleUrl(digit), alt: `reference ${digit}`, width: "28", height: "28", class: "pixel" }),
        ` ${digit}: ${similarity.toFixed(3)}`)));
    });
  }

  select.addEventListener("change", run);
  byTestId(section, "run-embeddings").addEventListener("click", run);
  return { name: "embeddings", activate: run, onInput: run };
}
