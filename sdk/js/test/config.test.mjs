import { test } from 'node:test';
import assert from 'node:assert/strict';

import { parseConfig } from '../config.js';
import { ConnectorError } from '../errors.js';

const SPEC = {
  type: 'object',
  additionalProperties: false,
  required: ['container_url', 'sas'],
  properties: {
    container_url: { type: 'string', pattern: '^https?://', description: 'URL of the Blob container' },
    sas: { type: 'string', minLength: 1, writeOnly: true, 'x-culvert-secret': true },
    prefix: { type: 'string', default: '' },
    rows: { type: 'integer', minimum: 0, default: 1000 },
    mode: { enum: ['a', 'b'] },
  },
};

function configError(text) {
  try {
    parseConfig(text, SPEC);
  } catch (e) {
    assert.ok(e instanceof ConnectorError, `${e}`);
    assert.equal(e.kind, 'config');
    return e.message;
  }
  assert.fail('expected a config error');
}

test('defaults are filled in', () => {
  const c = parseConfig('{"container_url":"http://x/c","sas":"sv=1"}', SPEC);
  assert.deepEqual(c, { container_url: 'http://x/c', sas: 'sv=1', prefix: '', rows: 1000 });
});

test('errors name the field and what is expected', () => {
  assert.match(configError('{"sas":"x"}'), /config field `container_url` is required \(URL of the Blob container\)/);
  assert.match(configError('{"container_url":"ftp://x","sas":"x"}'), /`container_url` must match the pattern/);
  assert.match(configError('{"container_url":"http://x","sas":"x","rows":-1}'), /`rows` must be at least 0, got -1/);
  assert.match(configError('{"container_url":"http://x","sas":"x","rows":1.5}'), /`rows` must be an integer, got 1.5/);
  assert.match(configError('{"container_url":"http://x","sas":"x","mode":"c"}'), /`mode` must be one of "a", "b"/);
  assert.match(configError('{"container_url":"http://x","sas":"x","extra":1}'), /`extra` is not a known setting; known settings: container_url, sas/);
  assert.match(configError('{"container_url":"http://x",'), /not valid JSON/);
  assert.match(configError('[]'), /the configuration must be an object/);
});

test('secret values are never echoed', () => {
  const msg = configError('{"container_url":"http://x","sas":12345}');
  assert.match(msg, /`sas` must be a string, got a value/);
  assert.doesNotMatch(msg, /12345/);
});

test('an empty text is an empty object', () => {
  assert.deepEqual(parseConfig('', { type: 'object', properties: { n: { type: 'integer', default: 3 } } }), { n: 3 });
});

test('if/then/else makes fields conditionally required', () => {
  const spec = {
    type: 'object',
    properties: { discard: { type: 'boolean', default: false }, url: { type: 'string' } },
    if: { properties: { discard: { const: true } }, required: ['discard'] },
    else: { required: ['url'] },
  };
  assert.deepEqual(parseConfig('{"discard":true}', spec), { discard: true });
  assert.throws(() => parseConfig('{}', spec), /config field `url` is required/);
});
