// The dashboard's entry: sign-in, the two views (#/ and #/twins/<id>), the run modal, and the
// messages for a lost gateway, a lost session or a fault in the page itself.

import { api, ApiError, Unreachable, describe, onConnection } from './api.js';
import { $, refreshTimes } from './dom.js';
import { RunModal } from './run-modal.js';
import { TwinView } from './twin-view.js';
import { Dashboard } from './twins.js';

const POLL_MS = 5000;

const sections = {
  loading: $('#loading-view'),
  offline: $('#offline-view'),
  signIn: $('#sign-in-view'),
  dashboard: $('#dashboard-view'),
  twin: $('#twin-view'),
};

let signedIn = false;
let booted = false;
let current = null;

const ctx = {
  report,
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
    current?.refresh();
  },
  onClosed() {
    current?.refresh();
  },
  report,
});
const dashboard = new Dashboard(sections.dashboard, ctx);
const twinView = new TwinView(sections.twin, ctx);

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
  $('#session').hidden = true;
  signInError.hidden = !message;
  signInError.textContent = message ?? '';
  show('signIn');
  $('#token').focus();
}

function enter(who) {
  signedIn = true;
  $('#who').textContent = `${who.owner}${who.is_admin ? ' (admin)' : ''}`;
  $('#session').hidden = false;
  route({ focus: true });
  ctx.runModal.resume();
}

// --- routing --------------------------------------------------------------------------

function route({ focus = true } = {}) {
  if (!signedIn) return;
  const match = location.hash.match(/^#\/twins\/([^/?]+)$/);
  const next = match ? twinView : dashboard;
  if (current && current !== next) current.hide();
  current = next;
  show(match ? 'twin' : 'dashboard');
  document.title = match ? 'Twin · terrastream' : 'Twins · terrastream';
  if (match) twinView.show(decodeURIComponent(match[1]));
  else dashboard.show();
  if (focus) $('h1', match ? sections.twin : sections.dashboard).focus({ preventScroll: true });
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
