// Unit tests for web/src/yjs.js, the Yjs document's session: the password extension
// message, what a token says, and the provider's socket driven through a scripted fake —
// refusals stop it until a password is given, other closes retry, 4413 stops, presence
// from awareness, the password message.

import { test } from "node:test";
import assert from "node:assert/strict";
import * as Y from "yjs";
import * as encoding from "lib0/encoding";
import * as decoding from "lib0/decoding";
import * as awarenessProtocol from "y-protocols/awareness";
import { MESSAGE_PASSWORD, YjsSession, passwordMessage, tokenAccess } from "../src/yjs.js";

/** A fake socket: records what the provider sends; the test plays the server. */
class FakeSocket {
  static all = [];
  static OPEN = 1;
  OPEN = 1;
  constructor(url) {
    this.url = new URL(url);
    this.sent = [];
    this.readyState = 0;
    this._onmessage = null;
    FakeSocket.all.push(this);
  }
  // An accessor, as on the browser's WebSocket (the session's subclass wraps it).
  get onmessage() {
    return this._onmessage;
  }
  set onmessage(handler) {
    this._onmessage = handler;
  }
  open() {
    this.readyState = 1;
    this.onopen?.();
  }
  send(data) {
    this.sent.push(new Uint8Array(data));
  }
  close() {
    this.readyState = 3;
  }
  /** The server closes the connection. */
  serverClose(code, reason = "") {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }
  deliver(data) {
    this._onmessage?.({ data });
  }
}

function token(claims) {
  const part = (v) => Buffer.from(JSON.stringify(v)).toString("base64url");
  return `${part({ alg: "HS256", typ: "JWT" })}.${part(claims)}.signature`;
}

function setup(options = {}) {
  FakeSocket.all = [];
  const events = { status: [], refused: [], users: [], password: [], errors: [], access: [], synced: 0 };
  const session = new YjsSession({
    serverUrl: "ws://test/yjs",
    room: "notes",
    WebSocket: FakeSocket,
    on: {
      status: (s, detail) => events.status.push([s, detail]),
      refused: (r) => events.refused.push(r),
      users: (users) => events.users.push(new Map(users)),
      password: (p) => events.password.push(p),
      error: (e) => events.errors.push(e),
      access: (a) => events.access.push(a),
      synced: () => events.synced++,
    },
    ...options,
  });
  return { session, events, last: () => FakeSocket.all[FakeSocket.all.length - 1] };
}

test("the password message is varuint 100 then the password as a lib0 var string", () => {
  assert.deepEqual([...passwordMessage("pw")], [100, 2, 0x70, 0x77]);
  assert.deepEqual([...passwordMessage(null)], [100, 0]);
  const decoder = decoding.createDecoder(passwordMessage("grüße"));
  assert.equal(decoding.readVarUint(decoder), MESSAGE_PASSWORD);
  assert.equal(decoding.readVarString(decoder), "grüße");
});

test("a token's claims: write patterns, read-only, its name; not a JWT is no answer", () => {
  assert.deepEqual(tokenAccess(token({ name: "Bob", read: ["*"] }), "notes"), { readOnly: true, name: "Bob" });
  assert.deepEqual(tokenAccess(token({ read: ["*"], write: ["no*"] }), "notes"), { readOnly: false, name: null });
  assert.deepEqual(tokenAccess(token({ write: ["notes"] }), "notes"), { readOnly: false, name: null });
  // Neither grants: the server refuses (4403); the page does not guess read-only.
  assert.deepEqual(tokenAccess(token({ read: ["other"] }), "notes"), { readOnly: false, name: null });
  assert.equal(tokenAccess("not a token", "notes"), null);
  assert.equal(tokenAccess(null, "notes"), null);
});

test("connects to /yjs/{room} with otp and token; says connected once synced", () => {
  const { session, events, last } = setup({ password: "pw", token: "t0k" });
  session.start();
  const ws = last();
  assert.equal(ws.url.pathname, "/yjs/notes");
  assert.equal(ws.url.searchParams.get("otp"), "pw");
  assert.equal(ws.url.searchParams.get("token"), "t0k");
  ws.open();
  // Sync step 1 goes out first.
  assert.equal(ws.sent[0][0], 0);
  assert.equal(events.synced, 0);
  // The server answers with sync step 2 (its state): synced.
  const serverDoc = new Y.Doc();
  serverDoc.getText("codemirror").insert(0, "hello");
  const encoder = encoding.createEncoder();
  encoding.writeVarUint(encoder, 0);
  encoding.writeVarUint(encoder, 1);
  encoding.writeVarUint8Array(encoder, Y.encodeStateAsUpdate(serverDoc));
  ws.deliver(encoding.toUint8Array(encoder).buffer);
  assert.equal(session.text.toString(), "hello");
  assert.equal(events.synced, 1);
  assert.deepEqual(events.status.at(-1), ["connected", {}]);
  session.stop();
});

test("a refusal stops the provider until a password is given, then it reconnects with it", () => {
  const { session, events, last } = setup();
  session.start();
  const ws = last();
  ws.open();
  ws.serverClose(4401, "password_required: this document is protected by a password");
  assert.equal(events.refused.length, 1);
  assert.equal(events.refused[0].kind, "password_required");
  assert.equal(events.refused[0].about, "password");
  assert.equal(events.status.at(-1)[0], "refused");
  assert.equal(session.provider.shouldConnect, false, "no retry of its own");
  session.reconnectNow();
  assert.equal(FakeSocket.all.length, 1, "Retry does not bypass the refusal");

  session.usePassword("guess");
  assert.equal(FakeSocket.all.length, 2);
  assert.equal(last().url.searchParams.get("otp"), "guess");
  last().open();
  last().serverClose(4401, "wrong_password: that is not the password");
  assert.equal(events.refused[1].kind, "wrong_password");

  session.usePassword("right");
  last().open();
  last().serverClose(4429, "too_many_guesses: wait a minute");
  assert.equal(events.refused[2].kind, "too_many_guesses");
  assert.equal(session.provider.shouldConnect, false);
  session.stop();
});

test("a token refusal (4403 not_granted, 4401 token_required) is about the token", () => {
  const { session, events, last } = setup({ token: token({ read: ["other"] }) });
  session.start();
  last().open();
  last().serverClose(4403, "not_granted: your token does not cover y:notes");
  assert.equal(events.refused[0].about, "token");
  assert.equal(events.refused[0].kind, "not_granted");
  assert.equal(events.refused[0].message, "your token does not cover y:notes");
  assert.equal(events.errors.length, 0);
  session.stop();
});

test("other closes retry with backoff and say why", () => {
  const { session, events, last } = setup();
  session.start();
  last().open();
  last().serverClose(4503, "the document is moving");
  assert.equal(session.provider.shouldConnect, true);
  assert.equal(events.refused.length, 0);
  assert.deepEqual(events.errors.map((e) => e.code), [4503]);
  const [status, detail] = events.status.at(-1);
  assert.equal(status, "disconnected");
  assert.ok(detail.retryInMs > 0 && detail.retryInMs <= 10000);
  session.stop();
});

test("Set password sends the extension frame on the open socket, and is refused offline", () => {
  const { session, events, last } = setup();
  assert.equal(session.setPassword("secret"), false, "not connected yet");
  session.start();
  const ws = last();
  ws.open();
  const before = ws.sent.length;
  assert.equal(session.setPassword("secret"), true);
  assert.deepEqual([...ws.sent[before]], [...passwordMessage("secret")]);
  assert.deepEqual(events.password, ["secret"]);
  assert.equal(session.provider.params.otp, "secret", "reconnects carry the new password");
  session.setPassword(null);
  assert.deepEqual([...ws.sent.at(-1)], [100, 0]);
  assert.equal(session.provider.params.otp, undefined);
  assert.deepEqual(events.password, ["secret", null]);
  session.stop();
});

test("presence: our name and colour in awareness, others in the user list", () => {
  const { session, events, last } = setup();
  session.setInfo({ name: "Alice", hue: 200 });
  const mine = session.awareness.getLocalState().user;
  assert.equal(mine.name, "Alice");
  assert.equal(mine.hue, 200);
  assert.match(mine.color, /^hsl\(200 /);
  assert.match(mine.colorLight, /^hsl\(200 .*\/ 0\.3\)$/);

  session.start();
  last().open();
  const other = new Y.Doc();
  const theirs = new awarenessProtocol.Awareness(other);
  theirs.setLocalStateField("user", { name: "Bob", hue: 20, color: "#f00" });
  const encoder = encoding.createEncoder();
  encoding.writeVarUint(encoder, 1);
  encoding.writeVarUint8Array(encoder, awarenessProtocol.encodeAwarenessUpdate(theirs, [other.clientID]));
  last().deliver(encoding.toUint8Array(encoder).buffer);
  assert.deepEqual(events.users.at(-1).get(other.clientID), { name: "Bob", hue: 20, color: null });
  theirs.destroy();
  session.stop();
});

test("a read-only token makes the session read-only and names the user", () => {
  const { session, events } = setup({ token: token({ name: "Reader", read: ["*"] }) });
  session.start();
  assert.equal(session.readOnly, true);
  assert.deepEqual(events.access, [{ readOnly: true, name: "Reader" }]);
  session.setInfo({ name: "Someone else", hue: 1 });
  assert.equal(session.awareness.getLocalState().user.name, "Reader");
  session.stop();
});

test("a new name in the same colour changes the colour string, so others redraw the caret's label", () => {
  const { session } = setup();
  session.setInfo({ name: "Alice", hue: 100 });
  const first = session.awareness.getLocalState().user.color;
  session.setInfo({ name: "Alicia", hue: 100 });
  const second = session.awareness.getLocalState().user.color;
  assert.notEqual(second, first);
  assert.equal(second.replace(" / 1)", ")"), first, "the same colour");
  session.setInfo({ name: "Ali", hue: 100 });
  assert.equal(session.awareness.getLocalState().user.color, first);
  session.setInfo({ name: "Ali", hue: 100 });
  assert.equal(session.awareness.getLocalState().user.color, first, "no change without a new name");
  session.stop();
});

test("leaving clears our awareness state for the others; setInfo brings it back", () => {
  const { session } = setup();
  session.setInfo({ name: "Alice", hue: 100 });
  session.leave();
  assert.equal(session.awareness.getLocalState(), null);
  session.setInfo({ name: "Alice", hue: 100 });
  assert.equal(session.awareness.getLocalState().user.name, "Alice");
  session.stop();
});

test("the token's patterns name a Yjs document y:<room>", () => {
  const { session } = setup({ token: token({ read: ["y:*"], write: ["notes"] }) });
  assert.equal(session.readOnly, true, "write: notes is the OT document");
  session.stop();
  const other = setup({ token: token({ write: ["y:no*"] }) });
  assert.equal(other.session.readOnly, false);
  other.session.stop();
});

test("a 4413 close stops the provider (a reconnect would send the update again) and hands the text over", () => {
  const { session, events, last } = setup();
  const tooLarge = [];
  session.on.tooLarge = (e) => tooLarge.push(e);
  session.start();
  last().open();
  session.text.insert(0, "big");
  last().serverClose(4413, "Yjs update larger than 1024 KiB");
  assert.equal(session.provider.shouldConnect, false);
  assert.deepEqual(tooLarge, [{ message: "Yjs update larger than 1024 KiB", text: "big" }]);
  assert.deepEqual(events.status.at(-1), ["disconnected", { stopped: true }]);
  assert.equal(events.refused.length, 0);
  session.stop();
});

test("a restore replaces only the middle that differs, never half of an emoji, as one tracked edit", () => {
  const { session } = setup();
  const updates = [];
  session.doc.on("update", (u) => updates.push(u));
  for (const [from, to] of [
    ["", "héllo"],
    ["héllo wörld", "héllo wörld"],
    ["abcdef", "abXYef"],
    ["a😀b", "a😁b"],
    ["😀😀", "😀"],
    ["keep this", ""],
    ["x", "x😀x"],
  ]) {
    session.text.delete(0, session.text.length);
    session.text.insert(0, from);
    const before = updates.length;
    session.replaceText(to);
    assert.equal(session.text.toString(), to, `${JSON.stringify(from)} -> ${JSON.stringify(to)}`);
    assert.ok(updates.length - before <= 1, "one transaction");
  }
  session.text.delete(0, session.text.length);
  session.text.insert(0, "old");
  session.undoManager.stopCapturing();
  session.replaceText("new");
  session.undoManager.undo();
  assert.equal(session.text.toString(), "old", "undo takes the restore back");
  session.stop();
});

test("a read-only session refuses a restore and changes nothing", () => {
  const { session } = setup({ token: token({ name: "Reader", read: ["*"] }) });
  session.start();
  session.text.insert(0, "as it is");
  assert.throws(() => session.replaceText("other"), /read/);
  assert.equal(session.text.toString(), "as it is");
  session.stop();
});
