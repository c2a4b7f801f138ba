// Calls to the service's API under /v1, from the same origin: the API key (when the service asks for one),
// how long each request took, and the API's own error message when it refuses one.

const KEY_STORAGE = "ae-playground-api-key"; // sessionStorage: this tab only, gone when it closes

export class ApiError extends Error {
  constructor(status, type, message, param) {
    super(message);
    this.status = status;
    this.type = type;
    this.param = param;
  }
}

export function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

export function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  else sessionStorage.removeItem(KEY_STORAGE);
}

const requestListeners = [];
const keyListeners = [];
/** fn({method, path, status, ms}) after every request that got an answer. */
export function onRequest(fn) { requestListeners.push(fn); }
/** fn(message) when the API answers 401: the page then asks for a key. */
export function onKeyNeeded(fn) { keyListeners.push(fn); }

/**
 * One request. `json` sends a JSON body; `images` (a list of Blobs) sends multipart with one `image` part each.
 * Resolves to {data, response, ms}: data is the parsed JSON, or a Blob for an image answer.
 * Rejects with ApiError (the API's message) on a non-2xx answer, or with the fetch's own error (AbortError...).
 */
export async function call(method, path, { json, images, signal } = {}) {
  const headers = {};
  const key = apiKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = typeof json === "string" ? json : JSON.stringify(json); // a string: JSON already written
  } else if (images) {
    body = new FormData();
    images.forEach((blob, index) => body.append("image", blob, blob.name || `image-${index}.png`));
  }
  const started = performance.now();
  const response = await fetch(path, { method, headers, body, signal });
  const type = response.headers.get("content-type") || "";
  const data = type.includes("application/json") ? await response.json() : await response.blob();
  const ms = performance.now() - started;
  requestListeners.forEach((fn) => fn({ method, path, status: response.status, ms }));
  if (!response.ok) {
    const error = data && data.error ? data.error : { type: "http_error", message: `HTTP ${response.status}` };
    if (response.status === 401) keyListeners.forEach((fn) => fn(error.message));
    throw new ApiError(response.status, error.type, error.message, error.param);
  }
  return { data, response, ms };
}

/** "data:image/png;base64,..." of an ImageData entry of a JSON image answer. */
export function pngDataUrl(item) {
  return `data:image/png;base64,${item.b64_png}`;
}

// The model list, fetched once and shared by every view (refreshed by the Models view).
let modelsPromise = null;
export function models({ refresh = false } = {}) {
  if (refresh || !modelsPromise) {
    modelsPromise = call("GET", "/v1/models").then((result) => result.data.data);
    modelsPromise.catch(() => { modelsPromise = null; }); // a failure is not kept: the next view asks again
  }
  return modelsPromise;
}
