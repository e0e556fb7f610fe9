// Issue 19: the dashboard's dead ends and wrong labels, one test per item, each with a
// screenshot in test-artifacts/issue19-<n>-*.png. Each test fails on the dashboard before the
// fix (see harness.mjs, E2E_STATIC_DIR) and passes after it.

import assert from 'node:assert/strict';
import { readdir, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import {
  NETWORK_NOISE, RUN_MS, allEvents, apiClient, demoBody, expectNoProblems, focused, killGateway,
  launchBrowser, openPage, screenshot, signIn, startGateway, stopGateway, waitForRun,
} from './harness.mjs';

let gateway;
let browser;
let page;
let api;

const twinUrl = (id) => `${gateway.url}/#/twins/${id}`;
const modal = () => page.locator('#run-dialog');

async function deployed(name, variables = {}) {
  const twin = await api('POST', '/twins', await demoBody(api, name, variables));
  const { job_id: jobId } = await api('POST', `/twins/${twin.id}/deploy`);
  const run = await waitForRun(api, jobId);
  assert.equal(run.status, 'completed', JSON.stringify(run));
  return twin;
}

async function openTwin(twin) {
  await page.goto(twinUrl(twin.id));
  await page.getByRole('heading', { name: twin.name, level: 1 }).waitFor();
}

async function closeModal() {
  await modal().getByRole('button', { name: 'Close' }).click();
  await modal().waitFor({ state: 'hidden' });
}

/** Records, on every change of the modal, the current stage, the bar and its text. */
async function recordProgress() {
  await page.evaluate(() => {
    window.progressLog = [];
    const dialog = document.getElementById('run-dialog');
    const snap = () => {
      const current = dialog.querySelector('.stage[data-state="current"]')?.dataset.stage ?? null;
      const bar = document.getElementById('run-progress');
      window.progressLog.push({
        stage: current,
        hasValue: bar.hasAttribute('value'),
        value: bar.value,
        text: document.getElementById('run-progress-text').textContent,
        state: dialog.dataset.state,
      });
    };
    new MutationObserver(snap).observe(dialog, { subtree: true, childList: true, characterData: true, attributes: true });
  });
}

describe('issue 19: dead ends and wrong labels', { timeout: 10 * 60_000 }, () => {
  before(async () => {
    gateway = await startGateway({ name: 'gateway-issue19', args: ['--max-concurrent-runs', '4'] });
    api = apiClient(gateway);
    browser = await launchBrowser();
    page = await openPage(browser);
    await signIn(page, gateway);
  });

  after(async () => {
    await browser?.close();
    await stopGateway(gateway);
  });

  it('1: a twin with a configuration error can be edited, deleted and restored from its page', async () => {
    const body = await demoBody(api, 'broken-config');
    body.files['broken.tf'] = 'output "broken" {\n  value = var.nowhere\n}\n';
    const twin = await api('POST', '/twins', body);
    await openTwin(twin);
    await page.locator('#validation[data-state="invalid"]').waitFor({ timeout: RUN_MS });
    assert.ok(await page.getByRole('button', { name: 'Deploy', exact: true }).isDisabled());

    await page.getByRole('button', { name: 'Edit configuration' }).click();
    const dialog = page.locator('#edit-dialog');
    await dialog.waitFor({ state: 'visible' });
    await dialog.getByRole('textbox', { name: 'broken.tf' }).fill('output "broken" {\n  value = "fixed"\n}\n');
    await screenshot(page, 'issue19-1-edit-dialog');
    await dialog.getByRole('button', { name: 'Save changes' }).click();
    await dialog.waitFor({ state: 'hidden' });
    await page.locator('#validation[data-state="valid"]').waitFor({ timeout: RUN_MS });
    await page.waitForFunction(() => !document.querySelector('#deploy-button').disabled);
    assert.match((await api('GET', `/twins/${twin.id}`)).files['broken.tf'], /fixed/);

    await page.getByRole('button', { name: 'Delete twin' }).click();
    const confirm = page.locator('#delete-dialog');
    await confirm.getByRole('button', { name: 'Delete' }).click();
    await page.locator('#deleted-banner').getByText('This twin was deleted').waitFor();
    assert.ok(await page.getByRole('button', { name: 'Deploy', exact: true }).isDisabled());
    await screenshot(page, 'issue19-1-deleted');

    // An admin finds it among the deleted twins, and restores it from its page.
    await page.getByRole('link', { name: 'Twins', exact: true }).click();
    await page.getByLabel('Show deleted twins').check();
    await page.locator('tr[data-deleted="true"]', { hasText: 'broken-config' }).getByRole('link').click();
    await page.getByRole('button', { name: 'Restore twin' }).click();
    await page.locator('#deleted-banner').waitFor({ state: 'hidden' });
    assert.equal((await api('GET', `/twins/${twin.id}`)).deleted_at, null);
    expectNoProblems(page);
  });

  it('3: Refresh status says at once that it is checking for drift', async () => {
    const twin = await deployed('refresh-feedback');
    await openTwin(twin);
    await page.locator('#twin-status [data-status="deployed"]').waitFor();
    await page.getByRole('button', { name: 'Refresh status' }).click();
    await page.locator('#twin-drift [data-state="checking"]').getByText('Checking for drift').waitFor();
    await page.locator('#action-hint', { hasText: 'Checking for drift' }).waitFor();
    await screenshot(page, 'issue19-3-checking');
    await page.locator('#twin-drift [data-state="clean"]').waitFor({ timeout: RUN_MS });
    await page.locator('#action-hint', { hasText: 'no drift' }).waitFor();
    expectNoProblems(page);
  });

  it('2: a drift check is shown as a drift check, and the drifted resource is marked', async () => {
    const twin = await deployed('drifting');
    // Delete the IoT hub behind terraform's back.
    const sandbox = path.join(gateway.dataDir, 'sandbox', twin.id);
    let hub;
    for (const file of await readdir(sandbox)) {
      const object = JSON.parse(await readFile(path.join(sandbox, file), 'utf8'));
      if (object.kind === 'iot_hub') hub = file;
    }
    assert.ok(hub, 'the sandbox holds the IoT hub');
    await rm(path.join(sandbox, hub));

    await openTwin(twin);
    await page.locator('#twin-map [data-address="sandbox_resource.iot_hub"]').waitFor();
    await page.getByRole('button', { name: 'Refresh status' }).click();
    await page.locator('#twin-drift [data-state="drifted"][data-count="1"]').waitFor({ timeout: RUN_MS });
    await page.locator('#twin-drift [data-address="sandbox_resource.iot_hub"]').waitFor();
    await page.locator('#twin-map [data-address="sandbox_resource.iot_hub"][data-drifted="true"]').waitFor();
    const infra = await api('GET', `/twins/${twin.id}/infrastructure-status`);
    assert.equal(infra.drift.drifted_count, 1);
    await screenshot(page, 'issue19-2-drift-marked');

    await page.getByRole('button', { name: 'View the last check\'s log' }).click();
    await modal().locator('#run-outcome[data-outcome="succeeded"]').waitFor({ timeout: RUN_MS });
    const title = await modal().locator('#run-title').textContent();
    assert.match(title, /^Drift check of drifting/);
    assert.doesNotMatch(title, /Deploy/);
    assert.equal(await modal().locator('[data-stage="applying"]').count(), 0, 'no Applying chip');
    assert.equal(await modal().locator('[data-stage="planning"]').count(), 0, 'no Planning chip');
    await modal().locator('[data-stage="checking_drift"][data-state="done"]').waitFor();
    await modal().locator('#run-findings').getByText('1 resource drifted').waitFor();
    assert.doesNotMatch(await modal().locator('#run-outcome').textContent(), /is deployed/);
    await screenshot(page, 'issue19-2-drift-modal');
    await closeModal();
    expectNoProblems(page);
  });

  it('4: a multi-line log event takes one row per line and overlaps nothing', async () => {
    const result = await page.evaluate(async () => {
      const { LogView } = await import('/ui/log-view.js');
      const box = document.createElement('div');
      box.className = 'log';
      const jump = document.createElement('button');
      document.body.append(box, jump);
      const view = new LogView(box, jump);
      view.append({ id: 1, stream: 'stdout', text: 'before' });
      view.append({ id: 2, stream: 'stderr', text: 'Interrupt received.\nPlease wait for Terraform to exit or data loss may occur.\nGracefully shutting down...' });
      view.append({ id: 3, stream: 'stdout', text: 'after' });
      await new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));
      const rows = [...box.querySelectorAll('.log-row')];
      const boxes = rows.map((row) => row.getBoundingClientRect());
      const overflowing = rows.filter((row) => row.scrollHeight > row.clientHeight + 1).length;
      const overlapping = boxes.slice(1).filter((rect, i) => rect.top < boxes[i].bottom - 1).length;
      const texts = rows.map((row) => row.querySelector('.log-text').textContent);
      box.remove();
      jump.remove();
      return { rows: rows.length, overflowing, overlapping, texts, lines: box.dataset.lines };
    });
    assert.equal(result.lines, '3', 'three events');
    assert.equal(result.rows, 5, 'five rows: the event of three lines takes three');
    assert.equal(result.overflowing, 0, 'no row draws outside itself');
    assert.equal(result.overlapping, 0, 'no row covers another');
    assert.deepEqual(result.texts, ['before', 'Interrupt received.', 'Please wait for Terraform to exit or data loss may occur.', 'Gracefully shutting down...', 'after']);

    // And in a real run's log: every row holds its own text.
    const twin = await api('POST', '/twins', await demoBody(api, 'fails-with-diagnostics', { fail_on_create: ['iot_hub'] }));
    await openTwin(twin);
    await page.waitForFunction(() => !document.querySelector('#deploy-button').disabled, null, { timeout: RUN_MS });
    await page.getByRole('button', { name: 'Deploy', exact: true }).click();
    await modal().locator('#run-outcome[data-outcome="failed"]').waitFor({ timeout: RUN_MS });
    const spilled = await page.$$eval('#run-log .log-row', (rows) => rows.filter((row) => row.scrollHeight > row.clientHeight + 1).length);
    assert.equal(spilled, 0);
    await screenshot(page, 'issue19-4-log-rows');
    await closeModal();
    expectNoProblems(page);
  });

  it('6: the wizard builds a twin from a provider\'s template, region and size, without files', async () => {
    const providers = await api('GET', '/providers');
    await page.goto(`${gateway.url}/#/new`);
    await page.getByRole('heading', { name: 'New twin', level: 1 }).waitFor();
    for (const provider of providers) await page.getByRole('radio', { name: new RegExp(provider.name.replace(/[()]/g, '\\$&')) }).waitFor();
    await page.getByRole('radio', { name: /Amazon Web Services/ }).check();
    await page.getByRole('radio', { name: /template/ }).check();
    await page.getByRole('button', { name: 'Next' }).click();
    await page.getByRole('heading', { name: 'Where should it run?' }).waitFor();
    await page.getByRole('radio', { name: /Europe \(Ireland\)/ }).check();
    await page.getByRole('button', { name: 'Next' }).click();
    await page.getByRole('heading', { name: 'How big?' }).waitFor();
    await page.getByRole('radio', { name: /^Medium/ }).check();
    await page.getByRole('button', { name: 'Next' }).click();
    await page.getByRole('heading', { name: 'Name and variables' }).waitFor();
    await page.getByLabel('Name', { exact: true }).fill('plant-9');
    await page.getByRole('button', { name: 'Next' }).click();
    await page.getByRole('heading', { name: 'Review', exact: true }).waitFor();
    await screenshot(page, 'issue19-6-review');
    const create = page.getByRole('button', { name: 'Create twin', exact: true });
    await page.waitForFunction(() => !document.querySelector('#wizard-create')?.disabled, null, { timeout: RUN_MS });
    await create.click();
    await page.getByRole('heading', { name: 'plant-9', level: 1 }).waitFor();
    const twins = await api('GET', '/twins');
    const twin = twins.find((t) => t.name === 'plant-9');
    assert.equal(twin.provider, 'aws');
    assert.equal(twin.variables.region, 'eu-west-1');
    assert.equal(twin.variables.size, 'medium');
    assert.ok(Object.keys(twin.files).length > 0, 'the template became its files');
    expectNoProblems(page);
  });

  it('7: progress says what is going on before resources change, and the failure after it', async () => {
    const twin = await api('POST', '/twins', await demoBody(api, 'progress-words', { base_delay_ms: 200 }));
    await openTwin(twin);
    await page.waitForFunction(() => !document.querySelector('#deploy-button').disabled, null, { timeout: RUN_MS });
    await recordProgress();
    await page.getByRole('button', { name: 'Deploy', exact: true }).click();
    await modal().locator('[data-stage="applying"][data-state="current"]').waitFor({ timeout: RUN_MS });
    await screenshot(page, 'issue19-7-applying');
    await modal().locator('#run-outcome[data-outcome="succeeded"]').waitFor({ timeout: RUN_MS });
    const log = await page.evaluate(() => window.progressLog);
    const early = log.filter((s) => s.stage === 'initializing' || s.stage === 'planning');
    assert.ok(early.length > 0, 'the modal was seen initializing or planning');
    for (const snap of early) {
      assert.equal(snap.hasValue, false, `an indeterminate bar while ${snap.stage}: ${JSON.stringify(snap)}`);
      assert.doesNotMatch(snap.text, /Applying|^0%/, `no "Applying" or 0% while ${snap.stage}`);
    }
    await closeModal();

    // A failed retry ends reading "Failed", not "Applying...".
    const failing = await api('POST', '/twins', await demoBody(api, 'fails-twice', { fail_on_create: ['iot_hub'] }));
    await openTwin(failing);
    await page.waitForFunction(() => !document.querySelector('#deploy-button').disabled, null, { timeout: RUN_MS });
    await page.getByRole('button', { name: 'Deploy', exact: true }).click();
    await modal().locator('#run-outcome[data-outcome="failed"]').waitFor({ timeout: RUN_MS });
    const first = await modal().getAttribute('data-job-id');
    await modal().getByRole('button', { name: 'Retry deploy' }).click();
    await page.waitForFunction((id) => document.querySelector('#run-dialog').dataset.jobId !== id, first);
    await modal().locator('#run-outcome[data-outcome="failed"]').waitFor({ timeout: RUN_MS });
    const text = await modal().locator('#run-progress-text').textContent();
    assert.doesNotMatch(text, /Applying/);
    assert.match(text, /^Failed/);
    await screenshot(page, 'issue19-7-failed-retry');
    await closeModal();
    expectNoProblems(page);
  });

  it('8: closing the run modal mid-run puts focus on something that works', async () => {
    const twin = await api('POST', '/twins', await demoBody(api, 'focus-return', { base_delay_ms: 300 }));
    await openTwin(twin);
    await page.waitForFunction(() => !document.querySelector('#deploy-button').disabled, null, { timeout: RUN_MS });
    await page.getByRole('button', { name: 'Deploy', exact: true }).focus();
    await page.keyboard.press('Enter');
    await modal().waitFor({ state: 'visible' });
    await modal().locator('[data-stage="applying"][data-state="current"]').waitFor({ timeout: RUN_MS });
    await page.keyboard.press('Escape');
    await modal().waitFor({ state: 'hidden' });
    // The dialog's `close` event (which moves focus) is dispatched after it is hidden.
    await page.waitForFunction(() => !document.querySelector('#run-dialog').contains(document.activeElement));
    const target = await focused(page);
    assert.notEqual(target.tag, 'body', 'focus is not lost to <body>');
    assert.equal(target.disabled, false, `focus is on something usable: ${JSON.stringify(target)}`);
    assert.equal(target.id, 'progress-button', 'the run goes on: "View progress" takes focus');
    await screenshot(page, 'issue19-8-focus');
    await waitForRun(api, await modal().getAttribute('data-job-id'));
    expectNoProblems(page);
  });

  it('9: on a phone, long log lines and the failure wrap instead of scrolling sideways', async () => {
    const twin = await api('POST', '/twins', await demoBody(api, 'phone-failure', { fail_on_create: ['telemetry_db'] }));
    const { job_id: jobId } = await api('POST', `/twins/${twin.id}/deploy`);
    await waitForRun(api, jobId);
    const phone = await openPage(browser, { width: 390, height: 844 });
    await signIn(phone, gateway);
    await phone.goto(twinUrl(twin.id));
    await phone.locator(`#twin-runs [data-open-run="${jobId}"]`).click();
    const dialog = phone.locator('#run-dialog');
    await dialog.locator('#run-outcome[data-outcome="failed"]').waitFor({ timeout: RUN_MS });
    await phone.waitForFunction(() => document.querySelectorAll('#run-log .log-row').length > 0);
    const log = await phone.$eval('#run-log', (el) => ({ scroll: el.scrollWidth, client: el.clientWidth }));
    assert.ok(log.scroll <= log.client, `the log does not scroll sideways (${log.scroll} > ${log.client})`);
    const outcome = await phone.$eval('#run-outcome', (el) => ({ scroll: el.scrollWidth, client: el.clientWidth }));
    assert.ok(outcome.scroll <= outcome.client, 'the failure is not cut');

    // The failure line is there in full, wrapped over rows.
    const errorLine = (await allEvents(api, jobId)).map((e) => e.data?.line).find((line) => line?.startsWith('Error: '));
    assert.ok(errorLine && errorLine.length > 40, 'the run printed a long error line');
    await phone.locator('#run-log').evaluate((el) => { el.scrollTop = el.scrollHeight; });
    const shown = await phone.$$eval('#run-log .log-row.is-error .log-text', (rows) => rows.map((r) => r.textContent).join(''));
    assert.ok(shown.includes(errorLine.slice(0, 200)) || errorLine.includes(shown), 'the error line reads whole across its rows');
    await screenshot(phone, 'issue19-9-phone-log');
    expectNoProblems(phone);
    await phone.context().close();
  });

  it('10: "Twin not found" shows no cards or buttons', async () => {
    await page.goto(`${gateway.url}/#/twins/twin_${'0'.repeat(32)}`);
    await page.getByRole('heading', { name: 'Twin not found', level: 1 }).waitFor();
    await page.getByRole('link', { name: 'Back to all twins' }).waitFor();
    assert.equal(await page.locator('#deploy-button').isVisible(), false);
    assert.equal(await page.locator('#twin-body').isVisible(), false);
    assert.equal(await page.locator('#twin-view .card:visible').count(), 1, 'only the not-found card');
    await screenshot(page, 'issue19-10-not-found');
    expectNoProblems(page, [/404/]);
  });

  it('11: a draft after a destroy says it was destroyed since its last deploy', async () => {
    const twin = await deployed('destroyed-since');
    const { job_id: jobId } = await api('POST', `/twins/${twin.id}/destroy`);
    assert.equal((await waitForRun(api, jobId)).status, 'completed');
    await openTwin(twin);
    await page.locator('#twin-status [data-status="draft"]').waitFor();
    const cell = page.locator('#twin-last-deployed');
    await cell.locator('[data-since="destroyed"]').waitFor();
    assert.match(await cell.textContent(), /ago · destroyed .*ago|ago · destroyed now|destroyed/);
    await screenshot(page, 'issue19-11-destroyed-since');
    expectNoProblems(page);
  });

  it('12: runs and history page on, with actor and exit code; Plan, keep resources and repair have buttons', async () => {
    // 22 quick runs that fail at init (a syntax error), and 24 status moves.
    const twin = await api('POST', '/twins', { name: 'busy-twin', provider: 'sandbox', files: { 'main.tf': 'resource "terraform_data" "x" {\n' } });
    const jobs = [];
    for (let i = 0; i < 22; i += 1) jobs.push((await api('POST', `/twins/${twin.id}/plan`)).job_id);
    for (const job of jobs) await waitForRun(api, job);
    for (let i = 0; i < 12; i += 1) {
      await api('POST', `/twins/${twin.id}/status`, { status: 'deploying', reason: `drill ${i}` });
      await api('POST', `/twins/${twin.id}/status`, { status: 'error', reason: `drill ${i}` });
    }
    await openTwin(twin);
    const runs = page.locator('#twin-runs tbody tr');
    await page.waitForFunction(() => document.querySelectorAll('#twin-runs tbody tr').length === 20);
    const first = runs.first();
    assert.equal(await first.locator('td[data-label="By"]').textContent(), 'admin');
    assert.match(await first.locator('td[data-label="Exit code"]').textContent(), /^\d+$|^—$/);
    await page.getByRole('button', { name: 'Show older runs' }).click();
    await page.waitForFunction(() => document.querySelectorAll('#twin-runs tbody tr').length === 22);
    const history = page.locator('#twin-history .history li');
    assert.equal(await history.count(), 20);
    await page.getByRole('button', { name: 'Show older entries' }).click();
    await page.waitForFunction(() => document.querySelectorAll('#twin-history .history li').length > 20);
    await screenshot(page, 'issue19-12-paged');

    // Status moves: an admin repairs by hand, an owner keeps the resources after a failed destroy.
    await page.getByRole('button', { name: 'Repair status…' }).click();
    const repair = page.locator('#status-dialog');
    await repair.getByLabel('New status').selectOption('destroying');
    await repair.getByLabel('Reason').fill('the destroy was started by hand');
    await repair.getByRole('button', { name: 'Move' }).click();
    await page.locator('#twin-status [data-status="destroying"]').waitFor();
    await page.getByRole('button', { name: 'Repair status…' }).click();
    await repair.getByLabel('New status').selectOption('destroy_failed');
    await repair.getByLabel('Reason').fill('it failed');
    await repair.getByRole('button', { name: 'Move' }).click();
    await page.locator('#twin-status [data-status="destroy_failed"]').waitFor();
    await page.getByRole('button', { name: 'Keep resources' }).click();
    await page.locator('#twin-status [data-status="deployed"]').waitFor();

    // Plan shows the change list before Deploy.
    const planned = await api('POST', '/twins', await demoBody(api, 'planned'));
    await openTwin(planned);
    await page.waitForFunction(() => !document.querySelector('#plan-button').disabled, null, { timeout: RUN_MS });
    await page.getByRole('button', { name: 'Plan', exact: true }).click();
    await modal().getByRole('heading', { name: 'Planning planned' }).waitFor();
    await modal().locator('#run-outcome[data-outcome="succeeded"]').waitFor({ timeout: RUN_MS });
    await modal().locator('#run-findings').getByText('Changes the next deploy makes').waitFor();
    await modal().locator('#run-findings [data-address="sandbox_resource.iot_hub"][data-action="create"]').waitFor();
    await modal().getByRole('button', { name: 'Deploy this plan' }).waitFor();
    await screenshot(page, 'issue19-12-plan');
    await closeModal();
    expectNoProblems(page);
  });
});

// Short graces: a restart settles a killed gateway's leftover terraform within seconds.
const GRACE = ['--shutdown-grace-secs', '10', '--cancel-grace-secs', '3'];

describe('issue 19, item 5: a gateway going away is not a cancel', { timeout: 5 * 60_000 }, () => {
  let local;
  let localApi;
  let localBrowser;
  let localPage;

  before(async () => {
    local = await startGateway({ name: 'gateway-issue19-restart', args: GRACE });
    localApi = apiClient(local);
    localBrowser = await launchBrowser();
    localPage = await openPage(localBrowser);
    await signIn(localPage, local);
  });

  after(async () => {
    await localBrowser?.close();
    await stopGateway(local);
  });

  it('5: a lost connection says so and reconnects; a shutdown shows the run\'s own error', async () => {
    const dialog = localPage.locator('#run-dialog');
    const twin = await localApi('POST', '/twins', await demoBody(localApi, 'restarted', { base_delay_ms: 400 }));
    const restart = async () => {
      local = await startGateway({
        name: 'gateway-issue19-restart', dataDir: local.dataDir, port: local.port, args: GRACE,
      });
      localApi = apiClient(local);
    };
    const watchDeploy = async () => {
      await localPage.goto(`${local.url}/#/twins/${twin.id}`);
      await localPage.waitForFunction(() => !document.querySelector('#deploy-button').disabled, null, { timeout: RUN_MS });
      await localPage.getByRole('button', { name: 'Deploy', exact: true }).click();
      await dialog.locator('[data-stage="applying"][data-state="current"]').waitFor({ timeout: RUN_MS });
      return dialog.getAttribute('data-job-id');
    };
    /** What the modal itself says (terraform's log may say anything). */
    const ownWords = () => localPage.$$eval('#run-title, #run-notice, #run-outcome, #run-progress-text', (els) => els.map((el) => el.textContent).join(' | '));
    /** After the gateway is back: the modal reaches the run's end and quotes its error. */
    const endsWithItsOwnWords = async (jobId, shot) => {
      const run = await waitForRun(localApi, jobId);
      await dialog.locator('#run-outcome[data-outcome]').waitFor({ timeout: RUN_MS });
      const outcome = await dialog.locator('#run-outcome').textContent();
      assert.doesNotMatch(outcome, /was cancelled/);
      if (run.error) assert.ok(outcome.includes(run.error), `the run's error verbatim: "${run.error}" in "${outcome}"`);
      await screenshot(localPage, shot);
      await dialog.getByRole('button', { name: 'Close' }).click();
    };

    // The gateway vanishes mid-run (killed): the stream drops without `done`.
    const killed = await watchDeploy();
    await killGateway(local, 'SIGKILL');
    await dialog.locator('#run-notice', { hasText: 'Connection to the gateway lost — reconnecting…' }).waitFor({ timeout: RUN_MS });
    assert.equal(await dialog.getAttribute('data-connection'), 'lost');
    assert.doesNotMatch(await ownWords(), /cancelled/);
    await screenshot(localPage, 'issue19-5-connection-lost');
    await restart();
    await endsWithItsOwnWords(killed, 'issue19-5-after-kill');

    // The gateway stops mid-run (SIGTERM): whatever the run's end, not a user's cancel. A
    // changed title gives the second deploy work to do (a deploy with nothing to change is
    // over before the gateway could be stopped in it).
    await localApi('PUT', `/twins/${twin.id}`, { variables: { ...twin.variables, base_delay_ms: 400, dashboard_title: 'restarted again' } });
    const stopped = await watchDeploy();
    await killGateway(local, 'SIGTERM');
    await localPage.waitForFunction(() => {
      const d = document.getElementById('run-dialog');
      return d.dataset.connection === 'lost' || ['failed', 'cancelled', 'succeeded'].includes(d.dataset.state);
    }, null, { timeout: RUN_MS });
    assert.doesNotMatch(await ownWords(), /was cancelled/);
    await screenshot(localPage, 'issue19-5-gateway-stopped');
    await restart();
    await endsWithItsOwnWords(stopped, 'issue19-5-after-restart');
    expectNoProblems(localPage, NETWORK_NOISE);
  });
});
