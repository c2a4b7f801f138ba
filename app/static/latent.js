// The 2-D latent space (the map of test digits, the manifold, decoding a clicked point, interpolation)
// and sampling from a VAE's prior.

import { pngDataUrl } from "./api.js";
import { inputBlobs } from "./input.js";
import { Runner, blobToDataUrl, element, fillModelSelect } from "./ui.js";

// Ten colours that stand apart on the dark map (Tableau 10, white for 7); style.css has the same for the legend.
export const DIGIT_COLOURS = ["#f28e2b", "#4e9bd6", "#59a14f", "#edc948", "#b07aa1", "#e15759", "#ff9da7", "#ffffff", "#9c755f", "#76e0d4"];
const MANIFOLD_SIZE = 15;
const byTestId = (section, id) => section.querySelector(`[data-testid="${id}"]`);
const formatPoint = (z) => `(${z[0].toFixed(2)}, ${z[1].toFixed(2)})`;

export function latentView() {
  const section = document.getElementById("view-latent");
  const runner = new Runner("latent");
  const select = document.getElementById("latent-model");
  const range = document.getElementById("latent-range");
  const showManifold = document.getElementById("latent-show-manifold");
  const canvas = document.getElementById("latent-map");
  const context = canvas.getContext("2d");
  const steps = document.getElementById("latent-steps");
  const state = { map: null, manifold: null, manifoldUrl: null, cursor: [0, 0], decoded: null, a: null, b: null, loadedFor: "" };

  // The manifold's images are centred on an even grid over [-range, range], so each reaches half a cell
  // beyond it; the map shows that whole extent, and the two line up.
  const extent = () => Number(range.value) * (1 + 1 / (MANIFOLD_SIZE - 1));
  const toCanvas = ([z1, z2]) => [((z1 + extent()) / (2 * extent())) * canvas.width, ((extent() - z2) / (2 * extent())) * canvas.height];
  const toLatent = (x, y) => [(x / canvas.width) * 2 * extent() - extent(), extent() - (y / canvas.height) * 2 * extent()];

  function mark(z, label, colour) {
    if (!z) return;
    const [x, y] = toCanvas(z);
    context.strokeStyle = colour;
    context.fillStyle = colour;
    context.lineWidth = 2;
    context.beginPath();
    context.arc(x, y, 7, 0, 2 * Math.PI);
    context.stroke();
    context.font = "bold 14px system-ui, sans-serif";
    context.fillText(label, x + 9, y - 9);
  }

  function draw() {
    context.fillStyle = "#111";
    context.fillRect(0, 0, canvas.width, canvas.height);
    if (showManifold.checked && state.manifold) {
      context.globalAlpha = 0.55;
      context.drawImage(state.manifold, 0, 0, canvas.width, canvas.height);
      context.globalAlpha = 1;
    }
    context.strokeStyle = "#555";
    context.lineWidth = 1;
    const [ox, oy] = toCanvas([0, 0]);
    context.beginPath();
    context.moveTo(0, oy); context.lineTo(canvas.width, oy);
    context.moveTo(ox, 0); context.lineTo(ox, canvas.height);
    context.stroke();
    if (state.map) {
      const { x, y, labels } = state.map;
      for (let i = 0; i < labels.length; i++) {
        const [px, py] = toCanvas([x[i], y[i]]);
        context.fillStyle = DIGIT_COLOURS[labels[i] % 10];
        context.fillRect(px - 1, py - 1, 2.5, 2.5);
      }
    }
    if (state.a && state.b) {
      context.strokeStyle = "#fff";
      context.setLineDash([5, 4]);
      context.beginPath();
      context.moveTo(...toCanvas(state.a)); context.lineTo(...toCanvas(state.b));
      context.stroke();
      context.setLineDash([]);
    }
    mark(state.a, "A", "#fff");
    mark(state.b, "B", "#fff");
    const [cx, cy] = toCanvas(state.cursor); // the point a click or Enter acts on
    context.strokeStyle = "#ff4081";
    context.lineWidth = 2;
    context.beginPath();
    context.moveTo(cx - 8, cy); context.lineTo(cx + 8, cy);
    context.moveTo(cx, cy - 8); context.lineTo(cx, cy + 8);
    context.stroke();
  }

  async function load() {
    await runner.run(async (request) => {
      await fillModelSelect(select, { preferred: "mnist-vae-2d" });
      const model = select.value;
      if (!model) throw new Error("no VAE with a 2-D latent space is served");
      const key = `${model}@${range.value}`;
      if (state.loadedFor !== key) {
        const [map, manifold] = await Promise.all([
          request("GET", `/v1/vae/latent-map?${new URLSearchParams({ model })}`),
          request("GET", `/v1/vae/manifold?${new URLSearchParams({ model, size: MANIFOLD_SIZE, range: range.value })}`),
        ]);
        state.map = map.data;
        if (state.manifoldUrl) URL.revokeObjectURL(state.manifoldUrl);
        state.manifoldUrl = URL.createObjectURL(manifold.data);
        const image = new Image();
        image.src = state.manifoldUrl;
        await image.decode();
        state.manifold = image;
        state.loadedFor = key;
        byTestId(section, "latent-manifold").src = state.manifoldUrl;
        byTestId(section, "latent-count").textContent = `${map.data.count} points: ${map.data.source}`;
      }
      draw();
    });
  }

  async function act(z) {
    state.cursor = z;
    const mode = section.querySelector('input[name="click-mode"]:checked').value;
    if (mode === "a" || mode === "b") {
      state[mode] = z;
      byTestId(section, `latent-${mode}`).textContent = formatPoint(z);
      draw();
      return;
    }
    draw();
    await runner.run(async (request) => {
      const { data } = await request("POST", "/v1/vae/decode", { json: { model: select.value, latents: [z], response_format: "json" } });
      byTestId(section, "latent-decoded").src = pngDataUrl(data.data[0]);
      byTestId(section, "latent-point").textContent = formatPoint(z);
    });
  }

  async function endFromInput(end) {
    await runner.run(async (request) => {
      const path = `/v1/vae/encode?${new URLSearchParams({ model: select.value })}`;
      const { data } = await request("POST", path, { images: await inputBlobs() });
      state[end] = data.data[0].mean;
      byTestId(section, `latent-${end}`).textContent = `${formatPoint(state[end])} (the input digit)`;
      draw();
    });
  }

  async function interpolate() {
    await runner.run(async (request) => {
      if (!state.a || !state.b) throw new Error("set A and B first: click the map in 'sets A' / 'sets B' mode, or use the input digit");
      const body = { model: select.value, latents: [state.a, state.b], steps: Number(steps.value), response_format: "json" };
      const { data } = await request("POST", "/v1/vae/interpolate", { json: body });
      byTestId(section, "interpolation").replaceChildren(...data.data.map((item, i) =>
        element("img", { src: pngDataUrl(item), class: "pixel", alt: `step ${i + 1} of ${data.data.length}` })));
    });
  }

  canvas.addEventListener("click", (event) => {
    const box = canvas.getBoundingClientRect();
    act(toLatent((event.clientX - box.left) * (canvas.width / box.width), (event.clientY - box.top) * (canvas.height / box.height)));
  });
  canvas.addEventListener("keydown", (event) => { // the map without a mouse: arrows move the cross, Enter acts
    const step = extent() / 20;
    const moves = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, step], ArrowDown: [0, -step] };
    if (moves[event.key]) {
      event.preventDefault();
      state.cursor = state.cursor.map((v, i) => Math.max(-extent(), Math.min(extent(), v + moves[event.key][i])));
      draw();
    } else if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      act(state.cursor);
    }
  });
  range.addEventListener("input", () => { document.getElementById("latent-range-value").textContent = range.value; });
  range.addEventListener("change", load);
  select.addEventListener("change", () => { state.a = null; state.b = null; load(); });
  showManifold.addEventListener("change", draw);
  steps.addEventListener("input", () => { document.getElementById("latent-steps-value").textContent = steps.value; });
  document.getElementById("latent-encode-a").addEventListener("click", () => endFromInput("a"));
  document.getElementById("latent-encode-b").addEventListener("click", () => endFromInput("b"));
  document.getElementById("latent-interpolate").addEventListener("click", interpolate);

  const legend = document.getElementById("latent-legend");
  legend.replaceChildren(...DIGIT_COLOURS.map((_, digit) => element("span", { class: "key" }, element("span", { class: `swatch c${digit}`, "aria-hidden": "true" }), String(digit))));
  return { name: "latent", activate: load, onInput: () => {} };
}

const takesLabels = (model) => Array.isArray(model.labels) && model.labels.length > 0;

export function sampleView() {
  const section = document.getElementById("view-sample");
  const runner = new Runner("sample");
  const restyleRunner = new Runner("restyle");
  const select = document.getElementById("sample-model");
  const label = document.getElementById("sample-label");
  const seed = document.getElementById("sample-seed");
  const n = document.getElementById("sample-n");
  const temperature = document.getElementById("sample-temperature");
  let conditional = []; // the servable models that take labels

  async function fillModels() {
    const matching = await fillModelSelect(select, {
      filter: (m) => m.tasks.includes("vae") || takesLabels(m), preferred: "mnist-vae",
    });
    conditional = matching.filter(takesLabels).map((m) => m.name);
  }

  // The labels of a request: none, one digit for all, or 0..9 in turn.
  function labelsFor(count) {
    if (!label.value) return null;
    return label.value === "each" ? Array.from({ length: count }, (_, i) => i % 10) : Number(label.value);
  }

  async function run() {
    await runner.run(async (request) => {
      await fillModels();
      const seedText = seed.value.trim();
      if (seedText && !/^\d+$/.test(seedText)) throw new Error("the seed is a whole number from 0 up, or empty for a random one");
      const count = Number(n.value);
      // JSON by hand for the seed: it may be larger than a JavaScript number holds exactly (up to 2^63 - 1).
      const fields = [`"model":${JSON.stringify(select.value)}`, `"n":${Number.isInteger(count) ? count : JSON.stringify(n.value)}`,
        `"temperature":${Number(temperature.value)}`, '"response_format":"json"'];
      const labels = labelsFor(count);
      if (labels !== null) fields.push(`"label":${JSON.stringify(labels)}`);
      if (seedText) fields.push(`"seed":${seedText}`);
      const { data, response } = await request("POST", "/v1/vae/sample", { json: `{${fields.join(",")}}` });
      const used = response.headers.get("X-Seed") || "";
      byTestId(section, "sample-seed-used").textContent = used;
      if (!seedText) seed.value = used; // so that the same button gives the same picture again
      byTestId(section, "samples").replaceChildren(...data.data.map((item, i) => {
        const name = item.label === undefined ? `sample ${i + 1}` : `sample ${i + 1}, a ${item.label}`;
        const image = element("img", { src: pngDataUrl(item), class: "pixel", alt: name, title: `${name}: click to restyle` });
        image.addEventListener("click", () => restyle(item.b64_png, item.label));
        return image;
      }));
    });
  }

  /** One digit (base64 PNG) drawn as 0..9 by the conditional model; `source` is its digit when known. */
  async function restyle(b64Png, source) {
    await restyleRunner.run(async (request) => {
      await fillModels();
      if (!conditional.length) throw new Error("no conditional model (one whose card lists conditional-vae) is served");
      const model = conditional.includes(select.value) ? select.value : conditional[0];
      const body = { model, images: [b64Png], response_format: "json" };
      if (source !== undefined) body.source_label = source;
      const { data } = await request("POST", "/v1/vae/restyle", { json: body });
      byTestId(section, "restyle-source").textContent = `${data.source_label}${source === undefined ? " (the model's guess)" : ""}`;
      byTestId(section, "restyled").replaceChildren(...data.data.map((item) =>
        element("img", { src: pngDataUrl(item), class: "pixel", alt: `drawn as ${item.label}`, title: `as ${item.label}` })));
    });
  }

  // A digit asks for a conditional model; an unconditional model takes no digit.
  label.addEventListener("change", async () => {
    await fillModels();
    if (label.value && !conditional.includes(select.value) && conditional.length) select.value = conditional[0];
  });
  select.addEventListener("change", () => {
    if (!conditional.includes(select.value)) label.value = "";
  });
  byTestId(section, "restyle-file").addEventListener("change", async (event) => {
    const file = event.target.files[0];
    if (!file) return;
    const dataUrl = await blobToDataUrl(file);
    await restyle(String(dataUrl).split(",")[1]);
  });
  temperature.addEventListener("input", () => {
    document.getElementById("sample-temperature-value").textContent = Number(temperature.value).toFixed(1);
  });
  byTestId(section, "sample-random-seed").addEventListener("click", () => {
    seed.value = String(crypto.getRandomValues(new Uint32Array(1))[0]);
    run();
  });
  byTestId(section, "run-sample").addEventListener("click", run);
  return { name: "sample", activate: run, onInput: () => {} };
}
