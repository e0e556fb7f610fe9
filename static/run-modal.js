// The progress modal: one run's stages, progress bar, live log and outcome.
//
// Attaching to a run first reads its stored events page by page (the backlog), then opens an
// EventSource from after the last one, so a reload mid-run shows the whole log and continues
// with no gap; events are applied strictly in id order and an id seen before is dropped, so
// nothing shows twice either. The run being watched is remembered in localStorage, so closing
// and reopening the page brings the modal back on the same run.
//
// A debug run (terraform with TF_LOG) is tagged with its level beside the title; its log's
// debug lines (stderr) are drawn by level and can be hidden to read terraform's own output.
// Retry, and "Deploy this plan" after a previewed plan, keep the run's debug level.
//
// A stream that drops without `done` is the connection, not the run: the modal says the
// gateway is out of reach and keeps reconnecting; only `done` ends a run, and its `error` is
// shown as the gateway wrote it.

import { api, ApiError, Unreachable, describe } from './api.js';
import { $, STATUSES, announce, fill, h, statusBadge } from './dom.js';
import { LogView } from './log-view.js';
import { changeList, debugTag, money } from './twin-panels.js';

const WATCHED = 'terrastream.watched-run';
const EVENT_TYPES = ['stage', 'log', 'progress', 'status', 'warning', 'queue', 'done'];
const RECONNECT_MS = 2000;
export const CONNECTION_LOST = 'Connection to the gateway lost — reconnecting…';

const STAGES = {
  deploy: [
    ['initializing', 'Initializing'],
    ['planning', 'Planning'],
    ['applying', 'Applying'],
    ['complete', 'Complete'],
  ],
  destroy: [
    ['initializing', 'Initializing'],
    ['destroying', 'Destroying resources'],
    ['cleanup', 'SDK cleanup'],
    ['complete', 'Complete'],
  ],
  plan: [
    ['initializing', 'Initializing'],
    ['planning', 'Planning'],
    ['complete', 'Complete'],
  ],
  drift: [
    ['initializing', 'Initializing'],
    ['checking_drift', 'Checking for drift'],
    ['complete', 'Complete'],
  ],
};

/** [title while it runs, the run's noun] */
const VERB = {
  deploy: ['Deploying', 'Deploy'],
  destroy: ['Destroying', 'Destroy'],
  plan: ['Planning', 'Plan'],
  drift: ['Checking for drift:', 'Drift check'],
};

/** Stages during which resources are being changed, so progress events can come. */
const COUNTED = new Set(['applying', 'destroying']);

const knownKind = (kind) => (kind in STAGES ? kind : 'deploy');

export class RunModal {
  /**
   * hooks: onStatus(twinId, status) when the twin's status moves, onFinished(twinId) after
   * `done`, onClosed(twinId) when the reader closes the modal, focusFallback() for where focus
   * goes when the button that opened the modal is gone or disabled, report(error).
   */
  constructor(dialog, hooks) {
    this.dialog = dialog;
    this.hooks = hooks;
    this.session = null;
    this.opener = null;
    this.el = {
      title: $('#run-title', dialog),
      badge: $('#run-badge', dialog),
      debug: $('#run-debug', dialog),
      logTools: $('#run-log-tools', dialog),
      showDebug: $('#run-show-debug', dialog),
      debugCount: $('#run-debug-count', dialog),
      stages: $('#run-stages', dialog),
      progress: $('#run-progress', dialog),
      progressText: $('#run-progress-text', dialog),
      notice: $('#run-notice', dialog),
      outcome: $('#run-outcome', dialog),
      findings: $('#run-findings', dialog),
      cancel: $('#run-cancel', dialog),
      retry: $('#run-retry', dialog),
      close: $('#run-close', dialog),
    };
    this.log = new LogView($('#run-log', dialog), $('#run-jump', dialog));
    this.log.onDebugCount = () => this.drawLogTools();
    this.el.showDebug.addEventListener('change', () => {
      this.log.setHideDebug(!this.el.showDebug.checked);
      this.drawLogTools();
      announce(this.el.showDebug.checked ? 'terraform\'s debug lines are shown.' : 'terraform\'s debug lines are hidden.');
    });
    this.el.close.addEventListener('click', () => dialog.close());
    this.el.cancel.addEventListener('click', () => this.cancelRun());
    this.el.retry.addEventListener('click', () => this.retry());
    dialog.addEventListener('close', () => {
      const session = this.session;
      this.returnFocus(session?.jobId);
      // Detached first on purpose (a lost session): keep the run to come back to it.
      if (!session) return;
      this.detach();
      localStorage.removeItem(WATCHED);
      this.hooks.onClosed(session.twinId);
    });
  }

  get isOpen() {
    return this.dialog.open;
  }

  /** The run shown, if any. */
  get jobId() {
    return this.session?.jobId ?? null;
  }

  /**
   * Shows a run. `historical` (a past run opened from a list) offers no Retry and is not
   * remembered across reloads. `debug` is the log level of a debug run, when the opener knows
   * it (the run's own answer says it either way).
   */
  open({ jobId, twinId, twinName, kind, historical = false, debug = null }) {
    if (this.session?.jobId === jobId && this.dialog.open) return;
    const active = document.activeElement;
    if (!this.dialog.open && active && active !== document.body && !this.dialog.contains(active)) {
      this.opener = active;
    }
    this.attach({ jobId, twinId, twinName, kind, historical, debug });
    if (!this.dialog.open) this.dialog.showModal();
    this.el.close.focus();
  }

  /** Focus goes back to the button that opened the modal if it still works, else to a
   * sensible place the page offers (the run's "View progress", the heading). */
  returnFocus(jobId) {
    const opener = this.opener;
    this.opener = null;
    const usable = (el) =>
      el?.isConnected && !el.disabled && !el.closest('[hidden]') && el.getClientRects().length > 0;
    // Else the page's own choice: a control that stays (lists are drawn again as runs move),
    // or the run's button in a list, or the heading.
    const target = usable(opener) ? opener : this.hooks.focusFallback?.(jobId) ?? null;
    if (target) target.focus();
  }

  /** After a reload: back to the run the reader was watching, if any. */
  resume() {
    let watched = null;
    try {
      watched = JSON.parse(localStorage.getItem(WATCHED) ?? 'null');
    } catch {
      localStorage.removeItem(WATCHED);
    }
    if (watched?.jobId) this.open(watched);
    return Boolean(watched?.jobId);
  }

  /** Stops listening; the run stays remembered unless the reader closes the modal. */
  detach() {
    const session = this.session;
    if (!session) return;
    session.stale = true;
    session.source?.close();
    clearTimeout(session.timer);
    this.session = null;
  }

  attach(info) {
    this.detach();
    const session = {
      ...info,
      kind: knownKind(info.kind),
      debug: info.debug ?? null,
      lastId: 0,
      done: null,
      source: null,
      timer: 0,
      stale: false,
      loaded: false,
      stage: null,
      counting: false,
      cancelAsked: false,
    };
    this.session = session;
    if (!info.historical) {
      localStorage.setItem(
        WATCHED,
        JSON.stringify({
          jobId: info.jobId,
          twinId: info.twinId,
          twinName: info.twinName,
          kind: session.kind,
          debug: session.debug,
        }),
      );
    }
    this.reset(session);
    this.load(session);
  }

  reset(session) {
    this.drawTitle(session);
    this.el.badge.replaceChildren();
    this.renderStages(session);
    this.setWaiting('Starting…');
    this.setNotice(null);
    this.el.outcome.hidden = true;
    this.el.outcome.replaceChildren();
    this.el.outcome.className = 'outcome';
    delete this.el.outcome.dataset.outcome;
    this.el.findings.hidden = true;
    this.el.findings.replaceChildren();
    this.el.cancel.hidden = false;
    this.el.cancel.disabled = false;
    this.el.retry.hidden = true;
    this.el.showDebug.checked = true;
    this.log.setHideDebug(false);
    this.log.clear('Loading the log…');
    this.drawDebug(session);
    this.dialog.dataset.jobId = session.jobId;
    this.dialog.dataset.kind = session.kind;
    this.dialog.dataset.state = 'running';
    delete this.dialog.dataset.connection;
  }

  /** The debug tag beside the title, and the log's tools when there are debug lines. */
  drawDebug(session) {
    const level = session.debug;
    this.el.debug.hidden = !level;
    fill(this.el.debug, level ? debugTag({ log_level: level }) : null);
    if (level) this.dialog.dataset.debug = level;
    else delete this.dialog.dataset.debug;
    this.drawLogTools();
  }

  drawLogTools() {
    const count = this.log.debugCount;
    const hidden = !this.el.showDebug.checked;
    // Offered for a debug run, and for any run whose stderr has terraform's log lines.
    this.el.logTools.hidden = !(this.session?.debug || count > 0);
    this.el.debugCount.textContent = count
      ? `${count.toLocaleString()} debug line${count === 1 ? '' : 's'}${hidden ? ' hidden' : ''}`
      : 'No debug lines yet';
  }

  drawTitle(session) {
    this.el.title.textContent = `${VERB[session.kind][0]} ${session.twinName ?? 'twin'}`;
  }

  async load(session) {
    try {
      const run = await api.run(session.jobId);
      if (session.stale) return;
      session.twinId = run.twin_id;
      session.debug = run.debug ? run.log_level ?? 'DEBUG' : null;
      this.drawDebug(session);
      if (knownKind(run.kind) !== session.kind) {
        session.kind = knownKind(run.kind);
        this.dialog.dataset.kind = session.kind;
        this.renderStages(session);
      }
      if (!session.twinName) {
        const twin = await api.twin(run.twin_id);
        if (session.stale) return;
        session.twinName = twin.name;
      }
      this.drawTitle(session);
      if (run.status === 'pending' && run.queue_position) this.showQueue(run.queue_position);
    } catch (error) {
      if (session.stale) return;
      if (error instanceof ApiError && error.status === 404) {
        localStorage.removeItem(WATCHED);
        this.showOutcome('failed', 'This run no longer exists.');
        this.el.cancel.hidden = true;
        this.log.clear('No log.');
        return;
      }
      this.retryLater(session, error);
      return;
    }
    session.loaded = true;
    this.log.clear();
    await this.catchUp(session);
  }

  /** Reads stored events after the last one seen, then follows live. */
  async catchUp(session) {
    try {
      for (;;) {
        const page = await api.logs(session.jobId, session.lastId);
        if (session.stale) return;
        for (const event of page.events) this.apply(session, event.id, event.event, event.data);
        if (!page.has_more || page.events.length === 0 || session.done) break;
      }
    } catch (error) {
      if (!session.stale) this.retryLater(session, error);
      return;
    }
    if (!session.done) this.subscribe(session);
  }

  subscribe(session) {
    const source = new EventSource(api.eventsUrl(session.jobId, session.lastId));
    session.source = source;
    for (const type of EVENT_TYPES) {
      source.addEventListener(type, (message) => {
        let data;
        try {
          data = JSON.parse(message.data);
        } catch {
          return;
        }
        this.apply(session, Number(message.lastEventId), type, data);
      });
    }
    source.addEventListener('open', () => {
      if (!session.stale) this.setConnectionLost(false);
    });
    source.addEventListener('error', () => {
      if (session.stale || session.done) return;
      // The stream ended or broke without `done`: the run goes on (or its end is stored);
      // only the connection is gone.
      this.setConnectionLost(true);
      if (source.readyState === EventSource.CLOSED) {
        // Refused (signed out, the gateway restarting): catch up through the API instead.
        source.close();
        session.source = null;
        session.timer = setTimeout(() => this.catchUp(session), RECONNECT_MS);
      }
    });
  }

  retryLater(session, error) {
    if (error instanceof Unreachable) this.setConnectionLost(true);
    else this.setNotice(`${describe(error)} Trying again…`);
    this.hooks.report(error, { quiet: true });
    // Once the run is known, only the events are read again: the log shown so far stays.
    session.timer = setTimeout(() => {
      if (session.stale) return;
      if (session.loaded) this.catchUp(session);
      else this.load(session);
    }, RECONNECT_MS * 2);
  }

  setConnectionLost(lost) {
    if (lost) {
      this.dialog.dataset.connection = 'lost';
      this.setNotice(CONNECTION_LOST);
    } else if (this.dialog.dataset.connection === 'lost') {
      delete this.dialog.dataset.connection;
      this.setNotice(null);
    }
  }

  /** One event, in id order; an id already applied is a duplicate and is ignored. */
  apply(session, id, type, data) {
    if (!Number.isFinite(id) || id <= session.lastId || session.done) return;
    session.lastId = id;
    if (this.dialog.dataset.connection === 'lost') this.setConnectionLost(false);
    switch (type) {
      case 'stage':
        this.setStage(session, data.stage, data.label);
        break;
      case 'log':
        this.log.append({ id, stream: data.stream === 'stderr' ? 'stderr' : 'stdout', text: data.line ?? '' });
        break;
      case 'progress':
        // A first "0 of N" comes with the plan, before anything changes: the bar stays
        // indeterminate until resources are being changed.
        if (COUNTED.has(session.stage) || Number(data.percent) > 0) {
          session.counting = true;
          this.setProgress(data);
        }
        break;
      case 'status':
        this.el.badge.replaceChildren(statusBadge(data.status));
        this.hooks.onStatus(data.twin_id ?? session.twinId, data.status);
        break;
      case 'warning':
        this.log.append({ id, stream: 'gateway', text: data.message ?? '' });
        break;
      case 'queue':
        this.showQueue(data.position);
        break;
      case 'done':
        this.finish(session, data);
        break;
      default:
        break;
    }
  }

  renderStages(session) {
    session.stageList = STAGES[session.kind].map(([key, label]) => ({ key, label }));
    this.drawStages(session);
  }

  setStage(session, key, label) {
    if (!session.stageList.some((stage) => stage.key === key)) {
      const clean = (label ?? key).replace(/\.\.\.$/, '');
      // Unknown stages (queued) go before the first, others just before Complete.
      const at = key === 'queued' ? 0 : session.stageList.length - 1;
      session.stageList.splice(at, 0, { key, label: clean });
    }
    session.stage = key;
    if (key !== 'queued') this.setNotice(null);
    this.drawStages(session);
    const text = label ?? key;
    // Until resources change there is nothing to count: the bar says "working" and the text
    // names the stage; the percentage comes with the first progress event.
    if (COUNTED.has(key)) {
      session.counting = false;
      this.setProgress({ percent: 0 });
      this.el.progressText.textContent = text;
    } else if (key !== 'complete') {
      this.setWaiting(text);
    }
    if (label) announce(label);
  }

  drawStages(session, outcome = null) {
    const current = session.stageList.findIndex((stage) => stage.key === session.stage);
    const items = session.stageList.map((stage, index) => {
      let state = 'pending';
      if (outcome === 'succeeded' || index < current) state = 'done';
      else if (index === current) state = outcome ? 'failed' : 'current';
      return h(
        'li',
        {
          class: `stage stage-${state}`,
          dataset: { stage: stage.key, state },
          'aria-current': state === 'current' ? 'step' : null,
        },
        h('span', { class: 'stage-mark', 'aria-hidden': 'true' }),
        h('span', { class: 'stage-label' }, stage.label),
        h('span', { class: 'sr-only' }, ` (${state})`),
      );
    });
    fill(this.el.stages, items);
  }

  /** An indeterminate bar (no value) with what is going on. */
  setWaiting(text) {
    this.el.progress.removeAttribute('value');
    this.el.progress.textContent = text;
    this.el.progressText.textContent = text;
    this.dialog.dataset.progress = 'indeterminate';
  }

  setProgress({ percent = 0, done, total }) {
    const value = Math.max(0, Math.min(100, Number(percent) || 0));
    this.el.progress.value = value;
    this.el.progress.textContent = `${value}%`;
    this.dialog.dataset.progress = 'determinate';
    const counts = Number.isFinite(total) && total > 0 ? ` · ${done} of ${total} changes` : '';
    this.el.progressText.textContent = `${value}%${counts}`;
  }

  showQueue(position) {
    this.setNotice(`Waiting for a free slot: ${position === 1 ? 'next in line' : `position ${position}`}.`);
  }

  setNotice(text) {
    this.el.notice.hidden = !text;
    this.el.notice.textContent = text ?? '';
  }

  finish(session, done) {
    session.done = done;
    session.source?.close();
    session.source = null;
    clearTimeout(session.timer);
    this.setNotice(null);
    delete this.dialog.dataset.connection;
    const [, noun] = VERB[session.kind];
    const name = session.twinName ?? 'the twin';
    const stageLabel = session.stageList.find((stage) => stage.key === session.stage)?.label;
    if (done.outcome === 'succeeded') {
      this.setProgress({ percent: 100 });
      this.el.progressText.textContent = 'Complete';
      session.stage = 'complete';
    } else {
      if (this.dialog.dataset.progress === 'indeterminate') this.setProgress({ percent: 0 });
      const where = stageLabel ? ` while ${stageLabel.toLowerCase()}` : '';
      this.el.progressText.textContent =
        done.outcome === 'cancelled' ? `Stopped${where}` : `Failed${where}`;
    }
    this.drawStages(session, done.outcome);
    this.el.title.textContent = `${noun} of ${name} ${done.outcome === 'succeeded' ? 'succeeded' : done.outcome === 'cancelled' ? 'stopped' : 'failed'}`;
    if (done.twin_status) this.el.badge.replaceChildren(statusBadge(done.twin_status));
    this.el.cancel.hidden = true;
    const status = STATUSES[done.twin_status]?.label;
    const next = status && session.kind !== 'plan' && session.kind !== 'drift'
      ? ` The twin's status is now ${status}.` : '';
    // The gateway's own words, as it wrote them.
    const error = typeof done.error === 'string' && done.error.trim() ? done.error.trim() : null;
    if (done.outcome === 'succeeded') {
      const what = {
        deploy: `${name} is deployed.`,
        destroy: `All resources of ${name} are gone.`,
        plan: 'Its changes are listed below.',
        drift: 'Its findings are listed below.',
      }[session.kind];
      this.showOutcome('succeeded', `${noun} succeeded. ${what}`);
    } else if (done.outcome === 'cancelled' && session.cancelAsked) {
      this.showOutcome('cancelled', `${noun} was cancelled, as you asked.${next}`, error);
    } else if (done.outcome === 'cancelled') {
      this.showOutcome('cancelled', `${noun} was stopped before it finished.${next}`, error ?? 'terraform was interrupted.');
    } else {
      this.showOutcome('failed', `${noun} failed.${next}`, error ?? 'See the log above for terraform\'s message.');
    }
    this.el.retry.hidden = done.outcome === 'succeeded' || session.historical;
    this.el.retry.textContent = session.kind === 'drift' ? 'Check again' : `Retry ${noun.toLowerCase()}`;
    delete this.el.retry.dataset.action;
    this.dialog.dataset.state = done.outcome;
    announce(this.el.outcome.textContent);
    if (session.kind === 'plan' || session.kind === 'drift') this.showFindings(session);
    this.hooks.onFinished(session.twinId);
  }

  /** What a plan preview will change (and cost) or what a drift check found. */
  async showFindings(session) {
    let run;
    try {
      run = await api.run(session.jobId);
    } catch (error) {
      if (!session.stale) this.hooks.report(error, { quiet: true });
      return;
    }
    if (session.stale || run.status !== 'completed') return;
    const result = run.result ?? {};
    const parts = [];
    if (session.kind === 'plan') {
      const changes = result.changes ?? [];
      const summary = result.summary;
      parts.push(h('h3', {}, 'Changes the next deploy makes'));
      if (summary) {
        parts.push(h('p', { class: 'plan-summary' },
          `${summary.add ?? 0} to add, ${summary.change ?? 0} to change, ${summary.remove ?? 0} to destroy.`));
      }
      parts.push(changeList(changes, 'No changes: the infrastructure matches the configuration.'));
      const cost = result.cost;
      if (cost && Number.isFinite(cost.monthly_total)) {
        const delta = cost.delta?.total ?? 0;
        const sign = delta > 0 ? '+' : delta < 0 ? '−' : '±';
        parts.push(h('p', { class: 'plan-cost', dataset: { total: cost.monthly_total, delta } },
          `Estimated cost after this plan: ${money(cost.monthly_total, cost.currency)} a month (${sign}${money(Math.abs(delta), cost.currency)}).`));
      }
      if (!session.historical && changes.length) {
        this.el.retry.hidden = false;
        this.el.retry.textContent = 'Deploy this plan';
        this.el.retry.dataset.action = 'deploy';
      }
    } else {
      const drifted = result.drifted ?? [];
      parts.push(h('h3', {}, drifted.length ? `${drifted.length} resource${drifted.length === 1 ? '' : 's'} drifted` : 'No drift'));
      parts.push(changeList(drifted, 'The infrastructure matches the stored state.'));
    }
    this.el.findings.hidden = false;
    fill(this.el.findings, parts);
  }

  showOutcome(outcome, text, detail = null) {
    this.el.outcome.hidden = false;
    this.el.outcome.className = `outcome outcome-${outcome}`;
    this.el.outcome.dataset.outcome = outcome;
    fill(
      this.el.outcome,
      h('span', { class: 'outcome-text' }, text),
      detail && h('span', { class: 'outcome-detail' }, ' ', detail),
    );
  }

  async cancelRun() {
    const session = this.session;
    if (!session || session.done) return;
    this.el.cancel.disabled = true;
    session.cancelAsked = true;
    try {
      await api.cancelRun(session.jobId);
      if (!session.stale && !session.done) {
        this.setNotice('Cancelling: terraform finishes what it is doing and saves its state first.');
      }
    } catch (error) {
      session.cancelAsked = false;
      this.el.cancel.disabled = false;
      if (!session.stale) this.setNotice(describe(error));
    }
  }

  async retry() {
    const session = this.session;
    if (!session) return;
    const kind = this.el.retry.dataset.action ?? session.kind;
    this.el.retry.disabled = true;
    try {
      let jobId;
      if (kind === 'drift') {
        jobId = (await api.refresh(session.twinId)).drift_job_id;
        if (!jobId) {
          this.setNotice('The twin is no longer deployed: there is nothing to check.');
          return;
        }
      } else {
        jobId = (await api.start(session.twinId, kind, { debug: session.debug })).job_id;
      }
      this.attach(again(session, jobId, kind));
      this.el.close.focus();
    } catch (error) {
      if (error instanceof ApiError && error.body.active_job_id) {
        this.attach(again(session, error.body.active_job_id, kind));
      } else {
        this.setNotice(describe(error));
      }
    } finally {
      this.el.retry.disabled = false;
    }
  }
}

/** The same twin, another run. */
function again(session, jobId, kind) {
  const { twinId, twinName } = session;
  return { jobId, twinId, twinName, kind, historical: false, debug: kind === 'drift' ? null : session.debug };
}
