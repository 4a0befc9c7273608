// What the browser tests share: the wren binary, one headless Chromium, its
// tabs, and polling a tab's WebRTC stats.
//
// Environment:
//   WREN_BIN        the server binary (default: target/debug/wren)
//   WREN_LOG_LEVEL  its --log-level (default: the binary's own, info)
//   WREN_NETLAB     the network lab binary of the Firefox tests (lab.mjs)

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { createSocket } from 'node:dgram';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { randomFillSync } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as delay } from 'node:timers/promises';
import { chromium } from 'playwright-core';

export const REPO = fileURLToPath(new URL('../..', import.meta.url));
export const WREN_BIN = process.env.WREN_BIN ?? join(REPO, 'target/debug/wren');
// URL path -> the file in web/ the binary compiled in for it.
export const WEB_ASSETS = { '/': 'index.html', '/app.js': 'app.js', '/style.css': 'style.css' };
export const CHROMIUM_FLAGS = [
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
export const MEDIA_TIMEOUT_MS = 20_000;
// Generous: with two tabs encoding and decoding video on two cores, Playwright's
// actionability checks alone can take a second or two.
export const UI_TIMEOUT_MS = 10_000;

// One browser and (at a time) one wren server, plus what their pages logged.
//
// Options change how Chromium starts, for the tests of a browser that is not
// the usual fake-everything one: `flags` are added, `dropFlags` removed
// (e.g. without --use-fake-device-for-media-stream there is no camera), and
// `host` is the name pages load the server by (another name than 127.0.0.1
// makes the page an insecure context; map it with --host-resolver-rules).
export class Harness {
  tmp = null;
  context = null;
  wren = null; // {proc, port, output()} while a server runs
  lastWren = null; // the same, kept after the server stopped, for diagnostics
  pageErrors = [];
  pageConsole = [];

  constructor({ flags = [], dropFlags = [], host = '127.0.0.1' } = {}) {
    const unknown = dropFlags.filter((flag) => !CHROMIUM_FLAGS.includes(flag));
    if (unknown.length > 0) throw new Error(`dropFlags names flags the harness does not set: ${unknown.join(' ')}`);
    this.flags = [...CHROMIUM_FLAGS.filter((flag) => !dropFlags.includes(flag)), ...flags];
    this.host = host;
  }

  async launch() {
    this.tmp = await mkdtemp(join(tmpdir(), 'wren-browser-'));
    // A persistent context is how Playwright takes a --user-data-dir of ours.
    this.context = await chromium.launchPersistentContext(join(this.tmp, 'profile'), {
      executablePath: '/usr/bin/chromium',
      headless: true,
      args: this.flags,
      env: { ...process.env, TMPDIR: this.tmp },
      timeout: 30_000,
    });
    this.context.setDefaultTimeout(15_000);
  }

  async close() {
    await this.context?.close().catch(() => {});
    this.context = null;
    await this.stopWren();
    if (this.tmp) await rm(this.tmp, { recursive: true, force: true });
    this.tmp = null;
  }

  // A tab whose uncaught errors and console output are recorded under `name`.
  async newPage(name) {
    const page = await this.context.newPage();
    page.on('pageerror', (err) => this.pageErrors.push(`${name}: ${err.message}`));
    page.on('console', (msg) => this.pageConsole.push(`${name} ${msg.type()}: ${msg.text()}`));
    return page;
  }

  // The web client joining `room` as `name` on load; `params` are more URL
  // parameters; `server`: another than this.wren (see spawnWren).
  pageUrl(room, name, params = {}, server = this.wren) {
    const query = new URLSearchParams({ room, name, autojoin: '1', ...params });
    return `http://${this.host}:${server.port}/?${query}`;
  }

  // Starts the server and resolves once it can carry calls (within 10 s):
  // /healthz answers 200 only once its SFU child is connected, GET / before.
  // `args` are added to its command line.
  async startWren(args = []) {
    assert.equal(this.wren, null, 'a wren server is already running');
    this.wren = this.lastWren = await this.spawnWren(args);
    return this.wren;
  }

  // Another server besides `this.wren` (a node of a cluster, say), started
  // as startWren starts one; the caller stops it with stopServer().
  async spawnWren(args = []) {
    const port = await freePort('tcp');
    const mediaPort = await freePort('udp');
    const logLevel = process.env.WREN_LOG_LEVEL ? ['--log-level', process.env.WREN_LOG_LEVEL] : [];
    const proc = spawn(WREN_BIN, [
      '--listen', `127.0.0.1:${port}`,
      '--media-ip', '127.0.0.1',
      '--media-port', String(mediaPort),
      ...logLevel,
      ...args,
    ], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, TMPDIR: this.tmp } });
    let output = '';
    proc.stdout.on('data', (chunk) => { output += chunk; });
    proc.stderr.on('data', (chunk) => { output += chunk; });
    const spawned = new Promise((resolve, reject) => proc.once('spawn', resolve).once('error', reject));
    await spawned.catch((err) => assert.fail(`cannot start ${WREN_BIN}: ${err.message}`));
    const server = { proc, port, mediaPort, output: () => output };

    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      if (proc.exitCode !== null || proc.signalCode !== null) {
        assert.fail(`wren exited (${proc.exitCode ?? proc.signalCode}) before it was ready:\n${output}`);
      }
      const status = await fetch(`http://127.0.0.1:${port}/healthz`, { signal: AbortSignal.timeout(1000) })
        .then((res) => res.status, () => null);
      if (status === 200) {
        await checkEmbeddedWeb(server);
        return server;
      }
      await delay(100);
    }
    await stopServer(server);
    assert.fail(`wren's /healthz did not answer 200 within 10 s:\n${output}`);
  }

  // SIGTERM to the server's own pid; SIGKILL if it is still running after 5 s.
  async stopWren() {
    const server = this.wren;
    this.wren = null;
    await stopServer(server);
  }

  // Wraps a test body: when it fails, prints the server's output and the pages' console.
  diagnosed(fn) {
    return async (t) => {
      try {
        await fn(t);
      } catch (err) {
        console.error(`--- wren output (tail) ---\n${this.lastWren?.output().slice(-6000)}`);
        console.error(`--- page console (tail) ---\n${this.pageConsole.slice(-40).join('\n')}`);
        throw err;
      }
    };
  }
}

// The binary compiles web/ in: a binary built before the last edit there
// would test an old client, and a test of a new feature would fail obscurely.
async function checkEmbeddedWeb(server) {
  const stale = [];
  for (const [path, file] of Object.entries(WEB_ASSETS)) {
    const served = await fetch(`http://127.0.0.1:${server.port}${path}`, { signal: AbortSignal.timeout(5000) })
      .then((res) => res.text());
    if (served !== await readFile(join(REPO, 'web', file), 'utf8')) stale.push(file);
  }
  if (stale.length > 0) {
    await stopServer(server);
    assert.fail(`${WREN_BIN} serves another ${stale.join(', ')} than web/ has: rebuild it (it compiles web/ in)`);
  }
}

// SIGTERM to a server's own pid; SIGKILL if it is still running after 5 s.
export async function stopServer(server) {
  const proc = server?.proc;
  if (!proc) return;
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise((resolve) => proc.once('exit', resolve));
  proc.kill('SIGTERM');
  const timedOut = await Promise.race([exited.then(() => false), delay(5000).then(() => true)]);
  if (timedOut) {
    proc.kill('SIGKILL');
    await exited;
  }
}

// Resolves to the mid of the page's own stream once the server accepted it.
export async function waitForPublished(page) {
  const handle = await page.waitForFunction(() => window.wren.published?.mid, null, { timeout: 15_000 });
  return handle.jsonValue();
}

// Polls the page's subscriber connection for `mid` until video frames were
// decoded and audio samples received (the <audio> element makes them count).
// Resolves to the last stats, with the mime type of the video codec received.
export async function waitForMedia(page, mid) {
  const deadline = Date.now() + MEDIA_TIMEOUT_MS;
  let last;
  while (Date.now() < deadline) {
    last = await page.evaluate(async (mid) => {
      const sub = window.wren.subs.get(mid);
      if (!sub) return { subscribed: false };
      const stats = await sub.pc.getStats();
      const inbound = {};
      stats.forEach((report) => {
        if (report.type === 'inbound-rtp') inbound[report.kind] = report;
      });
      return {
        subscribed: true,
        connection: sub.pc.connectionState,
        framesDecoded: inbound.video?.framesDecoded ?? 0,
        totalSamplesReceived: inbound.audio?.totalSamplesReceived ?? 0,
        videoCodec: stats.get(inbound.video?.codecId)?.mimeType ?? null,
      };
    }, mid);
    if (last.framesDecoded > 0 && last.totalSamplesReceived > 0) return last;
    await delay(250);
  }
  assert.fail(`no media for ${mid} within ${MEDIA_TIMEOUT_MS} ms: ${JSON.stringify(last)}`);
}

// Milliseconds from the subscribe answer to the first video frame shown for `mid`.
export async function firstFrameMs(page, mid) {
  const handle = await page.waitForFunction((mid) => {
    const sub = window.wren.subs.get(mid);
    return sub?.firstFrameAt != null && sub.answeredAt != null && sub.firstFrameAt - sub.answeredAt;
  }, mid, { timeout: UI_TIMEOUT_MS });
  return Math.round(await handle.jsonValue());
}

export async function freePort(kind) {
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

// Evaluates `fn(arg)` in the page every 250 ms until it returns something
// truthy, and resolves to that. Works with Playwright's and Puppeteer's pages
// alike (their waitForFunction signatures differ). `what` names the wait in
// the failure, with the last value seen.
export async function poll(page, fn, arg, { timeout = MEDIA_TIMEOUT_MS, what = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  while (Date.now() < deadline) {
    last = await page.evaluate(fn, arg);
    if (last) return last;
    await delay(250);
  }
  assert.fail(`${what}: not within ${timeout} ms (last: ${JSON.stringify(last)})`);
}

// The page's subscriber connection for `mid`, as the tests compare it: what
// it decoded and received so far.
export async function inboundStats(page, mid) {
  return page.evaluate(async (mid) => {
    const sub = window.wren.subs.get(mid);
    if (!sub) return null;
    const stats = await sub.pc.getStats();
    const inbound = {};
    stats.forEach((report) => {
      if (report.type === 'inbound-rtp') inbound[report.kind] = report;
    });
    return {
      connection: sub.pc.connectionState,
      framesDecoded: inbound.video?.framesDecoded ?? 0,
      frameWidth: inbound.video?.frameWidth ?? 0,
      frameHeight: inbound.video?.frameHeight ?? 0,
      videoCodec: stats.get(inbound.video?.codecId)?.mimeType ?? null,
      audioPackets: inbound.audio?.packetsReceived ?? 0,
      totalSamplesReceived: inbound.audio?.totalSamplesReceived ?? 0,
      totalAudioEnergy: inbound.audio?.totalAudioEnergy ?? 0,
      audioCodec: stats.get(inbound.audio?.codecId)?.mimeType ?? null,
    };
  }, mid);
}

// Polls until the page decoded video frames of `mid` (no audio needed: a
// screen share has none). Resolves to the stats.
export async function waitForVideo(page, mid) {
  return poll(page, async (mid) => {
    const sub = window.wren.subs.get(mid);
    if (!sub) return null;
    let frames = 0;
    (await sub.pc.getStats()).forEach((r) => {
      if (r.type === 'inbound-rtp' && r.kind === 'video') frames = r.framesDecoded ?? 0;
    });
    return frames > 0 && { framesDecoded: frames };
  }, mid, { what: `video frames of ${mid}` });
}

// How much the page's subscription to `mid` received over `ms`: the change
// of decoded frames and of audio energy (the sum of squared sample levels,
// 0 for silence).
export async function receivedOver(page, mid, ms) {
  const before = await inboundStats(page, mid);
  await delay(ms);
  const after = await inboundStats(page, mid);
  return {
    frames: after.framesDecoded - before.framesDecoded,
    audioEnergy: after.totalAudioEnergy - before.totalAudioEnergy,
    audioPackets: after.audioPackets - before.audioPackets,
  };
}

// What would change if the page renegotiated its camera publish: the offers
// it made, the publish requests it sent, and the SDP of the connection.
export async function negotiationState(page) {
  return page.evaluate(() => ({
    offers: window.wren.offers,
    publishRequests: window.wren.log.filter((e) => e.kind === 'send' && e.data.method === 'publish').length,
    localSdp: window.wren.publisherPc?.localDescription?.sdp ?? null,
    signalingState: window.wren.publisherPc?.signalingState ?? null,
  }));
}

// The data attributes a tile shows its video with.
export async function tileVideo(page, mid) {
  return page.evaluate((mid) => {
    const el = document.querySelector(`.tile[data-mid="${CSS.escape(mid)}"]`);
    if (!el) return null;
    const num = (v) => (v === undefined ? null : Number(v));
    return {
      width: num(el.dataset.width),
      height: num(el.dataset.height),
      fps: num(el.dataset.fps),
      layersSending: num(el.dataset.layersSending),
      text: el.querySelector('.stats')?.textContent ?? null,
    };
  }, mid);
}

// Writes a Y4M (4:2:0) clip for Chromium's --use-file-for-fake-video-capture
// (the capture size is the file's, whatever the page asks for; Chromium
// loops it): a bright bar moving across grey, so that every frame differs
// and the encoder keeps sending. With `noise`, each frame also carries
// random 4x4 luma blocks of that amplitude (0-127), new every frame, in a
// centred box `noiseBox` of the picture's width and height (1: all of it):
// detail that costs bits at every size, as a camera's picture does, where
// the bar alone costs a few kbit/s.
export async function writeY4m(path, { width, height, frames = 30, noise = 0, noiseBox = 1 }) {
  const parts = [Buffer.from(`YUV4MPEG2 W${width} H${height} F30:1 Ip A1:1 C420jpeg\n`)];
  const bar = Math.max(8, Math.round(width / 16));
  const random = Buffer.alloc(Math.ceil(width / 4) * Math.ceil(height / 4));
  for (let f = 0; f < frames; f += 1) {
    const luma = Buffer.alloc(width * height, 60);
    if (noise > 0) {
      randomFillSync(random);
      const across = Math.ceil(width / 4);
      const [boxW, boxH] = [Math.round(width * noiseBox), Math.round(height * noiseBox)];
      const [left, top] = [Math.round((width - boxW) / 2), Math.round((height - boxH) / 2)];
      for (let row = top; row < top + boxH; row += 1) {
        for (let col = left; col < left + boxW; col += 1) {
          luma[row * width + col] = 128 - noise + ((random[(row >> 2) * across + (col >> 2)] * 2 * noise) >> 8);
        }
      }
    }
    for (let row = 0; row < height; row += 1) {
      for (let col = 0; col < bar; col += 1) luma[row * width + ((col + f * Math.round(width / 40)) % width)] = 220;
    }
    parts.push(Buffer.from('FRAME\n'), luma, Buffer.alloc((width / 2) * (height / 2) * 2, 128));
  }
  await writeFile(path, Buffer.concat(parts));
}
