// Providers edit without pause while the harness kills (SIGKILL) or drains (SIGTERM) the
// docnode that owns their documents, and starts it again. Two rooms, both owned by that
// docnode:
//
// - ROOM: "survivors", ordinary providers. The gateway must carry their sockets to the new
//   owner (a fresh sync: the server sends a new SyncStep1); they keep editing, and in the end
//   all converge with every edit any of them made, and a fresh provider holds the same.
// - DURABLE_ROOM: "witnesses", providers that never re-send their state (they do not answer
//   the SyncStep1 of a later session), so a lost update cannot be repaired by a client:
//   every update the server acknowledged (echoed, or covered by its SyncStep1) before, during
//   or after the kill must be in what a fresh provider is sent at the end. More witnesses
//   join after the first move, for the move back.
//
// EXPECT_NO_CLOSE=1: no provider's socket may close or fail (they all talk to gateways that
// stay up). Talks with the harness over stdio, each step bounded in time:
//
//   script -> "@ready"  every provider has acknowledged edits (editing is in full swing)
//   harness            kills or drains the owner
//   script -> "@moved"  every provider got a new session (the move happened)
//   harness            starts the docnode again, then sends "done"
//   script             waits for every provider's next session (the rooms move back to the
//                      restarted docnode), edits AFTER more times each, stops, checks
//
//   GATEWAYS=… ROOM=… DURABLE_ROOM=… [SURVIVORS=4] [WITNESSES=4] [AFTER=30] [SEED=…] node chaos.mjs

import {
  setup, scenario, intEnv, say, check, fail, pause, until, Peer, Model, allSynced, converged,
  freshPeer, holds, stdinLines
} from './lib.mjs'

const { rng, room, gateways } = setup('chaos')
const durableRoom = process.env.DURABLE_ROOM || `${room}-durable`
const survivorCount = intEnv('SURVIVORS', 4)
const witnessCount = intEnv('WITNESSES', 4)
const after = intEnv('AFTER', 30)
const expectNoClose = process.env.EXPECT_NO_CLOSE === '1'
const on = (i) => gateways[i % gateways.length]
const stdin = stdinLines()

await scenario(async () => {
  const survivorModel = new Model()
  const witnessModel = new Model()
  const survivors = []
  const witnesses = []
  for (let i = 0; i < survivorCount; i++) {
    survivors.push(new Peer({ url: on(i), room, name: `s${i}` }))
  }
  for (let i = 0; i < witnessCount; i++) {
    witnesses.push(new Peer({ url: on(i + 1), room: durableRoom, name: `w${i}`, resync: false }))
  }
  const everyone = [...survivors, ...witnesses]
  await allSynced(everyone)
  say(`${survivorCount} survivors in ${room}, ${witnessCount} witnesses in ${durableRoom}, on ${gateways.length} gateway(s)`)

  // Each provider types on its own, every 5-30 ms, until it has made its quota after "done".
  let quotaFrom = null
  const made = new Map()
  const typing = []
  const type = (peer) => {
    const own = rng.fork(typing.length)
    const witness = witnesses.includes(peer)
    const model = witness ? witnessModel : survivorModel
    made.set(peer, 0)
    typing.push((async () => {
      for (let n = 0; n < 5000; n++) {
        if (quotaFrom !== null && made.get(peer) >= (quotaFrom.get(peer) ?? 0) + after) return
        model.edit(peer, own, { insertsOnly: witness })
        made.set(peer, made.get(peer) + 1)
        await pause(own.int(5, 30))
      }
      fail(`${peer.name} typed 5000 edits without the scenario ending`)
    })())
  }
  everyone.forEach(type)

  await until(everyone, () => everyone.every((p) => p.ackedClock() >= 40), 30000,
    'every provider to have edits acknowledged', () => everyone.map((p) => p.describe()).join('\n'))
  const sessionsBefore = new Map(everyone.map((p) => [p, p.sessions]))
  console.log('@ready')

  await until(everyone, () => everyone.every((p) => p.sessions > sessionsBefore.get(p)), 60000,
    'every provider to get a new session from the new owner (a fresh SyncStep1)',
    () => everyone.map((p) => p.describe()).join('\n'))
  say('every provider got a new session: the documents moved')
  // A witness that lost an unacknowledged update in the move cannot have any later update of
  // its own applied (each depends on the lost one): new witnesses cover the move back.
  const late = []
  for (let i = 0; i < witnessCount; i++) {
    late.push(new Peer({ url: on(i), room: durableRoom, name: `v${i}`, resync: false }))
  }
  await allSynced(late)
  witnesses.push(...late)
  everyone.push(...late)
  late.forEach(type)
  const sessionsMoved = new Map(everyone.map((p) => [p, p.sessions]))
  console.log('@moved')

  await until([stdin], () => stdin.seen.includes('done') || stdin.ended, 90000, 'the harness to say "done"')
  check(stdin.seen.includes('done'), 'standard input ended before the harness said "done"')
  // The restarted docnode owns the rooms again (rendezvous hashing): a second move, still
  // under load.
  await until(everyone, () => everyone.every((p) => p.sessions > sessionsMoved.get(p)), 60000,
    'every provider to get a new session from the restarted docnode (the documents move back)',
    () => everyone.map((p) => p.describe()).join('\n'))
  say('every provider got another new session: the documents moved back to the restarted docnode')
  quotaFrom = new Map(made)
  await Promise.all(typing)
  say(`typing stopped: survivors ${survivorModel.summary()}; witnesses ${witnessModel.summary()}`)

  // Survivors: nothing of anyone's lost, everyone converged, a fresh provider agrees.
  await converged(survivors, 60000, 'the survivors to converge after the move')
  survivorModel.verify(survivors[0].content(), 'the survivors\' document')
  for (const [g, url] of gateways.entries()) {
    const fresh = await freshPeer(url, room, `fresh${g}`)
    await holds(fresh, survivors[0], 20000, `a fresh provider on ${url} to hold the survivors' document`)
    fresh.destroy()
  }
  say(`survivors: converged with every edit (${survivorModel.summary()}), and fresh providers agree`)

  // Witnesses: give in-flight updates a bounded chance to be acknowledged, then everything
  // acknowledged must be in a fresh provider's document; the rest may be lost.
  await until(witnesses, () => witnesses.every((p) => p.allAcked), 10000, 'witnesses\' acks')
    .catch(() => say('note: some witness updates were never acknowledged (allowed: not acknowledged)'))
  const acked = new Map(witnesses.map((p) => [p.client, p.ackedClock()]))
  const isAcked = (info) => info !== undefined && info.clock <= (acked.get(info.client) ?? 0)
  const ackedInserts = [...witnessModel.textInserted.values(), ...witnessModel.listInserted.values()]
    .filter(isAcked).length
  const durable = await freshPeer(on(0), durableRoom, 'durable')
  await until([durable], () => witnessModel.problems(durable.content(), isAcked).length === 0, 20000,
    'a fresh provider to hold every acknowledged witness update',
    () => witnessModel.problems(durable.content(), isAcked).slice(0, 20).join('\n'))
  const perWitness = witnesses.map((p) => {
    const mine = [...witnessModel.textInserted.values(), ...witnessModel.listInserted.values()]
      .filter((info) => info.client === p.client)
    return `${p.name} ${mine.filter(isAcked).length}/${mine.length}`
  })
  say(`witnesses: all ${ackedInserts} acknowledged inserts are durable ` +
    `(of ${witnessModel.textInserted.size + witnessModel.listInserted.size} made; ` +
    `acknowledged/made: ${perWitness.join(', ')})`)

  for (const p of everyone) check(p.errors.length === 0, `${p.name}: ${p.errors.join('; ')}`)
  if (expectNoClose) {
    const closed = everyone.filter((p) => p.closes.length > 0 || p.socketErrors > 0 || p.refused)
    check(closed.length === 0, () => 'sockets closed during the move:\n' +
      closed.map((p) => p.describe()).join('\n'))
    say(`no socket of the ${everyone.length} providers closed or failed`)
  } else {
    const closes = everyone.reduce((n, p) => n + p.closes.length, 0)
    say(`${closes} socket closes seen (allowed here)`)
  }
  for (const p of [...everyone, durable]) p.destroy()
  say('chaos: passed')
})
