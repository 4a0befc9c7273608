// The SFU relays RTP as it comes, so every codec it negotiates must reach a
// subscriber intact, not just VP8 (what a publisher gets by default). One tab
// publishes with ?vcodec=X, which restricts its offer to X; a second tab, not
// publishing, must decode X.
//
//   cd tests/browser && npm test -- codecs.test.mjs

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Harness, firstFrameMs, waitForMedia, waitForPublished } from './harness.mjs';

const CODECS = [
  { vcodec: 'vp9', mimeType: 'video/VP9' },
  { vcodec: 'h264', mimeType: 'video/H264' },
];

const h = new Harness();

before(() => h.launch(), { timeout: 60_000 });

after(() => h.close());

for (const { vcodec, mimeType } of CODECS) {
  test(`a ${mimeType} stream reaches the subscriber and is decoded`, { timeout: 60_000 }, h.diagnosed(async () => {
    const room = `codec-${vcodec}-${process.pid}`;
    await h.startWren();
    const publisher = await h.newPage(`${vcodec}-pub`);
    const subscriber = await h.newPage(`${vcodec}-sub`);
    try {
      await publisher.goto(h.pageUrl(room, 'pub', { vcodec }));
      const mid = await waitForPublished(publisher);
      await subscriber.goto(h.pageUrl(room, 'sub', { publish: '0' }));

      const received = await waitForMedia(subscriber, mid);
      const sent = await publisher.evaluate(outboundVideo);
      const detail = JSON.stringify({ sent, received });
      assert.equal(sent.codec, mimeType, `the publisher sent another codec: ${detail}`);
      assert.equal(received.videoCodec, mimeType, `the subscriber got another codec: ${detail}`);
      assert.ok(received.framesDecoded > 0, detail);
      console.log(`first-frame-ms ${vcodec}: ${await firstFrameMs(subscriber, mid)} (encoder ${sent.encoder})`);

      assert.deepEqual(h.pageErrors, []);
      for (const page of [publisher, subscriber]) {
        assert.deepEqual(await page.evaluate(() => window.wren.log.filter((e) => e.kind === 'error')), []);
      }
    } finally {
      await publisher.close().catch(() => {});
      await subscriber.close().catch(() => {});
      await h.stopWren();
    }
  }));
}

// In the publishing page: the codec and encoder of its video sender.
async function outboundVideo() {
  const stats = await window.wren.publisherPc.getStats();
  const outbound = [...stats.values()].find((r) => r.type === 'outbound-rtp' && r.kind === 'video');
  return {
    codec: stats.get(outbound?.codecId)?.mimeType ?? null,
    encoder: outbound?.encoderImplementation ?? null,
    framesEncoded: outbound?.framesEncoded ?? 0,
  };
}
