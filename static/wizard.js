// The new-twin wizard (#/new): provider (from GET /providers) -> region -> size, with the
// monthly estimate following each pick -> name and variables -> review, where a plan preview
// of the configuration shows what the first deploy creates and what it adds a month -> create,
// or create and deploy into the progress modal. A folder of .tf files read in the browser is
// the alternative to a provider's template.
//
// To preview a plan the twin must exist: the review saves it as a draft. Going back and
// changing something replaces that draft; leaving the wizard without creating deletes it.

import { api, ApiError, describe } from './api.js';
import { $, announce, fill, h } from './dom.js';
import { CredentialPicker, VariablesEditor, isMarked, readFolder } from './forms.js';
import { changeList, costBars, deltaText, hiddenValue, money, subtract } from './twin-panels.js';

const POLL_MS = 600;

export class Wizard {
  /** ctx: report(error), navigate(hash), runModal, existingNames() -> Promise<Set>. */
  constructor(root, ctx) {
    this.root = root;
    this.ctx = ctx;
    this.el = {
      steps: $('#wizard-steps', root),
      step: $('#wizard-step', root),
      actions: $('#wizard-actions', root),
      error: $('#wizard-error', root),
      form: $('#wizard-form', root),
      facts: $('#wizard-facts', root),
      estimate: $('#wizard-estimate', root),
      estimateNote: $('#wizard-estimate-note', root),
    };
    this.el.form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.next();
    });
    this.providers = null;
    this.reset();
  }

  reset() {
    this.choice = { provider: null, source: 'template', region: null, size: null, name: '', variables: {}, credentialIds: [], files: {}, skipped: [] };
    this.index = 0;
    this.draft = null;
    this.preview = null;
    this.variablesEditor = null;
    this.credentialPicker = null;
  }

  async show() {
    this.visible = true;
    await this.discardDraft();
    this.reset();
    this.render();
    this.loadCredentials();
    if (!this.providers) await this.loadProviders();
  }

  /** The caller's own credentials, for the details step (a twin names its owner's only). */
  async loadCredentials() {
    this.credentials = null;
    this.credentialsError = null;
    try {
      const owner = this.ctx.who?.()?.owner;
      this.credentials = (await api.credentials()).filter((c) => !owner || c.owner === owner);
    } catch (error) {
      this.credentialsError = describe(error);
    }
    if (this.visible && this.stepKey === 'details') this.fillCredentials();
  }

  fillCredentials() {
    const picker = this.credentialPicker;
    if (!picker) return;
    if (this.credentials) picker.set(this.credentials, this.choice.credentialIds, { provider: this.choice.provider });
    else if (this.credentialsError) picker.message(`Your credentials could not be loaded: ${this.credentialsError}`);
  }

  hide() {
    this.visible = false;
    // Left without creating: the draft made for the preview goes.
    this.discardDraft();
  }

  refresh() {}

  async loadProviders() {
    try {
      this.providers = await api.providers();
    } catch (error) {
      this.setError(`The providers could not be loaded: ${describe(error)}`);
      return;
    }
    if (this.visible) this.render();
  }

  get provider() {
    return this.providers?.find((p) => p.id === this.choice.provider) ?? null;
  }

  get steps() {
    return this.choice.source === 'folder'
      ? [['provider', 'Provider'], ['files', 'Files'], ['details', 'Name and variables'], ['review', 'Review']]
      : [['provider', 'Provider'], ['region', 'Region'], ['size', 'Size'], ['details', 'Name and variables'], ['review', 'Review']];
  }

  get stepKey() {
    return this.steps[this.index][0];
  }

  setError(text) {
    this.el.error.hidden = !text;
    this.el.error.textContent = text ?? '';
  }

  render({ focus = false } = {}) {
    this.setError(null);
    const steps = this.steps;
    fill(
      this.el.steps,
      steps.map(([key, label], index) =>
        h('li', {
          class: `wizard-step-item${index === this.index ? ' is-current' : ''}${index < this.index ? ' is-done' : ''}`,
          dataset: { step: key },
          'aria-current': index === this.index ? 'step' : null,
        }, h('span', { class: 'step-number', 'aria-hidden': 'true' }, index + 1), ' ', label)),
    );
    this.root.dataset.step = this.stepKey;
    const draw = {
      provider: () => this.drawProvider(),
      region: () => this.drawRegion(),
      size: () => this.drawSize(),
      files: () => this.drawFiles(),
      details: () => this.drawDetails(),
      review: () => this.drawReview(),
    }[this.stepKey];
    fill(this.el.step, draw());
    this.drawActions();
    this.drawSummary();
    if (focus) $('h2', this.el.step)?.focus();
  }

  drawActions() {
    const key = this.stepKey;
    const back = this.index > 0
      ? h('button', { type: 'button', class: 'button', onclick: () => this.back() }, 'Back')
      : h('a', { class: 'button', href: '#/' }, 'Cancel');
    if (key === 'review') {
      const ready = this.preview?.state === 'done' || this.preview?.state === 'failed';
      fill(
        this.el.actions,
        back,
        h('button', { type: 'button', class: 'button', id: 'wizard-create', disabled: !this.draft, onclick: () => this.finish(false) }, 'Create twin'),
        h('button', { type: 'button', class: 'button primary', id: 'wizard-deploy', disabled: !this.draft || !ready, onclick: () => this.finish(true) }, 'Create and deploy'),
      );
    } else {
      fill(this.el.actions, back, h('button', { type: 'submit', class: 'button primary', id: 'wizard-next' }, 'Next'));
    }
  }

  /** The running estimate beside every step. */
  drawSummary() {
    const { choice } = this;
    const provider = this.provider;
    const region = provider?.regions.find((r) => r.id === choice.region);
    const size = provider?.sizes.find((s) => s.id === choice.size);
    const facts = [
      ['Provider', provider?.name],
      ...(choice.source === 'folder'
        ? [['Configuration', `${Object.keys(choice.files).length} files from a folder`]]
        : [['Region', region?.name], ['Size', size ? `${size.name} (${size.nodes} node${size.nodes === 1 ? '' : 's'})` : null]]),
      ['Name', choice.name || null],
      ...(choice.credentialIds.length ? [['Credentials', this.credentialNames().join(', ')]] : []),
    ];
    fill(this.el.facts, facts.map(([label, value]) => h('div', {}, h('dt', {}, label), h('dd', {}, value ?? h('span', { class: 'muted' }, '—')))));
    let estimate = '—';
    let note = 'Pick a provider to see what a twin costs.';
    let amount = '';
    const plan = this.preview?.cost;
    if (plan && Number.isFinite(plan.monthly_total)) {
      estimate = `${money(plan.monthly_total, plan.currency)} a month`;
      amount = String(plan.monthly_total);
      note = 'From the plan preview, priced with the gateway\'s price book: list prices, not a bill.';
    } else if (size) {
      estimate = `${money(size.monthlyCost)} a month`;
      amount = String(size.monthlyCost);
      note = `Indicative price of the ${size.id} size in the provider catalog; the review prices the plan itself.`;
    } else if (provider && choice.source === 'template') {
      const costs = provider.sizes.map((s) => s.monthlyCost);
      const low = Math.min(...costs);
      const high = Math.max(...costs);
      estimate = low === high ? `${money(low)} a month` : `${money(low)} – ${money(high)} a month`;
      amount = low === high ? String(low) : `${low}-${high}`;
      note = 'Depends on the size you pick next.';
    } else if (provider) {
      note = 'Your own files: the review prices their plan.';
    }
    this.el.estimate.textContent = estimate;
    this.el.estimate.dataset.amount = amount;
    this.el.estimateNote.textContent = note;
  }

  drawProvider() {
    if (!this.providers) return [h('h2', { tabindex: -1 }, 'Choose a provider'), h('p', { class: 'muted' }, 'Loading the providers…')];
    const source = this.choice.source;
    return [
      h('h2', { tabindex: -1 }, 'Choose a provider'),
      h('fieldset', { class: 'cards' },
        h('legend', { class: 'sr-only' }, 'Provider'),
        this.providers.map((provider) => {
          const costs = provider.sizes.map((s) => s.monthlyCost);
          const id = `wizard-provider-${provider.id}`;
          return h('label', { class: 'choice-card', for: id, dataset: { provider: provider.id } },
            h('input', { type: 'radio', name: 'provider', id, value: provider.id, checked: this.choice.provider === provider.id,
              onchange: () => this.pick({ provider: provider.id, region: provider.regions[0]?.id ?? null, size: null }) }),
            h('span', { class: 'choice-title' }, provider.name),
            h('span', { class: 'choice-line muted' }, `${provider.regions.length} region${provider.regions.length === 1 ? '' : 's'}: ${provider.regions.map((r) => r.name).join(', ')}`),
            h('span', { class: 'choice-line' }, provider.sizes.map((size) => `${size.name.split(':')[0]} ${size.nodes} node${size.nodes === 1 ? '' : 's'} ${money(size.monthlyCost)}`).join(' · ')),
            h('span', { class: 'choice-line muted' }, `From ${money(Math.min(...costs))} a month`));
        })),
      h('fieldset', { class: 'source-choice' },
        h('legend', {}, 'Configuration'),
        radio('source', 'template', 'The provider\'s template', source === 'template', () => this.pick({ source: 'template' }),
          'A ready-made digital twin for this provider, placed in the region and size you pick.'),
        radio('source', 'folder', 'A folder of my own .tf files', source === 'folder', () => this.pick({ source: 'folder' }),
          'Read in your browser and sent with the twin; nothing is uploaded until you create it.')),
    ];
  }

  drawRegion() {
    const provider = this.provider;
    return [
      h('h2', { tabindex: -1 }, `Where should it run?`),
      h('fieldset', { class: 'options' },
        h('legend', {}, `Regions of ${provider.name}`),
        provider.regions.map((region) => radio('region', region.id, region.name, this.choice.region === region.id,
          () => this.pick({ region: region.id }), region.id))),
    ];
  }

  drawSize() {
    const provider = this.provider;
    return [
      h('h2', { tabindex: -1 }, 'How big?'),
      h('fieldset', { class: 'cards' },
        h('legend', {}, 'Sizes, with their indicative monthly cost'),
        provider.sizes.map((size) => {
          const id = `wizard-size-${size.id}`;
          return h('label', { class: 'choice-card', for: id, dataset: { size: size.id } },
            h('input', { type: 'radio', name: 'size', id, value: size.id, checked: this.choice.size === size.id, onchange: () => this.pick({ size: size.id }) }),
            h('span', { class: 'choice-title' }, size.name),
            h('span', { class: 'choice-line muted' }, `${size.nodes} node${size.nodes === 1 ? '' : 's'}`),
            h('span', { class: 'choice-price' }, `${money(size.monthlyCost)} a month`));
        })),
    ];
  }

  drawFiles() {
    const files = Object.entries(this.choice.files);
    const input = h('input', { id: 'wizard-folder', type: 'file', webkitdirectory: true, directory: true, multiple: true });
    input.addEventListener('change', async () => {
      const { files: read, skipped } = await readFolder(input.files);
      this.choice.files = read;
      this.choice.skipped = skipped;
      this.drop();
      this.render();
      $('#wizard-folder', this.el.step)?.focus();
      announce(`${Object.keys(read).length} terraform files read.`);
    });
    return [
      h('h2', { tabindex: -1 }, 'Your configuration'),
      h('label', { for: 'wizard-folder' }, 'Folder of .tf files'),
      input,
      h('p', { class: 'muted small' }, 'Every .tf and .tf.json file in the folder and its subfolders, keeping their paths; hidden files and folders (like .terraform) are left out.'),
      h('ul', { class: 'file-list', id: 'wizard-file-list', 'aria-label': 'Files of the new twin' },
        files.length
          ? files.map(([path, content]) => h('li', {}, h('code', {}, path), h('span', { class: 'muted' }, ` ${content.length.toLocaleString()} bytes`)))
          : h('li', { class: 'muted' }, 'No folder chosen yet.')),
      this.choice.skipped.length ? h('p', { class: 'muted small' }, `Left out: ${this.choice.skipped.join(', ')}`) : null,
    ];
  }

  drawDetails() {
    const container = h('div', { id: 'wizard-variables' });
    this.variablesEditor = new VariablesEditor(container, { idPrefix: 'wizard-var' });
    this.variablesEditor.set(this.choice.variables);
    const name = h('input', { id: 'wizard-name', maxlength: 100, autocomplete: 'off', required: true, value: this.choice.name });
    name.addEventListener('input', () => {
      this.choice.name = name.value.trim();
      this.drawSummary();
    });
    const credentials = h('div', { id: 'wizard-credentials' });
    this.credentialPicker = new CredentialPicker(credentials, { idPrefix: 'wizard-cred' });
    this.fillCredentials();
    return [
      h('h2', { tabindex: -1 }, 'Name and variables'),
      h('label', { for: 'wizard-name' }, 'Name'),
      name,
      h('p', { class: 'muted small' }, 'Up to 100 characters, unique among your twins.'),
      h('fieldset', {}, h('legend', {}, 'Variables (optional)'), container),
      h('fieldset', {}, h('legend', {}, 'Credentials (optional)'),
        h('p', { class: 'muted small' }, 'Cloud credentials the twin\'s runs get as environment variables.'),
        credentials),
    ];
  }

  drawReview() {
    const preview = this.preview;
    const parts = [h('h2', { tabindex: -1 }, 'Review')];
    parts.push(h('p', { class: 'muted small' }, 'To preview the plan, the twin is saved as a draft. Back or leaving the wizard deletes that draft; Create keeps it.'));
    const variables = Object.entries(this.choice.variables);
    parts.push(h('h3', {}, 'Variables'), variables.length
      ? h('ul', { class: 'plain-list' }, variables.map(([k, v]) => h('li', { dataset: { variable: k } }, h('code', {}, k), ' = ',
        isMarked(v) && v.sensitive ? hiddenValue('sensitive, hidden') : h('code', {}, JSON.stringify(isMarked(v) ? v.value : v)))))
      : h('p', { class: 'muted' }, 'None: the configuration\'s defaults apply.'));
    const credentials = this.credentialNames();
    parts.push(h('h3', {}, 'Credentials'), credentials.length
      ? h('ul', { class: 'plain-list', id: 'wizard-review-credentials' }, credentials.map((name) => h('li', {}, name)))
      : h('p', { class: 'muted' }, 'None: runs get only the gateway\'s own credentials file.'));
    parts.push(h('h3', {}, 'Plan preview'));
    const box = h('div', { id: 'wizard-plan', class: 'plan-preview', dataset: { state: preview?.state ?? 'starting' }, 'aria-live': 'polite' });
    if (!preview || preview.state === 'running') {
      fill(box, h('p', {}, h('span', { class: 'spinner', 'aria-hidden': 'true' }), ` ${preview?.label || 'Saving the draft and planning…'}`));
    } else if (preview.state === 'refused') {
      fill(box, h('p', { class: 'error-text' }, preview.error));
    } else if (preview.state === 'failed') {
      fill(box,
        h('p', { class: 'warn-text' }, 'The plan preview failed: ', preview.error ?? 'see its log.'),
        h('p', { class: 'muted small' }, 'You can still create the twin and fix its configuration from its page.'),
        this.logButton());
    } else {
      const summary = preview.summary;
      const cost = preview.cost;
      const costs = preview.costs;
      fill(box,
        summary ? h('p', { class: 'plan-summary' }, `${summary.add ?? 0} to add, ${summary.change ?? 0} to change, ${summary.remove ?? 0} to destroy.`) : null,
        changeList(preview.changes, 'No changes.'),
        cost ? h('p', { class: 'plan-cost', dataset: { total: cost.monthly_total } },
          `This adds ${deltaText(cost.delta, cost.currency)}: ${money(cost.monthly_total, cost.currency)} a month once deployed.`) : null,
        costs?.source === 'plan' ? costBars({ now: null, after: costs.costs, currency: costs.costs?.currency }) : null,
        costs?.unpriced?.length ? h('p', { class: 'muted small' }, `${costs.unpriced.length} resources have no price in the book and add nothing.`) : null,
        this.logButton());
    }
    parts.push(box);
    return parts;
  }

  /** The names of the credentials chosen, in order. */
  credentialNames() {
    return this.choice.credentialIds.map((id) => this.credentials?.find((c) => c.id === id)?.name ?? id);
  }

  logButton() {
    const preview = this.preview;
    if (!preview?.jobId || !this.draft) return null;
    return h('button', { type: 'button', class: 'button small', dataset: { openRun: preview.jobId }, onclick: () => this.ctx.runModal.open({ jobId: preview.jobId, twinId: this.draft.id, twinName: this.choice.name, kind: 'plan', historical: true }) }, 'View the plan\'s log');
  }

  /** A choice changed: anything made from the old one (the draft, its preview) is dropped. */
  pick(change) {
    const before = this.stepKey;
    Object.assign(this.choice, change);
    if (change.source === 'folder') {
      this.choice.region = null;
      this.choice.size = null;
    }
    this.drop();
    // Redraw the step and keep focus on the control that changed.
    const active = document.activeElement?.id;
    this.render();
    if (before === this.stepKey && active) document.getElementById(active)?.focus();
  }

  drop() {
    this.preview = null;
  }

  back() {
    if (this.stepKey === 'details') this.readDetails(false);
    this.index = Math.max(0, this.index - 1);
    this.render({ focus: true });
  }

  /** Name and variables from the form; false (with the error shown) when they are wrong. */
  readDetails(strict = true) {
    const name = $('#wizard-name', this.el.step);
    if (name) this.choice.name = name.value.trim();
    const credentialIds = this.credentialPicker?.read();
    if (credentialIds) this.choice.credentialIds = credentialIds;
    try {
      if (this.variablesEditor) this.choice.variables = this.variablesEditor.read();
    } catch (error) {
      if (strict) {
        this.setError(error.message);
        error.field?.focus();
        return false;
      }
    }
    if (strict && !this.choice.name) {
      this.setError('Give the twin a name.');
      name?.focus();
      return false;
    }
    return true;
  }

  async next() {
    const key = this.stepKey;
    if (key === 'provider' && !this.choice.provider) {
      this.setError('Choose a provider.');
      $('input[name="provider"]', this.el.step)?.focus();
      return;
    }
    if (key === 'region' && !this.choice.region) {
      this.setError('Choose a region.');
      return;
    }
    if (key === 'size' && !this.choice.size) {
      this.setError('Choose a size.');
      $('input[name="size"]', this.el.step)?.focus();
      return;
    }
    if (key === 'files' && !Object.keys(this.choice.files).length) {
      this.setError('Choose a folder that holds at least one .tf file.');
      $('#wizard-folder', this.el.step)?.focus();
      return;
    }
    if (key === 'provider' && !this.choice.name) {
      this.choice.name = await this.freeName(this.choice.provider === 'sandbox' ? 'demo' : `${this.choice.provider}-twin`);
    }
    if (key === 'details' && !this.readDetails()) return;
    this.index += 1;
    this.render({ focus: true });
    if (this.stepKey === 'review') this.startPreview();
  }

  async freeName(base) {
    let taken = new Set();
    try {
      taken = new Set((await api.twins()).map((twin) => twin.name));
    } catch {
      // The gateway says so at create time if the name is taken.
    }
    if (!taken.has(base)) return base;
    let n = 2;
    while (taken.has(`${base}-${n}`)) n += 1;
    return `${base}-${n}`;
  }

  body() {
    const { choice } = this;
    const body = { name: choice.name, provider: choice.provider, variables: { ...choice.variables } };
    if (choice.credentialIds.length) body.credential_ids = [...choice.credentialIds];
    if (choice.source === 'folder') body.files = choice.files;
    else {
      body.region = choice.region;
      body.size = choice.size;
      // A region or size given as a variable too must agree with the fields.
      delete body.variables.region;
      delete body.variables.size;
    }
    return body;
  }

  async discardDraft() {
    const draft = this.draft;
    this.draft = null;
    if (!draft || draft.kept) return;
    try {
      if (draft.planJob) await api.cancelRun(draft.planJob).catch(() => {});
      await api.deleteTwin(draft.id);
    } catch (error) {
      this.ctx.report(error, { quiet: true });
    }
  }

  /** Saves the draft (again, if the choices changed) and plans it. */
  async startPreview() {
    const body = this.body();
    const key = JSON.stringify(body);
    if (this.draft?.key === key && this.preview && this.preview.state !== 'refused') {
      this.render();
      return;
    }
    await this.discardDraft();
    const attempt = {};
    this.attempt = attempt;
    this.preview = { state: 'running', label: 'Saving the draft…' };
    this.render();
    let twin;
    try {
      twin = await api.createTwin(body);
    } catch (error) {
      if (this.attempt !== attempt) return;
      this.preview = { state: 'refused', error: error instanceof ApiError ? `The gateway refused: ${error.message}` : describe(error) };
      this.render();
      if (error instanceof ApiError && error.code === 'name_taken') {
        this.setError(`${error.message} Go back and pick another name.`);
      }
      return;
    }
    this.draft = { id: twin.id, key, kept: false, planJob: null };
    if (this.attempt !== attempt || !this.visible) {
      this.discardDraft();
      return;
    }
    let jobId;
    try {
      jobId = (await api.start(twin.id, 'plan')).job_id;
    } catch (error) {
      this.preview = { state: 'failed', error: describe(error) };
      this.render();
      return;
    }
    this.draft.planJob = jobId;
    this.preview = { state: 'running', label: 'Planning…', jobId };
    this.render();
    await this.followPlan(attempt, twin.id, jobId);
  }

  async followPlan(attempt, twinId, jobId) {
    let run;
    for (;;) {
      if (this.attempt !== attempt || !this.visible) return;
      try {
        run = await api.run(jobId);
      } catch (error) {
        this.ctx.report(error, { quiet: true });
        run = null;
      }
      if (run && ['completed', 'failed', 'cancelled'].includes(run.status)) break;
      if (run?.stage_label && this.preview?.jobId === jobId) {
        this.preview.label = `Planning: ${run.stage_label}`;
        const box = $('#wizard-plan', this.el.step);
        if (box) fill(box, h('p', {}, h('span', { class: 'spinner', 'aria-hidden': 'true' }), ` ${this.preview.label}`));
      }
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
    if (this.draft) this.draft.planJob = null;
    if (run.status !== 'completed') {
      this.preview = { state: 'failed', error: run.error, jobId };
    } else {
      let costs = null;
      try {
        costs = await api.costs(twinId);
      } catch (error) {
        this.ctx.report(error, { quiet: true });
      }
      this.preview = {
        state: 'done',
        jobId,
        changes: run.result?.changes ?? [],
        summary: run.result?.summary ?? null,
        cost: run.result?.cost ?? null,
        costs,
      };
    }
    if (this.attempt !== attempt || !this.visible) return;
    const focused = document.activeElement?.id;
    this.render();
    if (focused) document.getElementById(focused)?.focus();
    announce(this.preview.state === 'done' ? 'The plan preview is ready.' : 'The plan preview failed.');
  }

  async finish(deploy) {
    const draft = this.draft;
    if (!draft) return;
    draft.kept = true;
    const name = this.choice.name;
    let jobId = null;
    if (deploy) {
      try {
        jobId = (await api.start(draft.id, 'deploy')).job_id;
      } catch (error) {
        if (error instanceof ApiError && error.body.active_job_id) jobId = error.body.active_job_id;
        else {
          draft.kept = false;
          this.setError(describe(error));
          return;
        }
      }
    }
    this.draft = null;
    announce(`Twin ${name} created.`);
    this.ctx.navigate(`#/twins/${encodeURIComponent(draft.id)}`);
    if (jobId) this.ctx.runModal.open({ jobId, twinId: draft.id, twinName: name, kind: 'deploy' });
  }
}

function radio(name, value, label, checked, onchange, hint) {
  const id = `wizard-${name}-${value}`;
  return h('label', { class: 'choice-row', for: id },
    h('input', { type: 'radio', name, id, value, checked, onchange }),
    h('span', {}, h('span', { class: 'choice-title' }, label), hint ? h('span', { class: 'choice-line muted' }, ` ${hint}`) : null));
}

export { subtract };
