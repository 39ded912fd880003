// A stand-in for the codraft server, for developing and testing the web client without
// cargo: serves web/dist/ and speaks docs/protocol.md (Identity, Joined, History with `seq`,
// resume, Language, UserInfo, UserCursor, Error + close codes) with documents in memory.
// It is not the server: it exists to exercise the client's reconnect and exactly-once paths.
// Yjs documents too: `/yjs/{room}` speaks y-websocket (sync + awareness) with codraft's
// password message (varuint 100, varString) and 4401 refusals, rooms in memory; a `token=`
// whose claims (not checked) grant `read` but not `write` has its updates dropped.
//
//   PORT=3032 node web/tests/mock-server.mjs
//   CHAOS=0.2      drop the author's socket right after committing an edit, before its
//                  acknowledgement goes out, with this probability (exercises resume + seq)
//   NO_RESUME=1    refuse every resume (exercises Joined.resumed = false)

import http from "node:http";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { WebSocketServer } from "ws";
import * as Y from "yjs";
import * as syncProtocol from "y-protocols/sync";
import * as awarenessProtocol from "y-protocols/awareness";
import * as encoding from "lib0/encoding";
import * as decoding from "lib0/decoding";
import { TextOperation, transform, transformIndex, cpLength } from "../src/ot.js";

const DIST = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "dist");
const PORT = Number(process.env.PORT ?? 3032);
const CHAOS = Number(process.env.CHAOS ?? 0);
const NO_RESUME = process.env.NO_RESUME === "1";
const DOC_ID = /^[A-Za-z0-9._-]{1,256}$/;
const CLIENT_ID = /^[A-Za-z0-9_-]{1,64}$/;

/** id → {text, log: [{id, op, client, seq}], lastSeq: Map, language, conns: Set} */
const documents = new Map();
const started = Math.floor(Date.now() / 1000);

function doc(id) {
  if (!documents.has(id)) {
    documents.set(id, { text: "", log: [], lastSeq: new Map(), language: null, conns: new Set() });
  }
  return documents.get(id);
}

const TYPES = { ".html": "text/html; charset=utf-8", ".js": "text/javascript", ".css": "text/css" };

const server = http.createServer((req, res) => {
  const url = new URL(req.url, "http://x");
  if (url.pathname.startsWith("/api/text/")) {
    const id = decodeURIComponent(url.pathname.slice(10));
    res.writeHead(200, { "content-type": "text/plain; charset=utf-8" });
    if (id.startsWith("y:")) res.end(yjsRooms.get(id.slice(2))?.doc.getText("codemirror").toString() ?? "");
    else res.end(documents.get(id)?.text ?? "");
    return;
  }
  if (url.pathname === "/api/stats") {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ start_time: started, num_documents: documents.size, database_size: 0 }));
    return;
  }
  const file = url.pathname === "/" ? "index.html" : url.pathname.slice(1);
  if (!["index.html", "app.js", "app.css"].includes(file)) {
    res.writeHead(404).end("not found");
    return;
  }
  res.writeHead(200, { "content-type": TYPES[path.extname(file)] });
  fs.createReadStream(path.join(DIST, file)).pipe(res);
});

const wss = new WebSocketServer({ noServer: true });
server.on("upgrade", (req, socket, head) => {
  const url = new URL(req.url, "http://x");
  if (url.pathname.startsWith("/yjs/")) {
    const name = decodeURIComponent(url.pathname.slice(5));
    if (!DOC_ID.test(name)) {
      socket.end("HTTP/1.1 400 Bad Request\r\n\r\n");
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => joinYjs(ws, yjsRoom(name), url.searchParams));
    return;
  }
  const id = decodeURIComponent(url.pathname.replace(/^\/api\/socket\//, ""));
  if (!url.pathname.startsWith("/api/socket/") || !DOC_ID.test(id)) {
    socket.end("HTTP/1.1 400 Bad Request\r\n\r\n");
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => join(ws, doc(id), url.searchParams));
});

function send(conn, msg) {
  if (conn.ws.readyState === 1) conn.ws.send(JSON.stringify(msg));
}

function fail(conn, code, message, close = true) {
  send(conn, { Error: { code, message } });
  if (close) conn.ws.close(code, message.slice(0, 100));
}

function join(ws, d, params) {
  const client = params.get("client");
  const conn = {
    ws,
    id: Math.floor(Math.random() * 2 ** 53),
    client: client && CLIENT_ID.test(client) ? client : null,
    info: null,
    cursor: null,
    base: 0, // log revision held at connection revision 0
    sent: 0, // entries sent on this connection
  };
  send(conn, { Identity: conn.id });
  const resume = params.has("resume") ? Number(params.get("resume")) : null;
  const canResume = conn.client && resume !== null && !NO_RESUME && resume >= 0 && resume <= d.log.length;
  if (process.env.VERBOSE) console.log(`join ${conn.client} resume=${resume} -> ${canResume ? "resumed" : "fresh"}`);
  if (canResume) {
    conn.base = resume;
    if (conn.client) send(conn, { Joined: { revision: resume, resumed: true, last_seq: d.lastSeq.get(conn.client) ?? 0 } });
    const operations = d.log.slice(resume).map((e) => entryFor(conn, e));
    send(conn, { History: { start: 0, operations } });
    conn.sent = operations.length;
  } else {
    conn.base = d.log.length - 1;
    if (conn.client) send(conn, { Joined: { revision: d.log.length, resumed: false, last_seq: d.lastSeq.get(conn.client) ?? 0 } });
    const whole = d.text === "" ? [] : [d.text];
    send(conn, { History: { start: 0, operations: [{ id: 0, operation: whole }] } });
    conn.sent = 1;
  }
  if (d.language) send(conn, { Language: d.language });
  for (const other of d.conns) {
    if (other.info) send(conn, { UserInfo: { id: other.id, info: other.info } });
    if (other.cursor) send(conn, { UserCursor: { id: other.id, data: other.cursor } });
  }
  d.conns.add(conn);

  ws.on("message", (data) => {
    let msg;
    try {
      msg = JSON.parse(String(data));
    } catch {
      fail(conn, 4400, "That message is not JSON; it was ignored.", false);
      return;
    }
    if (msg.Edit) edit(d, conn, msg.Edit);
    else if (msg.SetLanguage !== undefined) {
      d.language = msg.SetLanguage;
      for (const c of d.conns) send(c, { Language: d.language });
    } else if (msg.ClientInfo) {
      conn.info = msg.ClientInfo;
      for (const c of d.conns) send(c, { UserInfo: { id: conn.id, info: conn.info } });
    } else if (msg.CursorData) {
      conn.cursor = msg.CursorData;
      for (const c of d.conns) send(c, { UserCursor: { id: conn.id, data: conn.cursor } });
    } else fail(conn, 4400, "Unknown message kind; it was ignored.", false);
  });
  ws.on("close", () => {
    d.conns.delete(conn);
    for (const c of d.conns) send(c, { UserInfo: { id: conn.id, info: null } });
  });
}

function entryFor(conn, e) {
  const entry = { id: e.id, operation: e.op.toJSON() };
  if (conn.client && e.client === conn.client) entry.seq = e.seq;
  return entry;
}

function edit(d, conn, { revision, operation, seq }) {
  if (revision > conn.sent) {
    fail(conn, 4416, "That edit is based on a revision this connection was never sent.");
    return;
  }
  if (conn.client && seq !== undefined && seq <= (d.lastSeq.get(conn.client) ?? 0)) return; // already committed
  let op;
  try {
    op = TextOperation.fromJSON(operation);
  } catch {
    fail(conn, 4409, "That edit is not a valid operation.");
    return;
  }
  for (const e of d.log.slice(conn.base + revision)) op = transform(op, e.op)[0];
  if (op.baseLength !== cpLength(d.text)) {
    fail(conn, 4409, "That edit does not fit the document.");
    return;
  }
  d.text = op.apply(d.text);
  const entry = { id: conn.id, op, client: conn.client, seq };
  d.log.push(entry);
  if (conn.client && seq !== undefined) d.lastSeq.set(conn.client, seq);
  for (const c of d.conns) {
    if (c.cursor) {
      c.cursor = {
        cursors: c.cursor.cursors.map((p) => transformIndex(op, p)),
        selections: c.cursor.selections.map(([a, b]) => [transformIndex(op, a), transformIndex(op, b)]),
      };
    }
  }
  if (CHAOS > 0 && Math.random() < CHAOS) {
    d.conns.delete(conn);
    conn.ws.terminate(); // committed, but the acknowledgement never leaves
    console.log(`chaos: dropped ${conn.client ?? conn.id} after committing seq ${seq}`);
  }
  for (const c of d.conns) {
    send(c, { History: { start: c.sent, operations: [entryFor(c, entry)] } });
    c.sent++;
  }
}

// ---- Yjs rooms (y-websocket) -----------------------------------------------------------

/** name → {name, doc, awareness, conns: Map<ws, Set<awareness client id>>, password} */
const yjsRooms = new Map();

function yjsRoom(name) {
  if (yjsRooms.has(name)) return yjsRooms.get(name);
  const doc = new Y.Doc();
  const awareness = new awarenessProtocol.Awareness(doc);
  awareness.setLocalState(null);
  const r = { name, doc, awareness, conns: new Map(), password: null };
  doc.on("update", (update) => {
    const encoder = encoding.createEncoder();
    encoding.writeVarUint(encoder, 0);
    syncProtocol.writeUpdate(encoder, update);
    yjsBroadcast(r, encoding.toUint8Array(encoder));
  });
  awareness.on("update", ({ added, updated, removed }, origin) => {
    const ids = r.conns.get(origin);
    if (ids) {
      for (const id of added) ids.add(id);
      for (const id of removed) ids.delete(id);
    }
    const encoder = encoding.createEncoder();
    encoding.writeVarUint(encoder, 1);
    encoding.writeVarUint8Array(encoder, awarenessProtocol.encodeAwarenessUpdate(awareness, added.concat(updated, removed)));
    yjsBroadcast(r, encoding.toUint8Array(encoder));
  });
  yjsRooms.set(name, r);
  return r;
}

/** Whether a JWT's claims (unverified: a stand-in) grant document `id` (`y:<room>`) reading but not writing. */
function tokenReadOnly(token, id) {
  if (!token) return false;
  try {
    const claims = JSON.parse(Buffer.from(token.split(".")[1], "base64url").toString());
    const covers = (list) => (list ?? []).some((p) => (p.endsWith("*") ? id.startsWith(p.slice(0, -1)) : p === id));
    return !covers(claims.write) && covers(claims.read);
  } catch {
    return false;
  }
}

function yjsBroadcast(r, bytes, except = null) {
  for (const ws of r.conns.keys()) if (ws !== except && ws.readyState === 1) ws.send(bytes);
}

function joinYjs(ws, r, params) {
  const otp = params.get("otp");
  if (r.password && otp !== r.password) {
    // Accepted, then closed, as the server refuses (docs/protocol.md, Refusals).
    ws.close(4401, otp ? "wrong_password: that is not this document's password" : "password_required: this document is protected by a password");
    return;
  }
  const readOnly = tokenReadOnly(params.get("token"), `y:${r.name}`);
  r.conns.set(ws, new Set());
  const step1 = encoding.createEncoder();
  encoding.writeVarUint(step1, 0);
  syncProtocol.writeSyncStep1(step1, r.doc);
  ws.send(encoding.toUint8Array(step1));
  const states = [...r.awareness.getStates().keys()];
  if (states.length) {
    const encoder = encoding.createEncoder();
    encoding.writeVarUint(encoder, 1);
    encoding.writeVarUint8Array(encoder, awarenessProtocol.encodeAwarenessUpdate(r.awareness, states));
    ws.send(encoding.toUint8Array(encoder));
  }
  ws.on("message", (data) => {
    try {
      const decoder = decoding.createDecoder(new Uint8Array(data));
      const type = decoding.readVarUint(decoder);
      if (type === 0) {
        // A reader's sync step 2 and updates are dropped; its step 1 is answered.
        if (readOnly && decoding.peekVarUint(decoder) !== 0) return;
        const encoder = encoding.createEncoder();
        encoding.writeVarUint(encoder, 0);
        syncProtocol.readSyncMessage(decoder, encoder, r.doc, ws);
        if (encoding.length(encoder) > 1) ws.send(encoding.toUint8Array(encoder));
      } else if (type === 1) {
        awarenessProtocol.applyAwarenessUpdate(r.awareness, decoding.readVarUint8Array(decoder), ws);
      } else if (type === 100 && !readOnly) {
        r.password = decoding.readVarString(decoder) || null;
      }
    } catch (err) {
      console.warn(`yjs: bad frame: ${err.message}`);
      ws.close(4400, "bad frame");
    }
  });
  ws.on("close", () => {
    const ids = r.conns.get(ws);
    r.conns.delete(ws);
    if (ids?.size) awarenessProtocol.removeAwarenessStates(r.awareness, [...ids], null);
  });
}

server.listen(PORT, "127.0.0.1", () => console.log(`mock codraft server on http://127.0.0.1:${PORT}`));
