// The tile grid fits a laptop (1280x800) and a phone (390x844) viewport
// with 2, 9 and 16 tiles: every tile inside the viewport, none overlapping
// another, the page not scrolling, the tiles as large as the count allows;
// and the page asks the SFU for no larger a layer than a tile shows.
//
// Two tiles are a real call (each page shows its own camera and the other's).
// The other 7 or 14 are made by the page's own ui.addTile and play the
// page's camera, so each is a <video> with a real 1280x720 picture, as a
// subscription's would be: 16 real publishers would be more than two cores
// can encode, and the grid depends on the tile count, not on who sends.
//
//   cd tests/browser && npm test -- layout.test.mjs

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as delay } from 'node:timers/promises';
import { Harness, waitForMedia, waitForPublished } from './harness.mjs';

const VIEWPORTS = {
  laptop: { width: 1280, height: 800 },
  phone: { width: 390, height: 844 },
};
const COUNTS = [2, 9, 16];
// Below this a face is not recognisable; 16 tiles on a phone are about 90x50.
const MIN_TILE_WIDTH = { laptop: 200, phone: 80 };

// Long enough for the SFU to climb a layer (it holds 3 s before going up).
const HOLD_MS = 8000;

const h = new Harness();

// Samples the width of `mid`'s decoded video every 500 ms for `ms`; resolves
// to the widths seen and the frames decoded meanwhile.
async function widthsOver(page, mid, ms) {
  const read = () => page.evaluate(async (mid) => {
    let video = {};
    (await window.wren.subs.get(mid).pc.getStats()).forEach((r) => {
      if (r.type === 'inbound-rtp' && r.kind === 'video') video = r;
    });
    return { width: video.frameWidth ?? 0, frames: video.framesDecoded ?? 0 };
  }, mid);
  const first = await read();
  const widths = [];
  let last = first;
  for (let t = 0; t < ms; t += 500) {
    await delay(500);
    last = await read();
    widths.push(last.width);
  }
  return { widths, frames: last.frames - first.frames };
}

before(async () => {
  await h.launch();
  await h.startWren();
}, { timeout: 60_000 });

after(() => h.close());

// In the page: adds or removes extra tiles until there are `n`, waits for
// the layout to settle, and measures every tile and the document.
async function tilesAt(n) {
  const { ui } = window.wren;
  const extras = () => [...document.querySelectorAll('.tile[data-mid^="extra-"]')];
  while (document.querySelectorAll('.tile').length > n && extras().length > 0) {
    ui.removeTile(extras().at(-1).dataset.mid);
  }
  for (let i = document.querySelectorAll('.tile').length; i < n; i += 1) {
    const tile = ui.addTile(`extra-${i}`, `extra ${i}`, { local: false, screen: false });
    ui.attach(tile.video, window.wren.localStream);
  }
  // The ResizeObserver and the videos' first frames may relayout: two frames later it has settled.
  for (let i = 0; i < 2; i += 1) await new Promise((resolve) => requestAnimationFrame(resolve));
  const videosWithPicture = [...document.querySelectorAll('.tile video')].filter((v) => v.videoWidth > 0).length;
  return {
    viewport: { width: window.innerWidth, height: window.innerHeight },
    scroll: { width: document.documentElement.scrollWidth, height: document.documentElement.scrollHeight },
    videosWithPicture,
    tiles: [...document.querySelectorAll('.tile')].map((el) => {
      const r = el.getBoundingClientRect();
      return { mid: el.dataset.mid, left: r.left, top: r.top, right: r.right, bottom: r.bottom, width: r.width, height: r.height };
    }),
  };
}

for (const [device, viewport] of Object.entries(VIEWPORTS)) {
  test(`on a ${device} (${viewport.width}x${viewport.height}), 2, 9 and 16 tiles fit without scrolling or overlap`, { timeout: 60_000 }, h.diagnosed(async () => {
    const room = `layout-${device}-${process.pid}`;
    const alice = await h.newPage(`${device}-alice`); // measured
    const bob = await h.newPage(`${device}-bob`);
    try {
      await alice.setViewportSize(viewport);
      await alice.goto(h.pageUrl(room, 'alice'));
      await waitForPublished(alice);
      await bob.goto(h.pageUrl(room, 'bob'));
      const bobMid = await waitForPublished(bob);
      await waitForMedia(alice, bobMid);

      for (const n of COUNTS) {
        const got = await alice.evaluate(tilesAt, n);
        const where = `${device}, ${n} tiles: ${JSON.stringify(got)}`;
        assert.equal(got.tiles.length, n, where);
        assert.deepEqual(got.viewport, viewport);
        // The page itself does not scroll.
        assert.ok(got.scroll.width <= viewport.width && got.scroll.height <= viewport.height, `the page scrolls: ${where}`);
        for (const t of got.tiles) {
          assert.ok(t.left >= 0 && t.top >= 0 && t.right <= viewport.width && t.bottom <= viewport.height, `${t.mid} leaves the viewport: ${where}`);
          assert.ok(t.width >= MIN_TILE_WIDTH[device], `${t.mid} is too small: ${where}`);
          assert.ok(Math.abs(t.width / t.height - 16 / 9) < 0.05, `${t.mid} is not 16:9: ${where}`);
        }
        for (const [i, a] of got.tiles.entries()) {
          for (const b of got.tiles.slice(i + 1)) {
            const overlap = a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
            assert.ok(!overlap, `${a.mid} and ${b.mid} overlap: ${where}`);
          }
        }
        // The real subscription asks for no larger a layer than its tile shows
        // (the wren `layer` request), and the SFU keeps to it: bob sends 320,
        // 640 and 1280 wide; the SFU starts a subscriber low and climbs, so
        // the ceiling is watched for longer than its 3 s climbing hold.
        const tileWidth = got.tiles.find((t) => t.mid === bobMid).width;
        const ceiling = tileWidth <= 400 ? 320 : tileWidth <= 800 ? 640 : 1280;
        const seen = await widthsOver(alice, bobMid, n === 2 ? HOLD_MS : HOLD_MS / 2);
        const asked = await alice.evaluate(() => window.wren.log
          .filter((e) => e.kind === 'send' && e.data.method === 'layer').map((e) => e.data.data.layer));
        const detail = `${device}, ${n} tiles of ${Math.round(tileWidth)} px: widths seen ${seen.widths.join(' ')}, layers asked ${asked.join(' ')}`;
        assert.ok(seen.frames > 0, `bob's video stopped: ${detail}`);
        assert.ok(seen.widths.slice(-4).every((w) => w <= ceiling), `wider than ${ceiling}: ${detail}`);
        // A ceiling, and also reached: the tile gets the layer it can show.
        assert.equal(seen.widths.at(-1), ceiling, detail);
        console.log(detail);
        // All tiles are one size, so the first one says how big the grid let them be.
        console.log(`${device} ${n} tiles: ${Math.round(got.tiles[0].width)}x${Math.round(got.tiles[0].height)} px, ${got.videosWithPicture} playing`);
        if (process.env.WREN_SCREENSHOTS) await alice.screenshot({ path: `${process.env.WREN_SCREENSHOTS}/${device}-${n}.png` });
      }
    } finally {
      await alice.close().catch(() => {});
      await bob.close().catch(() => {});
    }
  }));
}
