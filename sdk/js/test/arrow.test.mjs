import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, existsSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { homedir } from 'node:os';
import { join } from 'node:path';

import { TableRows, changesOf, decodeTable } from '../arrow.js';
import { stringify } from '../json.js';

const fixture = (name) => new Uint8Array(readFileSync(new URL(`../testdata/${name}`, import.meta.url)));

const ITEMS = [
  { name: 'id', type: 'int64', key: true },
  { name: 'name', type: 'utf8' },
  { name: 'amount', type: 'float64' },
];

test('snapshot rows round-trip with the conventions metadata', () => {
  const t = new TableRows({ namespace: 'demo', name: 'items' }, ITEMS, { firstOfTable: true });
  t.push({ id: 1n, name: 'first', amount: 1.5 });
  t.push([2, 'zwei ü', null]);
  t.push({ id: -(2n ** 63n), name: null, amount: -0.25 });
  const rec = t.finish();
  assert.deepEqual(rec.table, { namespace: 'demo', name: 'items' });
  assert.equal(rec.firstOfTable, true);
  assert.equal(rec.rowCount, 3);
  // A stream ends with the end-of-stream marker.
  assert.deepEqual([...rec.ipc.slice(-8)], [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);
  const d = decodeTable(rec);
  assert.equal(d.isChanges, false);
  assert.deepEqual(d.primaryKey, ['id']);
  assert.deepEqual(
    d.columns.map((c) => [c.name, c.sourceType, c.key]),
    [['id', 'bigint', 1], ['name', 'text', null], ['amount', 'double precision', null]],
  );
  assert.deepEqual(d.rows, [
    { id: 1n, name: 'first', amount: 1.5 },
    { id: 2n, name: 'zwei ü', amount: null },
    { id: -(2n ** 63n), name: null, amount: -0.25 },
  ]);
});

test('every writable type round-trips, including nulls', () => {
  const cols = [
    { name: 'b', type: 'bool' },
    { name: 'i16', type: 'int16' },
    { name: 'i32', type: 'int32' },
    { name: 'i64', type: 'int64', key: true },
    { name: 'u64', type: 'uint64' },
    { name: 'f32', type: 'float32' },
    { name: 'f64', type: 'float64' },
    { name: 's', type: 'utf8', sourceType: 'varchar(10)' },
    { name: 'bin', type: 'binary' },
    { name: 'd', type: 'date32' },
    { name: 'ts', type: 'timestamp' },
    { name: 'tz', type: 'timestamptz' },
  ];
  const t = new TableRows({ namespace: 'n', name: 't' }, cols);
  const rows = 70; // more than one growth step of every buffer
  for (let i = 0; i < rows; i++) {
    t.push(
      i % 7 === 3
        ? { i64: i }
        : {
            b: i % 2 === 0,
            i16: -i,
            i32: i * 1000,
            i64: BigInt(i) * 10000000000n,
            u64: 2n ** 64n - 1n - BigInt(i),
            f32: 0.5,
            f64: i / 4,
            s: 'x'.repeat(i),
            bin: new Uint8Array([i, 255 - i]),
            d: '2024-02-29',
            ts: '2024-01-02T03:04:05.123456',
            tz: 1704164645123456n,
          },
    );
  }
  const d = decodeTable(t.finish(), { binary: 'hex' });
  assert.equal(d.rows.length, rows);
  for (let i = 0; i < rows; i++) {
    const r = d.rows[i];
    if (i % 7 === 3) {
      assert.equal(r.i64, BigInt(i));
      for (const c of cols.filter((c) => c.name !== 'i64')) assert.equal(r[c.name], null, `${c.name} of row ${i}`);
      continue;
    }
    assert.deepEqual(r, {
      b: i % 2 === 0,
      i16: i === 0 ? 0 : -i,
      i32: i * 1000,
      i64: BigInt(i) * 10000000000n,
      u64: 2n ** 64n - 1n - BigInt(i),
      f32: 0.5,
      f64: i / 4,
      s: 'x'.repeat(i),
      bin: i.toString(16).padStart(2, '0') + (255 - i).toString(16).padStart(2, '0'),
      d: '2024-02-29',
      ts: '2024-01-02T03:04:05.123456',
      tz: '2024-01-02T03:04:05.123456Z',
    });
  }
});

test('values a column cannot hold are refused with the column named', () => {
  const t = new TableRows({ namespace: 'demo', name: 'items' }, ITEMS);
  assert.throws(() => t.push({ id: 1.5 }), /column `demo.items.id` \(int64\) cannot hold 1.5/);
  assert.throws(() => t.push({ id: 2n ** 63n }), /cannot hold 9223372036854775808n/);
  assert.throws(() => t.push({ id: 1, name: { a: 1 } }), /column `demo.items.name` \(utf8\) cannot hold/);
  assert.throws(() => new TableRows({ namespace: 'a', name: 'b' }, [{ name: 'x', type: 'decimal' }]), /unknown type `decimal`/);
});

test('changes fold before-images and list unchanged columns', () => {
  const t = new TableRows({ namespace: 'demo', name: 'items' }, ITEMS, { changes: true });
  t.insert({ id: 1, name: 'a', amount: 1 }, { lsn: 10, seq: 0 });
  t.update({ id: 1, name: 'b', amount: 2 }, { lsn: 20, seq: 0, before: { id: 1, name: 'a', amount: 1 } });
  t.update({ id: 1, amount: 3 }, { lsn: 30, seq: 0, unchanged: ['name'] });
  t.delete({ id: 1 }, { lsn: 40, seq: 1 });
  t.truncate({ lsn: 50, seq: 0 });
  const rec = t.finish();
  assert.equal(rec.rowCount, 6);
  const d = decodeTable(rec);
  assert.equal(d.isChanges, true);
  assert.deepEqual(d.rows.map((r) => r.__culvert_op), ['I', 'B', 'U', 'U', 'D', 'T']);
  assert.deepEqual(changesOf(d), [
    { op: 'I', lsn: 10n, seq: 0n, row: { id: 1n, name: 'a', amount: 1 } },
    { op: 'U', lsn: 20n, seq: 0n, row: { id: 1n, name: 'b', amount: 2 }, before: { id: 1n, name: 'a', amount: 1 } },
    { op: 'U', lsn: 30n, seq: 0n, row: { id: 1n, amount: 3 }, unchanged: ['name'] },
    { op: 'D', lsn: 40n, seq: 1n, row: { id: 1n, name: null, amount: null } },
    { op: 'T', lsn: 50n, seq: 0n, row: null },
  ]);
});

test('an empty table is a valid stream', () => {
  const rec = new TableRows({ namespace: 'demo', name: 'items' }, ITEMS).finish();
  assert.equal(rec.rowCount, 0);
  const d = decodeTable(rec);
  assert.deepEqual(d.rows, []);
  assert.deepEqual(d.primaryKey, ['id']);
});

test('decodes a snapshot stream written by pyarrow (arrow C++, like arrow-rs)', () => {
  const d = decodeTable(fixture('snapshot.arrows'));
  assert.deepEqual(d.primaryKey, ['id']);
  assert.equal(d.rows.length, 4, 'both record batches are read');
  assert.deepEqual(d.rows[0], {
    id: 1n,
    qty: 7,
    price: 1.5,
    name: 'héllo',
    active: true,
    blob: 'AAH/',
    created: '2024-01-02T03:04:05.123456Z',
    local: '2024-01-02T03:04:05.123456',
    day: '2024-01-02',
    uid: '12345678-9abc-def0-1234-56789abcdef0',
  });
  assert.deepEqual(d.rows[1], {
    id: 2n ** 63n - 1n,
    qty: null,
    price: 2.25,
    name: null,
    active: false,
    blob: null,
    created: null,
    local: '1970-01-01T00:00:00.000001',
    day: null,
    uid: null,
  });
  assert.equal(d.rows[2].id, -(2n ** 63n));
  assert.equal(d.rows[2].blob, '');
  assert.equal(d.rows[2].created, '1970-01-01T00:00:00.000000Z');
  assert.equal(d.rows[3].id, 4n);
  assert.equal(
    stringify(d.rows[1]),
    '{"id":9223372036854775807,"qty":null,"price":2.25,"name":null,"active":false,"blob":null,"created":null,"local":"1970-01-01T00:00:00.000001","day":null,"uid":null}',
  );
});

test('decodes a changes stream written by pyarrow', () => {
  const d = decodeTable(fixture('changes.arrows'));
  assert.equal(d.isChanges, true);
  assert.deepEqual(d.columns.map((c) => c.name).slice(0, 4), ['id', 'qty', 'price', 'name']);
  const changes = changesOf(d).map((c) => ({ op: c.op, lsn: c.lsn, seq: c.seq, id: c.row?.id, qty: c.row?.qty, before: c.before?.qty, unchanged: c.unchanged }));
  assert.deepEqual(changes, [
    { op: 'I', lsn: 100n, seq: 0n, id: 1n, qty: 7, before: undefined, unchanged: undefined },
    { op: 'U', lsn: 200n, seq: 1n, id: 1n, qty: 8, before: 7, unchanged: undefined },
    { op: 'U', lsn: 2n ** 64n - 1n, seq: 0n, id: 2n, qty: 9, before: undefined, unchanged: ['name'] },
    { op: 'D', lsn: 300n, seq: 0n, id: 3n, qty: null, before: undefined, unchanged: undefined },
    { op: 'T', lsn: 400n, seq: 0n, id: undefined, qty: undefined, before: undefined, unchanged: undefined },
  ]);
  assert.equal('name' in changesOf(d)[2].row, false, 'unchanged columns are left out of the row');
});

const python = join(homedir(), '.cache/culvert/venv/bin/python');
const havePyarrow = existsSync(python) && spawnSync(python, ['-c', 'import pyarrow'], { stdio: 'ignore' }).status === 0;

test('pyarrow reads what TableRows writes', { skip: havePyarrow ? false : 'pyarrow is not installed in ~/.cache/culvert/venv' }, () => {
  const t = new TableRows({ namespace: 'demo', name: 'items' }, [...ITEMS, { name: 'at', type: 'timestamptz' }, { name: 'raw', type: 'binary' }], { changes: true });
  t.insert({ id: 1, name: 'a', amount: 1.25, at: 1704164645123456n, raw: new Uint8Array([1, 2]) }, { lsn: 5, seq: 0 });
  t.delete({ id: 2 }, { lsn: 6, seq: 1 });
  const out = spawnSync(python, [new URL('../testdata/read_ipc.py', import.meta.url).pathname], { input: t.toIPC() });
  assert.equal(out.status, 0, out.stderr.toString());
  const got = JSON.parse(out.stdout.toString());
  assert.deepEqual(got.schema_metadata, { 'culvert.primary_key': '["id"]', 'culvert.namespace': 'demo', 'culvert.table': 'items' });
  assert.deepEqual(got.fields.map((f) => [f.name, f.type]), [
    ['__culvert_op', 'string'],
    ['__culvert_lsn', 'uint64'],
    ['__culvert_seq', 'uint64'],
    ['__culvert_unchanged', 'binary'],
    ['id', 'int64'],
    ['name', 'string'],
    ['amount', 'double'],
    ['at', 'timestamp[us, tz=UTC]'],
    ['raw', 'binary'],
  ]);
  assert.deepEqual(got.fields[4].metadata, { 'culvert.type': 'bigint', 'culvert.kind': 'int8', 'culvert.key': '1' });
  assert.equal(got.rows.length, 2);
  assert.equal(got.rows[0].__culvert_op, 'I');
  assert.equal(got.rows[0].raw, '0102');
  assert.equal(got.rows[0].at, '2024-01-02 03:04:05.123456+00:00');
  assert.equal(got.rows[1].__culvert_op, 'D');
  assert.equal(got.rows[1].name, null);
});
