// Drives the console's audit explorer and contracts page in headless Chromium (Debian's
// /usr/bin/chromium through playwright-core), as tests/console.rs asks: an auditor signs in
// and reads the chain state, the chart, the records (filtered), one record with its
// neighbours, and the contracts; after the test tampers with a stored record, the alarm.
// Prints one JSON object per phase with what it saw; the Rust test makes the assertions.
import { chromium } from 'playwright-core';
import { createInterface } from 'node:readline';

const cfg = JSON.parse(process.argv[2]);
const seen = { consoleErrors: [], pageErrors: [] };
// The test tampers with the store between the phases: it says `go` on stdin.
const rl = createInterface({ input: process.stdin });
const lines = rl[Symbol.asyncIterator]();

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
});
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 1100 }, colorScheme: 'dark' });
  const page = await context.newPage();
  page.on('console', (m) => { if (m.type() === 'error') seen.consoleErrors.push(m.text()); });
  page.on('pageerror', (e) => seen.pageErrors.push(String(e)));

  await page.goto(cfg.base + '/console/');
  await page.fill('#token', cfg.auditor);
  await page.click('#signin-button');
  // An auditor decides nothing: the console opens on the log.
  await page.locator('#audit').waitFor({ state: 'visible', timeout: 10000 });
  await page.locator('#chain.chain-ok').waitFor({ timeout: 10000 });
  seen.chainText = await page.textContent('#chain');
  await page.locator('#chart svg rect.bar').first().waitFor({ timeout: 10000 });
  seen.bars = await page.locator('#chart svg rect.bar').count();
  seen.barHeights = await page.locator('#chart svg rect.bar').evaluateAll((rs) => rs.map((r) => Number(r.getAttribute('height'))));
  seen.legend = await page.locator('#legend .key').evaluateAll((ks) => Object.fromEntries(ks.map((k) => [k.dataset.decision, Number(k.dataset.total)])));
  seen.topReasons = await page.textContent('#top-reasons');
  seen.topCallers = await page.textContent('#top-callers');
  await page.locator('#records tbody tr').first().waitFor({ timeout: 10000 });
  seen.rowsAll = await page.locator('#records tbody tr').count();
  seen.navText = await page.textContent('#nav');
  seen.decideButtons = await page.locator('button[data-action]').count();
  await page.screenshot({ path: cfg.screenshots + '/console-audit.png', fullPage: true });

  // Filtered: denials only.
  await page.selectOption('#f-decision', 'deny');
  await page.click('#f-apply');
  await page.waitForFunction(() => {
    const rows = [...document.querySelectorAll('#records tbody tr td.decision')];
    return rows.length > 0 && rows.every((td) => td.textContent === 'deny');
  }, null, { timeout: 10000 });
  seen.rowsDeny = await page.locator('#records tbody tr').count();
  // By trace ID: the pending call's records.
  await page.selectOption('#f-decision', '');
  await page.fill('#f-trace', cfg.pendingTrace);
  await page.click('#f-apply');
  await page.waitForFunction((t) => {
    const rows = [...document.querySelectorAll('#records tbody tr td.trace')];
    return rows.length > 0 && rows.every((td) => td.textContent === t);
  }, cfg.pendingTrace, { timeout: 10000 });
  seen.rowsTrace = await page.locator('#records tbody tr').count();
  const seq = await page.locator('#records tbody tr').first().getAttribute('data-seq');
  seen.openedSeq = Number(seq);
  await page.locator('#records tbody tr').first().click();
  await page.locator('#record-link').waitFor({ timeout: 10000 });
  seen.recordLink = await page.textContent('#record-link');
  seen.recordText = await page.textContent('#record');
  seen.neighbours = await page.locator('#record [data-neighbour]').evaluateAll((bs) => bs.map((b) => b.dataset.neighbour));
  await page.screenshot({ path: cfg.screenshots + '/console-record.png', fullPage: true });

  // The contracts page.
  await page.click('.page-tab[data-page="contracts"]');
  await page.locator('article.contract').first().waitFor({ timeout: 10000 });
  seen.contracts = await page.locator('article.contract').evaluateAll((cs) => cs.map((c) => c.dataset.contract));
  seen.blockContract = await page.textContent('article.contract[data-contract="create_firewall_block"]');
  await page.screenshot({ path: cfg.screenshots + '/console-contracts.png', fullPage: true });
  console.log(JSON.stringify({ phase: 'read', ...seen }));

  // The test edits a stored record; the explorer must raise the alarm.
  await lines.next();
  await page.click('.page-tab[data-page="audit"]');
  await page.locator('#chain.chain-bad').waitFor({ timeout: 20000 });
  seen.alarm = await page.textContent('#chain');
  await page.screenshot({ path: cfg.screenshots + '/console-alarm.png', fullPage: false });
  seen.url = page.url();
  console.log(JSON.stringify({ phase: 'tampered', ...seen }));
} finally {
  rl.close();
  await browser.close();
}
