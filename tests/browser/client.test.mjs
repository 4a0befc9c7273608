// The web client's meeting controls, in real Chromium tabs through the real
// wren: simulcast publishing and the tiles' resolution / frame-rate display,
// mute and camera off (seen by the other side, and no renegotiation), and
// screen sharing as a second publish.
//
//   cd tests/browser && npm test -- client.test.mjs

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as delay } from 'node:timers/promises';
import {
  Harness, UI_TIMEOUT_MS, inboundStats, negotiationState, poll, receivedOver, tileVideo, waitForMedia,
  waitForPublished, waitForVideo,
} from './harness.mjs';

const ROOM = `client-${process.pid}`;
// Long enough for a few Opus packets' energy and a few frames to add up,
// short enough to keep the suite quick.
const WINDOW_MS = 2000;
// After a control changes, what is already on its way (jitter buffers, the
// frame being encoded) drains before a window is measured.
const SETTLE_MS = 1000;

const h = new Harness();
let alice; // publishes her camera, mutes, stops it, shares her screen
let bob; // only watches
let aliceMid;

before(async () => {
  await h.launch();
  await h.startWren();
  alice = await h.newPage('alice');
  bob = await h.newPage('bob');
  await alice.goto(h.pageUrl(ROOM, 'alice'));
  aliceMid = await waitForPublished(alice);
  await bob.goto(h.pageUrl(ROOM, 'bob', { publish: '0' }));
  await waitForMedia(bob, aliceMid);
}, { timeout: 60_000 });

after(() => h.close());

test('a 720p camera is published in three simulcast layers, and the tiles show resolution and frame rate', { timeout: 60_000 }, h.diagnosed(async () => {
  const { offer, answer, layers } = await alice.evaluate(() => ({
    offer: window.wren.publisherPc.localDescription.sdp,
    answer: window.wren.publisherPc.remoteDescription.sdp,
    layers: window.wren.camera.layers,
  }));
  // Chromium's fake camera gives the 1280x720 the client asks for: three layers.
  assert.deepEqual(layers, ['q', 'h', 'f']);
  assert.deepEqual(offer.match(/^a=rid:\S+ send/gm), ['a=rid:q send', 'a=rid:h send', 'a=rid:f send']);
  assert.match(offer, /^a=simulcast:send q;h;f\r?$/m);
  // The SFU takes all of them.
  assert.match(answer, /^a=simulcast:recv q;h;f\r?$/m);

  // The publisher's outbound reports: one per layer, each at its own size.
  const sent = await poll(alice, async () => {
    const stats = await window.wren.publisherPc.getStats();
    const out = [...stats.values()].filter((r) => r.type === 'outbound-rtp' && r.kind === 'video');
    return out.some((r) => r.framesEncoded > 0) && out.map((r) => ({ rid: r.rid, width: r.frameWidth, frames: r.framesEncoded }));
  }, null, { what: 'encoded frames on the publisher' });
  console.log(`layers sent: ${JSON.stringify(sent)}`);
  assert.deepEqual(sent.map((r) => r.rid).sort(), ['f', 'h', 'q']);

  // Which layer the SFU forwards is its choice (any of the three, today);
  // the subscriber's tile shows whatever it decodes, refreshed every second.
  const remote = await poll(bob, (mid) => {
    const el = document.querySelector(`.tile[data-mid="${CSS.escape(mid)}"]`);
    return Number(el?.dataset.fps) > 0 && Number(el.dataset.width) > 0 && el.dataset.width;
  }, aliceMid, { what: 'a resolution and frame rate on bob\'s tile of alice' });
  const shown = await tileVideo(bob, aliceMid);
  const decoded = await inboundStats(bob, aliceMid);
  console.log(`bob's tile of alice: ${JSON.stringify(shown)}; decoded ${decoded.frameWidth}x${decoded.frameHeight}`);
  assert.ok(Number(remote) > 0);
  assert.ok(shown.height > 0 && shown.fps > 0, JSON.stringify(shown));
  assert.match(shown.text, /^\d+×\d+ · \d+ fps$/);
  // Whatever layer it is (or however Chromium scaled it), it is the camera's 16:9.
  assert.ok(Math.abs(shown.width / shown.height - 16 / 9) < 0.05, `not 16:9: ${JSON.stringify(shown)}`);

  // Alice's own tile shows what she sends: the largest layer and how many are moving.
  const local = await poll(alice, () => {
    const el = document.querySelector('.tile[data-mid="local"]');
    return Number(el?.dataset.fps) > 0 && Number(el.dataset.layersSending) > 0;
  }, null, { what: 'frame rate and layers on alice\'s own tile' }).then(() => tileVideo(alice, 'local'));
  console.log(`alice's own tile: ${JSON.stringify(local)}`);
  assert.ok(local.width > 0 && local.height > 0, JSON.stringify(local));
  assert.ok(local.layersSending >= 1 && local.layersSending <= 3, JSON.stringify(local));
}));

test('mute silences alice at bob\'s side, unmute brings her back, and neither renegotiates', { timeout: 60_000 }, h.diagnosed(async () => {
  const negotiated = await negotiationState(alice);
  const speaking = await receivedOver(bob, aliceMid, WINDOW_MS);
  assert.ok(speaking.audioEnergy > 0, `no audio energy before muting: ${JSON.stringify(speaking)}`);

  await alice.click('#mic');
  assert.equal(await alice.getAttribute('#mic', 'aria-pressed'), 'true');
  assert.deepEqual(await alice.evaluate(() => window.wren.localStream.getAudioTracks().map((t) => t.enabled)), [false]);
  await delay(SETTLE_MS);
  const muted = await receivedOver(bob, aliceMid, WINDOW_MS);

  await alice.click('#mic');
  assert.equal(await alice.getAttribute('#mic', 'aria-pressed'), 'false');
  await delay(SETTLE_MS);
  const unmuted = await receivedOver(bob, aliceMid, WINDOW_MS);
  console.log(`audio energy over ${WINDOW_MS} ms: speaking ${speaking.audioEnergy}, muted ${muted.audioEnergy}, unmuted ${unmuted.audioEnergy}`);

  // A muted track still sends (silent) packets: the stream stays up.
  assert.ok(muted.audioPackets > 0, `no audio packets while muted: ${JSON.stringify(muted)}`);
  assert.ok(muted.audioEnergy < speaking.audioEnergy / 100, `still audible while muted: ${JSON.stringify({ speaking, muted })}`);
  assert.ok(unmuted.audioEnergy > speaking.audioEnergy / 10, `not audible again after unmuting: ${JSON.stringify({ speaking, unmuted })}`);
  assert.deepEqual(await negotiationState(alice), negotiated);
}));

test('camera off stops alice\'s frames at bob\'s side, on again resumes them, without a new publish', { timeout: 60_000 }, h.diagnosed(async () => {
  const negotiated = await negotiationState(alice);
  const moving = await receivedOver(bob, aliceMid, WINDOW_MS);
  assert.ok(moving.frames > 0, `no frames before the camera went off: ${JSON.stringify(moving)}`);

  await alice.click('#camera');
  await alice.locator('#camera[aria-pressed="true"]').waitFor({ timeout: UI_TIMEOUT_MS });
  // The camera is released, not just hidden: the sender has no track and the capture stopped.
  assert.deepEqual(await alice.evaluate(() => ({
    senderTrack: window.wren.publisherPc.getSenders().find((s) => s.track?.kind === 'video') ?? null,
    cameraTracks: window.wren.localStream.getVideoTracks().length,
    tileOff: document.querySelector('.tile[data-mid="local"]').classList.contains('camera-off'),
  })), { senderTrack: null, cameraTracks: 0, tileOff: true });
  await delay(SETTLE_MS);
  const stopped = await receivedOver(bob, aliceMid, WINDOW_MS);
  assert.equal(stopped.frames, 0, `frames still arrive with the camera off: ${JSON.stringify(stopped)}`);
  // Her audio goes on.
  assert.ok(stopped.audioPackets > 0, JSON.stringify(stopped));
  await poll(bob, (mid) => document.querySelector(`.tile[data-mid="${CSS.escape(mid)}"]`)?.dataset.fps === '0', aliceMid,
    { what: 'bob\'s tile of alice showing 0 fps', timeout: 5000 });

  await alice.click('#camera');
  await alice.locator('#camera[aria-pressed="false"]').waitFor({ timeout: UI_TIMEOUT_MS });
  await poll(bob, (mid) => Number(document.querySelector(`.tile[data-mid="${CSS.escape(mid)}"]`)?.dataset.fps) > 0, aliceMid,
    { what: 'bob\'s tile of alice moving again' });
  const resumed = await receivedOver(bob, aliceMid, WINDOW_MS);
  console.log(`frames over ${WINDOW_MS} ms: on ${moving.frames}, off ${stopped.frames}, on again ${resumed.frames}`);
  assert.ok(resumed.frames > 0, `no frames after the camera came back: ${JSON.stringify(resumed)}`);
  assert.deepEqual(await negotiationState(alice), negotiated);
}));

test('a screen share is an extra tile at bob\'s side, gone when the share stops', { timeout: 60_000 }, h.diagnosed(async () => {
  const before = await negotiationState(alice);
  // A click: getDisplayMedia needs a user gesture. Chromium's fake UI picks the (fake) screen.
  await alice.click('#share');
  const screenMid = await poll(alice, () => window.wren.screen?.published?.mid, null, { what: 'alice\'s screen published' });
  assert.notEqual(screenMid, aliceMid);
  assert.equal(await alice.getAttribute('#share', 'aria-pressed'), 'true');

  const tile = bob.locator(`.tile.screen[data-mid="${screenMid}"]`);
  await tile.waitFor({ timeout: UI_TIMEOUT_MS });
  assert.equal(await tile.locator('figcaption').textContent(), 'alice (screen)');
  const received = await waitForVideo(bob, screenMid);
  assert.ok(received.framesDecoded > 0);
  assert.equal(await bob.locator('.tile').count(), 2);

  // Stopping the share unpublishes it; the camera stream is untouched.
  await alice.click('#share');
  await tile.waitFor({ state: 'detached', timeout: UI_TIMEOUT_MS });
  assert.equal(await bob.evaluate((mid) => window.wren.subs.has(mid), screenMid), false);
  // Bob may hear of it before alice has the answer to her unpublish.
  await alice.locator('#share[aria-pressed="false"]').waitFor({ timeout: UI_TIMEOUT_MS });
  assert.equal(await alice.evaluate(() => window.wren.screen), null);
  assert.equal(await alice.locator('.tile[data-mid="screen"]').count(), 0);
  assert.equal(await waitForPublished(alice), aliceMid);
  assert.equal(await bob.locator('.tile').count(), 1);
  const after = await negotiationState(alice);
  assert.equal(after.publishRequests, before.publishRequests + 1, 'the share is one publish of its own');
  assert.equal(after.localSdp, before.localSdp, 'the camera publish was not renegotiated');
}));

test('the pages raise no JavaScript errors and no request failed', async () => {
  assert.deepEqual(h.pageErrors, []);
  for (const page of [alice, bob]) {
    assert.deepEqual(await page.evaluate(() => window.wren.log.filter((e) => e.kind === 'error')), []);
  }
});
