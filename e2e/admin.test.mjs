// Issue 16's screens for the admin half of the API, in headless Chromium against a real gateway
// running real terraform: debug runs from the twin page (the body sent, the run tagged in the
// modal and the run history, terraform's TF_LOG lines drawn by level and hidden on demand, a
// retry that stays a debug run), bulk delete from the twins list (which were deleted, which
// refused and why), purge of a soft-deleted twin through a dialog that says it is permanent
// (the gateway's 409s said in words), and the audit log (pages, targets linked while they
// exist, a filter, new entries as they come; a 403 for an owner said as such). Screenshots go
// to test-artifacts/admin-*.png.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';

import {
  ROOT, RUN_MS, allEvents, apiClient, demoBody, expectNoProblems, focused, launchBrowser, openPage,
  screenshot, signIn, startGateway, stopGateway, waitForRun,
} from './harness.mjs';

const BINARY =
  process.env.TERRASTREAM_BIN ??
  path.join(process.env.CARGO_TARGET_DIR ?? path.join(ROOT, 'target'), 'debug', 'terrastream');

let gateway;
let browser;
let page;
let api;

const modal = () => page.locator('#run-dialog');

async function closeModal(p = page) {
  await p.locator('#run-dialog').getByRole('button', { name: 'Close' }).click();
  await p.locator('#run-dialog').waitFor({ state: 'hidden' });
}

async function openTwin(twin) {
  await page.goto(`${gateway.url}/#/twins/${twin.id}`);
  await page.getByRole('heading', { name: twin.name, level: 1 }).waitFor();
}

async function deployedTwin(name) {
  const twin = await api('POST', '/twins', await demoBody(api, name));
  const run = await waitForRun(api, (await api('POST', `/twins/${twin.id}/deploy`)).job_id);
  assert.equal(run.status, 'completed', JSON.stringify(run));
  return twin;
}

/** The answer of a route as it is, for the ones expected to refuse. */
async function raw(method, route) {
  const response = await fetch(`${gateway.url}${route}`, { method, headers: { Authorization: `Bearer ${gateway.token}` } });
  return response.status;
}

/** The body the page posted to start a run, waited for while `act` clicks. */
async function startBody(route, act) {
  const [request] = await Promise.all([
    page.waitForRequest((r) => r.method() === 'POST' && new URL(r.url()).pathname === route),
    act(),
  ]);
  const body = request.postData();
  return body ? JSON.parse(body) : null;
}

/** No part of the page is wider than the window. */
async function fitsWidth(p) {
  const { scroll, width } = await p.evaluate(() => ({ scroll: document.documentElement.scrollWidth, width: window.innerWidth }));
  assert.ok(scroll <= width, `the page is ${scroll} px wide in a ${width} px window`);
}

/** The twins-list row of a twin. */
const twinRow = (twin) => page.locator(`#twins-list tr[data-twin-id="${twin.id}"]`);

describe('issue 16: debug runs, bulk delete, purge and the audit log', { timeout: 10 * 60_000 }, () => {
  before(async () => {
    gateway = await startGateway({ name: 'gateway-admin' });
    api = apiClient(gateway);
    browser = await launchBrowser();
    page = await openPage(browser);
    await signIn(page, gateway);
  });

  after(async () => {
    await browser?.close();
    await stopGateway(gateway);
  });

  it('a debug run from the twin page: TF_LOG lines by level, hidden on demand, tagged in the history', async () => {
    const twin = await api('POST', '/twins', await demoBody(api, 'debugged'));
    await openTwin(twin);
    await page.waitForFunction(() => !document.querySelector('#deploy-button').disabled, null, { timeout: RUN_MS });

    // The level is chosen only for a debug run; the keyboard reaches both.
    const level = page.getByLabel('Log level');
    assert.ok(await level.isDisabled());
    await page.getByLabel('Debug run').focus();
    await page.keyboard.press('Space');
    assert.ok(await page.getByLabel('Debug run').isChecked());
    assert.ok(await level.isEnabled());
    await level.selectOption('TRACE');

    const body = await startBody(`/twins/${twin.id}/deploy`, () => page.getByRole('button', { name: 'Deploy', exact: true }).click());
    assert.deepEqual(body, { debug: true, log_level: 'TRACE' });
    await modal().getByRole('heading', { name: 'Deploying debugged' }).waitFor();
    await modal().locator('#run-debug [data-debug="TRACE"]').getByText('debug · TRACE').waitFor();
    assert.equal(await modal().getAttribute('data-debug'), 'TRACE');
    await modal().locator('#run-outcome[data-outcome="succeeded"]').waitFor({ timeout: RUN_MS });
    const jobId = await modal().getAttribute('data-job-id');
    const run = await api('GET', `/runs/${jobId}`);
    assert.equal(run.debug, true);
    assert.equal(run.log_level, 'TRACE');

    // Every stored line is in the page; terraform's own log is counted and drawn by level.
    const lines = (await allEvents(api, jobId)).filter((e) => e.event === 'log' || e.event === 'warning');
    const stderr = lines.filter((e) => e.data.stream === 'stderr');
    const levelled = stderr.filter((e) => /^\S+\s+\[(TRACE|DEBUG|INFO|WARN|ERROR)\]/.test(e.data.line));
    assert.ok(levelled.length > 100, `a TRACE deploy logs a lot (${levelled.length} lines)`);
    const log = modal().locator('#run-log');
    await page.waitForFunction((n) => document.querySelector('#run-log').dataset.lines === String(n), lines.length);
    const debugLines = Number(await log.getAttribute('data-debug-lines'));
    assert.ok(debugLines >= levelled.length && debugLines <= stderr.length, `${debugLines} debug lines of ${stderr.length} on stderr`);
    const tools = modal().locator('#run-log-tools');
    await tools.getByText(`${debugLines.toLocaleString('en-US')} debug lines`).waitFor();

    // From the top: terraform's INFO lines first, each with its level as the marker.
    await log.evaluate((box) => { box.scrollTop = 0; });
    const info = modal().locator('.log-row.stream-stderr.tf-info').first();
    await info.waitFor();
    assert.equal(await info.locator('.log-marker').textContent(), 'info');
    await log.evaluate((box) => { box.scrollTop = box.scrollHeight / 3; });
    await modal().locator('.log-row.stream-stderr.tf-trace .log-marker', { hasText: 'trace' }).first().waitFor();
    await screenshot(page, 'admin-debug-run');

    // Hidden: only terraform's output is left, and the count says so; shown again.
    await tools.getByLabel('Show terraform\'s debug log').uncheck();
    await page.waitForFunction(() => {
      const box = document.querySelector('#run-log');
      return box.dataset.hiddenLines === box.dataset.debugLines && !box.querySelector('.log-row.stream-stderr');
    });
    await tools.getByText(`${debugLines.toLocaleString('en-US')} debug lines hidden`).waitFor();
    await log.evaluate((box) => { box.scrollTop = 0; });
    const firstOutput = lines.find((e) => e.data.stream !== 'stderr');
    await page.waitForFunction((id) => document.querySelector('#run-log .log-row')?.dataset.id === String(id), firstOutput.id);
    await screenshot(page, 'admin-debug-hidden');
    await tools.getByLabel('Show terraform\'s debug log').check();
    await modal().locator('.log-row.stream-stderr').first().waitFor();
    assert.equal(await log.getAttribute('data-hidden-lines'), '0');
    await closeModal();

    // An ordinary plan once the switch is off: no body, no tag, no log tools.
    await page.getByLabel('Debug run').uncheck();
    assert.ok(await level.isDisabled());
    await page.waitForFunction(() => !document.querySelector('#plan-button').disabled, null, { timeout: RUN_MS });
    assert.equal(await startBody(`/twins/${twin.id}/plan`, () => page.getByRole('button', { name: 'Plan', exact: true }).click()), null);
    await modal().locator('#run-outcome[data-outcome="succeeded"]').waitFor({ timeout: RUN_MS });
    assert.ok(await modal().locator('#run-debug').isHidden());
    assert.ok(await tools.isHidden());
    assert.equal(await modal().getAttribute('data-debug'), null);
    await closeModal();

    // The history tags the debug run and its log reopens with the tag; the plan has none.
    const debugRow = page.locator(`#twin-runs tr[data-run-id="${jobId}"][data-debug="true"]`);
    await debugRow.locator('[data-debug="TRACE"]').getByText('debug · TRACE').waitFor();
    const planRow = page.locator('#twin-runs tr[data-kind="plan"]');
    await planRow.waitFor();
    assert.equal(await planRow.getAttribute('data-debug'), 'false');
    assert.equal(await planRow.locator('.tag-debug').count(), 0);
    await debugRow.getByRole('button', { name: /^Log of the debug Deploy/ }).click();
    await modal().locator('#run-debug [data-debug="TRACE"]').waitFor();
    await modal().locator('#run-outcome[data-outcome="succeeded"]').waitFor();
    assert.ok(await tools.isVisible());
    await closeModal();
    await page.locator('#twin-runs').scrollIntoViewIfNeeded();
    await screenshot(page, 'admin-debug-history');
    expectNoProblems(page);
  });

  it('a failed debug run is retried as a debug run at the same level', async () => {
    const twin = await api('POST', '/twins', await demoBody(api, 'debug-fails', { fail_on_create: ['iot_hub'] }));
    await openTwin(twin);
    await page.waitForFunction(() => !document.querySelector('#deploy-button').disabled, null, { timeout: RUN_MS });
    await page.getByLabel('Debug run').check();
    await page.getByLabel('Log level').selectOption('INFO');
    assert.deepEqual(
      await startBody(`/twins/${twin.id}/deploy`, () => page.getByRole('button', { name: 'Deploy', exact: true }).click()),
      { debug: true, log_level: 'INFO' },
    );
    await modal().locator('#run-outcome[data-outcome="failed"]').waitFor({ timeout: RUN_MS });
    assert.match(await modal().locator('#run-outcome').textContent(), /fail_on_create/);
    // terraform's own complaint stays an error line, not a quiet debug one.
    await modal().locator('.log-row.is-error').first().waitFor();
    const first = await modal().getAttribute('data-job-id');
    const retried = await startBody(`/twins/${twin.id}/deploy`, () => modal().getByRole('button', { name: 'Retry deploy' }).click());
    assert.deepEqual(retried, { debug: true, log_level: 'INFO' });
    await page.waitForFunction((id) => document.querySelector('#run-dialog').dataset.jobId !== id, first);
    await modal().locator('#run-debug [data-debug="INFO"]').waitFor();
    await modal().locator('#run-outcome[data-outcome="failed"]').waitFor({ timeout: RUN_MS });
    await closeModal();
    // Another twin's page starts with the switch off.
    const other = (await api('GET', '/twins')).find((t) => t.name === 'debugged');
    await openTwin(other);
    assert.equal(await page.getByLabel('Debug run').isChecked(), false);
    expectNoProblems(page);
  });

  it('the log view: a debug line\'s level carries to the lines that continue it, never to a diagnostic', async () => {
    const rows = await page.evaluate(async () => {
      const { LogView } = await import('/ui/log-view.js');
      const box = document.createElement('div');
      box.className = 'log';
      const jump = document.createElement('button');
      document.body.append(box, jump);
      const view = new LogView(box, jump);
      const lines = [
        ['stdout', 'Initializing the backend...'],
        ['stderr', '2026-12-01T14:02:33.346Z [DEBUG] ReferenceTransformer: root'],
        ['stderr', '  ------'],
        ['stderr', 'Error: Failed to install provider'],
        ['stderr', 'with its detail on a second line'],
        ['stderr', '2026-12-01T14:02:33.350Z [WARN]  something odd'],
        ['stdout', 'Apply complete!'],
      ];
      lines.forEach(([stream, text], index) => view.append({ id: index + 1, stream, text }));
      await new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));
      const read = () => [...box.querySelectorAll('.log-row')].map((row) => ({
        id: row.dataset.id,
        level: [...row.classList].find((c) => c.startsWith('tf-')) ?? null,
        marker: row.querySelector('.log-marker')?.textContent ?? null,
      }));
      const all = read();
      view.setHideDebug(true);
      await new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));
      const hidden = read().map((row) => row.id);
      const counts = { debug: box.dataset.debugLines, hidden: box.dataset.hiddenLines };
      box.remove();
      jump.remove();
      return { all, hidden, counts };
    });
    assert.deepEqual(rows.all.map((row) => row.level), [null, 'tf-debug', 'tf-debug', null, null, 'tf-warn', null]);
    assert.deepEqual(rows.all.map((row) => row.marker), [null, 'debug', 'debug', 'stderr', 'stderr', 'warn', null]);
    assert.deepEqual(rows.hidden, ['1', '4', '5', '7'], 'hiding keeps terraform\'s output and its diagnostics');
    assert.deepEqual(rows.counts, { debug: '3', hidden: '3' });
  });

  it('bulk delete from the twins list: which were deleted, which refused and why', async () => {
    const a = await api('POST', '/twins', await demoBody(api, 'bulk-a'));
    const b = await api('POST', '/twins', await demoBody(api, 'bulk-b'));
    const deployed = (await api('GET', '/twins')).find((t) => t.name === 'debugged');
    await page.getByRole('link', { name: 'Twins', exact: true }).click();
    await page.getByRole('heading', { name: 'Digital twins' }).waitFor();
    const bar = page.locator('#bulk-bar');
    await bar.getByText('None selected').waitFor();
    assert.ok(await bar.getByRole('button', { name: 'Delete selected…' }).isDisabled());

    // By keyboard: a row's box, then Space; a poll that draws the list again keeps focus there.
    await twinRow(a).getByRole('checkbox', { name: 'Select bulk-a' }).focus();
    await page.keyboard.press('Space');
    await bar.getByText('1 of').waitFor();
    const late = await api('POST', '/twins', await demoBody(api, 'bulk-late'));
    await twinRow(late).waitFor();
    assert.equal((await focused(page)).tag, 'input');
    assert.ok(await page.evaluate(() => document.activeElement.dataset.focusKey?.startsWith('select:')), 'focus is still on a row\'s box');
    assert.equal(await page.evaluate(() => document.activeElement.dataset.twinId), a.id);
    assert.ok(await twinRow(a).getByRole('checkbox').isChecked(), 'the selection survives the redraw');

    // Select all, then Clear, by the bar.
    await bar.getByLabel('Select all').check();
    const live = (await api('GET', '/twins')).length;
    await bar.getByText(`${live} of ${live} selected`).waitFor();
    await bar.getByRole('button', { name: 'Clear selection' }).click();
    await bar.getByText('None selected').waitFor();
    assert.equal((await focused(page)).id, 'select-all');

    for (const twin of [a, b, deployed]) await twinRow(twin).getByRole('checkbox').check();
    await bar.getByText(`3 of ${live} selected`).waitFor();
    await bar.getByRole('button', { name: 'Delete selected…' }).click();
    const dialog = page.locator('#bulk-delete-dialog');
    await dialog.getByRole('heading', { name: 'Delete 3 twins?' }).waitFor();
    for (const twin of [a, b, deployed]) await dialog.locator(`li[data-twin-id="${twin.id}"]`).getByText(twin.name).waitFor();
    assert.equal((await focused(page)).id, 'bulk-delete-cancel');
    await screenshot(page, 'admin-bulk-confirm');
    // Escape changes nothing.
    await page.keyboard.press('Escape');
    await dialog.waitFor({ state: 'hidden' });
    assert.equal((await focused(page)).id, 'bulk-delete');
    assert.equal((await api('GET', '/twins')).length, live);

    await bar.getByRole('button', { name: 'Delete selected…' }).click();
    const [request] = await Promise.all([
      page.waitForRequest((r) => r.method() === 'POST' && new URL(r.url()).pathname === '/twins/bulk-delete'),
      dialog.getByRole('button', { name: 'Delete 3 twins' }).click(),
    ]);
    assert.deepEqual(JSON.parse(request.postData()).ids.sort(), [a.id, b.id, deployed.id].sort());

    const results = page.locator('#bulk-results');
    await results.getByRole('heading', { name: 'Deleted 2 of 3 twins; 1 refused' }).waitFor();
    await page.waitForFunction(() => document.activeElement?.id === 'bulk-results');
    for (const twin of [a, b]) {
      await results.locator(`li[data-twin-id="${twin.id}"][data-result="deleted"]`).getByText(twin.name).waitFor();
      await twinRow(twin).waitFor({ state: 'detached' });
    }
    const refused = results.locator(`li[data-twin-id="${deployed.id}"][data-result="refused"][data-code="resources_deployed"]`);
    await refused.getByText(/refused: it is not a draft and may still own cloud resources\. Destroy it first/).waitFor();
    await refused.getByText('409 resources_deployed').waitFor();
    await twinRow(deployed).waitFor();
    assert.equal((await api('GET', `/twins/${a.id}`)).deleted_at !== null, true);
    assert.equal((await api('GET', `/twins/${deployed.id}`)).deleted_at, null);
    await bar.getByText('None selected').waitFor();
    await screenshot(page, 'admin-bulk-results');

    // Someone deletes one of the selection while the dialog asks: refused as already deleted.
    await twinRow(late).getByRole('checkbox').check();
    await bar.getByRole('button', { name: 'Delete selected…' }).click();
    await dialog.getByRole('heading', { name: 'Delete 1 twin?' }).waitFor();
    await api('DELETE', `/twins/${late.id}`);
    await dialog.getByRole('button', { name: 'Delete 1 twin' }).click();
    await results.getByRole('heading', { name: 'The twin was not deleted' }).waitFor();
    await results.locator(`li[data-twin-id="${late.id}"][data-code="already_deleted"]`).getByText('it was already deleted').waitFor();
    await results.getByRole('button', { name: 'Dismiss' }).click();
    await results.waitFor({ state: 'hidden' });
    expectNoProblems(page);
  });

  it('purge: a dialog that says it is permanent, the gateway\'s refusals in words, then gone for good', async () => {
    // A twin moved to draft by hand while its state still holds the resources, then deleted.
    const kept = await deployedTwin('kept-state');
    await api('POST', `/twins/${kept.id}/status`, { status: 'destroying', reason: 'e2e: pretend' });
    await api('POST', `/twins/${kept.id}/status`, { status: 'draft', reason: 'e2e: pretend' });
    await api('DELETE', `/twins/${kept.id}`);
    const twins = await api('GET', '/twins?include_deleted=true');
    const bulkA = twins.find((t) => t.name === 'bulk-a');
    const bulkB = twins.find((t) => t.name === 'bulk-b');

    await page.goto(`${gateway.url}/#/`);
    await page.getByRole('heading', { name: 'Digital twins' }).waitFor();
    assert.equal(await page.locator('[data-action="purge"]').count(), 0, 'no purge without the deleted twins');
    await page.getByLabel('Show deleted twins').check();
    await twinRow(kept).locator('[data-status="deleted"]').waitFor();
    assert.equal(await twinRow(kept).getByRole('checkbox').count(), 0, 'a deleted twin is not selected for deletion');

    const dialog = page.locator('#purge-dialog');
    const purge = twinRow(kept).getByRole('button', { name: 'Purge kept-state…' });
    await purge.click();
    await dialog.getByRole('heading', { name: 'Purge kept-state for good?' }).waitFor();
    await dialog.getByText(/A purge is permanent: .* it can never be restored/).waitFor();
    await dialog.getByText('This cannot be undone.').waitFor();
    assert.equal((await focused(page)).id, 'purge-cancel', 'the safe choice has focus');
    await page.keyboard.press('Escape');
    await dialog.waitFor({ state: 'hidden' });
    await page.waitForFunction(() => document.activeElement?.dataset.action === 'purge');

    // Its state still holds the 12 resources: refused, said why, and what to do.
    await purge.click();
    await dialog.getByRole('button', { name: 'Purge for good' }).click();
    const error = dialog.locator('#purge-error[data-code="resources_in_state"]');
    await error.getByText('Not purged: its state still holds 12 resources.').waitFor();
    await error.getByText(/Restore the twin, destroy them, delete it again, then purge/).waitFor();
    await error.getByText('409 resources_in_state').waitFor();
    await page.waitForFunction(() => document.activeElement?.id === 'purge-error');
    assert.ok(await dialog.getByRole('button', { name: 'Try again' }).isVisible());
    await screenshot(page, 'admin-purge-refused');
    await dialog.getByRole('button', { name: 'Cancel' }).click();
    assert.equal((await api('GET', `/twins/${kept.id}`)).name, 'kept-state', 'still there');

    // Restored by someone else while the dialog is open: nothing left to try.
    await twinRow(bulkB).getByRole('button', { name: 'Purge bulk-b…' }).click();
    await api('POST', `/twins/${bulkB.id}/restore`);
    await dialog.getByRole('button', { name: 'Purge for good' }).click();
    await dialog.locator('#purge-error[data-code="not_deleted"]').getByText('Not purged: it is no longer deleted.').waitFor();
    assert.ok(await dialog.getByRole('button', { name: /Purge for good|Try again/ }).isHidden());
    await dialog.getByRole('button', { name: 'Cancel' }).click();
    await twinRow(bulkB).locator('[data-status="draft"]').waitFor();

    // A purge that goes through: the row is gone, and so is every route of the twin.
    await twinRow(bulkA).getByRole('button', { name: 'Purge bulk-a…' }).click();
    await dialog.getByRole('button', { name: 'Purge for good' }).click();
    await dialog.waitFor({ state: 'hidden' });
    await page.locator('#twins-note').getByText('Purged bulk-a: the twin, its history, runs and their logs, state versions and files are gone for good.').waitFor();
    await page.waitForFunction(() => document.activeElement?.id === 'twins-note');
    await twinRow(bulkA).waitFor({ state: 'detached' });
    assert.equal(await raw('GET', `/twins/${bulkA.id}`), 404);
    await screenshot(page, 'admin-purged');
    expectNoProblems(page);
  });

  it('the audit log: pages with Load more, targets linked while they exist, a filter, new entries', async () => {
    // Enough entries for more than one page (50): a twin updated again and again.
    const busy = await api('POST', '/twins', await demoBody(api, 'audited'));
    for (let n = 0; n < 45; n += 1) await api('PUT', `/twins/${busy.id}`, { variables: { base_delay_ms: 20 + n } });
    const entries = [];
    for (let after = null; ;) {
      const pageOf = await api('GET', `/audit?limit=1000${after ? `&after=${after}` : ''}`);
      entries.push(...pageOf.entries);
      if (!pageOf.next_after) break;
      after = pageOf.next_after;
    }
    assert.ok(entries.length > 50 && entries.length <= 100, `${entries.length} entries`);

    await page.getByRole('link', { name: 'Audit log', exact: true }).click();
    await page.getByRole('heading', { name: 'Audit log', level: 1 }).waitFor();
    assert.equal(await page.locator('#audit-link').getAttribute('aria-current'), 'page');
    const rows = page.locator('#audit-list tbody tr');
    await page.waitForFunction(() => document.querySelectorAll('#audit-list tbody tr').length === 50);
    assert.deepEqual(
      await rows.evaluateAll((trs) => trs.map((tr) => Number(tr.dataset.entryId))),
      entries.slice(0, 50).map((e) => e.id),
      'the first page, oldest first',
    );
    await page.locator('#audit-count').getByText('50 entries, oldest first. More follow').waitFor();

    // Targets: a live twin is a link, a purged one says so, a run opens its log.
    const created = (name) => entries.find((e) => e.action === 'twin.created' && e.reason?.includes(`'${name}'`));
    const debugged = (await api('GET', '/twins')).find((t) => t.name === 'debugged');
    const createdRow = page.locator(`#audit-list tr[data-entry-id="${created('debugged').id}"]`);
    await createdRow.locator('td[data-label="Target"]').getByRole('link', { name: 'debugged' }).waitFor();
    assert.equal(await createdRow.getByRole('link', { name: 'debugged' }).getAttribute('href'), `#/twins/${debugged.id}`);
    await createdRow.locator('td[data-label="Actor"]').getByText('admin').waitFor();
    await createdRow.locator('td[data-label="Reason"]').getByText("named 'debugged'").waitFor();
    assert.equal(await createdRow.locator('td[data-label="Time"] time').getAttribute('datetime'), created('debugged').at);
    const purgedRow = page.locator(`#audit-list tr[data-entry-id="${created('bulk-a').id}"][data-target="gone"]`);
    await purgedRow.locator('[data-gone="true"]').getByText('purged').waitFor();
    assert.equal(await purgedRow.locator('td[data-label="Target"] a').count(), 0, 'no link to a purged twin');
    const started = entries.find((e) => e.action === 'run.started' && /TF_LOG=TRACE/.test(e.reason ?? ''));
    const startedRow = page.locator(`#audit-list tr[data-entry-id="${started.id}"]`);
    await startedRow.locator('td[data-label="Reason"]').getByText(/\(debug, TF_LOG=TRACE\)/).waitFor();
    await startedRow.getByRole('button', { name: 'Open the log of the deploy of debugged' }).click();
    await modal().locator(`[data-debug="TRACE"]`).first().waitFor();
    assert.equal(await modal().getAttribute('data-job-id'), started.target);
    await modal().locator('#run-outcome[data-outcome="succeeded"]').waitFor();
    await closeModal();
    await page.waitForFunction((id) => document.activeElement?.dataset.openRun === id, started.target);
    await screenshot(page, 'admin-audit');

    // Load more: the rest, focus on the first new entry, and no button left.
    await page.getByRole('button', { name: 'Load more' }).click();
    await page.waitForFunction((n) => document.querySelectorAll('#audit-list tbody tr').length === n, entries.length);
    await page.waitForFunction((id) => document.activeElement?.dataset.entryId === String(id), entries[50].id);
    if (entries.length < 100) await page.getByRole('button', { name: 'Load more' }).waitFor({ state: 'detached' });
    await page.locator('#audit-count').getByText(`${entries.length} entries, oldest first.`).waitFor();

    // The filter: by action, over what is loaded; the datalist offers the actions seen.
    const filter = page.getByLabel('Filter by action');
    await filter.fill('purged');
    await page.waitForFunction(() => [...document.querySelectorAll('#audit-list tbody tr')].every((tr) => tr.dataset.action === 'twin.purged'));
    assert.equal(await rows.count(), entries.filter((e) => e.action === 'twin.purged').length);
    await page.locator('#audit-count').getByText(/^1 of the \d+ loaded entries match\.$/).waitFor();
    assert.ok(await page.locator('#audit-actions option[value="twin.purged"]').count() === 1);
    await screenshot(page, 'admin-audit-filtered');
    await filter.fill('no-such-action');
    await page.locator('#audit-list').getByText('No loaded entry has an action with those words.').waitFor();
    await filter.fill('');

    // Caught up: what happens now joins the end by itself.
    const newcomer = await api('POST', '/twins', await demoBody(api, 'newcomer'));
    const newRow = page.locator('#audit-list tbody tr').last();
    await newRow.locator('td[data-label="Target"]').getByRole('link', { name: 'newcomer' }).waitFor();
    assert.equal(await newRow.getAttribute('data-action'), 'twin.created');
    assert.equal(await newRow.locator('a').getAttribute('href'), `#/twins/${newcomer.id}`);
    expectNoProblems(page);
  });

  it('an owner sees no audit link, and #/audit says the log is for admins', async () => {
    const { stdout } = await promisify(execFile)(BINARY, ['token', 'create', '--owner', 'alice', '--data-dir', gateway.dataDir]);
    const token = stdout.trim();
    assert.match(token, /^tst_/);
    const owner = await openPage(browser);
    await owner.goto(gateway.url);
    await owner.getByLabel('API token').fill(token);
    await owner.getByRole('button', { name: 'Sign in' }).click();
    await owner.getByRole('heading', { name: 'Digital twins' }).waitFor();
    await owner.getByText('No twins yet.').waitFor();
    await owner.getByRole('link', { name: 'Webhooks', exact: true }).waitFor();
    assert.equal(await owner.getByRole('link', { name: 'Audit log' }).count(), 0);
    assert.ok(await owner.locator('#show-deleted-label').isHidden());

    const [answer] = await Promise.all([
      owner.waitForResponse((r) => new URL(r.url()).pathname === '/audit'),
      owner.goto(`${gateway.url}/#/audit`),
    ]);
    assert.equal(answer.status(), 403);
    await owner.getByRole('heading', { name: 'Audit log', level: 1 }).waitFor();
    const denied = owner.locator('#audit-denied');
    await denied.getByText('The audit log is for admins.').waitFor();
    await denied.getByText('alice').waitFor();
    assert.ok(await owner.locator('#audit-body').isHidden());
    assert.ok(await owner.locator('#error-banner').isHidden(), 'no error banner for a 403');
    await screenshot(owner, 'admin-audit-owner');
    expectNoProblems(owner);
    await owner.context().close();
  });

  it('bulk delete of more twins than one request takes: in batches of 100, one answer', async () => {
    const made = [];
    for (let n = 0; n < 103; n += 1) made.push((await api('POST', '/twins', await demoBody(api, `many-${n}`))).id);
    await page.goto(`${gateway.url}/#/`);
    await page.getByLabel('Show deleted twins').uncheck();
    await page.locator(`#twins-list tr[data-twin-id="${made.at(-1)}"]`).waitFor();
    const bar = page.locator('#bulk-bar');
    await bar.getByLabel('Select all').check();
    const live = (await api('GET', '/twins')).filter((t) => !t.deleted_at);
    await bar.getByText(`${live.length} of ${live.length} selected`).waitFor();
    // Only the new drafts: the deployed and failed ones are left out.
    for (const twin of live.filter((t) => !made.includes(t.id))) await twinRow(twin).getByRole('checkbox').uncheck();
    await bar.getByText(`103 of ${live.length} selected`).waitFor();
    const sent = [];
    const listen = (request) => {
      if (request.method() === 'POST' && new URL(request.url()).pathname === '/twins/bulk-delete') sent.push(JSON.parse(request.postData()).ids);
    };
    page.on('request', listen);
    await bar.getByRole('button', { name: 'Delete selected…' }).click();
    await page.locator('#bulk-delete-dialog').getByRole('button', { name: 'Delete 103 twins' }).click();
    await page.locator('#bulk-results').getByRole('heading', { name: 'Deleted all 103 twins' }).waitFor();
    page.off('request', listen);
    assert.deepEqual(sent.map((ids) => ids.length), [100, 3]);
    assert.deepEqual(sent.flat().sort(), [...made].sort());
    assert.equal(await page.locator('#bulk-results li[data-result="deleted"]').count(), 103);
    await page.locator(`#twins-list tr[data-twin-id="${made[0]}"]`).waitFor({ state: 'detached' });
    assert.equal((await api('GET', '/twins')).filter((t) => made.includes(t.id)).length, 0);
    expectNoProblems(page);
  });

  it('fits a phone: the twins list with its selection, the dialogs, the audit log and the debug switch at 390 x 844', async () => {
    const phone = await openPage(browser, { width: 390, height: 844 });
    await signIn(phone, gateway);
    await phone.getByLabel('Show deleted twins').check();
    const kept = (await api('GET', '/twins?include_deleted=true')).find((t) => t.name === 'kept-state');
    await phone.locator(`#twins-list tr[data-twin-id="${kept.id}"] [data-action="purge"]`).waitFor();
    await phone.locator('#twins-list input.select-twin').first().check();
    await fitsWidth(phone);
    await screenshot(phone, 'admin-phone-twins');
    await phone.getByRole('button', { name: 'Delete selected…' }).click();
    await phone.locator('#bulk-delete-dialog').waitFor({ state: 'visible' });
    await fitsWidth(phone);
    await phone.keyboard.press('Escape');
    await phone.locator(`#twins-list tr[data-twin-id="${kept.id}"] [data-action="purge"]`).click();
    await phone.locator('#purge-dialog').waitFor({ state: 'visible' });
    await fitsWidth(phone);
    await screenshot(phone, 'admin-phone-purge');
    await phone.keyboard.press('Escape');

    await phone.goto(`${gateway.url}/#/audit`);
    await phone.locator('#audit-list tbody tr').first().waitFor();
    await phone.locator('#audit-list tbody tr[data-target="live"]').first().waitFor();
    await fitsWidth(phone);
    await screenshot(phone, 'admin-phone-audit');

    const debugged = (await api('GET', '/twins')).find((t) => t.name === 'debugged');
    await phone.goto(`${gateway.url}/#/twins/${debugged.id}`);
    await phone.getByLabel('Debug run').check();
    await phone.locator(`#twin-runs tr[data-debug="true"]`).first().waitFor();
    await fitsWidth(phone);
    await phone.locator('#debug-level').scrollIntoViewIfNeeded();
    await screenshot(phone, 'admin-phone-debug');
    expectNoProblems(phone);
    await phone.context().close();
  });
});
