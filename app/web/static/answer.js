/*
 * The checked answer as the reader sees it: its text with each [n] mark turned into a button that opens
 * citation n (the n-th entry of `citations`) in a popover, and the sentences no passage supports marked.
 * Everything from the server goes in as text nodes: an answer or a document can hold markup, and it must
 * read as the characters it is.
 */

import { t } from "./i18n.js";

const MARKER = /\[(\d{1,3})\]/g;
const KIND_SYMBOL = { document: "", fact: "◆", correction: "✎" };

/* Character ranges of the answer's unsupported sentences. Such a sentence cites nothing, so its text appears
   in the answer verbatim, without marks. */
function unsupportedRanges(answer) {
  const ranges = [];
  let from = 0;
  for (const sentence of answer.sentences || []) {
    if (sentence.supported || !sentence.text) continue;
    const at = answer.answer.indexOf(sentence.text, from);
    if (at === -1) continue;
    ranges.push([at, at + sentence.text.length]);
    from = at + sentence.text.length;
  }
  return ranges;
}

function citationButton(number, citation) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = `cite cite-${citation.kind}`;
  button.dataset.citation = String(number - 1);
  button.setAttribute("aria-haspopup", "dialog");
  button.setAttribute("aria-expanded", "false");
  button.setAttribute("aria-controls", "citation-popover");
  button.setAttribute(
    "aria-label",
    t("citation.mark_label", { number, kind: t(`citation.kind.${citation.kind}`), source: citationSource(citation) }),
  );
  const symbol = KIND_SYMBOL[citation.kind] || "";
  button.textContent = `${symbol}${number}`;
  return button;
}

/* Text with its [n] marks as buttons; a mark with no such citation stays as written. */
function appendMarked(parent, text, citations) {
  let last = 0;
  for (const match of text.matchAll(MARKER)) {
    const number = Number(match[1]);
    const citation = citations[number - 1];
    if (!citation) continue;
    if (match.index > last) parent.append(text.slice(last, match.index));
    parent.append(citationButton(number, citation));
    last = match.index + match[0].length;
  }
  if (last < text.length) parent.append(text.slice(last));
}

export function renderCheckedAnswer(container, answer) {
  container.replaceChildren();
  const text = answer.answer || "";
  const citations = answer.grounded ? answer.citations || [] : [];
  let position = 0;
  for (const [start, end] of answer.grounded ? unsupportedRanges(answer) : []) {
    appendMarked(container, text.slice(position, start), citations);
    const span = document.createElement("span");
    span.className = "unsupported";
    span.title = t("answer.unsupported_sentence");
    span.textContent = text.slice(start, end);
    container.append(span);
    position = end;
  }
  appendMarked(container, text.slice(position), citations);
}

export function citationSource(citation) {
  if (citation.kind === "fact") return t("citation.fact_source", { name: citation.name || "", source: citation.source });
  if (citation.kind === "correction") return t("citation.correction_source", { id: citation.feedback_id ?? "?" });
  return citation.source;
}

export function citationPosition(citation) {
  if (citation.kind === "fact") return "";
  return t("citation.position", { start: citation.start, end: citation.end });
}

/*
 * One popover for all marks, shown two ways. Pointing at a mark or tabbing to it *previews* the citation
 * (quote, source, position) without taking the focus, and the preview goes when the pointer or the focus
 * leaves. Clicking a mark, or Enter or Space on it (a real button), *opens* it: the popover then takes the
 * focus so a screen reader reads it, and stays until Escape, its close button or a click elsewhere, which
 * give the focus back to the mark.
 */
const PREVIEW_CLOSE_MS = 200; // time to cross the gap from a mark onto its preview

export class CitationPopover {
  constructor(element) {
    this.element = element;
    this.kind = element.querySelector("[data-part=kind]");
    this.quote = element.querySelector("[data-part=quote]");
    this.source = element.querySelector("[data-part=source]");
    this.position = element.querySelector("[data-part=position]");
    this.opener = null;
    this.pinned = false; // opened by click or key, not just previewed
    this.returningFocus = false;
    this.previewTimer = 0;
    element.querySelector("[data-part=close]").addEventListener("click", () => this.close());
    element.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        event.preventDefault();
        this.close();
      }
    });
    // A preview the pointer moves onto stays, so its text can be selected; one clicked into is open.
    element.addEventListener("mouseenter", () => window.clearTimeout(this.previewTimer));
    element.addEventListener("mouseleave", () => this.endPreview());
    element.addEventListener("focusin", () => this.pin());
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && !this.element.hidden) this.close();
    });
    document.addEventListener("click", (event) => {
      if (this.element.hidden || this.element.contains(event.target)) return;
      if (event.target.closest && event.target.closest("button.cite")) return;
      this.close({ restoreFocus: false });
    });
  }

  toggle(button, citation) {
    if (this.pinned && this.opener === button) this.close();
    else this.open(button, citation);
  }

  open(button, citation) {
    this.show(button, citation);
    this.element.focus();
  }

  pin() {
    if (this.element.hidden || !this.opener) return;
    window.clearTimeout(this.previewTimer);
    this.pinned = true;
    this.opener.setAttribute("aria-expanded", "true");
  }

  /* Shown for a mark pointed at or focused; an opened popover is left as it is. */
  preview(button, citation) {
    window.clearTimeout(this.previewTimer);
    if (this.pinned || this.returningFocus) return;
    if (this.element.hidden || this.opener !== button) this.show(button, citation);
  }

  endPreview() {
    if (this.pinned || this.element.hidden) return;
    window.clearTimeout(this.previewTimer);
    this.previewTimer = window.setTimeout(() => {
      if (!this.pinned) this.close({ restoreFocus: false });
    }, PREVIEW_CLOSE_MS);
  }

  show(button, citation) {
    if (this.opener) this.unmark(this.opener);
    this.opener = button;
    this.element.dataset.kind = citation.kind;
    this.kind.textContent = t(`citation.kind.${citation.kind}`);
    this.quote.textContent = citation.quote;
    this.source.textContent = citationSource(citation);
    this.position.textContent = citationPosition(citation);
    this.position.hidden = !this.position.textContent;
    this.element.hidden = false;
    button.classList.add("showing");
    this.place(button);
  }

  unmark(button) {
    button.setAttribute("aria-expanded", "false");
    button.classList.remove("showing");
  }

  place(button) {
    // Under the mark, kept inside the viewport; phone widths show it as a sheet at the bottom (style.css).
    const mark = button.getBoundingClientRect();
    const width = this.element.offsetWidth;
    const left = Math.max(8, Math.min(mark.left, document.documentElement.clientWidth - width - 8));
    this.element.style.left = `${left + window.scrollX}px`;
    this.element.style.top = `${mark.bottom + window.scrollY + 6}px`;
  }

  close({ restoreFocus = true } = {}) {
    window.clearTimeout(this.previewTimer);
    if (this.element.hidden) return;
    this.element.hidden = true;
    const opener = this.opener;
    const wasPinned = this.pinned;
    this.opener = null;
    this.pinned = false;
    if (!opener) return;
    this.unmark(opener);
    if (restoreFocus && wasPinned && opener.isConnected) {
      // The mark getting the focus back must not preview again what was just closed.
      this.returningFocus = true;
      opener.focus();
      this.returningFocus = false;
    }
  }
}
