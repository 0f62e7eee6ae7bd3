// Table selection: schema-qualified globs such as `public.*` or `sales.order_?`.

/** Whether `table` ({namespace, name}) is selected; an empty selection selects every table. */
export function selects(selection, table) {
  if (!selection || selection.length === 0) return true;
  const name = `${table.namespace}.${table.name}`;
  return selection.some((glob) => globToRegExp(glob).test(name));
}

function globToRegExp(glob) {
  let re = '^';
  for (const ch of String(glob)) {
    if (ch === '*') re += '.*';
    else if (ch === '?') re += '.';
    else re += ch.replace(/[\\^$.|+()[\]{}]/g, '\\$&');
  }
  return new RegExp(`${re}$`);
}
