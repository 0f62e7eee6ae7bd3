// Lets a connector module run under plain node for unit tests: the component import
// `culvert:connector/host@0.1.0` resolves to ./fake-host.mjs. Use it with
// `node --import ./culvert-sdk/testing/register.mjs --test test/`.

import { register } from 'node:module';

const fake = new URL('./fake-host.mjs', import.meta.url).href;
const hooks = `
export async function resolve(specifier, context, next) {
  if (specifier.startsWith('culvert:connector/host')) return { url: ${JSON.stringify(fake)}, shortCircuit: true };
  return next(specifier, context);
}`;
register(`data:text/javascript,${encodeURIComponent(hooks)}`, import.meta.url);
