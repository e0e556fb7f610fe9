// The dashboard: every twin with its status, resource count and last deploy. Twins can be
// selected and deleted together (POST /twins/bulk-delete): each by the rules of Delete twin,
// and afterwards the page says which were deleted and which were refused, and why. Admins may
// list the deleted ones too (restored from their page) and purge one for good, after a dialog
// that says it is permanent; a refused purge (resources still in its state, a run working) is
// said in words. New twins come from the wizard (wizard.js).

import { api, ApiError, describe } from './api.js';
import { $, announce, fill, h, keepingFocus, showDialog, statusBadge, timeAgo } from './dom.js';

/** POST /twins/bulk-delete takes 1 to 100 ids; more go in several requests. */
const BULK_MAX = 100;

export class Dashboard {
  /** ctx: report(error), navigate(hash), who(). */
  constructor(root, ctx) {
    this.root = root;
    this.ctx = ctx;
    this.visible = false;
    this.twins = [];
    this.counts = new Map();
    this.selected = new Set();
    this.drawn = null;
    this.list = $('#twins-list', root);
    this.showDeleted = $('#show-deleted', root);
    this.showDeleted.addEventListener('change', () => this.refresh());
    this.el = {
      note: $('#twins-note', root),
      results: $('#bulk-results', root),
      bar: $('#bulk-bar', root),
      selectAll: $('#select-all', root),
      count: $('#bulk-count', root),
      bulkDelete: $('#bulk-delete', root),
      clear: $('#bulk-clear', root),
    };
    this.el.selectAll.addEventListener('change', () => {
      for (const twin of this.liveTwins()) {
        if (this.el.selectAll.checked) this.selected.add(twin.id);
        else this.selected.delete(twin.id);
      }
      this.syncSelection();
    });
    this.el.clear.addEventListener('click', () => {
      this.selected.clear();
      this.syncSelection();
      this.el.selectAll.focus();
    });
    this.el.bulkDelete.addEventListener('click', () => this.bulkDelete());
    // One listener for every row's checkbox: the rows are drawn again as twins change.
    this.list.addEventListener('change', (event) => {
      const box = event.target.closest?.('input.select-twin');
      if (!box) return;
      if (box.checked) this.selected.add(box.dataset.twinId);
      else this.selected.delete(box.dataset.twinId);
      this.syncSelection();
    });
  }

  async show() {
    this.visible = true;
    $('#show-deleted-label', this.root).hidden = !this.isAdmin();
    await this.refresh();
  }

  hide() {
    this.visible = false;
  }

  isAdmin() {
    return Boolean(this.ctx.who?.()?.is_admin);
  }

  liveTwins() {
    return this.twins.filter((twin) => !twin.deleted_at);
  }

  async refresh() {
    let twins;
    const includeDeleted = this.showDeleted.checked && this.isAdmin();
    try {
      twins = await api.twins({ includeDeleted });
    } catch (error) {
      this.ctx.report(error);
      if (!this.drawn) fill(this.list, h('p', { class: 'muted' }, 'The twins could not be loaded.'));
      return;
    }
    this.twins = twins;
    // A twin that is gone or deleted meanwhile is no longer selected.
    const live = new Set(this.liveTwins().map((twin) => twin.id));
    for (const id of this.selected) if (!live.has(id)) this.selected.delete(id);
    // Resource counts come from each twin's infrastructure status, read side by side.
    const answers = await Promise.allSettled(
      twins.map((twin) => (twin.deleted_at ? Promise.reject(new Error('deleted')) : api.infrastructure(twin.id))),
    );
    this.counts = new Map();
    answers.forEach((answer, index) => {
      if (answer.status === 'fulfilled') this.counts.set(twins[index].id, answer.value.resource_count ?? 0);
    });
    this.draw();
  }

  draw() {
    const admin = this.isAdmin();
    const rows = this.twins.map((twin) => ({
      id: twin.id,
      name: twin.name,
      provider: twin.provider,
      status: twin.deployment_status,
      resources: this.counts.get(twin.id),
      last: twin.last_deployed_at,
      deleted: twin.deleted_at ?? null,
    }));
    this.syncSelection();
    const purgeable = admin && rows.some((row) => row.deleted);
    const text = JSON.stringify([rows, purgeable]);
    if (text === this.drawn) return;
    this.drawn = text;
    if (!rows.length) {
      fill(
        this.list,
        h(
          'div',
          { class: 'empty' },
          h('p', {}, 'No twins yet.'),
          h('p', { class: 'muted' }, 'Pick a provider, a region and a size and see what it costs, or upload a folder of your own .tf files. The local sandbox deploys a dozen resources in seconds with no cloud account.'),
          h('a', { class: 'button primary', href: '#/new' }, 'Create your first twin'),
        ),
      );
      return;
    }
    const headers = ['Name', 'Provider', 'Status', 'Resources', 'Last deployed'];
    keepingFocus(this.list, () => fill(
      this.list,
      h(
        'div',
        { class: 'table-wrap' },
        h(
          'table',
          { class: 'twins-table' },
          h('caption', { class: 'sr-only' }, 'Digital twins'),
          h(
            'thead',
            {},
            h('tr', {},
              h('th', { scope: 'col', class: 'select-cell' }, h('span', { class: 'sr-only' }, 'Selected')),
              headers.map((label) => h('th', { scope: 'col' }, label)),
              purgeable ? h('th', { scope: 'col' }, h('span', { class: 'sr-only' }, 'Actions')) : null),
          ),
          h(
            'tbody',
            {},
            rows.map((row) =>
              h(
                'tr',
                { dataset: { twinId: row.id, status: row.status, deleted: row.deleted ? 'true' : 'false' } },
                h('td', { class: 'select-cell', 'data-label': row.deleted ? '' : 'Select' },
                  row.deleted ? null : h('input', {
                    type: 'checkbox',
                    class: 'select-twin',
                    'aria-label': `Select ${row.name}`,
                    checked: this.selected.has(row.id),
                    dataset: { twinId: row.id, focusKey: `select:${row.id}` },
                  })),
                h('th', { scope: 'row', 'data-label': 'Name' }, h('a', { href: `#/twins/${encodeURIComponent(row.id)}`, dataset: { focusKey: `open:${row.id}` } }, row.name)),
                h('td', { 'data-label': 'Provider' }, row.provider),
                h('td', { 'data-label': 'Status' }, row.deleted ? h('span', { class: 'badge tone-gray', dataset: { status: 'deleted' } }, 'Deleted') : statusBadge(row.status)),
                h('td', { 'data-label': 'Resources', class: 'number' }, row.resources ?? '—'),
                h('td', { 'data-label': 'Last deployed' }, timeAgo(row.last)),
                purgeable ? h('td', { 'data-label': '' }, row.deleted ? h('button', {
                  type: 'button',
                  class: 'button small subtle danger-text',
                  dataset: { action: 'purge', focusKey: `purge:${row.id}` },
                  'aria-label': `Purge ${row.name}…`,
                  onclick: (event) => this.purge(row, event.currentTarget),
                }, 'Purge…') : null) : null,
              ),
            ),
          ),
        ),
      ),
    ));
    // The boxes drawn from the selection; the bar says how many.
    this.syncSelection();
  }

  /** The bar (count, Select all, Delete selected) and every row's box, from the selection. */
  syncSelection() {
    const live = this.liveTwins();
    const count = live.filter((twin) => this.selected.has(twin.id)).length;
    this.el.bar.hidden = live.length === 0;
    this.el.selectAll.checked = count > 0 && count === live.length;
    this.el.selectAll.indeterminate = count > 0 && count < live.length;
    const words = count ? `${count} of ${live.length} selected` : 'None selected';
    if (this.el.count.textContent !== words) this.el.count.textContent = words;
    this.el.bulkDelete.disabled = count === 0;
    this.el.clear.disabled = count === 0;
    for (const box of this.list.querySelectorAll('input.select-twin')) {
      box.checked = this.selected.has(box.dataset.twinId);
    }
  }

  /** Deletes the selected twins after a confirmation, then says what became of each. */
  async bulkDelete() {
    const chosen = this.liveTwins().filter((twin) => this.selected.has(twin.id));
    if (!chosen.length) return;
    const n = chosen.length;
    const dialog = document.getElementById('bulk-delete-dialog');
    fill($('#bulk-delete-title', dialog), `Delete ${n} twin${n === 1 ? '' : 's'}?`);
    fill($('#bulk-delete-names', dialog), chosen.map((twin) =>
      h('li', { dataset: { twinId: twin.id } }, h('strong', {}, twin.name), ' ', statusBadge(twin.deployment_status))));
    fill($('#bulk-delete-confirm', dialog), `Delete ${n} twin${n === 1 ? '' : 's'}`);
    const answer = showDialog(dialog);
    $('#bulk-delete-cancel', dialog).focus();
    if ((await answer) !== 'delete') {
      this.el.bulkDelete.focus();
      return;
    }
    const names = new Map(this.twins.map((twin) => [twin.id, twin.name]));
    this.el.bulkDelete.disabled = true;
    const ids = chosen.map((twin) => twin.id);
    const results = [];
    try {
      for (let start = 0; start < ids.length; start += BULK_MAX) {
        const answer = await api.bulkDelete(ids.slice(start, start + BULK_MAX));
        results.push(...(answer?.results ?? []));
      }
      this.selected.clear();
      this.showResults(results, names);
    } catch (error) {
      // A later batch failing leaves the earlier ones' answers to tell.
      if (results.length) this.showResults(results, names, error);
      else this.showResults(null, names, error);
      for (const result of results) this.selected.delete(result.twin_id);
    }
    await this.refresh();
  }

  /** What became of each id: deleted, or refused with the reason. */
  showResults(results, names, error = null) {
    const box = this.el.results;
    const done = () => {
      box.hidden = true;
      this.el.selectAll.focus();
    };
    let title;
    let body;
    if (error && !results) {
      title = 'Nothing was deleted';
      body = h('p', { class: 'error-text' }, error instanceof ApiError ? `The gateway refused the request: ${error.message}` : describe(error));
    } else {
      const deleted = results.filter((result) => result.status === 200);
      const refused = results.filter((result) => result.status !== 200);
      const total = results.length;
      title = deleted.length === total
        ? `Deleted ${total === 1 ? 'the twin' : `all ${total} twins`}`
        : deleted.length
          ? `Deleted ${deleted.length} of ${total} twins; ${refused.length} refused`
          : total === 1 ? 'The twin was not deleted' : `None of the ${total} twins was deleted`;
      const name = (id) => names.get(id) ?? id;
      if (error) title += `; the rest were not sent (${describe(error)})`;
      body = h('ul', { class: 'bulk-list' },
        results.map((result) => {
          const ok = result.status === 200;
          return h('li', {
            class: ok ? 'bulk-deleted' : 'bulk-refused',
            dataset: { twinId: result.twin_id, result: ok ? 'deleted' : 'refused', code: result.code ?? '' },
          },
          h('span', { class: 'bulk-mark', 'aria-hidden': 'true' }, ok ? '✓' : '✕'),
          h('span', { class: 'bulk-text' },
            ok
              ? [h('a', { href: `#/twins/${encodeURIComponent(result.twin_id)}` }, name(result.twin_id)), ' deleted; its page can restore it.']
              : [h('strong', {}, name(result.twin_id)), ` refused: ${refusalWords(result)} `,
                h('code', { class: 'refusal-code' }, `${result.status} ${result.code ?? ''}`.trim())]));
        }));
    }
    fill(box,
      h('div', { class: 'bulk-results-head' },
        h('h2', { id: 'bulk-results-title' }, title),
        h('button', { type: 'button', class: 'button small', onclick: done }, 'Dismiss')),
      body);
    box.hidden = false;
    box.focus();
    announce(title);
  }

  /** Purge: a soft-deleted twin removed for good, after a dialog that says so. */
  async purge(twin, opener) {
    const dialog = document.getElementById('purge-dialog');
    const form = $('form', dialog);
    const confirm = $('#purge-confirm', dialog);
    const cancel = $('#purge-cancel', dialog);
    const error = $('#purge-error', dialog);
    fill($('#purge-twin-name', dialog), twin.name);
    error.hidden = true;
    error.replaceChildren();
    confirm.hidden = false;
    confirm.textContent = 'Purge for good';
    let purged = false;
    let gone = false;
    const onSubmit = async (event) => {
      event.preventDefault();
      confirm.disabled = true;
      try {
        await api.purgeTwin(twin.id);
        purged = true;
        dialog.close('purged');
      } catch (failure) {
        const refusal = purgeRefusal(failure, twin, () => dialog.close('cancel'));
        fill(error, refusal.words);
        error.hidden = false;
        error.dataset.code = failure instanceof ApiError ? failure.code ?? String(failure.status) : '';
        // Nothing to try again for a twin restored or already gone.
        confirm.hidden = refusal.final;
        confirm.textContent = 'Try again';
        gone = gone || refusal.final;
        error.focus();
      } finally {
        confirm.disabled = false;
      }
    };
    const onCancel = () => dialog.close('cancel');
    form.addEventListener('submit', onSubmit);
    cancel.addEventListener('click', onCancel);
    const answer = showDialog(dialog);
    cancel.focus();
    await answer;
    form.removeEventListener('submit', onSubmit);
    cancel.removeEventListener('click', onCancel);
    if (!purged) {
      if (gone) await this.refresh();
      if (location.hash.startsWith('#/twins/')) return;
      const again = this.list.querySelector(`[data-focus-key="purge:${CSS.escape(twin.id)}"]`);
      (opener?.isConnected ? opener : again ?? $('h1', this.root)).focus();
      return;
    }
    this.setNote(`Purged ${twin.name}: the twin, its history, runs and their logs, state versions and files are gone for good. The audit log keeps its entries.`);
    this.el.note.focus();
    await this.refresh();
  }

  setNote(text) {
    this.el.note.textContent = text;
    this.el.note.hidden = !text;
    if (text) announce(text);
  }
}

/** Why one twin of a bulk delete was refused, in words that say what to do. */
function refusalWords(result) {
  switch (result.code) {
    case 'resources_deployed':
      return 'it is not a draft and may still own cloud resources. Destroy it first, then delete it.';
    case 'twin_locked':
      return 'a run is working on it. Wait for it to end (or cancel it), then delete it.';
    case 'already_deleted':
      return 'it was already deleted.';
    case 'not_found':
      return 'it no longer exists, or is not yours.';
    default:
      return result.detail ? `${result.detail}.`.replace(/\.\.$/, '.') : `the gateway answered ${result.status}.`;
  }
}

/** Why the gateway refused a purge: `words` to show, `final` when trying again cannot help. */
function purgeRefusal(error, twin, closeDialog) {
  if (!(error instanceof ApiError)) return { words: describe(error), final: false };
  const code = h('code', { class: 'refusal-code' }, `${error.status} ${error.code ?? ''}`.trim());
  const open = h('a', { href: `#/twins/${encodeURIComponent(twin.id)}`, onclick: closeDialog }, `Open ${twin.name}`);
  switch (error.code) {
    case 'resources_in_state': {
      const count = /holds (\d+) resource/.exec(error.message)?.[1];
      const what = count ? `${count} resource${count === '1' ? '' : 's'}` : 'resources';
      return {
        words: [
          h('p', { class: 'error-text' }, `Not purged: its state still holds ${what}.`),
          h('p', {}, 'terraform still tracks cloud resources for this twin, and purging would lose track of them. Restore the twin, destroy them, delete it again, then purge. ', open, ' ', code),
        ],
        final: false,
      };
    }
    case 'twin_locked':
    case 'run_working':
      return {
        words: [h('p', { class: 'error-text' }, 'Not purged: a run is still working on it.'), h('p', {}, 'Wait for it to end, or cancel it, then try again. ', code)],
        final: false,
      };
    case 'not_deleted':
      return {
        words: [h('p', { class: 'error-text' }, 'Not purged: it is no longer deleted.'), h('p', {}, 'Someone restored it meanwhile; only a deleted twin can be purged. ', open, ' ', code)],
        final: true,
      };
    case 'forbidden':
      return { words: [h('p', { class: 'error-text' }, 'Only admins may purge twins.'), h('p', {}, code)], final: true };
    default:
      if (error.status === 404) {
        return { words: [h('p', { class: 'error-text' }, 'It is gone already: purged by someone else, or by the retention sweep.'), h('p', {}, code)], final: true };
      }
      return { words: [h('p', { class: 'error-text' }, `The gateway refused: ${error.message}`), h('p', {}, code)], final: false };
  }
}
