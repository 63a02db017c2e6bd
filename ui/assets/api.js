// The JSON API of the same origin (/v1/...), with the bearer token.
// Replies are protojson; errors {code, message, details} with the HTTP
// status of their class; streams NDJSON lines {"result": ...} or
// {"error": {...}}.

// gRPC codes the dashboard acts on (errors inside a stream carry these).
export const OUT_OF_RANGE = 11;
const grpcToHTTP = { 3: 400, 5: 404, 6: 409, 7: 403, 9: 400, 10: 409, 11: 400, 14: 503, 16: 401 };

// transient says whether err may pass by itself: the network failed (the
// browser's "Failed to fetch": a connection refused or reset, the browser
// dropping requests when its host's network changes, a manager
// restarting) or the server had no leader or could not reach it (502,
// 503, 504). Those are retried with back-off; the others are answers.
export function transient(err) {
  return err instanceof ApiError && [0, 502, 503, 504].includes(err.status);
}

// sleep resolves after ms, or at once if signal aborts.
export function sleep(ms, signal) {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    if (signal) signal.addEventListener('abort', () => { clearTimeout(t); resolve(); }, { once: true });
  });
}

// Backoff is the retry delay: 250 ms doubling to 8 s, back to 250 ms after
// a success.
export class Backoff {
  constructor() { this.reset(); }
  reset() { this.ms = 250; }
  next() { const ms = this.ms; this.ms = Math.min(this.ms * 2, 8000); return ms; }
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || `HTTP ${status}`);
    this.status = status;
    this.code = code;
  }
}

// query builds a list query: filters[key]=value and page.page_size/token.
export function query(params = {}) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params.filters || {})) {
    if (v !== '' && v != null) q.set(`filters[${k}]`, v);
  }
  if (params.pageSize) q.set('page.page_size', String(params.pageSize));
  if (params.pageToken) q.set('page.page_token', params.pageToken);
  for (const [k, v] of Object.entries(params.extra || {})) q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : '';
}

export class Api {
  // onUnauthorized is called with the ApiError of any 401.
  constructor(token, onUnauthorized) {
    this.token = token;
    this.onUnauthorized = onUnauthorized;
  }

  headers(extra) {
    return { Authorization: `Bearer ${this.token}`, ...extra };
  }

  async fail(res) {
    let body = {};
    try { body = JSON.parse(await res.text()); } catch { /* not JSON */ }
    const err = new ApiError(res.status, body.code, body.message || res.statusText);
    if (res.status === 401) this.onUnauthorized(err);
    return err;
  }

  async call(method, path, body) {
    let res;
    try {
      res = await fetch(path, {
        method,
        cache: 'no-store',
        headers: this.headers(body === undefined ? { Accept: 'application/json' } : { Accept: 'application/json', 'Content-Type': 'application/json' }),
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      throw new ApiError(0, 14, `network error: ${e.message}`);
    }
    if (!res.ok) throw await this.fail(res);
    const text = await res.text();
    return text ? JSON.parse(text) : {};
  }

  get(path) { return this.call('GET', path); }

  // stream reads an NDJSON stream, calling onResult for each result, until
  // the server ends it (resolves) or it fails (rejects with ApiError).
  async stream(path, onResult, signal, onOpen) {
    let res;
    try {
      res = await fetch(path, { cache: 'no-store', signal, headers: this.headers({ Accept: 'application/x-ndjson' }) });
    } catch (e) {
      if (signal && signal.aborted) throw e;
      throw new ApiError(0, 14, `network error: ${e.message}`);
    }
    if (!res.ok) throw await this.fail(res);
    if (onOpen) onOpen();
    const reader = res.body.getReader();
    const dec = new TextDecoder();
    let buf = '';
    for (;;) {
      let chunk;
      try {
        chunk = await reader.read();
      } catch (e) {
        if (signal && signal.aborted) throw e;
        throw new ApiError(0, 14, `stream broken: ${e.message}`);
      }
      if (chunk.done) return;
      buf += dec.decode(chunk.value, { stream: true });
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i).trim();
        buf = buf.slice(i + 1);
        if (!line) continue;
        const msg = JSON.parse(line);
        if (msg.error) {
          const code = msg.error.code;
          const err = new ApiError(grpcToHTTP[code] || 500, code, msg.error.message);
          if (err.status === 401) this.onUnauthorized(err);
          throw err;
        }
        if (msg.result) onResult(msg.result);
      }
    }
  }
}
