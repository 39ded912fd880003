// What every Yjs scenario shares: its settings from the environment (targets, seed, room),
// a seeded random source, a "peer" (a Y.Doc behind the real y-websocket WebsocketProvider
// over the npm `ws` socket) that records what the server sent it, an edit model that knows
// what the final document must contain, and waits that are bounded and driven by events.
//
// A peer counts one of its own updates as acknowledged once the server sent it back (or a
// later sync from the server carries it): the server commits an update before it applies and
// broadcasts it, so an acknowledged update is durable. Yjs does not emit 'update' for an echo
// of what the doc already holds, so the peer reads the server's sync messages itself (a copy
// of each, applied to a second doc, `echo`) before y-websocket handles them.

import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'
import * as encoding from 'lib0/encoding'
import * as decoding from 'lib0/decoding'
import { EventEmitter } from 'node:events'

// Every provider adds a listener to the process's 'exit' (to clear its awareness state):
// twenty providers are not a leak.
process.setMaxListeners(0)

/** y-protocols message kinds (y-websocket's numbering). */
export const MESSAGE_SYNC = 0
export const MESSAGE_AWARENESS = 1
export const MESSAGE_QUERY_AWARENESS = 3
/** codraft's extension: set (or, with an empty string, remove) the document's password. */
export const MESSAGE_SET_PASSWORD = 100
const SYNC_STEP1 = 0
const SYNC_STEP2 = 1
const SYNC_UPDATE = 2

/** Prints a line of what the scenario does or checks. */
export const say = (...parts) => console.log(...parts)

/** Ends the scenario with a failure: the message, then exit status 1. */
export function fail (message) {
  console.error(`FAIL: ${message}`)
  process.exit(1)
}

/** Fails with `message` (a string or a function making one) unless `condition` holds. */
export function check (condition, message) {
  if (!condition) fail(typeof message === 'function' ? message() : message)
}

/** A small seeded generator (mulberry32): the same SEED replays the same choices. */
export function random (seed) {
  let a = seed >>> 0
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  return {
    next,
    /** An integer in [lo, hi). */
    int: (lo, hi) => lo + Math.floor(next() * (hi - lo)),
    /** An element of a non-empty array. */
    pick: (items) => items[Math.floor(next() * items.length)],
    /** A generator of its own, for one peer. */
    fork: (salt) => random(Math.floor(next() * 4294967296) ^ Math.imul(salt + 1, 0x9e3779b1))
  }
}

/** An integer setting from the environment, or `fallback`. */
export function intEnv (name, fallback) {
  const value = process.env[name]
  if (value === undefined || value === '') return fallback
  const n = Number(value)
  check(Number.isInteger(n) && n >= 0, `${name}=${value} is not a non-negative integer`)
  return n
}

/**
 * A scenario's settings: SEED (random unless given; printed so a failure can be replayed),
 * ROOM (random unless given), GATEWAYS (comma-separated `ws://…/yjs` URLs, loopback only)
 * and the time budget SCRIPT_TIMEOUT_MS after which the scenario fails whatever it is doing.
 */
export function setup (scenario) {
  const seed = process.env.SEED ? Number(process.env.SEED) : Math.floor(Math.random() * 2 ** 31)
  check(Number.isInteger(seed), `SEED=${process.env.SEED} is not an integer`)
  const rng = random(seed)
  // The room is not derived from the seed alone, so a replay against the same server starts
  // from an empty document; ROOM= pins it.
  const room = process.env.ROOM || `${scenario}-${seed}-${Math.random().toString(36).slice(2, 8)}`
  const gateways = (process.env.GATEWAYS || '').split(',').map((g) => g.trim()).filter(Boolean)
  check(gateways.length > 0, 'GATEWAYS must name at least one ws://127.0.0.1:PORT/yjs endpoint')
  for (const g of gateways) {
    const host = new URL(g).hostname
    check(host === '127.0.0.1' || host === 'localhost' || host === '[::1]',
      `GATEWAYS must be loopback addresses, got ${g}`)
  }
  const budget = intEnv('SCRIPT_TIMEOUT_MS', 150000)
  setTimeout(() => fail(`${scenario} did not finish within SCRIPT_TIMEOUT_MS=${budget}`), budget).unref()
  say(`${scenario}: SEED=${seed} ROOM=${room} GATEWAYS=${gateways.join(',')}`)
  say(`  replay: SEED=${seed} in the environment of the cargo test (or of node tests/yjs/${scenario}.mjs)`)
  return { seed, rng, room, gateways }
}

/** Resolves after `ms`: pacing of a workload only, never a wait for something to happen. */
export const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/**
 * Waits until `condition()` holds, re-checking whenever one of `emitters` emits 'change'
 * (checks are coalesced to one per turn of the event loop); rejects after `ms` with what it
 * waited for and, if given, `explain()`.
 */
export function until (emitters, condition, ms, what, explain) {
  return new Promise((resolve, reject) => {
    if (condition()) return resolve()
    let scheduled = false
    const onChange = () => {
      if (scheduled) return
      scheduled = true
      setImmediate(() => {
        scheduled = false
        if (condition()) {
          cleanup()
          resolve()
        }
      })
    }
    const timer = setTimeout(() => {
      cleanup()
      reject(new Error(`timed out after ${ms} ms waiting for ${what}` +
        (explain ? `\n${explain()}` : '')))
    }, ms)
    const cleanup = () => {
      clearTimeout(timer)
      for (const e of emitters) e.off('change', onChange)
    }
    for (const e of emitters) e.on('change', onChange)
  })
}

/** Runs `body`; a thrown error or rejected wait fails the scenario with its message. */
export async function scenario (body) {
  try {
    await body()
  } catch (error) {
    fail(error && error.stack ? error.stack : String(error))
  }
  process.exit(0)
}

/** Close codes and reasons, each once, with how often: `1006 x3, 4401 "why" x1`. */
function closeCodes (closes) {
  const seen = new Map()
  for (const { code, reason } of closes) {
    const key = reason ? `${code} ${JSON.stringify(reason)}` : `${code}`
    seen.set(key, (seen.get(key) ?? 0) + 1)
  }
  return `[${[...seen].map(([k, n]) => `${k} x${n}`).join(', ')}]`
}

/** Whether a state vector `have` covers every clock of `want`. */
function covers (have, want) {
  for (const [client, clock] of want) if ((have.get(client) ?? 0) < clock) return false
  return true
}

/**
 * One collaborator: a Y.Doc with a text, an array and a map, synced by y-websocket's
 * WebsocketProvider through `url` (a gateway's `/yjs` endpoint), and what happened to it.
 */
export class Peer extends EventEmitter {
  /**
   * @param {object} o
   * @param {string} o.url the gateway's `ws://…/yjs` endpoint
   * @param {string} o.room the room (document `y:<room>`)
   * @param {string} o.name a name for messages and the awareness state
   * @param {object} [o.params] URL parameters (`otp`, `token`)
   * @param {boolean} [o.connect] connect at once (default) or only on `connect()`
   * @param {boolean} [o.resync] answer the server's SyncStep1 of a later session with our
   *   state (default, as y-websocket does); false makes a peer that never re-sends what it
   *   sent before, so it cannot repair an update the server lost
   */
  constructor ({ url, room, name, params = {}, connect = true, resync = true }) {
    super()
    this.setMaxListeners(0)
    this.name = name
    this.url = url
    this.doc = new Y.Doc()
    this.text = this.doc.getText('text')
    this.list = this.doc.getArray('list')
    this.map = this.doc.getMap('map')
    /** What the server has sent: its SyncStep2s and updates, applied in order. */
    this.echo = new Y.Doc()
    /** The highest clock per client in the server's SyncStep1s (what it holds). */
    this.serverClocks = new Map()
    /** Server SyncStep1 messages received: one per session the server opened for us. */
    this.sessions = 0
    /** Server SyncStep2 messages received (answers to our SyncStep1). */
    this.step2s = 0
    /** Server awareness messages received. */
    this.awarenessMessages = 0
    /** Closes of a socket not asked for by us: {code, reason}. */
    this.closes = []
    /** The provider's terminal close (a 44xx code: it will not reconnect): {code, reason}. */
    this.refused = null
    /** Socket errors. */
    this.socketErrors = 0
    /** Problems applying what the server sent. */
    this.errors = []
    this.provider = new WebsocketProvider(url, room, this.doc, {
      WebSocketPolyfill: WebSocket,
      params,
      connect: false,
      // In Node, lib0 would otherwise link providers of the same room in this process
      // through a BroadcastChannel, and they would sync without the server.
      disableBc: true
    })
    const changed = () => this.emit('change')
    const handleSync = this.provider.messageHandlers[MESSAGE_SYNC]
    this.provider.messageHandlers[MESSAGE_SYNC] = (encoder, decoder, provider, emitSynced, type) => {
      const peek = decoding.clone(decoder)
      const kind = decoding.readVarUint(peek)
      const payload = decoding.readVarUint8Array(peek)
      if (kind === SYNC_STEP1) {
        this.sessions++
        for (const [client, clock] of Y.decodeStateVector(payload)) {
          if (clock > (this.serverClocks.get(client) ?? 0)) this.serverClocks.set(client, clock)
        }
        if (!resync && this.sessions > 1) {
          // Answer into an encoder nobody sends: the server never gets our state again.
          handleSync(encoding.createEncoder(), decoder, provider, emitSynced, type)
          changed()
          return
        }
      } else if (kind === SYNC_STEP2 || kind === SYNC_UPDATE) {
        if (kind === SYNC_STEP2) this.step2s++
        try {
          Y.applyUpdate(this.echo, payload)
        } catch (error) {
          this.errors.push(`server sent an update Yjs cannot apply: ${error}`)
        }
      } else {
        this.errors.push(`server sent an unknown sync message kind ${kind}`)
      }
      handleSync(encoder, decoder, provider, emitSynced, type)
      changed()
    }
    const handleAwareness = this.provider.messageHandlers[MESSAGE_AWARENESS]
    this.provider.messageHandlers[MESSAGE_AWARENESS] = (...args) => {
      this.awarenessMessages++
      handleAwareness(...args)
      changed()
    }
    this.provider.on('status', changed)
    this.provider.on('sync', changed)
    this.provider.on('connection-error', () => {
      this.socketErrors++
      changed()
    })
    this.provider.on('connection-close', (event) => {
      // `null`: we closed it (disconnect()); otherwise the server or the network did.
      if (event != null) this.closes.push({ code: event.code, reason: event.reason })
      changed()
    })
    this.provider.on('closed', (event) => {
      this.refused = { code: event.code, reason: event.reason }
      changed()
    })
    this.doc.on('update', changed)
    this.provider.awareness.on('change', changed)
    this.provider.awareness.setLocalStateField('user', { name })
    if (connect) this.provider.connect()
  }

  /** This doc's client id (its own updates carry it). */
  get client () { return this.doc.clientID }

  /** The clock of this doc's own updates so far. */
  get localClock () { return Y.getState(this.doc.store, this.client) }

  /** How far the server has acknowledged `client`'s updates (by default our own). */
  ackedClock (client = this.client) {
    return Math.max(Y.getState(this.echo.store, client), this.serverClocks.get(client) ?? 0)
  }

  /** Whether the server acknowledged every update this doc made. */
  get allAcked () { return this.ackedClock() >= this.localClock }

  /** Whether the provider is synced over an open socket. */
  get synced () { return this.provider.wsconnected && this.provider.synced }

  connect () { this.provider.connect() }
  disconnect () { this.provider.disconnect() }

  /** Sends raw bytes on the current socket (codraft's extensions, a SyncStep1 by hand). */
  send (bytes) {
    const ws = this.provider.ws
    check(ws && ws.readyState === ws.OPEN, `${this.name}: no open socket to send on`)
    ws.send(bytes)
  }

  /** Sends codraft's password message: varuint 100, then the password as a var string. */
  setPassword (password) {
    const enc = encoding.createEncoder()
    encoding.writeVarUint(enc, MESSAGE_SET_PASSWORD)
    encoding.writeVarString(enc, password)
    this.send(encoding.toUint8Array(enc))
  }

  /** Sends a SyncStep1 of our state; the server answers with a SyncStep2. */
  sendSyncStep1 () {
    const enc = encoding.createEncoder()
    encoding.writeVarUint(enc, MESSAGE_SYNC)
    encoding.writeVarUint(enc, SYNC_STEP1)
    encoding.writeVarUint8Array(enc, Y.encodeStateVector(this.doc))
    this.send(encoding.toUint8Array(enc))
  }

  /** Sends a query-awareness message; the server answers with everyone's awareness. */
  queryAwareness () {
    const enc = encoding.createEncoder()
    encoding.writeVarUint(enc, MESSAGE_QUERY_AWARENESS)
    this.send(encoding.toUint8Array(enc))
  }

  /** The names in this peer's awareness states (its own included). */
  awarenessNames () {
    const names = new Set()
    for (const state of this.provider.awareness.getStates().values()) {
      if (state && state.user && state.user.name) names.add(state.user.name)
    }
    return names
  }

  /** The shared types as plain values. */
  content () {
    return { text: this.text.toString(), list: this.list.toArray(), map: this.map.toJSON() }
  }

  /** The content as one comparable string (map keys sorted). */
  fingerprint () {
    const { text, list, map } = this.content()
    const sorted = Object.fromEntries(Object.entries(map).sort(([a], [b]) => a < b ? -1 : 1))
    return JSON.stringify({ text, list, map: sorted })
  }

  /** Waits until synced (or refused: then fails with the close). */
  async waitSynced (ms = 20000) {
    await until([this], () => this.synced || this.refused !== null, ms,
      `${this.name} to sync with ${this.url}`)
    check(this.refused === null,
      () => `${this.name} was refused: close ${this.refused.code} ${this.refused.reason}`)
  }

  /** A line about this peer for failure reports. */
  describe () {
    return `  ${this.name} (${this.url}): client ${this.client}, clock ${this.localClock}, ` +
      `acked ${this.ackedClock()}, synced ${this.synced}, sessions ${this.sessions}, ` +
      `${this.closes.length} closes ${closeCodes(this.closes)}, refused ${JSON.stringify(this.refused)}, ` +
      `text ${this.text.length} chars, list ${this.list.length}, map ${this.map.size} keys`
  }

  destroy () {
    this.provider.destroy()
    this.provider.awareness.destroy()
  }
}

/** Waits until every peer is synced. */
export async function allSynced (peers, ms = 30000) {
  await until(peers, () => peers.every((p) => p.synced || p.refused !== null), ms,
    'every peer to sync', () => peers.map((p) => p.describe()).join('\n'))
  for (const p of peers) {
    check(p.refused === null, () => `${p.name} was refused: ${JSON.stringify(p.refused)}`)
  }
}

/** Peers whose content differs from the first one's, with a short view of each. */
export function differences (peers) {
  const first = peers[0].fingerprint()
  return peers.filter((p) => p.fingerprint() !== first)
}

/**
 * Waits until every peer's own updates are acknowledged by the server and every peer holds
 * the same content and state vector: the document has converged.
 */
export async function converged (peers, ms, what = 'the peers to converge') {
  const sameState = () => {
    const sv = Y.encodeStateVector(peers[0].doc).toString()
    return peers.every((p) => Y.encodeStateVector(p.doc).toString() === sv)
  }
  await until(peers,
    () => peers.every((p) => p.allAcked) && sameState() && differences(peers).length === 0,
    ms, what, () => {
      const lines = peers.map((p) => p.describe())
      const differ = differences(peers)
      if (differ.length) {
        lines.push(`  ${differ.length} peers differ from ${peers[0].name}:`)
        for (const p of [peers[0], ...differ.slice(0, 3)]) {
          lines.push(`    ${p.name}: ${p.fingerprint().slice(0, 400)}`)
        }
      }
      return lines.join('\n')
    })
}

/**
 * What the peers did, and so what the final document must hold: every token a peer inserted
 * into the text or the array is there exactly once unless someone deleted it, then it is not
 * there at all; every key a peer owns in the map holds the last value it set, or is absent if
 * it deleted it last. Tokens look like `[name.n]` and the text is only tokens, so every edit
 * is placed between tokens and a token can never be split by another's insert.
 */
export class Model {
  constructor () {
    /** token -> {peer, client, clock}: the insert, and the clock after it. */
    this.textInserted = new Map()
    this.textDeleted = new Set()
    this.listInserted = new Map()
    this.listDeleted = new Set()
    /** key -> last value its owner set (null: deleted). */
    this.mapOwned = new Map()
    /** key -> {client, clock} of the owner's last write. */
    this.mapWrites = new Map()
    this.counter = new Map()
  }

  /** A new token of `peer`'s. */
  token (peer) {
    const n = (this.counter.get(peer.name) ?? 0) + 1
    this.counter.set(peer.name, n)
    return `${peer.name}.${n}`
  }

  /** Inserts a new token into `peer`'s text, between two tokens. */
  insertText (peer, rng) {
    const token = this.token(peer)
    const text = peer.text.toString()
    const boundaries = [0]
    for (let i = 0; i < text.length; i++) if (text[i] === ']') boundaries.push(i + 1)
    peer.text.insert(rng.pick(boundaries), `[${token}]`)
    this.textInserted.set(token, { peer: peer.name, client: peer.client, clock: peer.localClock })
    return token
  }

  /** Deletes a token `peer` sees in its text (anyone's). */
  deleteText (peer, rng) {
    const tokens = [...peer.text.toString().matchAll(/\[([^\]]*)\]/g)]
    if (tokens.length === 0) return null
    const match = rng.pick(tokens)
    peer.text.delete(match.index, match[0].length)
    this.textDeleted.add(match[1])
    return match[1]
  }

  /** Inserts a new token into `peer`'s array at a random index. */
  insertList (peer, rng) {
    const token = this.token(peer)
    peer.list.insert(rng.int(0, peer.list.length + 1), [token])
    this.listInserted.set(token, { peer: peer.name, client: peer.client, clock: peer.localClock })
    return token
  }

  /** Deletes an element `peer` sees in its array. */
  deleteList (peer, rng) {
    if (peer.list.length === 0) return null
    const index = rng.int(0, peer.list.length)
    const token = peer.list.get(index)
    peer.list.delete(index, 1)
    this.listDeleted.add(token)
    return token
  }

  /** Sets one of `peer`'s own map keys to a new token. */
  setMap (peer, rng) {
    const key = `${peer.name}.k${rng.int(0, 4)}`
    const value = this.token(peer)
    peer.map.set(key, value)
    this.mapOwned.set(key, value)
    this.mapWrites.set(key, { client: peer.client, clock: peer.localClock })
    return key
  }

  /** Deletes one of `peer`'s own map keys (if it has one). */
  deleteMap (peer, rng) {
    const keys = [...peer.map.keys()].filter((k) => k.startsWith(`${peer.name}.k`))
    if (keys.length === 0) return null
    const key = rng.pick(keys)
    peer.map.delete(key)
    this.mapOwned.set(key, null)
    return key
  }

  /** A key every peer writes: its final value is whichever write Yjs orders last. */
  setShared (peer) {
    peer.map.set('shared', this.token(peer))
  }

  /** One random edit by `peer`; `insertsOnly` leaves out deletes. */
  edit (peer, rng, { insertsOnly = false } = {}) {
    const roll = rng.next()
    if (roll < 0.40 || (insertsOnly && roll < 0.6)) return this.insertText(peer, rng)
    if (roll < 0.55) return insertsOnly ? this.insertList(peer, rng) : this.deleteText(peer, rng)
    if (roll < 0.75) return this.insertList(peer, rng)
    if (roll < 0.83) return insertsOnly ? this.insertList(peer, rng) : this.deleteList(peer, rng)
    if (roll < 0.95) return this.setMap(peer, rng)
    if (roll < 0.98 && !insertsOnly) return this.deleteMap(peer, rng)
    return insertsOnly ? this.setMap(peer, rng) : this.setShared(peer)
  }

  /** How many tokens and keys the model expects. */
  summary () {
    return `${this.textInserted.size} text tokens (${this.textDeleted.size} deleted), ` +
      `${this.listInserted.size} array tokens (${this.listDeleted.size} deleted), ` +
      `${this.mapOwned.size} owned map keys`
  }

  /**
   * The problems with `content` ({text, list, map}) against everything the model recorded;
   * empty when it holds. `only(info)`, if given, limits the check to some inserts (e.g. the
   * acknowledged ones), and then deleted tokens and unlisted keys are not checked.
   */
  problems (content, only) {
    const out = []
    const textTokens = []
    const rest = content.text.replace(/\[([^\]]*)\]/g, (_, token) => {
      textTokens.push(token)
      return ''
    })
    if (rest !== '') out.push(`text has characters outside tokens: ${JSON.stringify(rest.slice(0, 80))}`)
    const counts = (tokens) => {
      const c = new Map()
      for (const t of tokens) c.set(t, (c.get(t) ?? 0) + 1)
      return c
    }
    const against = (kind, found, inserted, deleted) => {
      const seen = counts(found)
      for (const [token, info] of inserted) {
        if (only && !only(info)) continue
        const n = seen.get(token) ?? 0
        if (!only && deleted.has(token)) {
          if (n !== 0) out.push(`${kind}: token ${token} was deleted but is there ${n} times`)
        } else if (n !== 1 && !(only && deleted.has(token) && n === 0)) {
          out.push(`${kind}: token ${token} (by ${info.peer}) is there ${n} times, want 1`)
        }
      }
      if (!only) {
        for (const [token, n] of seen) {
          if (!inserted.has(token)) out.push(`${kind}: unknown token ${token} (${n} times)`)
        }
      }
    }
    against('text', textTokens, this.textInserted, this.textDeleted)
    against('array', content.list, this.listInserted, this.listDeleted)
    for (const [key, value] of this.mapOwned) {
      if (only && !only(this.mapWrites.get(key))) continue
      const have = content.map[key]
      if (value === null ? have !== undefined : have !== value) {
        out.push(`map: key ${key} is ${JSON.stringify(have)}, want ${JSON.stringify(value)}`)
      }
    }
    return out
  }

  /** Fails unless `content` holds everything (see `problems`). */
  verify (content, where, only) {
    const problems = this.problems(content, only)
    check(problems.length === 0, () =>
      `${where} does not hold what the peers did (${problems.length} problems):\n  ` +
      problems.slice(0, 20).join('\n  '))
  }
}

/** Opens a fresh peer on `url`, waits for it to sync, and returns it. */
export async function freshPeer (url, room, name, params = {}) {
  const peer = new Peer({ url, room, name, params })
  await peer.waitSynced(30000)
  return peer
}

/**
 * Waits until `peer` holds at least `reference`'s content and state vector (its sync
 * brought everything). A fresh peer's 'synced' means it has the server's state as of that
 * SyncStep2; this only also covers updates still arriving.
 */
export async function holds (peer, reference, ms, what) {
  const want = Y.decodeStateVector(Y.encodeStateVector(reference.doc))
  await until([peer, reference], () =>
    covers(Y.decodeStateVector(Y.encodeStateVector(peer.doc)), want) &&
    peer.fingerprint() === reference.fingerprint(), ms, what,
  () => `${peer.describe()}\n${reference.describe()}\n  ${peer.name}: ${peer.fingerprint().slice(0, 300)}\n  ${reference.name}: ${reference.fingerprint().slice(0, 300)}`)
}

/** Reads lines from standard input as events (for a harness that drives chaos). */
export function stdinLines () {
  const lines = new EventEmitter()
  lines.seen = []
  lines.ended = false
  let buffer = ''
  process.stdin.setEncoding('utf8')
  process.stdin.on('data', (chunk) => {
    buffer += chunk
    let i
    while ((i = buffer.indexOf('\n')) >= 0) {
      const line = buffer.slice(0, i).trim()
      buffer = buffer.slice(i + 1)
      lines.seen.push(line)
      lines.emit('change')
    }
  })
  process.stdin.on('end', () => {
    lines.ended = true
    lines.emit('change')
  })
  return lines
}

export { Y }
