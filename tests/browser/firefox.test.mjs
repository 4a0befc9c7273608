// Firefox (Debian's firefox-esr, headless, driven by puppeteer-core over
// WebDriver BiDi) with Chromium, through the real wren, in the network lab:
// wren in the server namespace, each browser in a client namespace behind a
// router (see lab.mjs for why Firefox needs that).
// - Firefox and Chromium call each other: each decodes the other's VP8 and
//   receives its Opus.
// - Firefox mutes and stops its camera without renegotiating.
// - Firefox subscribes to a Chromium publisher sending three simulcast
//   layers, and decodes it.
// - Firefox repairs 5 % loss on its downlink (the lab's `shape`) by NACK
//   and RTX.
// - Firefox on the plain-http LAN origin (no secure context) shows the
//   client's message and still watches.
//
// Needs root. WREN_NETLAB names the lab binary (lab.mjs).
//
//   cd tests/browser && npm test -- firefox.test.mjs

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as delay } from 'node:timers/promises';
import { inboundStats, negotiationState, poll, receivedOver } from './harness.mjs';
import { LabHarness } from './lab.mjs';

const lab = new LabHarness();
let chromium; // a Chromium tab in client namespace 1
let firefox; // a Firefox tab in client namespace 2
let insecure; // a Firefox tab in client namespace 2 for which the lab's origin is not secure
// As in client.test.mjs: a measuring window, and time for a control's change to settle.
const WINDOW_MS = 2000;
const SETTLE_MS = 1000;
const LOSS_WINDOW_MS = 8000;

before(async () => {
  await lab.start(2);
  await lab.startWren();
  chromium = await lab.chromium(0, 'chromium');
  firefox = await lab.firefox(1, 'firefox');
}, { timeout: 90_000 });

after(() => lab.close());

const published = (page, who) => poll(page, () => window.wren.published?.mid, null, { what: `${who} publishing` });

// Polls `page`'s subscription to `mid` until video frames were decoded and
// (unless `audio` is false) audio decoded that is not silence, and resolves to its
// stats. The same stats in both browsers: Firefox 153 reports
// totalSamplesReceived too.
async function mediaFrom(page, mid, who, { audio = true } = {}) {
  const deadline = Date.now() + 30_000;
  let last;
  while (Date.now() < deadline) {
    last = await inboundStats(page, mid);
    if (last && last.framesDecoded > 0 && (!audio || (last.totalSamplesReceived > 0 && last.totalAudioEnergy > 0))) return last;
    await delay(250);
  }
  assert.fail(`${who}: no media from ${mid} within 30 s: ${JSON.stringify(last)}`);
}

// In a publishing page: each simulcast layer it sends (rid, size, frames),
// smallest first, once every one of them has encoded frames; else false.
async function layersSent() {
  const stats = await window.wren.publisherPc.getStats();
  const layers = [...stats.values()]
    .filter((r) => r.type === 'outbound-rtp' && r.kind === 'video')
    .map((r) => ({ rid: r.rid ?? null, width: r.frameWidth ?? 0, height: r.frameHeight ?? 0, frames: r.framesEncoded ?? 0 }))
    .sort((a, b) => a.width - b.width);
  return layers.length > 0 && layers.every((l) => l.frames > 0) && layers;
}

test('Firefox and Chromium call each other through wren: VP8 and Opus both ways', { timeout: 90_000 }, lab.diagnosed(async () => {
  const room = `ff-call-${process.pid}`;
  await chromium.goto(lab.pageUrl(room, 'chromium'));
  const chromiumMid = await published(chromium, 'chromium');
  await firefox.goto(lab.pageUrl(room, 'firefox'));
  const firefoxMid = await published(firefox, 'firefox');

  const atFirefox = await mediaFrom(firefox, chromiumMid, 'firefox');
  const atChromium = await mediaFrom(chromium, firefoxMid, 'chromium');
  console.log(`firefox receives chromium: ${JSON.stringify(atFirefox)}`);
  console.log(`chromium receives firefox: ${JSON.stringify(atChromium)}`);
  for (const [who, got] of [['firefox', atFirefox], ['chromium', atChromium]]) {
    assert.equal(got.videoCodec, 'video/VP8', `${who}: ${JSON.stringify(got)}`);
    assert.equal(got.audioCodec?.toLowerCase(), 'audio/opus', `${who}: ${JSON.stringify(got)}`);
    assert.ok(got.framesDecoded > 0 && got.totalSamplesReceived > 0 && got.totalAudioEnergy > 0, `${who}: ${JSON.stringify(got)}`);
  }

  // Firefox publishes in simulcast as Chromium does: rids in the offer, all
  // taken by the SFU, every layer encoded.
  const firefoxPub = await firefox.evaluate(() => ({
    layers: window.wren.camera.layers,
    offer: window.wren.publisherPc.localDescription.sdp.match(/^a=(rid|simulcast):.*$/gm),
    answer: window.wren.publisherPc.remoteDescription.sdp.match(/^a=simulcast:.*$/gm),
  }));
  const sent = await poll(firefox, layersSent, null, { what: 'frames encoded on every layer Firefox sends' });
  console.log(`firefox publishes: ${JSON.stringify({ ...firefoxPub, sent })}`);
  assert.deepEqual(firefoxPub.layers, ['q', 'h', 'f']);
  assert.deepEqual(firefoxPub.answer.map((l) => l.trim()), ['a=simulcast:recv q;h;f']);
  assert.deepEqual(sent.map((l) => l.rid), ['q', 'h', 'f']);
}));

test('Firefox mutes and stops its camera without renegotiating: Chromium gets silence, then no frames, then both back', { timeout: 90_000 }, lab.diagnosed(async () => {
  const room = `ff-controls-${process.pid}`;
  await firefox.goto(lab.pageUrl(room, 'firefox-controls'));
  const firefoxMid = await published(firefox, 'firefox');
  await chromium.goto(lab.pageUrl(room, 'chromium-controls', { publish: '0' }));
  await mediaFrom(chromium, firefoxMid, 'chromium');
  const negotiated = await negotiationState(firefox);
  const before = await receivedOver(chromium, firefoxMid, WINDOW_MS);
  assert.ok(before.audioEnergy > 0 && before.frames > 0, `nothing from Firefox to begin with: ${JSON.stringify(before)}`);

  await firefox.click('#mic');
  await firefox.click('#camera');
  await poll(firefox, () => {
    const pressed = (id) => document.getElementById(id).getAttribute('aria-pressed') === 'true';
    return pressed('mic') && pressed('camera') && window.wren.publisherPc.getSenders().every((s) => s.track?.kind !== 'video');
  }, null, { what: 'Firefox muted with its camera off' });
  await delay(SETTLE_MS);
  const off = await receivedOver(chromium, firefoxMid, WINDOW_MS);

  await firefox.click('#mic');
  await firefox.click('#camera');
  await poll(chromium, (mid) => Number(document.querySelector(`.tile[data-mid="${CSS.escape(mid)}"]`)?.dataset.fps) > 0, firefoxMid,
    { what: 'Chromium\'s tile of Firefox moving again' });
  await delay(SETTLE_MS);
  const on = await receivedOver(chromium, firefoxMid, WINDOW_MS);
  console.log(`chromium receives firefox over ${WINDOW_MS} ms: before ${JSON.stringify(before)}, `
    + `muted and camera off ${JSON.stringify(off)}, back ${JSON.stringify(on)}`);
  // Unlike Chromium (no frame at all), Firefox keeps the video stream alive
  // after replaceTrack(null) with about one frame a second (measured: 2 in
  // 2 s, the picture unchanged): the camera's 30 a second stop.
  assert.ok(off.frames <= 3, `the camera's frames still arrive: ${JSON.stringify({ before, off })}`);
  assert.ok(off.audioPackets > 0 && off.audioEnergy < before.audioEnergy / 100, JSON.stringify({ before, off }));
  assert.ok(on.frames > 0 && on.audioEnergy > before.audioEnergy / 10, JSON.stringify({ before, on }));
  assert.deepEqual(await negotiationState(firefox), negotiated);
}));

// In a page: the repair counters of its subscription to `mid`'s video.
async function videoRepair(mid) {
  let video = {};
  (await window.wren.subs.get(mid).pc.getStats()).forEach((r) => {
    if (r.type === 'inbound-rtp' && r.kind === 'video') video = r;
  });
  return {
    framesDecoded: video.framesDecoded ?? 0,
    packetsLost: video.packetsLost ?? 0,
    nackCount: video.nackCount ?? 0,
    pliCount: video.pliCount ?? 0,
    freezeCount: video.freezeCount ?? 0,
  };
}

test('Firefox decodes a Chromium publisher\'s simulcast stream', { timeout: 90_000 }, lab.diagnosed(async () => {
  const room = `ff-simulcast-${process.pid}`;
  await chromium.goto(lab.pageUrl(room, 'chromium-sc'));
  const mid = await published(chromium, 'chromium');
  assert.deepEqual(await chromium.evaluate(() => window.wren.camera.layers), ['q', 'h', 'f']);
  await firefox.goto(lab.pageUrl(room, 'firefox-sc', { publish: '0' }));
  const got = await mediaFrom(firefox, mid, 'firefox', { audio: false });
  const tile = await poll(firefox, (mid) => {
    const el = document.querySelector(`.tile[data-mid="${CSS.escape(mid)}"]`);
    return Number(el?.dataset.fps) > 0 && { width: el.dataset.width, height: el.dataset.height, fps: el.dataset.fps };
  }, mid, { what: 'a frame rate on Firefox\'s tile' });
  console.log(`firefox decodes the simulcast stream: ${JSON.stringify(got)}; its tile: ${JSON.stringify(tile)}`);
  assert.ok(got.framesDecoded > 0);
}));

test('Firefox repairs 5 % loss on its downlink through NACK and RTX', { timeout: 90_000 }, lab.diagnosed(async () => {
  const room = `ff-loss-${process.pid}`;
  await chromium.goto(lab.pageUrl(room, 'chromium-loss', { simulcast: '0' }));
  const mid = await published(chromium, 'chromium');
  await firefox.goto(lab.pageUrl(room, 'firefox-loss', { publish: '0' }));
  await mediaFrom(firefox, mid, 'firefox');
  // Client 2 is Firefox's namespace (the lab counts from 1).
  await lab.lab.command('shape 2 down loss=5');
  try {
    const before = await firefox.evaluate(videoRepair, mid);
    await delay(LOSS_WINDOW_MS);
    const after = await firefox.evaluate(videoRepair, mid);
    const link = JSON.parse(await lab.lab.command('stats 2'));
    const got = Object.fromEntries(Object.keys(after).map((k) => [k, after[k] - before[k]]));
    console.log(`firefox over ${LOSS_WINDOW_MS} ms at 5 % loss: ${JSON.stringify(got)}; link ${JSON.stringify(link.down)}`);
    assert.ok(link.down.offered_packets > link.down.packets, `the link dropped nothing: ${JSON.stringify(link)}`);
    assert.ok(got.nackCount > 0, `no NACK sent: ${JSON.stringify(got)}`);
    // Repaired, not frozen: at least half the publisher's ~20 fps went on decoding.
    assert.ok(got.framesDecoded > (LOSS_WINDOW_MS / 1000) * 10, `video froze: ${JSON.stringify(got)}`);
  } finally {
    await lab.lab.command('shape 2 down');
  }
}));

test('Firefox on a plain-http LAN page says why there is no camera, and can still watch', { timeout: 90_000 }, lab.diagnosed(async () => {
  const room = `ff-insecure-${process.pid}`;
  await chromium.goto(lab.pageUrl(room, 'chromium-pub'));
  const mid = await published(chromium, 'chromium');
  // A second Firefox, without the allowlist pref: http://10.77.0.2 is what it is.
  insecure = await lab.firefox(1, 'firefox-insecure', { secure: false });
  await insecure.goto(lab.pageUrl(room, 'firefox-insecure'));
  const problem = await poll(insecure, () => window.wren.state === 'joined' && {
    secure: window.isSecureContext,
    reason: document.getElementById('media-problem').dataset.reason,
    text: document.getElementById('media-problem').textContent,
    publishDisabled: document.getElementById('publish').disabled,
    publishing: window.wren.publisherPc !== null,
  }, null, { what: 'the insecure Firefox page joined' });
  assert.deepEqual({ ...problem, text: undefined }, { secure: false, reason: 'insecure', text: undefined, publishDisabled: true, publishing: false });
  assert.match(problem.text, /not a secure context \(http:\/\/10\.77\.0\.2:8080\)/);
  const got = await mediaFrom(insecure, mid, 'firefox-insecure');
  assert.ok(got.framesDecoded > 0);
}));

test('the pages raise no JavaScript errors and no request failed', async () => {
  assert.deepEqual(lab.pageErrors, []);
  // The insecure page's only error entry is its camera message.
  assert.deepEqual(await insecure.evaluate(() => window.wren.log.filter((e) => e.kind === 'error').map((e) => e.data)),
    ['InsecureContextError: ' + await insecure.evaluate(() => window.wren.mediaProblem.message)]);
  for (const page of [chromium, firefox]) {
    assert.deepEqual(await page.evaluate(() => window.wren.log.filter((e) => e.kind === 'error')), []);
  }
});
