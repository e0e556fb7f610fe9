// Runs across twins (#/runs): what is running now, what waits for a slot, and what finished,
// newest first in pages, each with its twin, kind, outcome, duration, actor and exit code, and
// its log one click away.

import { api } from './api.js';
import { $, h } from './dom.js';
import { RUN_HEADERS, fillIfChanged, moreButton, runRows, table } from './twin-panels.js';

const PAGE = 20;
const HEADERS = ['Twin', ...RUN_HEADERS];

export class RunsView {
  /** ctx: runModal, report(error). */
  constructor(root, ctx) {
    this.root = root;
    this.ctx = ctx;
    this.visible = false;
    this.finished = [];
    this.next = null;
    this.el = {
      running: $('#runs-running', root),
      queued: $('#runs-queued', root),
      finished: $('#runs-finished', root),
    };
  }

  async show() {
    this.visible = true;
    await this.refresh();
  }

  hide() {
    this.visible = false;
  }

  async refresh() {
    const limit = Math.min(200, Math.max(PAGE, this.finished.length));
    let running;
    let queued;
    let finished;
    try {
      [running, queued, finished] = await Promise.all([
        api.allRuns({ status: 'processing', limit: 200 }),
        api.allRuns({ status: 'pending', limit: 200 }),
        api.allRuns({ status: 'completed,failed,cancelled', limit }),
      ]);
    } catch (error) {
      this.ctx.report(error);
      return;
    }
    if (!this.visible) return;
    this.finished = finished.items;
    this.next = finished.next;
    this.draw(this.el.running, running.items, 'Nothing is running.', 'Runs working now');
    // Oldest first: the next to get a slot on top.
    const waiting = [...queued.items].sort((a, b) => (a.queue_position ?? 0) - (b.queue_position ?? 0));
    this.draw(this.el.queued, waiting, 'Nothing is waiting for a slot.', 'Runs waiting for a slot, next first');
    this.drawFinished();
  }

  draw(el, runs, empty, caption) {
    fillIfChanged(el, runs, () =>
      runs.length
        ? table(HEADERS, runRows(runs, (run) => this.open(run), { withTwin: true }), 'runs-table all-runs', { caption })
        : h('p', { class: 'muted' }, empty));
  }

  drawFinished() {
    const { finished, next } = this;
    fillIfChanged(this.el.finished, [finished, next], () => [
      finished.length
        ? table(HEADERS, runRows(finished, (run) => this.open(run), { withTwin: true }), 'runs-table all-runs', { caption: 'Finished runs, newest first' })
        : h('p', { class: 'muted' }, 'No run has finished yet.'),
      next ? moreButton('Show older runs', () => this.more()) : null,
    ]);
  }

  async more() {
    let page;
    try {
      page = await api.allRuns({ status: 'completed,failed,cancelled', limit: PAGE, before: this.next });
    } catch (error) {
      this.ctx.report(error);
      this.drawFinished();
      return;
    }
    const known = new Set(this.finished.map((run) => run.job_id));
    const first = this.finished.length;
    this.finished = [...this.finished, ...page.items.filter((run) => !known.has(run.job_id))];
    this.next = page.next;
    this.drawFinished();
    this.el.finished.querySelectorAll('tbody tr')[first]?.querySelector('a')?.focus();
  }

  open(run) {
    const live = run.status === 'pending' || run.status === 'processing';
    this.ctx.runModal.open({
      jobId: run.job_id,
      twinId: run.twin_id,
      twinName: run.twin_name,
      kind: run.kind,
      historical: !live,
      debug: run.debug ? run.log_level ?? 'DEBUG' : null,
    });
  }
}
