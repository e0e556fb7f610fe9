// The audit log (#/audit, admins): who changed what on the gateway, oldest first as
// GET /audit pages it (`after` the last id read). "Load more" reads the next page; once the
// last one is read, entries written later join at the end by themselves. A target links to its
// twin, or opens its run, while that still exists; one purged since is said to be gone. The
// filter narrows the loaded entries by action. An owner who is not an admin gets a 403 from
// the gateway, and the page says the log is for admins instead of an error.

import { api, ApiError } from './api.js';
import { $, exactTime, fill, h, keepingFocus, timeAgo } from './dom.js';
import { RUN_KINDS, table } from './twin-panels.js';

const PAGE = 50;
/** Runs named by entries are looked up (do they still exist?) this many at a time. */
const LOOKUPS_AT_ONCE = 4;
const HEADERS = ['Time', 'Actor', 'Action', 'Target', 'Reason'];

export class AuditView {
  /** ctx: runModal, report(error), who(). */
  constructor(root, ctx) {
    this.root = root;
    this.ctx = ctx;
    this.visible = false;
    this.owner = null;
    this.reset();
    this.el = {
      body: $('#audit-body', root),
      denied: $('#audit-denied', root),
      deniedText: $('#audit-denied-text', root),
      filter: $('#audit-filter', root),
      actions: $('#audit-actions', root),
      count: $('#audit-count', root),
      list: $('#audit-list', root),
    };
    this.el.filter.addEventListener('input', () => this.draw());
    // Reads and page loads one after the other, so two never append the same page.
    this.queue = Promise.resolve();
  }

  reset() {
    this.entries = [];
    this.next = null;
    this.loaded = false;
    this.denied = false;
    this.twins = null;
    this.runs = new Map();
    this.lookingUp = new Set();
    this.drawn = null;
  }

  async show() {
    this.visible = true;
    const owner = this.ctx.who?.()?.owner ?? null;
    if (owner !== this.owner) {
      // Another sign-in: nothing of the last one's log stays.
      this.owner = owner;
      this.reset();
      this.el.filter.value = '';
      fill(this.el.list, h('p', { class: 'muted' }, 'Loading the audit log…'));
      fill(this.el.count, '');
    }
    await this.refresh();
  }

  hide() {
    this.visible = false;
  }

  /** The first page, or (once every page is read) the entries written since. */
  refresh() {
    return this.enqueue(async () => {
      if (!this.loaded || this.next === null) await this.loadPage();
      if (this.denied) return;
      await this.loadTwins();
      this.draw();
      this.lookUpRuns();
    });
  }

  /** "Load more": the next page, then focus on its first entry. */
  more(button) {
    return this.enqueue(async () => {
      if (button) {
        button.disabled = true;
        button.textContent = 'Loading…';
      }
      const before = this.entries.length;
      await this.loadPage();
      if (this.denied) return;
      this.draw();
      this.lookUpRuns();
      const first = this.entries[before];
      const row = first && this.el.list.querySelector(`tr[data-entry-id="${first.id}"]`);
      (row ?? this.el.count).focus();
    });
  }

  enqueue(work) {
    this.queue = this.queue.then(work, work).catch((error) => this.ctx.report(error));
    return this.queue;
  }

  async loadPage() {
    const last = this.entries.at(-1)?.id;
    let page;
    try {
      page = await api.audit({ after: last, limit: PAGE });
    } catch (error) {
      if (error instanceof ApiError && error.status === 403) {
        this.showDenied(error);
        return;
      }
      this.ctx.report(error);
      if (!this.loaded) fill(this.el.list, h('p', { class: 'muted' }, 'The audit log could not be loaded.'));
      // Drawn again with the button working, to try again.
      this.drawn = null;
      return;
    }
    this.denied = false;
    this.el.denied.hidden = true;
    this.el.body.hidden = false;
    const known = new Set(this.entries.map((entry) => entry.id));
    this.entries.push(...(page?.entries ?? []).filter((entry) => !known.has(entry.id)));
    this.next = page?.next_after ?? null;
    this.loaded = true;
  }

  showDenied(error) {
    this.reset();
    this.denied = true;
    const who = this.ctx.who?.()?.owner;
    fill(this.el.deniedText,
      'The audit log is for admins. ',
      who ? ['You are signed in as ', h('strong', {}, who), ', who is not one. '] : null,
      'Sign in with an admin\'s token to read it.');
    this.el.denied.dataset.code = error.code ?? '';
    this.el.body.hidden = true;
    this.el.denied.hidden = false;
  }

  /** Every twin, deleted ones too: a target not among them has been purged. */
  async loadTwins() {
    let twins;
    try {
      twins = await api.twins({ includeDeleted: true });
    } catch (error) {
      this.ctx.report(error, { quiet: true });
      return;
    }
    const next = new Map(twins.map((twin) => [twin.id, twin]));
    if (this.twins) {
      // A twin purged since: its runs went with it, so look them up again.
      for (const [id, run] of this.runs) {
        if (run && !next.has(run.twin_id)) this.runs.delete(id);
      }
    }
    this.twins = next;
  }

  /** Whether each run an entry names still exists (a 404 is a run purged with its twin). */
  async lookUpRuns() {
    const wanted = [...new Set(this.entries.map((entry) => entry.target))]
      .filter((id) => typeof id === 'string' && id.startsWith('run_') && !this.runs.has(id) && !this.lookingUp.has(id));
    if (!wanted.length) return;
    for (const id of wanted) this.lookingUp.add(id);
    const worker = async () => {
      for (let id = wanted.shift(); id; id = wanted.shift()) {
        try {
          this.runs.set(id, await api.run(id));
        } catch (error) {
          if (error instanceof ApiError && error.status === 404) this.runs.set(id, null);
          // Anything else: asked again on the next refresh.
        } finally {
          this.lookingUp.delete(id);
        }
      }
    };
    await Promise.all(Array.from({ length: LOOKUPS_AT_ONCE }, worker));
    if (this.visible && !this.denied) this.draw();
  }

  /** The loaded entries the filter keeps. */
  shown() {
    const words = this.el.filter.value.trim().toLowerCase();
    return words ? this.entries.filter((entry) => String(entry.action ?? '').toLowerCase().includes(words)) : this.entries;
  }

  draw() {
    if (this.denied || !this.loaded) return;
    const shown = this.shown();
    const filtered = shown.length !== this.entries.length || this.el.filter.value.trim() !== '';
    const actions = [...new Set(this.entries.map((entry) => entry.action))].sort();
    if (this.el.actions.children.length !== actions.length) {
      fill(this.el.actions, actions.map((action) => h('option', { value: action })));
    }
    const total = this.entries.length;
    const more = this.next !== null;
    let count;
    if (!total) count = 'No entries yet.';
    else if (filtered) count = `${shown.length} of the ${total} loaded entries match.`;
    else count = `${total} entr${total === 1 ? 'y' : 'ies'}, oldest first.`;
    if (more) count += ' More follow: Load more reads the next ones.';
    if (this.el.count.textContent !== count) this.el.count.textContent = count;

    const rows = shown.map((entry) => ({ entry, target: this.targetState(entry.target) }));
    const key = JSON.stringify([rows, more, total]);
    if (key === this.drawn) return;
    this.drawn = key;
    keepingFocus(this.el.list, () => fill(this.el.list,
      !total
        ? h('p', { class: 'muted' }, 'Nothing has been recorded yet.')
        : shown.length
          ? table(HEADERS, rows.map(({ entry, target }) => this.row(entry, target)), 'audit-table', { caption: 'Audit log, oldest first' })
          : h('p', { class: 'muted' }, 'No loaded entry has an action with those words.'),
      more ? h('button', {
        type: 'button',
        class: 'button more',
        dataset: { focusKey: 'audit-more' },
        onclick: (event) => this.more(event.currentTarget),
      }, 'Load more') : null));
  }

  /** What the page knows of a target: its twin or run, gone, or not looked up (yet). */
  targetState(id) {
    if (typeof id !== 'string') return { kind: 'none' };
    if (id.startsWith('twin_')) {
      if (!this.twins) return { kind: 'twin', state: 'unknown' };
      const twin = this.twins.get(id);
      return twin
        ? { kind: 'twin', state: twin.deleted_at ? 'deleted' : 'live', name: twin.name }
        : { kind: 'twin', state: 'gone' };
    }
    if (id.startsWith('run_')) {
      if (!this.runs.has(id)) return { kind: 'run', state: 'unknown' };
      const run = this.runs.get(id);
      if (!run) return { kind: 'run', state: 'gone' };
      return {
        kind: 'run',
        state: 'live',
        run: { kind: run.kind, twinId: run.twin_id, debug: run.debug ? run.log_level ?? 'DEBUG' : null },
        twinName: this.twins?.get(run.twin_id)?.name ?? null,
      };
    }
    if (/^(cred|wh|msg|dlv)_/.test(id)) return { kind: 'id' };
    return { kind: 'name' };
  }

  row(entry, target) {
    const cells = [
      h('span', { class: 'audit-time' }, h('span', {}, exactTime(entry.at)), timeAgo(entry.at)),
      entry.actor ?? '—',
      h('code', { class: 'audit-action' }, entry.action),
      this.targetCell(entry, target),
      entry.reason ? h('span', { class: 'audit-reason' }, entry.reason) : h('span', { class: 'muted' }, '—'),
    ];
    cells.attrs = { tabindex: '-1', dataset: { entryId: entry.id, action: entry.action, target: target.state ?? target.kind } };
    return cells;
  }

  targetCell(entry, target) {
    const id = entry.target;
    const code = h('code', { class: 'audit-id' }, id);
    const gone = (words) => [code, ' ', h('span', { class: 'tag', dataset: { gone: 'true' } }, words)];
    if (target.kind === 'twin') {
      if (target.state === 'gone') return gone('purged');
      if (target.state === 'unknown') return code;
      return h('span', { class: 'audit-target' },
        h('a', { href: `#/twins/${encodeURIComponent(id)}`, title: id, dataset: { focusKey: `target:${entry.id}` } }, target.name),
        target.state === 'deleted' ? [' ', h('span', { class: 'badge tone-gray' }, 'Deleted')] : null);
    }
    if (target.kind === 'run') {
      if (target.state === 'gone') return gone('gone with its twin');
      if (target.state === 'unknown') return code;
      const { run, twinName } = target;
      const what = `${RUN_KINDS[run.kind] ?? run.kind} of ${twinName ?? run.twinId}`;
      return h('button', {
        type: 'button',
        class: 'button small audit-run',
        title: id,
        dataset: { openRun: id, focusKey: `target:${entry.id}` },
        'aria-label': `Open the log of the ${what.charAt(0).toLowerCase()}${what.slice(1)}`,
        // Looked at from the log: not remembered across reloads, no Retry.
        onclick: () => this.ctx.runModal.open({ jobId: id, twinId: run.twinId, twinName, kind: run.kind, historical: true, debug: run.debug }),
      }, what);
    }
    if (target.kind === 'id') return code;
    if (target.kind === 'name') return id;
    return h('span', { class: 'muted' }, '—');
  }
}
