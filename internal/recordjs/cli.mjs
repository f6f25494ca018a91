#!/usr/bin/env node
// cli.mjs HEX_OR_BASE64 [--name ORG/NAME] [--now MS] [--delegation]:
// verify one record (or delegation) with this implementation; prints the
// verdict as JSON, exits 0 when valid and 1 when not.
import { verifyRecord, verifyDelegation, fromHex } from './record.mjs';

const args = process.argv.slice(2);
const opt = (name) => {
  const i = args.indexOf(name);
  return i >= 0 ? args.splice(i, 2)[1] : undefined;
};
const name = opt('--name') ?? '';
const nowMs = Number(opt('--now') ?? Date.now());
const i = args.indexOf('--delegation');
const delegation = i >= 0 && args.splice(i, 1).length > 0;
if (args.length !== 1) {
  console.error('usage: cli.mjs HEX_OR_BASE64 [--name ORG/NAME] [--now MS] [--delegation]');
  process.exit(2);
}
let input;
try {
  input = fromHex(args[0]);
} catch {
  input = new Uint8Array(Buffer.from(args[0], 'base64'));
}
const v = delegation ? verifyDelegation(input, { name, nowMs }) : verifyRecord(input, { name, nowMs });
console.log(JSON.stringify(v, null, 2));
process.exit(v.valid ? 0 : 1);
