// The input digit every digit view works on: drawn on the canvas, uploaded (or dropped), or an example.
// The page brings it into the MNIST frame itself (28x28, white on black), so what is shown is what is sent.
// A file the browser cannot read is kept as it is and sent as it is: the API then says what is wrong.

import { decodeFile, fromDrawable, mnistFrame, toDataUrl, toPngBlob } from "./pixels.js";
import { element } from "./ui.js";

const UPLOAD_WORKING_SIDE = 280; // a large upload is scaled down before framing: 28x28 comes out anyway

const listeners = [];
export const input = {
  digit: null, // {width: 28, height: 28, channels: 1, data}
  rawFile: null, // set instead of digit when the browser could not read the file
  source: "",
};

export function onInputChange(fn) { listeners.push(fn); }

/** The input as image files for the API: the 28x28 PNG, or the unreadable file as it came. */
export async function inputBlobs() {
  if (input.rawFile) return [input.rawFile];
  if (!input.digit) throw new Error("no input yet: pick an example, draw or upload a digit");
  return [await toPngBlob(input.digit, "digit.png")];
}

export const exampleUrl = (digit) => new URL(`./examples/digit-${digit}.png`, import.meta.url).href;

function setInput(digit, source, rawFile = null) {
  input.digit = digit;
  input.rawFile = rawFile;
  input.source = source;
  const preview = document.getElementById("input-preview");
  const caption = document.getElementById("input-caption");
  if (digit) {
    preview.src = toDataUrl(digit);
    preview.hidden = false;
    caption.textContent = source;
  } else {
    preview.removeAttribute("src");
    preview.hidden = true;
    caption.textContent = `${source}: the browser cannot read it as an image; it is sent as it is, and the API says why it refuses it.`;
  }
  listeners.forEach((fn) => fn(input));
}

async function useFile(file) {
  const bitmap = await decodeFile(file);
  if (!bitmap) { setInput(null, `Upload ${file.name}`, file); return; }
  let digit;
  if (bitmap.width === 28 && bitmap.height === 28) {
    digit = fromDrawable(bitmap, 1); // already a digit of MNIST's size: used as it is, like the API does
  } else {
    const scale = Math.min(1, UPLOAD_WORKING_SIDE / Math.max(bitmap.width, bitmap.height));
    const gray = fromDrawable(bitmap, 1, Math.max(1, Math.round(bitmap.width * scale)), Math.max(1, Math.round(bitmap.height * scale)));
    digit = mnistFrame(gray);
  }
  const framed = bitmap.width === 28 && bitmap.height === 28 ? "" : `, ${bitmap.width}×${bitmap.height} brought into the MNIST frame`;
  setInput(digit, `Upload ${file.name}${framed}`);
}

export async function useExample(digit) {
  const img = new Image();
  img.src = exampleUrl(digit);
  await img.decode();
  setInput(fromDrawable(img, 1), `Example: an MNIST test digit ${digit}`);
}

function setUpCanvas() {
  const canvas = document.getElementById("draw-canvas");
  const context = canvas.getContext("2d", { willReadFrequently: true });
  const clear = () => { context.fillStyle = "#000"; context.fillRect(0, 0, canvas.width, canvas.height); };
  clear();
  let drawing = false;
  let last = null;
  const point = (event) => {
    const box = canvas.getBoundingClientRect(); // the canvas may be shown smaller than 280x280 (phones)
    return [(event.clientX - box.left) * (canvas.width / box.width), (event.clientY - box.top) * (canvas.height / box.height)];
  };
  canvas.addEventListener("pointerdown", (event) => {
    drawing = true;
    last = point(event);
    canvas.setPointerCapture(event.pointerId);
    context.fillStyle = "#fff";
    context.beginPath();
    context.arc(last[0], last[1], 10, 0, 2 * Math.PI);
    context.fill();
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!drawing) return;
    const next = point(event);
    context.strokeStyle = "#fff";
    context.lineWidth = 20;
    context.lineCap = "round";
    context.lineJoin = "round";
    context.beginPath();
    context.moveTo(...last);
    context.lineTo(...next);
    context.stroke();
    last = next;
  });
  const finish = () => {
    if (!drawing) return;
    drawing = false;
    setInput(mnistFrame(fromDrawable(canvas, 1)), "Drawn digit, brought into the MNIST frame");
  };
  canvas.addEventListener("pointerup", finish);
  canvas.addEventListener("pointercancel", finish);
  document.getElementById("draw-clear").addEventListener("click", clear);
}

function setUpUpload() {
  const upload = document.getElementById("upload-input");
  upload.addEventListener("change", () => { if (upload.files[0]) useFile(upload.files[0]); });
  const zone = document.getElementById("drop-zone");
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    const file = event.dataTransfer.files[0];
    if (file) useFile(file);
  });
}

function setUpExamples() {
  const list = document.getElementById("examples");
  for (let digit = 0; digit < 10; digit++) {
    const button = element("button", { type: "button", class: "example", "data-testid": `example-${digit}`, "aria-label": `example digit ${digit}` },
      element("img", { src: exampleUrl(digit), alt: "", width: "28", height: "28", class: "pixel" }));
    button.addEventListener("click", () => useExample(digit));
    list.append(button);
  }
}

export function setUpInput() {
  setUpCanvas();
  setUpUpload();
  setUpExamples();
}
