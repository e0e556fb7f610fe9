// The gateway's public API, through the session cookie (same origin). Every failure becomes
// one of two errors the views know how to show: ApiError (the gateway answered no) or
// Unreachable (it did not answer at all).

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.detail ?? `the gateway answered ${status}`);
    this.status = status;
    this.code = body?.code ?? null;
    this.body = body ?? {};
  }
}

export class Unreachable extends Error {
  constructor(cause) {
    super(`Cannot reach the gateway at ${location.origin}.`);
    this.cause = cause;
  }
}

const listeners = { unauthorized: () => {}, reachable: () => {}, unreachable: () => {} };

/** Lets the app hear about lost sessions and a vanished or returning gateway. */
export function onConnection(handlers) {
  Object.assign(listeners, handlers);
}

export async function request(method, path, body) {
  return (await exchange(method, path, body)).data;
}

/** A paged list: `{items, next}`, where `next` (from X-Next-Before) is the cursor of the
 * following page, or null at the end. */
export async function requestPage(path) {
  const { data, headers } = await exchange('GET', path);
  return { items: Array.isArray(data) ? data : [], next: headers.get('X-Next-Before') };
}

async function exchange(method, path, body) {
  let response;
  try {
    response = await fetch(path, {
      method,
      credentials: 'same-origin',
      cache: 'no-store',
      headers: body === undefined ? { Accept: 'application/json' } : {
        Accept: 'application/json',
        'Content-Type': 'application/json',
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (cause) {
    const error = new Unreachable(cause);
    listeners.unreachable(error);
    throw error;
  }
  listeners.reachable();
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = { detail: text.slice(0, 300) };
    }
  }
  if (!response.ok) {
    const error = new ApiError(response.status, data);
    if (response.status === 401 && path !== '/auth/login') listeners.unauthorized(error);
    throw error;
  }
  return { data, headers: response.headers };
}

const get = (path) => request('GET', path);
const post = (path, body) => request('POST', path, body);
const enc = encodeURIComponent;

/** `?a=1&b=2` from the defined entries of `params`. */
function query(params) {
  const parts = Object.entries(params)
    .filter(([, value]) => value !== undefined && value !== null && value !== '')
    .map(([key, value]) => `${enc(key)}=${enc(value)}`);
  return parts.length ? `?${parts.join('&')}` : '';
}

export const api = {
  login: (token) => post('/auth/login', { token }),
  logout: () => post('/auth/logout'),
  whoami: () => get('/auth/whoami'),

  twins: ({ includeDeleted = false } = {}) => get(`/twins${includeDeleted ? '?include_deleted=true' : ''}`),
  twin: (id) => get(`/twins/${enc(id)}`),
  createTwin: (body) => post('/twins', body),
  updateTwin: (id, body) => request('PUT', `/twins/${enc(id)}`, body),
  deleteTwin: (id) => request('DELETE', `/twins/${enc(id)}`),
  purgeTwin: (id) => request('DELETE', `/twins/${enc(id)}?purge=true`),
  bulkDelete: (ids) => post('/twins/bulk-delete', { ids }),
  restoreTwin: (id) => post(`/twins/${enc(id)}/restore`),
  setStatus: (id, status, reason) => post(`/twins/${enc(id)}/status`, { status, reason }),
  demoTemplate: () => get('/templates/demo'),
  providers: () => get('/providers'),
  infrastructure: (id) => get(`/twins/${enc(id)}/infrastructure-status`),
  outputs: (id) => get(`/twins/${enc(id)}/outputs`),
  costs: (id) => get(`/twins/${enc(id)}/costs`),
  history: (id, { limit, before } = {}) =>
    requestPage(`/twins/${enc(id)}/history${query({ limit, before })}`),
  state: (id) => get(`/twins/${enc(id)}/state`),
  stateVersions: (id) => get(`/twins/${enc(id)}/state/versions`),
  restoreVersion: (id, version) => post(`/twins/${enc(id)}/state/versions/${enc(version)}/restore`),
  runs: (id, { limit, before } = {}) => requestPage(`/twins/${enc(id)}/runs${query({ limit, before })}`),
  allRuns: ({ status, limit, before } = {}) => requestPage(`/runs${query({ status, limit, before })}`),
  validate: (id) => post(`/twins/${enc(id)}/validate`),
  refresh: (id) => post(`/twins/${enc(id)}/refresh`),
  /** A deploy, destroy or plan; `debug` (a log level: TRACE, DEBUG or INFO) makes it a
   * debug run, whose terraform log streams as stderr lines. No body for an ordinary run. */
  start: (id, kind, { debug = null } = {}) => post(
    `/twins/${enc(id)}/${['destroy', 'plan'].includes(kind) ? kind : 'deploy'}`,
    debug ? { debug: true, log_level: debug } : undefined,
  ),
  cancel: (id) => post(`/twins/${enc(id)}/cancel`),

  credentials: () => get('/credentials'),
  createCredential: (body) => post('/credentials', body),
  updateCredential: (id, body) => request('PUT', `/credentials/${enc(id)}`, body),
  deleteCredential: (id, { force = false } = {}) =>
    request('DELETE', `/credentials/${enc(id)}${force ? '?force=true' : ''}`),

  webhooks: () => get('/webhooks'),
  createWebhook: (body) => post('/webhooks', body),
  deleteWebhook: (id) => request('DELETE', `/webhooks/${enc(id)}`),
  deliveries: (id, limit = 50) => get(`/webhooks/${enc(id)}/deliveries?limit=${limit}`),

  audit: ({ after, limit } = {}) => get(`/audit${query({ after, limit })}`),

  run: (jobId) => get(`/runs/${enc(jobId)}`),
  cancelRun: (jobId) => post(`/runs/${enc(jobId)}/cancel`),
  logs: (jobId, after, limit = 1000) =>
    get(`/runs/${enc(jobId)}/logs?after_event_id=${after}&limit=${limit}`),
  eventsUrl: (jobId, after) => `/runs/${enc(jobId)}/events?last_event_id=${after}`,
};

/** A sentence for any error, for messages on the page. */
export function describe(error) {
  if (error instanceof Unreachable) {
    return `${error.message} Check that it is running; the page retries on its own.`;
  }
  if (error instanceof ApiError) return error.message;
  return `Something went wrong in the page: ${error?.message ?? error}`;
}
