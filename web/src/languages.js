// The languages the language menu offers, by the ids the protocol carries (Rustpad's Monaco
// ids, so a Rustpad client and codraft agree), each with its CodeMirror highlighting.

import { cpp } from "@codemirror/lang-cpp";
import { css } from "@codemirror/lang-css";
import { go } from "@codemirror/lang-go";
import { html } from "@codemirror/lang-html";
import { java } from "@codemirror/lang-java";
import { javascript } from "@codemirror/lang-javascript";
import { json } from "@codemirror/lang-json";
import { markdown } from "@codemirror/lang-markdown";
import { python } from "@codemirror/lang-python";
import { rust } from "@codemirror/lang-rust";
import { sql } from "@codemirror/lang-sql";

/** id → {label, extension()}; the menu lists them in this order. */
export const LANGUAGES = new Map([
  ["plaintext", { label: "Plain text", extension: () => [] }],
  ["c", { label: "C", extension: cpp }],
  ["cpp", { label: "C++", extension: cpp }],
  ["css", { label: "CSS", extension: css }],
  ["go", { label: "Go", extension: go }],
  ["html", { label: "HTML", extension: html }],
  ["java", { label: "Java", extension: java }],
  ["javascript", { label: "JavaScript", extension: javascript }],
  ["json", { label: "JSON", extension: json }],
  ["markdown", { label: "Markdown", extension: markdown }],
  ["python", { label: "Python", extension: python }],
  ["rust", { label: "Rust", extension: rust }],
  ["sql", { label: "SQL", extension: sql }],
  ["typescript", { label: "TypeScript", extension: () => javascript({ typescript: true }) }],
]);

/** The CodeMirror extension for a language id; unknown ids get plain text. */
export function languageExtension(id) {
  return LANGUAGES.get(id)?.extension() ?? [];
}
