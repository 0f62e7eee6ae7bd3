// Stands in for the `culvert:connector/host` import when a connector runs under plain
// node (unit tests): records logs and metrics, and answers HTTP with a handler the test installs.

/** Everything the connector asked of the host, in order. */
export const calls = [];
let httpHandler = () => {
  throw { payload: 'no HTTP handler installed in the test' };
};

/** Forget recorded calls and the HTTP handler. */
export function reset() {
  calls.length = 0;
  httpHandler = () => {
    throw { payload: 'no HTTP handler installed in the test' };
  };
}

/** Install the function answering httpSend: it gets the WIT request `{method, url, headers, body}` and returns `{status, headers, body}` or throws `{payload: reason}`. */
export function onHttp(fn) {
  httpHandler = fn;
}

export function log(level, message) {
  calls.push(['log', level, message]);
}

export function counterAdd(name, value) {
  if (typeof value !== 'bigint') throw new TypeError('u64 must be a bigint');
  calls.push(['counter', name, value]);
}

export function gaugeSet(name, value) {
  calls.push(['gauge', name, value]);
}

export function resolve(name) {
  if (name === 'localhost') return ['127.0.0.1'];
  throw { payload: `${name} is not in the egress allow-list` };
}

export function httpSend(request) {
  calls.push(['http', request.method, request.url]);
  return httpHandler(request);
}
