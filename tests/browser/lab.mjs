// Browsers in network namespaces: wren in the lab's server namespace, each
// browser in a client namespace of its own, reached through a router, as
// machines on a LAN would (`wren-netlab`, crates/wren-testkit). Firefox
// needs this: it pairs no loopback candidate with a server on 127.0.0.1, and
// in a namespace without a default route it sends no ICE check at all.
//
// Needs root (network namespaces). Environment, beside harness.mjs's:
//   WREN_NETLAB    the lab binary (default: target/debug/wren-netlab)
//   WREN_LOG_FILE  also write wren's output there, lines timed (ms since it started)
//
// The lab's contract: `wren-netlab up --clients N` prints one JSON line
//   {"prefix", "server": {"ns", "ip"}, "clients": [{"ns", "ip"}, ...]}
// then reads commands on stdin, one a line, answering `ok`, `error: ...` or
// JSON (`shape <i> <up|down> [rate=<kbit>] [loss=<pct>] [delay=<ms>]
// [jitter=<ms>]`, `stats <i>`), and tears everything down when stdin closes.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createWriteStream } from 'node:fs';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as delay } from 'node:timers/promises';
import { chromium } from 'playwright-core';
import puppeteer from 'puppeteer-core';
import { CHROMIUM_FLAGS, REPO, WEB_ASSETS, WREN_BIN } from './harness.mjs';

export const WREN_NETLAB = process.env.WREN_NETLAB ?? join(REPO, 'target/debug/wren-netlab');
// The server namespace is the lab's own and new: nothing else listens there.
const HTTP_PORT = 8080;
const MEDIA_PORT = 40000;
const LAB_TIMEOUT_MS = 30_000;

// What Firefox needs to publish headless: a fake camera and microphone
// (it honours the client's 1280x720 request, so it sends three simulcast
// layers) and no permission prompt. Received audio plays without autoplay
// prefs (measured: the <audio> element is not paused and counts samples).
export const FIREFOX_PREFS = {
  'media.navigator.streams.fake': true,
  'media.navigator.permission.disabled': true,
};

// A running lab: its namespaces, and its command line on stdin.
export class Lab {
  constructor(proc, layout, output) {
    this.proc = proc;
    this.prefix = layout.prefix;
    this.server = layout.server;
    this.clients = layout.clients;
    this.output = output;
    this.answers = createInterface({ input: proc.stdout })[Symbol.asyncIterator]();
  }

  // Sends one command and resolves to its answer line; an `error: ...` answer fails.
  async command(line) {
    this.proc.stdin.write(`${line}\n`);
    const { value, done } = await Promise.race([
      this.answers.next(),
      delay(LAB_TIMEOUT_MS).then(() => ({ done: true, value: 'timeout' })),
    ]);
    assert.ok(!done, `wren-netlab gave no answer to "${line}" (${value ?? 'exited'}):\n${this.output()}`);
    assert.ok(!value.startsWith('error'), `wren-netlab refused "${line}": ${value}`);
    return value;
  }

  // Client `i`'s link counters (1-based, as in `shape`): {up, down}, each
  // {bytes, packets, offered_bytes, offered_packets} since the lab started.
  async stats(i) {
    return JSON.parse(await this.command(`stats ${i}`));
  }

  // Closing stdin is the lab's signal to tear everything down.
  async close() {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    const exited = once(this.proc, 'exit');
    this.proc.stdin.end();
    const timedOut = await Promise.race([exited.then(() => false), delay(15_000).then(() => true)]);
    if (timedOut) {
      this.proc.kill('SIGTERM');
      await exited;
    }
  }
}

// Sets up a lab of `clients` client namespaces and resolves once its layout is known.
export async function startLab(clients) {
  assert.equal(process.getuid?.(), 0, 'the lab tests need root (network namespaces): run them as root');
  const proc = spawn(WREN_NETLAB, ['up', '--clients', String(clients)], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  proc.stderr.on('data', (chunk) => { stderr += chunk; });
  await new Promise((resolve, reject) => proc.once('spawn', resolve).once('error', reject))
    .catch((err) => assert.fail(`cannot start ${WREN_NETLAB}: ${err.message} (build it: cargo build -p wren-testkit --bin wren-netlab, or set WREN_NETLAB)`));
  const lines = createInterface({ input: proc.stdout });
  const first = await Promise.race([
    once(lines, 'line').then(([line]) => line),
    once(proc, 'exit').then(() => null),
    delay(LAB_TIMEOUT_MS).then(() => null),
  ]);
  lines.close();
  let layout;
  try {
    layout = JSON.parse(first);
  } catch {
    proc.kill('SIGTERM');
    assert.fail(`wren-netlab did not print its layout (got ${JSON.stringify(first)}):\n${stderr}`);
  }
  assert.ok(layout.server?.ns && layout.server?.ip && layout.clients?.length === clients, `an unexpected layout: ${first}`);
  return new Lab(proc, layout, () => stderr);
}

// Runs `script` (Node, ES module) inside namespace `ns` and resolves to what
// it printed, parsed as JSON: the way to reach an address of the lab from
// the host, which is not in it.
async function nodeIn(ns, script, args = []) {
  const proc = spawn('ip', ['netns', 'exec', ns, process.execPath, '--input-type=module', '-e', script, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  proc.stdout.on('data', (chunk) => { out += chunk; });
  proc.stderr.on('data', (chunk) => { err += chunk; });
  const [code] = await once(proc, 'exit');
  assert.equal(code, 0, `node in ${ns} failed: ${err}`);
  return JSON.parse(out);
}

// In a namespace: polls /healthz until 200 (10 s at most), then fetches the
// web assets, so the caller can compare them with web/.
const HEALTH_SCRIPT = `
const [base, paths] = [process.argv[1], JSON.parse(process.argv[2])];
const deadline = Date.now() + 10000;
let healthy = false;
while (!healthy && Date.now() < deadline) {
  healthy = await fetch(base + '/healthz', { signal: AbortSignal.timeout(1000) }).then((r) => r.status === 200, () => false);
  if (!healthy) await new Promise((r) => setTimeout(r, 100));
}
const assets = {};
if (healthy) for (const p of paths) assets[p] = await fetch(base + p).then((r) => r.text());
console.log(JSON.stringify({ healthy, assets }));
`;

// In a namespace: one TCP connection to 127.0.0.1:PORT there, spliced onto
// stdin/stdout. How the host reaches a browser's control port in a client
// namespace (its 127.0.0.1 is the namespace's own).
const RELAY_SCRIPT = `
import { connect } from 'node:net';
const socket = connect(Number(process.argv[1]), '127.0.0.1');
process.stdin.pipe(socket);
socket.pipe(process.stdout);
socket.on('close', () => process.exit(0));
socket.on('error', () => process.exit(1));
`;

// Browsers and one wren in a lab; the counterpart of harness.mjs's Harness.
export class LabHarness {
  lab = null;
  tmp = null;
  wren = null;
  browsers = []; // {name, close()}
  relays = [];
  pageErrors = [];
  pageConsole = [];

  async start(clients) {
    this.tmp = await mkdtemp(join(tmpdir(), 'wren-lab-browser-'));
    this.lab = await startLab(clients);
  }

  get origin() {
    return `http://${this.lab.server.ip}:${HTTP_PORT}`;
  }

  pageUrl(room, name, params = {}) {
    return `${this.origin}/?${new URLSearchParams({ room, name, autojoin: '1', ...params })}`;
  }

  // wren in the server namespace, bound to its address: its ICE candidate
  // is the lab address the clients route to.
  async startWren() {
    const { ns, ip } = this.lab.server;
    const proc = spawn('ip', ['netns', 'exec', ns, WREN_BIN,
      '--listen', `${ip}:${HTTP_PORT}`, '--media-ip', ip, '--media-port', String(MEDIA_PORT),
      ...(process.env.WREN_LOG_LEVEL ? ['--log-level', process.env.WREN_LOG_LEVEL] : []),
    ], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, TMPDIR: this.tmp } });
    let output = '';
    // WREN_LOG_FILE: the whole output also goes there, each line after the
    // milliseconds since wren started (for reading a run's log afterwards).
    const file = process.env.WREN_LOG_FILE ? createWriteStream(process.env.WREN_LOG_FILE, { flags: 'a' }) : null;
    const started = Date.now();
    const record = (chunk) => {
      output += chunk;
      file?.write(String(chunk).split('\n').filter(Boolean).map((l) => `${Date.now() - started} ${l}\n`).join(''));
    };
    proc.stdout.on('data', record);
    proc.stderr.on('data', record);
    proc.once('exit', () => file?.end());
    await new Promise((resolve, reject) => proc.once('spawn', resolve).once('error', reject));
    this.wren = { proc, output: () => output, started };
    const { healthy, assets } = await nodeIn(ns, HEALTH_SCRIPT, [this.origin, JSON.stringify(Object.keys(WEB_ASSETS))]);
    assert.ok(healthy, `wren in ${ns} did not answer /healthz with 200 within 10 s:\n${output}`);
    for (const [path, file] of Object.entries(WEB_ASSETS)) {
      assert.equal(assets[path], await readFile(join(REPO, 'web', file), 'utf8'),
        `${WREN_BIN} serves another ${file} than web/ has: rebuild it (it compiles web/ in)`);
    }
  }

  // A headless Chromium in client namespace `i` (0-based), with `flags`
  // added to the usual ones. Playwright talks to it over a pipe, so it can
  // live in another namespace.
  async chromium(i, name, { flags = [] } = {}) {
    const ns = this.lab.clients[i].ns;
    const wrapper = await this.wrapper(`chromium-${i}`, ns, '/usr/bin/chromium');
    const context = await chromium.launchPersistentContext(join(this.tmp, `chromium-${i}`), {
      executablePath: wrapper,
      headless: true,
      // The lab's server is plain http on a LAN address: without this the
      // page is no secure context and has no camera.
      args: [...CHROMIUM_FLAGS, `--unsafely-treat-insecure-origin-as-secure=${this.origin}`, ...flags],
      env: { ...process.env, TMPDIR: this.tmp },
      timeout: 30_000,
    });
    context.setDefaultTimeout(15_000);
    this.browsers.push({ name, close: () => context.close() });
    const page = await context.newPage();
    this.watch(page, name);
    return page;
  }

  // A headless Firefox in client namespace `i`, driven over WebDriver BiDi.
  // Firefox has no pipe transport: it listens on 127.0.0.1:PORT of its own
  // namespace, so the host listens on the same port number and relays each
  // connection into the namespace; Puppeteer reads the port Firefox prints
  // and connects to the host side. With `secure: false` the lab's origin is
  // what it is, plain http on a LAN address: no secure context.
  async firefox(i, name, { secure = true } = {}) {
    const ns = this.lab.clients[i].ns;
    const port = await this.relay(ns);
    const wrapper = await this.wrapper(`firefox-${name}`, ns, '/usr/bin/firefox-esr');
    const browser = await puppeteer.launch({
      browser: 'firefox',
      executablePath: wrapper,
      headless: true,
      debuggingPort: port,
      userDataDir: join(this.tmp, `firefox-${name}`),
      extraPrefsFirefox: {
        ...FIREFOX_PREFS,
        // Treat the lab's plain-http origin as secure, as Chromium's flag does.
        ...(secure ? { 'dom.securecontext.allowlist': this.lab.server.ip } : {}),
      },
      env: { ...process.env, TMPDIR: this.tmp },
      timeout: 30_000,
    });
    this.browsers.push({ name, close: () => browser.close() });
    const page = await browser.newPage();
    this.watch(page, name);
    return page;
  }

  watch(page, name) {
    page.on('pageerror', (err) => this.pageErrors.push(`${name}: ${err.message}`));
    page.on('console', (msg) => this.pageConsole.push(`${name} ${msg.type()}: ${msg.text()}`));
  }

  // `exec ip netns exec NS BROWSER "$@"`: the browser in the namespace,
  // started by a driver that knows nothing about namespaces.
  async wrapper(name, ns, browser) {
    const path = join(this.tmp, `${name}.sh`);
    await writeFile(path, `#!/bin/sh\nexec ip netns exec ${ns} ${browser} "$@"\n`);
    await chmod(path, 0o755);
    return path;
  }

  // A host port, free on the host, relayed to the same port in `ns`.
  async relay(ns) {
    const server = createServer((socket) => {
      const proc = spawn('ip', ['netns', 'exec', ns, process.execPath, '--input-type=module', '-e', RELAY_SCRIPT, String(port)], { stdio: ['pipe', 'pipe', 'ignore'] });
      socket.pipe(proc.stdin);
      proc.stdout.pipe(socket);
      proc.on('exit', () => socket.destroy());
      socket.on('close', () => proc.kill());
      socket.on('error', () => proc.kill());
    });
    await new Promise((resolve, reject) => server.once('error', reject).listen(0, '127.0.0.1', resolve));
    const { port } = server.address();
    this.relays.push(server);
    return port;
  }

  async close() {
    for (const browser of this.browsers.splice(0)) await browser.close().catch(() => {});
    for (const server of this.relays.splice(0)) server.close();
    const proc = this.wren?.proc;
    if (proc && proc.exitCode === null && proc.signalCode === null) {
      const exited = once(proc, 'exit');
      proc.kill('SIGTERM');
      if (await Promise.race([exited.then(() => false), delay(5000).then(() => true)])) {
        proc.kill('SIGKILL');
        await exited;
      }
    }
    await this.lab?.close();
    this.lab = null;
    if (this.tmp) await rm(this.tmp, { recursive: true, force: true });
    this.tmp = null;
  }

  diagnosed(fn) {
    return async (t) => {
      try {
        await fn(t);
      } catch (err) {
        console.error(`--- wren output (tail) ---\n${this.wren?.output().slice(-6000)}`);
        console.error(`--- page console (tail) ---\n${this.pageConsole.slice(-40).join('\n')}`);
        throw err;
      }
    };
  }
}
