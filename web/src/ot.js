// Operational transformation for the browser client: text operations in the wire format of
// docs/protocol.md, the transform that agrees with the server, cursor transformation, and
// the ot.js-style client state machine (Synchronized / AwaitingConfirm / AwaitingWithBuffer).
//
// Everything here counts Unicode code points, as the protocol does. CodeMirror counts UTF-16
// code units, so the conversions at the bottom are the only bridge between the two.
// This module has no DOM and no I/O, so node's test runner covers it (tests/ot.test.mjs).

/** An operation part is a retain (n > 0), a delete (n < 0) or an insert (a string). */
const isRetain = (part) => typeof part === "number" && part > 0;
const isDelete = (part) => typeof part === "number" && part < 0;
const isInsert = (part) => typeof part === "string";

/**
 * A text operation covering a whole document, kept normalised the way the server keeps it:
 * adjacent parts of one kind merged, no empty parts, an insert next to a delete first.
 * Its `ops` array is exactly the JSON form sent on the wire.
 */
export class TextOperation {
  constructor() {
    /** The parts: positive retain, negative delete, string insert. */
    this.ops = [];
    /** Code points of the document this operation applies to. */
    this.baseLength = 0;
    /** Code points of the document this operation produces. */
    this.targetLength = 0;
  }

  /** Keeps the next `n` code points. */
  retain(n) {
    checkCount(n);
    if (n === 0) return this;
    this.baseLength += n;
    this.targetLength += n;
    const last = this.ops.length - 1;
    if (isRetain(this.ops[last])) this.ops[last] += n;
    else this.ops.push(n);
    return this;
  }

  /** Inserts `text` at the current position. */
  insert(text) {
    if (typeof text !== "string") throw new TypeError("insert takes a string");
    if (text === "") return this;
    this.targetLength += cpLength(text);
    const ops = this.ops;
    const last = ops.length - 1;
    if (isInsert(ops[last])) {
      ops[last] += text;
    } else if (isDelete(ops[last])) {
      // Normal form puts the insert before the delete it touches.
      if (isInsert(ops[last - 1])) ops[last - 1] += text;
      else {
        ops.push(ops[last]);
        ops[last] = text;
      }
    } else {
      ops.push(text);
    }
    return this;
  }

  /** Deletes the next `n` code points. */
  delete(n) {
    checkCount(n);
    if (n === 0) return this;
    this.baseLength += n;
    const last = this.ops.length - 1;
    if (isDelete(this.ops[last])) this.ops[last] -= n;
    else this.ops.push(-n);
    return this;
  }

  /** True when applying this operation changes nothing. */
  isNoop() {
    return this.ops.length === 0 || (this.ops.length === 1 && isRetain(this.ops[0]));
  }

  /** The wire form: a JSON array of integers and strings. */
  toJSON() {
    return this.ops.slice();
  }

  /** Parses and normalises the wire form; throws on anything that is not an operation. */
  static fromJSON(parts) {
    if (!Array.isArray(parts)) throw new TypeError("an operation is an array");
    const op = new TextOperation();
    for (const part of parts) {
      if (typeof part === "string") op.insert(part);
      else if (Number.isSafeInteger(part)) {
        if (part >= 0) op.retain(part);
        else op.delete(-part);
      } else throw new TypeError(`not an operation part: ${JSON.stringify(part)}`);
    }
    return op;
  }

  /** Applies this operation to `text`; throws if the lengths do not fit. */
  apply(text) {
    const length = cpLength(text);
    if (length !== this.baseLength) {
      throw new Error(`operation base length ${this.baseLength} does not fit a text of ${length}`);
    }
    const out = [];
    let at = 0; // UTF-16 index into text
    for (const part of this.ops) {
      if (isInsert(part)) out.push(part);
      else if (isRetain(part)) {
        const end = advance(text, at, part);
        out.push(text.slice(at, end));
        at = end;
      } else at = advance(text, at, -part);
    }
    return out.join("");
  }

  /** The operation that has the effect of `this` followed by `other`. */
  compose(other) {
    if (this.targetLength !== other.baseLength) {
      throw new Error("compose: the second operation does not start where the first ends");
    }
    const result = new TextOperation();
    const ops1 = this.ops;
    const ops2 = other.ops;
    let i1 = 0;
    let i2 = 0;
    let a = ops1[i1++];
    let b = ops2[i2++];
    for (;;) {
      if (a === undefined && b === undefined) break;
      if (isDelete(a)) {
        result.delete(-a);
        a = ops1[i1++];
        continue;
      }
      if (isInsert(b)) {
        result.insert(b);
        b = ops2[i2++];
        continue;
      }
      if (a === undefined || b === undefined) throw new Error("compose: lengths disagree");
      if (isRetain(a) && isRetain(b)) {
        const n = Math.min(a, b);
        result.retain(n);
        [a, i1] = a > n ? [a - n, i1] : [ops1[i1], i1 + 1];
        [b, i2] = b > n ? [b - n, i2] : [ops2[i2], i2 + 1];
      } else if (isInsert(a) && isDelete(b)) {
        const len = cpLength(a);
        const n = Math.min(len, -b);
        [a, i1] = len > n ? [cpSlice(a, n), i1] : [ops1[i1], i1 + 1];
        [b, i2] = -b > n ? [b + n, i2] : [ops2[i2], i2 + 1];
      } else if (isInsert(a) && isRetain(b)) {
        const len = cpLength(a);
        const n = Math.min(len, b);
        result.insert(len > n ? cpSlice(a, 0, n) : a);
        [a, i1] = len > n ? [cpSlice(a, n), i1] : [ops1[i1], i1 + 1];
        [b, i2] = b > n ? [b - n, i2] : [ops2[i2], i2 + 1];
      } else {
        // a retains, b deletes
        const n = Math.min(a, -b);
        result.delete(n);
        [a, i1] = a > n ? [a - n, i1] : [ops1[i1], i1 + 1];
        [b, i2] = -b > n ? [b + n, i2] : [ops2[i2], i2 + 1];
      }
    }
    return result;
  }
}

/**
 * Transforms two operations made on the same text: returns [a', b'] such that
 * b'(a(text)) === a'(b(text)). When both insert at one position, a's insert goes first —
 * the rule for "a reached the server later" (the server transforms an incoming edit against
 * the history it missed with exactly this call), so a client calls
 * transform(localPending, serverOp) and lands where the server does.
 */
export function transform(a, b) {
  if (a.baseLength !== b.baseLength) {
    throw new Error("transform: the operations are not based on the same text");
  }
  const aPrime = new TextOperation();
  const bPrime = new TextOperation();
  const ops1 = a.ops;
  const ops2 = b.ops;
  let i1 = 0;
  let i2 = 0;
  let x = ops1[i1++];
  let y = ops2[i2++];
  for (;;) {
    if (x === undefined && y === undefined) break;
    if (isInsert(x)) {
      aPrime.insert(x);
      bPrime.retain(cpLength(x));
      x = ops1[i1++];
      continue;
    }
    if (isInsert(y)) {
      aPrime.retain(cpLength(y));
      bPrime.insert(y);
      y = ops2[i2++];
      continue;
    }
    if (x === undefined || y === undefined) throw new Error("transform: lengths disagree");
    const n = Math.min(Math.abs(x), Math.abs(y));
    if (isRetain(x) && isRetain(y)) {
      aPrime.retain(n);
      bPrime.retain(n);
    } else if (isDelete(x) && isRetain(y)) {
      aPrime.delete(n);
    } else if (isRetain(x) && isDelete(y)) {
      bPrime.delete(n);
    } // both delete the same characters: nothing left to do for either
    [x, i1] = Math.abs(x) > n ? [x > 0 ? x - n : x + n, i1] : [ops1[i1], i1 + 1];
    [y, i2] = Math.abs(y) > n ? [y > 0 ? y - n : y + n, i2] : [ops2[i2], i2 + 1];
  }
  return [aPrime, bPrime];
}

/**
 * Where code point `position` moves when `op` is applied, exactly as the server moves
 * cursors: an insert at the position pushes it right, a delete spanning it pulls it to the
 * delete's start.
 */
export function transformIndex(op, position) {
  let index = position;
  let newIndex = position;
  for (const part of op.ops) {
    if (isRetain(part)) index -= part;
    else if (isInsert(part)) newIndex += cpLength(part);
    else {
      newIndex -= Math.min(index, -part);
      index += part;
    }
    if (index < 0) break;
  }
  return newIndex;
}

/** The operation that turns `before` into `after`: one replace between common ends. */
export function diffOperation(before, after) {
  const a = Array.from(before);
  const b = Array.from(after);
  let prefix = 0;
  while (prefix < a.length && prefix < b.length && a[prefix] === b[prefix]) prefix++;
  let suffix = 0;
  while (
    suffix < a.length - prefix &&
    suffix < b.length - prefix &&
    a[a.length - 1 - suffix] === b[b.length - 1 - suffix]
  ) {
    suffix++;
  }
  return new TextOperation()
    .retain(prefix)
    .delete(a.length - prefix - suffix)
    .insert(b.slice(prefix, b.length - suffix).join(""))
    .retain(suffix);
}

// ---- UTF-16 code units <-> code points ---------------------------------------------------

const isHigh = (unit) => unit >= 0xd800 && unit <= 0xdbff;
const isLow = (unit) => unit >= 0xdc00 && unit <= 0xdfff;

/** Number of code points in `text` (a lone surrogate counts as one, as `for…of` does). */
export function cpLength(text) {
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    if (isHigh(text.charCodeAt(i)) && isLow(text.charCodeAt(i + 1))) i++;
    n++;
  }
  return n;
}

/** The code point offset of UTF-16 offset `offset` in `text` (inside a pair rounds up). */
export function utf16ToCp(text, offset) {
  let n = 0;
  for (let i = 0; i < offset && i < text.length; i++) {
    if (isHigh(text.charCodeAt(i)) && isLow(text.charCodeAt(i + 1))) i++;
    n++;
  }
  return n;
}

/** The UTF-16 offset of code point offset `cp` in `text`, clamped to the text's end. */
export function cpToUtf16(text, cp) {
  let i = 0;
  for (let n = 0; n < cp && i < text.length; n++) {
    i += isHigh(text.charCodeAt(i)) && isLow(text.charCodeAt(i + 1)) ? 2 : 1;
  }
  return i;
}

/** UTF-16 offsets of many code point offsets in one pass over `text`. */
export function cpToUtf16Many(text, cps) {
  const order = cps.map((_, k) => k).sort((p, q) => cps[p] - cps[q]);
  const out = new Array(cps.length);
  let i = 0;
  let n = 0;
  for (const k of order) {
    while (n < cps[k] && i < text.length) {
      i += isHigh(text.charCodeAt(i)) && isLow(text.charCodeAt(i + 1)) ? 2 : 1;
      n++;
    }
    out[k] = i;
  }
  return out;
}

/** UTF-16 index `count` code points after UTF-16 index `from`; throws past the end. */
export function advance(text, from, count) {
  let i = from;
  for (let n = 0; n < count; n++) {
    if (i >= text.length) throw new Error("operation is longer than the text");
    i += isHigh(text.charCodeAt(i)) && isLow(text.charCodeAt(i + 1)) ? 2 : 1;
  }
  return i;
}

/** Code points [start, end) of `text`. */
function cpSlice(text, start, end = Infinity) {
  const from = cpToUtf16(text, start);
  return text.slice(from, end === Infinity ? text.length : cpToUtf16(text, end));
}

function checkCount(n) {
  if (!Number.isSafeInteger(n) || n < 0) throw new TypeError(`not a length: ${n}`);
}

// ---- client state machine ----------------------------------------------------------------

/**
 * The client's side of the OT dialogue on one document, across connections.
 *
 * State is ot.js's: Synchronized (nothing pending), AwaitingConfirm (one edit sent, not yet
 * acknowledged) or AwaitingWithBuffer (that, plus local edits made since, composed into one
 * buffer that is sent when the outstanding edit is acknowledged). Each edit that becomes
 * outstanding gets the next `seq`, which it keeps through transforms and re-sends, so the
 * server can recognise a re-sent edit it already committed.
 *
 * The caller does the I/O: `applyClient` and `serverAck` return the edit to send (or null),
 * `applyServer` returns the operation to apply to the local text.
 */
/** Typing within this long of the last change, where it ended, continues the same edit. */
const CONTINUE_MS = 2000;

/**
 * Where an operation changes its text: `from`..`to` on the old text (what it deletes) and
 * `end`, where its change ends on the new text.
 */
export function changedSpan(op) {
  let pos = 0;
  let from = null;
  let deleted = 0;
  let inserted = 0;
  for (const part of op.ops) {
    if (typeof part === "string") {
      if (from === null) from = pos;
      inserted += cpLength(part);
    } else if (part > 0) {
      if (from !== null) break;
      pos += part;
    } else {
      if (from === null) from = pos;
      deleted += -part;
    }
  }
  from ??= pos;
  return { from, to: from + deleted, end: from + inserted };
}

export class OTClient {
  constructor() {
    /** History entries applied on the current connection (the Edit `revision`). */
    this.revision = 0;
    /** The sent, unacknowledged edit: {op, seq, edits}, or null. */
    this.outstanding = null;
    /** Local edits made while awaiting: {op, edits}, or null. */
    this.buffer = null;
    /** Where the last local change ended and when, to tell a new edit from more typing. */
    this.lastChange = null;
    /** The seq the next edit to become outstanding gets. */
    this.nextSeq = 1;
  }

  /** "Synchronized", "AwaitingConfirm" or "AwaitingWithBuffer". */
  get state() {
    if (!this.outstanding) return "Synchronized";
    return this.buffer ? "AwaitingWithBuffer" : "AwaitingConfirm";
  }

  /**
   * Number of local edits not yet acknowledged by the server, as a person counts them: a
   * run of typing (or deleting) at one place is one edit, not one per keystroke.
   */
  get pendingChanges() {
    return (this.outstanding?.edits ?? 0) + (this.buffer?.edits ?? 0);
  }

  /**
   * A local edit made at time `now` (ms); returns the edit to send now ({op, seq}) or null
   * if it was buffered.
   */
  applyClient(op, now = Date.now()) {
    const { from, to, end } = changedSpan(op);
    const last = this.lastChange;
    const continues = !!last && now - last.at < CONTINUE_MS && (from === last.end || to === last.end);
    this.lastChange = { end, at: now };
    if (!this.outstanding) {
      this.outstanding = { op, seq: this.nextSeq++, edits: 1 };
      return this.outstanding;
    }
    // A buffer that only continues the outstanding edit counts 0 until that is acknowledged.
    const edits = (this.buffer?.edits ?? 0) + (continues ? 0 : 1);
    this.buffer = { op: this.buffer ? this.buffer.op.compose(op) : op, edits };
    return null;
  }

  /** Another client's edit, based on our last revision; returns it transformed for our text. */
  applyServer(op) {
    this.revision++;
    if (this.outstanding) {
      const [outstanding, op1] = transform(this.outstanding.op, op);
      this.outstanding = { ...this.outstanding, op: outstanding };
      op = op1;
      if (this.buffer) {
        const [buffer, op2] = transform(this.buffer.op, op);
        this.buffer = { ...this.buffer, op: buffer };
        op = op2;
      }
    }
    return op;
  }

  /** Our outstanding edit was committed; returns the buffered edit to send next, or null. */
  serverAck() {
    this.revision++;
    if (!this.outstanding) throw new Error("acknowledgement with no outstanding edit");
    this.outstanding = null;
    if (this.buffer) {
      this.outstanding = { op: this.buffer.op, seq: this.nextSeq++, edits: Math.max(1, this.buffer.edits) };
      this.buffer = null;
    }
    return this.outstanding;
  }

  /** Whether a History entry acknowledges our outstanding edit (by seq, or by connection id). */
  isAck(entry, me) {
    if (!this.outstanding) return false;
    if (entry.seq !== undefined && entry.seq !== null) return entry.seq === this.outstanding.seq;
    return entry.id === me;
  }

  /** Maps a position on the server's text to our text (through outstanding, then buffer). */
  transformIncomingIndex(position) {
    let p = position;
    if (this.outstanding) p = transformIndex(this.outstanding.op, p);
    if (this.buffer) p = transformIndex(this.buffer.op, p);
    return p;
  }
}
