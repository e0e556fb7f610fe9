// One twin: its infrastructure (status, Deploy/Destroy/Cancel/Refresh), outputs, runs with
// their logs, history and configuration. Which buttons work comes from the gateway's
// infrastructure-status (the status machine) and from validating the configuration.

import { api, ApiError, Unreachable, describe } from './api.js';
import { $, announce, fill, formatDuration, h, showDialog, statusBadge, timeAgo } from './dom.js';

const DESTROYABLE = ['deployed', 'error', 'destroy_failed'];
const MASK = '••••••••';
const RUNS_SHOWN = 20;
const HISTORY_SHOWN = 50;

export class TwinView {
  /** ctx: runModal, report(error), navigate(hash). */
  constructor(root, ctx) {
    this.root = root;
    this.ctx = ctx;
    this.id = null;
    this.twin = null;
    this.infra = null;
    this.validation = { for: null, state: 'unknown', errors: [], warnings: [] };
    this.drawn = {};
    this.el = {
      name: $('#twin-name', root),
      meta: $('#twin-meta', root),
      status: $('#twin-status', root),
      resources: $('#twin-resources', root),
      lastDeployed: $('#twin-last-deployed', root),
      deploy: $('#deploy-button', root),
      destroy: $('#destroy-button', root),
      cancel: $('#cancel-button', root),
      progress: $('#progress-button', root),
      refresh: $('#refresh-button', root),
      hint: $('#action-hint', root),
      validation: $('#validation', root),
      outputs: $('#twin-outputs', root),
      runs: $('#twin-runs', root),
      history: $('#twin-history', root),
      config: $('#twin-config', root),
    };
    this.el.deploy.addEventListener('click', () => this.start('deploy'));
    this.el.destroy.addEventListener('click', () => this.start('destroy'));
    this.el.cancel.addEventListener('click', () => this.cancel());
    this.el.progress.addEventListener('click', () => this.showProgress());
    this.el.refresh.addEventListener('click', () => this.reconcile());
  }

  /** Opens a twin; the first load fills every section. */
  async show(id) {
    if (id !== this.id) {
      this.id = id;
      this.twin = null;
      this.infra = null;
      this.drawn = {};
      this.validation = { for: null, state: 'unknown', errors: [], warnings: [] };
      this.el.name.textContent = 'Loading…';
      this.el.meta.textContent = '';
      for (const key of ['status', 'resources', 'lastDeployed', 'outputs', 'runs', 'history', 'config']) {
        this.el[key].replaceChildren();
      }
      this.el.hint.textContent = '';
      this.el.validation.hidden = true;
      this.drawButtons();
    }
    await this.refresh({ full: true });
  }

  hide() {
    this.id = null;
  }

  /** Re-reads the twin; the slower sections only when something changed (or `full`). */
  async refresh({ full = false } = {}) {
    const id = this.id;
    if (!id) return;
    let twin;
    let infra;
    try {
      [twin, infra] = await Promise.all([api.twin(id), api.infrastructure(id)]);
    } catch (error) {
      if (id !== this.id) return;
      if (error instanceof ApiError && error.status === 404) {
        this.el.name.textContent = 'Twin not found';
        this.el.meta.textContent = 'It may have been deleted, or it belongs to someone else.';
        return;
      }
      this.ctx.report(error);
      return;
    }
    if (id !== this.id) return;
    const previous = this.infra && this.twin;
    const changed =
      full ||
      !previous ||
      this.twin.updated_at !== twin.updated_at ||
      this.twin.deployment_status !== twin.deployment_status ||
      this.infra.active_job_id !== infra.active_job_id ||
      this.infra.state_version !== infra.state_version;
    this.twin = twin;
    this.infra = infra;
    this.drawSummary();
    this.drawButtons();
    const work = [this.validate()];
    if (changed) {
      this.drawConfig();
      work.push(this.loadOutputs(), this.loadRuns(), this.loadHistory());
    }
    await Promise.all(work);
  }

  /** A status event from a run being watched: show it at once. */
  onStatus(twinId, status) {
    if (twinId !== this.id || !this.twin) return;
    this.twin.deployment_status = status;
    this.drawSummary();
    this.refresh();
  }

  drawSummary() {
    const { twin, infra } = this;
    this.el.name.textContent = twin.name;
    document.title = `${twin.name} · terrastream`;
    fill(this.el.meta, `${twin.provider} · `, h('code', {}, twin.id));
    const status = twin.deployment_status;
    if (this.el.status.dataset.status !== status) {
      this.el.status.dataset.status = status;
      fill(this.el.status, statusBadge(status));
      if (this.drawn.status) announce(`${twin.name} is now ${status.replace('_', ' ')}`);
      this.drawn.status = status;
    }
    fill(this.el.resources, String(infra.resource_count ?? 0));
    this.el.resources.dataset.count = String(infra.resource_count ?? 0);
    fill(this.el.lastDeployed, timeAgo(infra.last_deployed_at ?? twin.last_deployed_at));
    this.root.dataset.status = status;
  }

  drawButtons() {
    const { twin, infra, validation } = this;
    const { deploy, destroy, cancel, progress, hint } = this.el;
    if (!twin || !infra) {
      for (const button of [deploy, destroy, this.el.refresh]) button.disabled = true;
      cancel.hidden = true;
      progress.hidden = true;
      return;
    }
    this.el.refresh.disabled = false;
    const active = Boolean(infra.active_job_id);
    const status = twin.deployment_status;
    const deleted = Boolean(twin.deleted_at);
    deploy.disabled = !infra.can_deploy || validation.state === 'invalid' || validation.state === 'pending';
    destroy.disabled = !infra.can_destroy || !DESTROYABLE.includes(status);
    cancel.hidden = !active;
    cancel.disabled = false;
    progress.hidden = !active;

    let why = '';
    if (deleted) why = 'This twin is deleted; restore it to deploy again.';
    else if (active) why = 'A run is working on this twin; Deploy and Destroy wait for it to end.';
    else if (validation.state === 'pending') why = 'Checking the configuration…';
    else if (validation.state === 'invalid') why = 'The configuration does not validate; fix the errors below to deploy.';
    else if (!infra.can_deploy) why = `A ${status.replace('_', ' ')} twin cannot be deployed.`;
    else if (destroy.disabled) why = 'Destroy becomes available once something is deployed.';
    hint.textContent = why;
  }

  async validate() {
    const twin = this.twin;
    if (!twin) return;
    const config = configurationKey(twin);
    if (this.validation.for === config) return;
    const id = twin.id;
    this.validation = { for: config, state: 'pending', errors: [], warnings: [] };
    this.drawButtons();
    let result;
    try {
      const answer = await api.validate(id);
      result = {
        state: answer?.valid === false ? 'invalid' : 'valid',
        errors: answer?.errors ?? [],
        warnings: answer?.warnings ?? [],
      };
    } catch (error) {
      if (error instanceof ApiError && [404, 405, 501].includes(error.status)) {
        // A gateway without validation: Deploy relies on the run's own plan.
        result = { state: 'unavailable', errors: [], warnings: [] };
      } else if (error instanceof Unreachable) {
        // Asked again on the next refresh, once the gateway answers.
        result = { for: null, state: 'unknown', errors: [], warnings: [] };
      } else {
        result = { state: 'unknown', errors: [], warnings: [], note: `Could not validate: ${describe(error)}` };
      }
    }
    if (this.id !== id || this.validation.for !== config) return;
    this.validation = { ...this.validation, ...result };
    this.drawButtons();
    this.drawValidation();
  }

  drawValidation() {
    const { state, errors, warnings, note } = this.validation;
    const box = this.el.validation;
    const parts = [];
    if (state === 'invalid') {
      parts.push(h('p', { class: 'validation-title error-text' }, 'The configuration does not validate'));
      parts.push(h('ul', {}, errors.map((e) => h('li', {}, diagnostic(e)))));
    } else if (state === 'valid') {
      parts.push(h('p', { class: 'validation-title ok-text' }, 'The configuration is valid.'));
    }
    if (warnings.length) {
      parts.push(h('p', { class: 'validation-title warn-text' }, 'Warnings'));
      parts.push(h('ul', {}, warnings.map((w) => h('li', {}, diagnostic(w)))));
    }
    if (note) parts.push(h('p', { class: 'muted' }, note));
    box.hidden = parts.length === 0;
    box.dataset.state = state;
    fill(box, parts);
  }

  async loadOutputs() {
    const id = this.id;
    try {
      const { outputs } = await api.outputs(id);
      if (id !== this.id) return;
      const entries = Object.entries(outputs ?? {});
      if (!this.changed('outputs', entries)) return;
      if (!entries.length) {
        fill(this.el.outputs, h('p', { class: 'muted' }, 'No outputs yet. They appear after a deploy.'));
        return;
      }
      fill(
        this.el.outputs,
        table(
          ['Name', 'Value'],
          entries.map(([name, output]) => [
            h('code', {}, name),
            output.sensitive
              ? h(
                  'span',
                  { class: 'masked' },
                  h('span', { 'aria-hidden': 'true' }, MASK),
                  h('span', { class: 'sr-only' }, 'hidden'),
                  h('span', { class: 'tag' }, 'sensitive'),
                )
              : h('code', { class: 'value' }, formatValue(output.value)),
          ]),
          'outputs-table',
        ),
      );
    } catch (error) {
      if (id === this.id) this.ctx.report(error);
    }
  }

  async loadRuns() {
    const id = this.id;
    try {
      const runs = await api.runs(id);
      if (id !== this.id || !this.changed('runs', runs)) return;
      if (!runs.length) {
        fill(this.el.runs, h('p', { class: 'muted' }, 'No runs yet.'));
        return;
      }
      const rows = runs.slice(0, RUNS_SHOWN).map((run) => [
        { deploy: 'Deploy', destroy: 'Destroy', plan: 'Plan' }[run.kind] ?? run.kind,
        h('span', { class: `run-status run-${run.status}` }, run.status),
        timeAgo(run.start_time ?? run.created_at, '—'),
        formatDuration(run.start_time, run.end_time) || '—',
        h(
          'button',
          {
            type: 'button',
            class: 'button small',
            'aria-label': `Log of the ${run.kind} ${run.start_time ? 'started ' + new Date(run.start_time).toLocaleString() : ''}`,
            onclick: () => this.openRun(run, true),
          },
          'View log',
        ),
      ]);
      const more = runs.length > RUNS_SHOWN ? h('p', { class: 'muted' }, `The latest ${RUNS_SHOWN} of ${runs.length} runs.`) : null;
      fill(this.el.runs, table(['Run', 'Result', 'Started', 'Took', ''], rows, 'runs-table'), more);
    } catch (error) {
      if (id === this.id) this.ctx.report(error);
    }
  }

  async loadHistory() {
    const id = this.id;
    try {
      const entries = await api.history(id);
      if (id !== this.id || !this.changed('history', entries)) return;
      const latest = entries.slice(-HISTORY_SHOWN).reverse();
      fill(
        this.el.history,
        h(
          'ol',
          { class: 'history' },
          latest.map((entry) =>
            h(
              'li',
              {},
              h('span', { class: 'history-what' }, describeEntry(entry)),
              h(
                'span',
                { class: 'history-meta muted' },
                timeAgo(entry.at),
                ` · ${entry.actor}`,
                entry.reason ? ` · ${entry.reason}` : '',
              ),
            ),
          ),
        ),
      );
    } catch (error) {
      if (id === this.id) this.ctx.report(error);
    }
  }

  drawConfig() {
    const { twin } = this;
    const files = Object.entries(twin.files ?? {});
    const variables = Object.keys(twin.variables ?? {}).length
      ? h('pre', { class: 'code' }, JSON.stringify(twin.variables, null, 2))
      : h('p', { class: 'muted' }, 'No variables: the configuration\'s defaults apply.');
    fill(
      this.el.config,
      h('h3', {}, `Files (${files.length})`),
      files.map(([path, content]) =>
        h('details', { class: 'file' }, h('summary', {}, h('code', {}, path), h('span', { class: 'muted' }, ` ${content.length.toLocaleString()} bytes`)), h('pre', { class: 'code' }, content)),
      ),
      h('h3', {}, 'Variables'),
      variables,
    );
  }

  /** True (and remembered) when `data` differs from what a section shows now. */
  changed(section, data) {
    const text = JSON.stringify(data);
    if (this.drawn[section] === text) return false;
    this.drawn[section] = text;
    return true;
  }

  async start(kind) {
    const twin = this.twin;
    if (!twin) return;
    if (kind === 'destroy' && !(await this.confirmDestroy(twin))) return;
    const button = kind === 'destroy' ? this.el.destroy : this.el.deploy;
    button.disabled = true;
    try {
      const started = await api.start(twin.id, kind);
      this.openRun({ job_id: started.job_id, kind }, false);
    } catch (error) {
      if (error instanceof ApiError && error.body.active_job_id) {
        this.openRun({ job_id: error.body.active_job_id, kind }, false);
      } else {
        this.el.hint.textContent = describe(error);
        this.ctx.report(error, { quiet: true });
      }
    }
    await this.refresh();
  }

  openRun(run, historical) {
    const live = run.job_id === this.infra?.active_job_id;
    this.ctx.runModal.open({
      jobId: run.job_id,
      twinId: this.twin.id,
      twinName: this.twin.name,
      kind: run.kind,
      historical: historical && !live,
    });
  }

  showProgress() {
    const jobId = this.infra?.active_job_id;
    if (jobId) this.openRun({ job_id: jobId, kind: this.twin.deployment_status === 'destroying' ? 'destroy' : 'deploy' }, false);
  }

  async cancel() {
    const twin = this.twin;
    if (!twin) return;
    this.el.cancel.disabled = true;
    try {
      await api.cancel(twin.id);
      this.el.hint.textContent = 'Cancelling: terraform finishes what it is doing and saves its state first.';
    } catch (error) {
      this.el.hint.textContent = describe(error);
    }
    await this.refresh();
  }

  async reconcile() {
    const twin = this.twin;
    if (!twin) return;
    this.el.refresh.disabled = true;
    try {
      const report = await api.refresh(twin.id);
      const text = report.changed
        ? `Status refreshed: ${report.changes.map(describeChange).join('; ')}.`
        : 'Status refreshed: it matches the stored state.';
      this.el.hint.textContent = text;
      announce(text);
    } catch (error) {
      this.el.hint.textContent = describe(error);
    }
    await this.refresh({ full: true });
  }

  /** The destroy confirmation, with the kinds of resources that will go. */
  async confirmDestroy(twin) {
    const dialog = document.getElementById('destroy-dialog');
    fill($('#destroy-twin-name', dialog), twin.name);
    const list = $('#destroy-kinds', dialog);
    fill(list, h('li', { class: 'muted' }, 'Reading the state…'));
    const answer = showDialog(dialog);
    $('#destroy-cancel', dialog).focus();
    try {
      const kinds = resourceKinds((await api.state(twin.id)).state);
      fill(
        list,
        kinds.length
          ? kinds.map(([kind, count]) => h('li', {}, h('code', {}, kind), count > 1 ? ` × ${count}` : ''))
          : h('li', { class: 'muted' }, 'The stored state lists no resources.'),
      );
    } catch (error) {
      fill(list, h('li', { class: 'muted' }, `The resource list could not be read: ${describe(error)}`));
    }
    return (await answer) === 'destroy';
  }
}

/** Resource kinds and counts from a (masked) terraform state: a sandbox resource's `kind`
 * attribute, otherwise the resource type. */
export function resourceKinds(state) {
  const counts = new Map();
  for (const resource of state?.resources ?? []) {
    if (resource.mode === 'data') continue;
    for (const instance of resource.instances ?? [{}]) {
      const kind =
        resource.type === 'sandbox_resource' && typeof instance.attributes?.kind === 'string'
          ? instance.attributes.kind
          : resource.type;
      counts.set(kind, (counts.get(kind) ?? 0) + 1);
    }
  }
  return [...counts.entries()].sort(([a], [b]) => a.localeCompare(b));
}

/** What validation depends on: the files and the variables. */
function configurationKey(twin) {
  return JSON.stringify([twin.files, twin.variables]);
}

function table(headers, rows, className) {
  return h(
    'div',
    { class: 'table-wrap' },
    h(
      'table',
      { class: className },
      h('thead', {}, h('tr', {}, headers.map((text) => h('th', { scope: 'col' }, text)))),
      h(
        'tbody',
        {},
        rows.map((cells) =>
          h('tr', {}, cells.map((cell, index) => h('td', { 'data-label': headers[index] }, cell))),
        ),
      ),
    ),
  );
}

function formatValue(value) {
  return typeof value === 'string' ? value : JSON.stringify(value);
}

function diagnostic(item) {
  if (typeof item === 'string') return item;
  const summary = item?.summary ?? item?.message ?? JSON.stringify(item);
  const file = item?.file ?? item?.range?.filename;
  const line = item?.line ?? item?.range?.start?.line;
  const where = file ? ` (${file}${line ? `:${line}` : ''})` : '';
  return item?.detail ? `${summary}${where}: ${item.detail}` : `${summary}${where}`;
}

function describeEntry(entry) {
  if (entry.from_status || entry.to_status) {
    const from = entry.from_status ? entry.from_status.replace('_', ' ') : 'new';
    return `${from} → ${(entry.to_status ?? '').replace('_', ' ')}`;
  }
  return entry.action.replace('_', ' ');
}

function describeChange(change) {
  if (typeof change === 'string') return change;
  return change?.reason ?? change?.message ?? JSON.stringify(change);
}
