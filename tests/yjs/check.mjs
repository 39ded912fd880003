// A fresh provider on each of GATEWAYS must hold exactly the content another scenario wrote
// to EXPECT_FILE (converge.mjs's RESULT_FILE): what was acknowledged before a restart of the
// server is still there after it.
//
//   GATEWAYS=ws://127.0.0.1:P/yjs EXPECT_FILE=/tmp/result.json node check.mjs

import { readFileSync } from 'node:fs'
import { setup, scenario, say, check, until, freshPeer } from './lib.mjs'

const file = process.env.EXPECT_FILE
check(file, 'EXPECT_FILE must name the file converge.mjs wrote')
const expected = JSON.parse(readFileSync(file, 'utf8'))
process.env.ROOM = expected.room
const { room, gateways } = setup('check')

await scenario(async () => {
  for (const [g, url] of gateways.entries()) {
    const fresh = await freshPeer(url, room, `check${g}`)
    await until([fresh], () => fresh.fingerprint() === expected.fingerprint, 20000,
      `a fresh provider on ${url} to hold the expected content`,
      () => `  have: ${fresh.fingerprint().slice(0, 400)}\n  want: ${expected.fingerprint.slice(0, 400)}`)
    say(`fresh provider on ${url}: holds the ${expected.fingerprint.length}-byte expected content`)
    fresh.destroy()
  }
  say('check: passed')
})
