'use strict';

// The wren web client: join a room, publish camera + mic (in simulcast where
// the camera is big enough) and optionally the screen, watch everyone else.
// Three parts: a protoo-style signaling helper, the room logic, the UI.
// The room state is `window.wren`, which is also what the browser tests read;
// each tile carries its measured video size and frame rate as data-width,
// data-height and data-fps.

const REQUEST_TIMEOUT_MS = 15000; // longer than the server's SFU timeout, so its 504 arrives first
const KEEPALIVE_MS = 10000; // the server drops a peer that is silent for 30 s
const STATS_MS = 1000; // how often the tiles' resolution and frame rate are refreshed
const ID_RE = /^[A-Za-z0-9_.@:-]{1,64}$/; // what the server accepts as uid and rid
const LOG_MAX = 500;
// The SFU has one UDP port for everything: bundle every track onto one transport.
const PC_CONFIG = { bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require' };
// The URL parameter `vcodec` names the video codec to publish with (the SFU's
// own preference, VP8, otherwise); the browser test uses it.
const VIDEO_CODECS = { vp8: 'video/VP8', vp9: 'video/VP9', h264: 'video/H264' };
// Not codecs but companions of one: they stay on offer whichever codec is chosen.
const REPAIR_CODECS = ['video/rtx', 'video/red', 'video/ulpfec'];
// Ask for 720p: big enough for three simulcast layers, and what laptops have.
const CAMERA = { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } };
// `minfo.videotype` is passed through to subscribers unchanged (PROTOCOL.md);
// this client marks a screen share with 1 so that others show it uncropped.
const VIDEOTYPE_CAMERA = 0;
const VIDEOTYPE_SCREEN = 1;
// Simulcast layers, smallest first, as browsers list them. A layer is only
// worth sending when its shorter side is at least `minShort` pixels at the
// camera's size: a 360p camera gets two layers, a 720p one three, and a
// camera under 270p one (a 90p layer is useless). maxBitrate is about what
// VP8 needs at that size and 30 fps.
const SIMULCAST_LAYERS = [
  { rid: 'q', scaleResolutionDownBy: 4, minShort: 540 },
  { rid: 'h', scaleResolutionDownBy: 2, minShort: 270 },
  { rid: 'f', scaleResolutionDownBy: 1, minShort: 0 },
];
// The tile grid: tiles keep this aspect and the gap between them (px).
const TILE_ASPECT = 16 / 9;
const TILE_GAP = 8;
// The highest simulcast layer worth receiving for a tile this many device
// pixels wide (the wren `layer` request, PROTOCOL.md): a 720p camera's
// layers are 320, 640 and 1280 wide, so a thumbnail needs no more than the
// lowest. Above the last width the SFU chooses by the link alone ("auto").
const LAYER_FOR_WIDTH = [
  { maxWidth: 400, layer: 'low' },
  { maxWidth: 800, layer: 'medium' },
];

const wren = {
  state: 'idle', // 'idle' | 'connecting' | 'joined'
  uid: null,
  rid: null,
  signaling: null,
  peers: new Map(), // uid -> bizid, the other peers in the room
  pubs: new Map(), // mid -> {mid, uid, rid, sfuid, minfo}, the other peers' streams
  subs: new Map(), // mid -> {mid, uid, pc, sid, answeredAt, firstFrameAt, tile, stats}
  // Our own publishes: the camera + mic, and the screen. Each is
  // {key, pc, stream, published: {mid, sfuid} | null, layers: [rid...], tile, stats}.
  camera: null,
  screen: null,
  get publisherPc() { return this.camera?.pc ?? null; },
  get published() { return this.camera?.published ?? null; },
  get localStream() { return this.camera?.stream ?? null; },
  micMuted: false, // the microphone track is disabled (it keeps sending silence)
  cameraOff: false, // the camera track is stopped and the sender sends nothing
  videoCodec: null, // mime type to publish video with (URL parameter vcodec), or null
  simulcast: true, // URL parameter simulcast=0 publishes one layer
  offers: 0, // SDP offers made, publishes and subscribes alike: mute and camera off make none
  mediaProblem: null, // {reason, message} when the page cannot use the camera/mic
  keepaliveTimer: null,
  statsTimer: null,
  log: [], // recent signaling traffic and errors: {t, kind, data}
};
window.wren = wren;

function log(kind, data) {
  wren.log.push({ t: performance.now(), kind, data });
  if (wren.log.length > LOG_MAX) wren.log.shift();
}

// ---------------------------------------------------------------------------
// Signaling: protoo-style requests, responses and notifications over a WebSocket.

class RequestError extends Error {
  constructor(method, code, reason) {
    super(`${method} failed: ${code} ${reason}`);
    this.code = code;
    this.reason = reason;
  }
}

class Signaling {
  // Resolves once the socket is open. The server must select the `protoo`
  // subprotocol, otherwise the browser fails the connection.
  static open(url, handlers) {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, 'protoo');
      const timer = setTimeout(() => {
        ws.onclose = null;
        ws.close();
        reject(new Error('Could not connect: no answer from the server'));
      }, REQUEST_TIMEOUT_MS);
      ws.onopen = () => {
        clearTimeout(timer);
        resolve(new Signaling(ws, handlers));
      };
      // An invalid name gets HTTP 400, which the browser reports only as code 1006.
      ws.onclose = (ev) => {
        clearTimeout(timer);
        reject(new Error(`Could not connect (WebSocket close ${ev.code}): is the server up and the name valid?`));
      };
    });
  }

  constructor(ws, { onNotification, onClose }) {
    this.ws = ws;
    this.pending = new Map(); // request id -> {method, resolve, reject, timer}
    this.nextId = 1 + Math.floor(Math.random() * 1e6);
    this.onNotification = onNotification;
    ws.onmessage = (ev) => this.receive(ev.data);
    ws.onclose = (ev) => {
      this.rejectPending();
      onClose(ev.code, ev.reason);
    };
  }

  request(method, data) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new RequestError(method, 'timeout', `no response in ${REQUEST_TIMEOUT_MS / 1000} s`));
      }, REQUEST_TIMEOUT_MS);
      this.pending.set(id, { method, resolve, reject, timer });
      const msg = { request: true, id, method, data };
      log('send', msg);
      this.ws.send(JSON.stringify(msg));
    });
  }

  receive(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      log('error', `unparsable message: ${text}`);
      return;
    }
    log('recv', msg);
    if (msg.response) {
      const pending = this.pending.get(msg.id);
      if (!pending) return;
      this.pending.delete(msg.id);
      clearTimeout(pending.timer);
      if (msg.ok) pending.resolve(msg.data ?? {});
      else pending.reject(new RequestError(pending.method, msg.errorCode, msg.errorReason));
    } else if (msg.notification) {
      this.onNotification(msg.method, msg.data ?? {});
    }
  }

  // A deliberate close: no onClose callback, pending requests fail.
  close() {
    this.ws.onclose = null;
    this.ws.close(1000);
    this.rejectPending();
  }

  rejectPending() {
    for (const { method, reject, timer } of this.pending.values()) {
      clearTimeout(timer);
      reject(new RequestError(method, 'closed', 'the connection closed'));
    }
    this.pending.clear();
  }
}

// ---------------------------------------------------------------------------
// Room logic.

function wsUrl(uid) {
  const url = new URL('ws', location.href);
  url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  // The uid alphabet needs no escaping in a query, so it goes on the wire as typed.
  // A room token given to the page (?token=, from `wren token`) goes with it.
  const token = new URLSearchParams(location.search).get('token');
  const tokenPart = token ? `&token=${encodeURIComponent(token)}` : '';
  return `${url.href}?peer=${uid}${tokenPart}`;
}

async function join(rid, uid, withMedia) {
  if (!ID_RE.test(rid) || !ID_RE.test(uid)) {
    return fail('Room and name must each be 1 to 64 characters of A-Z a-z 0-9 _ . @ : -');
  }
  wren.state = 'connecting';
  wren.uid = uid;
  wren.rid = rid;
  ui.showState();
  ui.status(`Connecting as ${uid}…`);
  let answer;
  try {
    wren.signaling = await Signaling.open(wsUrl(uid), { onNotification, onClose });
    answer = await wren.signaling.request('join', { rid });
  } catch (err) {
    cleanup();
    return fail(err);
  }
  wren.state = 'joined';
  for (const user of answer.users ?? []) {
    if (user.uid !== uid) wren.peers.set(user.uid, user.bizid);
  }
  wren.keepaliveTimer = setInterval(() => {
    wren.signaling.request('keepalive', { rid }).catch(fail);
  }, KEEPALIVE_MS);
  wren.statsTimer = setInterval(refreshStats, STATS_MS);
  ui.showState();
  ui.renderPeers();
  ui.chatLog.replaceChildren();
  ui.status(`Joined room ${rid} as ${uid}.`);
  for (const pub of answer.pubs ?? []) addPub(pub);
  if (withMedia) switchPublishing(true);
}

async function leave() {
  if (wren.state !== 'joined') return;
  const rid = wren.rid;
  try {
    await wren.signaling.request('leave', { rid });
    ui.status(`Left room ${rid}.`);
  } catch (err) {
    fail(err);
  }
  cleanup();
}

// Drops every connection and all room state; safe to call more than once.
function cleanup() {
  clearInterval(wren.keepaliveTimer);
  wren.keepaliveTimer = null;
  clearInterval(wren.statsTimer);
  wren.statsTimer = null;
  stopPublication('camera');
  stopPublication('screen');
  for (const mid of [...wren.subs.keys()]) closeSub(mid);
  wren.pubs.clear();
  wren.peers.clear();
  wren.signaling?.close();
  wren.signaling = null;
  wren.state = 'idle';
  ui.showState();
  ui.renderPeers();
}

function onClose(code, reason) {
  fail(`The connection closed (${code}${reason ? `: ${reason}` : ''})`);
  wren.signaling = null;
  cleanup();
}

function onNotification(method, data) {
  if (data.rid !== wren.rid) return;
  switch (method) {
    case 'peer-join':
      wren.peers.set(data.uid, data.bizid);
      ui.renderPeers();
      ui.notice(`${data.uid} joined`);
      break;
    case 'peer-leave':
      wren.peers.delete(data.uid);
      for (const sub of [...wren.subs.values()]) if (sub.uid === data.uid) closeSub(sub.mid);
      ui.renderPeers();
      ui.notice(`${data.uid} left`);
      break;
    case 'stream-add':
      addPub(data);
      break;
    case 'stream-remove':
      removePub(data.mid);
      break;
    case 'broadcast':
      ui.chat(data.uid, typeof data.data?.text === 'string' ? data.data.text : JSON.stringify(data.data));
      break;
    default:
      log('error', `unknown notification ${method}`);
  }
}

function addPub(pub) {
  if (pub.uid === wren.uid) return;
  wren.pubs.set(pub.mid, pub);
  subscribe(pub);
}

function removePub(mid) {
  for (const key of ['camera', 'screen']) {
    if (mid !== wren[key]?.published?.mid) continue;
    // The server dropped one of our own streams (its media connection failed).
    stopPublication(key);
    if (key === 'camera') ui.publishToggle.checked = false;
    fail(key === 'camera' ? 'The server stopped our stream' : 'The server stopped our screen share');
    return;
  }
  wren.pubs.delete(mid);
  closeSub(mid);
}

// ---------------------------------------------------------------------------
// Publishing: the camera + mic, and the screen, each a publish of its own.

// Camera and microphone; where one of them is missing, whichever exists
// (a laptop without a camera still gets to speak). Rejects with the
// browser's error (NotAllowedError, NotFoundError, ...) when neither works.
async function getCameraAndMic() {
  let notFound;
  for (const constraints of [{ audio: true, video: CAMERA }, { audio: true }, { video: CAMERA }]) {
    try {
      return await navigator.mediaDevices.getUserMedia(constraints);
    } catch (err) {
      // Only a missing device is worth another try with less: a refusal
      // or a busy camera would be refused again.
      if (err.name !== 'NotFoundError') throw err;
      notFound = err;
    }
  }
  throw notFound;
}

async function publishCamera() {
  if (!navigator.mediaDevices?.getUserMedia) {
    ui.publishToggle.checked = false;
    return mediaFailure(noMediaDevicesError());
  }
  let stream;
  try {
    stream = await getCameraAndMic();
  } catch (err) {
    ui.publishToggle.checked = false;
    return mediaFailure(err);
  }
  if (wren.state !== 'joined') {
    stream.getTracks().forEach((track) => track.stop());
    return;
  }
  ui.clearMediaProblem();
  if (stream.getVideoTracks().length === 0) ui.notice('No camera found: publishing the microphone only.');
  if (stream.getAudioTracks().length === 0) ui.notice('No microphone found: publishing the camera only.');
  wren.cameraOff = false;
  for (const track of stream.getAudioTracks()) track.enabled = !wren.micMuted;
  const pub = await publishStream('camera', stream, {
    label: `${wren.uid} (you)`,
    videotype: VIDEOTYPE_CAMERA,
    simulcast: wren.simulcast,
  });
  if (!pub) ui.publishToggle.checked = false;
}

// Publishes `stream` as a stream of its own in the room, kept as wren[key].
// Resolves to the publication once the SFU's answer is applied; to null when
// it failed (reported) or was stopped meanwhile.
async function publishStream(key, stream, { label, videotype, simulcast }) {
  const pc = new RTCPeerConnection(PC_CONFIG);
  const tile = ui.addTile(key, label, { local: true, screen: videotype === VIDEOTYPE_SCREEN });
  const pub = { key, pc, stream, published: null, layers: [], tile, prevFrames: null };
  wren[key] = pub;
  ui.attach(tile.video, stream);
  watchConnection(pc, key === 'screen' ? 'Sharing the screen' : 'Publishing', tile);
  ui.showState();
  try {
    for (const track of stream.getTracks()) {
      const transceiver = addSender(pc, track, stream, simulcast);
      if (track.kind === 'video' && wren.videoCodec) offerOnly(transceiver, wren.videoCodec);
    }
    // No waiting for ICE gathering: the ICE-lite SFU learns our address from our checks.
    await makeOffer(pc);
    const answer = await wren.signaling.request('publish', {
      rid: wren.rid,
      jsep: { type: 'offer', sdp: pc.localDescription.sdp },
      minfo: {
        audio: stream.getAudioTracks().length > 0,
        video: stream.getVideoTracks().length > 0,
        audiotype: 0,
        videotype,
      },
    });
    if (wren[key] !== pub) return null;
    pub.published = { mid: answer.mid, sfuid: answer.sfuid };
    await pc.setRemoteDescription(answer.jsep);
    // What the browser agreed to send: the rids it kept (none without simulcast).
    pub.layers = (videoSender(pc)?.getParameters().encodings ?? []).map((e) => e.rid).filter(Boolean);
    tile.el.dataset.layers = String(Math.max(1, pub.layers.length));
    ui.showState();
    return pub;
  } catch (err) {
    if (wren[key] !== pub) return null;
    stopPublication(key);
    fail(err);
    return null;
  }
}

// A sendonly transceiver for `track`: video in simulcast when asked and the
// camera is big enough for it. A browser that refuses the encodings (they
// throw) gets one layer instead; one that silently sends fewer is fine too:
// the SFU answers for exactly the rids offered.
//
// A camera sent in one layer is sent with three temporal layers (L1T3: 7.5,
// 15 and 30 fps) where the browser can: the SFU then sends a subscriber on a
// weak link fewer frames of the same picture. A browser that does not know
// scalabilityMode ignores it or throws; then it is one plain layer.
function addSender(pc, track, stream, simulcast) {
  const init = { direction: 'sendonly', streams: [stream] };
  const sendEncodings = track.kind === 'video' && simulcast ? simulcastEncodings(track) : null;
  if (sendEncodings) {
    try {
      return pc.addTransceiver(track, { ...init, sendEncodings });
    } catch (err) {
      log('info', `simulcast refused (${err.name}: ${err.message}): publishing one layer`);
    }
  }
  if (track.kind === 'video' && track.contentHint !== 'detail') {
    try {
      return pc.addTransceiver(track, { ...init, sendEncodings: [{ scalabilityMode: 'L1T3' }] });
    } catch (err) {
      log('info', `temporal layers refused (${err.name}: ${err.message}): one plain layer`);
    }
  }
  return pc.addTransceiver(track, init);
}

// The simulcast encodings for a camera track, or null for one layer.
function simulcastEncodings(track) {
  const { width = 0, height = 0 } = track.getSettings();
  const short = Math.min(width, height);
  const layers = SIMULCAST_LAYERS.filter((layer) => short >= layer.minShort);
  if (layers.length < 2) return null;
  return layers.map(({ rid, scaleResolutionDownBy }) => ({
    rid,
    scaleResolutionDownBy,
    maxBitrate: layerBitrate(short / scaleResolutionDownBy),
  }));
}

// Bits per second for a layer whose shorter side is `short` pixels.
function layerBitrate(short) {
  if (short <= 180) return 150_000;
  if (short <= 360) return 500_000;
  if (short <= 540) return 1_000_000;
  return 2_000_000;
}

function videoSender(pc) {
  // receiver.track exists (and has the kind) even while the sender has no track.
  return pc.getTransceivers().find((t) => t.receiver.track.kind === 'video')?.sender ?? null;
}

// Every offer this page makes goes through here, so tests can tell that
// muting or stopping the camera renegotiated nothing.
async function makeOffer(pc) {
  wren.offers += 1;
  await pc.setLocalDescription();
}

// Restricts the transceiver's offer to one video codec (all its profiles)
// plus the repair formats, so the SFU's answer cannot pick another one.
function offerOnly(transceiver, mimeType) {
  const { codecs } = RTCRtpSender.getCapabilities('video');
  const chosen = codecs.filter((c) => c.mimeType.toLowerCase() === mimeType.toLowerCase());
  if (chosen.length === 0) throw new Error(`This browser cannot send ${mimeType}`);
  const repair = codecs.filter((c) => REPAIR_CODECS.includes(c.mimeType.toLowerCase()));
  transceiver.setCodecPreferences([...chosen, ...repair]);
}

// Asks first, then closes the connection: the SFU removes a stream whose
// connection closes, and an unpublish arriving after that would get a 404.
async function unpublish(key) {
  const published = wren[key]?.published;
  if (published) {
    try {
      await wren.signaling.request('unpublish', { rid: wren.rid, ...published });
    } catch (err) {
      fail(err);
    }
  }
  stopPublication(key);
}

function stopPublication(key) {
  const pub = wren[key];
  if (!pub) return;
  wren[key] = null;
  pub.pc.close();
  pub.stream.getTracks().forEach((track) => track.stop());
  ui.removeTile(key);
  if (key === 'camera') wren.cameraOff = false;
  ui.showState();
}

// Mute: the track stays and sends silence, so unmuting is instant and no
// offer is made. The SFU and the other side see an ordinary audio stream.
function setMicMuted(muted) {
  wren.micMuted = muted;
  for (const track of wren.localStream?.getAudioTracks() ?? []) track.enabled = !muted;
  ui.showState();
}

// Camera off: the sender is given no track (replaceTrack renegotiates
// nothing) and the camera is released, so its light goes off; on again
// takes a new camera track. A disabled track instead would keep the camera
// on and still send black frames.
async function setCameraOff(off) {
  const pub = wren.camera;
  const sender = pub && videoSender(pub.pc);
  if (!sender || off === wren.cameraOff) return;
  try {
    if (off) {
      const track = sender.track;
      await sender.replaceTrack(null);
      track?.stop();
      if (track) pub.stream.removeTrack(track);
      wren.cameraOff = true;
    } else {
      const fresh = await navigator.mediaDevices.getUserMedia({ video: CAMERA });
      const [track] = fresh.getVideoTracks();
      if (wren.camera !== pub) {
        track.stop();
        return;
      }
      await sender.replaceTrack(track);
      pub.stream.addTrack(track);
      ui.attach(pub.tile.video, pub.stream);
      wren.cameraOff = false;
    }
  } catch (err) {
    mediaFailure(err);
  }
}

async function startSharing() {
  let stream;
  try {
    if (!navigator.mediaDevices?.getDisplayMedia) throw noMediaDevicesError('screen sharing');
    stream = await navigator.mediaDevices.getDisplayMedia({ video: { frameRate: { ideal: 15 } }, audio: false });
  } catch (err) {
    // Cancelling the browser's picker is a NotAllowedError too: not a failure.
    if (err.name === 'NotAllowedError') return ui.status('Screen sharing was cancelled.');
    return fail(`Screen sharing: ${err.message}`);
  }
  if (wren.state !== 'joined' || wren.screen) {
    stream.getTracks().forEach((track) => track.stop());
    return;
  }
  const [track] = stream.getVideoTracks();
  // Text has to stay legible: the encoder keeps resolution and drops frame rate.
  if ('contentHint' in track) track.contentHint = 'detail';
  // The browser's own "Stop sharing" button ends the track.
  track.addEventListener('ended', () => {
    if (wren.screen?.stream === stream) switchSharing(false);
  });
  // One layer: a screen is read, not glanced at, and is sent at full size.
  await publishStream('screen', stream, {
    label: `${wren.uid} (your screen)`,
    videotype: VIDEOTYPE_SCREEN,
    simulcast: false,
  });
}

// ---------------------------------------------------------------------------
// Subscribing.

async function subscribe(pub) {
  if (wren.subs.has(pub.mid)) return;
  const pc = new RTCPeerConnection(PC_CONFIG);
  const screen = pub.minfo?.videotype === VIDEOTYPE_SCREEN;
  const tile = ui.addTile(pub.mid, screen ? `${pub.uid} (screen)` : pub.uid, { local: false, screen });
  const sub = {
    mid: pub.mid, uid: pub.uid, pc, sid: null, answeredAt: null, firstFrameAt: null, tile, inbound: true, prevFrames: null,
    screen, video: Boolean(pub.minfo?.video), layer: 'auto', // layer: the highest one asked for
  };
  wren.subs.set(pub.mid, sub);
  if (pub.minfo?.audio) pc.addTransceiver('audio', { direction: 'recvonly' });
  if (pub.minfo?.video) pc.addTransceiver('video', { direction: 'recvonly' });
  else tile.el.classList.add('audio-only');
  pc.ontrack = ({ track }) => {
    if (track.kind === 'video') {
      ui.attach(tile.video, new MediaStream([track]));
      tile.video.requestVideoFrameCallback(() => {
        sub.firstFrameAt = performance.now();
        pinLayer(sub);
      });
    } else {
      // Audio gets an element of its own: the video element stays muted, and
      // Chromium plays (and counts) received audio only from a media element.
      ui.attach(tile.audio, new MediaStream([track]));
    }
  };
  watchConnection(pc, `Receiving ${pub.uid}`, tile);
  try {
    await makeOffer(pc);
    const answer = await wren.signaling.request('subscribe', {
      rid: wren.rid,
      mid: pub.mid,
      jsep: { type: 'offer', sdp: pc.localDescription.sdp },
      sfuid: pub.sfuid,
    });
    if (wren.subs.get(pub.mid) !== sub) return;
    sub.sid = answer.sid;
    sub.answeredAt = performance.now();
    await pc.setRemoteDescription(answer.jsep);
  } catch (err) {
    if (wren.subs.get(pub.mid) !== sub) return;
    closeSub(pub.mid);
    fail(err);
  }
}

// Asks the SFU for no larger a layer than the subscription's tile shows
// (only when that changes). A screen share is one full-size layer: left alone.
// Only once video is flowing: this SFU forgets a pin that arrives before the
// subscription's media started (measured: one sent right after the
// subscribe answer was lost, the same one sent later held); until then the
// SFU starts every subscriber on its lowest layer anyway.
function pinLayer(sub) {
  // No signaling: the socket closed and cleanup is removing the tiles (each removal relays out).
  if (!sub.sid || !sub.video || sub.screen || sub.firstFrameAt === null || !wren.signaling) return;
  const width = sub.tile.el.getBoundingClientRect().width * (window.devicePixelRatio || 1);
  if (width === 0) return;
  const layer = LAYER_FOR_WIDTH.find((step) => width <= step.maxWidth)?.layer ?? 'auto';
  if (layer === sub.layer) return;
  sub.layer = layer;
  wren.signaling.request('layer', { rid: wren.rid, mid: sub.mid, sid: sub.sid, layer }).catch((err) => {
    // Gone meanwhile (404): nothing to pin.
    if (wren.subs.get(sub.mid) === sub) fail(err);
  });
}

// The server has closed (or will close) the subscription itself: on
// stream-remove, on leave and on a closed socket. No unsubscribe needed.
function closeSub(mid) {
  wren.subs.get(mid)?.pc.close();
  wren.subs.delete(mid);
  ui.removeTile(mid);
}

function watchConnection(pc, what, tile) {
  pc.onconnectionstatechange = () => {
    tile.el.dataset.connection = pc.connectionState;
    if (pc.connectionState === 'failed') fail(`${what}: the media connection failed`);
  };
}

// ---------------------------------------------------------------------------
// Tile statistics: the resolution and frame rate each tile shows.

async function refreshStats() {
  const owners = [...wren.subs.values(), wren.camera, wren.screen].filter(Boolean);
  await Promise.all(owners.map((owner) => measureVideo(owner, owner.inbound ? 'inbound-rtp' : 'outbound-rtp')));
}

// Reads the video a connection receives (inbound-rtp) or sends
// (outbound-rtp: one report per simulcast layer; the tile shows the largest
// layer being sent) and puts it on its tile. The frame rate is the change of
// the frame counter since the last reading: framesPerSecond is missing in
// some browsers and absent on the first reading of others.
async function measureVideo(owner, type) {
  let report;
  try {
    report = await owner.pc.getStats();
  } catch {
    return; // closed meanwhile
  }
  const prev = owner.prevFrames ?? new Map();
  const next = new Map();
  let best = null;
  let sending = 0;
  report.forEach((r) => {
    if (r.type !== type || r.kind !== 'video') return;
    const frames = (type === 'inbound-rtp' ? r.framesDecoded : r.framesEncoded) ?? 0;
    next.set(r.id, { frames, t: r.timestamp });
    const before = prev.get(r.id);
    const fps = before && r.timestamp > before.t
      ? ((frames - before.frames) * 1000) / (r.timestamp - before.t)
      : (r.framesPerSecond ?? 0);
    const layer = { width: r.frameWidth ?? 0, height: r.frameHeight ?? 0, fps, frames };
    if (fps > 0) sending += 1;
    // A paused layer keeps its last size: prefer layers that are moving.
    const rank = (l) => (l.fps > 0 ? 1e9 : 0) + l.width * l.height;
    if (!best || rank(layer) > rank(best)) best = layer;
  });
  owner.prevFrames = next;
  if (owner.pc.connectionState === 'closed') return;
  ui.showVideoStats(owner.tile, best, type === 'outbound-rtp' ? sending : null);
}

async function sendChat(text) {
  try {
    await wren.signaling.request('broadcast', { rid: wren.rid, data: { text } });
    ui.chat(wren.uid, text);
    return true;
  } catch (err) {
    fail(err);
    return false;
  }
}

function fail(err) {
  // A request cut short by a closed socket: the close itself is what gets reported.
  if (err instanceof RequestError && err.code === 'closed') return;
  const message = err instanceof Error ? err.message : String(err);
  log('error', message);
  ui.status(message, true);
}

// Browsers leave navigator.mediaDevices undefined outside a secure context
// (https://, or http://localhost): say so rather than fail on a TypeError.
function noMediaDevicesError(what = 'the camera and microphone') {
  const err = new Error(window.isSecureContext
    ? `This browser offers no access to ${what} (navigator.mediaDevices is missing).`
    : `This page is not a secure context (${location.origin}), so the browser offers no camera, microphone or screen sharing here. `
      + 'Open it over https:// (start wren with --tls-cert and --tls-key) or as http://localhost. You can still join and watch.');
  err.name = window.isSecureContext ? 'NotSupportedError' : 'InsecureContextError';
  return err;
}

// A refused or missing camera/microphone: a message on the page that says
// what happened and what to do, not only an entry in the console.
function mediaFailure(err) {
  const reasons = {
    InsecureContextError: ['insecure', err.message],
    NotSupportedError: ['unsupported', err.message],
    NotAllowedError: ['denied', 'Camera and microphone access was refused. Allow them for this site in the browser '
      + '(the camera icon in the address bar or the site settings), then tick "Publish camera + mic" again.'],
    SecurityError: ['denied', `Camera and microphone access is blocked on this page: ${err.message}`],
    NotFoundError: ['not-found', 'No camera or microphone was found. Connect one, then tick "Publish camera + mic" again.'],
    NotReadableError: ['unreadable', 'The camera or microphone could not be started: another application may be using it.'],
    AbortError: ['unreadable', 'The camera or microphone could not be started: another application may be using it.'],
  };
  const [reason, message] = reasons[err.name] ?? ['other', `Camera/microphone: ${err.name}: ${err.message}`];
  log('error', `${err.name}: ${err.message}`);
  ui.showMediaProblem(reason, message);
}

// ---------------------------------------------------------------------------
// UI.

const $ = (id) => document.getElementById(id);

const ui = {
  roomInput: $('room'),
  nameInput: $('name'),
  publishToggle: $('publish'),
  joinButton: $('join'),
  leaveButton: $('leave'),
  statusLine: $('status'),
  mediaProblem: $('media-problem'),
  videos: $('videos'),
  micButton: $('mic'),
  cameraButton: $('camera'),
  shareButton: $('share'),
  peerList: $('peers'),
  chatLog: $('chat-log'),
  chatInput: $('chat-input'),
  chatSend: $('chat-send'),
  busy: { publish: false, camera: false, share: false }, // an operation of that control is running

  showState() {
    const joined = wren.state === 'joined';
    const idle = wren.state === 'idle';
    const noMedia = !navigator.mediaDevices?.getUserMedia;
    ui.roomInput.disabled = ui.nameInput.disabled = ui.joinButton.disabled = !idle;
    ui.leaveButton.disabled = ui.chatInput.disabled = ui.chatSend.disabled = !joined;
    ui.publishToggle.disabled = wren.state === 'connecting' || ui.busy.publish || noMedia;

    const camera = wren.camera;
    ui.micButton.disabled = !joined || !camera || camera.stream.getAudioTracks().length === 0;
    ui.micButton.setAttribute('aria-pressed', String(wren.micMuted));
    ui.micButton.textContent = wren.micMuted ? 'Unmute' : 'Mute';
    ui.cameraButton.disabled = !joined || !camera || ui.busy.camera || !videoSender(camera.pc);
    ui.cameraButton.setAttribute('aria-pressed', String(wren.cameraOff));
    ui.cameraButton.textContent = wren.cameraOff ? 'Start camera' : 'Stop camera';
    ui.shareButton.disabled = !joined || ui.busy.share || !navigator.mediaDevices?.getDisplayMedia;
    ui.shareButton.setAttribute('aria-pressed', String(wren.screen !== null));
    ui.shareButton.textContent = wren.screen ? 'Stop sharing' : 'Share screen';
    const localTile = ui.tile('camera');
    localTile?.classList.toggle('mic-muted', wren.micMuted);
    localTile?.classList.toggle('camera-off', wren.cameraOff);
    document.body.dataset.state = wren.state;
  },

  status(text, isError = false) {
    ui.statusLine.textContent = text;
    ui.statusLine.classList.toggle('error', isError);
  },

  // `reason` goes to data-reason: insecure, unsupported, denied, not-found, unreadable, other.
  showMediaProblem(reason, message) {
    wren.mediaProblem = { reason, message };
    ui.mediaProblem.dataset.reason = reason;
    ui.mediaProblem.textContent = message;
    ui.mediaProblem.hidden = false;
  },

  clearMediaProblem() {
    wren.mediaProblem = null;
    delete ui.mediaProblem.dataset.reason;
    ui.mediaProblem.textContent = '';
    ui.mediaProblem.hidden = true;
  },

  renderPeers() {
    const uids = wren.state === 'joined' ? [wren.uid, ...[...wren.peers.keys()].sort()] : [];
    ui.peerList.replaceChildren(
      ...uids.map((uid) => {
        const li = document.createElement('li');
        li.dataset.uid = uid;
        li.textContent = uid === wren.uid ? `${uid} (you)` : uid;
        return li;
      }),
    );
  },

  // A tile is one stream: a video, an audio element, the owner's name and
  // the video's measured size and frame rate. `key` is the stream's mid, or
  // 'camera' / 'screen' for our own (data-mid "local" / "screen").
  addTile(key, label, { local, screen }) {
    const el = document.createElement('figure');
    el.className = 'tile';
    el.classList.toggle('local', local);
    el.classList.toggle('screen', screen);
    el.dataset.mid = key === 'camera' ? 'local' : key;
    const video = document.createElement('video');
    video.autoplay = video.playsInline = video.muted = true;
    const audio = document.createElement('audio');
    audio.autoplay = true;
    const caption = document.createElement('figcaption');
    caption.textContent = label;
    const stats = document.createElement('span');
    stats.className = 'stats';
    stats.textContent = 'connecting…';
    el.append(video, audio, caption, stats);
    ui.videos.append(el);
    ui.layout();
    return { el, video, audio, stats };
  },

  tile(key) {
    return ui.videos.querySelector(`[data-mid="${CSS.escape(key === 'camera' ? 'local' : key)}"]`);
  },

  removeTile(key) {
    ui.tile(key)?.remove();
    ui.layout();
  },

  // `video` is {width, height, fps, frames} or null (no video report yet);
  // `layers` is how many simulcast layers are being sent (our own streams).
  showVideoStats(tile, video, layers) {
    const { el, stats } = tile;
    const fps = video ? Math.round(video.fps) : 0;
    el.dataset.width = String(video?.width ?? 0);
    el.dataset.height = String(video?.height ?? 0);
    el.dataset.fps = String(fps);
    if (layers !== null) el.dataset.layersSending = String(layers);
    let text;
    if (!video || video.frames === 0) text = el.classList.contains('audio-only') ? 'audio only' : 'no video yet';
    else if (fps === 0) text = 'video paused';
    else text = `${video.width}×${video.height} · ${fps} fps`;
    if (layers > 1) text = `${layers} layers · ${text}`;
    stats.textContent = text;
  },

  // Chooses the grid's columns for the tile count so that the tiles, all of
  // one aspect, are as large as the area allows: for each column count the
  // tile width is bounded by the area's width and, through the rows it
  // needs, by its height; the best count wins. Runs on every tile change
  // and resize.
  layout() {
    const n = ui.videos.querySelectorAll('.tile').length;
    const { width, height } = ui.videos.getBoundingClientRect();
    if (n === 0 || width === 0 || height === 0) return;
    let best = { cols: 1, tileWidth: 0 };
    for (let cols = 1; cols <= n; cols += 1) {
      const rows = Math.ceil(n / cols);
      const byWidth = (width - TILE_GAP * (cols - 1)) / cols;
      const byHeight = ((height - TILE_GAP * (rows - 1)) / rows) * TILE_ASPECT;
      const tileWidth = Math.min(byWidth, byHeight);
      if (tileWidth > best.tileWidth) best = { cols, tileWidth };
    }
    const tileWidth = Math.max(0, Math.floor(best.tileWidth));
    ui.videos.style.setProperty('--cols', String(best.cols));
    ui.videos.style.setProperty('--tile-w', `${tileWidth}px`);
    ui.videos.style.setProperty('--tile-h', `${Math.floor(tileWidth / TILE_ASPECT)}px`);
    ui.videos.style.setProperty('--gap', `${TILE_GAP}px`);
    for (const sub of wren.subs.values()) pinLayer(sub);
  },

  attach(media, stream) {
    media.srcObject = stream;
    media.play().catch((err) => {
      if (err.name !== 'NotAllowedError') return;
      ui.status('The browser blocked playback: click anywhere on the page to start it.', true);
      document.addEventListener('click', () => {
        for (const m of ui.videos.querySelectorAll('video, audio')) m.play().catch(() => {});
      }, { once: true });
    });
  },

  chat(uid, text) {
    const li = document.createElement('li');
    const who = document.createElement('b');
    who.textContent = uid;
    li.append(who, `: ${text}`);
    ui.appendChat(li);
  },

  notice(text) {
    const li = document.createElement('li');
    li.className = 'notice';
    li.textContent = text;
    ui.appendChat(li);
  },

  appendChat(li) {
    ui.chatLog.append(li);
    li.scrollIntoView({ block: 'nearest' });
  },
};
// The tests lay out tiles through the same code the page uses.
wren.ui = ui;

// One operation per control at a time: its button is disabled while it runs.
async function busyWith(control, operation) {
  ui.busy[control] = true;
  ui.showState();
  try {
    await operation();
  } finally {
    ui.busy[control] = false;
    ui.showState();
  }
}

const switchPublishing = (on) => busyWith('publish', () => (on ? publishCamera() : unpublish('camera')));
const switchSharing = (on) => busyWith('share', () => (on ? startSharing() : unpublish('screen')));

function init() {
  const params = new URLSearchParams(location.search);
  ui.roomInput.value = params.get('room') || 'demo';
  ui.nameInput.value = params.get('name') || `user-${1000 + Math.floor(Math.random() * 9000)}`;
  ui.publishToggle.checked = params.get('publish') !== '0';
  wren.simulcast = params.get('simulcast') !== '0';
  const vcodec = params.get('vcodec');
  if (vcodec) {
    wren.videoCodec = VIDEO_CODECS[vcodec.toLowerCase()] ?? null;
    if (!wren.videoCodec) fail(`Unknown vcodec ${vcodec}: use one of ${Object.keys(VIDEO_CODECS).join(', ')}`);
  }
  // Said at once, before anyone presses Join and wonders where the camera is.
  if (!navigator.mediaDevices?.getUserMedia) {
    ui.publishToggle.checked = false;
    mediaFailure(noMediaDevicesError());
  }
  const joinFromForm = () => join(ui.roomInput.value.trim(), ui.nameInput.value.trim(), ui.publishToggle.checked);

  $('join-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    joinFromForm();
  });
  ui.leaveButton.addEventListener('click', leave);
  ui.publishToggle.addEventListener('change', () => {
    if (wren.state === 'joined') switchPublishing(ui.publishToggle.checked);
  });
  ui.micButton.addEventListener('click', () => setMicMuted(!wren.micMuted));
  ui.cameraButton.addEventListener('click', () => busyWith('camera', () => setCameraOff(!wren.cameraOff)));
  ui.shareButton.addEventListener('click', () => switchSharing(!wren.screen));
  $('chat-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const text = ui.chatInput.value.trim();
    if (text && (await sendChat(text))) ui.chatInput.value = '';
  });
  new ResizeObserver(() => ui.layout()).observe(ui.videos);

  ui.showState();
  if (params.get('autojoin') === '1') joinFromForm();
}

init();
