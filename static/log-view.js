// A run's log as a virtual list: every line is kept in memory, but only the rows in view (plus
// a margin) are in the DOM, and new lines are drawn once per animation frame. So 100,000
// lines scroll as smoothly as 10. Rows have one fixed height (long lines scroll sideways).

import { h } from './dom.js';

/** Must match `.log-row` height in style.css. */
const ROW_HEIGHT = 20;
const OVERSCAN = 20;

export class LogView {
  /** `scroller` is the scrolling box; `jumpButton` brings the reader back to the end. */
  constructor(scroller, jumpButton) {
    this.scroller = scroller;
    this.jumpButton = jumpButton;
    this.spacer = h('div', { class: 'log-spacer' });
    this.rows = h('div', { class: 'log-rows' });
    this.empty = h('p', { class: 'log-empty' }, 'Waiting for output…');
    this.spacer.append(this.rows);
    scroller.replaceChildren(this.empty, this.spacer);
    this.lines = [];
    this.pending = [];
    this.follow = true;
    this.frame = 0;
    this.drawn = { first: -1, last: -1, count: -1 };
    scroller.addEventListener('scroll', () => {
      this.follow = this.isAtBottom();
      this.schedule();
    });
    jumpButton.addEventListener('click', () => {
      this.follow = true;
      this.scrollToEnd();
      this.schedule();
    });
    // The box changes height with the window (and is 0 high while its dialog is closed).
    new ResizeObserver(() => {
      if (this.follow) this.scrollToEnd();
      this.schedule();
    }).observe(scroller);
  }

  get count() {
    return this.lines.length + this.pending.length;
  }

  clear(placeholder = 'Waiting for output…') {
    this.lines = [];
    this.pending = [];
    this.follow = true;
    this.empty.textContent = placeholder;
    this.drawn = { first: -1, last: -1, count: -1 };
    // Shrink first: a scroll event for the old, taller list must not read as "scrolled up".
    this.spacer.style.height = '0px';
    this.scroller.scrollTop = 0;
    this.draw();
  }

  /** Queues a line `{id, stream, text}`; it is drawn in the next frame with its batch. */
  append(line) {
    this.pending.push(line);
    this.schedule();
  }

  schedule() {
    if (!this.frame) this.frame = requestAnimationFrame(() => this.draw());
  }

  isAtBottom() {
    const { scrollTop, clientHeight, scrollHeight } = this.scroller;
    return scrollTop + clientHeight >= scrollHeight - ROW_HEIGHT;
  }

  scrollToEnd() {
    this.scroller.scrollTop = this.scroller.scrollHeight;
  }

  draw() {
    this.frame = 0;
    const added = this.pending.length;
    if (added) {
      for (const line of this.pending) this.lines.push(line);
      this.pending = [];
      this.spacer.style.height = `${this.lines.length * ROW_HEIGHT}px`;
      if (this.follow) this.scrollToEnd();
    }
    const total = this.lines.length;
    this.empty.hidden = total > 0;
    this.jumpButton.hidden = this.follow || total === 0;
    // For tests and for the curious: how much is here, and up to which event.
    this.scroller.dataset.lines = String(total);
    this.scroller.dataset.lastEventId = String(total ? this.lines[total - 1].id : 0);

    const top = this.scroller.scrollTop;
    const height = this.scroller.clientHeight || ROW_HEIGHT * 20;
    const first = Math.max(0, Math.floor(top / ROW_HEIGHT) - OVERSCAN);
    const last = Math.min(total, Math.ceil((top + height) / ROW_HEIGHT) + OVERSCAN);
    const same =
      first === this.drawn.first && last === this.drawn.last && this.drawn.count >= last;
    if (same) return;
    this.drawn = { first, last, count: total };
    const fragment = document.createDocumentFragment();
    for (let index = first; index < last; index += 1) fragment.append(row(this.lines[index], index));
    this.rows.style.transform = `translateY(${first * ROW_HEIGHT}px)`;
    this.rows.replaceChildren(fragment);
  }
}

function row(line, index) {
  // terraform prints its diagnostics on stdout under -json: make them stand out as well.
  const level = /^(Error|Warning): /.exec(line.text)?.[1]?.toLowerCase();
  const classes = `log-row stream-${line.stream}${level ? ` is-${level}` : ''}`;
  const marker =
    line.stream === 'stderr' ? 'stderr' : line.stream === 'gateway' ? 'gateway' : null;
  return h(
    'div',
    { class: classes, dataset: { id: line.id } },
    h('span', { class: 'log-number', 'aria-hidden': 'true' }, index + 1),
    marker && h('span', { class: 'log-marker' }, marker),
    h('span', { class: 'log-text' }, line.text),
  );
}
