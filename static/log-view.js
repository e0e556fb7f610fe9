// A run's log as a virtual list: every line is kept in memory, but only the rows in view (plus
// a margin) are in the DOM, and new lines are drawn once per animation frame. So 100,000
// lines scroll as smoothly as 10.
//
// Rows have one fixed height, so a line never overflows onto the next one: a log event whose
// text holds line breaks becomes one row per line, and a line wider than the box is wrapped
// onto continuation rows (at the box's width in characters of the monospace font), so nothing
// has to be read by scrolling sideways, on a phone either.

import { h } from './dom.js';

/** Must match `.log-row` height in style.css. */
const ROW_HEIGHT = 20;
const OVERSCAN = 20;
/** Width of the line-number column in em (`.log-number` in style.css: 4.5em + 0.75em). */
const NUMBER_EM = 5.25;
/** Characters kept spare in each row, for rounding and glyphs a little wider than the rest. */
const SPARE_CHARS = 2;
/** What a marker (`stderr`, `gateway`) takes of the first row, in characters. */
const MARKER_CHARS = 9;
const TAB = '    ';

export class LogView {
  /** `scroller` is the scrolling box; `jumpButton` brings the reader back to the end. */
  constructor(scroller, jumpButton) {
    this.scroller = scroller;
    this.jumpButton = jumpButton;
    this.spacer = h('div', { class: 'log-spacer' });
    this.rowBox = h('div', { class: 'log-rows' });
    this.empty = h('p', { class: 'log-empty' }, 'Waiting for output…');
    // Measures the font's character width; its box is cut to nothing so it widens nothing.
    this.probe = h('span', { class: 'log-probe' }, 'x'.repeat(100));
    this.spacer.append(this.rowBox);
    scroller.replaceChildren(this.empty, this.spacer, h('div', { class: 'log-measure', 'aria-hidden': 'true' }, this.probe));
    this.lines = [];
    this.rows = [];
    this.pending = [];
    this.cols = Infinity;
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
    // The box changes width and height with the window (and is 0 wide while its dialog is
    // closed): wrap again for the new width.
    new ResizeObserver(() => {
      this.rewrap();
      if (this.follow) this.scrollToEnd();
      this.schedule();
    }).observe(scroller);
  }

  get count() {
    return this.lines.length + this.pending.length;
  }

  clear(placeholder = 'Waiting for output…') {
    this.lines = [];
    this.rows = [];
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

  /** Every line's text, as the reader would copy it. */
  text() {
    return [...this.lines, ...this.pending].map((line) => line.text).join('\n');
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

  /** Characters that fit in a row at the box's current width (Infinity while unmeasurable). */
  measureColumns() {
    const width = this.scroller.clientWidth;
    const charWidth = this.probe.getBoundingClientRect().width / 100;
    if (!width || !charWidth) return Infinity;
    const fontSize = parseFloat(getComputedStyle(this.scroller).fontSize) || 13;
    // The row's right padding is 1rem (16px).
    const room = width - 16 - NUMBER_EM * fontSize;
    return Math.max(16, Math.floor(room / charWidth) - SPARE_CHARS);
  }

  rewrap() {
    const cols = this.measureColumns();
    if (cols === this.cols) return;
    // Keep the line at the top of the view in view.
    const topRow = this.rows[Math.floor(this.scroller.scrollTop / ROW_HEIGHT)];
    this.cols = cols;
    this.rows = [];
    this.lines.forEach((line, index) => this.addRows(line, index));
    this.spacer.style.height = `${this.rows.length * ROW_HEIGHT}px`;
    this.drawn = { first: -1, last: -1, count: -1 };
    if (topRow && !this.follow) {
      const at = this.rows.findIndex((row) => row.line === topRow.line);
      if (at >= 0) this.scroller.scrollTop = at * ROW_HEIGHT;
    }
  }

  /** The rows of one line: one per line break, each cut to the row's width. */
  addRows(line, index) {
    const marked = line.stream === 'stderr' || line.stream === 'gateway';
    let first = true;
    for (const part of line.text.replaceAll('\t', TAB).split(/\r?\n|\r/)) {
      let rest = part;
      do {
        const room = first && marked ? Math.max(8, this.cols - MARKER_CHARS) : this.cols;
        this.rows.push({ line: index, text: rest.slice(0, room), first });
        rest = rest.slice(room);
        first = false;
      } while (rest.length);
    }
  }

  draw() {
    this.frame = 0;
    if (this.pending.length) {
      if (this.cols === Infinity) this.cols = this.measureColumns();
      for (const line of this.pending) {
        this.lines.push(line);
        this.addRows(line, this.lines.length - 1);
      }
      this.pending = [];
      this.spacer.style.height = `${this.rows.length * ROW_HEIGHT}px`;
      if (this.follow) this.scrollToEnd();
    }
    const total = this.lines.length;
    this.empty.hidden = total > 0;
    this.jumpButton.hidden = this.follow || total === 0;
    // For tests and for the curious: how much is here, and up to which event.
    this.scroller.dataset.lines = String(total);
    this.scroller.dataset.rows = String(this.rows.length);
    this.scroller.dataset.lastEventId = String(total ? this.lines[total - 1].id : 0);

    const top = this.scroller.scrollTop;
    const height = this.scroller.clientHeight || ROW_HEIGHT * 20;
    const first = Math.max(0, Math.floor(top / ROW_HEIGHT) - OVERSCAN);
    const last = Math.min(this.rows.length, Math.ceil((top + height) / ROW_HEIGHT) + OVERSCAN);
    const same =
      first === this.drawn.first && last === this.drawn.last && this.drawn.count >= last;
    if (same) return;
    this.drawn = { first, last, count: this.rows.length };
    const fragment = document.createDocumentFragment();
    for (let index = first; index < last; index += 1) {
      const at = this.rows[index];
      fragment.append(row(this.lines[at.line], at));
    }
    this.rowBox.style.transform = `translateY(${first * ROW_HEIGHT}px)`;
    this.rowBox.replaceChildren(fragment);
  }
}

function row(line, at) {
  // terraform prints its diagnostics on stdout under -json: make them stand out as well.
  const level = /^(Error|Warning): /.exec(line.text)?.[1]?.toLowerCase();
  const classes = `log-row stream-${line.stream}${level ? ` is-${level}` : ''}${at.first ? '' : ' is-continued'}`;
  const marker =
    line.stream === 'stderr' ? 'stderr' : line.stream === 'gateway' ? 'gateway' : null;
  return h(
    'div',
    { class: classes, dataset: { id: line.id } },
    h('span', { class: 'log-number', 'aria-hidden': 'true' }, at.first ? at.line + 1 : ''),
    at.first && marker && h('span', { class: 'log-marker' }, marker),
    h('span', { class: 'log-text' }, at.text),
  );
}
