// End to end: the real wren binary and two headless Chromium tabs in one room,
// each publishing its fake camera + mic and receiving the other's.
//
//   cd tests/browser && npm ci && npm test
//
// WREN_BIN overrides the server binary (default: target/debug/wren).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { createSocket } from 'node:dgram';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as delay } from 'node:timers/promises';
import { chromium } from 'playwright-core';

const REPO = fileURLToPath(new URL('../..', import.meta.url));
const WREN_BIN = process.env.WREN_BIN ?? join(REPO, 'target/debug/wren');
const CHROMIUM_FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  '--allow-loopback-in-peer-connection', // without it Chromium offers no 127.0.0.1 candidate
  '--autoplay-policy=no-user-gesture-required',
];
const ROOM = `browser-test-${process.pid}`;
const MEDIA_TIMEOUT_MS = 20_000;
// Generous: with two tabs encoding and decoding video on two cores, Playwright's
// actionability checks alone can take a second or two.
const UI_TIMEOUT_MS = 10_000;

let tmp;
let wren;
let context;
let alice; // the page whose stream is measured; joins second, so bob gets it by stream-add
let bob; // joins first, so alice gets bob's stream in her join answer
const pageErrors = [];
const pageConsole = [];

before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'wren-browser-'));
  wren = await startWren();
  // A persistent context is how Playwright takes a --user-data-dir of ours.
  context = await chromium.launchPersistentContext(join(tmp, 'profile'), {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: CHROMIUM_FLAGS,
    env: { ...process.env, TMPDIR: tmp },
    timeout: 30_000,
  });
  context.setDefaultTimeout(15_000);
  alice = await newPage('alice');
  bob = await newPage('bob');
}, { timeout: 60_000 });

after(async () => {
  await context?.close().catch(() => {});
  if (wren) await stopWren(wren.proc);
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

test('both tabs join the room and list each other as peers', { timeout: 30_000 }, diagnosed(async () => {
  await bob.goto(pageUrl('bob'));
  await waitForPublished(bob);
  await alice.goto(pageUrl('alice'));
  await waitForPublished(alice);

  await bob.locator('#peers li[data-uid="alice"]').waitFor({ timeout: UI_TIMEOUT_MS });
  await alice.locator('#peers li[data-uid="bob"]').waitFor({ timeout: UI_TIMEOUT_MS });
}));

test('each tab decodes the other tab\'s video and receives its audio', { timeout: 60_000 }, diagnosed(async () => {
  const aliceMid = await waitForPublished(alice);
  const bobMid = await waitForPublished(bob);
  assert.match(aliceMid, /^alice#\d{6,}$/);
  assert.match(bobMid, /^bob#\d{6,}$/);

  await waitForMedia(bob, aliceMid);
  await waitForMedia(alice, bobMid);
  await bob.locator(`.tile[data-mid="${aliceMid}"] figcaption`, { hasText: 'alice' }).waitFor({ timeout: UI_TIMEOUT_MS });

  const handle = await bob.waitForFunction((mid) => {
    const sub = window.wren.subs.get(mid);
    return sub?.firstFrameAt != null && sub.answeredAt != null && sub.firstFrameAt - sub.answeredAt;
  }, aliceMid, { timeout: UI_TIMEOUT_MS });
  console.log(`first-frame-ms: ${Math.round(await handle.jsonValue())}`);
}));

test('a chat message from one tab appears in the other', { timeout: 30_000 }, diagnosed(async () => {
  await alice.fill('#chat-input', 'hello from alice');
  await alice.press('#chat-input', 'Enter');

  await bob.locator('#chat-log li', { hasText: 'alice: hello from alice' }).waitFor({ timeout: UI_TIMEOUT_MS });
  await alice.locator('#chat-log li', { hasText: 'alice: hello from alice' }).waitFor({ timeout: UI_TIMEOUT_MS });
  assert.equal(await alice.inputValue('#chat-input'), '');
}));

test('unpublishing removes the stream from the other tab; publishing again brings it back', { timeout: 60_000 }, diagnosed(async () => {
  const firstMid = await waitForPublished(alice);
  await alice.uncheck('#publish');
  await bob.locator(`.tile[data-mid="${firstMid}"]`).waitFor({ state: 'detached', timeout: UI_TIMEOUT_MS });
  await alice.waitForFunction(() => window.wren.publisherPc === null, null, { timeout: UI_TIMEOUT_MS });

  await alice.check('#publish');
  const secondMid = await waitForPublished(alice);
  assert.notEqual(secondMid, firstMid);
  await waitForMedia(bob, secondMid);
}));

test('when a tab leaves, the other drops its tile and its peer entry', { timeout: 30_000 }, diagnosed(async () => {
  const aliceMid = await waitForPublished(alice);
  await alice.click('#leave');

  await bob.locator(`.tile[data-mid="${aliceMid}"]`).waitFor({ state: 'detached', timeout: UI_TIMEOUT_MS });
  await bob.locator('#peers li[data-uid="alice"]').waitFor({ state: 'detached', timeout: UI_TIMEOUT_MS });
  assert.equal(await bob.evaluate((mid) => window.wren.subs.has(mid), aliceMid), false);

  await alice.waitForFunction(() => window.wren.state === 'idle', null, { timeout: UI_TIMEOUT_MS });
  assert.deepEqual(await alice.evaluate(() => ({
    subs: window.wren.subs.size,
    publishing: window.wren.publisherPc !== null,
    tiles: document.querySelectorAll('.tile').length,
  })), { subs: 0, publishing: false, tiles: 0 });
  // Bob is still publishing, alone in the room.
  assert.equal(await bob.locator('.tile').count(), 1);
}));

test('the pages raise no JavaScript errors and no request failed', async () => {
  assert.deepEqual(pageErrors, []);
  for (const page of [alice, bob]) {
    assert.deepEqual(await page.evaluate(() => window.wren.log.filter((e) => e.kind === 'error')), []);
  }
});

// --- helpers ---------------------------------------------------------------

function pageUrl(name) {
  return `http://127.0.0.1:${wren.port}/?room=${ROOM}&name=${name}&autojoin=1`;
}

async function newPage(name) {
  const page = await context.newPage();
  page.on('pageerror', (err) => pageErrors.push(`${name}: ${err.message}`));
  page.on('console', (msg) => pageConsole.push(`${name} ${msg.type()}: ${msg.text()}`));
  return page;
}

// Resolves to the mid of the page's own stream once the server accepted it.
async function waitForPublished(page) {
  const handle = await page.waitForFunction(() => window.wren.published?.mid, null, { timeout: 15_000 });
  return handle.jsonValue();
}

// Polls the page's subscriber connection for `mid` until video frames were
// decoded and audio samples received (the <audio> element makes them count).
async function waitForMedia(page, mid) {
  const deadline = Date.now() + MEDIA_TIMEOUT_MS;
  let last;
  while (Date.now() < deadline) {
    last = await page.evaluate(async (mid) => {
      const sub = window.wren.subs.get(mid);
      if (!sub) return { subscribed: false };
      const inbound = {};
      (await sub.pc.getStats()).forEach((report) => {
        if (report.type === 'inbound-rtp') inbound[report.kind] = report;
      });
      return {
        subscribed: true,
        connection: sub.pc.connectionState,
        framesDecoded: inbound.video?.framesDecoded ?? 0,
        totalSamplesReceived: inbound.audio?.totalSamplesReceived ?? 0,
      };
    }, mid);
    if (last.framesDecoded > 0 && last.totalSamplesReceived > 0) return;
    await delay(250);
  }
  assert.fail(`no media for ${mid} within ${MEDIA_TIMEOUT_MS} ms: ${JSON.stringify(last)}`);
}

// Prints the server's output and the pages' console when a test fails.
function diagnosed(fn) {
  return async (t) => {
    try {
      await fn(t);
    } catch (err) {
      console.error(`--- wren output (tail) ---\n${wren?.output().slice(-6000)}`);
      console.error(`--- page console (tail) ---\n${pageConsole.slice(-40).join('\n')}`);
      throw err;
    }
  };
}

async function freePort(kind) {
  if (kind === 'udp') {
    const socket = createSocket('udp4');
    await new Promise((resolve, reject) => socket.once('error', reject).bind(0, '127.0.0.1', resolve));
    const { port } = socket.address();
    await new Promise((resolve) => socket.close(resolve));
    return port;
  }
  const server = createServer();
  await new Promise((resolve, reject) => server.once('error', reject).listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

// Starts the server and resolves once GET / answers 200 (within 10 s).
async function startWren() {
  const port = await freePort('tcp');
  const mediaPort = await freePort('udp');
  const proc = spawn(WREN_BIN, [
    '--listen', `127.0.0.1:${port}`,
    '--media-ip', '127.0.0.1',
    '--media-port', String(mediaPort),
  ], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, TMPDIR: tmp } });
  let output = '';
  proc.stdout.on('data', (chunk) => { output += chunk; });
  proc.stderr.on('data', (chunk) => { output += chunk; });
  const spawned = new Promise((resolve, reject) => proc.once('spawn', resolve).once('error', reject));
  await spawned.catch((err) => assert.fail(`cannot start ${WREN_BIN}: ${err.message}`));
  const server = { proc, port, output: () => output };

  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    if (proc.exitCode !== null || proc.signalCode !== null) {
      assert.fail(`wren exited (${proc.exitCode ?? proc.signalCode}) before it was ready:\n${output}`);
    }
    const status = await fetch(`http://127.0.0.1:${port}/`, { signal: AbortSignal.timeout(1000) })
      .then((res) => res.status, () => null);
    if (status === 200) return server;
    await delay(100);
  }
  await stopWren(proc);
  assert.fail(`wren did not answer GET / within 10 s:\n${output}`);
}

// SIGTERM to the server's own pid; SIGKILL if it is still running after 5 s.
async function stopWren(proc) {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise((resolve) => proc.once('exit', resolve));
  proc.kill('SIGTERM');
  const timedOut = await Promise.race([exited.then(() => false), delay(5000).then(() => true)]);
  if (timedOut) {
    proc.kill('SIGKILL');
    await exited;
  }
}
