// Fan-out: one publishing tab, then 15 subscribers of its stream added
// within three seconds, as a class joining a teacher. Each subscriber needs
// a key frame to start; the SFU must get one to every subscriber quickly,
// however close together they join (key-frame requests are coalesced, and a
// subscriber that connects just after a key frame went by is served from the
// SFU's copy of it). Prints the distribution of the time from each subscribe
// answer to that subscriber's first decoded frame.
//
// The 15 subscribers are 15 protoo peers (15 WebSockets, 15
// RTCPeerConnections) in one tab: 15 tabs would measure Chromium's process
// start-up on two cores, not the SFU.
//
//   cd tests/browser && npm test -- fanout.test.mjs

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Harness, MEDIA_TIMEOUT_MS, waitForPublished } from './harness.mjs';

const SUBSCRIBERS = 15;
const STAGGER_MS = 200;
const ROOM = `fanout-${process.pid}`;

const h = new Harness();

before(async () => {
  await h.launch();
  await h.startWren();
}, { timeout: 60_000 });

after(() => h.close());

// Runs in the subscribers' tab: subscriber i joins at i * stagger ms, and
// resolves to the time from its subscribe answer to its first video frame.
async function subscribeAll({ room, mid, n, stagger, timeoutMs }) {
  window.fanout = [];
  const one = async (i) => {
    await new Promise((resolve) => setTimeout(resolve, i * stagger));
    const ws = new WebSocket(`ws://${location.host}/ws?peer=fan${i}`, 'protoo');
    window.fanout.push(ws); // kept open until the page goes
    const waiting = new Map();
    ws.onmessage = (e) => {
      const m = JSON.parse(e.data);
      if (m.response) waiting.get(m.id)?.(m);
    };
    await new Promise((resolve, reject) => {
      ws.onopen = resolve;
      ws.onerror = () => reject(new Error(`fan${i}: WebSocket failed`));
    });
    let nextId = 1;
    const request = (method, data) => new Promise((resolve, reject) => {
      const id = nextId++;
      waiting.set(id, (m) => (m.ok ? resolve(m.data) : reject(new Error(`fan${i} ${method}: ${m.errorCode} ${m.errorReason}`))));
      ws.send(JSON.stringify({ request: true, id, method, data }));
    });
    await request('join', { rid: room });
    const pc = new RTCPeerConnection();
    window.fanout.push(pc);
    pc.addTransceiver('audio', { direction: 'recvonly' });
    pc.addTransceiver('video', { direction: 'recvonly' });
    const video = document.createElement('video');
    video.muted = true;
    video.autoplay = true;
    document.body.append(video);
    let firstFrameAt = null;
    const framed = new Promise((resolve) => {
      pc.ontrack = ({ track }) => {
        if (track.kind !== 'video') return;
        video.srcObject = new MediaStream([track]);
        video.requestVideoFrameCallback(() => {
          firstFrameAt = performance.now();
          resolve();
        });
      };
    });
    await pc.setLocalDescription();
    const answer = await request('subscribe', { rid: room, mid, jsep: { type: 'offer', sdp: pc.localDescription.sdp } });
    const answeredAt = performance.now();
    await pc.setRemoteDescription(answer.jsep);
    const timeout = new Promise((resolve) => setTimeout(resolve, timeoutMs));
    await Promise.race([framed, timeout]);
    return { i, ms: firstFrameAt === null ? null : Math.round(firstFrameAt - answeredAt) };
  };
  return Promise.all([...Array(n).keys()].map(one));
}

function percentile(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.round((sorted.length - 1) * p / 100))];
}

test(`${SUBSCRIBERS} subscribers added within ${(SUBSCRIBERS - 1) * STAGGER_MS / 1000} s all decode the stream`, { timeout: 90_000 }, h.diagnosed(async () => {
  const teacher = await h.newPage('teacher');
  await teacher.goto(h.pageUrl(ROOM, 'teacher'));
  const mid = await waitForPublished(teacher);
  const classTab = await h.newPage('class');
  await classTab.goto(`http://127.0.0.1:${h.wren.port}/`);

  const results = await classTab.evaluate(subscribeAll, {
    room: ROOM, mid, n: SUBSCRIBERS, stagger: STAGGER_MS, timeoutMs: MEDIA_TIMEOUT_MS,
  });
  const missing = results.filter((r) => r.ms === null).map((r) => `fan${r.i}`);
  assert.deepEqual(missing, [], `no video frame within ${MEDIA_TIMEOUT_MS} ms`);

  const byJoin = results.map((r) => r.ms);
  const sorted = [...byJoin].sort((a, b) => a - b);
  console.log(`first-frame-ms by join order: ${byJoin.join(' ')}`);
  console.log(`first-frame-ms: min ${sorted[0]} p50 ${percentile(sorted, 50)} p95 ${percentile(sorted, 95)} max ${sorted.at(-1)} (n=${sorted.length})`);
}));
