// The dashboard: login, paged tables per resource, live events, logs and
// operator actions. Server data is only ever set as text (never HTML).
import { Api, ApiError, Backoff, OUT_OF_RANGE, query, sleep, transient } from './api.js';

const $ = (sel) => document.querySelector(sel);
const TOKEN_KEY = 'shoal.token';
const MAX_EVENTS = 500;
const MAX_LOG_LINES = 5000;
const RELIST_DEBOUNCE_MS = 300;

// el makes an element with attributes and text or element children.
function el(tag, attrs = {}, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(k == null ? '' : String(k)));
  return e;
}

const short = (id) => (id || '').slice(0, 12);
const enumName = (v, prefix) => (v || `${prefix}_UNKNOWN`).replace(`${prefix}_`, '').toLowerCase().replace(/_/g, '-');
const num = (v) => Number(v || 0);

function bytes(n) {
  n = num(n);
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(n < 10 && i ? 1 : 0)} ${u[i]}`;
}

function ago(ts) {
  if (!ts) return '';
  const s = Math.max(0, (Date.now() - Date.parse(ts)) / 1000);
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  return `${Math.floor(s / 3600)}h ago`;
}

function cls(text, ok, bad, warn) {
  const c = ok.includes(text) ? 's-ok' : bad.includes(text) ? 's-bad' : warn.includes(text) ? 's-warn' : '';
  return el('span', { class: c }, text);
}

function usage(used, total, fmt) {
  const pct = total > 0 ? Math.min(100, (100 * used) / total) : 0;
  const bar = el('span', { class: 'bar' }, el('span'));
  bar.firstChild.style.width = `${pct}%`;
  return el('span', { title: `${fmt(used)} reserved of ${fmt(total)}; ${fmt(Math.max(0, total - used))} free` }, bar, `${fmt(used)} / ${fmt(total)}`);
}

// ---- state -------------------------------------------------------------

const state = {
  api: null,
  canWrite: false,
  view: 'nodes',
  table: null,
  events: null,
  logs: null,
  nodeNames: new Map(),
  // Figures the browser tests read: when the login was submitted, when its
  // first view was listed, when the last per-row lookup ended.
  perf: { loginAt: 0, firstRenderMs: 0, idleAt: 0 },
};
window.shoalDashboard = state.perf;

function banner(msg, info) {
  const b = $('#banner');
  if (!msg) { b.hidden = true; return; }
  b.textContent = msg;
  b.className = info ? 'banner info' : 'banner';
  b.hidden = false;
}

function showError(err, what) {
  if (err instanceof ApiError && err.status === 401) return; // back at the login form already
  if (err instanceof ApiError && err.status === 403) {
    banner(`Forbidden (403): ${what} is not allowed for this token's role — ${err.message}`);
  } else if (err instanceof ApiError) {
    banner(`${what} failed (${err.status || 'network'}): ${err.message}`);
  } else {
    banner(`${what} failed: ${err && err.message}`);
  }
}

// retry calls fn until it returns, or throws an error that is an answer
// (not transient), waiting with back-off between tries while alive()
// holds; onWait(err, ms) hears of each wait. An operator's browser sees
// the same failures as the tests' — a manager restarting, the network
// failing for a moment — and the page must come back by itself.
async function retry(fn, alive, onWait) {
  const backoff = new Backoff();
  for (;;) {
    try {
      return await fn();
    } catch (e) {
      if (!transient(e) || !alive()) throw e;
      const ms = backoff.next();
      if (onWait) onWait(e, ms);
      await sleep(ms);
      if (!alive()) throw e;
    }
  }
}

// ---- lazy per-row lookups (node names, node reservations, digests) ------

// Limiter runs at most n lookups at once so a page of rows does not open
// hundreds of requests.
class Limiter {
  constructor(n) { this.n = n; this.running = 0; this.queue = []; }
  run(fn) {
    return new Promise((resolve, reject) => {
      this.queue.push({ fn, resolve, reject });
      this.pump();
    });
  }
  pump() {
    while (this.running < this.n && this.queue.length) {
      const { fn, resolve, reject } = this.queue.shift();
      this.running++;
      fn().then(resolve, reject).finally(() => {
        this.running--;
        this.pump();
        if (!this.running && !this.queue.length) state.perf.idleAt = performance.now();
      });
    }
  }
}
const limiter = new Limiter(4);
state.perf.busy = () => limiter.running + limiter.queue.length;
const lookups = new Map(); // key -> Promise

function lookup(key, fn) {
  if (lookups.has(key)) return lookups.get(key);
  const p = limiter.run(fn).catch((e) => { lookups.delete(key); throw e; });
  lookups.set(key, p);
  return p;
}

function nodeName(id) {
  if (!id) return Promise.resolve('');
  if (state.nodeNames.has(id)) return Promise.resolve(state.nodeNames.get(id));
  return lookup(`node:${id}`, async () => {
    const r = await state.api.get(`/v1/nodes/${encodeURIComponent(id)}`);
    const n = r.node || {};
    const name = (n.spec && n.spec.name) || (n.description && n.description.hostname) || short(id);
    state.nodeNames.set(id, name);
    return name;
  });
}

// nodeReserved sums the reservations of the tasks meant to run on a node.
function nodeReserved(id) {
  return lookup(`reserved:${id}`, async () => {
    let cpu = 0, mem = 0, token = '';
    do {
      const r = await state.api.get(`/v1/tasks${query({ filters: { node: id, 'desired-state': 'running' }, pageSize: 1000, pageToken: token })}`);
      for (const t of r.tasks || []) {
        const res = (t.spec && t.spec.resources && t.spec.resources.reservations) || {};
        cpu += num(res.nanoCpus);
        mem += num(res.memoryBytes);
      }
      token = r.nextPageToken || '';
    } while (token);
    return { cpu, mem };
  });
}

// serviceDigest is the image digest a running task of the service reports.
function serviceDigest(id) {
  return lookup(`digest:${id}`, async () => {
    const r = await state.api.get(`/v1/tasks${query({ filters: { service: id, 'desired-state': 'running' }, pageSize: 1 })}`);
    const t = (r.tasks || [])[0];
    return (t && t.status && t.status.imageDigest) || '';
  });
}

function later(cell, promise, render) {
  promise.then((v) => { cell.replaceChildren(render(v)); }, () => { cell.replaceChildren(el('span', { class: 'muted' }, '?')); });
}

// ---- views -------------------------------------------------------------

function actionButton(label, action, onclick) {
  return el('button', { 'data-action': action, disabled: !state.canWrite, title: state.canWrite ? null : 'needs an operator token', onclick }, label);
}

const views = {
  nodes: {
    path: '/v1/nodes', key: 'nodes', kind: 'node',
    filters: [{ key: 'name', label: 'Name' }, { key: 'role', label: 'Role', options: ['', 'manager', 'worker'] },
      { key: 'availability', label: 'Availability', options: ['', 'active', 'pause', 'drain'] }, { key: 'state', label: 'State', options: ['', 'ready', 'down', 'disconnected'] }],
    columns: ['Name', 'ID', 'Role', 'Availability', 'State', 'Gossip', 'Heartbeat', 'Address', 'CPU reserved', 'Memory reserved', ''],
    row(n) {
      const st = n.status || {}, ms = n.managerStatus, res = (n.description && n.description.resources) || {};
      const name = (n.spec && n.spec.name) || (n.description && n.description.hostname) || short(n.meta.id);
      state.nodeNames.set(n.meta.id, name);
      const avail = enumName(n.spec && n.spec.availability, 'NODE_AVAILABILITY');
      const role = enumName(n.role, 'NODE_ROLE') + (ms && ms.leader ? ' (leader)' : '');
      const cpu = el('td'), mem = el('td');
      // Reservations change with the node's tasks: task events drop the
      // cached sum (Events.flush), not node events.
      const reserved = nodeReserved(n.meta.id);
      later(cpu, reserved, (r) => usage(r.cpu, num(res.nanoCpus), (v) => `${(v / 1e9).toFixed(2)}`));
      later(mem, reserved, (r) => usage(r.mem, num(res.memoryBytes), bytes));
      const gossip = (st.gossipState || '—') + (st.unreachable ? ' (unreachable)' : '');
      const drain = avail === 'drain';
      return [
        el('td', {}, name), el('td', { class: 'mono' }, short(n.meta.id)), el('td', {}, role),
        el('td', {}, cls(avail, ['active'], [], ['drain', 'pause'])),
        el('td', {}, cls(enumName(st.state, 'NODE_STATE'), ['ready'], ['down'], ['disconnected', 'unknown'])),
        el('td', {}, gossip), el('td', { title: st.lastHeartbeat || '' }, ago(st.lastHeartbeat)), el('td', { class: 'mono' }, st.addr || ''),
        cpu, mem,
        el('td', { class: 'actions' }, drain
          ? actionButton('Activate', 'activate', () => setAvailability(n.meta.id, 'NODE_AVAILABILITY_ACTIVE'))
          : actionButton('Drain', 'drain', () => setAvailability(n.meta.id, 'NODE_AVAILABILITY_DRAIN'))),
      ];
    },
  },
  services: {
    path: '/v1/services', key: 'services', kind: 'service',
    filters: [{ key: 'name', label: 'Name' }, { key: 'mode', label: 'Mode', options: ['', 'replicated', 'global', 'replicated-job', 'global-job'] }],
    columns: ['Name', 'ID', 'Mode', 'Replicas', 'Image', 'Digest', 'Update', 'Ports', ''],
    row(s, extra) {
      const spec = s.spec || {}, c = (spec.task && spec.task.container) || {};
      const mode = enumName(spec.mode || 'SERVICE_MODE_REPLICATED', 'SERVICE_MODE');
      const counts = (extra && extra.replicas && extra.replicas[s.meta.id]) || state.table.replicas[s.meta.id] || {};
      const desired = mode === 'replicated' ? num(spec.replicas) : num(counts.desired);
      const running = num(counts.running);
      const us = s.updateStatus;
      const upd = us ? `${enumName(us.state, 'UPDATE_STATE')}${us.message ? ': ' + us.message : ''}` : '';
      const ports = ((spec.endpoint && spec.endpoint.ports) || [])
        .map((p) => `${p.publishedPort || ''}:${p.targetPort}/${p.protocol || 'tcp'}${p.publishMode === 'host' ? ' (host)' : ''}`).join(', ');
      const digest = el('td', { class: 'mono' });
      const pinned = (c.image || '').split('@')[1];
      if (pinned) digest.textContent = pinned.slice(0, 19);
      else later(digest, serviceDigest(s.meta.id), (d) => (d || '').slice(0, 19));
      return [
        el('td', {}, spec.name), el('td', { class: 'mono' }, short(s.meta.id)), el('td', {}, mode),
        el('td', { 'data-col': 'replicas' }, el('span', { class: running === desired ? 's-ok' : 's-warn' }, `${running}/${desired}`)),
        el('td', { class: 'mono' }, c.image || ''), digest, el('td', { class: 'wrap' }, upd), el('td', {}, ports),
        el('td', { class: 'actions' },
          actionButton('Scale', 'scale', () => scaleService(s)),
          actionButton('Image', 'image', () => updateImage(s)),
          actionButton('Rollback', 'rollback', () => rollbackService(s)),
          el('button', { 'data-action': 'logs', onclick: () => openLogs(spec.name) }, 'Logs'),
          el('button', { 'data-action': 'tasks', onclick: () => openTasks(spec.name) }, 'Tasks')),
      ];
    },
  },
  tasks: {
    path: '/v1/tasks', key: 'tasks', kind: 'task',
    filters: [{ key: 'service', label: 'Service' }, { key: 'node', label: 'Node' },
      { key: 'desired-state', label: 'Desired', options: ['', 'running', 'shutdown'] },
      { key: 'state', label: 'State', options: ['', 'pending', 'assigned', 'starting', 'running', 'complete', 'shutdown', 'failed', 'rejected', 'orphaned'] }],
    columns: ['ID', 'Task', 'Node', 'Desired', 'State', 'Health', 'Address', 'Error', 'Updated'],
    row(t) {
      const st = t.status || {};
      const node = el('td');
      if (t.nodeId) later(node, nodeName(t.nodeId), (n) => n);
      const addrs = (st.addresses && st.addresses.length ? st.addresses : (t.networks || []).map((a) => a.address)).filter(Boolean);
      const health = st.health ? enumName(st.health, 'TASK_HEALTH') : '';
      return [
        el('td', { class: 'mono' }, short(t.meta.id)), el('td', {}, `${t.serviceName}.${t.slot || 0}`), node,
        el('td', {}, enumName(t.desiredState || 'TASK_STATE_NEW', 'TASK_STATE')),
        el('td', {}, cls(enumName(st.state || 'TASK_STATE_NEW', 'TASK_STATE'), ['running', 'complete'], ['failed', 'rejected', 'orphaned'], ['pending', 'assigned', 'preparing', 'starting'])),
        el('td', {}, health === 'none' ? '' : cls(health, ['healthy'], ['unhealthy'], ['starting'])),
        el('td', { class: 'mono' }, addrs.join(', ')), el('td', { class: 'wrap s-bad' }, st.err || ''),
        el('td', { title: st.timestamp || '' }, ago(st.timestamp)),
      ];
    },
  },
  networks: {
    path: '/v1/networks', key: 'networks', kind: 'network', unpaged: true,
    filters: [{ key: 'name', label: 'Name' }, { key: 'driver', label: 'Driver', options: ['', 'overlay', 'bridge'] }],
    columns: ['Name', 'ID', 'Driver', 'Subnet', 'Gateway', 'VNI', 'Options'],
    row(n) {
      const sp = n.spec || {};
      const opts = [sp.attachable && 'attachable', sp.internal && 'internal', sp.mtu && `mtu ${sp.mtu}`].filter(Boolean).join(', ');
      return [el('td', {}, sp.name), el('td', { class: 'mono' }, short(n.meta.id)), el('td', {}, sp.driver || 'overlay'),
        el('td', { class: 'mono' }, n.subnet || sp.subnet || ''), el('td', { class: 'mono' }, n.gateway || sp.gateway || ''), el('td', {}, n.vni || ''), el('td', {}, opts)];
    },
  },
};

// ---- paged table ---------------------------------------------------------

// Table shows one server page of a view. Rows are keyed by object id so a
// re-list or an event updates the rows in place.
class Table {
  constructor(name) {
    this.name = name;
    this.def = views[name];
    this.filters = {};
    this.tokens = ['']; // page tokens of the pages seen: tokens[i] fetches page i
    this.page = 0;
    this.next = '';
    this.rows = new Map(); // id -> {tr, obj}
    this.replicas = {};
    this.loading = null;
    this.relistTimer = 0;
  }

  pageSize() { return Number($('#page-size').value); }

  // loadRetrying lists this page, trying again with back-off while the
  // API cannot be reached and this table is on screen.
  async loadRetrying() {
    let waited = false;
    await retry(() => this.load(), () => state.table === this, (e, ms) => {
      waited = true;
      banner(`Listing failed (${e.message}); retrying in ${(ms / 1000).toFixed(1)}s`);
    });
    if (waited && state.table === this) banner('');
  }

  async load() {
    const def = this.def;
    const q = def.unpaged ? query({ filters: this.filters }) : query({ filters: this.filters, pageSize: this.pageSize(), pageToken: this.tokens[this.page] });
    const r = await state.api.get(def.path + q);
    if (state.table !== this) return;
    this.replicas = r.replicas || this.replicas;
    this.next = r.nextPageToken || '';
    const objs = r[def.key] || [];
    const tbody = $('#table tbody');
    const seen = new Set();
    let before = tbody.firstChild;
    for (const o of objs) {
      const id = o.meta.id;
      seen.add(id);
      let row = this.rows.get(id);
      if (!row) {
        row = { tr: el('tr', { 'data-id': id }), obj: null };
        this.rows.set(id, row);
      }
      if (row.obj === null || row.obj.meta.version !== o.meta.version || def.kind === 'service' || def.kind === 'node') {
        this.fill(row, o, r);
      }
      if (row.tr !== before) tbody.insertBefore(row.tr, before);
      else before = before.nextSibling;
    }
    for (const [id, row] of this.rows) {
      if (!seen.has(id)) { row.tr.remove(); this.rows.delete(id); }
    }
    const total = r.total != null ? Number(r.total) : objs.length;
    const from = def.unpaged ? 1 : this.page * this.pageSize() + 1;
    $('#page-info').textContent = objs.length ? `${from}–${from + objs.length - 1} of ${total}` : `0 of ${total}`;
    $('#prev').disabled = def.unpaged || this.page === 0;
    $('#next').disabled = def.unpaged || !this.next;
    document.body.dataset.rendered = `${this.name}:${Date.now()}`;
  }

  fill(row, obj, extra) {
    row.obj = obj;
    row.tr.replaceChildren(...this.def.row(obj, extra));
  }

  // apply updates the row of obj in place if it is on this page.
  apply(action, obj) {
    const row = this.rows.get(obj.meta.id);
    if (action === 'WATCH_ACTION_DELETE') {
      if (row) this.relist();
      return;
    }
    if (!row) {
      if (action === 'WATCH_ACTION_CREATE') this.relist();
      return;
    }
    this.fill(row, obj, null);
    row.tr.classList.remove('flash');
    void row.tr.offsetWidth; // restart the animation
    row.tr.classList.add('flash');
  }

  // relist re-reads this page soon, once however many events ask for it.
  relist() {
    if (this.relistTimer) return;
    this.relistTimer = setTimeout(() => {
      this.relistTimer = 0;
      this.loadRetrying().catch((e) => showError(e, 'Listing'));
    }, RELIST_DEBOUNCE_MS);
  }
}

// ---- events --------------------------------------------------------------

function eventKind(ev) {
  const o = ev.object || {};
  for (const k of ['node', 'service', 'task', 'network', 'cluster']) if (o[k]) return [k, o[k]];
  return ['', null];
}

function describe(kind, obj) {
  if (!obj) return '';
  switch (kind) {
    case 'node': return (obj.spec && obj.spec.name) || (obj.description && obj.description.hostname) || short(obj.meta.id);
    case 'service': return `${obj.spec.name} (replicas ${num(obj.spec.replicas)}, ${(obj.spec.task && obj.spec.task.container && obj.spec.task.container.image) || ''})`;
    case 'task': return `${obj.serviceName}.${obj.slot || 0} ${enumName(obj.status && obj.status.state, 'TASK_STATE')}`;
    case 'network': return obj.spec && obj.spec.name;
    default: return obj.name || '';
  }
}

// Events owns the watch loop: one stream at a time, reconnecting with
// back-off, resuming after the last index seen.
class Events {
  constructor() {
    this.from = '0';
    this.log = []; // newest first: {index, action, kind, id, name, at}
    this.pending = [];
    this.frame = 0;
    this.abort = new AbortController();
    this.stopped = false;
    this.live = false;
    // The first view is listed at once, before this stream starts: list
    // it again once the stream is open, so no change falls in between.
    this.relistOnOpen = true;
    this.setLive(false, 'connecting');
    this.run();
  }

  stop() { this.stopped = true; this.abort.abort(); }

  opened() {
    if (!this.relistOnOpen) return;
    this.relistOnOpen = false;
    if (state.table) state.table.relist();
  }

  setLive(on, text) {
    this.live = on;
    const l = $('#live');
    l.className = on ? 'live on' : 'live off';
    l.textContent = text;
  }

  async run() {
    const backoff = new Backoff();
    while (!this.stopped) {
      try {
        await state.api.stream(`/v1/events${query({ extra: { from_index: this.from } })}`, (ev) => {
          backoff.reset();
          // Headers come at once (the server flushes them), but an
          // event means the stream is open in any case.
          if (!this.live) this.setLive(true, 'live');
          this.opened();
          this.from = (BigInt(ev.index) + 1n).toString();
          this.pending.push(ev);
          if (!this.frame) this.frame = requestAnimationFrame(() => this.flush());
        }, this.abort.signal, () => { backoff.reset(); this.setLive(true, 'live'); this.opened(); });
        if (this.stopped) return;
      } catch (e) {
        if (this.stopped) return;
        if (e instanceof ApiError && e.status === 401) return;
        if (e instanceof ApiError && e.code === OUT_OF_RANGE) {
          // The server no longer holds our index: watch from now on and
          // re-list what is on screen once that stream is open (a list
          // made before it could miss a change made in between).
          this.from = '0';
        }
        this.lastError = e.message;
      }
      // A stream that saw no event has no index to resume from: the next
      // one watches from now, so what changed in between is read by
      // listing the page again once it is open.
      if (this.from === '0') this.relistOnOpen = true;
      const ms = backoff.next();
      this.setLive(false, `reconnecting in ${(ms / 1000).toFixed(1)}s`);
      await sleep(ms, this.abort.signal);
    }
  }

  // flush applies the events of one animation frame: the latest version
  // of each object goes to the table on screen once.
  flush() {
    this.frame = 0;
    const evs = this.pending;
    this.pending = [];
    const latest = new Map();
    const now = Date.now();
    const t = state.table;
    let counts = false;
    for (const ev of evs) {
      const [kind, obj] = eventKind(ev);
      if (!obj) continue;
      const id = (obj.meta && obj.meta.id) || '';
      this.log.unshift({ index: ev.index, action: enumName(ev.action, 'WATCH_ACTION'), kind, id, name: describe(kind, obj), at: now });
      latest.set(`${kind}:${id}`, [ev.action, kind, obj]);
      if (kind === 'task') {
        lookups.delete(`reserved:${obj.nodeId}`);
        lookups.delete(`digest:${obj.serviceId}`);
        counts = true;
      }
    }
    if (this.log.length > MAX_EVENTS) this.log.length = MAX_EVENTS;
    if (t) {
      for (const [action, kind, obj] of latest.values()) if (t.def.kind === kind) t.apply(action, obj);
      // Replica counts and reservations come from the tasks: re-list the
      // visible page (debounced) rather than count here.
      if (counts && (t.def.kind === 'service' || t.def.kind === 'node')) t.relist();
    }
    if (state.view === 'events') renderEvents(evs.length);
  }
}

function renderEvents() {
  const tbody = $('#table tbody');
  const have = new Set([...tbody.children].map((tr) => tr.dataset.key));
  const rows = [];
  for (const e of state.events.log) {
    const key = `${e.index}:${e.kind}:${e.id}`;
    if (have.has(key)) break;
    rows.push(el('tr', { 'data-key': key, 'data-id': e.id, 'data-kind': e.kind, 'data-shown-at': String(Date.now()) },
      el('td', {}, new Date(e.at).toLocaleTimeString()), el('td', {}, e.index), el('td', {}, e.action), el('td', {}, e.kind),
      el('td', { class: 'mono' }, short(e.id)), el('td', { class: 'wrap' }, e.name)));
  }
  tbody.prepend(...rows);
  while (tbody.children.length > MAX_EVENTS) tbody.lastChild.remove();
  $('#page-info').textContent = `${tbody.children.length} latest`;
}

// ---- logs ----------------------------------------------------------------

function openLogs(service) {
  state.logService = service;
  show('logs');
}

function openTasks(service) {
  show('tasks', { service });
}

function decode(b64) {
  const bin = atob(b64 || '');
  const u = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) u[i] = bin.charCodeAt(i);
  return new TextDecoder().decode(u);
}

function followLogs(service) {
  const pre = $('#logs');
  pre.textContent = '';
  const abort = new AbortController();
  state.logs = abort;
  const lines = [];
  let frame = 0;
  const draw = () => {
    frame = 0;
    const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    pre.textContent = lines.join('');
    if (atEnd) pre.scrollTop = pre.scrollHeight;
  };
  (async () => {
    const backoff = new Backoff();
    while (!abort.signal.aborted) {
      try {
        await state.api.stream(`/v1/logs${query({ extra: { service, 'options.follow': 'true', 'options.tail': '200' } })}`, (r) => {
          for (const m of r.messages || []) {
            lines.push(`${m.serviceName}.${m.slot || 0}@${state.nodeNames.get(m.nodeId) || short(m.nodeId)} | ${decode(m.data)}`);
          }
          for (const w of r.warnings || []) lines.push(`[warning] ${w}\n`);
          if (lines.length > MAX_LOG_LINES) lines.splice(0, lines.length - MAX_LOG_LINES);
          if (!frame) frame = requestAnimationFrame(draw);
        }, abort.signal, () => { backoff.reset(); });
        return;
      } catch (e) {
        if (abort.signal.aborted || (e instanceof ApiError && (e.status === 401 || e.status === 404 || e.status === 400))) {
          if (!abort.signal.aborted) showError(e, 'Logs');
          return;
        }
        await sleep(backoff.next(), abort.signal);
      }
    }
  })();
}

// ---- actions -------------------------------------------------------------

function ask(title, value) {
  const d = $('#dialog');
  $('#dialog-title').textContent = title;
  const input = $('#dialog-input');
  input.value = value;
  d.returnValue = '';
  d.showModal();
  input.select();
  return new Promise((resolve) => {
    d.addEventListener('close', () => resolve(d.returnValue === 'ok' ? input.value.trim() : null), { once: true });
  });
}

// updateService re-reads the service and writes spec changes with its
// version (a conflict is retried once with a fresh read).
async function updateService(id, change, what) {
  for (let attempt = 0; ; attempt++) {
    try {
      const { service } = await state.api.get(`/v1/services/${encodeURIComponent(id)}`);
      const spec = service.spec;
      change(spec);
      await state.api.call('PATCH', `/v1/services/${encodeURIComponent(id)}`, { version: service.meta.version, spec });
      banner(`${what}: done`, true);
      return;
    } catch (e) {
      if (e instanceof ApiError && e.status === 409 && attempt === 0) continue;
      showError(e, what);
      return;
    }
  }
}

async function scaleService(s) {
  const v = await ask(`Scale ${s.spec.name} to how many replicas?`, String(num(s.spec.replicas)));
  if (v == null) return;
  if (!/^\d+$/.test(v)) { banner(`Scale: "${v}" is not a whole number`); return; }
  await updateService(s.meta.id, (spec) => { spec.replicas = v; }, `Scale ${s.spec.name}`);
}

async function updateImage(s) {
  const cur = (s.spec.task && s.spec.task.container && s.spec.task.container.image) || '';
  const v = await ask(`New image for ${s.spec.name}`, cur);
  if (!v) return;
  await updateService(s.meta.id, (spec) => { spec.task.container.image = v; }, `Update ${s.spec.name}`);
}

async function rollbackService(s) {
  try {
    await state.api.call('POST', `/v1/services/${encodeURIComponent(s.meta.id)}:rollback`, {});
    banner(`Rollback ${s.spec.name}: started`, true);
  } catch (e) { showError(e, `Rollback ${s.spec.name}`); }
}

async function setAvailability(id, availability) {
  const what = availability === 'NODE_AVAILABILITY_DRAIN' ? 'Drain' : 'Activate';
  for (let attempt = 0; ; attempt++) {
    try {
      const { node } = await state.api.get(`/v1/nodes/${encodeURIComponent(id)}`);
      const spec = { ...(node.spec || {}), availability };
      await state.api.call('PATCH', `/v1/nodes/${encodeURIComponent(id)}`, { version: node.meta.version, spec });
      banner(`${what} ${state.nodeNames.get(id) || short(id)}: done`, true);
      return;
    } catch (e) {
      // The node object changes with heartbeats: retry a conflict.
      if (e instanceof ApiError && e.status === 409 && attempt < 3) continue;
      showError(e, what);
      return;
    }
  }
}

// ---- navigation ----------------------------------------------------------

function renderFilters(name, preset) {
  const box = $('#filters');
  box.replaceChildren();
  const def = views[name];
  if (!def) return;
  for (const f of def.filters) {
    const input = f.options
      ? el('select', { 'data-filter': f.key }, ...f.options.map((o) => el('option', { value: o }, o || 'any')))
      : el('input', { 'data-filter': f.key, placeholder: f.key === 'name' ? 'prefix' : 'name or id', size: 14 });
    if (preset && preset[f.key]) input.value = preset[f.key];
    let timer = 0;
    const change = () => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        const t = state.table;
        if (!t) return;
        t.filters[f.key] = input.value.trim();
        t.tokens = [''];
        t.page = 0;
        t.loadRetrying().catch((e) => showError(e, 'Listing'));
      }, 250);
    };
    input.addEventListener('change', change);
    if (!f.options) input.addEventListener('input', change);
    box.append(el('label', {}, `${f.label} `, input));
  }
}

function show(name, preset) {
  state.view = name;
  for (const b of document.querySelectorAll('#tabs button')) b.classList.toggle('active', b.dataset.view === name);
  if (state.logs) { state.logs.abort(); state.logs = null; }
  banner('');
  const table = $('#table'), pre = $('#logs');
  $('#table tbody').replaceChildren();
  renderFilters(name, preset);
  $('.pager').hidden = name === 'logs';
  if (name === 'logs') {
    table.hidden = true;
    pre.hidden = false;
    state.table = null;
    const box = $('#filters');
    const input = el('input', { 'data-filter': 'logs-service', placeholder: 'service name', value: state.logService || '' });
    box.append(el('label', {}, 'Service ', input), el('button', { id: 'follow', onclick: () => { state.logService = input.value.trim(); if (state.logs) state.logs.abort(); followLogs(state.logService); } }, 'Follow'));
    if (state.logService) followLogs(state.logService);
    else pre.textContent = 'Pick a service (Services → Logs) or type its name.';
    return;
  }
  table.hidden = false;
  pre.hidden = true;
  if (name === 'events') {
    state.table = null;
    $('#table thead').replaceChildren(el('tr', {}, ...['Time', 'Index', 'Action', 'Kind', 'ID', 'Object'].map((c) => el('th', {}, c))));
    $('#prev').disabled = true;
    $('#next').disabled = true;
    renderEvents();
    return;
  }
  const t = new Table(name);
  if (preset) Object.assign(t.filters, preset);
  state.table = t;
  $('#table thead').replaceChildren(el('tr', {}, ...views[name].columns.map((c) => el('th', {}, c))));
  return t.loadRetrying().catch((e) => showError(e, 'Listing'));
}

// ---- login ---------------------------------------------------------------

function logout(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  if (state.events) state.events.stop();
  if (state.logs) state.logs.abort();
  state.events = null;
  state.table = null;
  state.api = null;
  lookups.clear();
  $('#view').hidden = true;
  $('#tabs').hidden = true;
  $('#logout').hidden = true;
  $('#who').textContent = '';
  $('#live').className = 'live off';
  $('#live').textContent = 'offline';
  banner('');
  $('#login').hidden = false;
  const le = $('#login-error');
  le.hidden = !message;
  le.textContent = message || '';
}

// probeWrite asks whether the token may write without writing anything:
// the authorizer refuses a viewer (403) before the call runs; for an
// operator the call itself fails, finding no such node. A network failure
// is no answer: it is retried.
async function probeWrite(api, alive) {
  try {
    await retry(() => api.call('PATCH', '/v1/nodes/shoal-dashboard-role-probe', { version: '1', spec: {} }), alive);
    return true;
  } catch (e) {
    return !(e instanceof ApiError && (e.status === 403 || e.status === 401));
  }
}

async function login(token) {
  state.perf.loginAt = performance.now();
  const api = new Api(token, (err) => logout(`Token rejected (401): ${err.message}`));
  state.api = api;
  // Until it answers, the API is tried again with back-off (the form says
  // so), until the user logs in again or out.
  const alive = () => state.api === api;
  try {
    await retry(() => api.get('/v1/cluster'), alive, (e, ms) => {
      const le = $('#login-error');
      le.textContent = `Cannot reach the API: ${e.message} — retrying in ${(ms / 1000).toFixed(1)}s`;
      le.hidden = false;
      $('#login').hidden = false;
    });
  } catch (e) {
    if (alive() && !(e instanceof ApiError && e.status === 401)) logout(`Cannot use the API: ${e.message}`);
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  state.canWrite = await probeWrite(api, alive);
  if (!alive()) return;
  $('#login').hidden = true;
  $('#view').hidden = false;
  $('#tabs').hidden = false;
  $('#logout').hidden = false;
  $('#who').textContent = state.canWrite ? 'operator' : 'read-only';
  document.body.dataset.role = state.canWrite ? 'write' : 'read';
  state.events = new Events();
  await show(location.hash.slice(1) in views ? location.hash.slice(1) : 'nodes');
  state.perf.firstRenderMs = performance.now() - state.perf.loginAt;
}

document.addEventListener('DOMContentLoaded', () => {
  $('#login').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const tok = $('#token').value.trim();
    $('#token').value = '';
    login(tok);
  });
  $('#logout').addEventListener('click', () => logout(''));
  for (const b of document.querySelectorAll('#tabs button')) {
    b.addEventListener('click', () => { location.hash = b.dataset.view; show(b.dataset.view); });
  }
  $('#prev').addEventListener('click', () => {
    const t = state.table;
    if (!t || t.page === 0) return;
    t.page--;
    t.loadRetrying().catch((e) => showError(e, 'Listing'));
  });
  $('#next').addEventListener('click', () => {
    const t = state.table;
    if (!t || !t.next) return;
    t.tokens[t.page + 1] = t.next;
    t.page++;
    t.loadRetrying().catch((e) => showError(e, 'Listing'));
  });
  $('#page-size').addEventListener('change', () => {
    const t = state.table;
    if (!t) return;
    t.tokens = [''];
    t.page = 0;
    t.loadRetrying().catch((e) => showError(e, 'Listing'));
  });
  // A page left for another (or frozen in the back/forward cache) ends its
  // streams: they hold connections, of which HTTP/1.1 allows six per host.
  window.addEventListener('pagehide', () => {
    if (state.events) state.events.stop();
    if (state.logs) state.logs.abort();
  });
  window.addEventListener('pageshow', (ev) => {
    if (ev.persisted && state.api) {
      state.events = new Events();
      show(state.view);
    }
  });
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) login(saved);
  else logout('');
});
