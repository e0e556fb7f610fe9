// Webhooks (#/webhooks): endpoints that get signed deliveries (Standard Webhooks) of the
// owner's twins' events. Adding one answers its signing secret once: the page shows it with a
// copy button until the reader says it is copied, and never again. Each endpoint lists its
// deliveries, newest first, with every attempt's answer (a status code, or why none came).

import { api, ApiError, describe } from './api.js';
import { $, announce, fill, h, showDialog, timeAgo } from './dom.js';
import { fillIfChanged, forget, table } from './twin-panels.js';

/** The events a webhook may ask for (docs/api.md, Webhooks). */
export const EVENTS = [
  ['run.started', 'A run starts', 'terraform gets its slot'],
  ['run.finished', 'A run ends', 'with its outcome, also one cancelled before it started'],
  ['twin.status_changed', 'A twin\'s status changes', 'by a run, by hand or by a refresh'],
  ['twin.deleted', 'A twin is deleted', 'a soft delete'],
  ['twin.restored', 'A twin is restored', 'a soft delete undone'],
  ['drift.detected', 'Drift is found', 'a check found resources changed outside terraform'],
];

const DELIVERY_TONES = { succeeded: 'green', failed: 'red', pending: 'amber', sending: 'blue' };
const DELIVERIES_SHOWN = 50;

export class WebhooksView {
  /** ctx: report(error), who(). */
  constructor(root, ctx) {
    this.root = root;
    this.ctx = ctx;
    this.visible = false;
    this.webhooks = null;
    this.open = new Set();
    this.deliveries = new Map();
    this.el = {
      form: $('#webhook-form', root),
      url: $('#webhook-url', root),
      events: $('#webhook-events', root),
      description: $('#webhook-description', root),
      error: $('#webhook-error', root),
      create: $('#webhook-create', root),
      secretBox: $('#webhook-secret-box', root),
      secret: $('#webhook-secret', root),
      copy: $('#webhook-copy', root),
      copyStatus: $('#webhook-copy-status', root),
      done: $('#webhook-secret-done', root),
      note: $('#webhooks-note', root),
      list: $('#webhooks-list', root),
    };
    this.el.events.append(
      h('p', { class: 'muted small' }, 'Leave every box checked to get every event.'),
      ...EVENTS.map(([type, label, hint]) => {
        const id = `webhook-event-${type.replace('.', '-')}`;
        return h('label', { class: 'check event-choice', for: id },
          h('input', { type: 'checkbox', id, value: type, checked: true }),
          h('span', {}, h('code', {}, type), h('span', { class: 'choice-title' }, label), h('span', { class: 'muted small' }, `(${hint})`)));
      }),
    );
    this.el.form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.create();
    });
    this.el.copy.addEventListener('click', () => this.copySecret());
    this.el.done.addEventListener('click', () => this.forgetSecret({ focus: true }));
  }

  async show() {
    this.visible = true;
    this.el.note.hidden = true;
    await this.refresh();
  }

  hide() {
    this.visible = false;
    // The secret was shown once; it does not wait on a page nobody looks at.
    this.forgetSecret();
  }

  async refresh() {
    let webhooks;
    try {
      webhooks = await api.webhooks();
    } catch (error) {
      this.ctx.report(error);
      if (!this.webhooks) fill(this.el.list, h('p', { class: 'muted' }, 'The webhooks could not be loaded.'));
      return;
    }
    if (!this.visible) return;
    this.webhooks = webhooks;
    const ids = new Set(webhooks.map((hook) => hook.id));
    for (const id of this.open) if (!ids.has(id)) this.open.delete(id);
    this.draw();
    await Promise.all([...this.open].map((id) => this.loadDeliveries(id)));
  }

  draw() {
    const webhooks = this.webhooks ?? [];
    const me = this.ctx.who?.()?.owner;
    const redrawn = fillIfChanged(this.el.list, [webhooks, [...this.open]], () => {
      if (!webhooks.length) {
        return h('div', { class: 'card empty' },
          h('p', {}, 'No webhooks yet.'),
          h('p', { class: 'muted' }, 'Add an endpoint above: it gets a signed POST for each event you pick, retried until it answers 2xx.'));
      }
      return webhooks.map((hook) => {
        const panelId = `deliveries-${hook.id}`;
        const open = this.open.has(hook.id);
        const all = hook.events.length === EVENTS.length;
        return h('article', { class: 'card webhook', dataset: { webhookId: hook.id }, 'aria-labelledby': `${panelId}-title` },
          h('div', { class: 'webhook-head' },
            h('h2', { id: `${panelId}-title`, class: 'webhook-url' }, h('code', {}, hook.url)),
            h('div', { class: 'row-actions' },
              h('button', {
                type: 'button', class: 'button small', dataset: { action: 'deliveries' },
                'aria-expanded': String(open), 'aria-controls': panelId,
                onclick: () => this.toggle(hook.id),
              }, open ? 'Hide deliveries' : 'Deliveries'),
              h('button', { type: 'button', class: 'button small subtle danger-text', dataset: { action: 'delete' }, 'aria-label': `Delete the webhook to ${hook.url}`, onclick: (event) => this.remove(hook, event.currentTarget) }, 'Delete'))),
          hook.description ? h('p', { class: 'webhook-description' }, hook.description) : null,
          h('p', { class: 'webhook-events' },
            h('span', { class: 'muted small' }, all ? 'Every event: ' : 'Events: '),
            hook.events.map((type) => h('span', { class: 'tag', dataset: { event: type } }, type))),
          h('p', { class: 'muted small' }, 'Added ', timeAgo(hook.created_at), hook.owner !== me ? ` by ${hook.owner}` : '', '.'),
          h('div', { id: panelId, class: 'deliveries', hidden: !open, 'aria-live': 'polite' }));
      });
    });
    if (redrawn) {
      for (const id of this.open) {
        const panel = this.panel(id);
        if (panel) forget(panel);
        this.drawDeliveries(id);
      }
    }
  }

  panel(id) {
    return document.getElementById(`deliveries-${id}`);
  }

  async toggle(id) {
    if (this.open.has(id)) this.open.delete(id);
    else this.open.add(id);
    this.draw();
    this.root.querySelector(`[data-webhook-id="${CSS.escape(id)}"] [data-action="deliveries"]`)?.focus();
    if (this.open.has(id)) await this.loadDeliveries(id);
  }

  async loadDeliveries(id) {
    if (!this.deliveries.has(id)) this.drawDeliveries(id);
    try {
      this.deliveries.set(id, { list: await api.deliveries(id, DELIVERIES_SHOWN) });
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) return;
      this.deliveries.set(id, { error: describe(error) });
    }
    if (this.visible && this.open.has(id)) this.drawDeliveries(id);
  }

  drawDeliveries(id) {
    const panel = this.panel(id);
    if (!panel) return;
    const entry = this.deliveries.get(id);
    fillIfChanged(panel, entry ?? null, () => {
      const head = h('div', { class: 'deliveries-head' },
        h('h3', {}, 'Deliveries'),
        h('button', { type: 'button', class: 'button small subtle', onclick: () => this.loadDeliveries(id) }, 'Refresh'));
      if (!entry) return [head, h('p', { class: 'muted' }, 'Loading…')];
      if (entry.error) return [head, h('p', { class: 'error-text' }, `The deliveries could not be loaded: ${entry.error}`)];
      if (!entry.list.length) return [head, h('p', { class: 'muted' }, 'Nothing sent yet. Each event it asks for is delivered within seconds.')];
      const rows = entry.list.map((delivery) => {
        const attempts = delivery.attempts ?? [];
        const last = attempts.at(-1);
        const cells = [
          timeAgo(last?.at ?? delivery.created_at),
          h('code', {}, delivery.event_type),
          h('span', { class: `badge tone-${DELIVERY_TONES[delivery.status] ?? 'gray'}`, dataset: { status: delivery.status } }, delivery.status),
          answer(last),
          last?.duration_ms != null ? `${last.duration_ms} ms` : '—',
          attemptsCell(delivery, attempts),
        ];
        cells.attrs = { dataset: { deliveryId: delivery.id, status: delivery.status, event: delivery.event_type } };
        return cells;
      });
      return [
        head,
        table(['When', 'Event', 'Status', 'Answer', 'Took', 'Attempts'], rows, 'deliveries-table', { caption: 'Deliveries, newest first' }),
        entry.list.length >= DELIVERIES_SHOWN ? h('p', { class: 'muted small' }, `The latest ${DELIVERIES_SHOWN} are shown.`) : null,
      ];
    });
  }

  async create() {
    const url = this.el.url.value.trim();
    const events = [...this.el.events.querySelectorAll('input:checked')].map((box) => box.value);
    const description = this.el.description.value.trim();
    this.setError(null);
    if (!url) return this.setError('Give the endpoint\'s URL.', this.el.url);
    let parsed;
    try {
      parsed = new URL(url);
    } catch {
      return this.setError('That is not a URL: it starts with http or https, then :// and the host.', this.el.url);
    }
    if (!['http:', 'https:'].includes(parsed.protocol)) return this.setError('Only http and https endpoints can get deliveries.', this.el.url);
    if (!events.length) return this.setError('Pick at least one event.', this.el.events.querySelector('input'));
    const body = { url };
    // Every box checked: leave the list out, so the endpoint gets every event.
    if (events.length < EVENTS.length) body.events = events;
    if (description) body.description = description;
    this.el.create.disabled = true;
    let hook;
    try {
      hook = await api.createWebhook(body);
    } catch (error) {
      this.setError(error instanceof ApiError ? `The gateway refused: ${error.message}` : describe(error), this.el.url);
      return undefined;
    } finally {
      this.el.create.disabled = false;
    }
    this.el.form.reset();
    for (const box of this.el.events.querySelectorAll('input')) box.checked = true;
    this.showSecret(hook);
    await this.refresh();
    return undefined;
  }

  setError(text, field) {
    this.el.error.hidden = !text;
    this.el.error.textContent = text ?? '';
    field?.focus();
  }

  showSecret(hook) {
    this.secretFor = hook.id;
    this.el.secret.value = hook.secret;
    this.el.copyStatus.textContent = '';
    fill($('#webhook-secret-title', this.root), 'Signing secret for ', h('code', {}, hook.url));
    this.el.secretBox.hidden = false;
    announce('The webhook is added. Its signing secret is shown once: copy it now.');
    this.el.copy.focus();
  }

  async copySecret() {
    const secret = this.el.secret.value;
    if (!secret) return;
    let copied = false;
    try {
      await navigator.clipboard.writeText(secret);
      copied = true;
    } catch {
      // No clipboard permission (or an old browser): copy the selection instead.
      this.el.secret.select();
      try {
        copied = document.execCommand('copy');
      } catch {
        copied = false;
      }
    }
    this.el.copyStatus.textContent = copied
      ? 'Copied to the clipboard.'
      : 'The browser did not allow copying: the secret is selected, copy it with Ctrl+C (⌘C).';
    this.el.copyStatus.className = copied ? 'small ok-text' : 'small warn-text';
    if (!copied) this.el.secret.select();
  }

  forgetSecret({ focus = false } = {}) {
    const id = this.secretFor;
    this.secretFor = null;
    this.el.secret.value = '';
    this.el.copyStatus.textContent = '';
    this.el.secretBox.hidden = true;
    if (!focus) return;
    const row = id && this.root.querySelector(`[data-webhook-id="${CSS.escape(id)}"] [data-action="deliveries"]`);
    (row || this.el.url).focus();
  }

  async remove(hook, opener) {
    const dialog = document.getElementById('webhook-delete-dialog');
    fill($('#webhook-delete-url', dialog), hook.url);
    const answer = showDialog(dialog);
    $('#webhook-delete-cancel', dialog).focus();
    if ((await answer) !== 'delete') {
      (opener?.isConnected ? opener : this.el.url).focus();
      return;
    }
    try {
      await api.deleteWebhook(hook.id);
      if (this.secretFor === hook.id) this.forgetSecret();
      this.open.delete(hook.id);
      this.deliveries.delete(hook.id);
      this.setNote(`Deleted the webhook to ${hook.url}: nothing more is sent to it.`);
    } catch (error) {
      this.setNote(error instanceof ApiError ? `The gateway refused: ${error.message}` : describe(error));
    }
    this.el.note.focus();
    await this.refresh();
  }

  setNote(text) {
    this.el.note.textContent = text;
    this.el.note.hidden = !text;
    if (text) announce(text);
  }
}

/** The endpoint's answer to an attempt: its status code, or why there was none. */
function answer(attempt) {
  if (!attempt) return h('span', { class: 'muted' }, 'not sent yet');
  if (attempt.status_code != null) {
    const ok = attempt.status_code >= 200 && attempt.status_code < 300;
    return h('span', { class: ok ? 'ok-text' : 'error-text', dataset: { code: attempt.status_code } }, `HTTP ${attempt.status_code}`);
  }
  return h('span', { class: 'error-text delivery-error' }, attempt.error ?? 'no answer');
}

function attemptsCell(delivery, attempts) {
  const next = delivery.status === 'pending' && delivery.next_attempt_at
    ? [' · next ', timeAgo(delivery.next_attempt_at)]
    : null;
  if (attempts.length <= 1) return h('span', {}, String(attempts.length), next);
  return h('details', { class: 'attempts' },
    h('summary', {}, String(attempts.length), next),
    h('ol', {}, attempts.map((a) => h('li', {},
      a.status_code != null ? `HTTP ${a.status_code}` : (a.error ?? 'no answer'),
      a.duration_ms != null ? ` · ${a.duration_ms} ms · ` : ' · ',
      timeAgo(a.at)))));
}
