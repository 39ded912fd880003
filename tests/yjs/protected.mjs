// A protected document: once a writer sends codraft's password message (varuint 100, then
// the password as a lib0 var string), a provider without the password, or with a wrong one,
// is refused with close 4401/4403 and is sent nothing of the document; one with
// `params: { otp }` syncs and edits; the writer stays connected throughout. An empty password
// removes the protection again.
//
//   GATEWAYS=ws://127.0.0.1:P/yjs[,…] [SEED=…] node protected.mjs

import { setup, scenario, say, check, until, Peer, Model, allSynced, converged, holds } from './lib.mjs'

const { rng, room, gateways } = setup('protected')
const on = (i) => gateways[i % gateways.length]
const REFUSED = [4401, 4403]
// How many fresh providers may still get in right after the password message, before the
// refusals start: the message has no answer of its own, so each retry follows a round trip
// of the writer's (an update sent after the password message, echoed back).
const ATTEMPTS = 3

await scenario(async () => {
  const model = new Model()
  const password = `pw-${rng.int(0, 1e9)}`
  const owner = new Peer({ url: on(0), room, name: 'owner' })
  await allSynced([owner])
  for (let i = 0; i < 5; i++) model.edit(owner, rng, { insertsOnly: true })
  await converged([owner], 20000, 'the owner\'s edits to be acknowledged')

  /** The owner edits and waits for the echo: the server has read what the owner sent before. */
  const roundTrip = async () => {
    model.insertText(owner, rng)
    await until([owner], () => owner.allAcked, 20000, 'the owner\'s update to be echoed')
  }

  /** Opens a provider and waits until it is refused or syncs; returns it. */
  const attempt = async (name, url, params) => {
    const peer = new Peer({ url, room, name, params })
    await until([peer], () => peer.refused !== null || peer.synced, 20000,
      `${name} to be refused or to sync`, () => peer.describe())
    return peer
  }

  /** A provider with `params` must be refused (retrying after round trips, see ATTEMPTS). */
  const mustBeRefused = async (what, params) => {
    for (let n = 1; ; n++) {
      const peer = await attempt(`${what}${n}`, on(n), params)
      if (peer.refused !== null) {
        const { code, reason } = peer.refused
        check(REFUSED.includes(code), `${what}: closed with ${code} (${reason}), want 4401 or 4403`)
        check(peer.text.length === 0 && peer.list.length === 0 && peer.map.size === 0,
          () => `${what}: the refused provider was sent the document: ${peer.fingerprint()}`)
        say(`${what} (${peer.url}): refused with ${code} "${reason}" and sent nothing` +
          (n > 1 ? ` (after ${n - 1} attempt(s) that got in)` : ''))
        peer.destroy()
        return code
      }
      peer.destroy()
      check(n < ATTEMPTS, `${what}: ${n} providers synced after the password was set`)
      await roundTrip()
    }
  }

  owner.setPassword(password)
  await roundTrip()
  say('the owner set a password')
  await mustBeRefused('no-password', {})
  await mustBeRefused('wrong-password', { otp: `${password}-wrong` })

  const guest = new Peer({ url: on(1), room, name: 'guest', params: { otp: password } })
  await allSynced([guest])
  await holds(guest, owner, 20000, 'the provider with the password to hold the document')
  for (let i = 0; i < 5; i++) model.edit(guest, rng, { insertsOnly: true })
  model.edit(owner, rng, { insertsOnly: true })
  await converged([owner, guest], 20000, 'the owner and the guest with the password to converge')
  model.verify(owner.content(), 'the protected document')
  say(`with params.otp: synced on ${guest.url}, edited, and converged with the owner`)
  check(owner.closes.length === 0 && owner.refused === null,
    () => `the owner's socket was closed: ${owner.describe()}`)

  owner.setPassword('')
  await roundTrip()
  for (let n = 1; ; n++) {
    const open = await attempt(`open${n}`, on(n + 1), {})
    if (open.synced) {
      await holds(open, owner, 20000, 'a provider without a password to hold the unprotected document')
      say(`an empty password removed the protection: a provider without otp syncs on ${open.url}`)
      open.destroy()
      break
    }
    open.destroy()
    check(n < ATTEMPTS, `removing the password: ${n} providers without otp were still refused (${JSON.stringify(open.refused)})`)
    await roundTrip()
  }
  for (const p of [owner, guest]) {
    check(p.closes.length === 0 && p.errors.length === 0, () => p.describe())
    p.destroy()
  }
  say('protected: passed')
})
