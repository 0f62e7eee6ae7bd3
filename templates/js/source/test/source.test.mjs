// Runs under plain node: `npm test` maps the agent's host import to a fake
// (culvert-connector-sdk/testing). The conformance kit tests the built component.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { decodeTable, position } from 'culvert-connector-sdk';

import { sourceConnector } from '../src/index.js';

function readAll(config, resume, maxRows = 1000) {
  const reader = sourceConnector.Reader.open(JSON.stringify(config), ['demo.*'], resume);
  const batches = [];
  for (let b = reader.next(maxRows); b !== undefined; b = reader.next(maxRows)) batches.push(b);
  return batches;
}

const ids = (batches) => batches.flatMap((b) => b.tables.flatMap((t) => decodeTable(t).rows.map((r) => r.id)));

test('snapshot of demo.items in batches with increasing positions', () => {
  const batches = readAll({ rows: 25, batch_rows: 10 });
  assert.deepEqual(batches.map((b) => position.toU64(b.position)), [10n, 20n, 25n]);
  assert.deepEqual(batches.map((b) => b.tables[0].firstOfTable), [true, false, false]);
  assert.deepEqual(ids(batches), Array.from({ length: 25 }, (_, i) => BigInt(i + 1)));
  const first = decodeTable(batches[0].tables[0]);
  assert.deepEqual(first.primaryKey, ['id']);
  assert.deepEqual(first.rows[0], { id: 1n, name: 'item-1', amount: 1.25 });
});

test('resuming after a position yields exactly the rest', () => {
  const rest = readAll({ rows: 25, batch_rows: 10 }, position.fromU64(10));
  assert.deepEqual(ids(rest), Array.from({ length: 15 }, (_, i) => BigInt(i + 11)));
  assert.deepEqual(readAll({ rows: 25 }, position.fromU64(25)), []);
});

test('the agent max-rows bounds a batch', () => {
  const batches = readAll({ rows: 5 }, undefined, 2);
  assert.deepEqual(batches.map((b) => b.tables[0].rowCount), [2, 2, 1]);
});

test('check names a bad field', () => {
  const results = sourceConnector.check('{"rows": "many"}');
  assert.equal(results[0].ok, false);
  assert.match(results[0].message, /`rows` must be an integer/);
  assert.ok(sourceConnector.check('{"rows": 3}').every((r) => r.ok));
});
