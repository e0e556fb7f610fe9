// The dashboard: every twin with its status, resource count and last deploy (admins may list
// the deleted ones too, to restore them). New twins come from the wizard (wizard.js).

import { api } from './api.js';
import { $, fill, h, statusBadge, timeAgo } from './dom.js';

export class Dashboard {
  /** ctx: report(error), navigate(hash), who(). */
  constructor(root, ctx) {
    this.root = root;
    this.ctx = ctx;
    this.visible = false;
    this.twins = [];
    this.counts = new Map();
    this.drawn = null;
    this.list = $('#twins-list', root);
    this.showDeleted = $('#show-deleted', root);
    this.showDeleted.addEventListener('change', () => this.refresh());
  }

  async show() {
    this.visible = true;
    $('#show-deleted-label', this.root).hidden = !this.ctx.who?.()?.is_admin;
    await this.refresh();
  }

  hide() {
    this.visible = false;
  }

  async refresh() {
    let twins;
    const includeDeleted = this.showDeleted.checked && Boolean(this.ctx.who?.()?.is_admin);
    try {
      twins = await api.twins({ includeDeleted });
    } catch (error) {
      this.ctx.report(error);
      if (!this.drawn) fill(this.list, h('p', { class: 'muted' }, 'The twins could not be loaded.'));
      return;
    }
    this.twins = twins;
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
    const rows = this.twins.map((twin) => ({
      id: twin.id,
      name: twin.name,
      provider: twin.provider,
      status: twin.deployment_status,
      resources: this.counts.get(twin.id),
      last: twin.last_deployed_at,
      deleted: twin.deleted_at ?? null,
    }));
    const text = JSON.stringify(rows);
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
    fill(
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
            h('tr', {}, ['Name', 'Provider', 'Status', 'Resources', 'Last deployed'].map((text) => h('th', { scope: 'col' }, text))),
          ),
          h(
            'tbody',
            {},
            rows.map((row) =>
              h(
                'tr',
                { dataset: { twinId: row.id, status: row.status, deleted: row.deleted ? 'true' : 'false' } },
                h('th', { scope: 'row', 'data-label': 'Name' }, h('a', { href: `#/twins/${encodeURIComponent(row.id)}` }, row.name)),
                h('td', { 'data-label': 'Provider' }, row.provider),
                h('td', { 'data-label': 'Status' }, row.deleted ? h('span', { class: 'badge tone-gray', dataset: { status: 'deleted' } }, 'Deleted') : statusBadge(row.status)),
                h('td', { 'data-label': 'Resources', class: 'number' }, row.resources ?? '—'),
                h('td', { 'data-label': 'Last deployed' }, timeAgo(row.last)),
              ),
            ),
          ),
        ),
      ),
    );
  }
}
