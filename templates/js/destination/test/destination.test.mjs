// Runs under plain node: `npm test` maps the agent's host import to a fake
// (culvert-connector-sdk/testing) that answers HTTP like Blob Storage, in memory.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { TableRows, position } from 'culvert-connector-sdk';
import { onHttp, reset } from 'culvert-connector-sdk/testing/fake-host.mjs';

import { destinationConnector } from '../src/index.js';

const CONFIG = JSON.stringify({ container_url: 'http://127.0.0.1:10000/acct/c', sas: '?sig=x', prefix: 'p/' });
const text = new TextDecoder();

function fakeStorage() {
  reset();
  const blobs = new Map();
  onHttp((req) => {
    const [path, query] = req.url.split('?');
    assert.equal(query, 'sig=x');
    const name = path.slice('http://127.0.0.1:10000/acct/c/'.length);
    if (req.method === 'PUT') {
      blobs.set(name, text.decode(req.body));
      return { status: 201, headers: [], body: new Uint8Array() };
    }
    if (blobs.has(name)) return { status: 200, headers: [], body: new TextEncoder().encode(blobs.get(name)) };
    return { status: 404, headers: [['x-ms-error-code', 'BlobNotFound']], body: new Uint8Array() };
  });
  return blobs;
}

function batch(pos) {
  const t = new TableRows({ namespace: 'demo', name: 'items' }, [{ name: 'id', type: 'int64', key: true }], { firstOfTable: pos === 1 });
  t.push({ id: pos });
  return { kind: 'snapshot', position: position.fromU64(pos), tables: [t.finish()], lagBytes: 0n, continues: false };
}

test('writes a blob per batch, then the committed position', () => {
  const blobs = fakeStorage();
  const w = destinationConnector.Writer.open(CONFIG, 'pipe');
  assert.equal(w.committed(), undefined);
  assert.deepEqual(w.apply(batch(1)), position.fromU64(1));
  assert.deepEqual(w.apply(batch(2)), position.fromU64(2));
  assert.equal(blobs.get('p/pipe/0000000000000001.ndjson'), '{"table":"demo.items","kind":"snapshot","rows":1,"first_of_table":true}\n');
  assert.equal(blobs.get('p/pipe/_committed'), '0000000000000002');
  const reopened = destinationConnector.Writer.open(CONFIG, 'pipe');
  assert.deepEqual(reopened.committed(), position.fromU64(2));
});

test('a replayed batch is a no-op', () => {
  const blobs = fakeStorage();
  const w = destinationConnector.Writer.open(CONFIG, 'pipe');
  w.apply(batch(2));
  blobs.delete('p/pipe/0000000000000002.ndjson');
  w.apply(batch(1));
  w.apply(batch(2));
  assert.deepEqual([...blobs.keys()], ['p/pipe/_committed']);
});

test('discard keeps the position in memory and calls nothing', () => {
  reset();
  const w = destinationConnector.Writer.open('{"discard": true}', 'bench');
  assert.equal(w.committed(), undefined);
  w.apply(batch(3));
  assert.deepEqual(w.committed(), position.fromU64(3));
});

test('check names missing settings and probes the container', () => {
  const missing = destinationConnector.check('{"container_url": "http://127.0.0.1:10000/acct/c"}');
  assert.equal(missing[0].ok, false);
  assert.match(missing[0].message, /`sas` is required/);
  fakeStorage();
  assert.ok(destinationConnector.check(CONFIG).every((r) => r.ok));
  onHttp(() => ({ status: 403, headers: [['x-ms-error-code', 'AuthorizationPermissionMismatch']], body: new Uint8Array() }));
  const denied = destinationConnector.check(CONFIG);
  assert.equal(denied[1].ok, false);
  assert.match(denied[1].message, /grants read \(r\), create \(c\) and write \(w\)/);
  assert.doesNotMatch(denied[1].message, /sig=x/, 'the SAS stays out of messages');
});
