// How many simulcast layers the web client publishes, by camera size: a
// 720p camera three (client.test.mjs), a 360p camera two, a smaller one
// one; `?simulcast=0` one; and a browser that refuses the encodings gets one
// layer instead of no stream.
//
// The camera here is Chromium's fake device playing a 640x360 Y4M file this
// test writes (--use-file-for-fake-video-capture): the capture size is the
// file's, whatever the page asks for.
//
//   cd tests/browser && npm test -- simulcast.test.mjs

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Harness, poll, waitForPublished, waitForVideo, writeY4m } from './harness.mjs';

const WIDTH = 640;
const HEIGHT = 360;
const FRAMES = 30; // one second, looped by Chromium

let dir;
let h;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'wren-simulcast-'));
  const clip = join(dir, 'camera.y4m');
  await writeY4m(clip, { width: WIDTH, height: HEIGHT, frames: FRAMES });
  h = new Harness({ flags: [`--use-file-for-fake-video-capture=${clip}`] });
  await h.launch();
  await h.startWren();
}, { timeout: 60_000 });

after(async () => {
  await h?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

// In the page: the camera's size, the rids kept, and the simulcast lines of
// the offer and of the SFU's answer.
function published() {
  const pc = window.wren.publisherPc;
  return {
    camera: (({ width, height }) => ({ width, height }))(window.wren.localStream.getVideoTracks()[0].getSettings()),
    layers: window.wren.camera.layers,
    offer: pc.localDescription.sdp.match(/^a=(rid|simulcast):.*$/gm)?.map((l) => l.trim()) ?? [],
    answer: pc.remoteDescription.sdp.match(/^a=simulcast:.*$/gm)?.map((l) => l.trim()) ?? [],
  };
}

// Publishes with `params` in a new room, checks a subscriber decodes it, and
// resolves to what was published and the sizes each layer is encoded at.
async function publishAndWatch(name, params, setup = async () => {}) {
  const room = `simulcast-${name}-${process.pid}`;
  const publisher = await h.newPage(`${name}-pub`);
  const subscriber = await h.newPage(`${name}-sub`);
  try {
    await setup(publisher);
    await publisher.goto(h.pageUrl(room, 'pub', params));
    const mid = await waitForPublished(publisher);
    await subscriber.goto(h.pageUrl(room, 'sub', { publish: '0' }));
    await waitForVideo(subscriber, mid);
    const encoded = await poll(publisher, async () => {
      const stats = await window.wren.publisherPc.getStats();
      const out = [...stats.values()].filter((r) => r.type === 'outbound-rtp' && r.kind === 'video');
      return out.length > 0 && out.every((r) => r.framesEncoded > 0)
        && out.map((r) => `${r.rid ?? '-'}:${r.frameWidth}x${r.frameHeight}`).sort();
    }, null, { what: 'every layer encoding' });
    return { ...(await publisher.evaluate(published)), encoded, log: await publisher.evaluate(() => window.wren.log) };
  } finally {
    await publisher.close().catch(() => {});
    await subscriber.close().catch(() => {});
  }
}

test('a 640x360 camera is published in two layers', { timeout: 60_000 }, () => h.diagnosed(async () => {
  const got = await publishAndWatch('360p', {});
  console.log(`360p camera: ${JSON.stringify({ ...got, log: undefined })}`);
  assert.deepEqual(got.camera, { width: WIDTH, height: HEIGHT });
  assert.deepEqual(got.layers, ['h', 'f']);
  assert.deepEqual(got.offer, ['a=rid:h send', 'a=rid:f send', 'a=simulcast:send h;f']);
  assert.deepEqual(got.answer, ['a=simulcast:recv h;f']);
  assert.deepEqual(got.encoded, ['f:640x360', 'h:320x180']);
})());

test('?simulcast=0 publishes one layer', { timeout: 60_000 }, () => h.diagnosed(async () => {
  const got = await publishAndWatch('off', { simulcast: '0' });
  assert.deepEqual({ layers: got.layers, offer: got.offer, answer: got.answer, encoded: got.encoded },
    { layers: [], offer: [], answer: [], encoded: ['-:640x360'] });
})());

test('a browser that refuses the simulcast encodings publishes one layer instead', { timeout: 60_000 }, () => h.diagnosed(async () => {
  // What a browser without simulcast for the codec does: addTransceiver throws.
  const refuse = (page) => page.addInitScript(() => {
    const add = RTCPeerConnection.prototype.addTransceiver;
    RTCPeerConnection.prototype.addTransceiver = function addTransceiver(track, init) {
      if ((init?.sendEncodings?.length ?? 0) > 1) throw new DOMException('no simulcast here', 'OperationError');
      return add.call(this, track, init);
    };
  });
  const got = await publishAndWatch('refused', {}, refuse);
  assert.deepEqual({ layers: got.layers, offer: got.offer, encoded: got.encoded }, { layers: [], offer: [], encoded: ['-:640x360'] });
  assert.ok(got.log.some((e) => e.kind === 'info' && /simulcast refused \(OperationError/.test(e.data)), JSON.stringify(got.log.filter((e) => e.kind !== 'send' && e.kind !== 'recv')));
  assert.deepEqual(got.log.filter((e) => e.kind === 'error'), []);
})());

test('the layers chosen for other camera sizes', { timeout: 30_000 }, () => h.diagnosed(async () => {
  const page = await h.newPage('sizes');
  try {
    await page.goto(`http://127.0.0.1:${h.wren.port}/`);
    // The page's own choice (app.js simulcastEncodings), for a track of each size.
    const chosen = await page.evaluate((sizes) => sizes.map(([width, height]) => {
      const encodings = simulcastEncodings({ getSettings: () => ({ width, height }) });
      return `${width}x${height}: ${encodings ? encodings.map((e) => `${e.rid}/${e.scaleResolutionDownBy}@${e.maxBitrate / 1000}k`).join(' ') : 'one layer'}`;
    }), [[1920, 1080], [1280, 720], [720, 1280], [640, 480], [640, 360], [480, 270], [426, 240], [320, 180]]);
    assert.deepEqual(chosen, [
      '1920x1080: q/4@500k h/2@1000k f/1@2000k',
      '1280x720: q/4@150k h/2@500k f/1@2000k',
      '720x1280: q/4@150k h/2@500k f/1@2000k',
      '640x480: h/2@500k f/1@1000k',
      '640x360: h/2@150k f/1@500k',
      '480x270: h/2@150k f/1@500k',
      '426x240: one layer',
      '320x180: one layer',
    ]);
  } finally {
    await page.close().catch(() => {});
  }
})());

test('the pages raise no JavaScript errors', () => {
  assert.deepEqual(h.pageErrors, []);
});
