// The network lab's cases (tests/lab.rs) with real browsers: one Chromium
// publishing three simulcast layers (q/h/f, 320/640/1280 wide) from a
// 1280x720 fake camera, two Chromium subscribers A and B, each browser in a
// lab client namespace of its own and wren in the server namespace
// (lab.mjs). Client 1 is the publisher, 2 is A, 3 is B (the lab counts from 1).
//
// 1. B's downlink limited to 400 kbit/s: A decodes the top layer, B a lower
//    one, both without freezing. The publisher's view is printed.
// 4. B's limit lifted: B climbs back to the top layer within 15 s.
// 2. 5 % loss on the publisher's uplink and on B's downlink: both decode on.
// 3. 150 ms RTT with 30 ms jitter on every link: a new call starts and
//    stays up.
// 5. Both subscribers limited to 400 kbit/s: the SFU caps the publisher
//    (REMB) and Chrome stops its upper layers; they stay off (a raise the
//    SFU tries for a subscriber that seemed faster is withdrawn at once).
// 6. The camera in one layer with three temporal layers (L1T3): B behind
//    70 % of the stream's rate is sent fewer frames per second of
//    the same picture (from its REMB), A all of them; lifted, B gets all
//    frames again.
//
// Each subscriber's page samples its inbound-rtp every 100 ms (frames
// decoded, frame width, Chrome's freezeCount and totalFreezesDuration); a
// window's row is computed from those samples, with the bytes the
// subscriber's downlink carried (`stats` of the lab). The table is printed
// at the end. Needs root (lab.mjs).
//
//   cd tests/browser && WREN_NETLAB=... npm test -- netlab.test.mjs

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { poll, writeY4m } from './harness.mjs';
import { LabHarness } from './lab.mjs';

// The camera: a real 1280x720 clip (Chromium's fake device plays it; its
// default one gives 1280x720 too, but a picture so plain that the 320-wide
// layer cost more than the 640-wide one: 180 against 80 kbit/s), with noise
// in the middle quarter, so that every layer spends its maxBitrate (app.js:
// 150, 500 and 2000 kbit/s; measured 153, 509, 2038) at 30 fps. Noise over
// the whole picture cost the two cores too much: 6-9 fps everywhere.
const CAMERA = { width: 1280, height: 720, frames: 30, noise: 20, noiseBox: 0.5 };
const WINDOW_MS = 8000;
const LIFTED_WINDOW_MS = 3000;
const SAMPLE_MS = 100;
const SUBS = [{ name: 'A', client: 2 }, { name: 'B', client: 3 }];

const lab = new LabHarness();
let dir;
let publisher;
const pages = {}; // subscriber name -> page
let mid;
let topWidth;
const rows = [];

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'wren-netlab-'));
  const clip = join(dir, 'camera.y4m');
  await writeY4m(clip, CAMERA);
  await lab.start(3);
  await lab.startWren();
  publisher = await lab.chromium(0, 'publisher', { flags: [`--use-file-for-fake-video-capture=${clip}`] });
  for (const [k, { name }] of SUBS.entries()) pages[name] = await lab.chromium(k + 1, name);
}, { timeout: 120_000 });

after(async () => {
  console.log(`\n| case | subscriber | layers (widths) | switches | frames (fps) | freezes | longest gap | link kbit/s |\n`
    + `| --- | --- | --- | --- | --- | --- | --- | --- |\n${rows.join('\n')}\n`);
  await lab.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

// In a subscriber's page: samples the video of its subscription to `mid`
// every `ms` into window.netlabSamples, until the page goes away. One
// getStats at a time (the next one is scheduled when the last answered).
function startSampler([mid, ms]) {
  window.netlabSamples = [];
  const tick = async () => {
    const sub = window.wren.subs.get(mid);
    if (sub) {
      let v = null;
      (await sub.pc.getStats()).forEach((r) => {
        if (r.type === 'inbound-rtp' && r.kind === 'video') v = r;
      });
      if (v) {
        window.netlabSamples.push({
          t: performance.now(),
          frames: v.framesDecoded ?? 0,
          width: v.frameWidth ?? 0,
          freezes: v.freezeCount ?? 0,
          freezeSec: v.totalFreezesDuration ?? 0,
          layer: sub.layer ?? null,
        });
        if (window.netlabSamples.length > 10_000) window.netlabSamples.splice(0, 1000);
      }
    }
    setTimeout(tick, ms);
  };
  tick();
}

// Shapes a link, saying when on wren's clock (the WREN_LOG_FILE lines' ms).
async function shape(line) {
  console.log(`${Date.now() - lab.wren.started} ms: shape ${line}`);
  await lab.lab.command(`shape ${line}`);
}

const now = (page) => page.evaluate(() => performance.now());
const samplesSince = (page, t) => page.evaluate((t) => window.netlabSamples.filter((s) => s.t >= t), t);
const latest = (page) => page.evaluate(() => window.netlabSamples.at(-1) ?? null);

// In the publisher's page: each video layer it sends (outbound-rtp, by rid)
// with its counters, and the connection's send-side estimate (which a REMB
// caps).
async function publisherView() {
  const pc = window.wren.publisherPc;
  const stats = await pc.getStats();
  const active = Object.fromEntries((pc.getSenders().find((s) => s.track?.kind === 'video')?.getParameters().encodings ?? [])
    .map((e) => [e.rid, e.active]));
  const layers = [...stats.values()].filter((r) => r.type === 'outbound-rtp' && r.kind === 'video').map((r) => ({
    rid: r.rid ?? '-',
    active: active[r.rid] ?? null,
    width: r.frameWidth ?? 0,
    frames: r.framesEncoded ?? 0,
    bytes: r.bytesSent ?? 0,
    limit: r.qualityLimitationReason ?? null,
    target: r.targetBitrate ?? null,
    t: r.timestamp,
  })).sort((a, b) => a.width - b.width);
  const pair = [...stats.values()].find((r) => r.type === 'candidate-pair' && r.nominated && r.state === 'succeeded');
  return { layers, availableOutgoing: pair?.availableOutgoingBitrate ?? null, t: performance.now() };
}

// What the publisher sent between two views: per rid, kbit/s, fps, width,
// quality limitation, and whether the sender has it active.
function sentBetween(a, b) {
  const secs = (b.t - a.t) / 1000;
  return {
    estimateKbit: b.availableOutgoing === null ? null : Math.round(b.availableOutgoing / 1000),
    layers: b.layers.map((l) => {
      const was = a.layers.find((x) => x.rid === l.rid) ?? { bytes: 0, frames: 0 };
      return {
        rid: l.rid,
        active: l.active,
        width: l.width,
        kbit: Math.round(((l.bytes - was.bytes) * 8) / secs / 1000),
        fps: Math.round((l.frames - was.frames) / secs),
        limit: l.limit,
        targetKbit: l.target === null ? null : Math.round(l.target / 1000),
      };
    }),
  };
}

const fmtSent = (s) => `estimate ${s.estimateKbit} kbit/s; `
  + s.layers.map((l) => `${l.rid}${l.active === false ? ' (inactive)' : ''} ${l.width} wide ${l.kbit} kbit/s ${l.fps} fps (target ${l.targetKbit}, limited by ${l.limit})`).join('; ');

// A subscriber's video over a window of samples [from, to] (its page's clock).
function analyse(samples, from, to) {
  const inside = samples.filter((s) => s.t >= from && s.t <= to && s.width > 0);
  assert.ok(inside.length >= 2, `too few samples in the window: ${inside.length}`);
  const [first, last] = [inside[0], inside.at(-1)];
  const widths = [];
  let switches = 0;
  let lastProgress = first.t;
  let longestGap = 0;
  for (const [k, s] of inside.entries()) {
    if (k > 0 && s.width !== inside[k - 1].width) switches += 1;
    if (!widths.includes(s.width)) widths.push(s.width);
    if (k > 0 && s.frames > inside[k - 1].frames) {
      longestGap = Math.max(longestGap, s.t - lastProgress);
      lastProgress = s.t;
    }
  }
  longestGap = Math.max(longestGap, last.t - lastProgress);
  const secs = (last.t - first.t) / 1000;
  return {
    widths,
    switches,
    frames: last.frames - first.frames,
    fps: (last.frames - first.frames) / secs,
    freezes: last.freezes - first.freezes,
    freezeMs: Math.round((last.freezeSec - first.freezeSec) * 1000),
    longestGap: Math.round(longestGap),
    lastWidth: last.width,
    layerPin: last.layer,
  };
}

// Measures both subscribers over `ms`: their video (from the samples) and
// the kbit/s their downlinks carried. Adds a table row per subscriber.
async function measure(caseName, ms, during = async () => {}) {
  const marks = {};
  const links = {};
  for (const { name, client } of SUBS) {
    marks[name] = await now(pages[name]);
    links[name] = (await lab.lab.stats(client)).down.bytes;
  }
  const started = Date.now();
  await during();
  await delay(Math.max(0, ms - (Date.now() - started)));
  const out = {};
  for (const { name, client } of SUBS) {
    const end = await now(pages[name]);
    const bytes = (await lab.lab.stats(client)).down.bytes - links[name];
    const r = analyse(await samplesSince(pages[name], marks[name]), marks[name], end);
    r.linkKbit = Math.round((bytes * 8) / (end - marks[name]));
    out[name] = r;
    rows.push(`| ${caseName} | ${name} | ${r.widths.join(', ')} | ${r.switches} | ${r.frames} (${r.fps.toFixed(0)}) `
      + `| ${r.freezes} (${r.freezeMs} ms) | ${r.longestGap} ms | ${r.linkKbit} |`);
    console.log(`${caseName}, ${name}: ${JSON.stringify(r)}`);
  }
  return out;
}

// Every client's link in both directions shaped as `spec` (`rate=400 ...`, '' lifts all).
async function shapeAll(spec) {
  for (let i = 1; i <= 3; i += 1) {
    await shape(`${i} up ${spec}`.trim());
    await shape(`${i} down ${spec}`.trim());
  }
}

// Opens the call in `room`: the publisher (its page's URL parameters
// `publisherParams`), then A and B watching only; each subscriber's sampler
// running once it decodes. Resolves to the published mid.
async function openCall(room, publisherParams = {}) {
  await publisher.goto(lab.pageUrl(room, 'publisher', publisherParams));
  const published = await poll(publisher, () => window.wren.published?.mid, null, { what: 'the publisher publishing' });
  for (const { name } of SUBS) {
    await pages[name].goto(lab.pageUrl(room, name, { publish: '0' }));
    await pages[name].evaluate(startSampler, [published, SAMPLE_MS]);
  }
  for (const { name } of SUBS) {
    await poll(pages[name], () => window.netlabSamples.at(-1)?.frames > 0, null, { what: `${name} decoding`, timeout: 30_000 });
  }
  return published;
}

// Waits until `holds(samples by name)` is true of the subscribers' latest
// samples; resolves to how long that took (ms), or fails after `timeout`.
async function until(holds, what, timeout) {
  const started = Date.now();
  let last;
  while (Date.now() - started < timeout) {
    last = {};
    for (const { name } of SUBS) last[name] = await latest(pages[name]);
    if (holds(last)) return Date.now() - started;
    await delay(250);
  }
  assert.fail(`${what}: not within ${timeout} ms (last: ${JSON.stringify(last)})`);
}

test('1. B behind 400 kbit/s gets a lower layer, A keeps the top one', { timeout: 90_000 }, lab.diagnosed(async () => {
  // B's limit is there before it joins, as in tests/lab.rs.
  await shape('3 down rate=400');
  mid = await openCall(`netlab-${process.pid}`);
  const layers = await publisher.evaluate(() => window.wren.camera.layers);
  const sent = await poll(publisher, async () => {
    const stats = await window.wren.publisherPc.getStats();
    const out = [...stats.values()].filter((r) => r.type === 'outbound-rtp' && r.kind === 'video');
    return out.length === 3 && out.every((r) => r.framesEncoded > 0) && out.map((r) => r.frameWidth);
  }, null, { what: 'three layers encoding' });
  topWidth = Math.max(...sent);
  console.log(`the publisher sends ${layers.join('/')} at ${sent.join('/')} wide`);
  assert.deepEqual(layers, ['q', 'h', 'f']);

  const took = await until((s) => s.A?.width === topWidth && s.B?.width > 0 && s.B.width < topWidth,
    'A on the top layer, B below it', 40_000);
  console.log(`settled after ${took} ms`);
  await delay(3000);
  let view;
  const m = await measure('1. B limited to 400 kbit/s', WINDOW_MS, async () => {
    const a = await publisher.evaluate(publisherView);
    await delay(5000);
    view = sentBetween(a, await publisher.evaluate(publisherView));
  });
  console.log(`the publisher while B is limited: ${fmtSent(view)}`);
  assert.equal(m.A.layerPin, 'auto', 'A\'s tile pins no layer');
  assert.deepEqual(m.A.widths, [topWidth], `A: the top layer throughout: ${JSON.stringify(m.A)}`);
  assert.ok(m.A.fps >= 20, `A: ${JSON.stringify(m.A)}`);
  assert.ok(m.A.longestGap < 500, `A froze: ${JSON.stringify(m.A)}`);
  assert.ok(m.B.widths.every((w) => w < topWidth), `B: a lower layer: ${JSON.stringify(m.B)}`);
  assert.ok(m.B.frames > 0 && m.B.longestGap < 2000, `B: ${JSON.stringify(m.B)}`);
}));

// Chromium subscribers climbed in 16 of 16 runs in a row (6.2-10.7 s) when
// this stopped being a todo; earlier code left B on the lowest layer in some
// runs (README, Bad networks).
test('4. B\'s limit lifted: B climbs back to the top layer within 15 s', {
  timeout: 60_000,
}, lab.diagnosed(async () => {
  await shape('3 down');
  const took = await until((s) => s.B?.width === topWidth, 'B back on the top layer', 15_000);
  console.log(`B on the top layer ${(took / 1000).toFixed(1)} s after its limit was lifted`);
  const m = await measure(`4. B's limit lifted (top layer after ${(took / 1000).toFixed(1)} s)`, LIFTED_WINDOW_MS);
  assert.deepEqual(m.B.widths, [topWidth], `B stays on the top: ${JSON.stringify(m.B)}`);
}));

test('2. 5 % loss on the publisher\'s uplink and on B\'s downlink: both decode on', { timeout: 60_000 }, lab.diagnosed(async () => {
  await shape('1 up loss=5');
  await shape('3 down loss=5');
  try {
    await delay(5000);
    const m = await measure('2. 5 % loss: publisher up, B down', WINDOW_MS);
    for (const [name, r] of Object.entries(m)) assert.ok(r.fps >= 15, `${name} decodes on despite loss: ${JSON.stringify(r)}`);
  } finally {
    await shape('1 up');
    await shape('3 down');
  }
}));

test('3. 150 ms RTT with 30 ms jitter on every link: a call starts and stays up', { timeout: 90_000 }, lab.diagnosed(async () => {
  await shapeAll('delay=75 jitter=15');
  try {
    await openCall(`netlab-rtt-${process.pid}`);
    await delay(5000);
    const m = await measure('3. 150 ms RTT, 30 ms jitter', WINDOW_MS);
    for (const [name, r] of Object.entries(m)) assert.ok(r.fps >= 15, `${name}: the call stays up: ${JSON.stringify(r)}`);
  } finally {
    await shapeAll('');
  }
}));

test('5. both subscribers behind 400 kbit/s: the SFU caps the publisher, which stops its top layer', { timeout: 90_000 }, lab.diagnosed(async () => {
  await shape('2 down rate=400');
  await shape('3 down rate=400');
  try {
    const limited = Date.now();
    const timeline = [];
    let prev = await publisher.evaluate(publisherView);
    while (Date.now() - limited < 36_000) {
      await delay(2000);
      const view = await publisher.evaluate(publisherView);
      const s = sentBetween(prev, view);
      timeline.push({ at: Math.round((Date.now() - limited) / 1000), ...s });
      console.log(`${Math.round((Date.now() - limited) / 1000)} s: ${fmtSent(s)}`);
      prev = view;
    }
    // The caps the SFU sent (logged at --log-level debug), each value once, in order.
    const caps = (lab.wren.output().match(/capped at \d+ bit\/s/g) ?? []).map((c) => c.match(/\d+/)[0])
      .filter((v, k, all) => k === 0 || all[k - 1] !== v);
    console.log(`the SFU's caps: ${caps.join(' -> ') || 'not logged (WREN_LOG_LEVEL=debug logs them)'}`);
    const m = await measure('5. A and B limited to 400 kbit/s', 4000);
    // The 1280-wide layer stops about 3 s after the cap (Chrome gives the
    // cap to the lower layers first), the 640-wide one with it.
    const sentAt = (t, rid) => t.layers.find((l) => l.rid === rid)?.kbit ?? 0;
    // Not before 10 s: a lower cap holds that long before it is sent (an
    // earlier case may leave the publisher's own estimate low at first).
    const stopped = timeline.findIndex((t) => t.at >= 10 && sentAt(t, 'f') < 100);
    assert.ok(stopped >= 0, `the top layer never stopped in the 36 s after both subscribers were limited: ${JSON.stringify(timeline)}`);
    console.log(`the top layer stopped ${timeline[stopped].at} s after the limit`);
    // A subscriber's estimate may read high for a few seconds (a probe
    // through the shaper's burst) and the SFU try the 640-wide layer
    // again (a trial): nobody can take it at 400 kbit/s, so the SFU must
    // withdraw the raise within a few seconds (3 s after it, CAP_TRIAL_MIN,
    // plus Chrome's lag), not leave the publisher sending it for nobody
    // (before session 12 it did, for 10 s or more, in 3 of 4 runs). At most
    // 4 samples (2 s each) in a row with either upper layer on: a layer on
    // for 4.5 s touches 4 of them at most, one on for 10 s touches 5.
    let run = 0;
    let longest = 0;
    for (const t of timeline.slice(stopped)) {
      run = sentAt(t, 'h') >= 100 || sentAt(t, 'f') >= 100 ? run + 1 : 0;
      longest = Math.max(longest, run);
    }
    console.log(`upper layers back after the cap: at most ${longest} samples (2 s each) in a row`);
    assert.ok(longest <= 4, `the publisher sent a layer nobody could take for ${longest * 2} s in a row: ${JSON.stringify(timeline.slice(stopped))}`);
    for (const [name, r] of Object.entries(m)) assert.ok(r.frames > 0, `${name}: ${JSON.stringify(r)}`);
  } finally {
    await shape('2 down');
    await shape('3 down');
  }
}));

// Measures 3 s windows until `holds(rows by name)`, for `timeout` ms at
// most; resolves to [ms it took, the last rows].
async function untilMeasured(caseName, holds, what, timeout) {
  const started = Date.now();
  let m;
  while (Date.now() - started < timeout) {
    const kept = rows.length;
    m = await measure(caseName, 3000);
    if (holds(m)) return [Date.now() - started, m];
    rows.splice(kept); // the table keeps the window that held
  }
  assert.fail(`${what}: not within ${timeout} ms (last: ${JSON.stringify(m)})`);
}

test('6. one layer with temporal layers: B behind a limit gets fewer frames of the same picture, A all', { timeout: 180_000 }, lab.diagnosed(async () => {
  mid = await openCall(`netlab-l1t3-${process.pid}`, { simulcast: '0' });
  const mode = await publisher.evaluate(() => window.wren.publisherPc.getSenders()
    .find((s) => s.track?.kind === 'video').getParameters().encodings.map((e) => e.scalabilityMode));
  assert.deepEqual(mode, ['L1T3'], 'the camera goes out in one layer with three temporal layers');
  // Chrome ramps one layer up over its first ~15 s (480 wide at 1.2
  // Mbit/s, then 640 wide at 1.8).
  await delay(15_000);
  const free = await measure('6. one layer, L1T3, no limit', 4000);
  const limit = Math.round(free.B.linkKbit * 0.7);
  await shape(`3 down rate=${limit}`);
  try {
    await delay(10_000);
    const m = await measure(`6. one layer, L1T3, B limited to ${limit} kbit/s`, WINDOW_MS);
    assert.ok(m.A.fps >= 20 && m.A.longestGap < 500, `A: all frames: ${JSON.stringify(m.A)}`);
    assert.ok(m.B.fps <= m.A.fps * 0.75, `B: fewer frames than A: ${JSON.stringify(m)}`);
    assert.ok(m.B.frames > 0 && m.B.longestGap < 2000, `B decodes on: ${JSON.stringify(m.B)}`);
    assert.deepEqual(m.B.widths, m.A.widths, 'the same picture');
  } finally {
    await shape('3 down');
  }
  const [took] = await untilMeasured('6. one layer, L1T3, B\'s limit lifted',
    (r) => r.B.fps >= r.A.fps * 0.9, 'B back on every frame', 60_000);
  console.log(`B on every frame again ${(took / 1000).toFixed(1)} s after its limit was lifted`);
}));

test('the pages raise no JavaScript errors and no request failed', async () => {
  assert.deepEqual(lab.pageErrors, []);
  for (const page of [publisher, ...Object.values(pages)]) {
    assert.deepEqual(await page.evaluate(() => window.wren.log.filter((e) => e.kind === 'error')), []);
  }
});
