// A real, certified OpenID Provider (the `oidc-provider` package) for
// Portcullis's end-to-end tests, listening on 127.0.0.1 only.
//
// Usage: node op.mjs CONFIG.json
//
// It prints exactly one line to stdout once it listens,
//   {"issuer":"http://127.0.0.1:PORT"}
// and logs to stderr only. It exits on SIGTERM/SIGINT and when its stdin
// closes (so it never outlives the test process that started it).
//
// CONFIG.json:
//   {
//     "clients": [{ "client_id", "client_secret", "redirect_uris": [...],
//                   "post_logout_redirect_uris": [...], ...any other client metadata }],
//     "accounts": [{ "username", "password", "email", "name", "disabled"?: bool,
//                    "claims"?: { extra claims, e.g. "groups": [...] } }],
//     "id_token_ttl", "access_token_ttl", "refresh_token_ttl": seconds (optional),
//     "session_ttl", "grant_ttl", "auth_code_ttl": seconds (optional),
//     "require_pkce": bool (default true; S256 only),
//     "issue_refresh_token": "offline_access" (default) | "always" | "never",
//     "rotate_refresh_token": bool (default true: every refresh returns a new one),
//     "logout_auto_submit": bool (default false: the logout page waits for a click on #logout-yes),
//     "offline_access_needs_consent_prompt": bool (default false: see addConsentPrompt below),
//     "scope_claims": { "scope": ["claim", ...] } (optional, merged into the standard
//                     openid/email/profile mapping; account "claims" provide the values)
//   }
//
// What it does: authorization code flow with PKCE; refresh tokens when the
// client asks for `offline_access` (consent is granted automatically, never a
// consent screen); ID tokens carrying the scopes' claims (email, name, ...);
// RP-initiated logout; token revocation and introspection; its own login page
// with real password checks (#username, #password, #sign-in; a wrong password
// re-renders the form with status 401 and an #error element).
// No page it serves loads anything from outside (the package's default pages
// would load web fonts, so every page is replaced).
//
// Test control endpoints (same server, loopback only), JSON in and out:
//   GET  /__test/health                        -> {"ok": true}
//   GET  /__test/stats                         -> {"Session": n, "Grant": n, "RefreshToken": n, ...}
//   POST /__test/revoke   {"username"}         -> revokes every grant (and so every token) of the account
//   POST /__test/logout   {"username"}         -> ends the account's sessions at the OP
//   POST /__test/account  {"username", ...}    -> adds or changes an account (fields as in CONFIG)
//
// What it does not do: TLS, dynamic client registration, persistence (all
// state is in memory and lost on exit), or anything on a non-loopback address.

import { randomBytes, generateKeyPairSync, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import process from 'node:process';

// oidc-provider prints notices with console.info (stdout); stdout carries
// only the issuer line, so every console output goes to stderr.
for (const name of ['log', 'info', 'debug']) {
  console[name] = (...args) => console.error(...args);
}

const configPath = process.argv[2];
if (!configPath) {
  console.error('usage: node op.mjs CONFIG.json');
  process.exit(2);
}
const config = JSON.parse(readFileSync(configPath, 'utf8'));

const { default: Provider, errors } = await import('oidc-provider');

// ---------------------------------------------------------------- accounts

const accounts = new Map();
function putAccount(a) {
  if (!a || typeof a.username !== 'string' || !a.username) throw new Error('account needs a username');
  const previous = accounts.get(a.username) ?? {};
  accounts.set(a.username, { ...previous, ...a });
}
for (const a of config.accounts ?? []) putAccount(a);

function accountClaims(a) {
  return {
    ...(a.claims ?? {}),
    sub: a.username,
    email: a.email,
    email_verified: a.email === undefined ? undefined : true,
    name: a.name,
    preferred_username: a.username,
  };
}

async function findAccount(_ctx, sub) {
  const a = accounts.get(sub);
  if (!a || a.disabled) return undefined;
  return {
    accountId: sub,
    async claims() {
      const now = accounts.get(sub) ?? a;
      return accountClaims(now);
    },
  };
}

// ---------------------------------------------------------------- storage

// In-memory adapter (like the package's own, but enumerable, so the test
// control endpoints can find an account's grants and sessions).
const store = new Map(); // "Model:id" -> { payload, expiresAt }
const GRANTABLE = new Set([
  'AccessToken', 'AuthorizationCode', 'RefreshToken', 'DeviceCode',
  'BackchannelAuthenticationRequest', 'PreAuthorizedCode',
]);

function live(key) {
  const e = store.get(key);
  if (!e) return undefined;
  if (e.expiresAt !== undefined && e.expiresAt <= Date.now()) {
    store.delete(key);
    return undefined;
  }
  return e.payload;
}

class Adapter {
  constructor(model) {
    this.model = model;
  }

  key(id) {
    return `${this.model}:${id}`;
  }

  async upsert(id, payload, expiresIn) {
    const expiresAt = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : undefined;
    store.set(this.key(id), { payload, expiresAt });
  }

  async find(id) {
    return live(this.key(id));
  }

  async findByUid(uid) {
    for (const [key] of store) {
      if (!key.startsWith(`${this.model}:`)) continue;
      const p = live(key);
      if (p && p.uid === uid) return p;
    }
    return undefined;
  }

  async findByUserCode(userCode) {
    for (const [key] of store) {
      if (!key.startsWith(`${this.model}:`)) continue;
      const p = live(key);
      if (p && p.userCode === userCode) return p;
    }
    return undefined;
  }

  async consume(id) {
    const p = live(this.key(id));
    if (p) p.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) {
    store.delete(this.key(id));
  }

  async revokeByGrantId(grantId) {
    revokeGrantTokens(grantId);
  }
}

function revokeGrantTokens(grantId) {
  for (const [key, e] of [...store]) {
    const model = key.slice(0, key.indexOf(':'));
    if (GRANTABLE.has(model) && e.payload.grantId === grantId) store.delete(key);
  }
}

function entries(model) {
  const out = [];
  for (const [key] of [...store]) {
    if (!key.startsWith(`${model}:`)) continue;
    const p = live(key);
    if (p) out.push([key, p]);
  }
  return out;
}

// ---------------------------------------------------------------- pages

function esc(s) {
  return String(s ?? '').replace(/[&<>"']/g, (c) => ({
    '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;',
  })[c]);
}

function page(title, body) {
  return `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>${esc(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{font-family:sans-serif;max-width:28em;margin:2em auto}label,input,button{display:block;margin:.4em 0}#error{color:#b00}</style>
</head><body>
${body}
</body></html>`;
}

function loginPage(uid, params, { error, username } = {}) {
  const user = username ?? params.login_hint ?? '';
  return page('Sign in', `<h1>Sign in</h1>
<p id="client">to ${esc(params.client_id)}</p>
${error ? `<p id="error" role="alert">${esc(error)}</p>` : ''}
<form id="login" method="post" action="/interaction/${esc(uid)}/login">
<label for="username">Username</label><input id="username" name="username" value="${esc(user)}" autocomplete="username" autofocus>
<label for="password">Password</label><input id="password" name="password" type="password" autocomplete="current-password">
<button id="sign-in" type="submit">Sign in</button>
</form>
<form method="post" action="/interaction/${esc(uid)}/abort"><button id="cancel" type="submit">Cancel</button></form>`);
}

// ---------------------------------------------------------------- provider

const server = http.createServer();
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(0, '127.0.0.1', resolve);
});
const { port } = server.address();
const issuer = `http://127.0.0.1:${port}`;

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: randomUUID(), use: 'sig', alg: 'RS256' };

const clients = (config.clients ?? []).map((c) => ({
  grant_types: ['authorization_code', 'refresh_token'],
  response_types: ['code'],
  token_endpoint_auth_method: 'client_secret_basic',
  ...c,
}));

const issueMode = config.issue_refresh_token ?? 'offline_access';
const requirePkce = config.require_pkce ?? true;
const rotate = config.rotate_refresh_token ?? true;
const autoSubmitLogout = config.logout_auto_submit ?? false;

const ttl = {
  AccessToken: config.access_token_ttl ?? 3600,
  AuthorizationCode: config.auth_code_ttl ?? 60,
  IdToken: config.id_token_ttl ?? 3600,
  RefreshToken: config.refresh_token_ttl ?? 14 * 24 * 3600,
  Interaction: 3600,
  Session: config.session_ttl ?? 14 * 24 * 3600,
  Grant: config.grant_ttl ?? 14 * 24 * 3600,
};

const claims = {
  openid: ['sub'],
  email: ['email', 'email_verified'],
  profile: ['name', 'preferred_username'],
  ...(config.scope_claims ?? {}),
};

const provider = new Provider(issuer, {
  adapter: Adapter,
  clients,
  findAccount,
  claims,
  // Scope claims go into the ID token itself, not only into userinfo.
  conformIdTokenClaims: false,
  cookies: { keys: [randomBytes(32).toString('hex')] },
  jwks: { keys: [signingKey] },
  ttl,
  pkce: { required: () => requirePkce },
  features: {
    devInteractions: { enabled: false },
    revocation: { enabled: true },
    introspection: { enabled: true },
    rpInitiatedLogout: {
      enabled: true,
      async logoutSource(ctx, form) {
        ctx.type = 'html';
        ctx.body = page('Sign out', `<h1>Sign out?</h1>
${form}
<button id="logout-yes" type="submit" form="op.logoutForm" name="logout" value="yes">Yes, sign me out</button>
<button id="logout-no" type="submit" form="op.logoutForm">No, stay signed in</button>
${autoSubmitLogout ? `<script>
  const f = document.getElementById('op.logoutForm');
  const i = document.createElement('input');
  i.type = 'hidden'; i.name = 'logout'; i.value = 'yes';
  f.appendChild(i); f.submit();
</script>` : ''}`);
      },
      async postLogoutSuccessSource(ctx) {
        ctx.type = 'html';
        ctx.body = page('Signed out', '<h1 id="signed-out">Signed out</h1>');
      },
    },
  },
  async issueRefreshToken(_ctx, client, code) {
    if (!client.grantTypeAllowed('refresh_token')) return false;
    if (issueMode === 'always') return true;
    if (issueMode === 'never') return false;
    return code.scopes.has('offline_access');
  },
  rotateRefreshToken: () => rotate,
  clientBasedCORS: () => true,
  async renderError(ctx, out) {
    ctx.type = 'html';
    ctx.body = page('Error', `<h1>Error</h1>${Object.entries(out)
      .map(([k, v]) => `<pre class="${esc(k)}"><strong>${esc(k)}</strong>: ${esc(v)}</pre>`).join('')}`);
  },
});

provider.on('server_error', (_ctx, err) => console.error('op: server_error', err));

// ---------------------------------------------------------------- routes

async function readBody(req, limit = 64 * 1024) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > limit) throw new Error('body too large');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function send(res, status, type, body) {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
  res.end(body);
}

function sendJson(res, status, value) {
  send(res, status, 'application/json', JSON.stringify(value));
}

// Grants whatever the interaction is missing: no consent screen, ever.
async function autoConsent(req, res, details) {
  const { prompt: { details: missing }, params, session } = details;
  let grant = details.grantId ? await provider.Grant.find(details.grantId) : undefined;
  if (!grant) grant = new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  if (missing.missingResourceScopes) {
    for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes)) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
  }
  const grantId = await grant.save();
  const consent = details.grantId ? {} : { grantId };
  await provider.interactionFinished(req, res, { consent }, { mergeWithLastSubmission: true });
}

async function interaction(req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) throw new errors.SessionNotFound('interaction mismatch');
  const { prompt, params } = details;

  if (!action && req.method === 'GET') {
    if (prompt.name === 'login') return send(res, 200, 'text/html; charset=utf-8', loginPage(uid, params));
    if (prompt.name === 'consent') return autoConsent(req, res, details);
    return send(res, 400, 'text/plain', `unsupported prompt ${prompt.name}`);
  }

  if (action === 'login' && req.method === 'POST') {
    const form = new URLSearchParams(await readBody(req));
    const username = form.get('username') ?? '';
    const password = form.get('password') ?? '';
    const account = accounts.get(username);
    if (!account || account.disabled || account.password !== password) {
      console.error(`op: failed sign-in for ${JSON.stringify(username)}`);
      return send(res, 401, 'text/html; charset=utf-8',
        loginPage(uid, params, { error: 'Invalid username or password.', username }));
    }
    return provider.interactionFinished(req, res, {
      login: { accountId: username, amr: ['pwd'] },
    }, { mergeWithLastSubmission: false });
  }

  if (action === 'abort' && req.method === 'POST') {
    await readBody(req);
    return provider.interactionFinished(req, res, {
      error: 'access_denied',
      error_description: 'End-User aborted interaction',
    }, { mergeWithLastSubmission: false });
  }

  return send(res, 404, 'text/plain', 'not found');
}

async function control(req, res, path) {
  if (req.method === 'GET' && path === 'health') return sendJson(res, 200, { ok: true });
  if (req.method === 'GET' && path === 'stats') {
    const counts = {};
    for (const [key] of [...store]) {
      if (live(key) === undefined) continue;
      const model = key.slice(0, key.indexOf(':'));
      counts[model] = (counts[model] ?? 0) + 1;
    }
    return sendJson(res, 200, counts);
  }
  if (req.method !== 'POST') return sendJson(res, 405, { error: 'method not allowed' });
  const raw = await readBody(req);
  const body = raw ? JSON.parse(raw) : {};
  if (path === 'account') {
    putAccount(body);
    return sendJson(res, 200, { ok: true });
  }
  if (typeof body.username !== 'string') return sendJson(res, 400, { error: 'username required' });
  if (path === 'revoke') {
    let grants = 0;
    for (const [key, p] of entries('Grant')) {
      if (p.accountId !== body.username) continue;
      const id = key.slice('Grant:'.length);
      revokeGrantTokens(id);
      store.delete(key);
      grants += 1;
    }
    // Tokens whose grant is already gone.
    for (const model of GRANTABLE) {
      for (const [key, p] of entries(model)) if (p.accountId === body.username) store.delete(key);
    }
    return sendJson(res, 200, { grants });
  }
  if (path === 'logout') {
    let sessions = 0;
    for (const [key, p] of entries('Session')) {
      if (p.accountId !== body.username) continue;
      store.delete(key);
      sessions += 1;
    }
    return sendJson(res, 200, { sessions });
  }
  return sendJson(res, 404, { error: 'unknown control endpoint' });
}

const callback = provider.callback();

// oidc-provider drops `offline_access` from an authorization request unless
// it carries prompt=consent (OIDC Core 11). Like most real IdPs, this OP
// issues refresh tokens for a plain `offline_access` request instead: it adds
// `consent` to the prompt (consent is granted automatically, so nothing shows).
// prompt=none is left alone. "offline_access_needs_consent_prompt": true keeps
// the package's strict behaviour.
const strictOffline = config.offline_access_needs_consent_prompt ?? false;
function addConsentPrompt(req, url) {
  if (strictOffline || req.method !== 'GET' || url.pathname !== '/auth') return;
  const scope = url.searchParams.get('scope')?.split(' ') ?? [];
  if (!scope.includes('offline_access')) return;
  const prompt = new Set((url.searchParams.get('prompt') ?? '').split(' ').filter(Boolean));
  if (prompt.has('none') || prompt.has('consent')) return;
  prompt.add('consent');
  url.searchParams.set('prompt', [...prompt].join(' '));
  req.url = `${url.pathname}${url.search}`;
}

server.on('request', (req, res) => {
  const url = new URL(req.url, issuer);
  if (url.pathname === '/favicon.ico') return send(res, 204, 'text/plain', '');
  addConsentPrompt(req, url);
  const m = url.pathname.match(/^\/interaction\/([^/]+)(?:\/(login|abort))?\/?$/);
  const c = url.pathname.match(/^\/__test\/([a-z]+)$/);
  if (!m && !c) return callback(req, res);
  const work = m ? interaction(req, res, m[1], m[2]) : control(req, res, c[1]);
  work.catch((err) => {
    console.error('op: request failed:', err?.message ?? err);
    if (res.headersSent) return res.end();
    const status = err?.statusCode ?? 500;
    if (c) return sendJson(res, status, { error: String(err?.message ?? err) });
    return send(res, status, 'text/html; charset=utf-8',
      page('Error', `<h1>Error</h1><pre id="error">${esc(err?.error ?? 'server_error')}: ${esc(err?.error_description ?? err?.message)}</pre>`));
  });
});

// ---------------------------------------------------------------- lifecycle

let stopping = false;
function stop(why) {
  if (stopping) return;
  stopping = true;
  console.error(`op: stopping (${why})`);
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', () => stop('SIGTERM'));
process.on('SIGINT', () => stop('SIGINT'));
process.stdin.on('end', () => stop('stdin closed'));
process.stdin.on('error', () => stop('stdin error'));
process.stdin.resume();

process.stdout.write(`${JSON.stringify({ issuer })}\n`);
console.error(`op: listening at ${issuer} with ${clients.length} client(s), ${accounts.size} account(s)`);
