// Positions are opaque byte strings ordered byte-wise; these helpers cover the common
// case of a big-endian unsigned 64-bit counter, whose byte order matches numeric order.

const U64_MAX = (1n << 64n) - 1n;

/** Encode a non-negative integer (number or bigint) as an 8-byte big-endian position. */
export function fromU64(value) {
  const n = BigInt(value);
  if (n < 0n || n > U64_MAX) {
    throw new RangeError(`position ${n} does not fit an unsigned 64-bit integer`);
  }
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, n, false);
  return out;
}

/** Decode an 8-byte big-endian position to a bigint. */
export function toU64(bytes) {
  const b = asBytes(bytes);
  if (b.length !== 8) {
    throw new RangeError(`a u64 position has 8 bytes, this one has ${b.length}`);
  }
  return new DataView(b.buffer, b.byteOffset, 8).getBigUint64(0, false);
}

/** Lower-case hex of a position (empty string for an empty position). */
export function toHex(bytes) {
  const b = asBytes(bytes);
  let s = '';
  for (let i = 0; i < b.length; i++) s += HEX[b[i]];
  return s;
}

/** The bytes of a hex string written by {@link toHex}. */
export function fromHex(text) {
  const t = String(text).trim();
  if (t.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(t)) {
    throw new RangeError(`\`${t.slice(0, 40)}\` is not a hex position`);
  }
  const out = new Uint8Array(t.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(t.substr(i * 2, 2), 16);
  return out;
}

/** Byte-wise comparison: negative when a < b, 0 when equal, positive when a > b. */
export function compare(a, b) {
  const x = asBytes(a);
  const y = asBytes(b);
  const n = Math.min(x.length, y.length);
  for (let i = 0; i < n; i++) {
    if (x[i] !== y[i]) return x[i] - y[i];
  }
  return x.length - y.length;
}

/** Whether two positions hold the same bytes. */
export function equal(a, b) {
  return compare(a, b) === 0;
}

/** A position given as bytes, a u64 (number or bigint) or an array of byte values, as a Uint8Array. */
export function asBytes(value) {
  if (value instanceof Uint8Array) return value;
  if (typeof value === 'bigint' || typeof value === 'number') return fromU64(value);
  if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  if (value instanceof ArrayBuffer || Array.isArray(value)) return new Uint8Array(value);
  throw new TypeError('a position is a Uint8Array, a bigint or a non-negative integer');
}

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));
