// Tokens: a provider whose JWT grants only reading syncs and sees the document, but its own
// edits reach no one (the gateway drops them) while it keeps receiving the writer's; without
// a token a provider is refused with 4401, with a token for other documents only with 4403,
// and neither is sent anything of the document.
//
//   GATEWAYS=ws://127.0.0.1:P/yjs WRITE_TOKEN=… READ_TOKEN=… OTHER_TOKEN=… [SEED=…] node access.mjs
//
// The tokens are signed by the harness with the server's JWT_SECRET: WRITE_TOKEN grants
// writing `y:*` (or the room), READ_TOKEN only reading, OTHER_TOKEN neither (other ids).

import { setup, scenario, say, check, until, Peer, Model, allSynced, converged, holds } from './lib.mjs'

const { rng, room, gateways } = setup('access')
const on = (i) => gateways[i % gateways.length]
const token = (name) => {
  const value = process.env[name]
  check(value, `${name} must be set`)
  return value
}
const [write, read, other] = [token('WRITE_TOKEN'), token('READ_TOKEN'), token('OTHER_TOKEN')]

await scenario(async () => {
  const model = new Model()
  const writer = new Peer({ url: on(0), room, name: 'writer', params: { token: write } })
  await allSynced([writer])
  for (let i = 0; i < 8; i++) model.edit(writer, rng, { insertsOnly: true })
  await converged([writer], 20000, 'the writer\'s edits to be acknowledged')

  const reader = new Peer({ url: on(1), room, name: 'reader', params: { token: read } })
  await allSynced([reader])
  await holds(reader, writer, 20000, 'the reader to see the writer\'s document')
  say(`reader (${reader.url}): synced and sees the writer's ${writer.text.length}-char text`)

  // The reader edits every type. It then sends a SyncStep1 by hand: the server's SyncStep2
  // answer comes after it has read (and dropped) everything the reader sent before.
  const readerText = `[reader-${rng.int(0, 1e9)}]`
  reader.text.insert(0, readerText)
  reader.list.push(['reader-item'])
  reader.map.set('reader-key', 'reader-value')
  const answered = reader.step2s
  reader.sendSyncStep1()
  await until([reader], () => reader.step2s > answered, 20000, 'the server to answer the reader\'s SyncStep1')

  // The writer goes on; the reader still receives, and nobody gets the reader's edits.
  for (let i = 0; i < 4; i++) model.edit(writer, rng, { insertsOnly: true })
  await converged([writer], 20000, 'the writer\'s later edits to be acknowledged')
  const writerTokens = [...writer.text.toString().matchAll(/\[[^\]]*\]/g)].map((m) => m[0])
  await until([reader], () => writerTokens.every((t) => reader.text.toString().includes(t)), 20000,
    'the reader to receive the writer\'s later edits', () => reader.describe())
  const leaked = (p) => p.text.toString().includes(readerText) || p.list.toArray().includes('reader-item') ||
    p.map.has('reader-key')
  check(!leaked(writer), () => `the reader's edit reached the writer: ${writer.fingerprint()}`)
  const fresh = new Peer({ url: on(2), room, name: 'fresh', params: { token: write } })
  await allSynced([fresh])
  await holds(fresh, writer, 20000, 'a fresh writer to hold the document')
  check(!leaked(fresh), () => `the reader's edit is in the document: ${fresh.fingerprint()}`)
  model.verify(fresh.content(), 'the document')
  say('the reader\'s edits reached neither the writer nor a fresh provider; it kept receiving the writer\'s')
  check(reader.refused === null, () => `the reader was closed: ${reader.describe()}`)
  if (reader.closes.length) say(`note: the reader's socket closed ${JSON.stringify(reader.closes)}`)

  for (const [what, params, codes] of [
    ['no-token', {}, [4401]],
    ['other-token', { token: other }, [4403]]
  ]) {
    const peer = new Peer({ url: on(0), room, name: what, params })
    await until([peer], () => peer.refused !== null || peer.synced, 20000, `${what} to be refused`)
    check(peer.refused !== null, `${what}: synced, want a refusal`)
    check(codes.includes(peer.refused.code),
      `${what}: closed with ${peer.refused.code} (${peer.refused.reason}), want ${codes.join(' or ')}`)
    check(peer.text.length === 0 && peer.list.length === 0 && peer.map.size === 0,
      () => `${what}: the refused provider was sent the document: ${peer.fingerprint()}`)
    say(`${what}: refused with ${peer.refused.code} "${peer.refused.reason}" and sent nothing`)
    peer.destroy()
  }
  for (const p of [writer, reader, fresh]) p.destroy()
  say('access: passed')
})
