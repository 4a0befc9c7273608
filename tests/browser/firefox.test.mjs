// Firefox (Debian's firefox-esr, headless, driven by puppeteer-core over
// WebDriver BiDi) with Chromium, through the real wren, in the network lab:
// wren in the server namespace, each browser in a client namespace behind a
// router (see lab.mjs for why Firefox needs that).
// - Firefox and Chromium call each other: each decodes the other's VP8 and
//   receives its Opus.
// - Firefox subscribes to a Chromium publisher sending three simulcast
//   layers, and decodes it.
//
// Needs root. WREN_NETLAB names the lab binary (lab.mjs).
//
//   cd tests/browser && npm test -- firefox.test.mjs

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as delay } from 'node:timers/promises';
import { inboundStats, poll } from './harness.mjs';
import { LabHarness } from './lab.mjs';

const lab = new LabHarness();
let chromium; // a Chromium tab in client namespace 1
let firefox; // a Firefox tab in client namespace 2

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

test('the pages raise no JavaScript errors and no request failed', async () => {
  assert.deepEqual(lab.pageErrors, []);
  for (const page of [chromium, firefox]) {
    assert.deepEqual(await page.evaluate(() => window.wren.log.filter((e) => e.kind === 'error')), []);
  }
});
