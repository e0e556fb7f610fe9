// Drawing for the twin page's panels and the lists of runs: tables, change lists, money and
// the cost bars. Pure functions of the API's answers; the views decide when to call them.

import { fill, formatDuration, h, timeAgo } from './dom.js';

export const CATEGORIES = ['compute', 'storage', 'networking', 'database'];
export const RUN_KINDS = { deploy: 'Deploy', destroy: 'Destroy', plan: 'Plan', drift: 'Drift check' };
const MASK = '••••••••';

const formatters = new Map();
/** `$1,234.50` in the currency the gateway answered. */
export function money(amount, currency = 'USD') {
  const code = typeof currency === 'string' && /^[A-Z]{3}$/.test(currency) ? currency : 'USD';
  if (!formatters.has(code)) {
    formatters.set(code, new Intl.NumberFormat(undefined, { style: 'currency', currency: code }));
  }
  return formatters.get(code).format(Number(amount) || 0);
}

export function table(headers, rows, className, { caption } = {}) {
  return h(
    'div',
    { class: 'table-wrap' },
    h(
      'table',
      { class: className },
      caption && h('caption', { class: 'sr-only' }, caption),
      h('thead', {}, h('tr', {}, headers.map((text) => h('th', { scope: 'col' }, text)))),
      h(
        'tbody',
        {},
        rows.map((cells) => {
          const attrs = cells.attrs ?? {};
          return h('tr', attrs, cells.map((cell, index) => h('td', { 'data-label': headers[index] }, cell)));
        }),
      ),
    ),
  );
}

/** Resource changes (`[{address, type, action}]`) as a list with the action marked. */
export function changeList(changes, empty) {
  if (!changes?.length) return h('p', { class: 'muted' }, empty);
  return h(
    'ul',
    { class: 'changes' },
    changes.map((change) =>
      h(
        'li',
        { class: `change change-${actionClass(change.action)}`, dataset: { address: change.address ?? '', action: change.action ?? '' } },
        h('span', { class: 'change-action' }, actionLabel(change.action)),
        ' ',
        h('code', { class: 'change-address' }, change.address ?? '?'),
      ),
    ),
  );
}

function actionClass(action) {
  if (action === 'create') return 'create';
  if (action === 'delete' || action === 'remove') return 'delete';
  if (action === 'replace') return 'replace';
  return 'update';
}

function actionLabel(action) {
  return { create: 'create', update: 'update', delete: 'delete', replace: 'replace', remove: 'delete', read: 'read', noop: 'no change' }[action] ?? action ?? 'change';
}

/** A value the gateway keeps to itself: dots, "hidden" for screen readers, a tag. */
export function hiddenValue(label = 'hidden') {
  return h(
    'span',
    { class: 'masked', dataset: { hidden: 'true' } },
    h('span', { 'aria-hidden': 'true' }, MASK),
    h('span', { class: 'sr-only' }, label),
    h('span', { class: 'tag' }, 'sensitive'),
  );
}

/** An output's value, or the mask for a sensitive one (the API already masked it). */
export function outputValue(output) {
  if (output.sensitive) return hiddenValue();
  const value = output.value;
  return h('code', { class: 'value' }, typeof value === 'string' ? value : JSON.stringify(value));
}

/**
 * A twin's variables as a table; a sensitive one (the gateway answers only its mask) reads
 * "set, hidden", never a value.
 */
export function variablesTable(variables, sensitiveNames = []) {
  const hidden = new Set(sensitiveNames);
  const entries = Object.entries(variables ?? {});
  if (!entries.length) return h('p', { class: 'muted' }, 'No variables: the configuration\'s defaults apply.');
  return table(['Name', 'Value'], entries.map(([name, value]) => {
    const cells = [
      h('code', {}, name),
      hidden.has(name) ? hiddenValue('set, hidden') : h('code', { class: 'value' }, typeof value === 'string' ? value : JSON.stringify(value)),
    ];
    cells.attrs = { dataset: { variable: name, sensitive: String(hidden.has(name)) } };
    return cells;
  }), 'variables-table', { caption: 'Variables' });
}

/** A run's status as a coloured word. */
export function runStatus(run) {
  const label = run.status === 'pending' && run.queue_position ? `queued (#${run.queue_position})` : run.status;
  return h('span', { class: `run-status run-${run.status}`, dataset: { status: run.status } }, label);
}

/** "debug · TRACE" for a debug run (terraform ran with TF_LOG at that level). */
export function debugTag(run) {
  const level = run.log_level ?? 'DEBUG';
  return h('span', { class: 'tag tag-debug', dataset: { debug: level }, title: `A debug run: terraform logged at TF_LOG=${level}` },
    `debug · ${level}`);
}

/** The "View log" button of a run; `data-open-run` lets focus come back to it. */
export function logButton(run, onOpen) {
  const started = run.start_time ?? run.created_at;
  const when = started ? ` started ${new Date(started).toLocaleString()}` : '';
  return h(
    'button',
    {
      type: 'button',
      class: 'button small',
      dataset: { openRun: run.job_id },
      'aria-label': `Log of the ${run.debug ? 'debug ' : ''}${RUN_KINDS[run.kind] ?? run.kind}${when}${run.twin_name ? ` of ${run.twin_name}` : ''}`,
      onclick: () => onOpen(run),
    },
    run.status === 'processing' || run.status === 'pending' ? 'View progress' : 'View log',
  );
}

/** Rows of a runs table: kind, outcome, started, duration, actor, exit code, log. */
export function runRows(runs, onOpen, { withTwin = false } = {}) {
  return runs.map((run) => {
    const cells = [
      ...(withTwin ? [h('a', { href: `#/twins/${encodeURIComponent(run.twin_id)}` }, run.twin_name ?? run.twin_id)] : []),
      h('span', { class: 'run-kind' }, RUN_KINDS[run.kind] ?? run.kind, run.debug ? [' ', debugTag(run)] : null),
      runStatus(run),
      timeAgo(run.start_time ?? run.created_at, '—'),
      run.start_time ? formatDuration(run.start_time, run.end_time) : '—',
      run.actor ?? '—',
      run.exit_code ?? '—',
      logButton(run, onOpen),
    ];
    cells.attrs = { dataset: { runId: run.job_id, status: run.status, kind: run.kind, debug: String(Boolean(run.debug)) } };
    return cells;
  });
}

export const RUN_HEADERS = ['Run', 'Result', 'Started', 'Took', 'By', 'Exit code', ''];

/**
 * Cost bars: one group per category with the cost now and, when a plan preview applies, after
 * it. `now` and `after` are `{compute, storage, networking, database, total}`.
 */
export function costBars({ now, after, currency }) {
  const series = [['now', 'Now', now], ...(after ? [['after', 'After the plan', after]] : [])];
  const max = Math.max(1, ...series.flatMap(([, , costs]) => CATEGORIES.map((c) => Number(costs?.[c]) || 0)));
  return h(
    'div',
    { class: 'cost-bars' },
    h(
      'ul',
      { class: 'cost-legend', 'aria-hidden': 'true' },
      series.map(([key, label]) => h('li', { class: `legend-${key}` }, h('span', { class: 'swatch' }), label)),
    ),
    CATEGORIES.map((category) =>
      h(
        'div',
        { class: 'cost-row', dataset: { category } },
        h('span', { class: 'cost-category' }, category),
        h(
          'div',
          { class: 'cost-values' },
          series.map(([key, label, costs]) => {
            const amount = Number(costs?.[category]) || 0;
            const bar = h('span', { class: `bar bar-${key}` });
            bar.style.setProperty('--share', String(amount / max));
            return h(
              'div',
              { class: 'cost-value', dataset: { series: key, amount } },
              h('span', { class: 'bar-track', 'aria-hidden': 'true' }, bar),
              h('span', { class: 'cost-amount' }, h('span', { class: 'sr-only' }, `${label}: `), money(amount, currency)),
            );
          }),
        ),
      ),
    ),
  );
}

/** `after - delta`, per category: the cost today when a plan's figures and change are known. */
export function subtract(after, delta) {
  const now = {};
  for (const key of [...CATEGORIES, 'total']) now[key] = round((Number(after?.[key]) || 0) - (Number(delta?.[key]) || 0));
  return now;
}

const round = (value) => Math.round(value * 100) / 100;

/** "+$12.00 a month" / "−$3.00 a month" / "no change". */
export function deltaText(delta, currency) {
  const total = Number(delta?.total) || 0;
  if (!total) return 'no change';
  return `${total > 0 ? '+' : '−'}${money(Math.abs(total), currency)} a month`;
}

/** Unpriced resources, with the reason. */
export function unpricedList(unpriced) {
  if (!unpriced?.length) return null;
  return h(
    'div',
    { class: 'unpriced' },
    h('p', { class: 'muted small' }, `Not priced (${unpriced.length}): the price book has no price for them, so they add nothing.`),
    h('ul', {}, unpriced.map((item) => h('li', {}, h('code', {}, item.address), ' ', h('span', { class: 'muted' }, item.reason ?? '')))),
  );
}

/** A "Show more" button below a paged list. */
export function moreButton(label, onMore) {
  return h(
    'button',
    {
      type: 'button',
      class: 'button small more',
      onclick: async (event) => {
        const button = event.currentTarget;
        button.disabled = true;
        button.textContent = 'Loading…';
        await onMore();
      },
    },
    label,
  );
}

const drawnData = new WeakMap();

/** Fills `el` only when `data` differs from what it shows (so focus and scroll stay put). */
export function fillIfChanged(el, data, draw) {
  const text = JSON.stringify(data);
  if (drawnData.get(el) === text) return false;
  drawnData.set(el, text);
  fill(el, draw());
  return true;
}

/** Forgets what `el` shows, so the next fillIfChanged draws it. */
export function forget(el) {
  drawnData.delete(el);
}
