// A real browser for Portcullis's end-to-end tests: Debian's headless
// `chromium` (or $PORTCULLIS_CHROMIUM) driven through `playwright-core`,
// controlled line by line over stdin/stdout with JSON.
//
// Protocol: every stdin line is one command, a JSON object
//   {"id": <any>, "op": "<name>", ...arguments, "timeout_ms"?: n}
// answered by exactly one stdout line, in order:
//   {"id": <same>, "ok": true, ...result}   or   {"id": <same>, "ok": false, "error": "..."}
// Commands run one at a time; a failed command never ends the driver.
// The first line printed, before any command, is {"ready": true, "version": "<browser version>"}
// (or {"ready": false, "error": "..."} followed by exit 1 when the browser cannot start).
// Every op has a timeout (default 10000 ms, or the command's timeout_ms).
//
// Ops (arguments -> result fields):
//   goto {url}                 -> {status, url}   final main-frame response status (null if none), URL after redirects
//   fill {selector, value}     -> {}
//   click {selector}           -> {}              waits for a navigation it starts to commit
//   click_nav {selector}       -> {status, url}   clicks and waits for the resulting navigation to load
//   wait_url {prefix}          -> {url}           waits until the page URL starts with prefix (e.g. after a script submits a form)
//   text {selector?}           -> {text}          innerText of selector (default body)
//   content                    -> {html}
//   url                        -> {url}
//   cookies {url?}             -> {cookies: [{name, value, domain, path, httpOnly, secure, sameSite, expires}]}
//   add_cookie {cookie}        -> {}              a Playwright cookie object (name, value, url | domain+path, ...)
//   clear_cookies              -> {}
//   evaluate {script}          -> {value}         script is an async function body; its return value, as JSON
//   ws_open {name, url}        -> {readyState, events}  opens window.__ws[name]; returns once it opened, failed or closed
//   ws_state {name}            -> {readyState, events}  events: [{type: open|message|error|close, data?, code?, reason?, wasClean?}]
//   ws_send {name, data}       -> {}
//   ws_close {name, code?, reason?} -> {}
//   screenshot {path}          -> {path}          full-page PNG, for looking at a failure
//   new_context                -> {}              fresh context (no cookies, no storage) and page
//   close                      -> {}              closes the browser, then the driver exits
// The driver also exits when stdin closes. It does not download browsers,
// proxy traffic, or talk to anything but the URLs it is told to open.

import process from 'node:process';
import readline from 'node:readline';

const { chromium } = await import('playwright-core');

const DEFAULT_TIMEOUT_MS = 10_000;
const executablePath = process.env.PORTCULLIS_CHROMIUM || '/usr/bin/chromium';

function out(obj) {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

let browser;
let context;
let page;

async function newContext() {
  if (context) await context.close().catch(() => {});
  context = await browser.newContext({ ignoreHTTPSErrors: false, javaScriptEnabled: true });
  page = await context.newPage();
  page.on('pageerror', (err) => console.error(`browser: page error: ${err.message}`));
  page.on('console', (msg) => {
    if (['error', 'warning', 'log', 'info'].includes(msg.type())) {
      console.error(`browser: console.${msg.type()}: ${msg.text()}`);
    }
  });
}

try {
  browser = await chromium.launch({
    executablePath,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--disable-dev-shm-usage',
    ],
    timeout: 30_000,
  });
  await newContext();
} catch (err) {
  out({ ready: false, error: `cannot launch ${executablePath}: ${err?.message ?? err}` });
  process.exit(1);
}
out({ ready: true, version: browser.version() });

function need(cmd, field) {
  const v = cmd[field];
  if (typeof v !== 'string') throw new Error(`"${field}" (a string) is required for ${cmd.op}`);
  return v;
}

function withTimeout(promise, ms, op) {
  let timer;
  const t = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${op} timed out after ${ms} ms`)), ms);
  });
  return Promise.race([promise, t]).finally(() => clearTimeout(timer));
}

function wsState(name) {
  return page.evaluate((n) => {
    const w = window.__ws?.[n];
    if (!w) throw new Error(`no WebSocket named ${n}`);
    return { readyState: w.socket.readyState, events: w.events };
  }, name);
}

const ops = {
  async goto(cmd, timeout) {
    const resp = await page.goto(need(cmd, 'url'), { timeout, waitUntil: 'load' });
    return { status: resp ? resp.status() : null, url: page.url() };
  },
  async fill(cmd, timeout) {
    await page.fill(need(cmd, 'selector'), need(cmd, 'value'), { timeout });
    return {};
  },
  async click(cmd, timeout) {
    await page.click(need(cmd, 'selector'), { timeout });
    return {};
  },
  async click_nav(cmd, timeout) {
    const nav = page.waitForNavigation({ timeout, waitUntil: 'load' });
    nav.catch(() => {}); // reported below if the click itself succeeded
    await page.click(need(cmd, 'selector'), { timeout });
    const resp = await nav;
    return { status: resp ? resp.status() : null, url: page.url() };
  },
  async wait_url(cmd, timeout) {
    const prefix = need(cmd, 'prefix');
    await page.waitForURL((u) => u.href.startsWith(prefix), { timeout, waitUntil: 'load' });
    return { url: page.url() };
  },
  async text(cmd, timeout) {
    const selector = typeof cmd.selector === 'string' ? cmd.selector : 'body';
    return { text: await page.innerText(selector, { timeout }) };
  },
  async content() {
    return { html: await page.content() };
  },
  async url() {
    return { url: page.url() };
  },
  async cookies(cmd) {
    const list = await context.cookies(typeof cmd.url === 'string' ? cmd.url : undefined);
    return {
      cookies: list.map((c) => ({
        name: c.name,
        value: c.value,
        domain: c.domain,
        path: c.path,
        httpOnly: c.httpOnly,
        secure: c.secure,
        sameSite: c.sameSite,
        expires: c.expires,
      })),
    };
  },
  async add_cookie(cmd) {
    if (!cmd.cookie || typeof cmd.cookie !== 'object') throw new Error('"cookie" (an object) is required');
    await context.addCookies([cmd.cookie]);
    return {};
  },
  async clear_cookies() {
    await context.clearCookies();
    return {};
  },
  async evaluate(cmd) {
    const script = need(cmd, 'script');
    const value = await page.evaluate(`(async () => {\n${script}\n})()`);
    return { value: value === undefined ? null : value };
  },
  async ws_open(cmd, timeout) {
    const name = need(cmd, 'name');
    const url = need(cmd, 'url');
    await page.evaluate(([n, u]) => {
      window.__ws ??= {};
      const events = [];
      const socket = new WebSocket(u);
      window.__ws[n] = { socket, events };
      socket.onopen = () => events.push({ type: 'open' });
      socket.onerror = () => events.push({ type: 'error' });
      socket.onmessage = (e) => events.push({
        type: 'message',
        data: typeof e.data === 'string' ? e.data : `[binary ${e.data.size ?? e.data.byteLength} bytes]`,
      });
      socket.onclose = (e) => events.push({ type: 'close', code: e.code, reason: e.reason, wasClean: e.wasClean });
    }, [name, url]);
    await page.waitForFunction(
      (n) => window.__ws[n].socket.readyState !== WebSocket.CONNECTING,
      name,
      { timeout, polling: 20 },
    );
    return wsState(name);
  },
  async ws_state(cmd) {
    return wsState(need(cmd, 'name'));
  },
  async ws_send(cmd) {
    const name = need(cmd, 'name');
    const data = need(cmd, 'data');
    await page.evaluate(([n, d]) => {
      const w = window.__ws?.[n];
      if (!w) throw new Error(`no WebSocket named ${n}`);
      w.socket.send(d);
    }, [name, data]);
    return {};
  },
  async ws_close(cmd) {
    const name = need(cmd, 'name');
    await page.evaluate(([n, code, reason]) => {
      const w = window.__ws?.[n];
      if (!w) throw new Error(`no WebSocket named ${n}`);
      w.socket.close(code ?? 1000, reason ?? '');
    }, [name, cmd.code, cmd.reason]);
    return {};
  },
  async screenshot(cmd, timeout) {
    const path = need(cmd, 'path');
    await page.screenshot({ path, fullPage: true, timeout });
    return { path };
  },
  async new_context() {
    await newContext();
    return {};
  },
};

let closing = false;
async function shutdown(code) {
  if (closing) return;
  closing = true;
  await withTimeout(browser.close(), 5000, 'close').catch(() => {});
  process.exit(code);
}

async function handle(line) {
  let cmd;
  try {
    cmd = JSON.parse(line);
    if (!cmd || typeof cmd !== 'object' || Array.isArray(cmd)) throw new Error('a command is a JSON object');
  } catch (err) {
    out({ id: null, ok: false, error: `bad command: ${err.message}` });
    return;
  }
  const id = cmd.id ?? null;
  const timeout = Number.isFinite(cmd.timeout_ms) && cmd.timeout_ms > 0 ? cmd.timeout_ms : DEFAULT_TIMEOUT_MS;
  if (cmd.op === 'close') {
    out({ id, ok: true });
    await shutdown(0);
    return;
  }
  const fn = Object.hasOwn(ops, cmd.op) ? ops[cmd.op] : undefined;
  if (!fn) {
    out({ id, ok: false, error: `unknown op ${JSON.stringify(cmd.op)}` });
    return;
  }
  try {
    // The outer timer is a backstop: Playwright's own timeouts fire first.
    const result = await withTimeout(fn(cmd, timeout), timeout + 2000, cmd.op);
    out({ id, ok: true, ...result });
  } catch (err) {
    const msg = String(err?.message ?? err).split('\n').slice(0, 6).join('\n');
    out({ id, ok: false, error: msg });
  }
}

// Commands run strictly one after another, in the order received.
let chain = Promise.resolve();
const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
rl.on('line', (line) => {
  if (!line.trim()) return;
  chain = chain.then(() => handle(line));
});
rl.on('close', () => {
  chain.then(() => shutdown(0));
});
process.on('SIGTERM', () => shutdown(0));
process.on('SIGINT', () => shutdown(0));
browser.on('disconnected', () => {
  if (!closing) {
    console.error('browser: chromium exited');
    process.exit(1);
  }
});
