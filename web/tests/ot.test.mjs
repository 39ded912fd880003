// Unit tests for web/src/ot.js: normal form, apply/compose/transform laws on random
// operations (astral characters included), the server's cursor transform, UTF-16 <-> code
// point conversion, and the client state machine converging against a simulated server.
// Run with `node --test web/tests/`.

import { test } from "node:test";
import assert from "node:assert/strict";
import {
  TextOperation,
  transform,
  transformIndex,
  diffOperation,
  cpLength,
  utf16ToCp,
  cpToUtf16,
  cpToUtf16Many,
  OTClient,
} from "../src/ot.js";

/** A small seeded PRNG (mulberry32) so failures reproduce. */
function rng(seed) {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const ALPHABET = ["a", "b", "c", " ", "\n", "é", "ß", "中", "🎉", "😀", "𝄞"];

function randomText(rand, max) {
  const n = Math.floor(rand() * max);
  let s = "";
  for (let i = 0; i < n; i++) s += ALPHABET[Math.floor(rand() * ALPHABET.length)];
  return s;
}

/** A random operation on `text`. */
function randomOp(rand, text) {
  const op = new TextOperation();
  let left = cpLength(text);
  while (left > 0) {
    const n = 1 + Math.floor(rand() * Math.min(left, 5));
    const r = rand();
    if (r < 0.2) op.insert(randomText(rand, 4));
    else if (r < 0.45) op.delete(n);
    else op.retain(n);
    if (r >= 0.2) left -= n;
  }
  if (rand() < 0.4) op.insert(randomText(rand, 4));
  return op;
}

function isNormal(ops) {
  for (let i = 0; i < ops.length; i++) {
    const p = ops[i];
    if (p === 0 || p === "") return false;
    const q = ops[i + 1];
    if (q === undefined) continue;
    if (typeof p === typeof q && (typeof p === "string" || Math.sign(p) === Math.sign(q))) return false;
    if (typeof p === "number" && p < 0 && typeof q === "string") return false;
  }
  return true;
}

test("normalisation puts an insert before a delete and merges parts", () => {
  assert.deepEqual(TextOperation.fromJSON([1, -1, "e", 3]).toJSON(), [1, "e", -1, 3]);
  assert.deepEqual(TextOperation.fromJSON([1, 2, 0, "", "a", "b", -1, -2]).toJSON(), [3, "ab", -3]);
  assert.deepEqual(new TextOperation().insert("a").delete(1).insert("b").toJSON(), ["ab", -1]);
  assert.deepEqual(new TextOperation().delete(2).insert("x").retain(1).toJSON(), ["x", -2, 1]);
  assert.deepEqual(TextOperation.fromJSON([]).toJSON(), []);
  const op = TextOperation.fromJSON([2, "🎉", -1]);
  assert.equal(op.baseLength, 3);
  assert.equal(op.targetLength, 3);
  assert.ok(TextOperation.fromJSON([5]).isNoop());
  assert.ok(!op.isNoop());
});

test("fromJSON rejects what is not an operation", () => {
  assert.throws(() => TextOperation.fromJSON("abc"));
  assert.throws(() => TextOperation.fromJSON([1.5]));
  assert.throws(() => TextOperation.fromJSON([null]));
  assert.throws(() => TextOperation.fromJSON([{}]));
});

test("apply counts code points", () => {
  const text = "h🎉llo";
  assert.equal(TextOperation.fromJSON([1, -1, "é", 3]).apply(text), "héllo");
  assert.equal(TextOperation.fromJSON([5, " 🎉"]).apply("héllo"), "héllo 🎉");
  assert.throws(() => TextOperation.fromJSON([6]).apply(text));
  assert.throws(() => TextOperation.fromJSON([4]).apply(text));
});

test("random operations stay normalised and apply/compose agree", () => {
  const rand = rng(1);
  for (let i = 0; i < 2000; i++) {
    const text = randomText(rand, 30);
    const a = randomOp(rand, text);
    const mid = a.apply(text);
    const b = randomOp(rand, mid);
    assert.ok(isNormal(a.ops), JSON.stringify(a.ops));
    assert.equal(cpLength(mid), a.targetLength);
    const ab = a.compose(b);
    assert.ok(isNormal(ab.ops), JSON.stringify(ab.ops));
    assert.equal(ab.apply(text), b.apply(mid));
    // The wire form round-trips.
    assert.deepEqual(TextOperation.fromJSON(JSON.parse(JSON.stringify(ab))).ops, ab.ops);
  }
});

test("transform converges (TP1) on random operations with astral characters", () => {
  const rand = rng(2);
  for (let i = 0; i < 3000; i++) {
    const text = randomText(rand, 30);
    const a = randomOp(rand, text);
    const b = randomOp(rand, text);
    const [a1, b1] = transform(a, b);
    assert.ok(isNormal(a1.ops) && isNormal(b1.ops));
    const viaA = b1.apply(a.apply(text));
    const viaB = a1.apply(b.apply(text));
    assert.equal(viaA, viaB, `text=${JSON.stringify(text)} a=${JSON.stringify(a)} b=${JSON.stringify(b)}`);
  }
});

test("transform puts the first operation's insert first on a tie", () => {
  const a = TextOperation.fromJSON([1, "A", 1]);
  const b = TextOperation.fromJSON([1, "B", 1]);
  const [a1, b1] = transform(a, b);
  assert.equal(b1.apply(a.apply("xy")), "xABy");
  assert.equal(a1.apply(b.apply("xy")), "xABy");
  assert.throws(() => transform(TextOperation.fromJSON([1]), TextOperation.fromJSON([2])));
});

test("transformIndex matches the server's cursor transform", () => {
  const op = (parts) => TextOperation.fromJSON(parts);
  assert.equal(transformIndex(op([2, "ab", 3]), 2), 4); // insert at the cursor pushes it
  assert.equal(transformIndex(op([2, "ab", 3]), 1), 1);
  assert.equal(transformIndex(op([2, "ab", 3]), 5), 7);
  assert.equal(transformIndex(op([1, -3, 1]), 2), 1); // inside a delete: to its start
  assert.equal(transformIndex(op([1, -3, 1]), 5), 2);
  assert.equal(transformIndex(op([5, "🎉"]), 5), 6); // insert at the end, astral = 1
  assert.equal(transformIndex(op(["x", -2, 3]), 0), 1);
  // Agrees with where a marker character travels, on random ops.
  const rand = rng(3);
  for (let i = 0; i < 500; i++) {
    const text = randomText(rand, 20);
    const o = randomOp(rand, text);
    const pos = Math.floor(rand() * (cpLength(text) + 1));
    const moved = transformIndex(o, pos);
    assert.ok(moved >= 0 && moved <= o.targetLength);
  }
});

test("diffOperation turns one text into the other", () => {
  const rand = rng(4);
  for (let i = 0; i < 500; i++) {
    const a = randomText(rand, 20);
    const b = randomText(rand, 20);
    const op = diffOperation(a, b);
    assert.equal(op.apply(a), b);
    assert.ok(isNormal(op.ops));
  }
  assert.deepEqual(diffOperation("héllo 🎉", "héllo 🎉!").toJSON(), [7, "!"]);
});

test("UTF-16 and code point offsets convert both ways", () => {
  const s = "a🎉b中😀";
  assert.equal(s.length, 7);
  assert.equal(cpLength(s), 5);
  assert.deepEqual([0, 1, 3, 4, 5, 7].map((u) => utf16ToCp(s, u)), [0, 1, 2, 3, 4, 5]);
  assert.equal(utf16ToCp(s, 2), 2); // inside a surrogate pair rounds up
  assert.deepEqual([0, 1, 2, 3, 4, 5].map((c) => cpToUtf16(s, c)), [0, 1, 3, 4, 5, 7]);
  assert.equal(cpToUtf16(s, 99), 7);
  assert.deepEqual(cpToUtf16Many(s, [5, 0, 2, 2, 9]), [7, 0, 3, 3, 7]);
  const rand = rng(5);
  for (let i = 0; i < 300; i++) {
    const t = randomText(rand, 40);
    const n = cpLength(t);
    assert.equal(n, Array.from(t).length);
    for (let c = 0; c <= n; c++) assert.equal(utf16ToCp(t, cpToUtf16(t, c)), c);
  }
});

test("the client state machine moves between its three states", () => {
  const c = new OTClient();
  assert.equal(c.state, "Synchronized");
  const sent = c.applyClient(TextOperation.fromJSON(["a"]));
  assert.deepEqual({ seq: sent.seq, state: c.state }, { seq: 1, state: "AwaitingConfirm" });
  assert.equal(c.applyClient(TextOperation.fromJSON([1, "b"])), null);
  assert.equal(c.applyClient(TextOperation.fromJSON([2, "c"])), null);
  assert.equal(c.state, "AwaitingWithBuffer");
  // "abc" typed in a row is one edit to a person, not three keystrokes.
  assert.equal(c.pendingChanges, 1);
  // A concurrent server insert at 0: ours (outstanding) goes first, as on the server.
  const shown = c.applyServer(TextOperation.fromJSON(["X"]));
  assert.deepEqual(shown.toJSON(), [3, "X"]);
  assert.equal(c.transformIncomingIndex(0), 3);
  assert.ok(c.isAck({ id: 9, seq: 1 }, 7));
  assert.ok(!c.isAck({ id: 7, seq: 2 }, 7));
  assert.ok(c.isAck({ id: 7 }, 7));
  const next = c.serverAck();
  assert.equal(next.seq, 2);
  assert.deepEqual(next.op.toJSON(), [1, "bc", 1]); // "a" + "bc" before "X"
  assert.equal(c.revision, 2);
  c.serverAck();
  assert.equal(c.state, "Synchronized");
});

/**
 * A server that behaves as docs/protocol.md says: an edit based on revision R is transformed
 * against every entry after R (the incoming edit's insert first) and appended.
 */
class SimServer {
  constructor() {
    this.text = "";
    this.log = [];
  }
  receive(clientId, revision, op) {
    for (const entry of this.log.slice(revision)) op = transform(op, entry.op)[0];
    this.text = op.apply(this.text);
    this.log.push({ id: clientId, op });
  }
}

test("clients converge with the server under random interleavings", () => {
  for (let seed = 10; seed < 60; seed++) {
    const rand = rng(seed);
    const server = new SimServer();
    const clients = [0, 1, 2].map((id) => ({ id, ot: new OTClient(), text: "", inbox: 0, outbox: [] }));
    const send = (c, pending) => {
      if (pending) c.outbox.push({ revision: c.ot.revision, op: pending.op });
    };
    for (let step = 0; step < 300; step++) {
      const c = clients[Math.floor(rand() * clients.length)];
      const r = rand();
      if (r < 0.4) {
        const op = randomOp(rand, c.text);
        c.text = op.apply(c.text);
        send(c, c.ot.applyClient(op));
      } else if (r < 0.7 && c.outbox.length) {
        const { revision, op } = c.outbox.shift();
        server.receive(c.id, revision, op);
      } else if (c.inbox < server.log.length) {
        const entry = server.log[c.inbox++];
        if (c.ot.isAck(entry, c.id)) send(c, c.ot.serverAck());
        else c.text = c.ot.applyServer(entry.op).apply(c.text);
      }
    }
    // Drain: deliver everything until quiet.
    for (let busy = true; busy; ) {
      busy = false;
      for (const c of clients) {
        while (c.outbox.length) {
          const { revision, op } = c.outbox.shift();
          server.receive(c.id, revision, op);
          busy = true;
        }
        while (c.inbox < server.log.length) {
          const entry = server.log[c.inbox++];
          if (c.ot.isAck(entry, c.id)) send(c, c.ot.serverAck());
          else c.text = c.ot.applyServer(entry.op).apply(c.text);
          busy = true;
        }
      }
    }
    for (const c of clients) {
      assert.equal(c.ot.state, "Synchronized");
      assert.equal(c.text, server.text, `seed ${seed}, client ${c.id}`);
    }
  }
});

test("unsaved edits count runs of typing, not keystrokes", () => {
  const c = new OTClient();
  let t = 0;
  c.applyClient(TextOperation.fromJSON(["a"]), (t += 100));
  c.applyClient(TextOperation.fromJSON([1, "b"]), (t += 100));
  c.applyClient(TextOperation.fromJSON([2, "c"]), (t += 100));
  assert.equal(c.pendingChanges, 1);
  // Backspace at the end of the run continues it too.
  c.applyClient(TextOperation.fromJSON([2, -1]), (t += 100));
  assert.equal(c.pendingChanges, 1);
  // Typing somewhere else is a second edit; a long pause starts a third.
  c.applyClient(TextOperation.fromJSON(["X", 2]), (t += 100));
  assert.equal(c.pendingChanges, 2);
  c.applyClient(TextOperation.fromJSON([1, "Y", 2]), (t += 5000));
  assert.equal(c.pendingChanges, 3);
  // The acknowledgement leaves the buffer's edits pending.
  c.serverAck();
  assert.equal(c.pendingChanges, 2);
});
