// Offline editing: a provider that disconnects (`provider.disconnect()`), edits, and connects
// again merges its edits, and so does one that edited before it ever connected, while the
// others went on editing; nothing of anyone's is lost and all converge.
//
//   GATEWAYS=ws://127.0.0.1:P/yjs[,…] [ROUNDS=20] [SEED=…] node offline.mjs

import {
  setup, scenario, intEnv, say, check, pause, until, Peer, Model, allSynced, converged,
  freshPeer, holds
} from './lib.mjs'

const { rng, room, gateways } = setup('offline')
const rounds = intEnv('ROUNDS', 20)
const on = (i) => gateways[i % gateways.length]

await scenario(async () => {
  const model = new Model()
  const [ra, rb, rc] = [rng.fork(0), rng.fork(1), rng.fork(2)]
  const a = new Peer({ url: on(0), room, name: 'a' })
  const b = new Peer({ url: on(1), room, name: 'b' })
  // c edits before it ever connects.
  const c = new Peer({ url: on(0), room, name: 'c', connect: false })
  await allSynced([a, b])
  for (let r = 0; r < rounds; r++) {
    model.edit(a, ra)
    model.edit(b, rb)
    await pause(rng.int(0, 8))
  }
  await converged([a, b], 30000, 'a and b to converge before a goes offline')
  say(`a (${a.url}) and b (${b.url}) converged online: ${model.summary()}`)

  a.disconnect()
  await until([a], () => !a.provider.wsconnected && a.provider.ws === null, 10000, 'a to go offline')
  const offlineTokens = []
  for (let r = 0; r < rounds; r++) {
    const token = model.insertText(a, ra)
    offlineTokens.push(token)
    model.edit(a, ra)
    model.edit(b, rb)
    model.edit(c, rc)
    await pause(rng.int(0, 8))
  }
  // Both sides delete the same token while apart: the merge deletes it once.
  const shared = [...b.text.toString().matchAll(/\[([^\]]*)\]/g)].map((m) => m[1])
    .find((t) => a.text.toString().includes(`[${t}]`))
  if (shared) {
    for (const p of [a, b]) {
      const i = p.text.toString().indexOf(`[${shared}]`)
      p.text.delete(i, shared.length + 2)
    }
    model.textDeleted.add(shared)
  }
  await until([b], () => b.allAcked, 20000, 'b\'s edits to be acknowledged while a is offline')
  check(offlineTokens.every((t) => !b.text.toString().includes(`[${t}]`)),
    'b saw a\'s edits while a was offline: a was not offline')
  say(`a edited offline (${offlineTokens.length} text tokens and more), b and c (never connected) edited too`)

  a.connect()
  c.connect()
  await allSynced([a, b, c])
  await converged([a, b, c], 30000, 'a, b and c to converge after a and c connect')
  model.verify(a.content(), 'the merged document')
  say(`merged: a, b and c hold the same content with every edit: ${model.summary()}`)

  const fresh = await freshPeer(on(1), room, 'fresh')
  await holds(fresh, a, 20000, 'a fresh provider to hold the merged document')
  model.verify(fresh.content(), 'a fresh provider')
  say('a fresh provider holds the merged document')
  for (const p of [a, b, c, fresh]) {
    check(p.closes.length === 0 && p.errors.length === 0, () => p.describe() + ` errors ${p.errors}`)
    p.destroy()
  }
  say('offline: passed')
})
