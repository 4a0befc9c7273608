// Two boards of a cluster: a real redis-server on loopback, two wren nodes
// sharing it, and a headless Chromium tab on each, in one room. Each tab
// sees and hears the other: the other's stream reaches its own board
// through a relay (its board pulls the stream from the publisher's board,
// SFU to SFU), and its media comes from its own board's SFU.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { setTimeout as delay } from 'node:timers/promises';
import { Harness, UI_TIMEOUT_MS, freePort, stopServer, waitForMedia, waitForPublished } from './harness.mjs';

const ROOM = `cluster-test-${process.pid}`;

const h = new Harness();
let redis; // {proc, output()}
let a; // the node alice's tab loads from
let b; // bob's
let alice;
let bob;

// A redis-server of the test's own, on a free loopback port, with nothing
// written to disk; resolves once it accepts connections.
async function startRedis() {
  const port = await freePort('tcp');
  const proc = spawn('redis-server', [
    '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
  ], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  proc.stdout.on('data', (chunk) => { output += chunk; });
  proc.stderr.on('data', (chunk) => { output += chunk; });
  await new Promise((resolve, reject) => proc.once('spawn', resolve).once('error', reject))
    .catch((err) => assert.fail(`cannot start redis-server: ${err.message}`));
  const deadline = Date.now() + 10_000;
  while (!output.includes('Ready to accept connections')) {
    if (Date.now() > deadline || proc.exitCode !== null) assert.fail(`redis-server not ready:\n${output}`);
    await delay(50);
  }
  return { proc, url: `redis://127.0.0.1:${port}/`, output: () => output };
}

// One series of a node's /metrics (its first line), as a number.
async function metric(server, series) {
  const body = await fetch(`http://127.0.0.1:${server.port}/metrics`, { signal: AbortSignal.timeout(2000) })
    .then((res) => res.text(), () => '');
  const line = body.split('\n').find((l) => l.startsWith(`${series} `) || l.startsWith(`${series}{`));
  return line === undefined ? null : Number(line.split(' ').pop());
}

async function waitForMetric(server, series, value) {
  const deadline = Date.now() + UI_TIMEOUT_MS;
  let last;
  while (Date.now() < deadline) {
    last = await metric(server, series);
    if (last === value) return;
    await delay(100);
  }
  assert.fail(`${series} on :${server.port} is ${last}, not ${value}`);
}

// The port the page's subscriber connection for `mid` receives from (the
// remote end of its selected candidate pair).
async function mediaSourcePort(page, mid) {
  return page.evaluate(async (mid) => {
    const stats = await window.wren.subs.get(mid).pc.getStats();
    let port = null;
    stats.forEach((r) => {
      if (r.type === 'candidate-pair' && r.state === 'succeeded' && r.nominated) {
        port = stats.get(r.remoteCandidateId)?.port ?? null;
      }
    });
    return port;
  }, mid);
}

before(async () => {
  await h.launch();
  redis = await startRedis();
  a = await h.spawnWren(['--cluster', redis.url, '--bizid', 'board-a']);
  b = await h.spawnWren(['--cluster', redis.url, '--bizid', 'board-b']);
  await waitForMetric(a, 'wren_cluster_nodes', 1);
  await waitForMetric(b, 'wren_cluster_nodes', 1);
  alice = await h.newPage('alice');
  bob = await h.newPage('bob');
}, { timeout: 60_000 });

after(async () => {
  await h.close();
  await stopServer(a);
  await stopServer(b);
  redis?.proc.kill('SIGTERM');
});

// A failed test prints both nodes' output and Redis's, besides the pages'.
const diagnosed = (fn) => h.diagnosed(async (t) => {
  try {
    await fn(t);
  } catch (err) {
    console.error(`--- board-a (tail) ---\n${a?.output().slice(-4000)}`);
    console.error(`--- board-b (tail) ---\n${b?.output().slice(-4000)}`);
    console.error(`--- redis (tail) ---\n${redis?.output().slice(-1000)}`);
    throw err;
  }
});

test('tabs on two boards join one room and list each other', { timeout: 30_000 }, diagnosed(async () => {
  await alice.goto(h.pageUrl(ROOM, 'alice', {}, a));
  await waitForPublished(alice);
  await bob.goto(h.pageUrl(ROOM, 'bob', {}, b));
  await waitForPublished(bob);
  await alice.locator('#peers li[data-uid="bob"]').waitFor({ timeout: UI_TIMEOUT_MS });
  await bob.locator('#peers li[data-uid="alice"]').waitFor({ timeout: UI_TIMEOUT_MS });
}));

test('each tab sees and hears the other, relayed to its own board', { timeout: 60_000 }, diagnosed(async () => {
  const aliceMid = await waitForPublished(alice);
  const bobMid = await waitForPublished(bob);
  const onBob = await waitForMedia(bob, aliceMid);
  const onAlice = await waitForMedia(alice, bobMid);
  console.log(`bob decodes alice's ${onBob.videoCodec}, alice bob's ${onAlice.videoCodec}`);
  // Each board pulls the other's stream once, and serves its own tab.
  for (const node of [a, b]) {
    await waitForMetric(node, 'wren_cluster_relays', 1);
    await waitForMetric(node, 'wren_cluster_served_subscriptions', 1);
  }
  assert.equal(await mediaSourcePort(bob, aliceMid), b.mediaPort, "bob's media comes from his own board");
  assert.equal(await mediaSourcePort(alice, bobMid), a.mediaPort, "alice's media comes from her own board");
}));

test('when a tab leaves, the other board drops its tile and its relay', { timeout: 30_000 }, diagnosed(async () => {
  const aliceMid = await waitForPublished(alice);
  await alice.click('#leave');
  await bob.locator(`.tile[data-mid="${aliceMid}"]`).waitFor({ state: 'detached', timeout: UI_TIMEOUT_MS });
  await bob.locator('#peers li[data-uid="alice"]').waitFor({ state: 'detached', timeout: UI_TIMEOUT_MS });
  // Alice watched bob through a relay on a; b watched alice through one.
  await waitForMetric(a, 'wren_cluster_relays', 0);
  await waitForMetric(b, 'wren_cluster_relays', 0);
  await waitForMetric(a, 'wren_cluster_served_subscriptions', 0);
  await waitForMetric(b, 'wren_cluster_served_subscriptions', 0);
}));

test('the pages raise no JavaScript errors', () => {
  assert.deepEqual(h.pageErrors, []);
});
