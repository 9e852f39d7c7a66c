// capgate approver console. Every value shown comes from requests an agent made, so it is
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
  const notice = $('notice');
  if (!me.approver) {
    notice.hidden = false;
    notice.textContent = 'Signed in as ' + me.sub + '. You hold no approver role in environment ' + me.environment + ', so there are no requests for you to decide.';
  } else {
    notice.hidden = true;
  }
  await refresh();
  startPolling();
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
  const saved = sessionStorage.getItem(KEY);
  if (saved) signIn(saved); else showSignin('');
});
