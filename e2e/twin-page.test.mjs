// Issue 16: the wizard from provider to deployed twin with the estimate at each step, a
// folder of .tf files instead of a template, the twin page (cost bars, resource map, outputs,
// drift, state versions, run history with a finished run's log reopened), the runs list
// across twins, phone-sized screens, and a gateway with many twins and runs. Screenshots of
// each screen go to test-artifacts/screen-*.png.

import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import {
  RUN_MS, allEvents, apiClient, demoBody, expectNoProblems, launchBrowser, openPage, screenshot,
  signIn, startGateway, stopGateway, waitForRun,
} from './harness.mjs';

let gateway;
let browser;
let page;
let api;
let demo;

const modal = () => page.locator('#run-dialog');
const estimate = () => page.locator('#wizard-estimate').getAttribute('data-amount');
const next = () => page.getByRole('button', { name: 'Next' }).click();

async function closeModal() {
  await modal().getByRole('button', { name: 'Close' }).click();
  await modal().waitFor({ state: 'hidden' });
}

/** No part of the page is wider than the window. */
async function fitsWidth(p) {
  const { scroll, width } = await p.evaluate(() => ({ scroll: document.documentElement.scrollWidth, width: window.innerWidth }));
  assert.ok(scroll <= width, `the page is ${scroll} px wide in a ${width} px window`);
}

describe('issue 16: wizard, twin page, runs list', { timeout: 10 * 60_000 }, () => {
  before(async () => {
    gateway = await startGateway({ name: 'gateway-twin-page', args: ['--max-concurrent-runs', '1'] });
    api = apiClient(gateway);
    browser = await launchBrowser();
    page = await openPage(browser);
    await signIn(page, gateway);
  });

  after(async () => {
    await browser?.close();
    await stopGateway(gateway);
  });

  it('every screen works on a fresh gateway', async () => {
    await page.getByText('No twins yet.').waitFor();
    await page.getByRole('link', { name: 'Runs', exact: true }).click();
    await page.getByRole('heading', { name: 'Runs', level: 1 }).waitFor();
    await page.locator('#runs-running').getByText('Nothing is running.').waitFor();
    await page.locator('#runs-finished').getByText('No run has finished yet.').waitFor();
    await page.goto(`${gateway.url}/#/new`);
    await page.getByRole('radio', { name: /Local sandbox/ }).waitFor();
    expectNoProblems(page);
  });

  it('walks the wizard from provider to a deployed twin, the estimate following each pick', async () => {
    await page.goto(`${gateway.url}/#/new`);
    await screenshot(page, 'screen-wizard-provider');
    // A cloud first: the estimate spans its sizes, then follows the size picked (by keyboard).
    await page.getByRole('radio', { name: /Amazon Web Services/ }).check();
    assert.equal(await estimate(), '120-890');
    await next();
    await page.getByRole('heading', { name: 'Where should it run?' }).waitFor();
    await page.getByRole('radio', { name: /Europe \(Frankfurt\)/ }).waitFor();
    await next();
    await page.getByRole('heading', { name: 'How big?' }).waitFor();
    await page.getByRole('radio', { name: /^Small/ }).check();
    assert.equal(await estimate(), '120');
    await page.keyboard.press('ArrowDown');
    await page.waitForFunction(() => document.querySelector('#wizard-estimate').dataset.amount === '340');
    await page.getByRole('radio', { name: /^Large/ }).check();
    assert.equal(await estimate(), '890');
    assert.match(await page.locator('#wizard-estimate').textContent(), /890/);
    await screenshot(page, 'screen-wizard-size');

    // Back to the provider: the sandbox costs nothing and deploys here.
    await page.getByRole('button', { name: 'Back' }).click();
    await page.getByRole('button', { name: 'Back' }).click();
    await page.getByRole('radio', { name: /Local sandbox/ }).check();
    assert.equal(await estimate(), '0');
    await next();
    await page.getByRole('radio', { name: /This machine/ }).check();
    await next();
    await page.getByRole('radio', { name: /Local: the demo twin/ }).check();
    assert.equal(await estimate(), '0');
    await next();
    await page.getByRole('heading', { name: 'Name and variables' }).waitFor();
    await page.getByLabel('Name', { exact: true }).fill('plant-7');
    await page.locator('#wizard-variables .variable-name').first().fill('base_delay_ms');
    await page.locator('#wizard-variables .variable-value').first().fill('20');
    await next();

    // Review: the plan preview lists what the deploy creates and prices it.
    const plan = page.locator('#wizard-plan');
    await plan.and(page.locator('[data-state="done"]')).waitFor({ timeout: RUN_MS });
    await plan.locator('[data-address="sandbox_resource.iot_hub"][data-action="create"]').waitFor();
    const total = Number(await plan.locator('.plan-cost').getAttribute('data-total'));
    assert.ok(total > 0, 'the sandbox\'s stand-ins are priced');
    assert.equal(Number(await estimate()), total, 'the estimate is the plan\'s now');
    await plan.locator('.cost-row[data-category="database"]').waitFor();
    await screenshot(page, 'screen-wizard-review');

    await page.getByRole('button', { name: 'Create and deploy' }).click();
    await page.getByRole('heading', { name: 'plant-7', level: 1 }).waitFor();
    await modal().getByRole('heading', { name: 'Deploying plant-7' }).waitFor();
    await modal().locator('#run-outcome[data-outcome="succeeded"]').waitFor({ timeout: RUN_MS });
    assert.match(await modal().locator('#run-log').textContent(), /Applying the plan previewed in run/);
    await screenshot(page, 'screen-wizard-deployed');
    await closeModal();
    demo = (await api('GET', '/twins')).find((twin) => twin.name === 'plant-7');
    assert.equal(demo.variables.base_delay_ms, 20);
    expectNoProblems(page);
  });

  it('creates a twin from a folder of .tf files read in the browser', async () => {
    const folder = await mkdtemp(path.join(os.tmpdir(), 'terrastream-folder-'));
    const tf = path.join(folder, 'factory');
    await mkdir(path.join(tf, 'modules', 'db'), { recursive: true });
    await mkdir(path.join(tf, '.terraform'), { recursive: true });
    await writeFile(path.join(tf, 'main.tf'), 'resource "terraform_data" "line" {\n  input = "line-a"\n}\n\nmodule "db" {\n  source = "./modules/db"\n}\n');
    await writeFile(path.join(tf, 'modules', 'db', 'main.tf'), 'resource "terraform_data" "db" {}\n');
    await writeFile(path.join(tf, '.terraform', 'junk.tf'), 'not terraform');
    await writeFile(path.join(tf, 'README.md'), '# notes');

    await page.goto(`${gateway.url}/#/new`);
    await page.getByRole('radio', { name: /Local sandbox/ }).check();
    await page.getByRole('radio', { name: /folder of my own/ }).check();
    await next();
    await page.getByLabel('Folder of .tf files').setInputFiles(tf);
    const list = page.locator('#wizard-file-list');
    await list.getByText('modules/db/main.tf').waitFor();
    await list.getByText('main.tf', { exact: true }).waitFor();
    assert.equal(await list.locator('li').count(), 2, 'hidden folders and other files are left out');
    await screenshot(page, 'screen-wizard-folder');
    await next();
    await page.getByLabel('Name', { exact: true }).fill('from-folder');
    await next();
    await page.locator('#wizard-plan[data-state="done"]').waitFor({ timeout: RUN_MS });
    await page.locator('#wizard-plan [data-address="module.db.terraform_data.db"]').waitFor();
    await page.getByRole('button', { name: 'Create twin', exact: true }).click();
    await page.getByRole('heading', { name: 'from-folder', level: 1 }).waitFor();
    const twin = (await api('GET', '/twins')).find((t) => t.name === 'from-folder');
    assert.deepEqual(Object.keys(twin.files).sort(), ['main.tf', 'modules/db/main.tf']);
    await rm(folder, { recursive: true, force: true });
    expectNoProblems(page);
  });

  it('shows the twin: cost bars, a resource map of its state, outputs, versions, drift, run history', async () => {
    await page.goto(`${gateway.url}/#/twins/${demo.id}`);
    await page.locator('#twin-status [data-status="deployed"]').waitFor();
    const costs = await api('GET', `/twins/${demo.id}/costs`);
    await page.locator('#twin-costs .cost-row').first().waitFor();
    assert.equal(await page.locator('#twin-costs .cost-row').count(), 4);
    for (const category of ['compute', 'storage', 'networking', 'database']) {
      const shown = Number(await page.locator(`#twin-costs .cost-row[data-category="${category}"] [data-series="now"]`).getAttribute('data-amount'));
      assert.equal(shown, costs.costs[category], `${category} now`);
    }
    assert.equal(Number(await page.locator('#twin-cost-total').getAttribute('data-total')), costs.costs.total);

    // The map: a node per resource instance in state, edges from the dependencies.
    const infra = await api('GET', `/twins/${demo.id}/infrastructure-status`);
    await page.waitForFunction((n) => document.querySelectorAll('#twin-map .map-node').length === n, infra.resource_count);
    assert.ok(Number(await page.locator('#twin-map').getAttribute('data-edges')) > 0, 'dependencies drawn');
    await page.locator('#twin-map [data-address="sandbox_resource.line[\\"line-a\\"]"]').waitFor();
    await page.locator('#twin-map [data-address="sandbox_resource.grafana"]').focus();
    await page.locator('#map-details').getByText('depends on').waitFor();
    await page.locator('#twin-outputs').getByText('database_secret').waitFor();
    await page.locator('#twin-outputs tr', { hasText: 'database_secret' }).getByText('sensitive').waitFor();
    await page.locator('#twin-versions tbody tr').first().waitFor();
    const [newest] = await api('GET', `/twins/${demo.id}/state/versions`);
    const row = page.locator(`#twin-versions tr[data-version="${newest.version}"]`);
    assert.equal(await row.locator('td[data-label="By"]').textContent(), newest.actor);
    assert.equal(await row.locator('td[data-label="Run"] [data-open-run]').getAttribute('data-open-run'), newest.run_id);
    await screenshot(page, 'screen-twin');

    // Drift: checked from the page, clean.
    await page.getByRole('button', { name: 'Check for drift' }).click();
    await page.locator('#twin-drift [data-state="clean"]').waitFor({ timeout: RUN_MS });

    // A finished run's log, reopened from the history, whole.
    const deploy = (await api('GET', `/twins/${demo.id}/runs`)).find((run) => run.kind === 'deploy');
    await page.locator(`#twin-runs [data-open-run="${deploy.job_id}"]`).click();
    await modal().locator('#run-outcome[data-outcome="succeeded"]').waitFor({ timeout: RUN_MS });
    const stored = (await allEvents(api, deploy.job_id)).filter((e) => e.event === 'log' || e.event === 'warning');
    await page.waitForFunction((n) => Number(document.querySelector('#run-log').dataset.lines) === n, stored.length);
    await screenshot(page, 'screen-run-log');
    await closeModal();
    const back = await page.evaluate(() => document.activeElement?.dataset.openRun ?? document.activeElement?.id);
    assert.equal(back, deploy.job_id, 'focus returns to the button that opened the log');

    // A plan that changes something: the cost after it shows beside the cost now.
    await page.getByRole('button', { name: 'Edit configuration' }).click();
    const edit = page.locator('#edit-dialog');
    await edit.getByRole('button', { name: 'Add variable' }).click();
    await edit.locator('.variable-name').last().fill('production_lines');
    await edit.locator('.variable-value').last().fill('["line-a", "line-b", "line-c"]');
    await edit.getByRole('button', { name: 'Save changes' }).click();
    await edit.waitFor({ state: 'hidden' });
    await page.waitForFunction(() => !document.querySelector('#plan-button').disabled, null, { timeout: RUN_MS });
    await page.getByRole('button', { name: 'Plan', exact: true }).click();
    await modal().locator('#run-outcome[data-outcome="succeeded"]').waitFor({ timeout: RUN_MS });
    await modal().locator('#run-findings [data-address="sandbox_resource.line[\\"line-c\\"]"]').waitFor();
    await closeModal();
    await page.locator('#twin-costs .cost-after').waitFor({ timeout: RUN_MS });
    const after = await api('GET', `/twins/${demo.id}/costs`);
    assert.equal(after.source, 'plan');
    assert.equal(Number(await page.locator('#twin-costs .cost-after').getAttribute('data-total')), after.costs.total);
    await page.locator('#twin-costs [data-series="after"]').first().waitFor();
    await screenshot(page, 'screen-twin-costs-after-plan');
    expectNoProblems(page);
  });

  it('lists runs across twins: running, queued and finished, with status colours', async () => {
    const slow = await api('POST', '/twins', await demoBody(api, 'slow-one', { base_delay_ms: 500 }));
    const running = (await api('POST', `/twins/${slow.id}/deploy`)).job_id;
    const queued = (await api('POST', `/twins/${demo.id}/plan`)).job_id;
    await page.goto(`${gateway.url}/#/runs`);
    await page.getByRole('heading', { name: 'Runs', level: 1 }).waitFor();
    await page.locator(`#runs-running tr[data-run-id="${running}"]`).getByRole('link', { name: 'slow-one' }).waitFor({ timeout: RUN_MS });
    await page.locator(`#runs-queued tr[data-run-id="${queued}"] .run-status.run-pending`).waitFor({ timeout: RUN_MS });
    await page.locator('#runs-finished .run-status.run-completed').first().waitFor();
    const colour = await page.locator('#runs-finished .run-status.run-completed').first().evaluate((el) => getComputedStyle(el).color);
    const busy = await page.locator(`#runs-running tr[data-run-id="${running}"] .run-status`).evaluate((el) => getComputedStyle(el).color);
    assert.notEqual(colour, busy, 'finished and running read in different colours');
    await screenshot(page, 'screen-runs');
    // Open the running one's progress from the list.
    await page.locator(`#runs-running [data-open-run="${running}"]`).click();
    await modal().getByRole('heading', { name: 'Deploying slow-one' }).waitFor();
    await api('POST', `/runs/${running}/cancel`);
    await modal().locator('#run-outcome[data-outcome="cancelled"]').waitFor({ timeout: RUN_MS });
    await closeModal();
    await waitForRun(api, queued);
    expectNoProblems(page);
  });

  it('fits a phone: each screen at 390 x 844 without sideways scrolling', async () => {
    const phone = await openPage(browser, { width: 390, height: 844 });
    await signIn(phone, gateway);
    await fitsWidth(phone);
    await screenshot(phone, 'screen-phone-twins');
    await phone.goto(`${gateway.url}/#/twins/${demo.id}`);
    await phone.locator('#twin-map .map-node').first().waitFor();
    await phone.locator('#twin-costs .cost-row').first().waitFor();
    await fitsWidth(phone);
    await screenshot(phone, 'screen-phone-twin');
    await phone.goto(`${gateway.url}/#/runs`);
    await phone.locator('#runs-finished tbody tr').first().waitFor();
    await fitsWidth(phone);
    await screenshot(phone, 'screen-phone-runs');
    await phone.goto(`${gateway.url}/#/new`);
    await phone.getByRole('radio', { name: /Amazon/ }).check();
    await fitsWidth(phone);
    await screenshot(phone, 'screen-phone-wizard');
    expectNoProblems(phone);
    await phone.context().close();
  });

  it('every screen works with many twins and runs', async () => {
    const made = [];
    for (let i = 0; i < 40; i += 1) {
      made.push(api('POST', '/twins', { name: `fleet-${String(i).padStart(2, '0')}`, provider: 'sandbox', files: { 'main.tf': 'resource "terraform_data" "x" {\n' } }));
    }
    const fleet = await Promise.all(made);
    const jobs = [];
    for (const twin of fleet.slice(0, 30)) jobs.push((await api('POST', `/twins/${twin.id}/plan`)).job_id);
    for (const job of jobs) await waitForRun(api, job);

    await page.goto(`${gateway.url}/#/`);
    await page.locator('tr', { hasText: 'fleet-39' }).waitFor();
    assert.ok(await page.locator('.twins-table tbody tr').count() >= 42);
    await page.goto(`${gateway.url}/#/runs`);
    await page.waitForFunction(() => document.querySelectorAll('#runs-finished tbody tr').length === 20);
    const finished = await api('GET', '/runs?status=completed,failed,cancelled&limit=200');
    await page.locator('#runs-finished').getByRole('button', { name: 'Show older runs' }).click();
    await page.waitForFunction((n) => document.querySelectorAll('#runs-finished tbody tr').length === n, Math.min(40, finished.length));
    await page.locator('#runs-finished tr[data-status="failed"] .run-status.run-failed').first().waitFor();
    await screenshot(page, 'screen-runs-many');
    await page.goto(`${gateway.url}/#/twins/${fleet[0].id}`);
    await page.locator('#twin-runs tbody tr').first().waitFor();
    await page.locator('#twin-runs td[data-label="Exit code"]').first().waitFor();
    expectNoProblems(page);
  });
});
