// Credentials (#/credentials): the owner's cloud credentials, each a named set of environment
// variables its twins' runs get. Values go in (create, or replace on edit) and never come out:
// the gateway answers the variable names only, so the page never holds a stored value.
// Deleting one that live twins name is refused (409) unless forced, which detaches it.

import { api, ApiError, describe } from './api.js';
import { $, announce, fill, h, showDialog, timeAgo } from './dom.js';
import { fillIfChanged, table } from './twin-panels.js';

const PROVIDERS = ['aws', 'azure', 'gcp', 'sandbox'];
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const TWIN_ID = /twin_[0-9a-f]{32}/g;

let rowCounter = 0;

export class CredentialsView {
  /** ctx: report(error), who(). */
  constructor(root, ctx) {
    this.root = root;
    this.ctx = ctx;
    this.visible = false;
    this.credentials = null;
    this.twins = [];
    this.providerNames = {};
    this.el = {
      list: $('#credentials-list', root),
      note: $('#credentials-note', root),
      add: $('#new-credential', root),
    };
    this.el.add.addEventListener('click', () => this.editor.open(null));
    this.editor = new CredentialEditor(document.getElementById('credential-dialog'), {
      providerName: (id) => this.providerNames[id] ?? id,
      saved: (credential, created) => this.saved(credential, created),
    });
  }

  async show() {
    this.visible = true;
    this.el.note.hidden = true;
    if (!Object.keys(this.providerNames).length) {
      api.providers().then((list) => {
        for (const provider of list) this.providerNames[provider.id] = provider.name;
      }).catch(() => {});
    }
    await this.refresh();
  }

  hide() {
    this.visible = false;
  }

  async refresh() {
    let credentials;
    let twins;
    try {
      [credentials, twins] = await Promise.all([api.credentials(), api.twins()]);
    } catch (error) {
      this.ctx.report(error);
      if (!this.credentials) fill(this.el.list, h('p', { class: 'muted' }, 'The credentials could not be loaded.'));
      return;
    }
    if (!this.visible) return;
    this.credentials = credentials;
    this.twins = twins;
    this.draw();
  }

  /** The live twins that name a credential. */
  usedBy(id) {
    return this.twins.filter((twin) => !twin.deleted_at && (twin.credential_ids ?? []).includes(id));
  }

  draw() {
    const credentials = this.credentials ?? [];
    const me = this.ctx.who?.()?.owner;
    const others = credentials.some((c) => c.owner !== me);
    const rows = credentials.map((c) => ({ ...c, used: this.usedBy(c.id).map((t) => [t.id, t.name]) }));
    fillIfChanged(this.el.list, [rows, others], () => {
      if (!credentials.length) {
        return h('div', { class: 'card empty' },
          h('p', {}, 'No credentials yet.'),
          h('p', { class: 'muted' }, 'A credential holds the environment variables a cloud needs (for AWS, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY). Twins that name it get them in every run; the sandbox needs none.'));
      }
      const headers = ['Name', ...(others ? ['Owner'] : []), 'Provider', 'Variables', 'Expires', 'Last used', 'Used by', ''];
      return h('div', { class: 'card' }, table(headers, rows.map((c) => {
        const cells = [
          h('span', { class: 'credential-name' }, h('strong', {}, c.name), c.delete_after_run ? [' ', h('span', { class: 'tag', title: 'Deleted after the first deploy or destroy that uses it' }, 'one-time')] : null),
          ...(others ? [c.owner] : []),
          c.provider,
          h('span', { class: 'env-keys' }, c.env_keys.map((key) => h('code', {}, key))),
          c.expires_at
            ? h('span', { class: 'expiry', dataset: { expired: String(Boolean(c.expired)) } },
              c.expired ? [h('span', { class: 'badge tone-red' }, 'Expired'), ' '] : null, timeAgo(c.expires_at))
            : h('span', { class: 'muted' }, 'Never'),
          timeAgo(c.last_used_at, 'Not yet'),
          c.used.length
            ? h('span', { class: 'used-by' }, c.used.flatMap(([id, name], index) => [index ? ', ' : '', h('a', { href: `#/twins/${encodeURIComponent(id)}` }, name)]))
            : h('span', { class: 'muted' }, 'No twin'),
          h('span', { class: 'row-actions' },
            h('button', { type: 'button', class: 'button small', dataset: { action: 'edit' }, 'aria-label': `Edit ${c.name}`, onclick: () => this.editor.open(c) }, 'Edit'),
            h('button', { type: 'button', class: 'button small subtle danger-text', dataset: { action: 'delete' }, 'aria-label': `Delete ${c.name}`, onclick: (event) => this.remove(c, event.currentTarget) }, 'Delete')),
        ];
        cells.attrs = { dataset: { credentialId: c.id, expired: String(Boolean(c.expired)) } };
        return cells;
      }), 'credentials-table', { caption: 'Your credentials, oldest first' }));
    });
  }

  /** After the dialog saved: say so, redraw, and put focus back on that credential's row. */
  async saved(credential, created) {
    this.setNote(`${created ? 'Created' : 'Saved'} ${credential.name}. Its values are stored sealed and will not be shown again.`);
    await this.refresh();
    this.focusRow(credential.id, 'edit');
  }

  focusRow(id, action) {
    const row = this.el.list.querySelector(`tr[data-credential-id="${CSS.escape(id)}"]`);
    const button = row?.querySelector(`[data-action="${action}"]`);
    (button ?? this.el.add).focus();
  }

  setNote(text) {
    this.el.note.textContent = text;
    this.el.note.hidden = !text;
    if (text) announce(text);
  }

  /** Delete, after a confirmation; a credential in use is refused with the twins named,
   * and the dialog then offers to detach it from them and delete it anyway. */
  async remove(credential, opener) {
    const dialog = document.getElementById('credential-delete-dialog');
    const form = $('form', dialog);
    const confirm = $('#credential-delete-confirm', dialog);
    const force = $('#credential-delete-force', dialog);
    const cancel = $('#credential-delete-cancel', dialog);
    const inUse = $('#credential-in-use', dialog);
    const error = $('#credential-delete-error', dialog);
    fill($('#credential-delete-name', dialog), credential.name);
    inUse.hidden = true;
    error.hidden = true;
    confirm.hidden = false;
    force.hidden = true;
    let deleted = false;
    const attempt = async (withForce) => {
      const button = withForce ? force : confirm;
      button.disabled = true;
      error.hidden = true;
      try {
        await api.deleteCredential(credential.id, { force: withForce });
        deleted = true;
        dialog.close('deleted');
      } catch (failure) {
        if (failure instanceof ApiError && failure.code === 'credential_in_use') {
          this.showInUse(inUse, credential, failure);
          confirm.hidden = true;
          force.hidden = false;
          inUse.focus();
        } else {
          error.textContent = failure instanceof ApiError ? `The gateway refused: ${failure.message}` : describe(failure);
          error.hidden = false;
        }
      } finally {
        button.disabled = false;
      }
    };
    const onSubmit = (event) => {
      event.preventDefault();
      attempt(false);
    };
    const onForce = () => attempt(true);
    const onCancel = () => dialog.close('cancel');
    form.addEventListener('submit', onSubmit);
    force.addEventListener('click', onForce);
    cancel.addEventListener('click', onCancel);
    const answer = showDialog(dialog);
    cancel.focus();
    await answer;
    form.removeEventListener('submit', onSubmit);
    force.removeEventListener('click', onForce);
    cancel.removeEventListener('click', onCancel);
    if (!deleted) {
      (opener?.isConnected ? opener : this.el.add).focus();
      return;
    }
    this.setNote(`Deleted ${credential.name}.`);
    this.el.note.focus();
    await this.refresh();
  }

  /** The 409's twins by name (the gateway names them by id). */
  showInUse(box, credential, failure) {
    const ids = [...new Set(failure.message.match(TWIN_ID) ?? [])];
    const known = new Map(this.twins.map((twin) => [twin.id, twin.name]));
    const twins = ids.length ? ids : this.usedBy(credential.id).map((t) => t.id);
    fill(box,
      h('p', { class: 'error-text' }, `${credential.name} is in use: the gateway refused to delete it.`),
      h('p', {}, `Named by ${twins.length} twin${twins.length === 1 ? '' : 's'}: `,
        twins.flatMap((id, index) => [index ? ', ' : '', h('strong', { dataset: { twinId: id } }, known.get(id) ?? id)]),
        '. Detach and delete removes it from them as well: their next runs go without its variables.'));
    box.hidden = false;
  }
}

/** The create and edit dialog. On edit the stored variables are listed by name; replacing
 * them means typing every value again (the gateway never gives them back). */
class CredentialEditor {
  constructor(dialog, hooks) {
    this.dialog = dialog;
    this.hooks = hooks;
    this.form = $('form', dialog);
    this.title = $('#credential-dialog-title', dialog);
    this.name = $('#credential-name', dialog);
    this.provider = $('#credential-provider', dialog);
    this.stored = $('#credential-env-stored', dialog);
    this.storedKeys = $('#credential-env-keys', dialog);
    this.rows = $('#credential-env', dialog);
    this.addEnv = $('#credential-add-env', dialog);
    this.replace = $('#credential-env-replace', dialog);
    this.keep = $('#credential-env-keep', dialog);
    this.expires = $('#credential-expires', dialog);
    this.once = $('#credential-once', dialog);
    this.error = $('#credential-error', dialog);
    this.save = $('#credential-save', dialog);
    $('#credential-cancel', dialog).addEventListener('click', () => dialog.close());
    dialog.addEventListener('close', () => {
      // Typed values leave the page with the dialog; focus goes back where it came from.
      this.rows.replaceChildren();
      if (!this.savedNow && this.opener?.isConnected) this.opener.focus();
    });
    this.addEnv.addEventListener('click', () => this.addRow('', { focus: true }));
    this.replace.addEventListener('click', () => this.startReplacing());
    this.keep.addEventListener('click', () => this.keepStored());
    this.form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.submit();
    });
  }

  /** `credential` null for a new one. */
  open(credential) {
    this.credential = credential;
    this.opener = document.activeElement;
    this.savedNow = false;
    this.title.textContent = credential ? `Edit ${credential.name}` : 'New credential';
    this.save.textContent = credential ? 'Save changes' : 'Create credential';
    this.name.value = credential?.name ?? '';
    fill(this.provider, PROVIDERS.map((id) => h('option', { value: id }, this.hooks.providerName(id))));
    this.provider.value = credential?.provider ?? 'aws';
    this.expires.value = credential?.expires_at ? localInput(credential.expires_at) : '';
    this.once.checked = Boolean(credential?.delete_after_run);
    this.rows.replaceChildren();
    if (credential) {
      this.keepStored();
    } else {
      this.replacing = true;
      this.stored.hidden = true;
      this.keep.hidden = true;
      this.rows.hidden = false;
      this.addEnv.hidden = false;
      this.addRow('');
    }
    this.setError(null);
    this.dialog.showModal();
    this.name.focus();
  }

  keepStored() {
    this.replacing = false;
    fill(this.storedKeys, this.credential.env_keys.map((key) => h('li', {}, h('code', {}, key))));
    this.stored.hidden = false;
    this.rows.hidden = true;
    this.rows.replaceChildren();
    this.addEnv.hidden = true;
    this.keep.hidden = true;
    this.replace.focus();
  }

  startReplacing() {
    this.replacing = true;
    this.stored.hidden = true;
    this.rows.hidden = false;
    this.addEnv.hidden = false;
    this.keep.hidden = false;
    this.rows.replaceChildren();
    for (const key of this.credential.env_keys) this.addRow(key);
    this.rows.querySelector('.env-value')?.focus();
  }

  addRow(key, { focus = false } = {}) {
    rowCounter += 1;
    const id = `credential-env-${rowCounter}`;
    const name = h('input', { id: `${id}-name`, class: 'env-name', autocomplete: 'off', spellcheck: 'false', value: key, placeholder: 'NAME' });
    const value = h('input', { id: `${id}-value`, class: 'env-value', type: 'password', autocomplete: 'new-password', spellcheck: 'false' });
    const label = () => value.setAttribute('aria-label', name.value.trim() ? `Value of ${name.value.trim()}` : 'Value of the variable');
    name.addEventListener('input', label);
    label();
    const row = h('div', { class: 'env-row' },
      h('label', { for: `${id}-name`, class: 'sr-only' }, 'Variable name'),
      name,
      value,
      h('button', { type: 'button', class: 'button small subtle', 'aria-label': 'Remove this variable', onclick: () => { row.remove(); this.addEnv.focus(); } }, 'Remove'));
    this.rows.append(row);
    if (focus) name.focus();
    return row;
  }

  setError(text, field) {
    this.error.hidden = !text;
    this.error.textContent = text ?? '';
    field?.focus();
  }

  /** The variables typed, or an error naming the row that is wrong. */
  readEnv() {
    const env = {};
    for (const row of this.rows.children) {
      const nameInput = row.querySelector('.env-name');
      const valueInput = row.querySelector('.env-value');
      const key = nameInput.value.trim();
      const value = valueInput.value;
      if (!key && !value) continue;
      if (!ENV_NAME.test(key)) {
        return { error: key ? `"${key}" is not a valid variable name (letters, digits and _, not starting with a digit).` : 'A variable has a value but no name.', field: nameInput };
      }
      if (key in env) return { error: `${key} is there twice.`, field: nameInput };
      if (!value) return { error: `Give ${key} a value.`, field: valueInput };
      env[key] = value;
    }
    if (!Object.keys(env).length) return { error: 'Add at least one variable, with its value.', field: this.rows.querySelector('.env-name') ?? this.addEnv };
    return { env };
  }

  async submit() {
    const name = this.name.value.trim();
    if (!name) return this.setError('Give the credential a name.', this.name);
    let expiresAt = null;
    if (this.expires.value) {
      const when = new Date(this.expires.value);
      if (Number.isNaN(when.getTime())) return this.setError('The expiry is not a date and time.', this.expires);
      expiresAt = when.toISOString();
    }
    const body = { name, provider: this.provider.value, delete_after_run: this.once.checked };
    if (this.credential) body.expires_at = expiresAt;
    else if (expiresAt) body.expires_at = expiresAt;
    if (this.replacing) {
      const { env, error, field } = this.readEnv();
      if (error) return this.setError(error, field);
      body.env = env;
    }
    this.save.disabled = true;
    try {
      const saved = this.credential
        ? await api.updateCredential(this.credential.id, body)
        : await api.createCredential(body);
      this.savedNow = true;
      this.dialog.close();
      this.hooks.saved(saved, !this.credential);
    } catch (error) {
      this.setError(error instanceof ApiError ? `The gateway refused: ${error.message}` : describe(error));
    } finally {
      this.save.disabled = false;
    }
    return undefined;
  }
}

/** An RFC 3339 time as a datetime-local input's value, in this browser's time zone. */
function localInput(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return '';
  const pad = (n) => String(n).padStart(2, '0');
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}`;
}
