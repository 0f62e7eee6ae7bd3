import { test } from 'node:test';
import assert from 'node:assert/strict';

import { selects } from '../selection.js';

test('schema-qualified globs select tables', () => {
  const t = { namespace: 'demo', name: 'items' };
  assert.ok(selects([], t));
  assert.ok(selects(['demo.*'], t));
  assert.ok(selects(['other.x', 'demo.ite?s'], t));
  assert.ok(!selects(['public.*'], t));
  assert.ok(!selects(['demo.item'], t));
  assert.ok(!selects(['demoXitems'], t), 'the dot is literal');
  assert.ok(selects(['*'], t));
});
