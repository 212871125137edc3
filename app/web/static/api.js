/*
 * Calls to wenda's HTTP API from the page. Every error the API gives is the envelope
 * {"error": {"message", "type", "param", "code"}}; ApiError carries its message for the page to show.
 */

import { t } from "./i18n.js";

export class ApiError extends Error {
  constructor(message, { status = 0, param = null, code = null } = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.param = param;
    this.code = code;
  }
}

function errorFrom(status, body) {
  const error = body && typeof body === "object" ? body.error : null;
  const message = error && typeof error.message === "string" && error.message ? error.message : null;
  return new ApiError(message ?? t("error.http", { status }), {
    status,
    param: error?.param ?? null,
    code: error?.code ?? null,
  });
}

async function send(path, init) {
  try {
    return await fetch(path, init);
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(t("error.network"));
  }
}

async function bodyOf(response) {
  const text = await response.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

export async function requestJson(path, { method = "GET", json, signal } = {}) {
  const init = { method, headers: { Accept: "application/json" }, signal };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  }
  const response = await send(path, init);
  const body = await bodyOf(response);
  if (!response.ok) throw errorFrom(response.status, body);
  return body;
}

/* A POST whose success is a stream: the response is returned unread; an error status is thrown as ApiError. */
export async function postForStream(path, json, signal) {
  const response = await send(path, {
    method: "POST",
    headers: { Accept: "text/event-stream", "Content-Type": "application/json" },
    body: JSON.stringify(json),
    signal,
  });
  if (!response.ok) throw errorFrom(response.status, await bodyOf(response));
  return response;
}

export function errorOfEvent(payload) {
  return errorFrom(500, payload);
}

/*
 * Upload one file as multipart form data. XMLHttpRequest rather than fetch: only it reports how many bytes
 * have been sent, which is what the progress bar shows until the server has the whole file.
 */
export function uploadFile(collection, file, onSent) {
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open("POST", `/v1/collections/${encodeURIComponent(collection)}/documents`);
    request.setRequestHeader("Accept", "application/json");
    request.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable && event.total > 0) onSent(event.loaded / event.total);
    });
    request.addEventListener("load", () => {
      let body = null;
      try {
        body = JSON.parse(request.responseText);
      } catch {
        body = null;
      }
      if (request.status >= 200 && request.status < 300 && body) resolve(body);
      else reject(errorFrom(request.status, body));
    });
    request.addEventListener("error", () => reject(new ApiError(t("error.network"))));
    request.addEventListener("abort", () => reject(new ApiError(t("error.network"))));
    const form = new FormData();
    form.append("file", file, file.name);
    request.send(form);
  });
}

export const api = {
  collections: () => requestJson("/v1/collections"),
  documents: (collection) =>
    requestJson(`/v1/collections/${encodeURIComponent(collection)}/documents?limit=1000`),
  deleteDocument: (documentId) => requestJson(`/v1/documents/${documentId}`, { method: "DELETE" }),
  job: (jobId) => requestJson(`/v1/jobs/${jobId}`),
  models: () => requestJson("/v1/models"),
  giveFeedback: (payload) => requestJson("/v1/feedback", { method: "POST", json: payload }),
  feedback: (feedbackId) => requestJson(`/v1/feedback/${feedbackId}`),
  withdrawFeedback: (feedbackId) => requestJson(`/v1/feedback/${feedbackId}`, { method: "DELETE" }),
};
