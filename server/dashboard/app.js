// The Spool dashboard: queue table, live charts, failed jobs, job lookup.
//
// Everything comes from the HTTP API of the server that serves this page. The live parts are
// fed by GET /v1/events, read with fetch() rather than EventSource because EventSource cannot
// send an Authorization header, and a token must never travel in a URL.
'use strict';

const TOKEN_KEY = 'spool.token';
const HISTORY_SECONDS = 300; // what the charts show
const RATE_WINDOW = 5; // seconds over which in/out rates are averaged
const MAX_EVENTS = 50; // recent job events listed
const PALETTE = ['#2f6fdb', '#d9480f', '#2b8a3e', '#862e9c', '#e67700', '#0b7285', '#c2255c',
  '#5c940d', '#364fc7', '#a61e4d'];

const $ = (id) => document.getElementById(id);

// Builds an element; children are nodes or strings (always inserted as text, never as HTML).
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

// ---- API access and the token -------------------------------------------------------------

class Unauthorized extends Error {}

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

let tokenWaiters = [];

// Resolves once the user has given a token.
function askToken(rejected) {
  $('token-panel').hidden = false;
  $('token-error').hidden = !rejected;
  $('token-error').textContent = rejected ? 'The server refused that token.' : '';
  $('token-input').focus();
  return new Promise((resolve) => tokenWaiters.push(resolve));
}

$('token-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $('token-input').value.trim());
  $('token-input').value = '';
  $('token-panel').hidden = true;
  $('forget-token').hidden = false;
  const waiters = tokenWaiters;
  tokenWaiters = [];
  waiters.forEach((w) => w());
});

$('forget-token').addEventListener('click', () => {
  sessionStorage.removeItem(TOKEN_KEY);
  location.reload();
});

// fetch() with the token; on 401 asks for a token and tries again.
async function apiFetch(path, opts = {}) {
  for (;;) {
    const headers = Object.assign({}, opts.headers);
    if (token()) headers.Authorization = 'Bearer ' + token();
    const res = await fetch(path, Object.assign({}, opts, { headers }));
    if (res.status !== 401) return res;
    const hadToken = !!token();
    sessionStorage.removeItem(TOKEN_KEY);
    await askToken(hadToken);
  }
}

// A JSON call; throws with the API's error message on a non-2xx answer.
async function api(path, opts) {
  const res = await apiFetch(path, opts);
  const body = await res.json().catch(() => null);
  if (!res.ok) {
    const msg = body && body.error ? body.error.message : res.status + ' ' + res.statusText;
    throw new Error(msg);
  }
  return body;
}

function setStatus(state, text) {
  const s = $('status');
  s.dataset.state = state;
  s.textContent = text || state;
}

// ---- the event stream ---------------------------------------------------------------------

// Reads GET /v1/events for ever, reconnecting after an error or a drop.
async function streamEvents() {
  for (;;) {
    try {
      const res = await apiFetch('/v1/events');
      if (!res.ok || !res.body) throw new Error('event stream: HTTP ' + res.status);
      setStatus('live');
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += decoder.decode(value, { stream: true });
        let end;
        while ((end = buf.indexOf('\n\n')) >= 0) {
          dispatch(buf.slice(0, end));
          buf = buf.slice(end + 2);
        }
      }
      setStatus('connecting', 'reconnecting');
    } catch (e) {
      setStatus('error', 'disconnected');
    }
    await new Promise((r) => setTimeout(r, 2000));
  }
}

// One SSE block: "event:" and "data:" lines; comments (": ping") and "retry:" are ignored.
function dispatch(block) {
  let event = 'message';
  const data = [];
  for (const line of block.split('\n')) {
    if (line.startsWith('event:')) event = line.slice(6).trim();
    else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
  }
  if (!data.length) return;
  let msg;
  try {
    msg = JSON.parse(data.join('\n'));
  } catch (e) {
    return;
  }
  if (event === 'counts') onCounts(msg.queues || []);
  else if (event === 'job') onJob(msg);
  else if (event === 'dropped') setStatus('connecting', 'catching up');
}

// ---- queue samples, rates and the table ---------------------------------------------------

const samples = { t: [], queues: new Map() }; // queue name -> {depth: [], out: [], ...}
let latest = new Map(); // queue name -> the last queue object seen

function depthOf(q) {
  return q.counts.scheduled + q.counts.queued + q.counts.running;
}

function finishedOf(q) {
  return q.totals.succeeded + q.totals.failed;
}

// Rate of a total over the last RATE_WINDOW samples.
function rate(h, key) {
  const n = h[key].length;
  const k = Math.max(0, n - 1 - RATE_WINDOW);
  const dt = samples.t[n - 1] - samples.t[k];
  if (!(dt > 0) || h[key][k] == null || h[key][n - 1] == null) return 0;
  return Math.max(0, (h[key][n - 1] - h[key][k]) / dt);
}

function onCounts(queues) {
  const now = Date.now() / 1000;
  samples.t.push(now);
  latest = new Map(queues.map((q) => [q.name, q]));
  for (const q of queues) {
    if (!samples.queues.has(q.name)) {
      const pad = () => new Array(samples.t.length - 1).fill(null);
      samples.queues.set(q.name, { depth: pad(), enq: pad(), fin: pad(), out: pad() });
    }
  }
  for (const [name, h] of samples.queues) {
    const q = latest.get(name);
    h.depth.push(q ? depthOf(q) : null);
    h.enq.push(q ? q.totals.enqueued : null);
    h.fin.push(q ? finishedOf(q) : null);
    h.out.push(q ? rate(h, 'fin') : null);
  }
  while (samples.t.length && samples.t[0] < now - HISTORY_SECONDS) {
    samples.t.shift();
    for (const h of samples.queues.values()) for (const a of Object.values(h)) a.shift();
  }
  renderTable();
  renderCharts();
  renderQueueSelect();
}

function ageText(ms) {
  if (!ms) return '–';
  const s = ms / 1000;
  if (s < 60) return s.toFixed(1) + ' s';
  if (s < 3600) return (s / 60).toFixed(1) + ' min';
  return (s / 3600).toFixed(1) + ' h';
}

function rateText(r) {
  return r >= 10 ? r.toFixed(0) : r.toFixed(1);
}

async function togglePause(q, button) {
  button.disabled = true;
  try {
    const updated = await api('/v1/queues/' + encodeURIComponent(q.name) +
      (q.paused ? '/resume' : '/pause'), { method: 'POST' });
    latest.set(updated.name, updated);
    renderTable();
  } catch (e) {
    alert('Could not ' + (q.paused ? 'resume' : 'pause') + ' ' + q.name + ': ' + e.message);
  } finally {
    button.disabled = false;
  }
}

function renderTable() {
  const body = $('queues').tBodies[0];
  const rows = [];
  const names = [...latest.keys()].sort();
  for (const name of names) {
    const q = latest.get(name);
    const h = samples.queues.get(name);
    const c = q.counts;
    const button = el('button', { type: 'button' }, q.paused ? 'Resume' : 'Pause');
    button.addEventListener('click', () => togglePause(q, button));
    rows.push(el('tr', { class: q.paused ? 'paused' : '' },
      el('td', { class: 'name' }, name),
      el('td', {}, String(c.scheduled)),
      el('td', {}, String(c.queued)),
      el('td', {}, String(c.running)),
      el('td', {}, String(c.succeeded)),
      el('td', { class: 'num-failed' + (c.failed ? ' nonzero' : '') }, String(c.failed)),
      el('td', {}, String(c.canceled)),
      el('td', {}, ageText(q.oldest_queued_age_ms)),
      el('td', {}, h ? rateText(rate(h, 'enq')) : '0'),
      el('td', {}, h ? rateText(rate(h, 'fin')) : '0'),
      el('td', {}, button)));
  }
  body.replaceChildren(...rows);
  $('no-queues').hidden = rows.length > 0;
}

// ---- charts -------------------------------------------------------------------------------

const charts = { depth: null, rate: null, names: '' };

function makeChart(container, title, yLabel, names) {
  const opts = {
    title,
    width: Math.max(300, container.clientWidth),
    height: 220,
    scales: { x: { time: true } },
    axes: [{}, { label: yLabel }],
    // A static legend: the values under a cursor mean little in a screen that moves each second.
    legend: { live: false },
    series: [{}].concat(names.map((n, i) => ({
      label: n,
      stroke: PALETTE[i % PALETTE.length],
      width: 1.5,
      spanGaps: false,
    }))),
  };
  container.replaceChildren();
  return new uPlot(opts, [[]].concat(names.map(() => [])), container);
}

function renderCharts() {
  if (typeof uPlot === 'undefined') return;
  const names = [...samples.queues.keys()].sort();
  const key = names.join('\n');
  if (key !== charts.names) {
    // The set of queues changed: series are fixed per chart, so build new ones.
    if (charts.depth) charts.depth.destroy();
    if (charts.rate) charts.rate.destroy();
    charts.depth = makeChart($('chart-depth'), 'Depth (scheduled + queued + running)', 'jobs', names);
    charts.rate = makeChart($('chart-rate'), 'Throughput (finished per second)', 'jobs/s', names);
    charts.names = key;
  }
  const t = samples.t.slice();
  charts.depth.setData([t].concat(names.map((n) => samples.queues.get(n).depth.slice())));
  charts.rate.setData([t].concat(names.map((n) => samples.queues.get(n).out.slice())));
}

window.addEventListener('resize', () => {
  for (const [c, id] of [[charts.depth, 'chart-depth'], [charts.rate, 'chart-rate']]) {
    if (c) c.setSize({ width: Math.max(300, $(id).clientWidth), height: 220 });
  }
});

// ---- failed jobs --------------------------------------------------------------------------

function renderQueueSelect() {
  const select = $('failed-queue');
  const names = [...latest.keys()].sort();
  const have = [...select.options].map((o) => o.value);
  if (have.join('\n') === names.join('\n')) return;
  const chosen = select.value;
  select.replaceChildren(...names.map((n) => el('option', { value: n }, n)));
  if (names.includes(chosen)) select.value = chosen;
  if (!chosen && names.length) loadFailed();
}

function timeText(ms) {
  return ms == null ? '–' : new Date(ms).toLocaleTimeString();
}

async function loadFailed() {
  const queue = $('failed-queue').value;
  const body = $('failed').tBodies[0];
  if (!queue) {
    body.replaceChildren();
    $('failed-empty').hidden = false;
    return;
  }
  try {
    const res = await api('/v1/queues/' + encodeURIComponent(queue) + '/jobs?state=failed&limit=100');
    const rows = res.jobs.map((j) => {
      const button = el('button', { type: 'button' }, 'Retry');
      button.addEventListener('click', () => retryJob(j.id, button));
      return el('tr', {},
        el('td', {}, j.id),
        el('td', {}, j.type),
        el('td', {}, j.attempts + '/' + j.max_attempts),
        el('td', {}, timeText(j.finished_at)),
        el('td', { class: 'error' }, j.last_error || ''),
        el('td', {}, button));
    });
    body.replaceChildren(...rows);
    $('failed-empty').hidden = rows.length > 0;
    $('failed-empty').textContent = 'No failed jobs.';
  } catch (e) {
    body.replaceChildren();
    $('failed-empty').hidden = false;
    $('failed-empty').textContent = 'Could not list failed jobs: ' + e.message;
  }
}

async function retryJob(id, button) {
  button.disabled = true;
  try {
    await api('/v1/jobs/' + encodeURIComponent(id) + '/retry', { method: 'POST' });
    button.closest('tr').remove();
  } catch (e) {
    button.disabled = false;
    alert('Retry of job ' + id + ' failed: ' + e.message);
  }
}

$('failed-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  loadFailed();
});
$('failed-queue').addEventListener('change', loadFailed);

// A job that failed in the queue on show refreshes the list, at most once a second.
let failedTimer = null;
function failedChanged(queue) {
  if (queue !== $('failed-queue').value || failedTimer) return;
  failedTimer = setTimeout(() => {
    failedTimer = null;
    loadFailed();
  }, 1000);
}

// ---- job events and lookup ----------------------------------------------------------------

function onJob(j) {
  const list = $('events');
  const time = new Date().toLocaleTimeString();
  list.prepend(el('li', { class: 'state-' + j.state },
    time + '  #' + j.id + '  ' + j.queue + '  ' + j.state + '  (attempt ' + j.attempts + ')'));
  while (list.children.length > MAX_EVENTS) list.lastChild.remove();
  if (j.state === 'failed') failedChanged(j.queue);
}

$('job-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const out = $('job-result');
  const id = $('job-id').value.trim();
  out.hidden = false;
  out.classList.remove('error');
  try {
    const job = await api('/v1/jobs/' + encodeURIComponent(id));
    out.textContent = JSON.stringify(job, null, 2);
  } catch (e) {
    out.classList.add('error');
    out.textContent = e.message;
  }
});

// ---- start --------------------------------------------------------------------------------

$('forget-token').hidden = !token();
streamEvents();
