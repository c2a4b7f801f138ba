// Images as plain arrays: {width, height, channels (1 or 3), data: Float32Array in [0, 1], row-major,
// channels interleaved}. Everything the page computes itself lives here: noise, PSNR, area shrinking, bicubic
// enlarging, the MNIST frame for drawn or uploaded digits, and the error heat map.

export function makeImage(width, height, channels) {
  return { width, height, channels, data: new Float32Array(width * height * channels) };
}

/** Pixels of a drawable (img, canvas, ImageBitmap) at its own size, or scaled to width x height. */
export function fromDrawable(source, channels, width = source.width, height = source.height) {
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.imageSmoothingQuality = "high";
  context.drawImage(source, 0, 0, width, height);
  const rgba = context.getImageData(0, 0, width, height).data;
  const image = makeImage(width, height, channels);
  for (let i = 0, p = 0; p < width * height; p++, i += 4) {
    const alpha = rgba[i + 3] / 255; // transparent areas count as black, like a digit's background
    if (channels === 1) {
      image.data[p] = ((0.299 * rgba[i] + 0.587 * rgba[i + 1] + 0.114 * rgba[i + 2]) / 255) * alpha;
    } else {
      for (let c = 0; c < 3; c++) image.data[p * 3 + c] = (rgba[i + c] / 255) * alpha;
    }
  }
  return image;
}

export function toCanvas(image) {
  const canvas = document.createElement("canvas");
  canvas.width = image.width;
  canvas.height = image.height;
  const context = canvas.getContext("2d");
  const out = context.createImageData(image.width, image.height);
  for (let p = 0, i = 0; p < image.width * image.height; p++, i += 4) {
    for (let c = 0; c < 3; c++) {
      const value = image.channels === 1 ? image.data[p] : image.data[p * 3 + c];
      out.data[i + c] = Math.round(Math.min(1, Math.max(0, value)) * 255);
    }
    out.data[i + 3] = 255;
  }
  context.putImageData(out, 0, 0);
  return canvas;
}

export function toDataUrl(image) {
  return toCanvas(image).toDataURL("image/png");
}

export function toPngBlob(image, name = "image.png") {
  return new Promise((resolve, reject) => {
    toCanvas(image).toBlob((blob) => {
      if (!blob) { reject(new Error("the browser could not encode a PNG")); return; }
      resolve(new File([blob], name, { type: "image/png" }));
    }, "image/png");
  });
}

/** Decode an image file the way the browser can; null when it cannot (the API will then say why). */
export async function decodeFile(blob) {
  try {
    return await createImageBitmap(blob);
  } catch {
    return null;
  }
}

/** Pixels of a PNG data URL or object URL. */
export function loadUrl(url, channels) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(fromDrawable(img, channels));
    img.onerror = () => reject(new Error("the browser could not read an image the API sent"));
    img.src = url;
  });
}

// -- noise and quality -----------------------------------------------------------------------------

/** A small seeded generator (mulberry32), so "the same noise" is the same on every run. */
function uniform(seed) {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** clip(x + sigma * N(0, 1), 0, 1), rounded to 8 bits (what a PNG upload carries anyway). */
export function addGaussianNoise(image, sigma, seed) {
  const random = uniform(seed);
  const noisy = makeImage(image.width, image.height, image.channels);
  for (let i = 0; i < image.data.length; i++) {
    const gaussian = Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random()); // Box-Muller
    noisy.data[i] = Math.round(Math.min(1, Math.max(0, image.data[i] + sigma * gaussian)) * 255) / 255;
  }
  return noisy;
}

/** Peak signal-to-noise ratio in dB (peak 1) of `image` against `reference` (same size). */
export function psnr(image, reference) {
  const channels = Math.min(image.channels, reference.channels);
  let total = 0;
  let count = 0;
  for (let p = 0; p < reference.width * reference.height; p++) {
    for (let c = 0; c < channels; c++) {
      const a = image.data[p * image.channels + c];
      const b = reference.data[p * reference.channels + c];
      total += (a - b) ** 2;
      count++;
    }
  }
  const mse = total / count;
  return mse === 0 ? Infinity : 10 * Math.log10(1 / mse);
}

export function formatDb(value) {
  return Number.isFinite(value) ? `${value.toFixed(2)} dB` : "∞ dB (identical)";
}

// -- resizing --------------------------------------------------------------------------------------

/** Crop to a multiple of `factor`, then average each factor x factor block (how the SR models were trained). */
export function shrink(image, factor) {
  const width = Math.floor(image.width / factor);
  const height = Math.floor(image.height / factor);
  const small = makeImage(width, height, image.channels);
  const k = image.channels;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      for (let c = 0; c < k; c++) {
        let sum = 0;
        for (let dy = 0; dy < factor; dy++) {
          for (let dx = 0; dx < factor; dx++) sum += image.data[((y * factor + dy) * image.width + x * factor + dx) * k + c];
        }
        small.data[(y * width + x) * k + c] = sum / (factor * factor);
      }
    }
  }
  return small;
}

export function crop(image, width, height) {
  const out = makeImage(width, height, image.channels);
  const k = image.channels;
  for (let y = 0; y < height; y++) {
    out.data.set(image.data.subarray(y * image.width * k, (y * image.width + width) * k), y * width * k);
  }
  return out;
}

function cubic(t) { // Keys' kernel with a = -0.5, as Pillow's and most libraries' bicubic
  const a = -0.5;
  const x = Math.abs(t);
  if (x <= 1) return (a + 2) * x ** 3 - (a + 3) * x ** 2 + 1;
  if (x < 2) return a * x ** 3 - 5 * a * x ** 2 + 8 * a * x - 4 * a;
  return 0;
}

/** Enlarge by an integer factor with bicubic interpolation (pixel centres aligned, edges repeated). */
export function bicubic(image, factor) {
  const width = image.width * factor;
  const height = image.height * factor;
  const out = makeImage(width, height, image.channels);
  const k = image.channels;
  const at = (x, y, c) => {
    const cx = Math.min(image.width - 1, Math.max(0, x));
    const cy = Math.min(image.height - 1, Math.max(0, y));
    return image.data[(cy * image.width + cx) * k + c];
  };
  for (let y = 0; y < height; y++) {
    const sy = (y + 0.5) / factor - 0.5;
    const y0 = Math.floor(sy);
    for (let x = 0; x < width; x++) {
      const sx = (x + 0.5) / factor - 0.5;
      const x0 = Math.floor(sx);
      for (let c = 0; c < k; c++) {
        let value = 0;
        for (let j = -1; j <= 2; j++) {
          const wy = cubic(sy - (y0 + j));
          for (let i = -1; i <= 2; i++) value += wy * cubic(sx - (x0 + i)) * at(x0 + i, y0 + j, c);
        }
        out.data[(y * width + x) * k + c] = Math.min(1, Math.max(0, value));
      }
    }
  }
  return out;
}

/** Area-average (shrinking) or bilinear (enlarging) resize of a 1-channel image to width x height. */
function resizeGray(image, width, height) {
  const out = makeImage(width, height, 1);
  const sx = image.width / width;
  const sy = image.height / height;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      if (sx >= 1 && sy >= 1) {
        let sum = 0;
        let weight = 0;
        for (let yy = Math.floor(y * sy); yy < Math.min(image.height, Math.ceil((y + 1) * sy)); yy++) {
          for (let xx = Math.floor(x * sx); xx < Math.min(image.width, Math.ceil((x + 1) * sx)); xx++) {
            sum += image.data[yy * image.width + xx];
            weight++;
          }
        }
        out.data[y * width + x] = weight ? sum / weight : 0;
      } else {
        const fx = Math.min(image.width - 1, Math.max(0, (x + 0.5) * sx - 0.5));
        const fy = Math.min(image.height - 1, Math.max(0, (y + 0.5) * sy - 0.5));
        const x0 = Math.floor(fx); const y0 = Math.floor(fy);
        const x1 = Math.min(image.width - 1, x0 + 1); const y1 = Math.min(image.height - 1, y0 + 1);
        const ax = fx - x0; const ay = fy - y0;
        const v = (xx, yy) => image.data[yy * image.width + xx];
        out.data[y * width + x] = (1 - ay) * ((1 - ax) * v(x0, y0) + ax * v(x1, y0)) + ay * ((1 - ax) * v(x0, y1) + ax * v(x1, y1));
      }
    }
  }
  return out;
}

// -- the MNIST frame -------------------------------------------------------------------------------

/**
 * Any picture of a digit -> 28x28, white on black, the digit fitted in 20x20 and centred by its mass:
 * the steps of the service's own frame (app/imaging/mnist_frame.py), so what is shown is what a model sees.
 */
export function mnistFrame(gray) {
  let image = gray;
  const { width, height } = image;
  const ring = Math.max(1, Math.round(Math.min(width, height) * 0.05));
  const border = [];
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      if (y < ring || y >= height - ring || x < ring || x >= width - ring) border.push(image.data[y * width + x]);
    }
  }
  if (median(border) > 0.5) { // dark on light: invert
    const inverted = makeImage(width, height, 1);
    inverted.data.set(image.data.map((v) => 1 - v));
    image = inverted;
  }
  const background = median(Array.from(image.data));
  const peak = maxOf(image.data);
  const contrast = peak - background;
  const frame = makeImage(28, 28, 1);
  if (contrast < 0.05) return frame;
  const normalised = image.data.map((v) => Math.min(1, Math.max(0, (v - background) / contrast)));
  const cut = 0.5 * otsu(normalised);
  const ink = makeImage(width, height, 1);
  ink.data.set(normalised.map((v) => Math.min(1, Math.max(0, (v - cut) / (1 - cut)))));
  if (maxOf(ink.data) <= 0) return frame;
  const rows = new Float64Array(height);
  const columns = new Float64Array(width);
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) { rows[y] += ink.data[y * width + x]; columns[x] += ink.data[y * width + x]; }
  const [top, bottom] = massSpan(rows);
  const [left, right] = massSpan(columns);
  const cropped = makeImage(right - left + 1, bottom - top + 1, 1);
  for (let y = top; y <= bottom; y++) for (let x = left; x <= right; x++) cropped.data[(y - top) * cropped.width + x - left] = ink.data[y * width + x];
  const scale = 20 / Math.max(cropped.width, cropped.height);
  const digit = resizeGray(cropped, Math.max(1, Math.round(cropped.width * scale)), Math.max(1, Math.round(cropped.height * scale)));
  const digitPeak = maxOf(digit.data);
  if (digitPeak > 0) digit.data.set(digit.data.map((v) => v / digitPeak));
  let mass = 0; let cy = 0; let cx = 0;
  for (let y = 0; y < digit.height; y++) for (let x = 0; x < digit.width; x++) { const v = digit.data[y * digit.width + x]; mass += v; cy += y * v; cx += x * v; }
  const offsetY = Math.min(28 - digit.height, Math.max(0, Math.round(14 - cy / mass)));
  const offsetX = Math.min(28 - digit.width, Math.max(0, Math.round(14 - cx / mass)));
  for (let y = 0; y < digit.height; y++) for (let x = 0; x < digit.width; x++) frame.data[(y + offsetY) * 28 + x + offsetX] = digit.data[y * digit.width + x];
  return frame;
}

function maxOf(values) { // not Math.max(...values): a large image has more values than a call takes arguments
  let max = -Infinity;
  for (const value of values) if (value > max) max = value;
  return max;
}

function median(values) {
  const sorted = Float32Array.from(values).sort();
  return sorted.length ? sorted[Math.floor(sorted.length / 2)] : 0;
}

function otsu(values, bins = 256) {
  const histogram = new Float64Array(bins);
  values.forEach((v) => { histogram[Math.min(bins - 1, Math.floor(v * bins))] += 1; });
  const total = values.length;
  let below = 0; let massBelow = 0; let totalMass = 0;
  for (let b = 0; b < bins; b++) totalMass += (histogram[b] / total) * ((b + 0.5) / bins);
  let best = 0; let threshold = 0;
  for (let b = 0; b < bins; b++) {
    below += histogram[b] / total;
    massBelow += (histogram[b] / total) * ((b + 0.5) / bins);
    const between = below > 0 && below < 1 ? (totalMass * below - massBelow) ** 2 / (below * (1 - below)) : 0;
    if (between > best) { best = between; threshold = (b + 1) / bins; }
  }
  return threshold;
}

function massSpan(profile) {
  const total = profile.reduce((a, b) => a + b, 0);
  let cumulative = 0; let first = -1; let last = profile.length - 1;
  for (let i = 0; i < profile.length; i++) {
    cumulative += profile[i] / total;
    if (first < 0 && cumulative > 0.002) first = i;
    if (cumulative >= 0.998) { last = i; break; }
  }
  first = Math.max(0, first);
  return [first, Math.max(first, last)];
}

// -- heat map --------------------------------------------------------------------------------------

const HEAT_STOPS = [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]]; // inferno-like

export function heatColour(t) {
  const x = Math.min(1, Math.max(0, t)) * (HEAT_STOPS.length - 1);
  const i = Math.min(HEAT_STOPS.length - 2, Math.floor(x));
  const f = x - i;
  return HEAT_STOPS[i].map((v, c) => (v + f * (HEAT_STOPS[i + 1][c] - v)) / 255);
}

/** |a - b| per pixel as an RGB heat map scaled to its largest value; -> {image, max}. */
export function errorHeatMap(a, b) {
  const errors = a.data.map((v, i) => Math.abs(v - b.data[i]));
  const max = Math.max(maxOf(errors), 1e-6);
  const out = makeImage(a.width, a.height, 3);
  errors.forEach((e, p) => out.data.set(heatColour(e / max), p * 3));
  return { image: out, max };
}
