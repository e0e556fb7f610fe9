// One twin: its infrastructure (status, Deploy/Plan/Destroy/Cancel/Refresh and the moves
// without a run), cost, drift, resource map, outputs, state versions, runs, history and
// configuration (editable). Which buttons work comes from the gateway's infrastructure-status
// (the status machine) and from validating the configuration. "Debug run" makes the next
// Deploy, Plan or Destroy a debug run at the chosen TF_LOG level.

import { api, ApiError, Unreachable, describe } from './api.js';
import { $, announce, fill, h, showDialog, statusBadge, timeAgo } from './dom.js';
import { CredentialPicker, VariablesEditor, readFiles } from './forms.js';
import { drawResourceMap } from './resource-map.js';
import {
  RUN_HEADERS, RUN_KINDS, changeList, costBars, deltaText, fillIfChanged, forget, money, moreButton,
  outputValue, runRows, subtract, table, unpricedList, variablesTable,
} from './twin-panels.js';

const DESTROYABLE = ['deployed', 'error', 'destroy_failed'];
const PAGE = 20;
const VERSIONS_SHOWN = 10;
const DRIFT_POLL_MS = 1000;

/** The status machine (docs/api.md), for the moves an admin may make by hand. */
export const ALLOWED_MOVES = {
  draft: ['deploying'],
  deploying: ['deployed', 'error'],
  deployed: ['destroying', 'deploying'],
  destroying: ['draft', 'destroy_failed'],
  error: ['deploying', 'destroying'],
  destroy_failed: ['destroying', 'deployed'],
};

export class TwinView {
  /** ctx: runModal, report(error), navigate(hash), who() -> {owner, is_admin}. */
  constructor(root, ctx) {
    this.root = root;
    this.ctx = ctx;
    this.id = null;
    this.reset();
    const el = (id) => $(`#${id}`, root);
    this.el = {
      name: el('twin-name'),
      meta: el('twin-meta'),
      missing: el('twin-missing'),
      missingText: el('twin-missing-text'),
      body: el('twin-body'),
      deleted: el('deleted-banner'),
      deletedText: el('deleted-text'),
      restore: el('restore-button'),
      status: el('twin-status'),
      resources: el('twin-resources'),
      costTotal: el('twin-cost-total'),
      lastDeployed: el('twin-last-deployed'),
      deploy: el('deploy-button'),
      plan: el('plan-button'),
      destroy: el('destroy-button'),
      cancel: el('cancel-button'),
      progress: el('progress-button'),
      keep: el('keep-button'),
      refresh: el('refresh-button'),
      edit: el('edit-button'),
      repair: el('repair-button'),
      remove: el('delete-button'),
      hint: el('action-hint'),
      debugRun: el('debug-run'),
      debugLevel: el('debug-level'),
      validation: el('validation'),
      costs: el('twin-costs'),
      drift: el('twin-drift'),
      driftButton: el('drift-button'),
      map: el('twin-map'),
      mapDetails: el('map-details'),
      outputs: el('twin-outputs'),
      versions: el('twin-versions'),
      runs: el('twin-runs'),
      history: el('twin-history'),
      config: el('twin-config'),
    };
    this.el.deploy.addEventListener('click', () => this.start('deploy'));
    this.el.plan.addEventListener('click', () => this.start('plan'));
    this.el.destroy.addEventListener('click', () => this.start('destroy'));
    this.el.cancel.addEventListener('click', () => this.cancel());
    this.el.progress.addEventListener('click', () => this.showProgress());
    this.el.keep.addEventListener('click', () => this.keepResources());
    this.el.refresh.addEventListener('click', () => this.reconcile(this.el.refresh));
    this.el.driftButton.addEventListener('click', () => this.reconcile(this.el.driftButton));
    this.el.edit.addEventListener('click', () => this.editor.open(this.twin));
    this.el.repair.addEventListener('click', () => this.repair());
    this.el.remove.addEventListener('click', () => this.remove());
    this.el.restore.addEventListener('click', () => this.restore());
    this.el.debugRun.addEventListener('change', () => {
      this.el.debugLevel.disabled = !this.el.debugRun.checked;
    });
    this.editor = new ConfigEditor(document.getElementById('edit-dialog'), {
      saved: (twin) => {
        this.twin = twin;
        announce('The configuration is saved.');
        this.el.hint.textContent = 'Saved. The configuration is checked again; Deploy applies it.';
        this.refresh({ full: true });
      },
    });
    let mapWidth = 0;
    new ResizeObserver(() => {
      const width = this.el.map.clientWidth;
      if (this.state && width && Math.abs(width - mapWidth) > 24) {
        mapWidth = width;
        this.drawMap();
      }
    }).observe(this.el.map);
  }

  reset() {
    this.twin = null;
    this.infra = null;
    this.state = null;
    this.costs = null;
    this.history = [];
    this.historyNext = null;
    this.runs = [];
    this.runsNext = null;
    this.showAllVersions = false;
    this.versions = null;
    this.credentialList = null;
    this.driftJob = null;
    this.busy = false;
    this.validation = { for: null, state: 'unknown', errors: [], warnings: [] };
    this.seen = {};
  }

  /** Where focus goes when a dialog's opener is gone or disabled. */
  focusTarget() {
    if (!this.id || this.root.hidden) return null;
    const candidates = [this.el.progress, this.el.deploy, this.el.plan];
    return candidates.find((button) => !button.hidden && !button.disabled) ?? this.el.name;
  }

  /** Opens a twin; the first load fills every section. */
  async show(id) {
    if (id !== this.id) {
      this.id = id;
      this.reset();
      this.el.name.textContent = 'Loading…';
      this.el.meta.textContent = '';
      this.el.missing.hidden = true;
      this.el.body.hidden = false;
      for (const key of ['status', 'resources', 'costTotal', 'lastDeployed', 'outputs', 'runs', 'history', 'config', 'costs', 'drift', 'map', 'versions']) {
        this.el[key].replaceChildren();
        forget(this.el[key]);
      }
      delete this.el.status.dataset.status;
      this.el.hint.textContent = '';
      this.el.mapDetails.textContent = '';
      $('#versions-note', this.root).hidden = true;
      this.el.validation.hidden = true;
      // A debug run is chosen for one twin at a time.
      this.el.debugRun.checked = false;
      this.el.debugLevel.value = 'DEBUG';
      this.el.debugLevel.disabled = true;
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
        this.showMissing();
        return;
      }
      this.ctx.report(error);
      return;
    }
    if (id !== this.id) return;
    this.el.missing.hidden = true;
    this.el.body.hidden = false;
    const previous = this.infra && this.twin;
    const changed =
      full ||
      !previous ||
      this.twin.updated_at !== twin.updated_at ||
      this.twin.deployment_status !== twin.deployment_status ||
      this.twin.deleted_at !== twin.deleted_at ||
      this.infra.active_job_id !== infra.active_job_id ||
      this.infra.state_version !== infra.state_version ||
      this.infra.drift?.job_id !== infra.drift?.job_id;
    this.twin = twin;
    this.infra = infra;
    this.drawSummary();
    this.drawButtons();
    this.drawDrift();
    const work = [this.validate(), this.loadRuns()];
    if (changed) {
      this.drawConfig();
      work.push(this.loadOutputs(), this.loadHistory(), this.loadState(), this.loadCosts(), this.loadVersions(), this.loadCredentialNames());
    }
    await Promise.all(work);
  }

  showMissing() {
    this.twin = null;
    this.infra = null;
    this.el.name.textContent = 'Twin not found';
    document.title = 'Twin not found · terrastream';
    this.el.meta.textContent = '';
    this.el.body.hidden = true;
    this.el.missing.hidden = false;
    this.el.missingText.textContent = 'There is no twin with this address. It may have been purged, the link may be wrong, or it belongs to someone else.';
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
      if (this.seen.status) announce(`${twin.name} is now ${status.replace('_', ' ')}`);
      this.seen.status = status;
    }
    fill(this.el.resources, String(infra.resource_count ?? 0));
    this.el.resources.dataset.count = String(infra.resource_count ?? 0);
    this.drawLastDeployed();
    this.root.dataset.status = status;
    const deleted = Boolean(twin.deleted_at);
    this.el.deleted.hidden = !deleted;
    if (deleted) {
      fill(this.el.deletedText, 'This twin was deleted ', timeAgo(twin.deleted_at), '. It is kept so it can be restored; nothing can run on it until then.');
    }
  }

  /** "3 minutes ago", and whether a destroy (or a move to draft) came since. */
  drawLastDeployed() {
    const { twin, infra } = this;
    const last = infra.last_deployed_at ?? twin.last_deployed_at;
    const since = this.history
      .filter((entry) => entry.to_status === 'draft' && entry.from_status && (!last || entry.at > last))
      .at(-1);
    const parts = [timeAgo(last)];
    if (last && since) {
      const how = since.from_status === 'destroying' ? 'destroyed' : 'back to draft';
      parts.push(h('span', { class: 'since', dataset: { since: how } }, ` · ${how} `, timeAgo(since.at)));
    }
    fill(this.el.lastDeployed, parts);
  }

  drawButtons() {
    const { twin, infra, validation } = this;
    const { deploy, plan, destroy, cancel, progress, keep, hint, edit, repair, remove } = this.el;
    const admin = Boolean(this.ctx.who?.()?.is_admin);
    if (!twin || !infra) {
      for (const button of [deploy, plan, destroy, this.el.refresh, this.el.driftButton, edit, remove]) button.disabled = true;
      cancel.hidden = true;
      progress.hidden = true;
      keep.hidden = true;
      repair.hidden = true;
      return;
    }
    const active = Boolean(infra.active_job_id);
    const status = twin.deployment_status;
    const deleted = Boolean(twin.deleted_at);
    const invalid = validation.state === 'invalid' || validation.state === 'pending';
    deploy.disabled = deleted || !infra.can_deploy || invalid;
    plan.disabled = deleted || active || validation.state === 'invalid';
    destroy.disabled = deleted || !infra.can_destroy || !DESTROYABLE.includes(status);
    this.el.refresh.disabled = deleted || this.busy;
    this.el.driftButton.disabled = deleted || this.busy || Boolean(this.driftJob) || status !== 'deployed' || active;
    cancel.hidden = !active;
    cancel.disabled = false;
    progress.hidden = !active;
    keep.hidden = status !== 'destroy_failed' || deleted;
    keep.disabled = active;
    edit.disabled = deleted || active;
    repair.hidden = !admin || deleted;
    repair.disabled = active;
    remove.disabled = deleted || active || status !== 'draft';
    this.el.debugRun.disabled = deleted;

    let why = '';
    if (deleted) why = 'This twin is deleted; restore it to work on it again.';
    else if (active) why = 'A run is working on this twin; Deploy and Destroy wait for it to end.';
    else if (validation.state === 'pending') why = 'Checking the configuration…';
    else if (validation.state === 'invalid') why = 'The configuration does not validate: use Edit configuration to fix the errors below, then deploy.';
    else if (status === 'destroy_failed') why = 'The destroy failed: retry it with Destroy, or keep the resources (the twin is deployed again).';
    else if (!infra.can_deploy) why = `A ${status.replace('_', ' ')} twin cannot be deployed.`;
    else if (destroy.disabled && status === 'draft') why = 'Destroy becomes available once something is deployed; Delete twin removes a draft.';
    if (!this.hintLocked) hint.textContent = why;
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

  /** Runs the page shows sections for in parallel; a 404 mid-way is the twin going away. */
  async section(load) {
    const id = this.id;
    try {
      const result = await load();
      return id === this.id ? result : undefined;
    } catch (error) {
      if (id === this.id) this.ctx.report(error, { quiet: error instanceof ApiError && error.status === 404 });
      return undefined;
    }
  }

  async loadOutputs() {
    const answer = await this.section(() => api.outputs(this.id));
    if (!answer) return;
    const entries = Object.entries(answer.outputs ?? {});
    fillIfChanged(this.el.outputs, entries, () =>
      entries.length
        ? table(['Name', 'Value'], entries.map(([name, output]) => [h('code', {}, name), outputValue(output)]), 'outputs-table')
        : h('p', { class: 'muted' }, 'No outputs yet. They appear after a deploy.'));
  }

  async loadState() {
    // Refreshes overlap; only the newest answer counts.
    const ticket = (this.stateTicket = (this.stateTicket ?? 0) + 1);
    const answer = await this.section(() => api.state(this.id));
    if (answer === undefined || ticket !== this.stateTicket) return;
    this.state = answer?.state ?? null;
    this.drawMap();
  }

  drifted() {
    const drift = this.infra?.drift;
    return new Set((drift?.drifted ?? []).map((item) => item.address).filter(Boolean));
  }

  drawMap() {
    if (!this.state) {
      fill(this.el.map, h('p', { class: 'muted' }, 'No state yet.'));
      return;
    }
    const drifted = this.drifted();
    const key = JSON.stringify([this.state.lineage, this.state.serial, [...drifted], this.el.map.clientWidth]);
    if (this.seen.map === key) return;
    this.seen.map = key;
    drawResourceMap(this.el.map, this.state, {
      drifted,
      onSelect: (node) => {
        fill(
          this.el.mapDetails,
          h('code', {}, node.address),
          ` · ${node.kind}`,
          node.id ? ` · id ${node.id}` : '',
          node.dependsOn.length ? ` · depends on ${node.dependsOn.join(', ')}` : ' · depends on nothing',
          node.drifted ? ' · drifted: changed or deleted outside terraform' : '',
        );
      },
    });
  }

  async loadCosts() {
    const costs = await this.section(() => api.costs(this.id));
    if (!costs) return;
    this.costs = costs;
    const currency = costs.costs?.currency ?? 'USD';
    const fromPlan = costs.source === 'plan';
    const after = fromPlan ? costs.costs : null;
    const now = fromPlan ? subtract(costs.costs, costs.delta) : costs.costs;
    fill(this.el.costTotal, money(now?.total ?? 0, currency));
    this.el.costTotal.dataset.total = String(now?.total ?? 0);
    fillIfChanged(this.el.costs, costs, () => [
      h('p', { class: 'cost-headline' },
        h('strong', { class: 'cost-now', dataset: { total: now?.total ?? 0 } }, money(now?.total ?? 0, currency)),
        ' a month now',
        fromPlan ? [' · ', h('strong', { class: 'cost-after', dataset: { total: after.total } }, money(after.total, currency)), ` after the previewed plan (${deltaText(costs.delta, currency)})`] : null),
      costBars({ now, after, currency }),
      h('p', { class: 'muted small' }, fromPlan
        ? 'From the plan preview, which the next deploy applies. List prices from the price book: an estimate, not a bill.'
        : 'From the deployed state; Plan shows what a deploy would change. List prices from the price book: an estimate, not a bill.'),
      unpricedList(costs.unpriced),
    ]);
  }

  drawDrift() {
    const { infra, twin } = this;
    if (!infra || !twin) return;
    const drift = infra.drift;
    // Who started the last check (the scheduler with --drift-interval-secs, or a person's
    // Refresh status) is its run's actor; the runs list has it once loaded.
    const actor = drift?.job_id ? this.runs.find((run) => run.job_id === drift.job_id)?.actor ?? null : null;
    const scheduled = actor === 'drift-scheduler';
    const checked = () => [
      ' Checked ', timeAgo(drift.checked_at),
      actor ? h('span', { class: 'drift-by', dataset: { by: scheduled ? 'scheduler' : 'person' } }, scheduled ? ' by the scheduled check' : ` by ${actor}`) : null,
      '.',
    ];
    const parts = [];
    if (this.driftJob) {
      parts.push(h('p', { class: 'drift-state checking', dataset: { state: 'checking' } },
        h('span', { class: 'spinner', 'aria-hidden': 'true' }), ` Checking for drift… ${this.driftJob.label ?? ''}`));
      parts.push(h('button', { type: 'button', class: 'button small', dataset: { openRun: this.driftJob.id }, onclick: () => this.openRun({ job_id: this.driftJob.id, kind: 'drift' }, true) }, 'View progress'));
    } else if (!drift) {
      parts.push(h('p', { class: 'muted drift-state', dataset: { state: 'unchecked' } },
        twin.deployment_status === 'deployed' ? 'Not checked yet. A check compares the live resources with the stored state.' : 'Checks are for a deployed twin.'));
    } else if (drift.outcome !== 'completed' && drift.outcome !== 'succeeded') {
      parts.push(h('p', { class: 'drift-state warn-text', dataset: { state: 'failed' } }, `The last check did not finish (${drift.outcome}).`, checked()));
    } else if (!drift.drifted_count) {
      parts.push(h('p', { class: 'drift-state ok-text', dataset: { state: 'clean' } }, 'No drift: the resources match the state.', checked()));
    } else {
      parts.push(h('p', { class: 'drift-state error-text', dataset: { state: 'drifted', count: drift.drifted_count } },
        `${drift.drifted_count} resource${drift.drifted_count === 1 ? '' : 's'} drifted: changed or deleted outside terraform.`, checked()));
      parts.push(changeList(drift.drifted, ''));
      parts.push(h('p', { class: 'muted small' }, 'Deploy puts them back as the configuration says.'));
    }
    if (drift?.job_id && !this.driftJob) {
      parts.push(h('button', { type: 'button', class: 'button small', dataset: { openRun: drift.job_id }, onclick: () => this.openRun({ job_id: drift.job_id, kind: 'drift' }, true) }, 'View the last check\'s log'));
    }
    fillIfChanged(this.el.drift, [drift, this.driftJob, twin.deployment_status, actor], () => parts);
    this.drawMap();
  }

  async loadVersions() {
    const versions = await this.section(() => api.stateVersions(this.id));
    if (!versions) return;
    this.versions = versions;
    this.drawVersions();
  }

  drawVersions() {
    const versions = this.versions ?? [];
    const shown = this.showAllVersions ? versions : versions.slice(0, VERSIONS_SHOWN);
    const deleted = Boolean(this.twin?.deleted_at);
    fillIfChanged(this.el.versions, [shown, versions.length, deleted], () => {
      if (!versions.length) return h('p', { class: 'muted' }, 'No state yet.');
      const current = versions[0]?.version;
      const rows = shown.map((v) => {
        const cells = [
          `v${v.version}`,
          String(v.resource_count),
          v.actor,
          timeAgo(v.created_at),
          v.run_id
            ? h('button', { type: 'button', class: 'button small', dataset: { openRun: v.run_id }, 'aria-label': `Log of the run that wrote version ${v.version}`, onclick: () => this.openRun({ job_id: v.run_id }, true) }, 'View run')
            : h('span', { class: 'muted' }, 'no run'),
          v.version === current
            ? h('span', { class: 'tag', dataset: { current: 'true' } }, 'current')
            : h('button', {
              type: 'button',
              class: 'button small',
              dataset: { restore: v.version },
              disabled: deleted,
              'aria-label': `Restore version ${v.version}`,
              onclick: (event) => this.restoreVersion(v, event.currentTarget),
            }, 'Restore…'),
        ];
        cells.attrs = { dataset: { version: v.version } };
        return cells;
      });
      return [
        table(['Version', 'Resources', 'By', 'When', 'Run', ''], rows, 'versions-table', { caption: 'State versions, newest first' }),
        versions.length > VERSIONS_SHOWN
          ? h('button', { type: 'button', class: 'button small more', onclick: () => { this.showAllVersions = !this.showAllVersions; this.drawVersions(); } },
            this.showAllVersions ? 'Show the latest only' : `Show all ${versions.length} versions`)
          : null,
      ];
    });
  }

  /** Rollback: version `v`'s content becomes the current state, after a confirmation. */
  async restoreVersion(v, opener) {
    const twin = this.twin;
    if (!twin) return;
    const dialog = document.getElementById('restore-dialog');
    const form = $('form', dialog);
    const error = $('#restore-error', dialog);
    const confirm = $('#restore-confirm', dialog);
    const cancel = $('#restore-cancel', dialog);
    fill($('#restore-version', dialog), String(v.version));
    fill($('#restore-twin-name', dialog), twin.name);
    fill($('#restore-count', dialog), `${v.resource_count} resource${v.resource_count === 1 ? '' : 's'}`);
    fill($('#restore-when', dialog), timeAgo(v.created_at), v.run_id ? ' by a run' : ` by ${v.actor}`);
    error.hidden = true;
    confirm.textContent = 'Restore';
    let restored = null;
    const onSubmit = async (event) => {
      event.preventDefault();
      confirm.disabled = true;
      error.hidden = true;
      try {
        restored = await api.restoreVersion(twin.id, v.version);
        dialog.close('restored');
      } catch (failure) {
        error.textContent = restoreRefusal(failure);
        error.hidden = false;
        confirm.textContent = 'Try again';
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
    const note = $('#versions-note', this.root);
    if (!restored) {
      (opener?.isConnected ? opener : $('#versions-title', this.root)).focus();
      return;
    }
    note.textContent = `Version ${v.version} is restored as version ${restored.version} (${restored.resource_count} resource${restored.resource_count === 1 ? '' : 's'}). The next deploy plans from it.`;
    note.hidden = false;
    note.focus();
    announce(note.textContent);
    await this.refresh({ full: true });
  }

  async loadRuns() {
    // The first page again, as long as what the reader has opened (at most 200).
    const limit = Math.min(200, Math.max(PAGE, this.runs.length));
    const page = await this.section(() => api.runs(this.id, { limit }));
    if (!page) return;
    this.runs = page.items;
    this.runsNext = page.next;
    this.drawRuns();
    this.drawDrift();
  }

  async moreRuns() {
    const page = await this.section(() => api.runs(this.id, { limit: PAGE, before: this.runsNext }));
    if (!page) return;
    const known = new Set(this.runs.map((run) => run.job_id));
    this.runs = [...this.runs, ...page.items.filter((run) => !known.has(run.job_id))];
    this.runsNext = page.next;
    this.drawRuns();
    this.el.runs.querySelectorAll('tbody tr')[Math.max(0, this.runs.length - page.items.length)]?.querySelector('button')?.focus();
  }

  drawRuns() {
    const { runs, runsNext } = this;
    fillIfChanged(this.el.runs, [runs, runsNext], () => {
      if (!runs.length) return h('p', { class: 'muted' }, 'No runs yet.');
      return [
        table(RUN_HEADERS, runRows(runs, (run) => this.openRun(run, true)), 'runs-table', { caption: 'Runs of this twin, newest first' }),
        h('p', { class: 'muted small list-count' }, `${runs.length} run${runs.length === 1 ? '' : 's'} shown${runsNext ? '; older ones follow' : ''}.`),
        runsNext ? moreButton('Show older runs', () => this.moreRuns()) : null,
      ];
    });
  }

  async loadHistory() {
    const limit = Math.min(200, Math.max(PAGE, this.history.length));
    const page = await this.section(() => api.history(this.id, { limit }));
    if (!page) return;
    this.history = page.items;
    this.historyNext = page.next;
    this.drawHistory();
    if (this.twin) this.drawLastDeployed();
  }

  async moreHistory() {
    const page = await this.section(() => api.history(this.id, { limit: PAGE, before: this.historyNext }));
    if (!page) return;
    this.history = [...page.items, ...this.history];
    this.historyNext = page.next;
    this.drawHistory();
  }

  drawHistory() {
    const { history, historyNext } = this;
    fillIfChanged(this.el.history, [history, historyNext], () => [
      h('ol', { class: 'history' },
        [...history].reverse().map((entry) => h('li', { dataset: { entryId: entry.id } },
          h('span', { class: 'history-what' }, describeEntry(entry)),
          h('span', { class: 'history-meta muted' },
            timeAgo(entry.at), ` · ${entry.actor}`, entry.reason ? ` · ${entry.reason}` : ''),
          entry.run_id ? h('button', { type: 'button', class: 'button small subtle', dataset: { openRun: entry.run_id }, onclick: () => this.openRun({ job_id: entry.run_id }, true) }, 'View run') : null))),
      historyNext ? moreButton('Show older entries', () => this.moreHistory()) : null,
    ]);
  }

  drawConfig() {
    const { twin } = this;
    const files = Object.entries(twin.files ?? {});
    const variables = variablesTable(twin.variables, twin.sensitive_variables);
    const ids = twin.credential_ids ?? [];
    const named = ids.map((id) => this.credentialList?.find((c) => c.id === id) ?? { id });
    fillIfChanged(this.el.config, [twin.files, twin.variables, twin.sensitive_variables, named], () => [
      h('h3', {}, `Files (${files.length})`),
      files.map(([path, content]) =>
        h('details', { class: 'file' }, h('summary', {}, h('code', {}, path), h('span', { class: 'muted' }, ` ${content.length.toLocaleString()} bytes`)), h('pre', { class: 'code' }, content)),
      ),
      h('h3', {}, 'Variables'),
      variables,
      h('h3', {}, 'Credentials'),
      named.length
        ? h('ul', { class: 'plain-list twin-credentials' }, named.map((c) => h('li', { dataset: { credentialId: c.id } },
          c.name ? [h('a', { href: '#/credentials' }, c.name), h('span', { class: 'muted' }, ` ${c.provider} · ${(c.env_keys ?? []).join(', ')}`)] : h('code', {}, c.id),
          c.expired ? [' ', h('span', { class: 'badge tone-red' }, 'Expired')] : null)))
        : h('p', { class: 'muted' }, 'None: runs get only the gateway\'s own credentials file. Edit configuration attaches some.'),
    ]);
  }

  /** Names for the credentials the twin names (the API answers ids). */
  async loadCredentialNames() {
    if (!this.twin?.credential_ids?.length) return;
    const list = await this.section(() => api.credentials());
    if (!list) return;
    this.credentialList = list;
    if (this.twin) this.drawConfig();
  }

  async start(kind) {
    const twin = this.twin;
    if (!twin) return;
    if (kind === 'destroy' && !(await this.confirmDestroy(twin))) return;
    const button = { destroy: this.el.destroy, plan: this.el.plan }[kind] ?? this.el.deploy;
    button.disabled = true;
    const debug = this.el.debugRun.checked ? this.el.debugLevel.value : null;
    try {
      const started = await api.start(twin.id, kind, { debug });
      this.openRun({ job_id: started.job_id, kind, debug: Boolean(debug), log_level: debug }, false);
    } catch (error) {
      if (error instanceof ApiError && error.body.active_job_id) {
        this.openRun({ job_id: error.body.active_job_id }, false);
      } else {
        // Kept over the usual hint that the refresh below draws (an expired credential, 503).
        this.setHint(describe(error));
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
      debug: run.debug ? run.log_level ?? 'DEBUG' : null,
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

  /** Refresh status: reconciles the twin with its stored state and, for a deployed twin,
   * starts a drift check whose progress and findings show in the Drift card. */
  async reconcile(button) {
    const twin = this.twin;
    if (!twin || this.busy) return;
    this.busy = true;
    const label = button.textContent;
    button.textContent = button === this.el.driftButton ? 'Checking…' : 'Refreshing…';
    button.setAttribute('aria-busy', 'true');
    this.drawButtons();
    this.setHint(twin.deployment_status === 'deployed' ? 'Checking for drift…' : 'Refreshing the status…');
    try {
      const report = await api.refresh(twin.id);
      const moved = report.changed
        ? `Status refreshed: ${report.changes.map(describeChange).join('; ')}.`
        : 'Status refreshed: it matches the stored state.';
      if (report.drift_job_id) {
        this.driftJob = { id: report.drift_job_id, label: '' };
        this.setHint(`${moved} Checking for drift…`);
        this.drawDrift();
        this.followDrift(twin.id, report.drift_job_id);
      } else {
        this.setHint(moved);
      }
    } catch (error) {
      this.setHint(describe(error));
    } finally {
      this.busy = false;
      button.textContent = label;
      button.removeAttribute('aria-busy');
    }
    await this.refresh({ full: true });
  }

  setHint(text) {
    this.el.hint.textContent = text;
    this.hintLocked = Boolean(text);
    clearTimeout(this.hintTimer);
    // The sentence stays until the next thing happens, then the usual hints come back.
    this.hintTimer = setTimeout(() => { this.hintLocked = false; }, 8000);
    announce(text);
  }

  /** Follows a drift check until it ends, then shows its findings. */
  async followDrift(twinId, jobId) {
    for (;;) {
      if (this.id !== twinId || this.driftJob?.id !== jobId) return;
      let run;
      try {
        run = await api.run(jobId);
      } catch (error) {
        if (!(error instanceof Unreachable)) {
          this.driftJob = null;
          this.ctx.report(error, { quiet: true });
          return;
        }
      }
      if (run && ['completed', 'failed', 'cancelled'].includes(run.status)) break;
      if (run && this.driftJob) {
        this.driftJob.label = run.stage_label ?? '';
        forget(this.el.drift);
        this.drawDrift();
      }
      await new Promise((resolve) => setTimeout(resolve, DRIFT_POLL_MS));
    }
    if (this.id !== twinId) return;
    this.driftJob = null;
    await this.refresh({ full: true });
    const drift = this.infra?.drift;
    const text = drift?.job_id === jobId
      ? drift.drifted_count ? `Drift check done: ${drift.drifted_count} resource${drift.drifted_count === 1 ? '' : 's'} drifted.` : 'Drift check done: no drift.'
      : 'The drift check ended; see its log.';
    this.setHint(text);
    this.drawButtons();
  }

  async keepResources() {
    const twin = this.twin;
    if (!twin) return;
    this.el.keep.disabled = true;
    try {
      await api.setStatus(twin.id, 'deployed', 'kept the resources after a failed destroy');
      this.setHint('The resources are kept: the twin is deployed again.');
    } catch (error) {
      this.setHint(describe(error));
    }
    await this.refresh({ full: true });
    this.el.deploy.focus();
  }

  async repair() {
    const twin = this.twin;
    if (!twin) return;
    const dialog = document.getElementById('status-dialog');
    const select = $('#status-to', dialog);
    const reason = $('#status-reason', dialog);
    const error = $('#status-error', dialog);
    const form = $('form', dialog);
    const targets = ALLOWED_MOVES[twin.deployment_status] ?? [];
    fill(select, targets.map((status) => h('option', { value: status }, status.replace('_', ' '))));
    reason.value = '';
    error.hidden = true;
    const onSubmit = async (event) => {
      event.preventDefault();
      if (!reason.value.trim()) {
        error.textContent = 'Say why, for the history.';
        error.hidden = false;
        reason.focus();
        return;
      }
      try {
        await api.setStatus(twin.id, select.value, reason.value.trim());
        dialog.close('moved');
      } catch (failure) {
        error.textContent = describe(failure);
        error.hidden = false;
      }
    };
    const onCancel = () => dialog.close('cancel');
    form.addEventListener('submit', onSubmit);
    $('#status-cancel', dialog).addEventListener('click', onCancel);
    const answer = showDialog(dialog);
    select.focus();
    const result = await answer;
    form.removeEventListener('submit', onSubmit);
    $('#status-cancel', dialog).removeEventListener('click', onCancel);
    this.el.repair.focus();
    if (result === 'moved') {
      this.setHint(`Status moved to ${select.value.replace('_', ' ')}.`);
      await this.refresh({ full: true });
    }
  }

  async remove() {
    const twin = this.twin;
    if (!twin) return;
    const dialog = document.getElementById('delete-dialog');
    fill($('#delete-twin-name', dialog), twin.name);
    const answer = showDialog(dialog);
    $('#delete-cancel', dialog).focus();
    if ((await answer) !== 'delete') {
      this.el.remove.focus();
      return;
    }
    try {
      await api.deleteTwin(twin.id);
      this.setHint(`${twin.name} is deleted. Restore brings it back.`);
    } catch (error) {
      this.setHint(describe(error));
    }
    await this.refresh({ full: true });
    (this.el.deleted.hidden ? this.el.name : this.el.restore).focus();
  }

  async restore() {
    const twin = this.twin;
    if (!twin) return;
    this.el.restore.disabled = true;
    try {
      await api.restoreTwin(twin.id);
      this.setHint(`${twin.name} is restored.`);
    } catch (error) {
      this.setHint(describe(error));
    } finally {
      this.el.restore.disabled = false;
    }
    await this.refresh({ full: true });
    this.el.name.focus();
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
    const result = await answer;
    if (result !== 'destroy') this.el.destroy.focus();
    return result === 'destroy';
  }
}

/** The edit dialog: the twin's files (each editable, added, removed or uploaded) and its
 * variables, saved with PUT /twins/{id}. */
class ConfigEditor {
  constructor(dialog, hooks) {
    this.dialog = dialog;
    this.hooks = hooks;
    this.twin = null;
    this.form = $('form', dialog);
    this.filesBox = $('#edit-files', dialog);
    this.newFile = $('#edit-new-file', dialog);
    this.upload = $('#edit-upload', dialog);
    this.error = $('#edit-error', dialog);
    this.save = $('#edit-save', dialog);
    this.variables = new VariablesEditor($('#edit-variables', dialog), { idPrefix: 'edit-var' });
    this.credentials = new CredentialPicker($('#edit-credentials', dialog), { idPrefix: 'edit-cred' });
    $('#edit-cancel', dialog).addEventListener('click', () => dialog.close());
    // What was typed (a sensitive value among it) does not stay in the closed dialog.
    dialog.addEventListener('close', () => {
      this.filesBox.replaceChildren();
      this.variables.set({});
    });
    $('#edit-add-file', dialog).addEventListener('click', () => this.addFile());
    this.upload.addEventListener('change', async () => {
      const files = await readFiles(this.upload.files);
      for (const [path, content] of Object.entries(files)) this.putFile(path, content);
      this.upload.value = '';
    });
    this.form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.submit();
    });
  }

  open(twin) {
    if (!twin) return;
    this.twin = twin;
    this.filesBox.replaceChildren();
    for (const [path, content] of Object.entries(twin.files ?? {})) this.putFile(path, content);
    this.variables.set(twin.variables ?? {}, twin.sensitive_variables ?? []);
    this.loadCredentials(twin);
    this.newFile.value = '';
    this.setError(null);
    this.opener = document.activeElement;
    this.dialog.showModal();
    this.filesBox.querySelector('textarea')?.focus();
  }

  /** The owner's credentials as checkboxes; until they load, the twin's list is left alone. */
  async loadCredentials(twin) {
    this.credentials.message('Loading your credentials…');
    try {
      const list = await api.credentials();
      if (this.twin !== twin || !this.dialog.open) return;
      this.credentials.set(list.filter((c) => c.owner === twin.owner), twin.credential_ids ?? [], { provider: twin.provider });
    } catch (error) {
      if (this.twin !== twin) return;
      this.credentials.message(`The credentials could not be loaded (${describe(error)}); saving keeps the ones the twin names.`);
    }
  }

  putFile(path, content) {
    const existing = [...this.filesBox.children].find((row) => row.dataset.path === path);
    if (existing) {
      existing.querySelector('textarea').value = content;
      return existing;
    }
    const id = `edit-file-${this.filesBox.children.length}-${Date.now()}`;
    const row = h(
      'div',
      { class: 'file-edit', dataset: { path } },
      h('div', { class: 'file-edit-head' },
        h('label', { for: id }, h('code', {}, path)),
        h('button', { type: 'button', class: 'button small subtle', 'aria-label': `Remove ${path}`, onclick: () => { row.remove(); this.newFile.focus(); } }, 'Remove')),
      h('textarea', { id, rows: Math.min(16, Math.max(4, content.split('\n').length + 1)), spellcheck: 'false', class: 'file-content' }),
    );
    row.querySelector('textarea').value = content;
    this.filesBox.append(row);
    return row;
  }

  addFile() {
    const path = this.newFile.value.trim();
    if (!path) {
      this.setError('Give the new file a name, like extra.tf.');
      this.newFile.focus();
      return;
    }
    const row = this.putFile(path, '');
    this.newFile.value = '';
    this.setError(null);
    row.querySelector('textarea').focus();
  }

  setError(text) {
    this.error.hidden = !text;
    this.error.textContent = text ?? '';
  }

  async submit() {
    const files = {};
    for (const row of this.filesBox.children) files[row.dataset.path] = row.querySelector('textarea').value;
    if (!Object.keys(files).some((path) => path.endsWith('.tf') || path.endsWith('.tf.json'))) {
      this.setError('Keep at least one .tf (or .tf.json) file.');
      return;
    }
    let variables;
    try {
      variables = this.variables.read();
    } catch (error) {
      this.setError(error.message);
      error.field?.focus();
      return;
    }
    this.save.disabled = true;
    try {
      const body = { files, variables };
      const credentialIds = this.credentials.read();
      if (credentialIds) body.credential_ids = credentialIds;
      const twin = await api.updateTwin(this.twin.id, body);
      this.dialog.close();
      this.hooks.saved(twin);
    } catch (error) {
      this.setError(error instanceof ApiError ? `The gateway refused: ${error.message}` : describe(error));
    } finally {
      this.save.disabled = false;
    }
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
  return entry.action.replaceAll('_', ' ');
}

/** Why the gateway refused a restore, in words that say what to do. */
function restoreRefusal(error) {
  if (!(error instanceof ApiError)) return describe(error);
  if (error.code === 'twin_locked') return 'A run is working on this twin: the state cannot be restored until it ends. Try again then.';
  if (error.code === 'state_locked') return `The state is locked (${error.message}): a run or someone's terraform is using it. Try again once the lock is released; an admin can release a stuck one.`;
  if (error.code === 'twin_deleted') return 'The twin is deleted: restore the twin first.';
  if (error.status === 404) return 'That version is not there any more.';
  return `The gateway refused: ${error.message}`;
}

function describeChange(change) {
  if (typeof change === 'string') return change;
  return change?.reason ?? change?.message ?? JSON.stringify(change);
}

export { RUN_KINDS };
