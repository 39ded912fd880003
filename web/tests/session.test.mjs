// Unit tests for web/src/session.js: the exactly-once extension's client side, driven
// through a scripted fake WebSocket — the URL parameters, seq numbering, resume after a
// lost acknowledgement, re-sending, and the reset when the server cannot resume.

import { test } from "node:test";
import assert from "node:assert/strict";
import { Session } from "../src/session.js";
import { TextOperation, diffOperation } from "../src/ot.js";

/** A fake socket: records what the client sends; the test plays the server. */
class FakeSocket {
  static all = [];
  constructor(url) {
    this.url = new URL(url);
    this.sent = [];
    this.readyState = 0;
    FakeSocket.all.push(this);
  }
  open() {
    this.readyState = 1;
    this.onopen?.();
  }
  send(data) {
    this.sent.push(JSON.parse(data));
  }
  close(code = 1000, reason = "") {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }
  deliver(...msgs) {
    for (const msg of msgs) this.onmessage?.({ data: JSON.stringify(msg) });
  }
  edits() {
    return this.sent.filter((m) => m.Edit).map((m) => m.Edit);
  }
}

/** An editor adapter over a plain string. */
function fakeEditor() {
  return {
    text: "",
    getText() {
      return this.text;
    },
    applyRemote(op) {
      this.text = op.apply(this.text);
    },
    replaceText(text) {
      this.text = text;
    },
    cursorData: () => ({ cursors: [0], selections: [] }),
  };
}

function setup() {
  FakeSocket.all = [];
  const editor = fakeEditor();
  const events = { lost: [], status: [], errors: [] };
  const session = new Session({
    socketUrl: "ws://test/api/socket/doc",
    clientId: "tab1",
    editor,
    WebSocket: FakeSocket,
    on: {
      lost: (e) => events.lost.push(e),
      status: (s) => events.status.push(s),
      error: (e) => events.errors.push(e),
    },
  });
  /** Types at the end of the text, as the editor would report it. */
  const type = (s) => {
    const op = diffOperation(editor.text, editor.text + s);
    editor.text += s;
    session.localEdit(op);
  };
  return { session, editor, events, type, socket: () => FakeSocket.all.at(-1) };
}

/** Joins as a fresh client to a document whose text "abc" is log revision 5. */
function freshJoin(ctx, { lastSeq = 0 } = {}) {
  ctx.session.start();
  const ws = ctx.socket();
  ws.open();
  ws.deliver(
    { Identity: 11 },
    { Joined: { revision: 5, resumed: false, last_seq: lastSeq } },
    { History: { start: 0, operations: [{ id: 0, operation: ["abc"] }] } },
  );
  return ws;
}

/** Drops the connection and reconnects at once. */
function reconnect(ctx) {
  ctx.socket().close(1006);
  ctx.session.reconnectNow();
  const ws = ctx.socket();
  ws.open();
  return ws;
}

test("a fresh join sends client= without resume and loads the text", () => {
  const ctx = setup();
  const ws = freshJoin(ctx);
  assert.equal(ws.url.searchParams.get("client"), "tab1");
  assert.equal(ws.url.searchParams.has("resume"), false);
  assert.equal(ctx.editor.text, "abc");
  assert.equal(ctx.session.heldLogRevision, 5);
  assert.equal(ctx.events.status.at(-1), "connected");
  ctx.session.stop();
});

test("edits carry seq 1, 2, 3 and one is outstanding at a time", () => {
  const ctx = setup();
  const ws = freshJoin(ctx);
  ctx.type("d");
  ctx.type("e");
  ctx.type("f");
  assert.deepEqual(ws.edits(), [{ revision: 1, operation: [3, "d"], seq: 1 }]);
  ws.deliver({ History: { start: 1, operations: [{ id: 11, operation: [3, "d"], seq: 1 }] } });
  assert.deepEqual(ws.edits()[1], { revision: 2, operation: [4, "ef"], seq: 2 });
  assert.equal(ctx.session.heldLogRevision, 6);
  ctx.session.stop();
});

test("a lost acknowledgement arrives on resume and nothing is sent twice", () => {
  const ctx = setup();
  freshJoin(ctx);
  ctx.type("d"); // seq 1, committed, but the connection drops before the ack
  const ws = reconnect(ctx);
  assert.equal(ws.url.searchParams.get("resume"), "5");
  ws.deliver(
    { Identity: 12 },
    { Joined: { revision: 5, resumed: true, last_seq: 1 } },
    { History: { start: 0, operations: [{ id: 11, operation: [3, "d"], seq: 1 }] } },
  );
  assert.deepEqual(ws.edits(), []);
  assert.equal(ctx.editor.text, "abcd");
  assert.equal(ctx.session.ot.state, "Synchronized");
  assert.equal(ctx.session.heldLogRevision, 6);
  ctx.type("e");
  assert.deepEqual(ws.edits(), [{ revision: 1, operation: [4, "e"], seq: 2 }]);
  ctx.session.stop();
});

test("an uncommitted edit is re-sent after the first History, transformed, same seq", () => {
  const ctx = setup();
  freshJoin(ctx);
  ctx.type("d"); // seq 1, never reached the server
  ctx.type("e"); // buffered
  const ws = reconnect(ctx);
  ws.deliver({ Identity: 12 }, { Joined: { revision: 5, resumed: true, last_seq: 0 } });
  assert.deepEqual(ws.edits(), [], "nothing is sent before the first History");
  ws.deliver({ History: { start: 0, operations: [{ id: 99, operation: ["X", 3] }] } });
  assert.equal(ctx.editor.text, "Xabcde");
  assert.deepEqual(ws.edits(), [{ revision: 1, operation: [4, "d"], seq: 1 }]);
  ws.deliver({ History: { start: 1, operations: [{ id: 12, operation: [4, "d"], seq: 1 }] } });
  assert.deepEqual(ws.edits()[1], { revision: 2, operation: [5, "e"], seq: 2 });
  ctx.session.stop();
});

test("when the server cannot resume, committed edits stay and the rest are reported lost", () => {
  const ctx = setup();
  freshJoin(ctx);
  ctx.type("d"); // seq 1: committed (last_seq 1)
  ctx.type("e"); // buffer: cannot be placed on a text others changed
  const ws = reconnect(ctx);
  ws.deliver(
    { Identity: 12 },
    { Joined: { revision: 40, resumed: false, last_seq: 1 } },
    { History: { start: 0, operations: [{ id: 0, operation: ["Zabcd"] }] } },
  );
  assert.equal(ctx.editor.text, "Zabcd");
  assert.equal(ctx.events.lost.length, 1);
  assert.equal(ctx.events.lost[0].count, 1);
  assert.equal(ctx.events.lost[0].text, "abcde");
  assert.deepEqual(ws.edits(), []);
  assert.equal(ctx.session.heldLogRevision, 40);
  ctx.type("!");
  assert.deepEqual(ws.edits(), [{ revision: 1, operation: [5, "!"], seq: 2 }]);
  ctx.session.stop();
});

test("when the server cannot resume but nothing else changed, pending edits are kept", () => {
  const ctx = setup();
  freshJoin(ctx);
  ctx.type("d"); // seq 1: committed
  ctx.type("e"); // buffered
  const ws = reconnect(ctx);
  ws.deliver(
    { Identity: 12 },
    { Joined: { revision: 6, resumed: false, last_seq: 1 } },
    { History: { start: 0, operations: [{ id: 0, operation: ["abcd"] }] } },
  );
  assert.equal(ctx.events.lost.length, 0);
  assert.equal(ctx.editor.text, "abcde");
  assert.deepEqual(ws.edits(), [{ revision: 1, operation: [4, "e"], seq: 2 }]);
  ctx.session.stop();
});

test("a reloaded tab continues numbering after the server's last_seq", () => {
  const ctx = setup();
  const ws = freshJoin(ctx, { lastSeq: 41 });
  ctx.type("d");
  assert.equal(ws.edits()[0].seq, 42);
  ctx.session.stop();
});

test("close code 4409 drops the refused edit and rejoins without resume", () => {
  const ctx = setup();
  freshJoin(ctx);
  ctx.type("d");
  const old = ctx.socket();
  old.deliver({ Error: { code: 4409, message: "That edit does not fit the document." } });
  old.close(4409, "edit does not fit");
  assert.deepEqual(ctx.events.errors.map((e) => e.code), [4409]);
  ctx.session.reconnectNow();
  const ws = ctx.socket();
  ws.open();
  assert.equal(ws.url.searchParams.has("resume"), false);
  ws.deliver(
    { Identity: 12 },
    { Joined: { revision: 5, resumed: false, last_seq: 0 } },
    { History: { start: 0, operations: [{ id: 0, operation: ["abc"] }] } },
  );
  assert.equal(ctx.editor.text, "abc");
  assert.equal(ctx.events.lost[0].count, 1);
  assert.deepEqual(ws.edits(), []);
  ctx.session.stop();
});

test("remote cursors arrive on the server's text and move through local edits", () => {
  const ctx = setup();
  const ws = freshJoin(ctx);
  ctx.session.localEdit(TextOperation.fromJSON(["__", 3]));
  ctx.editor.text = "__abc";
  ws.deliver({ UserInfo: { id: 7, info: { name: "Bob", hue: 10 } } });
  ws.deliver({ UserCursor: { id: 7, data: { cursors: [1], selections: [[0, 3]] } } });
  assert.deepEqual(ctx.session.cursors.get(7), { cursors: [3], selections: [[2, 5]] });
  ws.deliver({ History: { start: 1, operations: [{ id: 7, operation: ["Q", 3] }] } });
  assert.deepEqual(ctx.session.cursors.get(7), { cursors: [4], selections: [[3, 6]] });
  ws.deliver({ UserInfo: { id: 7, info: null } });
  assert.equal(ctx.session.cursors.has(7), false);
  ctx.session.stop();
});

test("a gap in the history reconnects and resumes instead of discarding edits", () => {
  const ctx = setup();
  const ws = freshJoin(ctx);
  ctx.type("d");
  ws.deliver({ History: { start: 3, operations: [{ id: 99, operation: ["X", 4] }] } });
  assert.equal(ws.readyState, 3);
  ctx.session.reconnectNow();
  const next = ctx.socket();
  assert.equal(next.url.searchParams.get("resume"), "5");
  assert.equal(ctx.session.pendingChanges, 1);
  assert.equal(ctx.events.lost.length, 0);
  ctx.session.stop();
});

test("a password refusal stops reconnecting until the page gives a password, which is sent as otp", () => {
  const refused = [];
  FakeSocket.all = [];
  const session = new Session({
    socketUrl: "ws://test/api/socket/doc",
    clientId: "tab1",
    editor: fakeEditor(),
    WebSocket: FakeSocket,
    on: { refused: (r) => refused.push(r) },
  });
  session.start();
  const first = FakeSocket.all[0];
  assert.equal(first.url.searchParams.get("otp"), null);
  first.open();
  first.deliver({ Refused: { code: 4401, error: "password_required", message: "protected" } });
  first.close(4401, "password_required: protected");
  assert.equal(refused.length, 1);
  assert.equal(refused[0].kind, "password_required");
  assert.equal(refused[0].about, "password");
  assert.equal(session.retryTimer, null, "no reconnect is scheduled after a refusal");
  session.reconnectNow();
  assert.equal(FakeSocket.all.length, 1, "reconnectNow must not retry a refused tab");

  session.usePassword("pw");
  assert.equal(FakeSocket.all.length, 2);
  assert.equal(FakeSocket.all[1].url.searchParams.get("otp"), "pw");
  FakeSocket.all[1].close(4401, "wrong_password: wrong password for this document");
  assert.equal(refused[1].kind, "wrong_password");
  assert.equal(FakeSocket.all.length, 2);
  session.stop();
});

test("a read-only connection is announced and local edits are not sent", () => {
  const access = [];
  FakeSocket.all = [];
  const editor = fakeEditor();
  const session = new Session({
    socketUrl: "ws://test/api/socket/doc",
    clientId: "tab1",
    editor,
    WebSocket: FakeSocket,
    on: { access: (a) => access.push(a) },
  });
  session.start();
  const ws = FakeSocket.all[0];
  ws.open();
  ws.deliver(
    { Access: { read_only: true, name: "Bob" } },
    { Identity: 7 },
    { Joined: { revision: 1, resumed: false, last_seq: 0, read_only: true } },
    { History: { start: 0, operations: [{ id: 1, operation: ["text"] }] } },
  );
  assert.deepEqual(access[0], { readOnly: true, name: "Bob" });
  session.localEdit(TextOperation.fromJSON([4, "!"]));
  assert.deepEqual(ws.edits(), []);
  assert.equal(session.pendingChanges, 0);
  session.stop();
});

test("a remote edit that moves our caret, or that the server would move differently, re-sends our cursor", async () => {
  const ctx = setup();
  const ws = freshJoin(ctx);
  let caret = 3; // at the end of "abc"
  ctx.editor.cursorData = () => ({ cursors: [caret], selections: [] });
  const sentCursors = () => ws.sent.filter((m) => m.CursorData).map((m) => m.CursorData.cursors);
  const settle = () => new Promise((r) => setTimeout(r, 60));
  await settle();
  const before = sentCursors().length;
  // (1) An insert before our caret moves it (3 -> 4): the server may have read our last
  // position against the newer text, so the new one is sent.
  const moveWith = (op) => {
    const apply = ctx.editor.applyRemote.bind(ctx.editor);
    ctx.editor.applyRemote = (o) => {
      apply(o);
      caret = op(caret);
      ctx.editor.applyRemote = apply;
    };
  };
  moveWith((c) => c + 1);
  ws.deliver({ History: { start: 1, operations: [{ id: 99, operation: ["X", 3] }] } });
  await settle();
  assert.deepEqual(sentCursors().slice(before), [[4]], "the moved caret was not re-sent");
  // (2) An insert right at our caret: the editor keeps the caret before it, the server
  // would move it after; ours is sent to correct the server.
  ws.deliver({ History: { start: 2, operations: [{ id: 99, operation: [4, "Y"] }] } });
  await settle();
  assert.deepEqual(sentCursors().slice(before), [[4], [4]], "the server's idea of our caret was not corrected");
  // (3) An edit after our caret changes nothing and sends nothing.
  ws.deliver({ History: { start: 3, operations: [{ id: 99, operation: [5, "Z"] }] } });
  await settle();
  assert.equal(sentCursors().length, before + 2);
  ctx.session.stop();
});
