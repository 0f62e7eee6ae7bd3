import { test } from 'node:test';
import assert from 'node:assert/strict';
// Maps the component import to the fake host before the SDK is loaded.
await import('../testing/register.mjs');

const sdk = await import('../culvert-connector.js');
const fakeHost = await import('../testing/fake-host.mjs');
const { ConnectorError, TableRows, destination, http, position, source } = sdk;

const SPEC = {
  type: 'object',
  properties: { rows: { type: 'integer', minimum: 0, default: 3 } },
  additionalProperties: false,
};

function witError(fn) {
  try {
    fn();
  } catch (e) {
    assert.ok(e && typeof e === 'object' && 'payload' in e, `thrown value carries a payload: ${e}`);
    return e.payload;
  }
  assert.fail('expected a thrown connector-error');
}

const items = (first, n, firstOfTable) => {
  const t = new TableRows({ namespace: 'demo', name: 'items' }, [{ name: 'id', type: 'int64', key: true }], { firstOfTable });
  for (let i = 0; i < n; i++) t.push({ id: first + i });
  return t;
};

const exported = source({
  spec: SPEC,
  check: (config) => [{ name: 'rows', ok: config.rows < 100, message: 'rows must stay below 100' }],
  discover: () => [{ table: { namespace: 'demo', name: 'items' }, columns: [{ name: 'id', typeName: 'bigint', nullable: false, keyOrdinal: 1 }], estimatedRows: 3 }],
  open({ config, resume }) {
    let done = resume ? Number(position.toU64(resume)) : 0;
    return {
      next(maxRows) {
        if (done >= config.rows) return null;
        const n = Math.min(maxRows, config.rows - done);
        const batch = { kind: 'snapshot', position: done + n, tables: [items(done + 1, n, done === 0)] };
        done += n;
        return batch;
      },
      ack() {},
    };
  },
});

test('source: spec, check and discover in WIT shapes', () => {
  assert.deepEqual(JSON.parse(exported.spec()), SPEC);
  assert.deepEqual(exported.check('{}'), [
    { name: 'config', ok: true, message: '' },
    { name: 'rows', ok: true, message: 'rows must stay below 100' },
  ]);
  assert.deepEqual(exported.check('{"rows":500}')[1], { name: 'rows', ok: false, message: 'rows must stay below 100' });
  const bad = exported.check('{"rows":"x"}');
  assert.equal(bad.length, 1);
  assert.equal(bad[0].ok, false);
  assert.match(bad[0].message, /config field `rows` must be an integer/);
  assert.deepEqual(exported.discover('{}'), [
    {
      table: { namespace: 'demo', name: 'items' },
      columns: [{ name: 'id', typeName: 'bigint', nullable: false, keyOrdinal: 1, unsupportedReason: '' }],
      identifiable: true,
      estimatedRows: 3n,
    },
  ]);
});

test('source: reader batches, resume and max-rows', () => {
  const reader = exported.Reader.open('{"rows":5}', ['demo.*'], undefined);
  const b1 = reader.next(2);
  assert.equal(b1.kind, 'snapshot');
  assert.deepEqual(b1.position, position.fromU64(2));
  assert.equal(b1.lagBytes, 0n);
  assert.equal(b1.continues, false);
  assert.equal(b1.tables[0].rowCount, 2);
  assert.equal(b1.tables[0].firstOfTable, true);
  assert.ok(b1.tables[0].ipc instanceof Uint8Array);
  const resumed = exported.Reader.open('{"rows":5}', [], position.fromU64(4));
  const b = resumed.next(10);
  assert.deepEqual(b.position, position.fromU64(5));
  assert.equal(b.tables[0].firstOfTable, false);
  assert.equal(resumed.next(10), undefined);
  const err = witError(() => exported.Reader.open('{"rows":-1}', [], undefined));
  assert.equal(err.kind, 'config');
  assert.match(err.message, /`rows` must be at least 0/);
});

test('source: a batch over max-rows and a crash become internal errors', () => {
  const greedy = source({ spec: {}, discover: () => [], open: () => ({ next: () => ({ kind: 'snapshot', position: 1, tables: [items(1, 3, true)] }) }) });
  const err = witError(() => greedy.Reader.open('{}', [], undefined).next(2));
  assert.equal(err.kind, 'internal');
  assert.match(err.message, /next returned 3 rows but the agent asked for at most 2/);
  const crashing = source({ spec: {}, discover: () => { throw new TypeError('boom'); }, open: () => ({ next: () => null }) });
  const crash = witError(() => crashing.discover('{}'));
  assert.deepEqual(crash, { kind: 'internal', message: 'unexpected error in `discover`: TypeError: boom' });
  const typed = source({ spec: {}, discover: () => { throw ConnectorError.auth('password refused: check `password`'); }, open: () => ({}) });
  assert.deepEqual(witError(() => typed.discover('{}')), { kind: 'auth', message: 'password refused: check `password`' });
  assert.equal(witError(() => typed.resync('{}', [], [])).kind, 'unsupported');
});

test('destination: open, apply with decoded rows, committed', () => {
  const seen = [];
  const dest = destination({
    spec: { type: 'object', properties: {} },
    open: ({ pipeline }) => {
      let committed = null;
      return {
        committed: () => committed,
        apply(batch) {
          seen.push([pipeline, batch.kind, batch.positionHex, batch.tables.map((t) => [t.qualifiedName, t.firstOfTable, t.changes().map((c) => c.row.id)])]);
          committed = batch.position;
        },
      };
    },
  });
  const w = dest.Writer.open('{}', 'p1');
  assert.equal(w.committed(), undefined);
  const rec = items(1, 2, true).finish();
  const batch = { kind: 'snapshot', position: position.fromU64(2), tables: [rec], lagBytes: 0n, continues: false };
  assert.deepEqual(w.apply(batch), position.fromU64(2));
  assert.deepEqual(w.committed(), position.fromU64(2));
  assert.deepEqual(seen, [['p1', 'snapshot', '0000000000000002', [['demo.items', true, [1n, 2n]]]]]);
});

test('host helpers: http, counters and readable failures', () => {
  fakeHost.onHttp((req) => {
    assert.deepEqual(req.headers, [['x-ms-version', '2021-12-02'], ['content-type', 'application/json']]);
    assert.equal(new TextDecoder().decode(req.body), '{"a":1}');
    return { status: 201, headers: [['ETag', '"1"']], body: new TextEncoder().encode('{"ok":true}') };
  });
  const res = http({ method: 'put', url: 'http://127.0.0.1:1/c/b?sig=secret', headers: { 'x-ms-version': '2021-12-02' }, body: { a: 1 } });
  assert.equal(res.status, 201);
  assert.equal(res.ok, true);
  assert.equal(res.header('etag'), '"1"');
  assert.deepEqual(res.json(), { ok: true });
  fakeHost.onHttp(() => {
    throw { payload: 'could not connect: error sending request for url (http://127.0.0.1:1/c/b?sig=secret): connection refused' };
  });
  try {
    http({ url: 'http://127.0.0.1:1/c/b?sig=secret' });
    assert.fail('expected an error');
  } catch (e) {
    assert.ok(e instanceof ConnectorError);
    assert.equal(e.kind, 'connection');
    assert.equal(e.message, 'GET http://127.0.0.1:1/c/b?... failed: could not connect: error sending request for url (http://127.0.0.1:1/c/b?...): connection refused');
  }
  sdk.counter('rows_written', 5);
  sdk.log.info('hello');
  assert.deepEqual(fakeHost.calls.slice(-2), [['counter', 'rows_written', 5n], ['log', 'info', 'hello']]);
  assert.deepEqual(sdk.resolve('localhost'), ['127.0.0.1']);
  assert.throws(() => sdk.resolve('example.invalid'), /cannot resolve example.invalid: example.invalid is not in the egress allow-list/);
});

test('source: positions must increase after the resume position', () => {
  let p = 5;
  const stuck = source({ spec: {}, discover: () => [], open: () => ({ next: () => ({ kind: 'snapshot', position: p, tables: [items(1, 1, false)] }) }) });
  const err = witError(() => stuck.Reader.open('{}', [], position.fromU64(5)).next(10));
  assert.equal(err.kind, 'internal');
  assert.match(err.message, /next returned position 0000000000000005, not after the previous 0000000000000005/);
  p = 6;
  const r = stuck.Reader.open('{}', [], position.fromU64(5));
  r.next(10);
  assert.match(witError(() => r.next(10)).message, /positions must increase/);
  const beat = source({ spec: {}, discover: () => [], open: () => ({ next: () => ({ kind: 'heartbeat', position: 7, tables: [items(1, 1, false)] }) }) });
  assert.match(witError(() => beat.Reader.open('{}', [], undefined).next(10)).message, /heartbeat batch only moves the position/);
});
