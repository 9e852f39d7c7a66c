// capgate console: approvals, the audit explorer, the contracts. Every value shown comes from requests an agent made, so it is
// attacker-controlled: it is only ever put into the page as text (textContent), never as
// markup. The token lives in sessionStorage and is sent only in the Authorization header.
'use strict';

const KEY = 'capgate.token';
const POLL_MS = 2500;
const $ = (id) => document.getElementById(id);

let view = 'pending';
let timer = null;
let me = null;
const cards = new Map(); // approval id -> {root, parts}
const trails = new Set(); // ids whose audit trail is open

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}

async function api(path, method, body) {
  const token = sessionStorage.getItem(KEY) || '';
  const headers = { Authorization: 'Bearer ' + token };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const r = await fetch(path, {
    method: method || 'GET',
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: 'no-store',
    credentials: 'omit',
    redirect: 'error',
  });
  let data = null;
  try { data = await r.json(); } catch (_) { data = null; }
  return { status: r.status, data };
}

function ago(ms) {
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return s + 's ago';
  if (s < 3600) return Math.floor(s / 60) + 'm ago';
  return Math.floor(s / 3600) + 'h ' + Math.floor((s % 3600) / 60) + 'm ago';
}

function left(ms) {
  const s = Math.round((ms - Date.now()) / 1000);
  if (s <= 0) return 'expired';
  const m = Math.floor(s / 60);
  return 'expires in ' + m + ':' + String(s % 60).padStart(2, '0');
}

function showSignin(message) {
  stopPolling();
  stopChainPolling();
  $('nav').hidden = true;
  $('audit').hidden = true;
  $('contracts').hidden = true;
  me = null;
  cards.clear();
  $('list').replaceChildren();
  $('queue').hidden = true;
  $('whoami').hidden = true;
  $('signout').hidden = true;
  $('env').hidden = true;
  $('signin').hidden = false;
  $('signin-error').textContent = message || '';
  $('token').focus();
}

async function signIn(token) {
  sessionStorage.setItem(KEY, token);
  let r;
  try { r = await api('/api/session'); } catch (e) { r = { status: 0, data: null }; }
  if (r.status !== 200) {
    sessionStorage.removeItem(KEY);
    const why = r.data && r.data.error_description ? r.data.error_description : 'the gateway did not answer';
    showSignin(r.status === 401 ? 'The token was refused: ' + why + '.' : 'Sign-in failed: ' + why + '.');
    return;
  }
  me = r.data;
  $('token').value = '';
  $('signin').hidden = true;
  $('queue').hidden = false;
  $('env').hidden = false;
  $('env').textContent = me.environment;
  $('env').className = 'env env-' + (/prod/i.test(me.environment) ? 'prod' : 'other');
  $('whoami').hidden = false;
  $('whoami').replaceChildren(el('span', 'who', me.sub), el('span', 'roles', me.roles.join(', ') || 'no roles'));
  $('signout').hidden = false;
  $('nav').hidden = !(me.approver || me.auditor);
  const notice = $('notice');
  if (!me.approver) {
    notice.hidden = false;
    notice.textContent = 'Signed in as ' + me.sub + '. You hold no approver role in environment ' + me.environment + ', so there are no requests for you to decide.';
  } else {
    notice.hidden = true;
  }
  await refresh();
  startPolling();
  // An auditor who decides nothing starts on the log.
  if (me.auditor && !me.approver) showPage('audit');
}

// ---- pages -------------------------------------------------------------------------

let page = 'queue';
let chainTimer = null;
let olderBefore = null;

function showPage(name) {
  page = name;
  for (const b of document.querySelectorAll('.page-tab')) b.classList.toggle('active', b.dataset.page === name);
  $('queue').hidden = name !== 'queue';
  $('audit').hidden = name !== 'audit';
  $('contracts').hidden = name !== 'contracts';
  stopChainPolling();
  if (name === 'audit') {
    loadAudit();
    chainTimer = setInterval(loadChain, 10000);
  } else if (name === 'contracts') {
    loadContracts();
  }
}

function stopChainPolling() {
  if (chainTimer) clearInterval(chainTimer);
  chainTimer = null;
}

function unauthorized(r) {
  if (r.status !== 401) return false;
  sessionStorage.removeItem(KEY);
  showSignin('Your token expired or was refused. Sign in again.');
  return true;
}

// ---- audit explorer -----------------------------------------------------------------

function rangeOf() {
  const v = $('f-range').value;
  if (v === 'custom') return { from: $('f-from').value.trim(), to: $('f-to').value.trim() };
  const to = new Date(Date.now() + 1000);
  const from = new Date(to.getTime() - Number(v) * 60000);
  return { from: from.toISOString(), to: to.toISOString() };
}

function filterQuery(extra) {
  const q = new URLSearchParams();
  const { from, to } = rangeOf();
  if (from) q.set('from', from);
  if (to) q.set('to', to);
  for (const [key, id] of [['decision', 'f-decision'], ['reason_code', 'f-reason'], ['tool', 'f-tool'], ['caller', 'f-caller'], ['trace_id', 'f-trace']]) {
    const v = $(id).value.trim();
    if (v) q.set(key, v);
  }
  for (const [k, v] of Object.entries(extra || {})) q.set(k, v);
  return q;
}

async function loadAudit() {
  $('audit-error').textContent = '';
  $('record').hidden = true;
  olderBefore = null;
  $('records').querySelector('tbody').replaceChildren();
  await Promise.all([loadChain(), loadStats(), loadRecords(false)]);
}

async function loadChain() {
  let r;
  try { r = await api('/api/audit/chain'); } catch (e) { r = { status: 0, data: null }; }
  if (unauthorized(r)) return;
  const box = $('chain');
  if (r.status !== 200 || !r.data) {
    box.className = 'chain chain-unknown';
    box.textContent = 'The chain could not be verified (' + r.status + ').';
    return;
  }
  const c = r.data;
  if (c.ok) {
    box.className = 'chain chain-ok';
    const cp = c.last_checkpoint ? ' · last signed checkpoint #' + c.last_checkpoint.seq + ' at ' + c.last_checkpoint.ts.replace('T', ' ').replace('Z', ' UTC') : ' · no signed checkpoint yet';
    box.textContent = '✓ Chain verified: ' + c.verified_records + ' records, head #' + (c.head_seq || 0) + cp + ' (checked ' + c.verified_at.slice(11, 19) + ' UTC)';
  } else {
    box.className = 'chain chain-bad';
    box.textContent = '✗ Chain verification FAILED: ' + c.problem + '. Records before it verified: ' + c.verified_records + '.';
  }
}

const DECISIONS = ['allow', 'deny', 'pending', 'error'];
const SVG = 'http://www.w3.org/2000/svg';

function svg(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  return e;
}

async function loadStats() {
  const q = filterQuery();
  for (const k of ['decision', 'reason_code', 'tool', 'caller', 'trace_id']) q.delete(k);
  let r;
  try { r = await api('/api/audit/stats?' + q.toString()); } catch (e) { r = { status: 0, data: null }; }
  if (unauthorized(r)) return;
  if (r.status !== 200 || !r.data) {
    $('chart').replaceChildren(el('div', 'muted', (r.data && r.data.error_description) || 'No chart (' + r.status + ').'));
    return;
  }
  renderChart(r.data);
  const list = (id, items, key) => {
    const ol = $(id);
    ol.replaceChildren(...items.map((i) => {
      const li = el('li');
      li.append(el('span', 'mono', i[key]), el('span', 'n', i.count));
      return li;
    }));
    if (!items.length) ol.replaceChildren(el('li', 'muted', 'none'));
  };
  list('top-reasons', r.data.top_reason_codes, 'reason_code');
  list('top-callers', r.data.top_callers, 'sub');
}

function renderChart(s) {
  const W = 640, H = 150, pad = 20;
  const from = Date.parse(s.from), to = Date.parse(s.to);
  const span = Math.max(60000, to - from);
  const minutes = Math.max(1, Math.ceil(span / 60000));
  const bw = Math.max(2, (W - pad) / minutes - 1);
  const max = Math.max(1, ...s.per_minute.map((m) => DECISIONS.reduce((a, d) => a + (m[d] || 0), 0)));
  const chart = svg('svg', { viewBox: `0 0 ${W} ${H + 18}`, role: 'img', 'aria-label': 'decisions per minute' });
  chart.append(svg('line', { x1: pad, y1: H, x2: W, y2: H, class: 'axis' }));
  const totals = { allow: 0, deny: 0, pending: 0, error: 0 };
  for (const m of s.per_minute) {
    const x = pad + ((Date.parse(m.minute) - from) / span) * (W - pad);
    let y = H;
    for (const d of DECISIONS) {
      const n = m[d] || 0;
      totals[d] += n;
      if (!n) continue;
      const h = (n / max) * (H - 6);
      y -= h;
      const bar = svg('rect', { x: x.toFixed(1), y: y.toFixed(1), width: bw.toFixed(1), height: h.toFixed(1), class: 'bar bar-' + d });
      bar.dataset.decision = d;
      bar.dataset.count = String(n);
      bar.dataset.minute = m.minute;
      const title = svg('title');
      title.textContent = m.minute.slice(11, 16) + ' UTC · ' + d + ': ' + n;
      bar.append(title);
      chart.append(bar);
    }
  }
  const label = (x, text, anchor) => {
    const t = svg('text', { x, y: H + 14, class: 'tick', 'text-anchor': anchor });
    t.textContent = text;
    chart.append(t);
  };
  label(pad, new Date(from).toISOString().slice(11, 16), 'start');
  label(W, new Date(to).toISOString().slice(11, 16) + ' UTC', 'end');
  const top = svg('text', { x: 0, y: 10, class: 'tick' });
  top.textContent = String(max);
  chart.append(top);
  $('chart').replaceChildren(chart);
  $('legend').replaceChildren(...DECISIONS.map((d) => {
    const item = el('span', 'key key-' + d, d + ' ' + totals[d]);
    item.dataset.decision = d;
    item.dataset.total = String(totals[d]);
    return item;
  }));
}

async function loadRecords(older) {
  const extra = { limit: '50' };
  if (older && olderBefore) extra.before = String(olderBefore);
  let r;
  try { r = await api('/api/audit?' + filterQuery(extra).toString()); } catch (e) { r = { status: 0, data: null }; }
  if (unauthorized(r)) return;
  if (r.status !== 200 || !r.data) {
    $('audit-error').textContent = (r.data && r.data.error_description) || 'Could not read the log (' + r.status + ').';
    return;
  }
  const body = $('records').querySelector('tbody');
  for (const rec of r.data.records) {
    const tr = el('tr', 'row');
    tr.dataset.seq = String(rec.seq);
    tr.tabIndex = 0;
    tr.append(
      el('td', 'mono', rec.seq),
      el('td', 'mono', String(rec.ts || '').replace('T', ' ').replace(/\.\d+/, '').replace('Z', '')),
      el('td', 'decision decision-' + rec.decision, rec.decision),
      el('td', 'mono', rec.reason_code),
      el('td', 'mono', rec.tool || '—'),
      el('td', null, rec.principal ? rec.principal.sub : '—'),
      el('td', 'mono trace', rec.trace_id),
    );
    tr.addEventListener('click', () => openRecord(rec.seq));
    tr.addEventListener('keydown', (e) => { if (e.key === 'Enter') openRecord(rec.seq); });
    body.append(tr);
  }
  olderBefore = r.data.next_before;
  $('older').hidden = !olderBefore;
  $('records-empty').hidden = body.children.length > 0;
}

function fieldRows(rec) {
  const table = el('table', 'fields');
  for (const key of Object.keys(rec)) {
    const tr = el('tr');
    const v = rec[key];
    tr.append(el('th', 'mono', key), el('td', 'mono', v === null ? '—' : typeof v === 'string' ? v : JSON.stringify(v)));
    table.append(tr);
  }
  return table;
}

async function openRecord(seq) {
  let r;
  try { r = await api('/api/audit/records/' + encodeURIComponent(seq)); } catch (e) { r = { status: 0, data: null }; }
  if (unauthorized(r)) return;
  const box = $('record');
  box.hidden = false;
  if (r.status !== 200 || !r.data) {
    box.replaceChildren(el('div', 'error', 'Could not read record #' + seq + ' (' + r.status + ').'));
    return;
  }
  const d = r.data;
  const head = el('div', 'record-head');
  head.append(el('h2', null, 'Record #' + seq));
  const link = el('span', d.link.holds ? 'link-ok' : 'link-bad', d.link.holds ? '✓ chain link holds' : '✗ ' + d.link.problem);
  link.id = 'record-link';
  head.append(link);
  const close = el('button', 'ghost', 'Close');
  close.type = 'button';
  close.addEventListener('click', () => { box.hidden = true; });
  head.append(el('span', 'spacer'), close);
  const neighbours = el('div', 'neighbours');
  for (const [label, n] of [['previous', d.previous], ['next', d.next]]) {
    if (!n) { neighbours.append(el('span', 'muted', 'no ' + label + ' record')); continue; }
    const b = el('button', 'link', label + ': #' + n.seq + ' ' + n.decision + ' ' + n.reason_code);
    b.type = 'button';
    b.dataset.neighbour = label;
    b.addEventListener('click', () => openRecord(n.seq));
    neighbours.append(b);
  }
  box.replaceChildren(head, neighbours, fieldRows(d.record));
  box.scrollIntoView({ block: 'nearest' });
}

// ---- contracts ----------------------------------------------------------------------

function rule(schema) {
  const s = Object.assign({}, schema);
  delete s.description;
  return JSON.stringify(s);
}

async function loadContracts() {
  let r;
  try { r = await api('/api/contracts'); } catch (e) { r = { status: 0, data: null }; }
  if (unauthorized(r)) return;
  const list = $('contract-list');
  if (r.status !== 200 || !r.data) {
    list.replaceChildren(el('div', 'error', 'Could not read the contracts (' + r.status + ').'));
    return;
  }
  list.replaceChildren(...r.data.contracts.map((c) => {
    const card = el('article', 'req contract');
    card.dataset.contract = c.name;
    const head = el('div', 'req-head');
    head.append(el('span', 'tool', c.name), el('span', 'effect effect-' + c.side_effects, c.side_effects), el('span', 'muted small', c.kind));
    if (c.requires_approval) head.append(el('span', 'status status-pending', 'approval'));
    card.append(head);
    if (c.description) card.append(el('div', 'muted', c.description));
    const args = el('table', 'args');
    if (!c.arguments.length) {
      const tr = el('tr');
      tr.append(el('td', 'muted', 'no arguments'));
      args.append(tr);
    }
    for (const a of c.arguments) {
      const tr = el('tr');
      const flags = [a.optional ? 'optional' : 'required', a.sensitive ? 'sensitive (redacted in the log)' : null].filter(Boolean).join(', ');
      tr.append(el('th', 'mono', a.name), el('td', 'val mono', rule(a.rule)), el('td', 'muted small', flags));
      args.append(tr);
    }
    card.append(args);
    const facts = el('div', 'facts');
    facts.append(el('div', null, 'Who may call it: ' + (c.allowed_roles.join(', ') || 'nobody')));
    if (c.requires_approval) facts.append(el('div', null, 'Who approves: ' + (c.approver_roles || []).join(', ') + ' (' + c.approvals_required + ' approval' + (c.approvals_required === 1 ? '' : 's') + ')'));
    if (c.rate_limit) facts.append(el('div', null, 'Rate limit: ' + c.rate_limit + ' per caller'));
    if (c.fixed_arguments.length) facts.append(el('div', null, 'Set by the gateway: ' + c.fixed_arguments.join(', ')));
    if (c.policies.length) facts.append(el('div', null, 'Policies: ' + c.policies.join(', ')));
    facts.append(el('div', 'muted small mono', 'digest ' + c.digest));
    card.append(facts);
    return card;
  }));
}

function startPolling() {
  stopPolling();
  timer = setInterval(refresh, POLL_MS);
}

function stopPolling() {
  if (timer) clearInterval(timer);
  timer = null;
}

async function refresh() {
  if (!sessionStorage.getItem(KEY)) return;
  let r;
  try { r = await api('/api/approvals?status=' + encodeURIComponent(view)); } catch (e) {
    $('updated').textContent = 'gateway unreachable; retrying';
    return;
  }
  if (r.status === 401) {
    sessionStorage.removeItem(KEY);
    showSignin('Your token expired or was refused. Sign in again.');
    return;
  }
  if (r.status !== 200 || !Array.isArray(r.data)) {
    $('updated').textContent = 'could not load the queue (' + r.status + ')';
    return;
  }
  render(r.data);
  $('updated').textContent = 'updated ' + new Date().toLocaleTimeString();
}

function render(items) {
  const list = $('list');
  const seen = new Set();
  for (const item of items) {
    seen.add(item.id);
    let card = cards.get(item.id);
    if (!card) {
      card = build(item);
      cards.set(item.id, card);
    }
    update(card, item);
  }
  for (const [id, card] of cards) {
    if (!seen.has(id)) {
      card.root.remove();
      cards.delete(id);
    }
  }
  // Keep the server's order (newest first) without rebuilding cards being typed into.
  items.forEach((item, i) => {
    const node = cards.get(item.id).root;
    if (list.children[i] !== node) list.insertBefore(node, list.children[i] || null);
  });
  const pending = items.filter((i) => i.status === 'pending').length;
  $('count').textContent = view === 'pending' ? String(pending) : $('count').textContent;
  $('empty').hidden = items.length > 0 || !me || !me.approver;
  $('empty').textContent = view === 'pending' ? 'No requests waiting for a decision.' : 'No recent requests.';
}

function build(item) {
  const root = el('article', 'req');
  root.dataset.approvalId = item.id;
  const head = el('div', 'req-head');
  const tool = el('span', 'tool', item.tool);
  const effect = el('span', 'effect effect-' + item.side_effects, item.side_effects);
  const status = el('span', 'status');
  const expiry = el('span', 'expiry');
  head.append(tool, effect, status, el('span', 'spacer'), expiry);

  const meta = el('div', 'req-meta');
  const requester = el('span', 'requester');
  const age = el('span', 'age');
  const trace = el('span', 'trace mono', 'trace ' + item.trace_id);
  trace.title = 'trace id ' + item.trace_id;
  meta.append(requester, el('span', 'dot', '·'), age, el('span', 'dot', '·'), trace);

  const args = el('table', 'args');
  const names = Object.keys(item.arguments || {}).sort();
  if (names.length === 0) {
    const tr = el('tr');
    tr.append(el('td', 'muted', 'no arguments'));
    args.append(tr);
  }
  for (const name of names) {
    const tr = el('tr');
    const value = item.arguments[name];
    const td = el('td', 'val mono');
    if (value === '[redacted]') {
      td.append(el('span', 'redacted', 'redacted'));
    } else {
      td.textContent = typeof value === 'string' ? value : JSON.stringify(value);
    }
    tr.append(el('th', 'mono', name), td);
    args.append(tr);
  }

  const votes = el('div', 'votes');
  const note = el('div', 'note');
  const error = el('div', 'error');
  error.setAttribute('role', 'alert');

  const actions = el('div', 'actions');
  const reason = el('input', 'reason');
  reason.type = 'text';
  reason.maxLength = 500;
  reason.placeholder = 'Reason (required, recorded in the audit log)';
  reason.setAttribute('aria-label', 'Reason for ' + item.tool + ' request ' + item.id);
  const approve = el('button', 'approve', 'Approve');
  approve.type = 'button';
  approve.dataset.action = 'approve';
  const deny = el('button', 'deny', 'Deny');
  deny.type = 'button';
  deny.dataset.action = 'deny';
  actions.append(reason, approve, deny);

  const toggle = el('button', 'link', trails.has(item.id) ? 'Hide audit trail' : 'Show audit trail');
  toggle.type = 'button';
  const trail = el('div', 'trail');
  trail.hidden = !trails.has(item.id);

  const card = { root, parts: { status, expiry, requester, age, votes, note, error, actions, reason, approve, deny, trail, toggle } };
  approve.addEventListener('click', () => decide(card, item.id, 'approve'));
  deny.addEventListener('click', () => decide(card, item.id, 'deny'));
  toggle.addEventListener('click', () => toggleTrail(card, item.id));

  root.append(head, meta, args, votes, note, actions, error, toggle, trail);
  if (trails.has(item.id)) loadTrail(card, item.id);
  return card;
}

function update(card, item) {
  const p = card.parts;
  card.item = item;
  card.root.dataset.status = item.status;
  p.status.textContent = item.status;
  p.status.className = 'status status-' + item.status;
  p.expiry.textContent = item.status === 'pending' ? left(item.expires_ms) : item.expires.replace('T', ' ').replace('Z', ' UTC');
  p.requester.textContent = 'requested by ' + item.requester.sub + (item.mine ? ' (you)' : '');
  p.requester.title = item.requester.iss;
  p.age.textContent = ago(item.created_ms);
  const who = item.votes.map((v) => (v.verdict === 'approve' ? '✓ ' : '✗ ') + v.approver_sub + ': ' + v.reason);
  p.votes.textContent = item.approvals + ' of ' + item.approvals_required + ' approval' + (item.approvals_required === 1 ? '' : 's') +
    ' from ' + item.approver_roles.join(', ') + (who.length ? ' — ' + who.join('; ') : '');
  p.actions.hidden = !item.can_decide;
  if (item.status !== 'pending') p.note.textContent = '';
  else if (item.mine) p.note.textContent = 'Your own request: another approver must decide it.';
  else if (!item.can_decide) p.note.textContent = 'You have already decided on this request.';
  else p.note.textContent = '';
}

async function decide(card, id, action) {
  const p = card.parts;
  const reason = p.reason.value.trim();
  if (!reason) {
    p.error.textContent = 'Give a reason: it goes into the audit log with your decision.';
    p.reason.focus();
    return;
  }
  p.approve.disabled = true;
  p.deny.disabled = true;
  p.error.textContent = '';
  let r;
  try { r = await api('/api/approvals/' + encodeURIComponent(id) + '/' + action, 'POST', { reason }); } catch (e) {
    r = { status: 0, data: null };
  }
  p.approve.disabled = false;
  p.deny.disabled = false;
  if (r.status === 200) {
    p.reason.value = '';
    update(card, r.data);
    if (trails.has(id)) loadTrail(card, id);
  } else if (r.status === 401) {
    sessionStorage.removeItem(KEY);
    showSignin('Your token expired or was refused. Sign in again.');
    return;
  } else {
    p.error.textContent = (r.data && r.data.error_description) || 'The decision was not recorded (' + r.status + ').';
  }
  refresh();
}

function toggleTrail(card, id) {
  const open = !trails.has(id);
  if (open) trails.add(id); else trails.delete(id);
  card.parts.trail.hidden = !open;
  card.parts.toggle.textContent = open ? 'Hide audit trail' : 'Show audit trail';
  if (open) loadTrail(card, id);
}

async function loadTrail(card, id) {
  const r = await api('/api/approvals/' + encodeURIComponent(id));
  const box = card.parts.trail;
  if (r.status !== 200 || !r.data || !Array.isArray(r.data.trail)) {
    box.replaceChildren(el('div', 'error', 'Could not load the audit trail (' + r.status + ').'));
    return;
  }
  const table = el('table', 'trail-table');
  const head = el('tr');
  for (const h of ['#', 'time', 'decision', 'reason code', 'who', 'reason']) head.append(el('th', null, h));
  table.append(head);
  for (const rec of r.data.trail) {
    const tr = el('tr');
    tr.append(
      el('td', 'mono', rec.seq),
      el('td', 'mono', rec.ts.replace('T', ' ').replace('Z', '')),
      el('td', 'decision decision-' + rec.decision, rec.decision),
      el('td', 'mono', rec.reason_code),
      el('td', null, rec.principal ? rec.principal.sub : '—'),
      el('td', 'reason-text', rec.reason),
    );
    table.append(tr);
  }
  box.replaceChildren(table);
}

function setView(status) {
  view = status;
  for (const b of document.querySelectorAll('.tab')) b.classList.toggle('active', b.dataset.status === status);
  for (const card of cards.values()) card.root.remove();
  cards.clear();
  refresh();
}

document.addEventListener('DOMContentLoaded', () => {
  $('signin-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const token = $('token').value.trim();
    if (!token) {
      $('signin-error').textContent = 'Paste a token first.';
      return;
    }
    signIn(token);
  });
  $('signout').addEventListener('click', () => {
    sessionStorage.removeItem(KEY);
    showSignin('Signed out.');
  });
  for (const b of document.querySelectorAll('.tab')) b.addEventListener('click', () => setView(b.dataset.status));
  for (const b of document.querySelectorAll('.page-tab')) b.addEventListener('click', () => showPage(b.dataset.page));
  $('filters').addEventListener('submit', (e) => { e.preventDefault(); loadAudit(); });
  $('f-range').addEventListener('change', () => {
    for (const f of document.querySelectorAll('.field.custom')) f.hidden = $('f-range').value !== 'custom';
  });
  $('older').addEventListener('click', () => loadRecords(true));
  const saved = sessionStorage.getItem(KEY);
  if (saved) signIn(saved); else showSignin('');
});
