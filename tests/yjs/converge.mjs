// PROVIDERS providers (spread over GATEWAYS in turn) edit one document's text, array and map
// at random for ROUNDS rounds, with updates in flight; then every provider must hold the same
// content, with every update each one made, and a fresh provider on each gateway must too.
// Awareness: every provider sees everyone's state, a late joiner is sent the current states
// (and answered on query-awareness), and a provider that leaves drops out of the others'.
//
//   GATEWAYS=ws://127.0.0.1:P/yjs[,…] PROVIDERS=20 ROUNDS=30 [SEED=…] [RESULT_FILE=…] node converge.mjs
//
// RESULT_FILE: where to write the final content, for check.mjs after a restart (and the
// text of the root `text`, for the history API).

import { writeFileSync } from 'node:fs'
import {
  setup, scenario, intEnv, say, check, pause, until, Peer, Model, allSynced, converged,
  freshPeer, holds
} from './lib.mjs'

const { rng, room, gateways } = setup('converge')
const count = intEnv('PROVIDERS', 2)
const rounds = intEnv('ROUNDS', 30)
check(count >= 2, 'PROVIDERS must be at least 2')

await scenario(async () => {
  const peers = []
  for (let i = 0; i < count; i++) {
    peers.push(new Peer({ url: gateways[i % gateways.length], room, name: `p${i}` }))
  }
  await allSynced(peers)
  say(`${count} providers synced on ${gateways.length} gateway(s)`)

  const everyone = peers.map((p) => p.name)
  await until(peers, () => peers.every((p) => everyone.every((n) => p.awarenessNames().has(n))),
    30000, 'every provider to see every provider\'s awareness state',
    () => peers.map((p) => `  ${p.name} sees ${[...p.awarenessNames()].join(',')}`).join('\n'))
  say(`awareness: each of the ${count} providers sees all ${count} states`)

  const model = new Model()
  // The simplest case first: one provider's updates sent back to back (the second leaves
  // before the first is committed) are all acknowledged, and reach the others.
  for (let i = 0; i < 10; i++) model.insertText(peers[0], rng)
  await until(peers, () => peers[0].allAcked, 15000,
    `${peers[0].name}'s 10 updates sent back to back to be acknowledged`,
    () => `${peers[0].describe()}\n  the server echoed clock ${peers[0].ackedClock()} of ${peers[0].localClock}: ` +
      'an update that arrived while an earlier one of the same client was not yet committed was dropped?')
  await converged(peers, 15000, 'every provider to receive the back-to-back updates')
  say('back-to-back updates of one provider: all acknowledged and received by everyone')

  const rngs = peers.map((_, i) => rng.fork(i))
  let edits = 0
  for (let round = 0; round < rounds; round++) {
    for (let i = 0; i < peers.length; i++) {
      const burst = rngs[i].next() < 0.15 ? 3 : rngs[i].next() < 0.2 ? 0 : 1
      for (let b = 0; b < burst; b++) {
        model.edit(peers[i], rngs[i])
        edits++
      }
    }
    await pause(rng.int(0, 12))
  }
  say(`made ${edits} edits in ${rounds} rounds: ${model.summary()}`)

  await converged(peers, 60000, 'every provider to converge with its updates acknowledged')
  for (const p of peers) check(p.errors.length === 0, `${p.name}: ${p.errors.join('; ')}`)
  model.verify(peers[0].content(), 'the converged document')
  say(`converged: all ${count} providers hold the same content, with every update made`)

  for (const [g, url] of gateways.entries()) {
    const fresh = await freshPeer(url, room, `fresh${g}`)
    await holds(fresh, peers[0], 20000, `a fresh provider on ${url} to hold the document`)
    model.verify(fresh.content(), `a fresh provider on ${url}`)
    // The server sends the current awareness states on join.
    await until([fresh], () => everyone.every((n) => fresh.awarenessNames().has(n)), 15000,
      `the fresh provider on ${url} to be sent everyone's awareness`,
      () => `  it sees ${[...fresh.awarenessNames()].join(',')}`)
    const before = fresh.awarenessMessages
    fresh.queryAwareness()
    await until([fresh], () => fresh.awarenessMessages > before, 15000,
      `an answer to query-awareness on ${url}`)
    say(`fresh provider on ${url}: same content, sent all ${count} awareness states, answers query-awareness`)
    fresh.destroy()
  }

  // A provider that leaves drops out of everyone's awareness long before the 30 s timeout.
  const leaver = peers.pop()
  leaver.destroy()
  await until(peers, () => peers.every((p) => !p.awarenessNames().has(leaver.name)), 15000,
    `${leaver.name} to leave everyone's awareness`,
    () => peers.filter((p) => p.awarenessNames().has(leaver.name)).map((p) => `  ${p.name} still sees it`).join('\n'))
  say(`awareness: ${leaver.name} left and dropped out of the other ${peers.length} providers' states`)

  if (process.env.RESULT_FILE) {
    writeFileSync(process.env.RESULT_FILE,
      JSON.stringify({ room, fingerprint: peers[0].fingerprint(), text: peers[0].text.toString() }))
    say(`wrote the final content to ${process.env.RESULT_FILE}`)
  }
  for (const p of peers) p.destroy()
  say('converge: passed')
})
