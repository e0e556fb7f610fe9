// What every browser test file shares: a gateway child process (the debug binary, port 0, a
// fresh data directory), headless Chromium, the admin API for setting things up, screenshots.
//
// Environment: TERRASTREAM_BIN (default target/debug/terrastream), CHROMIUM_PATH (default
// /usr/bin/chromium). E2E_STATIC_DIR=<dir> serves the dashboard's files from that directory
// instead of the binary's (e.g. `git archive main static | tar -x -C /tmp/old`), to see a test
// fail on an older dashboard against the same gateway.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const BINARY =
  process.env.TERRASTREAM_BIN ??
  path.join(process.env.CARGO_TARGET_DIR ?? path.join(ROOT, 'target'), 'debug', 'terrastream');
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
export const ARTIFACTS = path.join(ROOT, 'test-artifacts');
const STARTUP_MS = 30_000;
export const RUN_MS = 120_000;

/**
 * The gateway as a child process; resolves once it logs the port it listens on. `dataDir` and
 * `port` restart one on the same data and address.
 */
export async function startGateway({ name = 'gateway', dataDir, port = 0, args = [] } = {}) {
  const dir = dataDir ?? (await mkdtemp(path.join(os.tmpdir(), 'terrastream-e2e-')));
  await mkdir(ARTIFACTS, { recursive: true });
  const log = createWriteStream(path.join(ARTIFACTS, `${name}.log`), { flags: 'a' });
  const child = spawn(
    BINARY,
    [
      'serve',
      '--bind', `127.0.0.1:${port}`,
      '--data-dir', dir,
      '--tools-dir', path.join(ROOT, 'tools'),
      '--no-demo',
      ...args,
    ],
    { env: { ...process.env, RUST_LOG: 'info' }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  child.stdout.pipe(log);
  const listening = await new Promise((resolve, reject) => {
    let seen = '';
    const timer = setTimeout(
      () => reject(new Error(`the gateway did not start in ${STARTUP_MS} ms:\n${seen}`)),
      STARTUP_MS,
    );
    child.stderr.on('data', (chunk) => {
      log.write(chunk);
      seen += chunk;
      const match = /terrastream listening port=(\d+)/.exec(seen);
      if (match) {
        clearTimeout(timer);
        resolve(Number(match[1]));
      }
    });
    child.on('error', (error) => {
      clearTimeout(timer);
      reject(new Error(`cannot start ${BINARY} (run cargo build --bin terrastream): ${error.message}`));
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`the gateway exited with ${code} before listening:\n${seen}`));
    });
  });
  const token = (await readFile(path.join(dir, 'admin-token'), 'utf8')).trim();
  return { child, dataDir: dir, token, port: listening, url: `http://127.0.0.1:${listening}` };
}

/** SIGTERM, and waits for the exit. */
export async function killGateway(gateway, signal = 'SIGTERM') {
  const { child } = gateway;
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill(signal);
  await exited;
}

export async function stopGateway(gateway) {
  if (!gateway) return;
  await killGateway(gateway);
  await rm(gateway.dataDir, { recursive: true, force: true });
}

export async function launchBrowser() {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}

/**
 * A page that records uncaught errors and console errors in `page.problems`. Network errors
 * the page expects (a stopped gateway) are the test's to allow: see `expectNoProblems`.
 */
export async function openPage(browser, { width = 1280, height = 900 } = {}) {
  const context = await browser.newContext({ viewport: { width, height } });
  const page = await context.newPage();
  page.setDefaultTimeout(30_000);
  page.problems = [];
  page.on('pageerror', (error) => page.problems.push(`pageerror: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() !== 'error') return;
    const text = message.text();
    // Chrome logs every answer of 400 and more; a 401 before sign-in or a 404 for a missing
    // twin is the page working. Those are checked separately: see `httpErrors`.
    if (/^Failed to load resource: the server responded with a status of 4\d\d/.test(text)) return;
    page.problems.push(`console: ${text}`);
  });
  page.httpErrors = [];
  page.on('response', (response) => {
    if (response.status() >= 400) page.httpErrors.push(`${response.status()} ${response.request().method()} ${new URL(response.url()).pathname}`);
  });
  if (process.env.E2E_STATIC_DIR) await serveStaticFrom(page, process.env.E2E_STATIC_DIR);
  return page;
}

async function serveStaticFrom(page, dir) {
  const types = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css', '.svg': 'image/svg+xml' };
  await page.route(/\/(ui\/[^/?#]+)?(\?.*)?$/, async (route) => {
    const url = new URL(route.request().url());
    const file = url.pathname === '/' ? 'index.html' : url.pathname.replace(/^\/ui\//, '');
    if (url.pathname !== '/' && !url.pathname.startsWith('/ui/')) return route.fallback();
    try {
      const body = await readFile(path.join(dir, file));
      await route.fulfill({ status: 200, body, contentType: types[path.extname(file)] ?? 'application/octet-stream' });
    } catch {
      await route.fulfill({ status: 404, body: '{"detail":"not found"}', contentType: 'application/json' });
    }
  });
}

/**
 * No uncaught error, no console error (except those matching `allowed`), and no answer of 500
 * or more; then starts afresh for the next check.
 */
export function expectNoProblems(page, allowed = []) {
  const left = page.problems.filter((problem) => !allowed.some((pattern) => pattern.test(problem)));
  const faults = page.httpErrors.filter((line) => /^5/.test(line) && !allowed.some((pattern) => pattern.test(line)));
  page.problems.length = 0;
  page.httpErrors.length = 0;
  assert.deepEqual(left, [], 'no uncaught errors or console errors in the page');
  assert.deepEqual(faults, [], 'no request the gateway failed');
}

/** Console errors the browser itself logs while the gateway is down or a request is refused. */
export const NETWORK_NOISE = [/Failed to load resource/, /net::ERR_/, /EventSource/];

/** The API as the admin, for setting up what the UI is not being tested on. */
export function apiClient(gateway) {
  return async function apiCall(method, route, body) {
    const response = await fetch(`${gateway.url}${route}`, {
      method,
      headers: { Authorization: `Bearer ${gateway.token}`, 'Content-Type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    assert.ok(response.ok, `${method} ${route} answered ${response.status}: ${text}`);
    return text ? JSON.parse(text) : null;
  };
}

/** Waits until a run has ended; returns it. */
export async function waitForRun(apiCall, jobId, timeout = RUN_MS) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const run = await apiCall('GET', `/runs/${jobId}`);
    if (['completed', 'failed', 'cancelled'].includes(run.status)) return run;
    assert.ok(Date.now() < deadline, `run ${jobId} did not end in ${timeout} ms`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** Every stored event of a run, through the paged logs route. */
export async function allEvents(apiCall, jobId) {
  const events = [];
  let after = 0;
  for (;;) {
    const page = await apiCall('GET', `/runs/${jobId}/logs?after_event_id=${after}`);
    events.push(...page.events);
    after = page.next_after_event_id;
    if (!page.has_more) return events;
  }
}

export function screenshot(page, name) {
  return page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`), fullPage: false });
}

/** Signs the page in with the token. */
export async function signIn(page, gateway) {
  await page.goto(gateway.url);
  await page.getByRole('heading', { name: 'Sign in' }).waitFor();
  await page.getByLabel('API token').fill(gateway.token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Digital twins' }).waitFor();
}

/** Waits until a data attribute of the first match is a number above `floor`. */
export async function waitForNumber(page, selector, attribute, floor, timeout = RUN_MS) {
  const handle = await page.waitForFunction(
    ({ selector, attribute, floor }) => {
      const value = Number(document.querySelector(selector)?.getAttribute(attribute));
      return value > floor ? value : false;
    },
    { selector, attribute, floor },
    { timeout },
  );
  return handle.jsonValue();
}

/** The demo template as a create body, with short delays and any variables given. */
export async function demoBody(apiCall, name, variables = {}) {
  const template = await apiCall('GET', '/templates/demo');
  return { ...template, name, variables: { base_delay_ms: 20, ...variables } };
}

/** The element that has focus, described for an assertion message. */
export function focused(page) {
  return page.evaluate(() => {
    const el = document.activeElement;
    if (!el || el === document.body) return { tag: 'body' };
    return { tag: el.tagName.toLowerCase(), id: el.id, text: el.textContent.trim().slice(0, 60), disabled: Boolean(el.disabled) };
  });
}
