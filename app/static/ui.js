// What every view shares: running its requests with a busy state, a Cancel button, the latency of each
// request, and the API's error message; filling model pickers from /v1/models.

import { ApiError, call, models } from "./api.js";

/** The status line of a view: busy (with elapsed time and Cancel), latencies, error. */
export class Runner {
  constructor(view) {
    this.view = view;
    const status = document.querySelector(`[data-status="${view}"]`);
    status.innerHTML = "";
    this.busy = element("span", { class: "busy", "data-testid": `busy-${view}`, role: "status" });
    this.busy.hidden = true;
    this.elapsed = element("span", { class: "elapsed" });
    const cancel = element("button", { type: "button", "data-testid": `cancel-${view}` }, "Cancel");
    cancel.addEventListener("click", () => this.cancel());
    this.busy.append("Working… ", this.elapsed, " ", cancel);
    this.latency = element("span", { class: "latency", "data-testid": `latency-${view}` });
    this.error = element("p", { class: "error", role: "alert", "data-testid": `error-${view}` });
    this.error.hidden = true;
    status.append(this.busy, this.latency, this.error);
    this.section = status.closest("section");
    this.controller = null;
  }

  cancel() {
    if (this.controller) this.controller.abort();
  }

  /**
   * Run `work(request)`, where request(method, path, options) is api.call with this run's abort signal and
   * its latency recorded. A new run cancels the one before. Errors are shown, never thrown.
   */
  async run(work) {
    this.cancel();
    const controller = new AbortController();
    this.controller = controller;
    const timings = [];
    const started = performance.now();
    const timer = setInterval(() => { this.elapsed.textContent = `${((performance.now() - started) / 1000).toFixed(1)} s`; }, 100);
    this.elapsed.textContent = "0.0 s";
    this.busy.hidden = false;
    this.section.setAttribute("aria-busy", "true");
    this.error.hidden = true;
    this.error.textContent = "";
    const request = async (method, path, options = {}) => {
      const result = await call(method, path, { ...options, signal: controller.signal });
      timings.push(`${method} ${path.split("?")[0]} ${Math.round(result.ms)} ms`);
      return result;
    };
    try {
      await work(request);
      if (this.controller !== controller) return; // overtaken by a newer run: its status wins
      this.latency.textContent = timings.length ? `Latency: ${timings.join(" · ")}` : "";
    } catch (error) {
      if (this.controller !== controller) return;
      if (error.name === "AbortError") {
        this.latency.textContent = "Cancelled.";
      } else {
        this.showError(error);
      }
    } finally {
      clearInterval(timer);
      if (this.controller === controller) {
        this.busy.hidden = true;
        this.section.removeAttribute("aria-busy");
        this.controller = null;
      }
    }
  }

  showError(error) {
    this.latency.textContent = "";
    this.error.hidden = false;
    this.error.textContent = error instanceof ApiError
      ? `The API answered ${error.status} (${error.type}): ${error.message}`
      : `Error: ${error.message}`;
  }
}

/** document.createElement with attributes and children. */
export function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  node.append(...children);
  return node;
}

/**
 * Fill a <select> with the servable models that match: data-task (a card task), data-domain, data-latent.
 * Keeps the current choice when it is still there; `preferred` picks the first one otherwise.
 */
export async function fillModelSelect(select, { filter = () => true, preferred } = {}) {
  const all = await models();
  const { task, domain, latent } = select.dataset;
  const matching = all.filter((m) => m.state !== "unavailable"
    && (!task || m.tasks.includes(task))
    && (!domain || (m.input && m.input.domain === domain))
    && (!latent || m.latent_size === Number(latent))
    && filter(m));
  const current = select.value;
  select.replaceChildren(...matching.map((m) => element("option", { value: m.name }, m.name)));
  if (matching.some((m) => m.name === current)) select.value = current;
  else if (preferred && matching.some((m) => m.name === preferred)) select.value = preferred;
  return matching;
}

export async function blobToDataUrl(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

export { call };
