// End to end: the real wren binary and two headless Chromium tabs in one room,
// each publishing its fake camera + mic and receiving the other's.
//
//   cd tests/browser && npm ci && npm test
//
// harness.mjs lists the environment variables (WREN_BIN, ...).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Harness, UI_TIMEOUT_MS, firstFrameMs, waitForMedia, waitForPublished } from './harness.mjs';

const ROOM = `browser-test-${process.pid}`;

const h = new Harness();
let alice; // the page whose stream is measured; joins second, so bob gets it by stream-add
let bob; // joins first, so alice gets bob's stream in her join answer

before(async () => {
  await h.launch();
  await h.startWren();
  alice = await h.newPage('alice');
  bob = await h.newPage('bob');
}, { timeout: 60_000 });

after(() => h.close());

test('both tabs join the room and list each other as peers', { timeout: 30_000 }, h.diagnosed(async () => {
  await bob.goto(h.pageUrl(ROOM, 'bob'));
  await waitForPublished(bob);
  await alice.goto(h.pageUrl(ROOM, 'alice'));
  await waitForPublished(alice);

  await bob.locator('#peers li[data-uid="alice"]').waitFor({ timeout: UI_TIMEOUT_MS });
  await alice.locator('#peers li[data-uid="bob"]').waitFor({ timeout: UI_TIMEOUT_MS });
}));

test('each tab decodes the other tab\'s video and receives its audio', { timeout: 60_000 }, h.diagnosed(async () => {
  const aliceMid = await waitForPublished(alice);
  const bobMid = await waitForPublished(bob);
  assert.match(aliceMid, /^alice#\d{6,}$/);
  assert.match(bobMid, /^bob#\d{6,}$/);

  await waitForMedia(bob, aliceMid);
  await waitForMedia(alice, bobMid);
  await bob.locator(`.tile[data-mid="${aliceMid}"] figcaption`, { hasText: 'alice' }).waitFor({ timeout: UI_TIMEOUT_MS });

  console.log(`first-frame-ms: ${await firstFrameMs(bob, aliceMid)}`);
}));

test('a chat message from one tab appears in the other', { timeout: 30_000 }, h.diagnosed(async () => {
  await alice.fill('#chat-input', 'hello from alice');
  await alice.press('#chat-input', 'Enter');

  await bob.locator('#chat-log li', { hasText: 'alice: hello from alice' }).waitFor({ timeout: UI_TIMEOUT_MS });
  await alice.locator('#chat-log li', { hasText: 'alice: hello from alice' }).waitFor({ timeout: UI_TIMEOUT_MS });
  assert.equal(await alice.inputValue('#chat-input'), '');
}));

test('unpublishing removes the stream from the other tab; publishing again brings it back', { timeout: 60_000 }, h.diagnosed(async () => {
  const firstMid = await waitForPublished(alice);
  await alice.uncheck('#publish');
  await bob.locator(`.tile[data-mid="${firstMid}"]`).waitFor({ state: 'detached', timeout: UI_TIMEOUT_MS });
  await alice.waitForFunction(() => window.wren.publisherPc === null, null, { timeout: UI_TIMEOUT_MS });

  await alice.check('#publish');
  const secondMid = await waitForPublished(alice);
  assert.notEqual(secondMid, firstMid);
  await waitForMedia(bob, secondMid);
}));

test('when a tab leaves, the other drops its tile and its peer entry', { timeout: 30_000 }, h.diagnosed(async () => {
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
  assert.deepEqual(h.pageErrors, []);
  for (const page of [alice, bob]) {
    assert.deepEqual(await page.evaluate(() => window.wren.log.filter((e) => e.kind === 'error')), []);
  }
});
