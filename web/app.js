'use strict';

// The wren web client: join a room, publish camera + mic, watch everyone else.
// Three parts: a protoo-style signaling helper, the room logic, the UI.
// The room state is `window.wren`, which is also what the browser test reads.

const REQUEST_TIMEOUT_MS = 15000; // longer than the server's SFU timeout, so its 504 arrives first
const KEEPALIVE_MS = 10000; // the server drops a peer that is silent for 30 s
const ID_RE = /^[A-Za-z0-9_.@:-]{1,64}$/; // what the server accepts as uid and rid
const LOG_MAX = 500;
// The SFU has one UDP port for everything: bundle every track onto one transport.
const PC_CONFIG = { bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require' };
// The URL parameter `vcodec` names the video codec to publish with (the SFU's
// own preference, VP8, otherwise); the browser test uses it.
const VIDEO_CODECS = { vp8: 'video/VP8', vp9: 'video/VP9', h264: 'video/H264' };
// Not codecs but companions of one: they stay on offer whichever codec is chosen.
const REPAIR_CODECS = ['video/rtx', 'video/red', 'video/ulpfec'];

const wren = {
  state: 'idle', // 'idle' | 'connecting' | 'joined'
  uid: null,
  rid: null,
  signaling: null,
  peers: new Map(), // uid -> bizid, the other peers in the room
  pubs: new Map(), // mid -> {mid, uid, rid, sfuid, minfo}, the other peers' streams
  subs: new Map(), // mid -> {mid, uid, pc, sid, answeredAt, firstFrameAt}
  publisherPc: null,
  published: null, // {mid, sfuid} of our own stream once the server accepted it
  videoCodec: null, // mime type to publish video with (URL parameter vcodec), or null
  localStream: null,
  keepaliveTimer: null,
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
  stopPublishing();
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
  if (mid === wren.published?.mid) {
    // The server dropped our own stream (its media connection failed).
    stopPublishing();
    ui.publishToggle.checked = false;
    fail('The server stopped our stream');
    return;
  }
  wren.pubs.delete(mid);
  closeSub(mid);
}

async function publish() {
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
  } catch (err) {
    ui.publishToggle.checked = false;
    return fail(`Camera/microphone: ${err.message}`);
  }
  if (wren.state !== 'joined') {
    stream.getTracks().forEach((track) => track.stop());
    return;
  }
  const pc = new RTCPeerConnection(PC_CONFIG);
  wren.localStream = stream;
  wren.publisherPc = pc;
  const tile = ui.addTile('local', `${wren.uid} (you)`, true);
  ui.attach(tile.video, stream);
  watchConnection(pc, 'Publishing', tile);
  try {
    for (const track of stream.getTracks()) {
      const transceiver = pc.addTransceiver(track, { direction: 'sendonly', streams: [stream] });
      if (track.kind === 'video' && wren.videoCodec) offerOnly(transceiver, wren.videoCodec);
    }
    // No waiting for ICE gathering: the ICE-lite SFU learns our address from our checks.
    await pc.setLocalDescription();
    const minfo = {
      audio: stream.getAudioTracks().length > 0,
      video: stream.getVideoTracks().length > 0,
      audiotype: 0,
      videotype: 0,
    };
    const answer = await wren.signaling.request('publish', {
      rid: wren.rid,
      jsep: { type: 'offer', sdp: pc.localDescription.sdp },
      minfo,
    });
    if (wren.publisherPc !== pc) return;
    wren.published = { mid: answer.mid, sfuid: answer.sfuid };
    await pc.setRemoteDescription(answer.jsep);
  } catch (err) {
    if (wren.publisherPc !== pc) return;
    stopPublishing();
    ui.publishToggle.checked = false;
    fail(err);
  }
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
async function unpublish() {
  if (wren.published) {
    try {
      await wren.signaling.request('unpublish', { rid: wren.rid, ...wren.published });
    } catch (err) {
      fail(err);
    }
  }
  stopPublishing();
}

function stopPublishing() {
  wren.publisherPc?.close();
  wren.publisherPc = null;
  wren.published = null;
  wren.localStream?.getTracks().forEach((track) => track.stop());
  wren.localStream = null;
  ui.removeTile('local');
}

async function subscribe(pub) {
  if (wren.subs.has(pub.mid)) return;
  const pc = new RTCPeerConnection(PC_CONFIG);
  const sub = { mid: pub.mid, uid: pub.uid, pc, sid: null, answeredAt: null, firstFrameAt: null };
  wren.subs.set(pub.mid, sub);
  const tile = ui.addTile(pub.mid, pub.uid, false);
  if (pub.minfo?.audio) pc.addTransceiver('audio', { direction: 'recvonly' });
  if (pub.minfo?.video) pc.addTransceiver('video', { direction: 'recvonly' });
  pc.ontrack = ({ track }) => {
    if (track.kind === 'video') {
      ui.attach(tile.video, new MediaStream([track]));
      tile.video.requestVideoFrameCallback(() => {
        sub.firstFrameAt = performance.now();
      });
    } else {
      // Audio gets an element of its own: the video element stays muted, and
      // Chromium plays (and counts) received audio only from a media element.
      ui.attach(tile.audio, new MediaStream([track]));
    }
  };
  watchConnection(pc, `Receiving ${pub.uid}`, tile);
  try {
    await pc.setLocalDescription();
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
  videos: $('videos'),
  peerList: $('peers'),
  chatLog: $('chat-log'),
  chatInput: $('chat-input'),
  chatSend: $('chat-send'),

  showState() {
    const joined = wren.state === 'joined';
    const idle = wren.state === 'idle';
    ui.roomInput.disabled = ui.nameInput.disabled = ui.joinButton.disabled = !idle;
    ui.leaveButton.disabled = ui.chatInput.disabled = ui.chatSend.disabled = !joined;
    ui.publishToggle.disabled = wren.state === 'connecting';
    document.body.dataset.state = wren.state;
  },

  status(text, isError = false) {
    ui.statusLine.textContent = text;
    ui.statusLine.classList.toggle('error', isError);
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

  // A tile is one stream: a video, an audio element and the owner's name.
  addTile(key, label, isLocal) {
    const el = document.createElement('figure');
    el.className = isLocal ? 'tile local' : 'tile';
    el.dataset.mid = key;
    const video = document.createElement('video');
    video.autoplay = video.playsInline = video.muted = true;
    const audio = document.createElement('audio');
    audio.autoplay = true;
    const caption = document.createElement('figcaption');
    caption.textContent = label;
    el.append(video, audio, caption);
    ui.videos.append(el);
    return { el, video, audio };
  },

  removeTile(key) {
    ui.videos.querySelector(`[data-mid="${CSS.escape(key)}"]`)?.remove();
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

// One publish or unpublish at a time: the toggle is disabled while one runs.
async function switchPublishing(on) {
  ui.publishToggle.disabled = true;
  await (on ? publish() : unpublish());
  ui.showState();
}

function init() {
  const params = new URLSearchParams(location.search);
  ui.roomInput.value = params.get('room') || 'demo';
  ui.nameInput.value = params.get('name') || `user-${1000 + Math.floor(Math.random() * 9000)}`;
  ui.publishToggle.checked = params.get('publish') !== '0';
  const vcodec = params.get('vcodec');
  if (vcodec) {
    wren.videoCodec = VIDEO_CODECS[vcodec.toLowerCase()] ?? null;
    if (!wren.videoCodec) fail(`Unknown vcodec ${vcodec}: use one of ${Object.keys(VIDEO_CODECS).join(', ')}`);
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
  $('chat-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const text = ui.chatInput.value.trim();
    if (text && (await sendChat(text))) ui.chatInput.value = '';
  });

  ui.showState();
  if (params.get('autojoin') === '1') joinFromForm();
}

init();
