/*
 * The page's words in Chinese and English (messages.json). The language comes from the browser's
 * preferences until the reader picks one, which is remembered on this device.
 */

const STORAGE_KEY = "wenda.language";
export const LANGUAGES = ["zh", "en"];

let messages = { zh: {}, en: {} };
let current = "en";
const listeners = [];

export async function loadMessages() {
  const response = await fetch("/static/messages.json");
  if (!response.ok) throw new Error(`messages.json: HTTP ${response.status}`);
  messages = await response.json();
  current = initialLanguage();
}

function initialLanguage() {
  const saved = readStored();
  if (LANGUAGES.includes(saved)) return saved;
  const preferred = navigator.languages && navigator.languages.length ? navigator.languages : [navigator.language];
  for (const tag of preferred) {
    const base = String(tag || "").toLowerCase().split("-")[0];
    if (LANGUAGES.includes(base)) return base;
  }
  return "en";
}

// Storage can be switched off (private windows, strict settings): the page then just forgets the choice.
function readStored() {
  try {
    return window.localStorage.getItem(STORAGE_KEY);
  } catch {
    return null;
  }
}

function store(language) {
  try {
    window.localStorage.setItem(STORAGE_KEY, language);
  } catch {
    /* not remembered */
  }
}

export function language() {
  return current;
}

export function setLanguage(language) {
  if (!LANGUAGES.includes(language)) return;
  current = language;
  store(language);
  applyTranslations();
  for (const listener of listeners) listener(language);
}

export function onLanguageChange(listener) {
  listeners.push(listener);
}

/* The message `key` in the current language, its {name} placeholders filled from `params`. */
export function t(key, params = {}) {
  const text = messages[current]?.[key] ?? messages.en?.[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (whole, name) => (name in params ? String(params[name]) : whole));
}

export function htmlLanguage() {
  return current === "zh" ? "zh-CN" : "en";
}

/* Fills every element marked data-i18n (text), data-i18n-label (aria-label), data-i18n-title and
   data-i18n-placeholder. */
export function applyTranslations(root = document) {
  document.documentElement.lang = htmlLanguage();
  document.title = t("page.title");
  for (const element of root.querySelectorAll("[data-i18n]")) element.textContent = t(element.dataset.i18n);
  for (const element of root.querySelectorAll("[data-i18n-label]")) {
    element.setAttribute("aria-label", t(element.dataset.i18nLabel));
  }
  for (const element of root.querySelectorAll("[data-i18n-title]")) element.title = t(element.dataset.i18nTitle);
  for (const element of root.querySelectorAll("[data-i18n-placeholder]")) {
    element.placeholder = t(element.dataset.i18nPlaceholder);
  }
}
