// A run's log as a virtual list: every line is kept in memory, but only the rows in view (plus
// a margin) are in the DOM, and new lines are drawn once per animation frame. So 100,000
// lines scroll as smoothly as 10.
//
// A debug run's terraform log (TF_LOG) comes on stderr as `<time> [LEVEL] ...` lines, each
// drawn with its level, quieter than terraform's output; the lines after one that carry no
// level of their own (graphs, lists) continue its message and get its level. They can be
// hidden and shown again without losing the place.
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
/** terraform's own log line: its time, then the level in brackets. */
const TF_LOG_LINE = /^\S+\s+\[(TRACE|DEBUG|INFO|WARN|ERROR)\]/;
/** A diagnostic is never part of a debug message before it. */
const DIAGNOSTIC = /^(Error|Warning): /;

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
    this.hideDebug = false;
    this.debugCount = 0;
    this.debugCountTold = 0;
    this.stderrLevel = null;
    this.placeholder = 'Waiting for output…';
    /** Called with the number of debug lines when it changes (at most once a frame). */
    this.onDebugCount = null;
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
    this.stderrLevel = null;
    this.debugCount = 0;
    this.placeholder = placeholder;
    this.empty.textContent = placeholder;
    this.drawn = { first: -1, last: -1, count: -1 };
    // Shrink first: a scroll event for the old, taller list must not read as "scrolled up".
    this.spacer.style.height = '0px';
    this.scroller.scrollTop = 0;
    this.draw();
  }

  /** Queues a line `{id, stream, text}`; it is drawn in the next frame with its batch. */
  append(line) {
    const level = this.levelOf(line);
    if (level) this.debugCount += 1;
    this.pending.push(level ? { ...line, level } : line);
    this.schedule();
  }

  /** A stderr line's TF_LOG level (lower case), its own or, for a line with none, the one of
   * the debug line before it; null for everything else. Lines must come in order. */
  levelOf(line) {
    if (line.stream !== 'stderr') return null;
    const own = TF_LOG_LINE.exec(line.text)?.[1];
    if (own) this.stderrLevel = own.toLowerCase();
    else if (DIAGNOSTIC.test(line.text)) this.stderrLevel = null;
    return this.stderrLevel;
  }

  /** Hides (or shows again) terraform's debug lines; the line at the top stays in view. */
  setHideDebug(hide) {
    if (hide === this.hideDebug) return;
    this.hideDebug = hide;
    this.rebuild();
    if (this.follow) this.scrollToEnd();
    this.schedule();
  }

  shows(line) {
    return !(this.hideDebug && line.level);
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
    this.cols = cols;
    this.rebuild();
  }

  /** Every row again (a new width, lines hidden or shown), keeping the line at the top of the
   * view in view (or the first shown after it). */
  rebuild() {
    const topRow = this.rows[Math.floor(this.scroller.scrollTop / ROW_HEIGHT)];
    this.rows = [];
    this.lines.forEach((line, index) => {
      if (this.shows(line)) this.addRows(line, index);
    });
    this.spacer.style.height = `${this.rows.length * ROW_HEIGHT}px`;
    this.drawn = { first: -1, last: -1, count: -1 };
    if (topRow && !this.follow) {
      const at = this.rows.findIndex((row) => row.line >= topRow.line);
      this.scroller.scrollTop = (at >= 0 ? at : this.rows.length) * ROW_HEIGHT;
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
        if (this.shows(line)) this.addRows(line, this.lines.length - 1);
      }
      this.pending = [];
      this.spacer.style.height = `${this.rows.length * ROW_HEIGHT}px`;
      if (this.follow) this.scrollToEnd();
    }
    const total = this.lines.length;
    this.empty.hidden = this.rows.length > 0;
    const emptyText = total ? 'Every line so far is terraform\'s debug log, which is hidden.' : this.placeholder;
    if (this.empty.textContent !== emptyText) this.empty.textContent = emptyText;
    this.jumpButton.hidden = this.follow || this.rows.length === 0;
    // For tests and for the curious: how much is here, and up to which event.
    this.scroller.dataset.lines = String(total);
    this.scroller.dataset.debugLines = String(this.debugCount);
    this.scroller.dataset.hiddenLines = String(this.hideDebug ? this.debugCount : 0);
    if (this.debugCountTold !== this.debugCount) {
      this.debugCountTold = this.debugCount;
      this.onDebugCount?.(this.debugCount);
    }
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
  const classes = `log-row stream-${line.stream}${line.level ? ` tf-${line.level}` : ''}${level ? ` is-${level}` : ''}${at.first ? '' : ' is-continued'}`;
  const marker = line.level ?? (line.stream === 'stderr' ? 'stderr' : line.stream === 'gateway' ? 'gateway' : null);
  return h(
    'div',
    { class: classes, dataset: { id: line.id } },
    h('span', { class: 'log-number', 'aria-hidden': 'true' }, at.first ? at.line + 1 : ''),
    at.first && marker && h('span', { class: 'log-marker' }, marker),
    h('span', { class: 'log-text' }, at.text),
  );
}
