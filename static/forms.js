// Form pieces shared by the new-twin wizard and the edit dialog: a variables editor (one row
// per variable) and reading .tf files, or a whole folder of them, in the browser.

import { h } from './dom.js';

let rowCounter = 0;

/**
 * Rows of name and value. A value that reads as JSON (a number, true, a list, an object) is
 * sent as that; anything else is text. `read()` gives the object or throws an Error saying
 * which row is wrong.
 */
export class VariablesEditor {
  constructor(container, { idPrefix }) {
    this.container = container;
    this.idPrefix = idPrefix;
    this.list = h('div', { class: 'variables-list' });
    this.addButton = h('button', { type: 'button', class: 'button small', onclick: () => this.addRow('', '', true) }, 'Add variable');
    container.replaceChildren(
      h('p', { class: 'muted small' }, 'Values are text; JSON (20, true, ["a","b"]) is read as such.'),
      this.list,
      this.addButton,
    );
  }

  set(variables = {}) {
    this.list.replaceChildren();
    for (const [name, value] of Object.entries(variables)) {
      this.addRow(name, typeof value === 'string' ? value : JSON.stringify(value));
    }
    if (!this.list.children.length) this.addRow('', '');
  }

  addRow(name, value, focus = false) {
    rowCounter += 1;
    const id = `${this.idPrefix}-${rowCounter}`;
    const nameInput = h('input', { id: `${id}-name`, class: 'variable-name', autocomplete: 'off', spellcheck: 'false', value: name });
    const valueInput = h('input', { id: `${id}-value`, class: 'variable-value', autocomplete: 'off', spellcheck: 'false', value });
    const row = h(
      'div',
      { class: 'variable-row' },
      h('label', { for: `${id}-name`, class: 'sr-only' }, 'Variable name'),
      nameInput,
      h('label', { for: `${id}-value`, class: 'sr-only' }, `Value of the variable`),
      valueInput,
      h(
        'button',
        {
          type: 'button',
          class: 'button small subtle',
          'aria-label': 'Remove this variable',
          onclick: () => {
            row.remove();
            this.addButton.focus();
          },
        },
        'Remove',
      ),
    );
    nameInput.addEventListener('input', () => {
      valueInput.setAttribute('aria-label', nameInput.value ? `Value of ${nameInput.value}` : 'Value of the variable');
    });
    if (name) valueInput.setAttribute('aria-label', `Value of ${name}`);
    this.list.append(row);
    if (focus) nameInput.focus();
    return row;
  }

  /** Sets one variable, adding its row when missing. */
  put(name, value) {
    const text = typeof value === 'string' ? value : JSON.stringify(value);
    for (const row of this.list.children) {
      const nameInput = row.querySelector('.variable-name');
      if (nameInput.value.trim() === name) {
        row.querySelector('.variable-value').value = text;
        return;
      }
    }
    const blank = [...this.list.children].find((row) => !row.querySelector('.variable-name').value.trim());
    if (blank) {
      blank.querySelector('.variable-name').value = name;
      blank.querySelector('.variable-value').value = text;
      blank.querySelector('.variable-value').setAttribute('aria-label', `Value of ${name}`);
    } else {
      this.addRow(name, text);
    }
  }

  read() {
    const variables = {};
    for (const row of this.list.children) {
      const nameInput = row.querySelector('.variable-name');
      const name = nameInput.value.trim();
      const raw = row.querySelector('.variable-value').value;
      if (!name && !raw.trim()) continue;
      if (!/^[A-Za-z_][A-Za-z0-9_-]*$/.test(name)) {
        const error = new Error(name ? `"${name}" is not a valid variable name (letters, digits, _ and -, not starting with a digit).` : 'A variable has a value but no name.');
        error.field = nameInput;
        throw error;
      }
      variables[name] = parseValue(raw);
    }
    return variables;
  }
}

/** JSON when it is JSON (but not a bare string), else the text itself. */
export function parseValue(raw) {
  const text = raw.trim();
  if (!text) return '';
  try {
    const value = JSON.parse(text);
    if (typeof value !== 'string') return value;
  } catch {
    // Plain text.
  }
  return raw;
}

const TERRAFORM_FILE = /\.tf(\.json)?$/;

/**
 * The .tf files of a folder chosen with `<input webkitdirectory>`, keyed by their path inside
 * it (the folder's own name dropped): `{files, skipped}`. Hidden files and folders (such as
 * `.terraform/`) and everything that is not terraform configuration are skipped.
 */
export async function readFolder(fileList) {
  const files = {};
  const skipped = [];
  for (const file of fileList) {
    const relative = file.webkitRelativePath || file.name;
    const parts = relative.split('/').filter(Boolean);
    if (parts.length > 1) parts.shift();
    const path = parts.join('/');
    if (parts.some((part) => part.startsWith('.')) || !TERRAFORM_FILE.test(path)) {
      skipped.push(path);
      continue;
    }
    files[path] = await file.text();
  }
  return { files, skipped };
}

/** Files chosen one by one, keyed by name. */
export async function readFiles(fileList) {
  const files = {};
  for (const file of fileList) files[file.name] = await file.text();
  return files;
}
