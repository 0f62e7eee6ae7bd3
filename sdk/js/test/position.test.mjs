import { test } from 'node:test';
import assert from 'node:assert/strict';

import { asBytes, compare, fromHex, fromU64, toHex, toU64 } from '../position.js';

test('u64 positions are big-endian and order byte-wise like numbers', () => {
  assert.deepEqual([...fromU64(1)], [0, 0, 0, 0, 0, 0, 0, 1]);
  assert.deepEqual([...fromU64(258n)], [0, 0, 0, 0, 0, 0, 1, 2]);
  assert.equal(toU64(fromU64(2n ** 64n - 1n)), 2n ** 64n - 1n);
  const values = [0n, 1n, 255n, 256n, 65535n, 2n ** 40n, 2n ** 63n, 2n ** 64n - 1n];
  for (let i = 1; i < values.length; i++) {
    assert.ok(compare(fromU64(values[i - 1]), fromU64(values[i])) < 0, `${values[i - 1]} < ${values[i]}`);
  }
  assert.throws(() => fromU64(-1), /does not fit/);
  assert.throws(() => fromU64(2n ** 64n), /does not fit/);
  assert.throws(() => toU64(new Uint8Array(3)), /8 bytes/);
});

test('hex round-trips and comparison handles prefixes', () => {
  const p = fromU64(0x0102030405060708n);
  assert.equal(toHex(p), '0102030405060708');
  assert.deepEqual(fromHex('0102030405060708'), p);
  assert.deepEqual(fromHex(''), new Uint8Array(0));
  assert.throws(() => fromHex('abc'), /not a hex position/);
  assert.throws(() => fromHex('zz'), /not a hex position/);
  assert.ok(compare(new Uint8Array([1]), new Uint8Array([1, 0])) < 0);
  assert.equal(compare(new Uint8Array([1, 2]), [1, 2]), 0);
  assert.deepEqual(asBytes(5), fromU64(5));
});
