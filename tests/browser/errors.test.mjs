// When the page cannot have the camera and microphone, it says so on the
// page (#media-problem, role=alert) and the person can still join and watch:
// - the browser refuses them (a real refusal: Chromium without the fake
//   permission UI and with --deny-permission-prompts answers NotAllowedError),
// - there is no device (Chromium without the fake camera and microphone, on
//   a machine that has none: NotFoundError),
// - the page is not a secure context (loaded by a name other than localhost
//   over http://: navigator.mediaDevices is undefined).
// Each case is a Chromium of its own, launched with those flags.
//
//   cd tests/browser && npm test -- errors.test.mjs

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Harness, UI_TIMEOUT_MS, waitForPublished, waitForVideo } from './harness.mjs';

// In the page: the message and what the controls allow after the failure.
function mediaProblem() {
  const el = document.getElementById('media-problem');
  const box = el.getBoundingClientRect();
  return {
    reason: el.dataset.reason ?? null,
    text: el.textContent,
    visible: !el.hidden && box.width > 0 && box.height > 0,
    state: window.wren.state,
    publishing: window.wren.publisherPc !== null,
    publishChecked: document.getElementById('publish').checked,
    localTiles: document.querySelectorAll('.tile.local').length,
  };
}

// Opens the page with `harness`, waits for the message, and checks that the
// person is still in the room, publishing nothing, with the message shown.
async function expectProblem(harness, name, reason, textPattern) {
  const page = await harness.newPage(name);
  await page.goto(harness.pageUrl(`errors-${name}-${process.pid}`, name));
  await page.locator(`#media-problem[data-reason="${reason}"]`).waitFor({ timeout: UI_TIMEOUT_MS });
  await page.waitForFunction(() => window.wren.state === 'joined', null, { timeout: UI_TIMEOUT_MS });
  const got = await page.evaluate(mediaProblem);
  assert.equal(got.reason, reason, JSON.stringify(got));
  assert.match(got.text, textPattern);
  assert.deepEqual(
    { visible: got.visible, state: got.state, publishing: got.publishing, publishChecked: got.publishChecked, localTiles: got.localTiles },
    { visible: true, state: 'joined', publishing: false, publishChecked: false, localTiles: 0 },
  );
  assert.deepEqual(harness.pageErrors, [], 'an uncaught error instead of a message');
  return page;
}

test('a refused camera and microphone get a message on the page', { timeout: 60_000 }, async () => {
  const h = new Harness({ dropFlags: ['--use-fake-ui-for-media-stream'], flags: ['--deny-permission-prompts'] });
  try {
    await h.launch();
    await h.startWren();
    await h.diagnosed(() => expectProblem(h, 'denied', 'denied', /refused.*Allow them for this site/))();
  } finally {
    await h.close();
  }
});

test('a machine without camera and microphone gets a message on the page', { timeout: 60_000 }, async () => {
  const h = new Harness({ dropFlags: ['--use-fake-device-for-media-stream'] });
  try {
    await h.launch();
    await h.startWren();
    await h.diagnosed(() => expectProblem(h, 'nodevice', 'not-found', /No camera or microphone was found/))();
  } finally {
    await h.close();
  }
});

test('an insecure page says why there is no camera, and can still watch', { timeout: 60_000 }, async () => {
  // wren.test is not localhost, so http://wren.test:PORT is not a secure
  // context, whatever address the name maps to.
  const h = new Harness({ flags: ['--host-resolver-rules=MAP wren.test 127.0.0.1'], host: 'wren.test' });
  try {
    await h.launch();
    await h.startWren();
    await h.diagnosed(async () => {
      const room = `errors-insecure-${process.pid}`;
      // Shown on load, before anyone presses Join.
      const viewer = await h.newPage('insecure');
      await viewer.goto(h.pageUrl(room, 'viewer', { autojoin: '0' }));
      assert.equal(await viewer.evaluate(() => window.isSecureContext), false);
      const onLoad = await viewer.evaluate(mediaProblem);
      assert.equal(onLoad.reason, 'insecure', JSON.stringify(onLoad));
      assert.equal(onLoad.visible, true);
      assert.match(onLoad.text, /not a secure context \(http:\/\/wren\.test:\d+\).*https:\/\/.*localhost/);
      assert.equal(await viewer.isDisabled('#publish'), true);
      assert.equal(await viewer.isDisabled('#share'), true);

      // Watching needs no camera: a secure page publishes, the insecure one decodes it.
      const publisher = await h.newPage('secure-publisher');
      await publisher.goto(`http://127.0.0.1:${h.wren.port}/?${new URLSearchParams({ room, name: 'pub', autojoin: '1' })}`);
      const mid = await waitForPublished(publisher);
      await viewer.click('#join');
      await viewer.waitForFunction(() => window.wren.state === 'joined', null, { timeout: UI_TIMEOUT_MS });
      const received = await waitForVideo(viewer, mid);
      assert.ok(received.framesDecoded > 0);
      assert.equal((await viewer.evaluate(mediaProblem)).visible, true, 'the message stays up');
      assert.deepEqual(h.pageErrors, []);
    })();
  } finally {
    await h.close();
  }
});
