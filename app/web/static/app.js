/*
 * wenda's page: choose a collection, upload documents and follow their jobs, ask with the answer streaming
 * in and then replaced by the checked one, open its citations, rate and correct it. Plain modules, no build.
 */

import { ApiError, api, errorOfEvent, postForStream, uploadFile } from "./api.js";
import { CitationPopover, renderCheckedAnswer } from "./answer.js";
import { applyTranslations, language, loadMessages, onLanguageChange, setLanguage, t } from "./i18n.js";
import { readServerSentEvents } from "./sse.js";

const COLLECTION_KEY = "wenda.collection";
const FIRST_COLLECTION = "docs";
// The server's rule (app/services/documents.py): a word character, then word characters, "." or "-".
const COLLECTION_NAME = /^[\p{L}\p{N}\p{M}_][\p{L}\p{N}\p{M}_.-]{0,199}$/u;
const JOB_POLL_MS = 500;
const DOCUMENTS_POLL_MS = 2000;
const FINISHED_JOB = new Set(["done", "failed"]);
const BUSY_DOCUMENT = new Set(["queued", "processing"]);

const $ = (id) => document.getElementById(id);

const state = {
  collections: [], // as the server lists them
  created: new Set(), // named here; the server stores a collection with its first document
  collection: "",
  documents: [],
  documentsError: "",
  uploads: [],
  ask: null, // the question being answered: {text streamed so far, controller}
  stopped: null, // the text streamed before the reader stopped the answer
  answer: null, // the checked answer (the stream's done event)
  feedback: null, // the reader's rating and correction of the answer: see saveOpinion
};

let popover;
let documentsTimer = 0;

function element(tag, { className, text, attributes } = {}) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, value);
  return node;
}

function announce(message) {
  const region = $("announce");
  region.textContent = "";
  // A fresh text node after a tick, so a repeated message is read again.
  window.setTimeout(() => {
    region.textContent = message;
  }, 50);
}

function showError(id, message) {
  const box = $(id);
  box.textContent = message || "";
  box.hidden = !message;
}

function rememberCollection(name) {
  try {
    window.localStorage.setItem(COLLECTION_KEY, name);
  } catch {
    /* not remembered */
  }
}

function rememberedCollection() {
  try {
    return window.localStorage.getItem(COLLECTION_KEY) || "";
  } catch {
    return "";
  }
}

/* ---- collections ---- */

async function refreshCollections() {
  try {
    const body = await api.collections();
    state.collections = body.collections;
    for (const collection of state.collections) state.created.delete(collection.name);
    showError("collection-error", "");
  } catch (error) {
    showError("collection-error", error.message);
  }
  if (!state.collection) {
    const names = state.collections.map((c) => c.name);
    const remembered = rememberedCollection();
    state.collection = names.includes(remembered) ? remembered : names[0] || FIRST_COLLECTION;
    if (!names.includes(state.collection)) state.created.add(state.collection);
  }
  renderCollections();
}

function renderCollections() {
  const select = $("collection");
  const known = new Map(state.collections.map((c) => [c.name, c]));
  const names = [...known.keys(), ...[...state.created].filter((name) => !known.has(name))];
  select.replaceChildren(
    ...names.map((name) => {
      const info = known.get(name);
      const label = info
        ? t("collection.option", { name, count: info.document_count })
        : t("collection.option_new", { name });
      const option = element("option", { text: label });
      option.value = name;
      option.selected = name === state.collection;
      return option;
    }),
  );
}

function chooseCollection(name) {
  if (name === state.collection) return;
  state.collection = name;
  rememberCollection(name);
  state.documents = [];
  state.answer = null;
  state.stopped = null;
  state.feedback = null;
  showError("ask-error", "");
  popover.close({ restoreFocus: false });
  renderCollections();
  renderAnswer();
  refreshDocuments();
}

function createCollection(event) {
  event.preventDefault();
  const input = $("new-collection-name");
  const name = input.value.trim();
  if (!COLLECTION_NAME.test(name)) {
    showError("collection-error", t("collection.invalid"));
    input.focus();
    return;
  }
  showError("collection-error", "");
  if (!state.collections.some((c) => c.name === name)) state.created.add(name);
  input.value = "";
  chooseCollection(name);
  announce(t("collection.chosen", { name }));
  $("collection").focus();
}

/* ---- documents ---- */

async function refreshDocuments() {
  window.clearTimeout(documentsTimer);
  const collection = state.collection;
  if (!collection) return;
  try {
    const body = await api.documents(collection);
    if (collection !== state.collection) return;
    state.documents = body.documents;
    state.documentsError = "";
  } catch (error) {
    if (collection !== state.collection) return;
    // A collection named here has no documents until its first upload: the server does not know it yet.
    const unknownYet = error instanceof ApiError && error.status === 404 && state.created.has(collection);
    state.documents = [];
    state.documentsError = unknownYet ? "" : error.message;
  }
  renderDocuments();
  if (state.documents.some((d) => BUSY_DOCUMENT.has(d.status))) {
    documentsTimer = window.setTimeout(refreshDocuments, DOCUMENTS_POLL_MS);
  }
}

function documentItem(doc) {
  const item = element("li", { className: "document", attributes: { "data-document-id": String(doc.document_id) } });
  const name = element("span", { className: "document-name", text: doc.filename });
  name.title = doc.filename;
  const status = element("span", {
    className: `badge status-${doc.status}`,
    text: t(`documents.status.${doc.status}`),
  });
  const details = element("span", {
    className: "document-details",
    text: doc.status === "ready" ? t("documents.chunks", { count: doc.chunk_count, type: doc.file_type }) : "",
  });
  const remove = element("button", {
    className: "danger small",
    text: t("documents.delete"),
    attributes: { type: "button", "aria-label": t("documents.delete_named", { name: doc.filename }) },
  });
  remove.addEventListener("click", () => deleteDocument(doc, remove));
  const head = element("div", { className: "document-head" });
  head.append(name, status);
  item.append(head, details);
  if (doc.status === "failed" && doc.error) {
    item.append(element("p", { className: "error small", text: doc.error }));
  }
  item.append(remove);
  return item;
}

function renderDocuments() {
  const list = $("documents");
  // Rebuilt whole, but the focused delete button keeps the focus across a refresh.
  const focused = document.activeElement?.closest?.("#documents li")?.dataset.documentId;
  list.replaceChildren(...state.documents.map(documentItem));
  if (focused) list.querySelector(`li[data-document-id="${CSS.escape(focused)}"] button`)?.focus();
  $("documents-empty").hidden = state.documents.length > 0 || Boolean(state.documentsError);
  showError("documents-error", state.documentsError);
}

async function deleteDocument(doc, button) {
  if (!window.confirm(t("documents.confirm_delete", { name: doc.filename }))) return;
  button.disabled = true;
  try {
    await api.deleteDocument(doc.document_id);
    state.documents = state.documents.filter((d) => d.document_id !== doc.document_id);
    renderDocuments();
    announce(t("documents.deleted", { name: doc.filename }));
    $("documents-title").focus();
    refreshCollections();
  } catch (error) {
    button.disabled = false;
    showError("documents-error", error.message);
  }
}

/* ---- uploads ---- */

function uploadItem(upload) {
  const item = element("li", { className: "upload" });
  const name = element("span", { className: "upload-name", text: upload.file.name });
  name.title = upload.file.name;
  const bar = element("progress", { attributes: { max: "1", value: "0" } });
  const status = element("span", { className: "upload-status" });
  item.append(name, bar, status);
  upload.parts = { item, bar, status };
  return item;
}

function percent(fraction) {
  return Math.round(Math.max(0, Math.min(1, fraction)) * 100);
}

function uploadStatusText(upload) {
  switch (upload.phase) {
    case "sending":
      return t("upload.sending", { percent: percent(upload.sent) });
    case "queued":
      return upload.error ? t("upload.retrying", { error: upload.error }) : t("upload.queued");
    case "running":
      return t("upload.running", { stage: t(`stage.${upload.stage}`), percent: percent(upload.progress) });
    case "done":
      return t("upload.done");
    case "duplicate":
      return t("upload.duplicate", { status: t(`documents.status.${upload.status}`) });
    default:
      return t("upload.failed", { error: upload.error || "" });
  }
}

function updateUpload(upload) {
  const { item, bar, status } = upload.parts;
  const fraction = upload.phase === "sending" ? upload.sent : upload.phase === "running" ? upload.progress : 0;
  const finished = upload.phase === "done" || upload.phase === "duplicate";
  bar.value = finished ? 1 : fraction;
  bar.setAttribute("aria-label", t("upload.progress_label", { name: upload.file.name }));
  item.dataset.phase = upload.phase;
  status.textContent = uploadStatusText(upload);
  status.classList.toggle("error", upload.phase === "failed");
}

function renderUploads() {
  for (const upload of state.uploads) updateUpload(upload);
}

function uploadFiles(files) {
  const collection = state.collection;
  if (!collection) {
    showError("collection-error", t("collection.none"));
    return;
  }
  for (const file of files) {
    const upload = { file, collection, phase: "sending", sent: 0, progress: 0, stage: "parse", error: "" };
    state.uploads.unshift(upload);
    $("uploads").prepend(uploadItem(upload));
    updateUpload(upload);
    sendUpload(upload);
  }
}

async function sendUpload(upload) {
  try {
    const body = await uploadFile(upload.collection, upload.file, (sent) => {
      upload.sent = sent;
      updateUpload(upload);
    });
    if (body.duplicate) {
      upload.phase = "duplicate";
      upload.status = body.status;
      updateUpload(upload);
      announce(`${upload.file.name}: ${uploadStatusText(upload)}`);
      return;
    }
    upload.phase = "queued";
    updateUpload(upload);
    refreshAfterUpload(upload);
    await followJob(upload, body.job_id);
  } catch (error) {
    upload.phase = "failed";
    upload.error = error.message;
    updateUpload(upload);
  }
  announce(`${upload.file.name}: ${uploadStatusText(upload)}`);
  refreshAfterUpload(upload);
}

function refreshAfterUpload(upload) {
  refreshCollections();
  if (upload.collection === state.collection) refreshDocuments();
}

async function followJob(upload, jobId) {
  let failures = 0;
  for (;;) {
    await new Promise((resolve) => window.setTimeout(resolve, JOB_POLL_MS));
    let job;
    try {
      job = await api.job(jobId);
      failures = 0;
    } catch (error) {
      // A restart or a blip: keep following, but not forever.
      failures += 1;
      if (failures >= 10) throw error;
      continue;
    }
    upload.stage = job.stage;
    upload.progress = job.progress;
    upload.error = job.error || "";
    upload.phase = job.status === "running" ? "running" : job.status;
    updateUpload(upload);
    if (FINISHED_JOB.has(job.status)) return;
  }
}

function wireDropZone() {
  const zone = $("dropzone");
  const input = $("files");
  input.addEventListener("change", () => {
    uploadFiles([...input.files]);
    input.value = "";
  });
  const over = (event) => {
    event.preventDefault();
    zone.classList.add("dragging");
  };
  zone.addEventListener("dragenter", over);
  zone.addEventListener("dragover", over);
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    uploadFiles([...(event.dataTransfer?.files || [])]);
  });
  // A file dropped beside the zone would otherwise replace the page with the file.
  for (const type of ["dragover", "drop"]) {
    window.addEventListener(type, (event) => {
      if (!zone.contains(event.target)) event.preventDefault();
    });
  }
}

/* ---- models ---- */

async function refreshModels() {
  const select = $("model");
  try {
    const body = await api.models();
    const options = body.data.map((model) => {
      const option = element("option", {
        text: model.kind === "adapter" ? t("ask.model_adapter", { name: model.id }) : model.id,
      });
      option.value = model.id;
      return option;
    });
    const automatic = element("option", { text: t("ask.model_auto") });
    automatic.value = "";
    const chosen = select.value;
    select.replaceChildren(automatic, ...options);
    select.value = [...select.options].some((o) => o.value === chosen) ? chosen : "";
  } catch {
    // The choice is optional: without the list the server's routing picks the model.
    select.replaceChildren(element("option", { text: t("ask.model_auto") }));
  }
}

/* ---- asking ---- */

function browserTimeZone() {
  try {
    return Intl.DateTimeFormat().resolvedOptions().timeZone || null;
  } catch {
    return null;
  }
}

async function ask(event) {
  event?.preventDefault();
  const question = $("question").value.trim();
  if (!question || state.ask) return;
  if (!state.collection) {
    showError("ask-error", t("collection.none"));
    return;
  }
  showError("ask-error", "");
  popover.close({ restoreFocus: false });
  const controller = new AbortController();
  state.ask = { text: "", controller };
  state.stopped = null;
  state.answer = null;
  state.feedback = null;
  renderAnswer();
  const request = { collection: state.collection, question, stream: true };
  const model = $("model").value;
  if (model) request.model = model;
  const zone = browserTimeZone();
  if (zone) request.tz = zone;
  try {
    let response;
    try {
      response = await postForStream("/v1/ask", request, controller.signal);
    } catch (error) {
      // A browser's zone name the server does not know should not stop the question: its default applies.
      if (!(error instanceof ApiError && error.param === "tz")) throw error;
      delete request.tz;
      response = await postForStream("/v1/ask", request, controller.signal);
    }
    for await (const message of readServerSentEvents(response.body)) {
      const payload = JSON.parse(message.data);
      if (message.event === "delta") {
        state.ask.text += payload.text;
        renderStreamedText();
      } else if (message.event === "done") {
        state.answer = payload;
        break;
      } else if (message.event === "error") {
        throw errorOfEvent(payload);
      }
    }
    if (!state.answer) throw new ApiError(t("error.stream_ended"));
    state.feedback = {
      queryId: state.answer.query_id,
      liveId: null, // the row saved last
      ratingId: null, // this reader's rating-only row, if any
      correctionId: null, // this reader's last correction, if any
      rating: null,
      status: null,
      keptApproved: null, // an earlier correction found approved, so not replaced
    };
  } catch (error) {
    if (error.name === "AbortError") state.stopped = state.ask.text;
    else showError("ask-error", error.message);
  }
  state.ask = null;
  renderAnswer();
  if (state.answer) announce(answerStateText());
}

function stopAsking() {
  state.ask?.controller.abort();
}

function askKeys(event) {
  // Enter sends; Shift+Enter is a new line; Enter that confirms an input method's candidate (Chinese) is not.
  if (event.key !== "Enter" || event.shiftKey || event.isComposing || event.keyCode === 229) return;
  event.preventDefault();
  $("ask-form").requestSubmit();
}

function answerStateText() {
  const answer = state.answer;
  if (!answer) return "";
  if (answer.from_correction !== null && answer.from_correction !== undefined) {
    return t("answer.from_correction", { id: answer.from_correction });
  }
  if (answer.grounded) return t("answer.grounded");
  return t(`refusal.${answer.refusal?.reason || "unsupported"}`);
}

// Refusals decided before generation: the question never reached a model.
const REFUSED_BEFORE_GENERATION = new Set(["no_passages", "no_context_room", "unmentioned_name"]);

function routeText(answer) {
  const notAsked = answer.from_correction !== null && answer.from_correction !== undefined;
  if (notAsked || REFUSED_BEFORE_GENERATION.has(answer.refusal?.reason)) return t("route.not_asked");
  const route = answer.route;
  if (!route) return t("route.answered_by", { model: answer.model });
  const reason =
    route.reason === "fallback"
      ? t("route.fallback", { adapter: route.adapter || "?", cause: t(`route.cause.${route.cause || "unsupported"}`) })
      : route.reason === "auto" && route.score !== null && route.score !== undefined
        ? t("route.auto_score", { score: route.score.toFixed(2) })
        : t(`route.${route.reason}`);
  return `${t("route.answered_by", { model: route.model })} · ${reason}`;
}

function renderStreamedText() {
  const text = $("answer-text");
  text.textContent = state.ask.text;
}

function renderAnswer() {
  const box = $("answer");
  const status = $("answer-state");
  const text = $("answer-text");
  const route = $("answer-route");
  const notes = $("answer-notes");
  notes.replaceChildren();
  route.textContent = "";
  const asking = Boolean(state.ask);
  $("stop-button").hidden = !asking;
  $("ask-button").disabled = asking;
  box.setAttribute("aria-busy", String(asking));
  renderFeedback();
  if (asking || state.stopped !== null) {
    box.hidden = false;
    box.dataset.state = asking ? "streaming" : "stopped";
    box.dataset.queryId = "";
    status.textContent = asking ? t("answer.writing") : t("answer.stopped");
    text.textContent = asking ? state.ask.text : state.stopped;
    return;
  }
  const answer = state.answer;
  if (!answer) {
    box.hidden = true;
    box.dataset.state = "";
    return;
  }
  box.hidden = false;
  box.dataset.state = answer.grounded ? "grounded" : "refused";
  box.dataset.queryId = answer.query_id;
  status.textContent = answerStateText();
  renderCheckedAnswer(text, answer);
  route.textContent = routeText(answer);
  const unsupported = answer.grounded ? answer.sentences.filter((s) => !s.supported && s.text).length : 0;
  if (unsupported) notes.append(element("li", { text: t("answer.some_unsupported", { count: unsupported }) }));
  for (const issue of answer.fact_check?.issues || []) {
    notes.append(element("li", { text: t(`fact.${issue.action}`, { wrote: issue.wrote, expected: issue.expected }) }));
  }
  if (!answer.grounded && answer.refusal?.detail) {
    notes.append(element("li", { className: "detail", text: answer.refusal.detail }));
  }
}

/* ---- feedback ---- */

/*
 * What the page sends for the reader's opinion of an answer, and what it withdraws. A row that carries a
 * correction is never withdrawn in passing: a reviewer may have approved it meanwhile, and it would silently
 * stop answering and go back to waiting. So:
 * - a thumb is a rating-only row; it replaces (withdraws) only this reader's earlier rating-only row for
 *   this answer, never a correction;
 * - a correction carries the rating given (a thumbs-down when none was), so it replaces the rating-only row;
 *   an edited correction replaces the reader's previous one only if the server still says that one is
 *   pending. An approved one stays in use and the new one waits for review beside it.
 */
async function saveOpinion(payload, withdrawReplaced) {
  const feedback = state.feedback;
  if (!feedback || feedback.busy) return;
  feedback.busy = true;
  feedback.error = "";
  feedback.keptApproved = null;
  renderFeedback();
  try {
    const row = await api.giveFeedback({ query_id: feedback.queryId, ...payload });
    Object.assign(feedback, { liveId: row.id, rating: row.rating, status: row.status });
    feedback.ratingId = row.correction === null ? row.id : null;
    if (row.correction !== null) feedback.correctionId = row.id;
    await withdrawReplaced(feedback);
    announce(feedbackStatusText(feedback));
  } catch (error) {
    feedback.error = error.message;
  } finally {
    feedback.busy = false;
    renderFeedback();
  }
}

async function withdrawIfStillPending(feedback, feedbackId) {
  // The server has no conditional withdrawal: reading the status just before is as close as the page gets.
  const earlier = await api.feedback(feedbackId);
  if (earlier.status === "pending") await api.withdrawFeedback(feedbackId);
  else if (earlier.status === "approved") feedback.keptApproved = feedbackId;
}

function feedbackStatusText(feedback) {
  if (!feedback.status) return "";
  const saved = t(`feedback.saved.${feedback.status}`);
  if (feedback.keptApproved === null) return saved;
  return `${saved} ${t("feedback.kept_approved", { id: feedback.keptApproved })}`;
}

function rate(rating) {
  const feedback = state.feedback;
  if (!feedback || feedback.busy || feedback.rating === rating) return;
  const earlierRating = feedback.ratingId;
  saveOpinion({ rating }, async () => {
    if (earlierRating !== null) await api.withdrawFeedback(earlierRating);
  });
}

function correct(event) {
  event.preventDefault();
  const feedback = state.feedback;
  const text = $("correction").value.trim();
  if (!feedback || feedback.busy || !text) return;
  const { ratingId: earlierRating, correctionId: earlierCorrection } = feedback;
  saveOpinion({ rating: feedback.rating || "down", correction: text }, async (saved) => {
    if (earlierRating !== null) await api.withdrawFeedback(earlierRating);
    if (earlierCorrection !== null) await withdrawIfStillPending(saved, earlierCorrection);
  });
}

function renderFeedback() {
  const feedback = state.feedback;
  const box = $("feedback");
  box.hidden = !feedback;
  if (!feedback) {
    $("correction").value = "";
    return;
  }
  box.dataset.feedbackId = feedback.liveId === null ? "" : String(feedback.liveId);
  for (const [id, rating] of [
    ["rate-up", "up"],
    ["rate-down", "down"],
  ]) {
    const button = $(id);
    button.setAttribute("aria-pressed", String(feedback.rating === rating));
    button.disabled = Boolean(feedback.busy);
  }
  $("correction-send").disabled = Boolean(feedback.busy);
  $("feedback-state").textContent = feedbackStatusText(feedback);
  showError("feedback-error", feedback.error || "");
}

/* ---- start ---- */

function labelLanguageButton() {
  // The button names the other language in that language; a screen reader should pronounce it so.
  $("language").lang = language() === "zh" ? "en" : "zh-CN";
}

function renderAll() {
  labelLanguageButton();
  renderCollections();
  renderDocuments();
  renderUploads();
  popover.close({ restoreFocus: false });
  renderAnswer();
  refreshModels();
}

function wireCitationMarks(text) {
  const markOf = (event) => {
    const button = event.target.closest?.("button.cite");
    return button && state.answer ? [button, state.answer.citations[Number(button.dataset.citation)]] : [];
  };
  text.addEventListener("click", (event) => {
    const [button, citation] = markOf(event);
    if (button) popover.toggle(button, citation);
  });
  for (const type of ["mouseover", "focusin"]) {
    text.addEventListener(type, (event) => {
      const [button, citation] = markOf(event);
      if (button) popover.preview(button, citation);
    });
  }
  for (const type of ["mouseout", "focusout"]) {
    text.addEventListener(type, (event) => {
      const [button] = markOf(event);
      // Moving within the mark is not leaving it.
      if (button && !button.contains(event.relatedTarget)) popover.endPreview();
    });
  }
}

function wire() {
  popover = new CitationPopover($("citation-popover"));
  $("language").addEventListener("click", () => setLanguage(language() === "zh" ? "en" : "zh"));
  onLanguageChange(renderAll);
  $("collection").addEventListener("change", (event) => chooseCollection(event.target.value));
  $("new-collection").addEventListener("submit", createCollection);
  wireDropZone();
  $("ask-form").addEventListener("submit", ask);
  $("question").addEventListener("keydown", askKeys);
  $("stop-button").addEventListener("click", stopAsking);
  wireCitationMarks($("answer-text"));
  $("rate-up").addEventListener("click", () => rate("up"));
  $("rate-down").addEventListener("click", () => rate("down"));
  $("correction-form").addEventListener("submit", correct);
}

async function start() {
  await loadMessages();
  applyTranslations();
  labelLanguageButton();
  wire();
  await refreshCollections();
  renderAnswer();
  await Promise.all([refreshDocuments(), refreshModels()]);
  document.body.dataset.ready = "true";
}

start().catch((error) => {
  showError("ask-error", error.message);
});
