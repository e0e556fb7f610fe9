// The dashboard: every twin with its status, resource count and last deploy, and the form that
// creates a twin (name, provider, .tf files, variables), with the demo twin one click away.

import { api, ApiError, describe } from './api.js';
import { $, announce, fill, h, statusBadge, timeAgo } from './dom.js';

export class Dashboard {
  /** ctx: report(error), navigate(hash). */
  constructor(root, ctx) {
    this.root = root;
    this.ctx = ctx;
    this.visible = false;
    this.twins = [];
    this.counts = new Map();
    this.drawn = null;
    this.list = $('#twins-list', root);
    this.form = new CreateTwinForm(document.getElementById('create-dialog'), ctx, () => this.twins);
    $('#new-twin', root).addEventListener('click', () => this.form.open());
  }

  async show() {
    this.visible = true;
    await this.refresh();
  }

  hide() {
    this.visible = false;
  }

  async refresh() {
    let twins;
    try {
      twins = await api.twins();
    } catch (error) {
      this.ctx.report(error);
      if (!this.drawn) fill(this.list, h('p', { class: 'muted' }, 'The twins could not be loaded.'));
      return;
    }
    this.twins = twins;
    // Resource counts come from each twin's infrastructure status, read side by side.
    const answers = await Promise.allSettled(twins.map((twin) => api.infrastructure(twin.id)));
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
          h('p', { class: 'muted' }, 'Create one from your own .tf files, or start with the demo twin: a dozen sandbox resources that deploy in seconds, no cloud account needed.'),
          h('button', { type: 'button', class: 'button', onclick: () => this.form.open({ demo: true }) }, 'Start from the demo twin'),
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
                { dataset: { twinId: row.id, status: row.status } },
                h('th', { scope: 'row', 'data-label': 'Name' }, h('a', { href: `#/twins/${encodeURIComponent(row.id)}` }, row.name)),
                h('td', { 'data-label': 'Provider' }, row.provider),
                h('td', { 'data-label': 'Status' }, statusBadge(row.status)),
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

class CreateTwinForm {
  constructor(dialog, ctx, existing) {
    this.dialog = dialog;
    this.ctx = ctx;
    this.existing = existing;
    this.files = new Map();
    this.form = $('form', dialog);
    this.el = {
      name: $('#create-name', dialog),
      provider: $('#create-provider', dialog),
      fileInput: $('#create-files', dialog),
      fileList: $('#create-file-list', dialog),
      variables: $('#create-variables', dialog),
      error: $('#create-error', dialog),
      submit: $('#create-submit', dialog),
      demo: $('#use-demo', dialog),
    };
    $('#create-cancel', dialog).addEventListener('click', () => dialog.close());
    this.el.demo.addEventListener('click', () => this.useDemo());
    this.el.fileInput.addEventListener('change', () => this.addFiles());
    this.form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.submit();
    });
  }

  open({ demo = false } = {}) {
    this.form.reset();
    this.files.clear();
    this.drawFiles();
    this.setError(null);
    this.dialog.showModal();
    if (demo) this.useDemo();
    else this.el.name.focus();
  }

  async useDemo() {
    this.el.demo.disabled = true;
    try {
      const template = await api.demoTemplate();
      this.el.name.value = this.freeName(template.name);
      this.el.provider.value = template.provider;
      this.files = new Map(Object.entries(template.files));
      const variables = template.variables ?? {};
      this.el.variables.value = Object.keys(variables).length ? JSON.stringify(variables, null, 2) : '';
      this.drawFiles();
      this.setError(null);
      announce('The demo twin is filled in; create it or change it first.');
      this.el.submit.focus();
    } catch (error) {
      this.setError(`The demo twin could not be loaded: ${describe(error)}`);
    } finally {
      this.el.demo.disabled = false;
    }
  }

  /** "demo", or "demo-2", "demo-3"... when the name is taken. */
  freeName(base) {
    const taken = new Set(this.existing().map((twin) => twin.name));
    if (!taken.has(base)) return base;
    let n = 2;
    while (taken.has(`${base}-${n}`)) n += 1;
    return `${base}-${n}`;
  }

  async addFiles() {
    for (const file of this.el.fileInput.files) {
      this.files.set(file.name, await file.text());
    }
    this.el.fileInput.value = '';
    this.drawFiles();
  }

  drawFiles() {
    const entries = [...this.files.entries()];
    fill(
      this.el.fileList,
      entries.length
        ? entries.map(([path, content]) =>
            h(
              'li',
              {},
              h('code', {}, path),
              h('span', { class: 'muted' }, ` ${content.length.toLocaleString()} bytes`),
              h(
                'button',
                {
                  type: 'button',
                  class: 'button small subtle',
                  'aria-label': `Remove ${path}`,
                  onclick: () => {
                    this.files.delete(path);
                    this.drawFiles();
                    this.el.fileInput.focus();
                  },
                },
                'Remove',
              ),
            ),
          )
        : h('li', { class: 'muted' }, 'No files yet: choose .tf files, or use the demo twin.'),
    );
  }

  setError(text) {
    this.el.error.hidden = !text;
    this.el.error.textContent = text ?? '';
  }

  async submit() {
    const name = this.el.name.value.trim();
    if (!name) {
      this.setError('Give the twin a name.');
      this.el.name.focus();
      return;
    }
    if (![...this.files.keys()].some((path) => path.endsWith('.tf') || path.endsWith('.tf.json'))) {
      this.setError('Add at least one .tf (or .tf.json) file.');
      this.el.fileInput.focus();
      return;
    }
    let variables = {};
    const text = this.el.variables.value.trim();
    if (text) {
      try {
        variables = JSON.parse(text);
      } catch (error) {
        this.setError(`Variables are not valid JSON: ${error.message}`);
        this.el.variables.focus();
        return;
      }
      if (typeof variables !== 'object' || variables === null || Array.isArray(variables)) {
        this.setError('Variables must be a JSON object, like {"base_delay_ms": 300}.');
        this.el.variables.focus();
        return;
      }
    }
    this.el.submit.disabled = true;
    try {
      const twin = await api.createTwin({
        name,
        provider: this.el.provider.value,
        files: Object.fromEntries(this.files),
        variables,
      });
      this.dialog.close();
      announce(`Twin ${twin.name} created.`);
      this.ctx.navigate(`#/twins/${encodeURIComponent(twin.id)}`);
    } catch (error) {
      this.setError(error instanceof ApiError ? `The gateway refused: ${error.message}` : describe(error));
    } finally {
      this.el.submit.disabled = false;
    }
  }
}
