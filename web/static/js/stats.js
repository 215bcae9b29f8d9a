// stats.js: the connection facts a person asks about, from RTCPeerConnection.getStats.

/**
 * @typedef {Object} Facts
 * @property {string} localCandidateType   host | srflx | prflx | relay | ""
 * @property {string} remoteCandidateType
 * @property {string} protocol             transport of the selected pair: udp | tcp
 * @property {string} relayProtocol        for a local relay candidate: how we reach TURN (udp | tcp | tls)
 * @property {string} localAddress         address:port of the local candidate
 * @property {string} remoteAddress
 * @property {string} localCandidateUrl    the STUN/TURN URL that gave the local candidate
 * @property {number|null} rtt             seconds, of the selected pair
 * @property {number} bytesReceived        all inbound RTP
 * @property {number} bytesSent            all outbound RTP
 * @property {number} framesDecoded        inbound video
 * @property {number} frameWidth           inbound video
 * @property {number} frameHeight
 * @property {number} packetsReceived      inbound audio + video
 * @property {number} packetsLost
 * @property {number} audioLevel           inbound audio, 0..1, as of the last packet
 * @property {number} totalAudioEnergy     inbound audio, the running sums that give
 * @property {number} totalSamplesDuration the level over an interval (rates)
 * @property {number} timestamp            ms
 */

/** @returns {Facts} */
export function emptyFacts() {
  return {
    localCandidateType: "", remoteCandidateType: "", protocol: "", relayProtocol: "",
    localAddress: "", remoteAddress: "", localCandidateUrl: "", rtt: null,
    bytesReceived: 0, bytesSent: 0, framesDecoded: 0, frameWidth: 0, frameHeight: 0,
    packetsReceived: 0, packetsLost: 0, audioLevel: 0, totalAudioEnergy: 0, totalSamplesDuration: 0, timestamp: 0,
  };
}

/**
 * Reads the facts out of one stats report.
 * @param {RTCStatsReport} report
 * @returns {Facts}
 */
export function factsFromReport(report) {
  const f = emptyFacts();
  let pair = null;
  // The transport names the selected pair; older engines only flag it on the pair.
  report.forEach((s) => {
    if (s.type === "transport" && s.selectedCandidatePairId) pair = report.get(s.selectedCandidatePairId) || pair;
  });
  if (!pair) {
    report.forEach((s) => {
      if (s.type === "candidate-pair" && (s.selected || (s.nominated && s.state === "succeeded"))) pair = pair || s;
    });
  }
  if (pair) {
    const local = report.get(pair.localCandidateId);
    const remote = report.get(pair.remoteCandidateId);
    if (local) {
      f.localCandidateType = local.candidateType || "";
      f.protocol = local.protocol || "";
      f.relayProtocol = local.relayProtocol || "";
      f.localAddress = addr(local);
      f.localCandidateUrl = local.url || "";
    }
    if (remote) {
      f.remoteCandidateType = remote.candidateType || "";
      f.remoteAddress = addr(remote);
    }
    f.rtt = typeof pair.currentRoundTripTime === "number" ? pair.currentRoundTripTime : null;
  }
  report.forEach((s) => {
    if (s.type === "inbound-rtp") {
      f.bytesReceived += s.bytesReceived || 0;
      f.packetsReceived += s.packetsReceived || 0;
      f.packetsLost += Math.max(0, s.packetsLost || 0);
      if (s.kind === "video") {
        f.framesDecoded += s.framesDecoded || 0;
        f.frameWidth = s.frameWidth || f.frameWidth;
        f.frameHeight = s.frameHeight || f.frameHeight;
      }
      if (s.kind === "audio") {
        if (typeof s.audioLevel === "number") f.audioLevel = s.audioLevel;
        f.totalAudioEnergy += s.totalAudioEnergy || 0;
        f.totalSamplesDuration += s.totalSamplesDuration || 0;
      }
    } else if (s.type === "outbound-rtp") {
      f.bytesSent += s.bytesSent || 0;
    }
    f.timestamp = Math.max(f.timestamp, s.timestamp || 0);
  });
  return f;
}

function addr(c) {
  const a = c.address || c.ip || "";
  if (!a) return "";
  return (a.includes(":") && !a.startsWith("[") ? `[${a}]` : a) + (c.port ? `:${c.port}` : "");
}

/**
 * Rates between two samples: bits per second each way, the loss ratio, and
 * the inbound audio level over the interval (the root of the mean energy,
 * 0..1). The level of the last packet alone misses short sounds: sampled
 * every 500 ms it can keep landing between the beats of a sound that
 * repeats every second (Chromium's fake microphone beeps), and a speaker
 * then never lights up. Without the energy counters, the last packet's.
 * @param {Facts} prev @param {Facts} cur
 */
export function rates(prev, cur) {
  const dt = (cur.timestamp - prev.timestamp) / 1000;
  if (!prev.timestamp || dt <= 0) return { inBps: 0, outBps: 0, loss: 0, audioLevel: cur.audioLevel };
  const lost = cur.packetsLost - prev.packetsLost;
  const got = cur.packetsReceived - prev.packetsReceived;
  const heard = cur.totalSamplesDuration - prev.totalSamplesDuration;
  const energy = cur.totalAudioEnergy - prev.totalAudioEnergy;
  return {
    inBps: Math.max(0, (cur.bytesReceived - prev.bytesReceived) * 8 / dt),
    outBps: Math.max(0, (cur.bytesSent - prev.bytesSent) * 8 / dt),
    loss: lost + got > 0 ? Math.max(0, lost) / (lost + got) : 0,
    audioLevel: heard > 0 ? Math.min(1, Math.sqrt(Math.max(0, energy) / heard)) : cur.audioLevel,
  };
}

/** "1.2 Mbit/s" */
export function formatBitrate(bps) {
  if (bps >= 1e6) return (bps / 1e6).toFixed(1) + " Mbit/s";
  if (bps >= 1e3) return Math.round(bps / 1e3) + " kbit/s";
  return Math.round(bps) + " bit/s";
}

/** Plain words for a candidate type. */
export function describeCandidateType(t) {
  return {
    host: "direct (host)",
    srflx: "through NAT (srflx)",
    prflx: "through NAT (prflx)",
    relay: "relayed by TURN (relay)",
  }[t] || t || "—";
}
