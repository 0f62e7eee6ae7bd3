// Runs under plain node against an in-memory container that answers like Blob Storage
// (`npm test`); the conformance kit and the Azurite test run the built component.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { TableRows, position } from 'culvert-connector-sdk';
import { onHttp, reset } from 'culvert-connector-sdk/testing/fake-host.mjs';

import { destinationConnector } from '../src/index.js';

const BASE = 'http://127.0.0.1:10000/devstoreaccount1/c';
const CONFIG = JSON.stringify({ container_url: BASE, sas: '?sv=1&sig=secret', prefix: 'cdc/' });
const utf8 = new TextDecoder();

/** An in-memory container; `fail(fn)` lets a test answer some requests itself. */
function storage() {
  reset();
  const blobs = new Map();
  const puts = [];
  let failer = () => null;
  onHttp((req) => {
    const forced = failer(req);
    if (forced) return forced;
    const [path, query] = req.url.split('?');
    assert.equal(query, 'sv=1&sig=secret');
    assert.ok(path.startsWith(`${BASE}/`), path);
    const name = decodeURIComponent(path.slice(BASE.length + 1));
    if (req.method === 'PUT') {
      assert.equal(req.headers.find(([k]) => k === 'x-ms-blob-type')?.[1], 'BlockBlob');
      blobs.set(name, utf8.decode(req.body));
      puts.push(name);
      return { status: 201, headers: [], body: new Uint8Array() };
    }
    if (blobs.has(name)) return { status: 200, headers: [], body: new TextEncoder().encode(blobs.get(name)) };
    return { status: 404, headers: [['x-ms-error-code', 'BlobNotFound']], body: new Uint8Array() };
  });
  return { blobs, puts, fail: (fn) => (failer = fn) };
}

const COLUMNS = [
  { name: 'id', type: 'int64', key: true },
  { name: 'name', type: 'utf8' },
  { name: 'data', type: 'binary' },
];

function snapshot(pos, first, ids) {
  const t = new TableRows({ namespace: 'public', name: 'items' }, COLUMNS, { firstOfTable: first });
  for (const id of ids) t.push({ id, name: `n${id}`, data: new Uint8Array([id]) });
  return { kind: 'snapshot', position: position.fromU64(pos), tables: [t.finish()], lagBytes: 0n, continues: false };
}

function changes(pos, build, continues = false) {
  const t = new TableRows({ namespace: 'public', name: 'items' }, COLUMNS, { changes: true });
  build(t);
  return { kind: 'changes', position: position.fromU64(pos), tables: [t.finish()], lagBytes: 0n, continues };
}

const hex = (n) => position.toHex(position.fromU64(n));
const lines = (text) => text.trim().split('\n').map((l) => JSON.parse(l));

test('snapshot and changes become NDJSON blobs, marker first, pointer last', () => {
  const { blobs, puts } = storage();
  const w = destinationConnector.Writer.open(CONFIG, 'orders');
  assert.equal(w.committed(), undefined);
  w.apply(snapshot(1, true, [1, 2]));
  w.apply(snapshot(2, false, [3]));
  w.apply(
    changes(3, (t) => {
      t.insert({ id: 4, name: 'four', data: new Uint8Array([0xff]) }, { lsn: 900, seq: 0 });
      t.update({ id: 1, name: 'uno', data: null }, { lsn: 900, seq: 1, before: { id: 1, name: 'n1', data: new Uint8Array([1]) } });
      t.delete({ id: 2 }, { lsn: 901, seq: 0 });
      t.truncate({ lsn: 902, seq: 0 });
    }),
  );
  const dir = 'cdc/orders/public.items';
  assert.deepEqual(puts, [
    `${dir}/${hex(1)}.snapshot`,
    `${dir}/${hex(1)}.ndjson`,
    'cdc/orders/_committed',
    `${dir}/${hex(2)}.ndjson`,
    'cdc/orders/_committed',
    `${dir}/${hex(3)}.ndjson`,
    'cdc/orders/_committed',
  ]);
  assert.deepEqual(JSON.parse(blobs.get(`${dir}/${hex(1)}.snapshot`)), { table: 'public.items', snapshot_start: hex(1) });
  assert.deepEqual(lines(blobs.get(`${dir}/${hex(1)}.ndjson`)), [
    { op: 'snapshot', row: { id: 1, name: 'n1', data: 'AQ==' } },
    { op: 'snapshot', row: { id: 2, name: 'n2', data: 'Ag==' } },
  ]);
  assert.deepEqual(lines(blobs.get(`${dir}/${hex(3)}.ndjson`)), [
    { op: 'I', lsn: 900, seq: 0, row: { id: 4, name: 'four', data: '/w==' } },
    { op: 'U', lsn: 900, seq: 1, row: { id: 1, name: 'uno', data: null }, before: { id: 1, name: 'n1', data: 'AQ==' } },
    { op: 'D', lsn: 901, seq: 0, row: { id: 2, name: null, data: null } },
    { op: 'T', lsn: 902, seq: 0 },
  ]);
  assert.equal(blobs.get('cdc/orders/_committed'), hex(3));
  assert.deepEqual(destinationConnector.Writer.open(CONFIG, 'orders').committed(), position.fromU64(3));
});

test('64-bit values are written exactly', () => {
  const { blobs } = storage();
  const w = destinationConnector.Writer.open(CONFIG, 'p');
  w.apply(changes(1, (t) => t.insert({ id: 2n ** 63n - 1n }, { lsn: 2n ** 64n - 1n, seq: 0 })));
  assert.equal(blobs.get(`cdc/p/public.items/${hex(1)}.ndjson`), '{"op":"I","lsn":18446744073709551615,"seq":0,"row":{"id":9223372036854775807,"name":null,"data":null}}\n');
});

test('a replay at or before the committed position writes nothing', () => {
  const { puts } = storage();
  const w = destinationConnector.Writer.open(CONFIG, 'p');
  w.apply(snapshot(5, true, [1]));
  const before = puts.length;
  const again = destinationConnector.Writer.open(CONFIG, 'p');
  assert.deepEqual(again.apply(snapshot(5, true, [1])), position.fromU64(5));
  again.apply(snapshot(4, false, [9]));
  assert.equal(puts.length, before);
});

test('a crash before the pointer is repaired by the replay, onto the same blobs', () => {
  const { blobs, fail } = storage();
  const w = destinationConnector.Writer.open(CONFIG, 'p');
  w.apply(snapshot(1, true, [1]));
  fail((req) => (req.url.includes('_committed') && req.method === 'PUT' ? { status: 503, headers: [], body: new Uint8Array() } : null));
  assert.throws(() => w.apply(snapshot(2, false, [2])), (e) => e.payload.kind === 'connection' && /503 .*after 3 attempts/.test(e.payload.message));
  fail(() => null);
  const names = [...blobs.keys()].sort();
  const restarted = destinationConnector.Writer.open(CONFIG, 'p');
  assert.deepEqual(restarted.committed(), position.fromU64(1));
  restarted.apply(snapshot(2, false, [2]));
  assert.deepEqual([...blobs.keys()].sort(), names, 'no new blob names');
  assert.equal(blobs.get('cdc/p/_committed'), hex(2));
});

test('5xx answers are retried', () => {
  const { blobs, fail } = storage();
  let failures = 2;
  fail(() => (failures-- > 0 ? { status: 500, headers: [['x-ms-error-code', 'InternalError']], body: new Uint8Array() } : null));
  destinationConnector.Writer.open(CONFIG, 'p').apply(snapshot(1, true, [1]));
  assert.equal(blobs.get('cdc/p/_committed'), hex(1));
});

test('a batch inside a transaction leaves the pointer until the transaction ends', () => {
  const { blobs } = storage();
  const w = destinationConnector.Writer.open(CONFIG, 'p');
  w.apply(changes(1, (t) => t.insert({ id: 1 }, { lsn: 10, seq: 0 }), true));
  assert.equal(blobs.has('cdc/p/_committed'), false);
  assert.deepEqual(w.committed(), position.fromU64(1));
  w.apply(changes(2, (t) => t.insert({ id: 2 }, { lsn: 10, seq: 1 })));
  assert.equal(blobs.get('cdc/p/_committed'), hex(2));
});

test('Blob errors become actionable connector errors', () => {
  const { fail } = storage();
  const answer = (status, code) => () => ({ status, headers: [['x-ms-error-code', code]], body: new Uint8Array() });
  const applyError = () => {
    try {
      destinationConnector.Writer.open(CONFIG, 'p').apply(snapshot(1, true, [1]));
    } catch (e) {
      return e.payload;
    }
    assert.fail('expected an error');
  };
  fail((req) => (req.method === 'PUT' ? answer(403, 'AuthorizationPermissionMismatch')() : null));
  let e = applyError();
  assert.equal(e.kind, 'permission');
  assert.match(e.message, /the SAS lacks write \(w\) or create \(c\) permission/);
  assert.doesNotMatch(e.message, /secret/, 'the SAS stays out of messages');
  fail(answer(403, 'AuthenticationFailed'));
  assert.equal(applyError().kind, 'auth');
  fail(answer(404, 'ContainerNotFound'));
  e = applyError();
  assert.equal(e.kind, 'config');
  assert.match(e.message, /container .* does not exist: create it/);
});

test('check reads and writes a probe blob and reports each', () => {
  const { blobs, fail } = storage();
  assert.deepEqual(destinationConnector.check(CONFIG).map((r) => [r.name, r.ok]), [['config', true], ['container', true], ['write', true]]);
  assert.ok(blobs.has('cdc/.culvert-check'));
  fail((req) => (req.method === 'PUT' ? { status: 403, headers: [['x-ms-error-code', 'AuthorizationPermissionMismatch']], body: new Uint8Array() } : null));
  const denied = destinationConnector.check(CONFIG);
  assert.equal(denied[2].ok, false);
  assert.match(denied[2].message, /lacks write \(w\) or create \(c\)/);
  const missing = destinationConnector.check('{"sas": "x"}');
  assert.equal(missing[0].ok, false);
  assert.match(missing[0].message, /`container_url` is required/);
});
