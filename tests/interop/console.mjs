// Drives the approver console in headless Chromium (Debian's /usr/bin/chromium through
// playwright-core), as tests/console.rs asks: sign in as an approver, watch a new request
// appear without a reload, open the audit trail, approve, then sign in as a non-approver.
// Prints one JSON object with what it saw; the Rust test makes the assertions.
import { chromium } from 'playwright-core';

const cfg = JSON.parse(process.argv[2]);
const seen = { consoleErrors: [], pageErrors: [] };

// A JSON body, or the last JSON-RPC message of an SSE stream.
function parse(text) {
  if (!text) return null;
  try { return JSON.parse(text); } catch (_) { /* SSE */ }
  const messages = text.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trim())
    .filter((d) => d.startsWith('{')).map((d) => JSON.parse(d));
  return messages.reverse().find((m) => m.result || m.error) || null;
}

async function rpc(url, token, session, body) {
  const headers = {
    'content-type': 'application/json',
    accept: 'application/json, text/event-stream',
    authorization: 'Bearer ' + token,
    'mcp-protocol-version': '2025-06-18',
  };
  if (session) headers['mcp-session-id'] = session;
  const r = await fetch(url, { method: 'POST', headers, body: JSON.stringify(body) });
  const text = await r.text();
  return { session: r.headers.get('mcp-session-id'), body: parse(text) };
}

// A second request made by the requester while the approver is looking at the console.
async function requestBlock(args) {
  const init = await rpc(cfg.mcp, cfg.requester, null, {
    jsonrpc: '2.0', id: 1, method: 'initialize',
    params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'console-test', version: '1' } },
  });
  await rpc(cfg.mcp, cfg.requester, init.session, { jsonrpc: '2.0', method: 'notifications/initialized' });
  const r = await rpc(cfg.mcp, cfg.requester, init.session, {
    jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'create_firewall_block', arguments: args },
  });
  return r.body.result.structuredContent.approval_id;
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
});
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, colorScheme: 'dark' });
  const page = await context.newPage();
  page.on('console', (m) => { if (m.type() === 'error') seen.consoleErrors.push(m.text()); });
  page.on('pageerror', (e) => seen.pageErrors.push(String(e)));

  await page.goto(cfg.base + '/console/');
  // A refused token is reported and not kept.
  await page.fill('#token', 'not-a-token');
  await page.click('#signin-button');
  await page.waitForFunction(() => document.getElementById('signin-error').textContent.includes('refused'));
  seen.badTokenMessage = await page.textContent('#signin-error');
  seen.badTokenKept = await page.evaluate(() => sessionStorage.getItem('capgate.token'));

  await page.fill('#token', cfg.approver);
  await page.click('#signin-button');
  const first = page.locator(`article[data-approval-id="${cfg.approvalId}"]`);
  await first.waitFor({ timeout: 10000 });
  seen.whoami = await page.textContent('#whoami');
  seen.firstCardText = await first.textContent();

  // The list updates without a reload.
  seen.secondId = await requestBlock({ ip: '198.51.100.0/24', ttl_minutes: 30 });
  await page.locator(`article[data-approval-id="${seen.secondId}"]`).waitFor({ timeout: 10000 });
  seen.cardsAfterSecond = await page.locator('article.req').count();

  await first.locator('button.link').click();
  await first.locator('.trail-table').waitFor({ timeout: 10000 });
  seen.trailText = await first.locator('.trail-table').textContent();
  await first.locator('input.reason').fill('INC-1042: block the scanner range');
  await page.screenshot({ path: cfg.screenshot, fullPage: true });

  // Approve without a reason is refused in the page; with one it is recorded.
  await first.locator('input.reason').fill('');
  await first.locator('button[data-action="approve"]').click();
  seen.noReasonError = await first.locator('.error').textContent();
  await first.locator('input.reason').fill('INC-1042: block the scanner range');
  await first.locator('button[data-action="approve"]').click();
  await first.waitFor({ state: 'detached', timeout: 10000 });
  seen.pendingAfterApprove = await page.locator('article.req').count();

  seen.url = page.url();
  seen.cookies = await context.cookies();
  seen.stored = await page.evaluate(() => ({ session: sessionStorage.getItem('capgate.token'), local: localStorage.length }));

  await page.click('#signout');
  await page.fill('#token', cfg.nonApprover);
  await page.click('#signin-button');
  await page.locator('#notice').waitFor({ state: 'visible', timeout: 10000 });
  seen.nonApproverNotice = await page.textContent('#notice');
  await page.waitForTimeout(3000); // at least one poll
  seen.nonApproverCards = await page.locator('article.req').count();
} finally {
  await browser.close();
}
console.log(JSON.stringify(seen));
