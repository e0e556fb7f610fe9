// Form pieces shared by the new-twin wizard and the edit dialog: a variables editor (one row
// per variable) and reading .tf files, or a whole folder of them, in the browser.

import { h } from './dom.js';

let rowCounter = 0;

/** What the gateway answers in place of a sensitive variable's value (docs/api.md). */
export const MASK = '********';

/**
 * Rows of name, value and a "Sensitive" switch. A value that reads as JSON (a number, true, a
 * list, an object) is sent as that; anything else is text. A sensitive row is a password field
 * and is sent as `{"value": ..., "sensitive": true}`. A sensitive variable the gateway already
 * holds is shown as set but hidden (its value never reaches the page): left empty it is sent
 * back as the mask, which keeps the stored value. `read()` gives the object or throws an Error
 * saying which row is wrong.
 */
export class VariablesEditor {
  constructor(container, { idPrefix }) {
    this.container = container;
    this.idPrefix = idPrefix;
    this.list = h('div', { class: 'variables-list' });
    this.addButton = h('button', { type: 'button', class: 'button small', onclick: () => this.addRow('', '', { focus: true }) }, 'Add variable');
    container.replaceChildren(
      h('p', { class: 'muted small' }, 'Values are text; JSON (20, true, ["a","b"]) is read as such. Sensitive values are sealed by the gateway and never shown again.'),
      this.list,
      this.addButton,
    );
  }

  /**
   * `variables` as the gateway answers them (sensitive ones as the mask, their names in
   * `sensitiveNames`), or as `read()` gave them (sensitive ones as `{value, sensitive}`).
   */
  set(variables = {}, sensitiveNames = []) {
    this.list.replaceChildren();
    const hidden = new Set(sensitiveNames);
    for (const [name, value] of Object.entries(variables)) {
      if (hidden.has(name)) this.addRow(name, '', { sensitive: true, kept: true });
      else if (isMarked(value)) this.addRow(name, text(value.value), { sensitive: value.sensitive });
      else this.addRow(name, text(value));
    }
    if (!this.list.children.length) this.addRow('', '');
  }

  addRow(name, value, { sensitive = false, kept = false, focus = false } = {}) {
    rowCounter += 1;
    const id = `${this.idPrefix}-${rowCounter}`;
    const nameInput = h('input', { id: `${id}-name`, class: 'variable-name', autocomplete: 'off', spellcheck: 'false', value: name });
    const valueInput = h('input', { id: `${id}-value`, class: 'variable-value', autocomplete: 'off', spellcheck: 'false', value });
    const secret = h('input', { id: `${id}-sensitive`, class: 'variable-sensitive', type: 'checkbox', checked: sensitive });
    const row = h(
      'div',
      { class: 'variable-row', dataset: { kept: kept ? 'true' : 'false', original: name } },
      h('label', { for: `${id}-name`, class: 'sr-only' }, 'Variable name'),
      nameInput,
      h('label', { for: `${id}-value`, class: 'sr-only' }, 'Value of the variable'),
      valueInput,
      h('label', { for: `${id}-sensitive`, class: 'check variable-sensitive-label' }, secret, 'Sensitive'),
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
    const describe = () => {
      const sensitiveNow = secret.checked;
      valueInput.type = sensitiveNow ? 'password' : 'text';
      const keptNow = row.dataset.kept === 'true' && !valueInput.value;
      row.dataset.sensitive = String(sensitiveNow);
      valueInput.placeholder = keptNow
        ? sensitiveNow ? 'Set, hidden: type to replace' : 'Type a value: the hidden one cannot be shown'
        : '';
      const who = nameInput.value.trim() ? `Value of ${nameInput.value.trim()}` : 'Value of the variable';
      valueInput.setAttribute('aria-label', keptNow ? `${who} (set, hidden; type to replace)` : who);
    };
    nameInput.addEventListener('input', describe);
    valueInput.addEventListener('input', describe);
    secret.addEventListener('change', describe);
    describe();
    this.list.append(row);
    if (focus) nameInput.focus();
    return row;
  }

  read() {
    const variables = {};
    for (const row of this.list.children) {
      const nameInput = row.querySelector('.variable-name');
      const valueInput = row.querySelector('.variable-value');
      const name = nameInput.value.trim();
      const raw = valueInput.value;
      const sensitive = row.querySelector('.variable-sensitive').checked;
      const kept = row.dataset.kept === 'true' && raw === '';
      if (!name && !raw.trim() && !kept) continue;
      if (!/^[A-Za-z_][A-Za-z0-9_-]*$/.test(name)) {
        const error = new Error(name ? `"${name}" is not a valid variable name (letters, digits, _ and -, not starting with a digit).` : 'A variable has a value but no name.');
        error.field = nameInput;
        throw error;
      }
      if (kept && (!sensitive || name !== row.dataset.original)) {
        // The stored value stays sealed under its own name: it cannot be shown, renamed or
        // made plain, only replaced.
        const error = new Error(sensitive
          ? `Type the value of ${name} again: a hidden value stays with the name ${row.dataset.original}.`
          : `Type a value for ${name}: its hidden value cannot be shown, so it cannot become plain text.`);
        error.field = valueInput;
        throw error;
      }
      if (kept) variables[name] = { value: MASK, sensitive: true };
      else if (sensitive) variables[name] = { value: parseValue(raw), sensitive: true };
      else variables[name] = parseValue(raw);
    }
    return variables;
  }
}

/** `{"value": ..., "sensitive": bool}`, the marked form of a variable. */
export function isMarked(value) {
  return Boolean(value) && typeof value === 'object' && !Array.isArray(value) &&
    Object.keys(value).length === 2 && 'value' in value && typeof value.sensitive === 'boolean';
}

function text(value) {
  return typeof value === 'string' ? value : JSON.stringify(value);
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

/**
 * Checkboxes for the credentials a twin names (`credential_ids`): the owner's credentials,
 * each with its provider, variables and expiry. `read()` keeps the order the twin had and
 * adds newly checked ones after it (runs get them in that order; a later one wins a variable
 * both set); it is null while the list is not loaded, so a caller can leave the field out.
 */
export class CredentialPicker {
  constructor(container, { idPrefix }) {
    this.container = container;
    this.idPrefix = idPrefix;
    this.credentials = null;
    this.initial = [];
    this.message('Loading your credentials…');
  }

  message(text) {
    this.credentials = null;
    this.container.replaceChildren(h('p', { class: 'muted small' }, text));
  }

  /** `credentials`: the twin owner's, oldest first; `selected`: the ids the twin names. */
  set(credentials, selected = [], { provider = null } = {}) {
    this.credentials = credentials;
    this.initial = [...selected];
    const known = new Set(credentials.map((c) => c.id));
    const chosen = new Set(selected);
    // The twin's provider first: those are the ones its runs most likely need.
    const ordered = [...credentials].sort((a, b) => Number(b.provider === provider) - Number(a.provider === provider));
    const rows = ordered.map((credential) => this.row(credential.id, chosen.has(credential.id), [
      h('span', { class: 'choice-title' }, credential.name),
      h('span', { class: 'choice-line muted' }, ` ${credential.provider} · ${credential.env_keys.join(', ')}`),
      credential.expired ? h('span', { class: 'badge tone-red' }, 'Expired') : null,
      credential.delete_after_run ? h('span', { class: 'tag' }, 'one-time') : null,
    ]));
    // An id the list does not hold (not visible to this caller) stays as it is.
    for (const id of selected.filter((id) => !known.has(id))) {
      rows.push(this.row(id, true, [h('code', {}, id), h('span', { class: 'choice-line muted' }, ' not among your credentials')]));
    }
    this.container.replaceChildren(
      rows.length
        ? h('div', { class: 'credential-choices' }, rows)
        : h('p', { class: 'muted small' }, 'You have no credentials yet; add them on the Credentials page. Without one, runs get only the gateway\'s own credentials file.'),
      rows.length > 1 ? h('p', { class: 'muted small' }, 'Runs get the variables of every credential checked; when two set the same variable, the one added later wins.') : null,
    );
  }

  row(id, checked, label) {
    rowCounter += 1;
    const inputId = `${this.idPrefix}-${rowCounter}`;
    return h('label', { class: 'check credential-choice', for: inputId, dataset: { credentialId: id } },
      h('input', { type: 'checkbox', id: inputId, value: id, checked }),
      h('span', {}, label));
  }

  read() {
    if (!this.credentials) return null;
    const checked = [...this.container.querySelectorAll('input[type="checkbox"]:checked')].map((box) => box.value);
    const kept = this.initial.filter((id) => checked.includes(id));
    return [...kept, ...checked.filter((id) => !kept.includes(id))];
  }
}
