// The Models view: each model's card from /v1/models (tasks, input, metrics next to the baselines, the data
// set and its licence, where and in what precision it runs).

import { Runner, element } from "./ui.js";

/** Any JSON value as nested definition lists (the cards' metrics differ from task to task). */
function describe(value) {
  if (value === null || typeof value !== "object") return document.createTextNode(String(value));
  if (Array.isArray(value) && value.every((v) => v === null || typeof v !== "object")) return document.createTextNode(value.join(", "));
  const list = element("dl");
  for (const [key, item] of Object.entries(value)) list.append(element("dt", {}, key), element("dd", {}, describe(item)));
  return list;
}

/** The verdicts of the card: for each task with a target, whether the model met it against its baseline. */
function targets(metrics) {
  return Object.entries(metrics).filter(([, m]) => m && m.target).map(([task, m]) => element("li",
    { class: m.target.met ? "met" : "not-met" },
    `${task}: ${m.target.met ? "✔ met" : "✘ not met"} — ${m.target.description}`));
}

function card(model) {
  const input = model.input
    ? `${model.input.channels} channel(s), ${model.input.height ? `${model.input.height}×${model.input.width}` : "any size"}, ${model.input.domain}`
    : "–";
  const training = model.training || {};
  const facts = {
    state: model.reason ? `${model.state}: ${model.reason}` : model.state,
    tasks: model.tasks.join(", "),
    input,
    "latent size": model.latent_size ?? "–",
    scale: model.scale ? `×${model.scale}` : "–",
    // The execution plan (precision, memory format) is chosen when the model loads: none before that.
    "runs on": model.execution
      ? `${model.device}, ${model.execution.precision}, ${model.execution.memory_format.replace("_", "-")}`
      : `${model.device} (plan chosen when it loads)`,
    "data set": training.dataset ?? "–",
    licence: training.licence ?? "–",
    trained: [training.epochs && `${training.epochs} epochs`, training.device, training.duration_s && `${Math.round(training.duration_s / 60)} min`].filter(Boolean).join(", ") || "–",
    sha256: model.sha256 ? `${model.sha256.slice(0, 16)}…` : "–",
  };
  const list = element("dl", { class: "facts" });
  Object.entries(facts).forEach(([k, v]) => list.append(element("dt", {}, k), element("dd", {}, String(v))));
  const verdicts = targets(model.metrics || {});
  return element("article", { class: "card", "data-testid": `model-card-${model.name}` },
    element("h3", {}, model.name),
    element("p", {}, model.description || ""),
    list,
    ...(verdicts.length ? [element("ul", { class: "targets" }, ...verdicts)] : []),
    element("details", {}, element("summary", {}, "Metrics against the baselines"), describe(model.metrics || {})),
    element("details", {}, element("summary", {}, "Training"), describe(training)));
}

export function modelsView() {
  const section = document.getElementById("view-models");
  const runner = new Runner("models");
  const cards = section.querySelector('[data-testid="model-cards"]');
  async function run() {
    await runner.run(async (request) => {
      const { data } = await request("GET", "/v1/models"); // fresh: states change as models load
      cards.replaceChildren(...data.data.map(card));
    });
  }
  section.querySelector('[data-testid="run-models"]').addEventListener("click", run);
  return { name: "models", activate: run, onInput: () => {} };
}
