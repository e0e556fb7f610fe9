// The dashboard end to end: real headless Chromium against a real gateway (the debug binary,
// port 0, a fresh data directory) running real terraform with the sandbox provider.
//
//   npm --prefix e2e test        (after `cargo build --bin terrastream` and `npm ci --prefix e2e`)
//
// Environment and helpers: harness.mjs. Screenshots and the gateway's log go to test-artifacts/.
//
// Nothing here waits a fixed time: every step waits for a condition on the page, with
// generous limits, so a slow machine is slower but not flaky.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import {
  RUN_MS, allEvents as storedEvents, apiClient, expectNoProblems, launchBrowser, openPage,
  screenshot as shoot, startGateway, stopGateway, waitForNumber as waitFor, NETWORK_NOISE,
} from './harness.mjs';

// Every sandbox delay is a multiple of this: a deploy takes a few seconds, long enough to
// reload the page in the middle of it.
const BASE_DELAY_MS = 400;

let gateway;
let browser;
let page;
let apiCall;

const allEvents = (jobId) => storedEvents(apiCall, jobId);
const screenshot = (name) => shoot(page, name);
const waitForNumber = (...args) => waitFor(page, ...args);
const logCount = () =>
  page.locator('#run-log').getAttribute('data-lines').then(Number);

describe('the dashboard', { timeout: 10 * 60_000 }, () => {
  before(async () => {
    gateway = await startGateway({ name: 'gateway-dashboard' });
    apiCall = apiClient(gateway);
    browser = await launchBrowser();
    page = await openPage(browser);
  });

  after(async () => {
    await browser?.close();
    await stopGateway(gateway);
  });

  it('refuses a wrong token with a message, then signs in with the right one', async () => {
    await page.goto(gateway.url);
    await page.getByRole('heading', { name: 'Sign in' }).waitFor();
    await page.getByLabel('API token').fill('tst_not-a-real-token');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('alert').filter({ hasText: 'That token is not valid' }).waitFor();

    await page.getByLabel('API token').fill(gateway.token);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('heading', { name: 'Digital twins' }).waitFor();
    await page.getByText('No twins yet.').waitFor();
  });

  it('creates the demo twin with the wizard: sandbox template, no files needed', async () => {
    await page.getByRole('link', { name: 'New twin' }).click();
    await page.getByRole('heading', { name: 'New twin', level: 1 }).waitFor();
    await page.getByRole('radio', { name: /Local sandbox/ }).check();
    await page.getByRole('button', { name: 'Next' }).click();
    await page.getByRole('heading', { name: 'Where should it run?' }).waitFor();
    await page.getByRole('radio', { name: /This machine/ }).check();
    await page.getByRole('button', { name: 'Next' }).click();
    await page.getByRole('heading', { name: 'How big?' }).waitFor();
    await page.getByRole('radio', { name: /Local: the demo twin/ }).check();
    await page.getByRole('button', { name: 'Next' }).click();
    await page.getByRole('heading', { name: 'Name and variables' }).waitFor();
    assert.equal(await page.getByLabel('Name', { exact: true }).inputValue(), 'demo');
    await page.locator('#wizard-variables .variable-name').first().fill('base_delay_ms');
    await page.locator('#wizard-variables .variable-value').first().fill(String(BASE_DELAY_MS));
    await page.getByRole('button', { name: 'Next' }).click();
    await page.locator('#wizard-plan[data-state="done"]').waitFor({ timeout: RUN_MS });
    await page.getByRole('button', { name: 'Create twin', exact: true }).click();

    await page.getByRole('heading', { name: 'demo', level: 1 }).waitFor();
    await page.locator('#twin-status [data-status="draft"]').waitFor();
    assert.equal(await page.locator('#twin-resources').textContent(), '0');
    assert.ok(await page.getByRole('button', { name: 'Destroy' }).isDisabled());
  });

  it('deploys with stages, progress and a live log that survives a reload', async (t) => {
    const deploy = page.getByRole('button', { name: 'Deploy', exact: true });
    // Enabled once the status machine allows it and the configuration validated.
    await page.waitForFunction(() => !document.querySelector('#deploy-button').disabled);
    await deploy.click();

    const modal = page.locator('#run-dialog');
    await modal.waitFor({ state: 'visible' });
    await modal.getByRole('heading', { name: 'Deploying demo' }).waitFor();
    const jobId = await modal.getAttribute('data-job-id');
    assert.match(jobId, /^run_/);

    // Stages advance: applying becomes the current one after the two before it are done.
    await modal
      .locator('[data-stage="applying"][data-state="current"][aria-current="step"]')
      .waitFor({ timeout: RUN_MS });
    assert.equal(await modal.locator('[data-stage="initializing"]').getAttribute('data-state'), 'done');
    assert.equal(await modal.locator('[data-stage="planning"]').getAttribute('data-state'), 'done');

    // Log lines arrive, and keep arriving; the bar moves with `progress` events.
    const first = await waitForNumber('#run-log', 'data-lines', 0);
    await waitForNumber('#run-log', 'data-lines', first);
    await page.waitForFunction(() => document.querySelector('#run-progress').value > 0, null, { timeout: RUN_MS });
    await screenshot('progress-modal');

    // Reload mid-run: the modal comes back on the same run with the whole log so far.
    const before = await logCount();
    const { status: statusAtReload } = await apiCall('GET', `/runs/${jobId}`);
    t.diagnostic(`reloaded with ${before} lines shown; the run was ${statusAtReload}`);
    await page.reload();
    await modal.waitFor({ state: 'visible' });
    assert.equal(await modal.getAttribute('data-job-id'), jobId);
    await waitForNumber('#run-log', 'data-lines', before - 1);
    // ... and continues to the end.
    await modal.locator('#run-outcome[data-outcome="succeeded"]').waitFor({ timeout: RUN_MS });
    assert.match(await modal.locator('#run-outcome').textContent(), /Deploy succeeded/);
    assert.equal(await modal.locator('[data-stage="complete"]').getAttribute('data-state'), 'done');
    assert.equal(await page.locator('#run-progress').evaluate((bar) => bar.value), 100);

    // No gap and no duplicate: the page holds exactly the run's stored log lines, in order.
    const lines = (await allEvents(jobId)).filter((e) => e.event === 'log' || e.event === 'warning');
    if (statusAtReload === 'processing') {
      assert.ok(lines.length > before, 'the log went on after the reload');
    }
    assert.equal(await logCount(), lines.length);
    assert.equal(Number(await modal.locator('#run-log').getAttribute('data-last-event-id')), lines.at(-1).id);
    const shownLast = await modal.locator('.log-row').last().getAttribute('data-id');
    assert.equal(Number(shownLast), lines.at(-1).id, 'the log follows the end');
    await modal.locator('#run-log').evaluate((log) => { log.scrollTop = 0; });
    await page.waitForFunction(
      (id) => document.querySelector('#run-log .log-row')?.dataset.id === String(id),
      lines[0].id,
    );
    assert.equal(await modal.locator('.log-row .log-text').first().textContent(), lines[0].data.line);

    await modal.getByRole('button', { name: 'Close' }).click();
    await modal.waitFor({ state: 'hidden' });
  });

  it('shows the twin deployed: green badge, resources, outputs with secrets masked', async () => {
    await page.locator('#twin-status .badge.tone-green[data-status="deployed"]').waitFor();
    await page.locator('#twin-resources', { hasText: '12' }).waitFor();
    await page.locator('#twin-outputs').getByText('grafana_url').waitFor();
    const secretRow = page.locator('#twin-outputs tr', { hasText: 'database_secret' });
    await secretRow.getByText('sensitive').waitFor();
    assert.ok(!(await secretRow.textContent()).match(/[0-9a-f]{16}/), 'the secret is not shown');
    await page.locator('#twin-runs tr[data-kind="deploy"]').getByText('completed').waitFor();

    await page.getByRole('link', { name: 'All twins' }).click();
    const row = page.locator('tr[data-status="deployed"]', { hasText: 'demo' });
    await row.locator('.badge.tone-green').waitFor();
    await row.locator('td', { hasText: '12' }).waitFor();
    await screenshot('dashboard');
    await page.setViewportSize({ width: 390, height: 844 });
    await screenshot('dashboard-phone');
    await page.setViewportSize({ width: 1280, height: 900 });
    await row.getByRole('link', { name: 'demo' }).click();
  });

  it('destroys through the confirmation dialog and is a draft again', async () => {
    await page.getByRole('button', { name: 'Destroy' }).click();
    const confirm = page.locator('#destroy-dialog');
    await confirm.waitFor({ state: 'visible' });
    await confirm.getByText('This will permanently delete all cloud resources for demo').waitFor();
    await confirm.getByText('This action cannot be undone.').waitFor();
    for (const kind of ['iot_hub', 'database', 'function', 'grafana', 'twin']) {
      await confirm.locator('#destroy-kinds code', { hasText: new RegExp(`^${kind}$`) }).waitFor();
    }
    await screenshot('destroy-dialog');

    // Cancel first: nothing happens.
    await confirm.getByRole('button', { name: 'Cancel' }).click();
    await confirm.waitFor({ state: 'hidden' });
    assert.equal(await page.locator('#run-dialog').isVisible(), false);

    await page.getByRole('button', { name: 'Destroy' }).click();
    await confirm.getByRole('button', { name: 'Destroy' }).click();
    const modal = page.locator('#run-dialog');
    await modal.getByRole('heading', { name: 'Destroying demo' }).waitFor();
    await modal.locator('[data-stage="destroying"]').waitFor();
    await modal.locator('#run-outcome[data-outcome="succeeded"]').waitFor({ timeout: RUN_MS });
    await modal.getByRole('button', { name: 'Close' }).click();

    await page.locator('#twin-status .badge.tone-gray[data-status="draft"]').waitFor();
    await page.locator('#twin-resources', { hasText: /^0$/ }).waitFor();
    await page.getByText('No outputs yet.').waitFor();
  });

  it('says why a run failed and offers Retry', async () => {
    const template = await apiCall('GET', '/templates/demo');
    const twin = await apiCall('POST', '/twins', {
      ...template,
      name: 'always-fails',
      variables: { base_delay_ms: 20, fail_on_create: ['iot_hub'] },
    });
    assert.equal(twin.name, 'always-fails');
    await page.goto(`${gateway.url}/#/twins/${twin.id}`);
    await page.getByRole('heading', { name: 'always-fails', level: 1 }).waitFor();
    await page.waitForFunction(() => !document.querySelector('#deploy-button').disabled);
    await page.getByRole('button', { name: 'Deploy', exact: true }).click();

    const modal = page.locator('#run-dialog');
    await modal.locator('#run-outcome[data-outcome="failed"]').waitFor({ timeout: RUN_MS });
    const outcome = await modal.locator('#run-outcome').textContent();
    assert.match(outcome, /Deploy failed/);
    assert.match(outcome, /fail_on_create/);
    await modal.getByRole('button', { name: 'Retry deploy' }).waitFor();
    await modal.locator('[data-state="failed"]').first().waitFor();
    await screenshot('failed-run');
    await modal.locator('.log-row.is-error').first().waitFor();
    await modal.getByRole('button', { name: 'Close' }).click();
    await page.locator('#twin-status .badge.tone-red[data-status="error"]').waitFor();
  });

  it('keeps Deploy disabled while the configuration does not validate', async (t) => {
    const template = await apiCall('GET', '/templates/demo');
    const twin = await apiCall('POST', '/twins', {
      ...template,
      name: 'broken',
      files: { ...template.files, 'broken.tf': 'output "broken" {\n  value = var.nowhere\n}\n' },
    });
    const probe = await fetch(`${gateway.url}/twins/${twin.id}/validate`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${gateway.token}` },
    });
    if (probe.status === 404) {
      t.skip('this gateway has no POST /twins/{id}/validate');
      return;
    }
    await page.goto(`${gateway.url}/#/twins/${twin.id}`);
    await page.locator('#validation[data-state="invalid"]').waitFor({ timeout: RUN_MS });
    assert.ok(await page.getByRole('button', { name: 'Deploy', exact: true }).isDisabled());
  });

  it('keeps 20,000 log lines in a bounded number of rows, stderr marked', async (t) => {
    const result = await page.evaluate(async () => {
      const { LogView } = await import('/ui/log-view.js');
      const box = document.createElement('div');
      box.className = 'log';
      const jump = document.createElement('button');
      document.body.append(box, jump);
      const view = new LogView(box, jump);
      const started = performance.now();
      for (let id = 1; id <= 20_000; id += 1) {
        view.append({ id, stream: id % 100 === 0 ? 'stderr' : 'stdout', text: `line ${id}` });
      }
      await new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));
      const took = performance.now() - started;
      const rows = [...box.querySelectorAll('.log-row')];
      const summary = {
        took,
        rows: rows.length,
        lines: box.dataset.lines,
        last: rows.at(-1)?.dataset.id,
        stderrMarked: box.querySelectorAll('.stream-stderr .log-marker').length,
      };
      box.remove();
      jump.remove();
      return summary;
    });
    t.diagnostic(`20,000 lines appended and drawn in ${Math.round(result.took)} ms`);
    assert.equal(result.lines, '20000');
    assert.equal(result.last, '20000', 'the view follows the end');
    assert.ok(result.rows < 200, `only the rows in view are in the DOM (${result.rows})`);
    assert.ok(result.stderrMarked > 0, 'stderr lines carry a marker');
  });

  it('says so when the gateway cannot be reached', async () => {
    await page.goto(`${gateway.url}/#/`);
    await page.getByRole('heading', { name: 'Digital twins' }).waitFor();
    const child = gateway.child;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    await exited;
    // The dashboard polls; the banner appears within a poll or two.
    await page.getByRole('alert').filter({ hasText: 'Cannot reach the gateway' }).waitFor();
    assert.ok(await page.getByRole('heading', { name: 'Digital twins' }).isVisible(), 'what was loaded stays');
    await screenshot('gateway-unreachable');
    expectNoProblems(page, NETWORK_NOISE);
  });
});
