// The progress modal: one run's stages, progress bar, live log and outcome.
//
// Attaching to a run first reads its stored events page by page (the backlog), then opens an
// EventSource from after the last one, so a reload mid-run shows the whole log and continues
// with no gap; events are applied strictly in id order and an id seen before is dropped, so
// nothing shows twice either. The run being watched is remembered in localStorage, so closing
// and reopening the page brings the modal back on the same run.

import { api, ApiError, describe } from './api.js';
import { $, STATUSES, announce, fill, h, statusBadge } from './dom.js';
import { LogView } from './log-view.js';

const WATCHED = 'terrastream.watched-run';
const EVENT_TYPES = ['stage', 'log', 'progress', 'status', 'warning', 'queue', 'done'];
const RECONNECT_MS = 2000;

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
};

const VERB = {
  deploy: ['Deploying', 'Deploy'],
  destroy: ['Destroying', 'Destroy'],
  plan: ['Planning', 'Plan'],
};

const knownKind = (kind) => (kind in STAGES ? kind : 'deploy');

export class RunModal {
  /**
   * hooks: onStatus(twinId, status) when the twin's status moves, onFinished(twinId) after
   * `done`, onClosed(twinId) when the reader closes the modal, report(error).
   */
  constructor(dialog, hooks) {
    this.dialog = dialog;
    this.hooks = hooks;
    this.session = null;
    this.el = {
      title: $('#run-title', dialog),
      badge: $('#run-badge', dialog),
      stages: $('#run-stages', dialog),
      progress: $('#run-progress', dialog),
      progressText: $('#run-progress-text', dialog),
      notice: $('#run-notice', dialog),
      outcome: $('#run-outcome', dialog),
      cancel: $('#run-cancel', dialog),
      retry: $('#run-retry', dialog),
      close: $('#run-close', dialog),
    };
    this.log = new LogView($('#run-log', dialog), $('#run-jump', dialog));
    this.el.close.addEventListener('click', () => dialog.close());
    this.el.cancel.addEventListener('click', () => this.cancelRun());
    this.el.retry.addEventListener('click', () => this.retry());
    dialog.addEventListener('close', () => {
      const session = this.session;
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
   * Shows a run. `historical` (a past run opened from the list) offers no Retry and is not
   * remembered across reloads.
   */
  open({ jobId, twinId, twinName, kind, historical = false }) {
    if (this.session?.jobId === jobId && this.dialog.open) return;
    this.attach({ jobId, twinId, twinName, kind, historical });
    if (!this.dialog.open) this.dialog.showModal();
    this.el.close.focus();
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
      lastId: 0,
      done: null,
      source: null,
      timer: 0,
      stale: false,
      loaded: false,
      stage: null,
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
        }),
      );
    }
    this.reset(session);
    this.load(session);
  }

  reset(session) {
    const [doing] = VERB[session.kind];
    this.el.title.textContent = `${doing} ${session.twinName ?? 'twin'}`;
    this.el.badge.replaceChildren();
    this.renderStages(session);
    this.setProgress({ percent: 0 });
    this.el.progressText.textContent = 'Starting…';
    this.setNotice(null);
    this.el.outcome.hidden = true;
    this.el.outcome.replaceChildren();
    this.el.outcome.className = 'outcome';
    this.el.cancel.hidden = false;
    this.el.cancel.disabled = false;
    this.el.retry.hidden = true;
    this.log.clear('Loading the log…');
    this.dialog.dataset.jobId = session.jobId;
    this.dialog.dataset.state = 'running';
  }

  async load(session) {
    try {
      const run = await api.run(session.jobId);
      if (session.stale) return;
      session.twinId = run.twin_id;
      if (knownKind(run.kind) !== session.kind) {
        session.kind = knownKind(run.kind);
        this.renderStages(session);
      }
      if (!session.twinName) {
        const twin = await api.twin(run.twin_id);
        if (session.stale) return;
        session.twinName = twin.name;
      }
      this.el.title.textContent = `${VERB[session.kind][0]} ${session.twinName}`;
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
      if (!session.stale) this.setNotice(null);
    });
    source.addEventListener('error', () => {
      if (session.stale || session.done) return;
      if (source.readyState === EventSource.CLOSED) {
        // Refused (signed out, or the gateway restarted): catch up through the API instead.
        source.close();
        session.source = null;
        this.setNotice('The live stream stopped; catching up…');
        session.timer = setTimeout(() => this.catchUp(session), RECONNECT_MS);
      } else {
        this.setNotice('Connection lost; reconnecting…');
      }
    });
  }

  retryLater(session, error) {
    this.setNotice(`${describe(error)} Trying again…`);
    this.hooks.report(error, { quiet: true });
    // Once the run is known, only the events are read again: the log shown so far stays.
    session.timer = setTimeout(() => {
      if (session.stale) return;
      if (session.loaded) this.catchUp(session);
      else this.load(session);
    }, RECONNECT_MS * 2);
  }

  /** One event, in id order; an id already applied is a duplicate and is ignored. */
  apply(session, id, type, data) {
    if (!Number.isFinite(id) || id <= session.lastId || session.done) return;
    session.lastId = id;
    switch (type) {
      case 'stage':
        this.setStage(session, data.stage, data.label);
        break;
      case 'log':
        this.log.append({ id, stream: data.stream === 'stderr' ? 'stderr' : 'stdout', text: data.line ?? '' });
        break;
      case 'progress':
        this.setProgress(data);
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
    this.drawStages(session);
    if (label) {
      this.el.progressText.textContent = label;
      announce(label);
    }
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

  setProgress({ percent = 0, done, total }) {
    const value = Math.max(0, Math.min(100, Number(percent) || 0));
    this.el.progress.value = value;
    this.el.progress.textContent = `${value}%`;
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
    const [, noun] = VERB[session.kind];
    const name = session.twinName ?? 'the twin';
    if (done.outcome === 'succeeded') {
      this.setProgress({ percent: 100 });
      this.el.progressText.textContent = 'Complete';
      session.stage = 'complete';
    }
    this.drawStages(session, done.outcome);
    this.el.title.textContent = `${noun} of ${name} ${done.outcome === 'succeeded' ? 'succeeded' : done.outcome}`;
    if (done.twin_status) this.el.badge.replaceChildren(statusBadge(done.twin_status));
    this.el.cancel.hidden = true;
    const status = STATUSES[done.twin_status]?.label;
    const next = status ? ` The twin's status is now ${status}.` : '';
    if (done.outcome === 'succeeded') {
      const what = {
        deploy: `${name} is deployed.`,
        destroy: `All resources of ${name} are gone.`,
        plan: 'The plan is in the log above.',
      }[session.kind];
      this.showOutcome('succeeded', `${noun} succeeded. ${what}`);
    } else if (done.outcome === 'cancelled') {
      this.showOutcome('cancelled', `${noun} was cancelled.${next}`);
    } else {
      const why = done.error ? ` ${done.error}` : ' See the log above for terraform\'s message.';
      this.showOutcome('failed', `${noun} failed.${why}${next}`);
    }
    this.el.retry.hidden = done.outcome === 'succeeded' || session.historical;
    this.el.retry.textContent = `Retry ${noun.toLowerCase()}`;
    this.dialog.dataset.state = done.outcome;
    announce(this.el.outcome.textContent);
    this.hooks.onFinished(session.twinId);
  }

  showOutcome(outcome, text) {
    this.el.outcome.hidden = false;
    this.el.outcome.className = `outcome outcome-${outcome}`;
    this.el.outcome.dataset.outcome = outcome;
    fill(this.el.outcome, text);
  }

  async cancelRun() {
    const session = this.session;
    if (!session || session.done) return;
    this.el.cancel.disabled = true;
    try {
      await api.cancel(session.twinId);
      if (!session.stale && !session.done) {
        this.setNotice('Cancelling: terraform finishes what it is doing and saves its state first.');
      }
    } catch (error) {
      this.el.cancel.disabled = false;
      if (!session.stale) this.setNotice(describe(error));
    }
  }

  async retry() {
    const session = this.session;
    if (!session) return;
    this.el.retry.disabled = true;
    try {
      const started = await api.start(session.twinId, session.kind);
      this.attach(again(session, started.job_id));
      this.el.close.focus();
    } catch (error) {
      if (error instanceof ApiError && error.body.active_job_id) {
        this.attach(again(session, error.body.active_job_id));
      } else {
        this.setNotice(describe(error));
      }
    } finally {
      this.el.retry.disabled = false;
    }
  }
}

/** The same twin and kind, another run. */
function again(session, jobId) {
  const { twinId, twinName, kind } = session;
  return { jobId, twinId, twinName, kind, historical: false };
}
