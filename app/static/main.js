// The playground: wires the input panel, the views (one shown at a time, chosen by the URL's #hash),
// the API key dialog and the line that reports the last request.

import { apiKey, models, onKeyNeeded, onRequest, setApiKey } from "./api.js";
import { onInputChange, setUpInput, useExample } from "./input.js";
import { latentView, sampleView } from "./latent.js";
import { modelsView } from "./models.js";
import { denoiseView, embeddingsView, photoView, reconstructView, superResolveView } from "./views.js";

const views = Object.fromEntries([
  denoiseView(), photoView(), superResolveView(), reconstructView(), embeddingsView(), latentView(), sampleView(), modelsView(),
].map((view) => [view.name, view]));
let current = null;

function showView() {
  const name = location.hash.slice(1) in views ? location.hash.slice(1) : "denoise";
  document.querySelectorAll("section.view").forEach((section) => { section.hidden = section.dataset.view !== name; });
  document.querySelectorAll("#tab-list a").forEach((link) => {
    if (link.getAttribute("href") === `#${name}`) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  });
  current = views[name];
  current.activate();
}

function setUpKeyDialog() {
  const dialog = document.getElementById("key-dialog");
  const field = document.getElementById("key-input");
  const button = document.getElementById("key-button");
  const label = () => { button.textContent = apiKey() ? "API key: set (this tab)" : "API key"; };
  const open = (reason) => {
    document.getElementById("key-reason").textContent = `${reason ? `${reason}. ` : ""}The key is kept for this tab only and sent as Authorization: Bearer to /v1.`;
    field.value = apiKey();
    if (!dialog.open) dialog.showModal();
  };
  button.addEventListener("click", () => open(""));
  onKeyNeeded((message) => open(`The API says: ${message}`));
  dialog.addEventListener("close", () => {
    if (dialog.returnValue === "save") setApiKey(field.value.trim());
    if (dialog.returnValue === "clear") setApiKey("");
    label();
    if (dialog.returnValue === "save") models({ refresh: true }).then(() => current.activate(), () => {});
  });
  label();
}

onRequest(({ method, path, status, ms }) => {
  document.getElementById("last-request").textContent = `Last request: ${method} ${path.split("?")[0]} → ${status} in ${Math.round(ms)} ms`;
});

setUpKeyDialog();
setUpInput();
onInputChange(() => current && current.onInput());
window.addEventListener("hashchange", showView);
useExample(7).then(showView); // start with a digit on the page, so that every view has something to show
