// The CodeMirror 6 editor and the adapter the session talks to: local changes leave as
// code-point operations, remote operations come in and are applied without entering the
// undo history, and other users' cursors and selections are drawn as decorations. A Yjs
// document brings its own binding instead (`collab`, from yjs.js); theme, language,
// read-only and the empty-document hint are the same for both kinds.

import { EditorView, basicSetup } from "codemirror";
import { Annotation, Compartment, EditorState, StateEffect, Transaction } from "@codemirror/state";
import { Decoration, ViewPlugin, WidgetType, placeholder as emptyHint } from "@codemirror/view";
import { HighlightStyle, syntaxHighlighting } from "@codemirror/language";
import { tags } from "@lezer/highlight";
import { TextOperation, advance, cpLength, cpToUtf16Many, diffOperation, utf16ToCp } from "./ot.js";
import { languageExtension } from "./languages.js";
import { selectionColor, userColor } from "./colors.js";

/** Marks transactions that carry other users' edits (not ours to send back). */
const remoteEdit = Annotation.define();
/** Tells the cursor plugin to redraw from the cursor store. */
const refreshCursors = StateEffect.define();

/** Colours for dark mode: the editor's surfaces follow the page (app.css); these are the
 * syntax colours, which CodeMirror's default style picks for a light background. */
const darkHighlight = HighlightStyle.define([
  { tag: [tags.keyword, tags.modifier, tags.operatorKeyword, tags.controlKeyword], color: "#ff7b72" },
  { tag: [tags.string, tags.special(tags.string), tags.regexp], color: "#a5d6ff" },
  { tag: [tags.number, tags.bool, tags.null, tags.atom], color: "#79c0ff" },
  { tag: [tags.comment, tags.meta], color: "#8b949e", fontStyle: "italic" },
  { tag: [tags.function(tags.variableName), tags.function(tags.propertyName)], color: "#d2a8ff" },
  { tag: [tags.typeName, tags.className, tags.namespace], color: "#ffa657" },
  { tag: [tags.definition(tags.variableName), tags.propertyName], color: "#e6edf3" },
  { tag: [tags.tagName, tags.heading], color: "#7ee787", fontWeight: "bold" },
  { tag: [tags.attributeName, tags.link], color: "#79c0ff" },
  { tag: tags.invalid, color: "#f85149" },
]);

/** Extensions of a dark or light editor. */
function themeFor(dark) {
  return dark ? [EditorView.theme({}, { dark: true }), syntaxHighlighting(darkHighlight)] : [];
}

/**
 * A remote user's caret: a coloured bar with the user's name on a small flag above it
 * (below on line 1). The flag shows while the caret moves and then fades (it stays while
 * hovered), so it does not hide the line above for long; `at` makes a moved caret a new
 * widget, which restarts the fade.
 */
class CaretWidget extends WidgetType {
  constructor(name, hue, below, at) {
    super();
    this.name = name;
    this.hue = hue;
    this.below = below;
    this.at = at;
  }

  eq(other) {
    return other.name === this.name && other.hue === this.hue && other.below === this.below && other.at === this.at;
  }

  toDOM() {
    const caret = document.createElement("span");
    caret.className = this.below ? "cd-caret cd-caret-below" : "cd-caret";
    caret.style.setProperty("--color", userColor(this.hue));
    caret.setAttribute("aria-hidden", "true");
    const label = document.createElement("span");
    label.className = "cd-caret-label";
    label.textContent = this.name;
    caret.append(label);
    return caret;
  }

  ignoreEvent() {
    return true;
  }
}

/** Decorations for every remote user in `users()` ([{name, hue, cursors, selections}]). */
function buildDecorations(state, users) {
  const text = state.doc.toString();
  const points = [];
  for (const u of users) {
    for (const c of u.cursors) points.push(c);
    for (const [a, b] of u.selections) points.push(a, b);
  }
  const offsets = cpToUtf16Many(text, points);
  let k = 0;
  const ranges = [];
  for (const u of users) {
    const carets = u.cursors.map(() => offsets[k++]);
    for (const _ of u.selections) {
      const a = offsets[k++];
      const b = offsets[k++];
      if (a === b) continue;
      ranges.push(
        Decoration.mark({
          class: "cd-remote-selection",
          attributes: { style: `background-color: ${selectionColor(u.hue)}` },
        }).range(Math.min(a, b), Math.max(a, b)),
      );
    }
    for (const pos of carets) {
      const below = state.doc.lineAt(pos).number === 1;
      ranges.push(Decoration.widget({ widget: new CaretWidget(u.name, u.hue, below, pos), side: 1 }).range(pos));
    }
  }
  return Decoration.set(ranges, true);
}

function remoteCursors(users) {
  return ViewPlugin.fromClass(
    class {
      constructor(view) {
        this.decorations = buildDecorations(view.state, users());
      }
      update(update) {
        const refresh = update.transactions.some((tr) => tr.effects.some((e) => e.is(refreshCursors)));
        if (refresh) this.decorations = buildDecorations(update.state, users());
        else if (update.docChanged) this.decorations = this.decorations.map(update.changes);
      }
    },
    { decorations: (plugin) => plugin.decorations },
  );
}

/** The code-point operation for a CodeMirror change set applied to `doc`. */
function changesToOperation(doc, changes) {
  const old = doc.toString();
  const op = new TextOperation();
  let pos = 0;
  changes.iterChanges((fromA, toA, _fromB, _toB, inserted) => {
    op.retain(cpLength(old.slice(pos, fromA)));
    op.delete(cpLength(old.slice(fromA, toA)));
    op.insert(inserted.toString());
    pos = toA;
  });
  op.retain(cpLength(old.slice(pos)));
  // A change that splits a surrogate pair miscounts; describe it by its result instead.
  if (op.baseLength !== cpLength(old)) return diffOperation(old, changes.apply(doc).toString());
  return op;
}

/** The OT document's binding: local edits out as operations, remote carets drawn from `users()`. */
function otBinding({ onLocalChange, onSelection, users }) {
  return [
    remoteCursors(users),
    EditorView.updateListener.of((update) => {
      let local = false;
      for (const tr of update.transactions) {
        if (!tr.docChanged || tr.annotation(remoteEdit)) continue;
        local = true;
        onLocalChange(changesToOperation(tr.startState.doc, tr.changes));
      }
      const userMoved = update.transactions.some((tr) => !tr.annotation(remoteEdit) && tr.selection);
      if (local || userMoved) onSelection();
    }),
  ];
}

/**
 * Creates the editor in `parent`.
 * @param {object} o
 * @param {(op: TextOperation) => void} o.onLocalChange  each local edit, in code points
 * @param {() => void} o.onSelection  the local selection moved
 * @param {() => Array} o.users  remote users to draw: [{name, hue, cursors, selections}]
 * @param {boolean} [o.dark]  start in dark mode
 * @param {boolean} [o.wrap]  wrap long lines (narrow screens)
 * @param {string} [o.placeholder]  the hint an empty document shows
 * @param {import("@codemirror/state").Extension} [o.collab]  instead of the three above, the
 *   extensions that keep the text in step with others (a Yjs binding, yjs.js); the OT
 *   methods of the adapter (applyRemote, replaceText, cursorData) then go unused
 */
export function createEditor(parent, { onLocalChange, onSelection, users, collab, dark = false, wrap = false, placeholder = "" }) {
  const language = new Compartment();
  const readOnly = new Compartment();
  const theme = new Compartment();

  const view = new EditorView({
    parent,
    state: EditorState.create({
      doc: "",
      extensions: [
        basicSetup,
        // Keep "\r" and "\r\n" as they are: the document must count exactly what the server counts.
        EditorState.lineSeparator.of("\n"),
        language.of([]),
        theme.of(themeFor(dark)),
        wrap ? EditorView.lineWrapping : [],
        placeholder ? emptyHint(placeholder) : [],
        readOnly.of(EditorState.readOnly.of(true)),
        EditorView.contentAttributes.of({ "aria-label": "Document text" }),
        collab ?? otBinding({ onLocalChange, onSelection, users }),
      ],
    }),
  });

  const adapter = {
    view,

    /** The whole text (UTF-16 string, as the browser has it). */
    getText: () => view.state.doc.toString(),

    /** Applies another user's operation (code points on the current text). */
    applyRemote(op) {
      const text = view.state.doc.toString();
      if (op.baseLength !== cpLength(text)) {
        throw new Error(`remote operation of base ${op.baseLength} on a text of ${cpLength(text)}`);
      }
      const changes = [];
      let at = 0;
      for (const part of op.ops) {
        if (typeof part === "string") {
          changes.push({ from: at, insert: part });
        } else if (part > 0) {
          at = advance(text, at, part);
        } else {
          const end = advance(text, at, -part);
          const last = changes[changes.length - 1];
          if (last && last.from === at && last.to === undefined) last.to = end;
          else changes.push({ from: at, to: end });
          at = end;
        }
      }
      view.dispatch({
        changes,
        annotations: [remoteEdit.of(true), Transaction.addToHistory.of(false)],
        effects: refreshCursors.of(null),
      });
    },

    /** Makes the text `text`, touching only what differs (so the caret stays put). */
    replaceText(text) {
      const op = diffOperation(view.state.doc.toString(), text);
      if (!op.isNoop()) adapter.applyRemote(op);
    },

    /** Our cursors and selections in code points, as CursorData wants them. */
    cursorData() {
      const text = view.state.doc.toString();
      const ranges = view.state.selection.ranges;
      return {
        cursors: ranges.map((r) => utf16ToCp(text, r.head)),
        selections: ranges.filter((r) => !r.empty).map((r) => [utf16ToCp(text, r.from), utf16ToCp(text, r.to)]),
      };
    },

    /** Redraws remote cursors from the store. */
    refreshCursors() {
      view.dispatch({ effects: refreshCursors.of(null) });
    },

    /** Switches syntax highlighting. */
    setLanguage(id) {
      view.dispatch({ effects: language.reconfigure(languageExtension(id)) });
    },

    /** Switches between the dark and the light syntax colours. */
    setDark(on) {
      view.dispatch({ effects: theme.reconfigure(themeFor(on)) });
    },

    /** Allows or forbids typing (forbidden until the document has loaded, and for readers). */
    setReadOnly(on) {
      view.dispatch({ effects: readOnly.reconfigure(EditorState.readOnly.of(on)) });
    },
  };
  return adapter;
}
