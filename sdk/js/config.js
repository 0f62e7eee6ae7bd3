// Configuration parsing against the connector's own JSON Schema (`spec`), so every
// error names the field and says what is expected. Supported keywords: type, properties,
// required, default, enum, const, minimum, maximum, exclusiveMinimum, exclusiveMaximum,
// minLength, maxLength, pattern, minItems, maxItems, items, additionalProperties (false
// or a schema), if/then/else, allOf. Other keywords are ignored here (the conformance kit validates the full
// schema).

import { ConnectorError } from './errors.js';

/**
 * Parse the configuration text and check it against `schema`; defaults are filled in.
 * Throws a `config` ConnectorError naming the first offending field.
 */
export function parseConfig(text, schema) {
  let value;
  if (typeof text === 'string') {
    try {
      value = text.trim() === '' ? {} : JSON.parse(text);
    } catch (e) {
      throw ConnectorError.config(`the configuration is not valid JSON: ${e.message}`);
    }
  } else {
    value = text ?? {};
  }
  const problems = validate(value, schema ?? {}, '');
  if (problems.length > 0) throw ConnectorError.config(problems[0]);
  return value;
}

/** Every problem of `value` against `schema`, as readable sentences (empty when valid). Fills defaults in place. */
export function validate(value, schema, path) {
  const problems = [];
  check(value, schema, path, problems, false);
  return problems;
}

function label(path) {
  return path === '' ? 'the configuration' : `config field \`${path}\``;
}

function shown(value, secret) {
  if (secret) return 'a value';
  const text = typeof value === 'string' ? JSON.stringify(value) : JSON.stringify(value ?? null);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

function typeOf(value) {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  if (typeof value === 'number') return Number.isInteger(value) ? 'integer' : 'number';
  return typeof value;
}

function matchesType(value, type) {
  const actual = typeOf(value);
  if (type === 'number') return actual === 'number' || actual === 'integer';
  return actual === type;
}

function isSecret(schema) {
  return schema.writeOnly === true || schema['x-culvert-secret'] === true;
}

function check(value, schema, path, problems, secretParent) {
  if (!schema || typeof schema !== 'object') return;
  const secret = secretParent || isSecret(schema);
  const where = label(path);
  if (schema.type !== undefined) {
    const types = Array.isArray(schema.type) ? schema.type : [schema.type];
    if (!types.some((t) => matchesType(value, t))) {
      const expected = types.map((t) => (t === 'integer' ? 'an integer' : t === 'object' || t === 'array' ? `an ${t}` : `a ${t}`)).join(' or ');
      problems.push(`${where} must be ${expected}, got ${shown(value, secret)}`);
      return;
    }
  }
  if (schema.const !== undefined && JSON.stringify(value) !== JSON.stringify(schema.const)) {
    problems.push(`${where} must be ${JSON.stringify(schema.const)}`);
  }
  if (Array.isArray(schema.enum) && !schema.enum.some((e) => JSON.stringify(e) === JSON.stringify(value))) {
    problems.push(`${where} must be one of ${schema.enum.map((e) => JSON.stringify(e)).join(', ')}, got ${shown(value, secret)}`);
  }
  if (typeof value === 'number') {
    if (schema.minimum !== undefined && value < schema.minimum) problems.push(`${where} must be at least ${schema.minimum}, got ${shown(value, secret)}`);
    if (schema.maximum !== undefined && value > schema.maximum) problems.push(`${where} must be at most ${schema.maximum}, got ${shown(value, secret)}`);
    if (schema.exclusiveMinimum !== undefined && value <= schema.exclusiveMinimum) problems.push(`${where} must be greater than ${schema.exclusiveMinimum}, got ${shown(value, secret)}`);
    if (schema.exclusiveMaximum !== undefined && value >= schema.exclusiveMaximum) problems.push(`${where} must be less than ${schema.exclusiveMaximum}, got ${shown(value, secret)}`);
  }
  if (typeof value === 'string') {
    if (schema.minLength !== undefined && value.length < schema.minLength) {
      problems.push(schema.minLength === 1 ? `${where} must not be empty` : `${where} must have at least ${schema.minLength} characters`);
    }
    if (schema.maxLength !== undefined && value.length > schema.maxLength) problems.push(`${where} must have at most ${schema.maxLength} characters`);
    if (schema.pattern !== undefined && !new RegExp(schema.pattern, 'u').test(value)) {
      problems.push(`${where} must match the pattern ${schema.pattern}, got ${shown(value, secret)}`);
    }
  }
  if (Array.isArray(value)) {
    if (schema.minItems !== undefined && value.length < schema.minItems) problems.push(`${where} must have at least ${schema.minItems} items`);
    if (schema.maxItems !== undefined && value.length > schema.maxItems) problems.push(`${where} must have at most ${schema.maxItems} items`);
    if (schema.items && typeof schema.items === 'object') {
      value.forEach((item, i) => check(item, schema.items, `${path}[${i}]`, problems, secret));
    }
  }
  if (schema.if && typeof schema.if === 'object') {
    const branch = validate(structuredCloneish(value), schema.if, path).length === 0 ? schema.then : schema.else;
    if (branch) check(value, branch, path, problems, secret);
  }
  for (const sub of schema.allOf ?? []) check(value, sub, path, problems, secret);
  if (typeOf(value) === 'object') {
    const props = schema.properties ?? {};
    for (const name of schema.required ?? []) {
      if (value[name] === undefined) {
        const desc = props[name]?.description ? ` (${props[name].description})` : '';
        problems.push(`${label(join(path, name))} is required${desc}`);
      }
    }
    for (const [name, sub] of Object.entries(props)) {
      if (value[name] === undefined && sub && sub.default !== undefined) {
        value[name] = structuredCloneish(sub.default);
      }
      if (value[name] !== undefined) check(value[name], sub, join(path, name), problems, secret);
    }
    const extra = Object.keys(value).filter((k) => !(k in props));
    if (schema.additionalProperties === false && extra.length > 0) {
      const known = Object.keys(props);
      problems.push(`${label(join(path, extra[0]))} is not a known setting${known.length ? `; known settings: ${known.join(', ')}` : ''}`);
    } else if (schema.additionalProperties && typeof schema.additionalProperties === 'object') {
      for (const name of extra) check(value[name], schema.additionalProperties, join(path, name), problems, secret);
    }
  }
}

function join(path, name) {
  return path === '' ? name : `${path}.${name}`;
}

function structuredCloneish(v) {
  return v !== null && typeof v === 'object' ? JSON.parse(JSON.stringify(v)) : v;
}
