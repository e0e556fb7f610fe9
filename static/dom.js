// Small DOM helpers. Text always goes in through textContent, never innerHTML, so nothing a
// twin or terraform prints can become markup.

/** Makes an element: h('button', {class: 'button', onclick: f}, 'Deploy'). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else if (key === 'class') {
      el.className = value;
    } else if (key === 'dataset') {
      Object.assign(el.dataset, value);
    } else if (value === true) {
      el.setAttribute(key, '');
    } else {
      el.setAttribute(key, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export const $ = (selector, root = document) => root.querySelector(selector);

/** The twin statuses: label, colour and whether work is under way (drawn with motion). */
export const STATUSES = {
  draft: { label: 'Draft', tone: 'gray' },
  deploying: { label: 'Deploying', tone: 'blue', busy: true },
  deployed: { label: 'Deployed', tone: 'green' },
  destroying: { label: 'Destroying', tone: 'blue', busy: true },
  error: { label: 'Error', tone: 'red' },
  destroy_failed: { label: 'Destroy failed', tone: 'red' },
};

export function statusBadge(status) {
  const known = STATUSES[status] ?? { label: status ?? 'unknown', tone: 'gray' };
  return h(
    'span',
    {
      class: `badge tone-${known.tone}${known.busy ? ' is-busy' : ''}`,
      dataset: { status: status ?? '' },
    },
    h('span', { class: 'dot', 'aria-hidden': 'true' }),
    known.label,
  );
}

const absolute = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
const relative = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' });

/** A <time> that reads "3 minutes ago" and shows the exact time on hover. */
export function timeAgo(iso, empty = 'Never') {
  if (!iso) return h('span', { class: 'muted' }, empty);
  const date = new Date(iso);
  return h('time', { datetime: iso, title: absolute.format(date) }, describeAge(date));
}

/** The exact time, in the reader's locale ("1 Dec 2026, 13:07:39"). */
export function exactTime(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso ?? '') : absolute.format(date);
}

/** Brings every "3 minutes ago" on the page up to date, in place (focus stays put). */
export function refreshTimes() {
  for (const time of document.querySelectorAll('time[datetime]')) {
    time.textContent = describeAge(new Date(time.getAttribute('datetime')));
  }
}

function describeAge(date) {
  const seconds = Math.round((date.getTime() - Date.now()) / 1000);
  const steps = [
    [60, 'second'],
    [60, 'minute'],
    [24, 'hour'],
    [30, 'day'],
    [12, 'month'],
  ];
  let value = seconds;
  for (const [size, unit] of steps) {
    if (Math.abs(value) < size) return relative.format(value, unit);
    value = Math.round(value / size);
  }
  return relative.format(value, 'year');
}

export function formatDuration(startIso, endIso) {
  if (!startIso) return '';
  const ms = (endIso ? new Date(endIso) : new Date()) - new Date(startIso);
  const seconds = Math.max(0, Math.round(ms / 1000));
  if (seconds < 60) return `${seconds} s`;
  return `${Math.floor(seconds / 60)} min ${seconds % 60} s`;
}

/**
 * Runs `draw`, which replaces what `root` holds, and gives focus back to the new element with
 * the `data-focus-key` of the one that had it: a list redrawn by a poll keeps the reader's place.
 */
export function keepingFocus(root, draw) {
  const active = document.activeElement;
  const key = active && active !== root && root.contains(active) ? active.dataset.focusKey : undefined;
  const result = draw();
  if (key !== undefined && !root.contains(document.activeElement)) {
    root.querySelector(`[data-focus-key="${CSS.escape(key)}"]`)?.focus({ preventScroll: true });
  }
  return result;
}

/** Says something to screen readers through the page's polite live region. */
export function announce(text) {
  const region = document.getElementById('announcer');
  if (!region) return;
  region.textContent = '';
  // A fresh node in a later frame is read even when the words repeat.
  requestAnimationFrame(() => {
    region.textContent = text;
  });
}

/** Opens a <dialog> modally and resolves with its returnValue when it closes. */
export function showDialog(dialog) {
  return new Promise((resolve) => {
    dialog.returnValue = '';
    dialog.addEventListener('close', () => resolve(dialog.returnValue), { once: true });
    dialog.showModal();
  });
}
