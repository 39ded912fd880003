// The languages the language menu offers, by the ids the protocol carries: Rustpad's list
// (Monaco's ids), so a language a Rustpad client sets ("shell", "ruby", ...) highlights here
// and one set here means the same to a Rustpad client. Highlighting comes from CodeMirror's
// language packages where one exists, else from its ports of the classic modes
// (@codemirror/legacy-modes); the few without either are listed, unhighlighted.

import { StreamLanguage } from "@codemirror/language";
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
import { sql, MySQL, PostgreSQL, MSSQL } from "@codemirror/lang-sql";
import { csharp, kotlin, scala, dart, objectiveC } from "@codemirror/legacy-modes/mode/clike";
import { sCSS, less } from "@codemirror/legacy-modes/mode/css";
import { fSharp } from "@codemirror/legacy-modes/mode/mllike";
import { xml } from "@codemirror/legacy-modes/mode/xml";
import { shell } from "@codemirror/legacy-modes/mode/shell";
import { ruby } from "@codemirror/legacy-modes/mode/ruby";
import { lua } from "@codemirror/legacy-modes/mode/lua";
import { perl } from "@codemirror/legacy-modes/mode/perl";
import { r } from "@codemirror/legacy-modes/mode/r";
import { swift } from "@codemirror/legacy-modes/mode/swift";
import { dockerFile } from "@codemirror/legacy-modes/mode/dockerfile";
import { yaml } from "@codemirror/legacy-modes/mode/yaml";
import { powerShell } from "@codemirror/legacy-modes/mode/powershell";
import { clojure } from "@codemirror/legacy-modes/mode/clojure";
import { coffeeScript } from "@codemirror/legacy-modes/mode/coffeescript";
import { julia } from "@codemirror/legacy-modes/mode/julia";
import { pascal } from "@codemirror/legacy-modes/mode/pascal";
import { scheme } from "@codemirror/legacy-modes/mode/scheme";
import { sparql } from "@codemirror/legacy-modes/mode/sparql";
import { tcl } from "@codemirror/legacy-modes/mode/tcl";
import { vb } from "@codemirror/legacy-modes/mode/vb";
import { verilog } from "@codemirror/legacy-modes/mode/verilog";
import { protobuf } from "@codemirror/legacy-modes/mode/protobuf";
import { pug } from "@codemirror/legacy-modes/mode/pug";
import { properties } from "@codemirror/legacy-modes/mode/properties";
import { ecl } from "@codemirror/legacy-modes/mode/ecl";
import { gas } from "@codemirror/legacy-modes/mode/gas";
import { stex } from "@codemirror/legacy-modes/mode/stex";

const legacy = (mode) => () => StreamLanguage.define(mode);
const none = () => [];

/** id → {label, extension()}; the menu lists them in this order (Rustpad's). */
export const LANGUAGES = new Map([
  ["abap", { label: "ABAP", extension: none }],
  ["aes", { label: "AES", extension: none }],
  ["apex", { label: "Apex", extension: () => java() }],
  ["azcli", { label: "Azure CLI", extension: legacy(shell) }],
  ["bat", { label: "Batch", extension: none }],
  ["bicep", { label: "Bicep", extension: none }],
  ["c", { label: "C", extension: cpp }],
  ["cameligo", { label: "CameLIGO", extension: legacy(fSharp) }],
  ["clojure", { label: "Clojure", extension: legacy(clojure) }],
  ["coffeescript", { label: "CoffeeScript", extension: legacy(coffeeScript) }],
  ["cpp", { label: "C++", extension: cpp }],
  ["csharp", { label: "C#", extension: legacy(csharp) }],
  ["csp", { label: "CSP", extension: none }],
  ["css", { label: "CSS", extension: css }],
  ["dart", { label: "Dart", extension: legacy(dart) }],
  ["dockerfile", { label: "Dockerfile", extension: legacy(dockerFile) }],
  ["ecl", { label: "ECL", extension: legacy(ecl) }],
  ["elixir", { label: "Elixir", extension: legacy(ruby) }],
  ["flow9", { label: "Flow9", extension: none }],
  ["fsharp", { label: "F#", extension: legacy(fSharp) }],
  ["go", { label: "Go", extension: go }],
  ["graphql", { label: "GraphQL", extension: none }],
  ["handlebars", { label: "Handlebars", extension: html }],
  ["hcl", { label: "HCL", extension: none }],
  ["html", { label: "HTML", extension: html }],
  ["ini", { label: "INI", extension: legacy(properties) }],
  ["java", { label: "Java", extension: java }],
  ["javascript", { label: "JavaScript", extension: javascript }],
  ["json", { label: "JSON", extension: json }],
  ["julia", { label: "Julia", extension: legacy(julia) }],
  ["kotlin", { label: "Kotlin", extension: legacy(kotlin) }],
  ["latex", { label: "LaTeX", extension: legacy(stex) }],
  ["less", { label: "Less", extension: legacy(less) }],
  ["lexon", { label: "Lexon", extension: none }],
  ["liquid", { label: "Liquid", extension: html }],
  ["lua", { label: "Lua", extension: legacy(lua) }],
  ["m3", { label: "Modula-3", extension: legacy(pascal) }],
  ["markdown", { label: "Markdown", extension: markdown }],
  ["mips", { label: "MIPS", extension: legacy(gas) }],
  ["msdax", { label: "DAX", extension: none }],
  ["mysql", { label: "MySQL", extension: () => sql({ dialect: MySQL }) }],
  ["objective-c", { label: "Objective-C", extension: legacy(objectiveC) }],
  ["pascal", { label: "Pascal", extension: legacy(pascal) }],
  ["pascaligo", { label: "PascaLIGO", extension: legacy(pascal) }],
  ["perl", { label: "Perl", extension: legacy(perl) }],
  ["pgsql", { label: "PostgreSQL", extension: () => sql({ dialect: PostgreSQL }) }],
  ["php", { label: "PHP", extension: html }],
  ["plaintext", { label: "Plain text", extension: none }],
  ["postiats", { label: "ATS", extension: none }],
  ["powerquery", { label: "Power Query", extension: none }],
  ["powershell", { label: "PowerShell", extension: legacy(powerShell) }],
  ["proto", { label: "Protocol Buffers", extension: legacy(protobuf) }],
  ["pug", { label: "Pug", extension: legacy(pug) }],
  ["python", { label: "Python", extension: python }],
  ["qsharp", { label: "Q#", extension: legacy(csharp) }],
  ["r", { label: "R", extension: legacy(r) }],
  ["razor", { label: "Razor", extension: html }],
  ["redis", { label: "Redis", extension: none }],
  ["redshift", { label: "Redshift", extension: () => sql({ dialect: PostgreSQL }) }],
  ["restructuredtext", { label: "reStructuredText", extension: none }],
  ["ruby", { label: "Ruby", extension: legacy(ruby) }],
  ["rust", { label: "Rust", extension: rust }],
  ["sb", { label: "Small Basic", extension: legacy(vb) }],
  ["scala", { label: "Scala", extension: legacy(scala) }],
  ["scheme", { label: "Scheme", extension: legacy(scheme) }],
  ["scss", { label: "SCSS", extension: legacy(sCSS) }],
  ["shell", { label: "Shell", extension: legacy(shell) }],
  ["sol", { label: "Solidity", extension: javascript }],
  ["sparql", { label: "SPARQL", extension: legacy(sparql) }],
  ["sql", { label: "SQL", extension: sql }],
  ["st", { label: "Structured Text", extension: legacy(pascal) }],
  ["swift", { label: "Swift", extension: legacy(swift) }],
  ["systemverilog", { label: "SystemVerilog", extension: legacy(verilog) }],
  ["tcl", { label: "Tcl", extension: legacy(tcl) }],
  ["tsql", { label: "T-SQL", extension: () => sql({ dialect: MSSQL }) }],
  ["twig", { label: "Twig", extension: html }],
  ["typescript", { label: "TypeScript", extension: () => javascript({ typescript: true }) }],
  ["vb", { label: "Visual Basic", extension: legacy(vb) }],
  ["verilog", { label: "Verilog", extension: legacy(verilog) }],
  ["xml", { label: "XML", extension: legacy(xml) }],
  ["yaml", { label: "YAML", extension: legacy(yaml) }],
]);

/** File name extensions for Download, by language id (".txt" when unlisted). */
export const FILE_EXTENSIONS = {
  c: "c", clojure: "clj", coffeescript: "coffee", cpp: "cpp", csharp: "cs", css: "css",
  dart: "dart", dockerfile: "Dockerfile", fsharp: "fs", go: "go", html: "html", ini: "ini",
  java: "java", javascript: "js", json: "json", julia: "jl", kotlin: "kt", latex: "tex",
  less: "less", lua: "lua", markdown: "md", mysql: "sql", "objective-c": "m", pascal: "pas",
  perl: "pl", pgsql: "sql", php: "php", powershell: "ps1", proto: "proto", python: "py",
  r: "r", ruby: "rb", rust: "rs", scala: "scala", scheme: "scm", scss: "scss", shell: "sh",
  sql: "sql", swift: "swift", tcl: "tcl", typescript: "ts", vb: "vb", verilog: "v",
  xml: "xml", yaml: "yaml",
};

/** The CodeMirror extension for a language id; unknown ids get plain text. */
export function languageExtension(id) {
  return LANGUAGES.get(id)?.extension() ?? [];
}
