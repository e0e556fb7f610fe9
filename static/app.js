// The dashboard's entry: sign-in, the views (#/ twins, #/twins/<id>, #/runs, #/new the
// wizard, #/credentials, #/webhooks, #/audit for admins), the run modal, and the messages for a lost gateway, a lost session or a fault in
// the page itself.

import { api, ApiError, Unreachable, describe, onConnection } from './api.js';
import { AuditView } from './audit.js';
import { CredentialsView } from './credentials.js';
import { $, refreshTimes } from './dom.js';
import { RunModal } from './run-modal.js';
import { RunsView } from './runs-view.js';
import { TwinView } from './twin-view.js';
import { Dashboard } from './twins.js';
import { WebhooksView } from './webhooks.js';
import { Wizard } from './wizard.js';

const POLL_MS = 5000;

const sections = {
  loading: $('#loading-view'),
  offline: $('#offline-view'),
  signIn: $('#sign-in-view'),
  dashboard: $('#dashboard-view'),
  twin: $('#twin-view'),
  runs: $('#runs-view'),
  wizard: $('#wizard-view'),
  credentials: $('#credentials-view'),
  webhooks: $('#webhooks-view'),
  audit: $('#audit-view'),
};

let signedIn = false;
let booted = false;
let current = null;
let whoami = null;

const ctx = {
  report,
  who: () => whoami,
  navigate(hash) {
    if (location.hash === hash) route();
    else location.hash = hash;
  },
};

ctx.runModal = new RunModal($('#run-dialog'), {
  onStatus(twinId, status) {
    twinView.onStatus(twinId, status);
    if (current === dashboard) dashboard.refresh();
  },
  onFinished() {
    // A run's end can change everything a page shows (a plan's cost, a drift check's marks).
    current?.refresh({ full: true });
  },
  onClosed() {
    current?.refresh();
  },
  focusFallback(jobId) {
    if (current === twinView) return twinView.focusTarget();
    const view = Object.values(sections).find((section) => !section.hidden);
    if (!view) return null;
    const button = jobId ? view.querySelector(`[data-open-run="${CSS.escape(jobId)}"]`) : null;
    return button ?? $('h1', view);
  },
  report,
});
const dashboard = new Dashboard(sections.dashboard, ctx);
const twinView = new TwinView(sections.twin, ctx);
const runsView = new RunsView(sections.runs, ctx);
const wizard = new Wizard(sections.wizard, ctx);
const credentialsView = new CredentialsView(sections.credentials, ctx);
const webhooksView = new WebhooksView(sections.webhooks, ctx);
const auditView = new AuditView(sections.audit, ctx);

function show(name) {
  for (const [key, section] of Object.entries(sections)) section.hidden = key !== name;
}

// --- messages -------------------------------------------------------------------------

const offlineBanner = $('#offline-banner');
const errorBanner = $('#error-banner');

onConnection({
  unreachable(error) {
    if (!booted) return;
    $('#offline-banner-text').textContent = `${error.message} Showing what was last loaded; retrying every few seconds.`;
    offlineBanner.hidden = false;
  },
  reachable() {
    offlineBanner.hidden = true;
  },
  unauthorized() {
    if (signedIn) signOut('Your session has ended. Sign in again to continue.');
  },
});

/** Shows an error where the reader will see it; unreachable and 401 have their own. */
function report(error, { quiet = false } = {}) {
  if (error instanceof Unreachable) return;
  if (error instanceof ApiError && error.status === 401) return;
  if (quiet) return;
  $('#error-banner-text').textContent = describe(error);
  errorBanner.hidden = false;
}

$('#error-banner-close').addEventListener('click', () => {
  errorBanner.hidden = true;
});
$('#offline-banner-retry').addEventListener('click', () => current?.refresh());
$('#offline-retry').addEventListener('click', () => boot());

window.addEventListener('error', (event) => report(event.error ?? new Error(event.message)));
window.addEventListener('unhandledrejection', (event) => report(event.reason));

// --- session --------------------------------------------------------------------------

const signInForm = $('#sign-in-form');
const signInError = $('#sign-in-error');

signInForm.addEventListener('submit', async (event) => {
  event.preventDefault();
  const token = $('#token').value.trim();
  signInError.hidden = true;
  if (!token) {
    showSignInError('Paste your API token.');
    return;
  }
  const button = $('#sign-in-button');
  button.disabled = true;
  try {
    const who = await api.login(token);
    signInForm.reset();
    enter(who);
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      showSignInError('That token is not valid. Check that it was copied whole (it starts with "tst_").');
    } else {
      showSignInError(describe(error));
    }
  } finally {
    button.disabled = false;
  }
});

function showSignInError(text) {
  signInError.textContent = text;
  signInError.hidden = false;
  $('#token').focus();
}

$('#sign-out').addEventListener('click', async () => {
  try {
    await api.logout();
  } catch {
    // Signed out locally either way; the cookie expires on its own.
  }
  localStorage.removeItem('terrastream.watched-run');
  signOut(null);
});

function signOut(message) {
  signedIn = false;
  ctx.runModal.detach();
  for (const dialog of document.querySelectorAll('dialog[open]')) dialog.close();
  current?.hide();
  current = null;
  whoami = null;
  $('#session').hidden = true;
  $('#main-nav').hidden = true;
  $('#audit-link').hidden = true;
  signInError.hidden = !message;
  signInError.textContent = message ?? '';
  show('signIn');
  $('#token').focus();
}

function enter(who) {
  signedIn = true;
  whoami = who;
  $('#who').textContent = `${who.owner}${who.is_admin ? ' (admin)' : ''}`;
  $('#session').hidden = false;
  $('#main-nav').hidden = false;
  // Only admins may read the audit log; the gateway says 403 to anyone else who asks.
  $('#audit-link').hidden = !who.is_admin;
  route({ focus: true });
  ctx.runModal.resume();
}

// --- routing --------------------------------------------------------------------------

function route({ focus = true } = {}) {
  if (!signedIn) return;
  const hash = location.hash;
  const twin = hash.match(/^#\/twins\/([^/?]+)$/);
  let next;
  let name;
  let title;
  if (twin) [next, name, title] = [twinView, 'twin', 'Twin'];
  else if (hash === '#/runs') [next, name, title] = [runsView, 'runs', 'Runs'];
  else if (hash === '#/new') [next, name, title] = [wizard, 'wizard', 'New twin'];
  else if (hash === '#/credentials') [next, name, title] = [credentialsView, 'credentials', 'Credentials'];
  else if (hash === '#/webhooks') [next, name, title] = [webhooksView, 'webhooks', 'Webhooks'];
  else if (hash === '#/audit') [next, name, title] = [auditView, 'audit', 'Audit log'];
  else [next, name, title] = [dashboard, 'dashboard', 'Twins'];
  if (current && current !== next) current.hide();
  current = next;
  show(name);
  document.title = `${title} · terrastream`;
  const section = { dashboard: 'twins', twin: 'twins', runs: 'runs', credentials: 'credentials', webhooks: 'webhooks', audit: 'audit' }[name];
  for (const link of document.querySelectorAll('#main-nav a')) {
    const here = link.dataset.nav === section;
    if (here) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  if (twin) twinView.show(decodeURIComponent(twin[1]));
  else next.show();
  if (focus) $('h1', sections[name]).focus({ preventScroll: true });
}

window.addEventListener('hashchange', () => route());

// --- start ----------------------------------------------------------------------------

async function boot() {
  show('loading');
  try {
    const who = await api.whoami();
    booted = true;
    enter(who);
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      booted = true;
      signOut(null);
    } else {
      $('#offline-text').textContent = describe(error);
      show('offline');
    }
  }
}

setInterval(() => {
  if (document.hidden) return;
  if (!booted) {
    if (!sections.offline.hidden) boot();
    return;
  }
  if (signedIn) current?.refresh();
  refreshTimes();
}, POLL_MS);

boot();
