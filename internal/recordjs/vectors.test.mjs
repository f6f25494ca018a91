// Runs every conformance vector of docs/vectors/records.json against this
// implementation: the verdict, the reason, the delegation's reason and, for
// valid ones, every decoded field must be the file's.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { verifyRecord, verifyDelegation, fromHex } from './record.mjs';

// CELLNODE_VECTORS names another file of the same format (dht's
// differential test writes one).
const path = process.env.CELLNODE_VECTORS ?? fileURLToPath(new URL('../../docs/vectors/records.json', import.meta.url));
const file = JSON.parse(readFileSync(path, 'utf8'));

test('the vector file has at least 60 vectors', () => {
  assert.equal(file.format, 'cellnode-record-vectors/2');
  assert.ok(file.vectors.length >= 60, `${file.vectors.length} vectors`);
});

for (const v of file.vectors) {
  test(`${v.kind}: ${v.name}`, () => {
    const input = fromHex(v.input);
    const got =
      v.kind === 'delegation'
        ? verifyDelegation(input, { name: v.cell, node: v.node ?? '', nowMs: v.now_ms })
        : verifyRecord(input, { name: v.cell, nowMs: v.now_ms, shard: v.shard });
    assert.deepEqual(
      { valid: got.valid, reason: got.reason, delegation_reason: got.delegationReason },
      { valid: v.valid, reason: v.reason, delegation_reason: v.delegation_reason ?? '' },
      got.detail,
    );
    if (v.record) assert.deepEqual(got.record, v.record);
    if (v.delegation) assert.deepEqual(got.delegation, v.delegation);
  });
}
