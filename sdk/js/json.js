// JSON text for values decoded from Arrow: bigints are written as exact integer literals
// (JSON numbers have no size limit; JSON.stringify refuses bigints), Uint8Arrays as base64.

/** JSON text of `value`, with bigints as integer literals and Uint8Arrays as base64 strings. */
export function stringify(value) {
  const parts = [];
  write(value, parts);
  return parts.join('');
}

function write(v, out) {
  switch (typeof v) {
    case 'bigint':
      out.push(v.toString());
      return;
    case 'number':
      out.push(Number.isFinite(v) ? String(v) : 'null');
      return;
    case 'string':
      out.push(JSON.stringify(v));
      return;
    case 'boolean':
      out.push(v ? 'true' : 'false');
      return;
    case 'undefined':
    case 'function':
    case 'symbol':
      out.push('null');
      return;
    default:
      break;
  }
  if (v === null) {
    out.push('null');
  } else if (v instanceof Uint8Array) {
    out.push(JSON.stringify(toBase64(v)));
  } else if (Array.isArray(v)) {
    out.push('[');
    for (let i = 0; i < v.length; i++) {
      if (i > 0) out.push(',');
      write(v[i], out);
    }
    out.push(']');
  } else if (typeof v.toJSON === 'function') {
    write(v.toJSON(), out);
  } else {
    out.push('{');
    let first = true;
    for (const key of Object.keys(v)) {
      const x = v[key];
      if (x === undefined || typeof x === 'function' || typeof x === 'symbol') continue;
      if (!first) out.push(',');
      first = false;
      out.push(JSON.stringify(key), ':');
      write(x, out);
    }
    out.push('}');
  }
}

const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';

/** Standard base64 (with padding) of bytes. */
export function toBase64(bytes) {
  let s = '';
  let i = 0;
  for (; i + 2 < bytes.length; i += 3) {
    const n = (bytes[i] << 16) | (bytes[i + 1] << 8) | bytes[i + 2];
    s += B64[n >> 18] + B64[(n >> 12) & 63] + B64[(n >> 6) & 63] + B64[n & 63];
  }
  if (i < bytes.length) {
    const rest = bytes.length - i;
    const n = (bytes[i] << 16) | (rest > 1 ? bytes[i + 1] << 8 : 0);
    s += B64[n >> 18] + B64[(n >> 12) & 63] + (rest > 1 ? B64[(n >> 6) & 63] : '=') + '=';
  }
  return s;
}

/** Bytes of a standard base64 string. */
export function fromBase64(text) {
  const clean = String(text).replace(/[\s=]/g, '');
  const out = new Uint8Array(Math.floor((clean.length * 3) / 4));
  let bits = 0;
  let acc = 0;
  let o = 0;
  for (let i = 0; i < clean.length; i++) {
    const c = B64.indexOf(clean[i]);
    if (c < 0) throw new RangeError('not base64 text');
    acc = (acc << 6) | c;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (acc >> bits) & 0xff;
    }
  }
  return out.subarray(0, o);
}
