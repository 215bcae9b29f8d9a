// call.js: the mesh of RTCPeerConnections, one per remote peer, negotiated
// with the perfect negotiation pattern over the hub's opaque `signal`
// messages. It knows nothing of the DOM: the page listens to its events.
//
// Signal payloads between clients (the hub passes them through untouched):
//   {description: RTCSessionDescriptionInit}   an offer or an answer
//   {candidate: RTCIceCandidateInit}           a trickled candidate
//   {media: {mic, cam, screen}}                what the sender is sending, for the far tile

import { factsFromReport, emptyFacts, rates } from "./stats.js";

/** How long ICE may stay "disconnected" before we restart it. */
const DISCONNECTED_GRACE_MS = 4000;
/** How often stats are sampled for the speaking indicator and connection facts. */
const STATS_INTERVAL_MS = 500;
/**
 * How long a connection may stay broken (ICE disconnected or failed, or an
 * offer unanswered) since our last repair before we repair it again: a
 * last resort, after Chromium's own ICE gives up (about 30 s). A repair's
 * signals can be lost (sent while the far peer was between two hub
 * processes, they are answered `unknown_peer` and dropped), and perfect
 * negotiation would then wait forever for an answer. Sooner is worse: on
 * a busy machine an ICE restart can take over 10 s, and a repair in the
 * middle of one starts it over.
 */
const REPAIR_AFTER_MS = 30000;
/** "checking" that lasts this long is as broken as "failed". */
const CHECKING_STUCK_MS = REPAIR_AFTER_MS;

/**
 * One remote peer and its RTCPeerConnection.
 */
class Peer {
  constructor(call, id, name) {
    this.call = call;
    this.id = id;
    this.name = name;
    this.reconnecting = false;
    // Perfect negotiation: the polite peer yields on offer collisions. Ids are
    // compared so both ends agree without talking.
    this.polite = call.id < id;
    this.makingOffer = false;
    this.ignoreOffer = false;
    this.settingRemoteAnswer = false;
    /** Signals are applied one after another, in order. */
    this.chain = Promise.resolve();
    this.stream = new MediaStream();
    this.remoteMedia = { mic: true, cam: true, screen: false };
    this.facts = emptyFacts();
    this.rates = { inBps: 0, outBps: 0, loss: 0, audioLevel: 0 };
    this.disconnectedTimer = 0;
    this.restarts = 0;
    /** When the ICE state last changed, when we last repaired, when our pending offer was made. */
    this.iceSince = Date.now();
    this.lastRepair = 0;
    this.offerSince = 0;
    this.newPC();
  }

  newPC() {
    const pc = new RTCPeerConnection(this.call.rtcConfig());
    this.pc = pc;
    pc.ontrack = ({ track }) => {
      // One stream per peer: its audio and its video (camera or screen, same sender).
      for (const t of this.stream.getTracks()) if (t.kind === track.kind && t !== track) this.stream.removeTrack(t);
      if (!this.stream.getTracks().includes(track)) this.stream.addTrack(track);
      this.call.emit("peerstream", { peer: this });
    };
    pc.onicecandidate = ({ candidate }) => {
      if (candidate) this.send({ candidate: candidate.toJSON() });
    };
    pc.onnegotiationneeded = async () => {
      try {
        this.makingOffer = true;
        await pc.setLocalDescription();
        this.offerSince = Date.now();
        this.send({ description: pc.localDescription.toJSON() });
      } catch (err) {
        this.call.log(`offer to ${this.id} failed`, err);
      } finally {
        this.makingOffer = false;
      }
    };
    pc.oniceconnectionstatechange = () => this.onICEState();
    pc.onconnectionstatechange = () => {
      this.call.emit("peerstate", { peer: this });
    };
    if (!this.polite) {
      // The impolite side creates the two m-lines; the polite side attaches
      // its tracks to them when the offer arrives. One audio and one video
      // line per pair whatever each side has, so a peer without a camera
      // still receives video, and screen sharing is a replaceTrack.
      pc.addTransceiver("audio", { direction: "sendrecv", streams: [this.call.localStream] });
      pc.addTransceiver("video", { direction: "sendrecv", streams: [this.call.localStream] });
      this.attachTracks();
    }
  }

  send(payload) {
    this.call.sig.signal(this.id, payload);
  }

  /** Puts our current tracks on the senders of our transceivers. */
  attachTracks() {
    for (const tr of this.pc.getTransceivers()) {
      if (tr.stopped || tr.currentDirection === "stopped") continue;
      const kind = tr.receiver.track.kind;
      const track = this.call.outgoingTrack(kind);
      if (tr.direction !== "sendrecv") tr.direction = "sendrecv";
      if (tr.sender.track !== track) tr.sender.replaceTrack(track).catch((err) => this.call.log("replaceTrack", err));
      try { tr.sender.setStreams(this.call.localStream); } catch { /* older engines */ }
    }
  }

  onICEState() {
    const st = this.pc.iceConnectionState;
    this.call.log(`ICE with ${this.id}: ${st}`);
    this.iceSince = Date.now();
    clearTimeout(this.disconnectedTimer);
    if (st === "failed") {
      this.restartIce("failed");
    } else if (st === "disconnected") {
      this.disconnectedTimer = setTimeout(() => {
        if (this.pc.iceConnectionState === "disconnected") this.restartIce("disconnected too long");
      }, DISCONNECTED_GRACE_MS);
    }
    this.call.emit("peerstate", { peer: this });
  }

  restartIce(why) {
    if (this.call.sig.state !== "open") return; // we restart once the hub is back
    this.lastRepair = Date.now();
    this.restarts++;
    this.call.log(`ICE restart with ${this.id}: ${why}`);
    this.pc.restartIce();
  }

  /**
   * Whether the connection needs a repair: ICE disconnected or failed, or
   * our offer unanswered, for at least minAge ms; or ICE stuck checking.
   */
  broken(now = Date.now(), minAge = 0) {
    const pc = this.pc;
    const st = pc.iceConnectionState;
    if ((st === "failed" || st === "disconnected") && now - this.iceSince >= minAge) return true;
    if (st === "checking" && now - this.iceSince >= CHECKING_STUCK_MS) return true;
    return pc.signalingState === "have-local-offer" && now - this.offerSince >= minAge;
  }

  /** Called every stats interval: repairs a connection that stayed broken since the last repair. */
  watch(now) {
    if (this.reconnecting || now - this.lastRepair < REPAIR_AFTER_MS) return;
    if (this.broken(now, REPAIR_AFTER_MS)) this.repair("still broken");
  }

  /**
   * Repairs a broken connection: an offer still unanswered is sent again
   * (the first may have been lost), otherwise ICE restarts. Perfect
   * negotiation settles the collision when both ends repair at once.
   */
  repair(why) {
    if (this.call.sig.state !== "open") return;
    const pc = this.pc;
    if (pc.signalingState === "have-local-offer" && pc.localDescription) {
      this.lastRepair = Date.now();
      this.offerSince = this.lastRepair;
      this.call.log(`offer to ${this.id} sent again: ${why}`);
      this.send({ description: pc.localDescription.toJSON() });
      return;
    }
    this.restartIce(why);
  }

  /** Applies one signal payload from this peer, in order. */
  onSignal(payload) {
    this.chain = this.chain.then(() => this.applySignal(payload)).catch((err) => {
      this.call.log(`signal from ${this.id}`, err);
    });
  }

  async applySignal({ description, candidate, media }) {
    const pc = this.pc;
    if (media) {
      this.remoteMedia = { ...this.remoteMedia, ...media };
      this.call.emit("peermedia", { peer: this });
    }
    if (description) {
      // The pattern from the WebRTC spec's "perfect negotiation" example.
      const readyForOffer = !this.makingOffer &&
        (pc.signalingState === "stable" || this.settingRemoteAnswer);
      const offerCollision = description.type === "offer" && !readyForOffer;
      this.ignoreOffer = !this.polite && offerCollision;
      if (this.ignoreOffer) return;
      this.settingRemoteAnswer = description.type === "answer";
      try {
        await pc.setRemoteDescription(description);
      } finally {
        this.settingRemoteAnswer = false;
      }
      if (description.type === "offer") {
        this.attachTracks();
        await pc.setLocalDescription();
        this.send({ description: pc.localDescription.toJSON() });
      }
    } else if (candidate) {
      try {
        await pc.addIceCandidate(candidate);
      } catch (err) {
        if (!this.ignoreOffer) throw err;
      }
    }
  }

  async sample() {
    if (this.pc.connectionState === "closed") return;
    const prev = this.facts;
    this.facts = factsFromReport(await this.pc.getStats());
    this.rates = rates(prev, this.facts);
  }

  close() {
    clearTimeout(this.disconnectedTimer);
    this.pc.close();
  }
}

/** What the video sender of pc sends: "screen", "camera" or "none", and its width. */
function turnUsername(pc) {
  const s = (pc.getConfiguration().iceServers || []).find((s) => s.username);
  return s ? s.username : "";
}

function sending(pc) {
  const track = pc.getSenders().map((s) => s.track).find((t) => t && t.kind === "video");
  if (!track) return { sendingVideo: "none", sendingWidth: 0 };
  const st = track.getSettings();
  return { sendingVideo: st.displaySurface ? "screen" : "camera", sendingWidth: st.width || 0 };
}

/**
 * Call is the mesh. Events (CustomEvent, detail):
 *   peerjoined {peer}, peerleft {peer, reason}, peerstream {peer}, peerstate {peer},
 *   peermedia {peer}, peerrenamed {peer}, stats {}
 */
export class Call extends EventTarget {
  /**
   * @param {import("./protocol.js").Signaling} sig
   * @param {{localStream: MediaStream, relayOnly?: boolean, log?: Function}} opts
   */
  constructor(sig, opts) {
    super();
    this.sig = sig;
    this.localStream = opts.localStream;
    this.relayOnly = !!opts.relayOnly;
    this.log = opts.log || (() => {});
    this.id = "";
    this.iceServers = [];
    /** @type {Map<string, Peer>} */
    this.peers = new Map();
    /** Replaces the camera track while sharing the screen. */
    this.screenTrack = null;
    this.media = { mic: true, cam: true, screen: false };
    this.statsTimer = 0;
    this.sampling = false;
    this.statsTicks = 0; // stats events emitted, for tests and debugging
    /** How many `ice` pushes were applied (fresh TURN credentials). */
    this.iceUpdates = 0;

    sig.addEventListener("welcome", (e) => this.onWelcome(e.detail));
    sig.addEventListener("joined", (e) => this.addPeer(e.detail.peer.id, e.detail.peer.name));
    sig.addEventListener("left", (e) => this.removePeer(e.detail.id, e.detail.reason));
    sig.addEventListener("renamed", (e) => {
      const p = this.peers.get(e.detail.id);
      if (p) { p.name = e.detail.name; this.emit("peerrenamed", { peer: p }); }
    });
    sig.addEventListener("reconnecting", (e) => this.setReconnecting(e.detail.id, true));
    sig.addEventListener("resumed", (e) => {
      this.setReconnecting(e.detail.id, false);
      // Whatever we sent it while it was away may be lost (after a hub
      // restart the hub did not know it yet): repair now, not later.
      const p = this.peers.get(e.detail.id);
      if (p && p.broken()) p.repair("peer resumed");
    });
    sig.addEventListener("signal", (e) => {
      const { from, payload } = e.detail;
      // A signal can outrun the presence event that announces its sender.
      const p = this.peers.get(from) || this.addPeer(from, "");
      if (payload && typeof payload === "object") p.onSignal(payload);
    });
    sig.addEventListener("ice", (e) => {
      this.iceUpdates++;
      this.setIceServers(e.detail.iceServers);
    });
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  rtcConfig() {
    return {
      iceServers: this.iceServers,
      iceTransportPolicy: this.relayOnly ? "relay" : "all",
      bundlePolicy: "max-bundle",
    };
  }

  onWelcome(w) {
    this.iceServers = w.iceServers || [];
    if (!w.resumed || w.id !== this.id) {
      // A fresh session (first join, or the resume window ran out): our id
      // changed, so every connection is rebuilt against the current room.
      for (const p of [...this.peers.values()]) this.removePeer(p.id, "rejoined");
      this.id = w.id;
      for (const p of w.peers || []) this.addPeer(p.id, p.name, p.reconnecting);
    } else {
      this.setIceServers(this.iceServers);
      // A peer missing from a resumed welcome either left, or has not yet
      // resumed on a server that restarted (which cannot say "left" for a
      // peer it never saw). Its connection is kept, marked reconnecting,
      // for one resume window: a direct call then survives the restart.
      const present = new Set((w.peers || []).map((p) => p.id));
      for (const p of [...this.peers.values()]) {
        if (present.has(p.id)) continue;
        this.setReconnecting(p.id, true);
        clearTimeout(p.goneTimer);
        p.goneTimer = setTimeout(() => {
          if (this.peers.get(p.id) === p && p.reconnecting) this.removePeer(p.id, "left");
        }, (w.resumeWindow || 30000) + 2000);
      }
      for (const p of w.peers || []) {
        if (!this.peers.has(p.id)) this.addPeer(p.id, p.name, p.reconnecting);
        else this.setReconnecting(p.id, !!p.reconnecting);
      }
      // Connections that broke while we were away are repaired now that we can signal.
      for (const p of this.peers.values()) {
        if (p.broken()) p.repair("after resume");
      }
    }
    this.startStats();
  }

  addPeer(id, name, reconnecting = false) {
    if (id === this.id) return null;
    let p = this.peers.get(id);
    if (p) {
      if (name && name !== p.name) {
        p.name = name;
        this.emit("peerrenamed", { peer: p });
      }
      return p;
    }
    p = new Peer(this, id, name);
    p.reconnecting = reconnecting;
    this.peers.set(id, p);
    p.send({ media: this.media });
    this.emit("peerjoined", { peer: p });
    return p;
  }

  removePeer(id, reason) {
    const p = this.peers.get(id);
    if (!p) return;
    this.peers.delete(id);
    clearTimeout(p.goneTimer);
    p.close();
    this.emit("peerleft", { peer: p, reason });
  }

  setReconnecting(id, on) {
    const p = this.peers.get(id);
    if (!p) return;
    p.reconnecting = on;
    if (!on) clearTimeout(p.goneTimer);
    this.emit("peerstate", { peer: p });
  }

  setIceServers(servers) {
    this.iceServers = servers || [];
    for (const p of this.peers.values()) {
      try {
        p.pc.setConfiguration({ ...p.pc.getConfiguration(), ...this.rtcConfig() });
      } catch (err) {
        this.log("setConfiguration", err);
      }
    }
  }

  /** The track we send for kind: the screen while sharing, else the camera or mic. */
  outgoingTrack(kind) {
    if (kind === "video" && this.screenTrack) return this.screenTrack;
    return this.localStream.getTracks().find((t) => t.kind === kind) || null;
  }

  /** Re-attaches outgoing tracks everywhere (device switch, screen share), no renegotiation. */
  refreshTracks() {
    for (const p of this.peers.values()) {
      for (const tr of p.pc.getTransceivers()) {
        const track = this.outgoingTrack(tr.receiver.track.kind);
        if (tr.sender.track !== track) tr.sender.replaceTrack(track).catch((err) => this.log("replaceTrack", err));
      }
    }
  }

  /** Tells every peer what we send, for their tiles. */
  setMedia(media) {
    this.media = { ...this.media, ...media };
    for (const p of this.peers.values()) p.send({ media: this.media });
  }

  async startScreen(track) {
    this.screenTrack = track;
    this.refreshTracks();
    this.setMedia({ screen: true });
  }

  stopScreen() {
    if (!this.screenTrack) return;
    this.screenTrack.stop();
    this.screenTrack = null;
    this.refreshTracks();
    this.setMedia({ screen: false });
  }

  startStats() {
    if (this.statsTimer) return;
    this.statsTimer = setInterval(() => this.sampleAll(), STATS_INTERVAL_MS);
  }

  async sampleAll() {
    if (this.sampling) return;
    this.sampling = true;
    try {
      const now = Date.now();
      for (const p of this.peers.values()) p.watch(now);
      // A getStats that never settles must not stop every indicator for
      // good: the tick goes on without it after a few intervals.
      const samples = Promise.all([...this.peers.values()].map((p) => p.sample().catch(() => {})));
      await Promise.race([samples, new Promise((r) => setTimeout(r, 4 * STATS_INTERVAL_MS))]);
      this.statsTicks++;
      this.emit("stats", {});
    } finally {
      this.sampling = false;
    }
  }

  /** Fresh facts for every peer, for window.callbox.peers(). */
  async snapshot() {
    await Promise.all([...this.peers.values()].map((p) => p.sample().catch(() => {})));
    return [...this.peers.values()].map((p) => ({
      ...sending(p.pc),
      turnUsername: turnUsername(p.pc),
      id: p.id,
      name: p.name,
      connectionState: p.pc.connectionState,
      iceConnectionState: p.pc.iceConnectionState,
      reconnecting: p.reconnecting,
      polite: p.polite,
      restarts: p.restarts,
      media: { ...p.remoteMedia },
      rates: { ...p.rates },
      ...p.facts,
    }));
  }

  /**
   * Every candidate pair ICE has tried with each peer, with its state: what
   * a person (or a test) needs to see why a call took the path it took.
   */
  async icePairs() {
    const out = {};
    for (const p of this.peers.values()) {
      const report = await p.pc.getStats();
      const pairs = [];
      report.forEach((s) => {
        if (s.type !== "candidate-pair") return;
        const l = report.get(s.localCandidateId) || {};
        const r = report.get(s.remoteCandidateId) || {};
        pairs.push({
          local: `${l.candidateType} ${l.address}:${l.port}`,
          remote: `${r.candidateType} ${r.address}:${r.port}`,
          state: s.state,
          nominated: !!s.nominated,
          requestsSent: s.requestsSent || 0,
          responsesReceived: s.responsesReceived || 0,
        });
      });
      out[p.id] = pairs;
    }
    return out;
  }

  /** Ends every connection (leave). */
  close() {
    clearInterval(this.statsTimer);
    this.statsTimer = 0;
    for (const p of this.peers.values()) p.close();
    this.peers.clear();
    this.stopScreen();
  }
}
