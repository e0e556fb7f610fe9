// Issue 16's screens for the team half of the API, in headless Chromium against a real gateway
// running real terraform: credentials (created with password fields, listed by variable name
// only, edited, attached to twins from the wizard and the edit dialog, a delete refused while
// twins name one and then forced), sensitive variables (sent sealed, shown set but hidden,
// kept when the twin is saved again), webhooks (the secret shown once and copied, deliveries
// with status codes and errors, delete), a state rollback through its dialog (refused clearly
// while the state is locked), and the drift a scheduled check found. Screenshots go to
// test-artifacts/team-*.png.

import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { readdir, readFile, rm } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import {
  RUN_MS, apiClient, demoBody, expectNoProblems, focused, launchBrowser, openPage, screenshot,
  signIn, startGateway, stopGateway, waitForRun,
} from './harness.mjs';

let gateway;
let browser;
let page;
let api;
let receiver;

const modal = () => page.locator('#run-dialog');

async function closeModal() {
  await modal().getByRole('button', { name: 'Close' }).click();
  await modal().waitFor({ state: 'hidden' });
}

async function deployed(name, variables = {}) {
  const twin = await api('POST', '/twins', await demoBody(api, name, variables));
  const run = await waitForRun(api, (await api('POST', `/twins/${twin.id}/deploy`)).job_id);
  assert.equal(run.status, 'completed', JSON.stringify(run));
  return twin;
}

async function openTwin(p, gw, twin) {
  await p.goto(`${gw.url}/#/twins/${twin.id}`);
  await p.getByRole('heading', { name: twin.name, level: 1 }).waitFor();
}

/** A secret never reaches the page: not in its markup, not in any field. */
async function neverShown(p, secret) {
  const html = await p.content();
  assert.ok(!html.includes(secret), `the page's markup holds ${secret}`);
  const values = await p.evaluate(() => [...document.querySelectorAll('input, textarea')].map((el) => el.value));
  assert.ok(!values.some((value) => value.includes(secret)), `a field holds ${secret}`);
}

/** No part of the page is wider than the window. */
async function fitsWidth(p) {
  const { scroll, width } = await p.evaluate(() => ({ scroll: document.documentElement.scrollWidth, width: window.innerWidth }));
  assert.ok(scroll <= width, `the page is ${scroll} px wide in a ${width} px window`);
}

/** An HTTP server that records every request; paths under /fail answer 500, others 204. */
async function startReceiver() {
  const received = [];
  const server = http.createServer((request, response) => {
    let body = '';
    request.setEncoding('utf8');
    request.on('data', (chunk) => { body += chunk; });
    request.on('end', () => {
      received.push({ path: request.url, headers: request.headers, body });
      response.writeHead(request.url.startsWith('/fail') ? 500 : 204).end();
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    received,
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}

/** A loopback port nothing listens on (a delivery to it is refused). */
async function closedPort() {
  const server = http.createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** Checks a delivery's Standard Webhooks signature with the secret the page showed. */
function signedWith(secret, delivery) {
  const key = Buffer.from(secret.replace(/^whsec_/, ''), 'base64');
  const signed = `${delivery.headers['webhook-id']}.${delivery.headers['webhook-timestamp']}.${delivery.body}`;
  const expected = createHmac('sha256', key).update(signed).digest('base64');
  return delivery.headers['webhook-signature'].split(' ').includes(`v1,${expected}`);
}

async function until(check, what, timeout = RUN_MS) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await check();
    if (value) return value;
    assert.ok(Date.now() < deadline, `${what} within ${timeout} ms`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

describe('issue 16: credentials, sensitive variables, webhooks, rollback, scheduled drift', { timeout: 10 * 60_000 }, () => {
  before(async () => {
    gateway = await startGateway({ name: 'gateway-team', args: ['--webhook-allow-private', '--max-concurrent-runs', '2'] });
    api = apiClient(gateway);
    receiver = await startReceiver();
    browser = await launchBrowser();
    page = await openPage(browser);
    await page.context().grantPermissions(['clipboard-read', 'clipboard-write'], { origin: gateway.url });
    await signIn(page, gateway);
  });

  after(async () => {
    await browser?.close();
    await receiver?.close();
    await stopGateway(gateway);
  });

  it('credentials: made with password fields, listed by name only, edited, by keyboard too', async () => {
    await page.getByRole('link', { name: 'Credentials', exact: true }).click();
    await page.getByRole('heading', { name: 'Credentials', level: 1 }).waitFor();
    await page.locator('#credentials-list').getByText('No credentials yet.').waitFor();
    expectNoProblems(page);

    // The dialog opens from the keyboard, and Escape gives focus back to its button.
    const dialog = page.locator('#credential-dialog');
    await page.locator('#new-credential').focus();
    await page.keyboard.press('Enter');
    await dialog.waitFor({ state: 'visible' });
    assert.equal((await focused(page)).id, 'credential-name');
    await page.keyboard.press('Escape');
    await dialog.waitFor({ state: 'hidden' });
    await page.waitForFunction(() => document.activeElement?.id === 'new-credential');

    await page.getByRole('button', { name: 'New credential' }).click();
    await dialog.getByLabel('Credential name').fill('sandbox-dev');
    await dialog.getByLabel('Provider').selectOption('sandbox');
    await dialog.getByLabel('Variable name').first().fill('SANDBOX_TOKEN');
    const token = dialog.getByLabel('Value of SANDBOX_TOKEN');
    assert.equal(await token.getAttribute('type'), 'password');
    await token.fill('tok-3f9a-secret-value');
    await dialog.getByRole('button', { name: 'Add variable' }).click();
    assert.equal((await focused(page)).tag, 'input', 'the new row\'s name has focus');
    await page.keyboard.type('SANDBOX_HINT');
    await dialog.getByLabel('Value of SANDBOX_HINT').fill('hint-secret-two');
    await dialog.getByLabel('Expires (optional)').fill('2031-06-30T12:00');
    await screenshot(page, 'team-credential-new');
    await dialog.getByRole('button', { name: 'Create credential' }).click();
    await dialog.waitFor({ state: 'hidden' });

    const [made] = await api('GET', '/credentials');
    assert.deepEqual(made.env_keys.sort(), ['SANDBOX_HINT', 'SANDBOX_TOKEN']);
    assert.equal(new Date(made.expires_at).getTime(), new Date('2031-06-30T12:00').getTime());
    const row = page.locator(`tr[data-credential-id="${made.id}"]`);
    await row.waitFor();
    await page.waitForFunction((id) => document.activeElement?.closest(`tr[data-credential-id="${id}"]`) && document.activeElement.dataset.action === 'edit', made.id);
    await row.locator('td[data-label="Variables"]').getByText('SANDBOX_TOKEN').waitFor();
    await row.locator('td[data-label="Variables"]').getByText('SANDBOX_HINT').waitFor();
    assert.equal(await row.locator('td[data-label="Expires"] time').getAttribute('datetime'), made.expires_at);
    await row.locator('td[data-label="Last used"]').getByText('Not yet').waitFor();
    await row.locator('td[data-label="Used by"]').getByText('No twin').waitFor();
    await page.locator('#credentials-note').getByText('Created sandbox-dev').waitFor();
    await neverShown(page, 'tok-3f9a-secret-value');
    await neverShown(page, 'hint-secret-two');

    // Edit: no expiry any more; then replace the values (each typed again).
    await row.getByRole('button', { name: 'Edit sandbox-dev' }).click();
    await dialog.getByRole('heading', { name: 'Edit sandbox-dev' }).waitFor();
    await dialog.locator('#credential-env-keys').getByText('SANDBOX_TOKEN').waitFor();
    await neverShown(page, 'tok-3f9a-secret-value');
    await dialog.getByLabel('Expires (optional)').fill('');
    await dialog.getByRole('button', { name: 'Save changes' }).click();
    await dialog.waitFor({ state: 'hidden' });
    await row.locator('td[data-label="Expires"]').getByText('Never').waitFor();
    assert.equal((await api('GET', `/credentials/${made.id}`)).expires_at, null);

    await row.getByRole('button', { name: 'Edit sandbox-dev' }).click();
    await dialog.getByRole('button', { name: 'Replace the variables…' }).click();
    assert.equal(await dialog.getByLabel('Value of SANDBOX_HINT').inputValue(), '', 'a stored value is never filled in');
    await dialog.getByRole('button', { name: 'Save changes' }).click();
    await dialog.locator('#credential-error').getByText('Give SANDBOX_HINT a value.').waitFor();
    await dialog.getByLabel('Value of SANDBOX_HINT').fill('hint-secret-three');
    await dialog.getByLabel('Value of SANDBOX_TOKEN').fill('tok-3f9a-secret-value');
    await dialog.getByRole('button', { name: 'Save changes' }).click();
    await dialog.waitFor({ state: 'hidden' });
    await neverShown(page, 'hint-secret-three');
    assert.notEqual((await api('GET', `/credentials/${made.id}`)).updated_at, made.updated_at);

    // A one-time credential, deleted at once: no twin names it, so no question of force.
    await page.getByRole('button', { name: 'New credential' }).click();
    await dialog.getByLabel('Credential name').fill('throwaway');
    await dialog.getByLabel('Variable name').first().fill('ONCE_KEY');
    await dialog.getByLabel('Value of ONCE_KEY').fill('once-value-123');
    await dialog.getByLabel(/One-time/).check();
    await dialog.getByRole('button', { name: 'Create credential' }).click();
    await dialog.waitFor({ state: 'hidden' });
    const throwaway = (await api('GET', '/credentials')).find((c) => c.name === 'throwaway');
    assert.equal(throwaway.delete_after_run, true);
    const once = page.locator(`tr[data-credential-id="${throwaway.id}"]`);
    await once.getByText('one-time').waitFor();
    await once.getByRole('button', { name: 'Delete throwaway' }).click();
    const confirm = page.locator('#credential-delete-dialog');
    await confirm.getByRole('button', { name: 'Delete', exact: true }).click();
    await confirm.waitFor({ state: 'hidden' });
    await once.waitFor({ state: 'detached' });
    assert.equal((await api('GET', '/credentials')).length, 1);
    await screenshot(page, 'team-credentials');
    expectNoProblems(page);
  });

  it('credentials attach from the wizard and the edit dialog; one in use is deleted only by force', async () => {
    const [devCred] = await api('GET', '/credentials');
    await page.goto(`${gateway.url}/#/new`);
    await page.getByRole('radio', { name: /Local sandbox/ }).check();
    await page.getByRole('button', { name: 'Next' }).click();
    await page.getByRole('radio', { name: /This machine/ }).check();
    await page.getByRole('button', { name: 'Next' }).click();
    await page.getByRole('radio', { name: /Local: the demo twin/ }).check();
    await page.getByRole('button', { name: 'Next' }).click();
    await page.getByRole('heading', { name: 'Name and variables' }).waitFor();
    await page.getByLabel('Name', { exact: true }).fill('with-creds');
    const vars = page.locator('#wizard-variables');
    await vars.locator('.variable-name').first().fill('base_delay_ms');
    await vars.locator('.variable-value').first().fill('20');
    await vars.getByRole('button', { name: 'Add variable' }).click();
    await vars.locator('.variable-name').last().fill('dashboard_title');
    await vars.locator('.variable-row').last().getByLabel('Sensitive').check();
    assert.equal(await vars.locator('.variable-value').last().getAttribute('type'), 'password');
    await vars.locator('.variable-value').last().fill('wizard-secret-42');
    await page.locator('#wizard-credentials').getByLabel(/sandbox-dev/).check();
    await page.getByRole('button', { name: 'Next' }).click();
    await page.locator('#wizard-review-credentials').getByText('sandbox-dev').waitFor();
    await page.locator('#wizard-step [data-variable="dashboard_title"] [data-hidden="true"]').waitFor();
    await page.locator('#wizard-plan[data-state="done"]').waitFor({ timeout: RUN_MS });
    await neverShown(page, 'wizard-secret-42');
    await page.locator('#wizard-review-credentials').scrollIntoViewIfNeeded();
    await screenshot(page, 'team-wizard-credentials');
    await page.getByRole('button', { name: 'Create and deploy' }).click();
    await page.getByRole('heading', { name: 'with-creds', level: 1 }).waitFor();
    await modal().locator('#run-outcome[data-outcome="succeeded"]').waitFor({ timeout: RUN_MS });
    await closeModal();
    const twin = (await api('GET', '/twins')).find((t) => t.name === 'with-creds');
    assert.deepEqual(twin.credential_ids, [devCred.id]);
    assert.deepEqual(twin.sensitive_variables, ['dashboard_title']);
    await page.locator(`#twin-config [data-credential-id="${devCred.id}"]`).getByText('sandbox-dev').waitFor();

    // A second credential, attached in the edit dialog: the twin keeps its order, adds it last.
    const backup = await api('POST', '/credentials', { name: 'backup-creds', provider: 'sandbox', env: { BACKUP_KEY: 'backup-value-1' } });
    await page.getByRole('button', { name: 'Edit configuration' }).click();
    const edit = page.locator('#edit-dialog');
    await edit.locator('#edit-credentials').getByLabel(/backup-creds/).check();
    assert.ok(await edit.locator('#edit-credentials').getByLabel(/sandbox-dev/).isChecked());
    await edit.getByRole('button', { name: 'Save changes' }).click();
    await edit.waitFor({ state: 'hidden' });
    assert.deepEqual((await api('GET', `/twins/${twin.id}`)).credential_ids, [devCred.id, backup.id]);
    await page.locator(`#twin-config [data-credential-id="${backup.id}"]`).waitFor();

    // The list says who uses each one and when it was last used.
    await page.getByRole('link', { name: 'Credentials', exact: true }).click();
    const row = page.locator(`tr[data-credential-id="${devCred.id}"]`);
    await row.locator('td[data-label="Used by"]').getByRole('link', { name: 'with-creds' }).waitFor();
    assert.ok((await api('GET', `/credentials/${devCred.id}`)).last_used_at, 'the deploy used it');
    await row.locator('td[data-label="Last used"] time').waitFor();

    // In use: refused with the twin named, then detached and deleted by force.
    await row.getByRole('button', { name: 'Delete sandbox-dev' }).click();
    const confirm = page.locator('#credential-delete-dialog');
    await confirm.getByRole('button', { name: 'Delete', exact: true }).click();
    const inUse = confirm.locator('#credential-in-use');
    await inUse.getByText('sandbox-dev is in use').waitFor();
    await inUse.locator(`[data-twin-id="${twin.id}"]`).getByText('with-creds').waitFor();
    await page.waitForFunction(() => document.activeElement?.id === 'credential-in-use');
    assert.ok(await confirm.getByRole('button', { name: 'Delete', exact: true }).isHidden());
    await screenshot(page, 'team-credential-in-use');
    await confirm.getByRole('button', { name: 'Detach and delete' }).click();
    await confirm.waitFor({ state: 'hidden' });
    await row.waitFor({ state: 'detached' });
    assert.deepEqual((await api('GET', `/twins/${twin.id}`)).credential_ids, [backup.id]);

    // An expired credential is marked, and a deploy of a twin naming it is refused in words.
    const old = await api('POST', '/credentials', { name: 'old-key', provider: 'sandbox', env: { OLD_KEY: 'old-value-1' }, expires_at: '2020-01-01T00:00:00Z' });
    await page.locator(`tr[data-credential-id="${old.id}"][data-expired="true"]`).getByText('Expired').waitFor();
    await api('PUT', `/twins/${twin.id}`, { credential_ids: [backup.id, old.id] });
    await openTwin(page, gateway, twin);
    await page.locator(`#twin-config [data-credential-id="${old.id}"]`).getByText('Expired').waitFor();
    await page.waitForFunction(() => !document.querySelector('#deploy-button').disabled, null, { timeout: RUN_MS });
    await page.getByRole('button', { name: 'Deploy', exact: true }).click();
    await page.locator('#action-hint', { hasText: 'expired' }).waitFor();
    expectNoProblems(page);
  });

  it('sensitive variables: sent sealed, shown set but hidden, kept when the twin is saved again', async () => {
    const twin = await api('POST', '/twins', await demoBody(api, 'secretive'));
    await openTwin(page, gateway, twin);
    await page.getByRole('button', { name: 'Edit configuration' }).click();
    const edit = page.locator('#edit-dialog');
    await edit.getByRole('button', { name: 'Add variable' }).click();
    const row = edit.locator('.variable-row').last();
    await row.locator('.variable-name').fill('dashboard_title');
    await row.getByLabel('Sensitive').check();
    assert.equal(await row.locator('.variable-value').getAttribute('type'), 'password');
    await row.locator('.variable-value').fill('hunter2-title');
    await edit.getByRole('button', { name: 'Save changes' }).click();
    await edit.waitFor({ state: 'hidden' });

    const saved = await api('GET', `/twins/${twin.id}`);
    assert.deepEqual(saved.sensitive_variables, ['dashboard_title']);
    assert.equal(saved.variables.dashboard_title, '********');
    const shown = page.locator('#twin-config tr[data-variable="dashboard_title"][data-sensitive="true"]');
    await shown.getByText('set, hidden').waitFor();
    assert.ok(!(await page.locator('#twin-config').textContent()).includes('********'), 'the mask is drawn as hidden, not echoed');
    // The files beside them, each its own disclosure (nested lists are drawn, not stringified).
    assert.equal(await page.locator('#twin-config details.file').count(), Object.keys(saved.files).length);
    assert.ok(!(await page.locator('#twin-config').textContent()).includes('[object'));
    await shown.scrollIntoViewIfNeeded();
    await neverShown(page, 'hunter2-title');
    await screenshot(page, 'team-sensitive-config');

    // Opened again: set but hidden, empty; making it plain needs a value.
    await page.getByRole('button', { name: 'Edit configuration' }).click();
    const kept = edit.locator('.variable-row', { has: page.locator('.variable-name[value="dashboard_title"]') });
    await kept.waitFor();
    const value = kept.locator('.variable-value');
    assert.equal(await value.inputValue(), '');
    assert.equal(await value.getAttribute('type'), 'password');
    assert.match(await value.getAttribute('placeholder'), /Set, hidden/);
    await kept.scrollIntoViewIfNeeded();
    await screenshot(page, 'team-sensitive-edit');
    await kept.getByLabel('Sensitive').uncheck();
    await edit.getByRole('button', { name: 'Save changes' }).click();
    await edit.locator('#edit-error').getByText(/cannot become plain text/).waitFor();
    await kept.getByLabel('Sensitive').check();
    await edit.getByRole('button', { name: 'Save changes' }).click();
    await edit.waitFor({ state: 'hidden' });
    assert.deepEqual((await api('GET', `/twins/${twin.id}`)).sensitive_variables, ['dashboard_title']);

    // The deploy after that save got the value typed first: the kept mask kept it.
    await page.waitForFunction(() => !document.querySelector('#deploy-button').disabled, null, { timeout: RUN_MS });
    await page.getByRole('button', { name: 'Deploy', exact: true }).click();
    await modal().locator('#run-outcome[data-outcome="succeeded"]').waitFor({ timeout: RUN_MS });
    assert.ok(!(await modal().locator('#run-log').textContent()).includes('hunter2-title'));
    await closeModal();
    const sandbox = path.join(gateway.dataDir, 'sandbox', twin.id);
    const names = [];
    for (const file of await readdir(sandbox)) names.push(JSON.parse(await readFile(path.join(sandbox, file), 'utf8')).name);
    assert.ok(names.includes('factory-7-hunter2-title'), `the Grafana object is named from the sealed value: ${names}`);
    await neverShown(page, 'hunter2-title');
    expectNoProblems(page);
  });

  it('webhooks: the secret shown once and copied, deliveries with status codes and errors, delete', async () => {
    await page.getByRole('link', { name: 'Webhooks', exact: true }).click();
    await page.getByRole('heading', { name: 'Webhooks', level: 1 }).waitFor();
    await page.locator('#webhooks-list').getByText('No webhooks yet.').waitFor();

    await page.getByLabel('URL', { exact: true }).fill('not a url');
    await page.getByRole('button', { name: 'Add webhook' }).click();
    await page.locator('#webhook-error').getByText('That is not a URL').waitFor();
    assert.equal((await focused(page)).id, 'webhook-url');

    await page.getByLabel('URL', { exact: true }).fill(`${receiver.url}/hooks`);
    await page.getByLabel('Description (optional)').fill('ops receiver');
    await page.getByRole('button', { name: 'Add webhook' }).click();
    const box = page.locator('#webhook-secret-box');
    await box.waitFor({ state: 'visible' });
    const secret = await page.locator('#webhook-secret').inputValue();
    assert.match(secret, /^whsec_[A-Za-z0-9+/=]+$/);
    assert.equal((await focused(page)).id, 'webhook-copy', 'focus is on Copy');
    await page.keyboard.press('Enter');
    await box.getByText('Copied to the clipboard.').waitFor();
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), secret);
    await screenshot(page, 'team-webhook-secret');
    const [ops] = await api('GET', '/webhooks');
    assert.equal(ops.secret, undefined, 'the list never answers the secret');
    await box.getByRole('button', { name: 'I have copied it' }).click();
    await box.waitFor({ state: 'hidden' });
    await neverShown(page, secret);
    const card = page.locator(`article[data-webhook-id="${ops.id}"]`);
    assert.equal((await focused(page)).text, 'Deliveries');
    await card.getByText('ops receiver').waitFor();
    await card.getByText('Every event:').waitFor();

    // One that answers 500 (for one event), one nobody listens on.
    await page.getByLabel('URL', { exact: true }).fill(`${receiver.url}/fail`);
    for (const type of ['run.started', 'twin.status_changed', 'twin.deleted', 'twin.restored', 'drift.detected']) {
      await page.locator('#webhook-events').getByLabel(type).uncheck();
    }
    await page.getByRole('button', { name: 'Add webhook' }).click();
    await box.waitFor({ state: 'visible' });
    await page.getByLabel('URL', { exact: true }).fill(`http://127.0.0.1:${await closedPort()}/nobody`);
    await page.getByRole('button', { name: 'Add webhook' }).click();
    await page.waitForFunction(() => document.querySelectorAll('#webhooks-list article').length === 3);
    const hooks = await api('GET', '/webhooks');
    const failing = hooks.find((hook) => hook.url.endsWith('/fail'));
    const nobody = hooks.find((hook) => hook.url.endsWith('/nobody'));
    assert.deepEqual(failing.events, ['run.finished']);
    await page.locator(`article[data-webhook-id="${failing.id}"] [data-event]`).getByText('run.finished').waitFor();
    assert.equal(await page.locator(`article[data-webhook-id="${failing.id}"] [data-event]`).count(), 1);

    // Events: a deploy. The receiver checks the signature with the secret the page copied.
    await deployed('hooked');
    const finished = await until(
      () => receiver.received.find((r) => r.path === '/hooks' && JSON.parse(r.body).type === 'run.finished'),
      'run.finished delivered',
    );
    assert.ok(signedWith(secret, finished), 'signed with the secret the page showed');

    await card.getByRole('button', { name: 'Deliveries' }).click();
    assert.equal(await card.getByRole('button', { name: 'Hide deliveries' }).getAttribute('aria-expanded'), 'true');
    const ok = card.locator('tr[data-event="run.finished"][data-status="succeeded"]');
    await ok.waitFor({ timeout: RUN_MS });
    await ok.locator('td[data-label="Answer"]').getByText('HTTP 204').waitFor();
    assert.match(await ok.locator('td[data-label="Took"]').textContent(), /^\d+ ms$/);
    await ok.locator('td[data-label="When"] time').waitFor();
    await card.locator('tr[data-event="run.started"]').first().waitFor();
    await card.locator('tr[data-event="twin.status_changed"]').first().waitFor();

    const failCard = page.locator(`article[data-webhook-id="${failing.id}"]`);
    await failCard.getByRole('button', { name: 'Deliveries' }).click();
    // Refused: pending, to be sent again later, with the code the endpoint answered.
    const refused = failCard.locator('tr[data-event="run.finished"][data-status="pending"]');
    await refused.locator('td[data-label="Answer"]').getByText('HTTP 500').waitFor({ timeout: RUN_MS });

    const nobodyCard = page.locator(`article[data-webhook-id="${nobody.id}"]`);
    await nobodyCard.getByRole('button', { name: 'Deliveries' }).click();
    const lost = nobodyCard.locator('tr[data-event="run.started"]');
    await lost.locator('.delivery-error').waitFor({ timeout: RUN_MS });
    assert.ok((await lost.locator('.delivery-error').textContent()).trim().length > 0, 'the error is said');
    await screenshot(page, 'team-webhook-deliveries');

    await nobodyCard.getByRole('button', { name: /^Delete the webhook/ }).click();
    const confirm = page.locator('#webhook-delete-dialog');
    await confirm.getByRole('button', { name: 'Delete' }).click();
    await nobodyCard.waitFor({ state: 'detached' });
    await page.locator('#webhooks-note').getByText('Deleted the webhook').waitFor();
    assert.equal((await api('GET', '/webhooks')).length, 2);
    expectNoProblems(page);
  });

  it('state versions: a rollback through its dialog, refused in words while the state is locked', async () => {
    const twin = await deployed('rollback');
    const destroy = await waitForRun(api, (await api('POST', `/twins/${twin.id}/destroy`)).job_id);
    assert.equal(destroy.status, 'completed');
    const versions = await api('GET', `/twins/${twin.id}/state/versions`);
    assert.equal(versions[0].resource_count, 0);
    const target = versions.find((v) => v.resource_count > 0);

    await openTwin(page, gateway, twin);
    const table = page.locator('#twin-versions');
    await table.locator(`tr[data-version="${versions[0].version}"] [data-current="true"]`).waitFor();
    assert.equal(await table.locator(`tr[data-version="${versions[0].version}"] [data-restore]`).count(), 0, 'the current one has no Restore');

    // Cancel and Escape change nothing, and focus returns to the button.
    const restore = table.getByRole('button', { name: `Restore version ${target.version}`, exact: true });
    const dialog = page.locator('#restore-dialog');
    await restore.click();
    await dialog.getByRole('heading', { name: `Restore state version ${target.version}?` }).waitFor();
    await dialog.getByText(`${target.resource_count} resources`).waitFor();
    assert.equal((await focused(page)).id, 'restore-cancel');
    await page.keyboard.press('Escape');
    await dialog.waitFor({ state: 'hidden' });
    await page.waitForFunction((n) => document.activeElement?.dataset.restore === String(n), target.version);

    // Someone holds terraform's state lock: the gateway refuses, and the dialog says why.
    const lock = { ID: 'e2e-held-lock', Operation: 'OperationTypeApply', Who: 'someone@laptop', Version: '1.15.5', Created: new Date().toISOString(), Path: '' };
    await api('LOCK', `/twins/${twin.id}/tfstate/lock`, lock);
    await restore.click();
    await dialog.getByRole('button', { name: 'Restore', exact: true }).click();
    await dialog.locator('#restore-error').getByText(/The state is locked .*e2e-held-lock.*Try again once the lock is released/).waitFor();
    assert.ok(await dialog.isVisible(), 'the dialog stays open to try again');
    await screenshot(page, 'team-restore-locked');
    await api('UNLOCK', `/twins/${twin.id}/tfstate/lock`, lock);
    await dialog.getByRole('button', { name: 'Try again' }).click();
    await dialog.waitFor({ state: 'hidden' });

    const restoredAs = versions[0].version + 1;
    await page.locator('#versions-note').getByText(`Version ${target.version} is restored as version ${restoredAs}`).waitFor();
    await page.waitForFunction(() => document.activeElement?.id === 'versions-note');
    await table.locator(`tr[data-version="${restoredAs}"] [data-current="true"]`).waitFor();
    assert.equal(await table.locator(`tr[data-version="${restoredAs}"] td[data-label="Resources"]`).textContent(), String(target.resource_count));
    await page.locator(`#twin-resources[data-count="${target.resource_count}"]`).waitFor();
    await page.locator('#twin-history').getByText('state restored').waitFor();
    await table.scrollIntoViewIfNeeded();
    const [current] = await api('GET', `/twins/${twin.id}/state/versions`);
    assert.equal(current.version, restoredAs);
    assert.equal(current.resource_count, target.resource_count);
    await screenshot(page, 'team-restored');
    expectNoProblems(page);
  });

  it('fits a phone: credentials, webhooks and the twin page at 390 x 844', async () => {
    const phone = await openPage(browser, { width: 390, height: 844 });
    await signIn(phone, gateway);
    await phone.goto(`${gateway.url}/#/credentials`);
    await phone.locator('#credentials-list tbody tr').first().waitFor();
    await fitsWidth(phone);
    await screenshot(phone, 'team-phone-credentials');
    await phone.getByRole('button', { name: 'New credential' }).click();
    await phone.locator('#credential-dialog').waitFor({ state: 'visible' });
    await fitsWidth(phone);
    await screenshot(phone, 'team-phone-credential-dialog');
    await phone.keyboard.press('Escape');
    await phone.goto(`${gateway.url}/#/webhooks`);
    await phone.locator('#webhooks-list article').first().getByRole('button', { name: 'Deliveries' }).click();
    await phone.locator('#webhooks-list .deliveries tbody tr').first().waitFor({ timeout: RUN_MS });
    await fitsWidth(phone);
    await screenshot(phone, 'team-phone-webhooks');
    const twin = (await api('GET', '/twins')).find((t) => t.name === 'rollback');
    await phone.goto(`${gateway.url}/#/twins/${twin.id}`);
    await phone.locator('#twin-versions [data-restore]').first().waitFor();
    await fitsWidth(phone);
    expectNoProblems(phone);
    await phone.context().close();
  });
});

describe('issue 16: the drift a scheduled check found', { timeout: 5 * 60_000 }, () => {
  let scheduled;
  let chromium;
  let view;

  before(async () => {
    scheduled = await startGateway({ name: 'gateway-team-drift', args: ['--drift-interval-secs', '2'] });
    chromium = await launchBrowser();
    view = await openPage(chromium);
    await signIn(view, scheduled);
  });

  after(async () => {
    await chromium?.close();
    await stopGateway(scheduled);
  });

  it('shows on the twin page, said to come from the scheduled check', async () => {
    const call = apiClient(scheduled);
    const twin = await call('POST', '/twins', await demoBody(call, 'watched'));
    const run = await waitForRun(call, (await call('POST', `/twins/${twin.id}/deploy`)).job_id);
    assert.equal(run.status, 'completed');
    // Delete the IoT hub behind terraform's back.
    const sandbox = path.join(scheduled.dataDir, 'sandbox', twin.id);
    let hub;
    for (const file of await readdir(sandbox)) {
      if (JSON.parse(await readFile(path.join(sandbox, file), 'utf8')).kind === 'iot_hub') hub = file;
    }
    await rm(path.join(sandbox, hub));

    await openTwin(view, scheduled, twin);
    const drift = view.locator('#twin-drift');
    await drift.locator('[data-state="drifted"][data-count="1"]').waitFor({ timeout: RUN_MS });
    await drift.locator('.drift-by[data-by="scheduler"]').getByText('by the scheduled check').waitFor();
    await drift.locator('[data-address="sandbox_resource.iot_hub"]').waitFor();
    await view.locator('#twin-map [data-address="sandbox_resource.iot_hub"][data-drifted="true"]').waitFor();
    await drift.scrollIntoViewIfNeeded();
    await screenshot(view, 'team-scheduled-drift');
    expectNoProblems(view);
  });
});
