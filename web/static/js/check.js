// check.js: the /check diagnostics page. It joins a throwaway room to get the
// ICE servers the hub hands out, then gathers candidates with one
// RTCPeerConnection per server URL (policy "all" for STUN, "relay" for TURN,
// so each result belongs to exactly one URL), and says what works.
//
// window.callboxCheck = {done: Promise<Result>, result: Result|null}, where Result is
//   {ok, stun: {offered, ok, address, sameAsLocal}, turn: {udp, tcp, tls: {offered, ok, address}},
//    candidates: [{type, protocol, relayProtocol, address, port, server}],
//    errors: [{server, code, text}], verdict, advice: string[], addressProblem?: string}

import { Signaling, HubError, randomRoomName } from "./protocol.js";
import { $, el } from "./ui.js";

// Longer than Chromium's own STUN/TURN timeout (9.5 s), so that an
// unreachable server shows up as an icecandidateerror rather than as our timeout.
const GATHER_TIMEOUT_MS = 15000;
const HUB_TIMEOUT_MS = 10000;

/** Splits a STUN/TURN URI (RFC 7064/7065) into the parts the report names. */
export function parseICEURL(url) {
  const m = /^(stuns?|turns?):(\[[^\]]+\]|[^:?]+)(?::(\d+))?(?:\?transport=(udp|tcp))?$/i.exec(url);
  if (!m) return null;
  const scheme = m[1].toLowerCase();
  const secure = scheme.endsWith("s");
  const transport = secure ? "tls" : (m[4] || "udp").toLowerCase();
  return { url, scheme, kind: scheme.startsWith("stun") ? "stun" : "turn", host: m[2], port: Number(m[3] || (secure ? 5349 : 3478)), transport };
}

async function hubICEServers(password) {
  const sig = new Signaling({ room: "check-" + randomRoomName(), name: "Connection test", password });
  let timer;
  try {
    const w = await Promise.race([
      sig.start(),
      new Promise((_, reject) => { timer = setTimeout(() => reject(new HubError("unreachable", `The callbox server at ${location.host} did not answer.`)), HUB_TIMEOUT_MS); }),
    ]);
    return w.iceServers || [];
  } finally {
    clearTimeout(timer);
    sig.leave();
  }
}

function candidateFacts(c, server) {
  // Prefer the parsed attributes; fall back to the SDP line for older engines.
  const f = (c.candidate || "").split(" ");
  return {
    type: c.type || f[7] || "",
    protocol: (c.protocol || f[2] || "").toLowerCase(),
    relayProtocol: c.relayProtocol || "",
    address: c.address || f[4] || "",
    port: c.port || Number(f[5]) || 0,
    server,
  };
}

/** Gathers candidates for one ICE server URL. */
async function gather(u, server) {
  const pc = new RTCPeerConnection({
    iceServers: [{ urls: [u.url], username: server.username, credential: server.credential }],
    iceTransportPolicy: u.kind === "stun" ? "all" : "relay",
  });
  const candidates = [];
  const errors = [];
  const started = performance.now();
  const done = new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), GATHER_TIMEOUT_MS);
    pc.onicecandidate = (e) => {
      if (!e.candidate) { clearTimeout(timer); resolve(true); return; }
      if (e.candidate.candidate) candidates.push(candidateFacts(e.candidate, u.url));
    };
    pc.onicegatheringstatechange = () => {
      if (pc.iceGatheringState === "complete") { clearTimeout(timer); resolve(true); }
    };
  });
  pc.onicecandidateerror = (e) => errors.push({ server: u.url, code: e.errorCode, text: e.errorText || "" });
  pc.createDataChannel("check");
  await pc.setLocalDescription(await pc.createOffer());
  const completed = await done;
  pc.close();
  return { u, candidates, errors, completed, ms: Math.round(performance.now() - started) };
}

function addrOf(c) {
  const a = c.address.includes(":") && !c.address.startsWith("[") ? `[${c.address}]` : c.address;
  return a + ":" + c.port;
}

/** Turns the per-URL results into the report. */
export function summarize(results) {
  const res = {
    ok: false,
    stun: { offered: false, ok: false, address: "", sameAsLocal: false },
    turn: {
      udp: { offered: false, ok: false, address: "" },
      tcp: { offered: false, ok: false, address: "" },
      tls: { offered: false, ok: false, address: "" },
    },
    candidates: [], errors: [], timings: [], verdict: "", advice: [],
  };
  const seen = new Set();
  for (const { u, candidates, errors, completed, ms } of results) {
    res.errors.push(...errors);
    res.timings.push({ server: u.url, completed, ms });
    for (const c of candidates) {
      const key = `${c.type} ${c.protocol} ${c.address} ${c.port} ${c.server}`;
      if (!seen.has(key)) { seen.add(key); res.candidates.push(c); }
    }
    if (u.kind === "stun") {
      res.stun.offered = true;
      const srflx = candidates.find((c) => c.type === "srflx");
      if (srflx) {
        res.stun.ok = true;
        res.stun.address = res.stun.address || addrOf(srflx);
      } else if (completed && !errors.length && candidates.some((c) => c.type === "host" && c.protocol === "udp")) {
        // Browsers drop a server-reflexive candidate equal to a local
        // address: no NAT between here and callbox (a LAN, or a test on one
        // machine). Gathering then still completes at once, while a STUN
        // server that does not answer keeps it open until the timeout.
        res.stun.ok = true;
        res.stun.sameAsLocal = true;
      }
    } else {
      const t = res.turn[u.transport];
      t.offered = true;
      const relay = candidates.find((c) => c.type === "relay");
      if (relay) { t.ok = true; t.address = t.address || addrOf(relay); }
    }
  }
  const { udp, tcp, tls } = res.turn;
  const anyTURN = udp.ok || tcp.ok || tls.ok;
  const authFailed = res.errors.some((e) => e.code === 401 || e.code === 400 && /auth|integrity|unauthori/i.test(e.text));
  res.ok = anyTURN;
  if (udp.ok) {
    res.verdict = "Calls will work from this network.";
    if (tcp.offered && !tcp.ok) res.advice.push("TURN over TCP did not work: people whose networks block UDP may fail to connect. Check that the TURN port is open for TCP in the server's firewall.");
  } else if (tcp.ok || tls.ok) {
    res.verdict = `Calls will work, relayed over ${tcp.ok ? "TCP" : "TLS"}.`;
    res.advice.push("UDP to the TURN server seems blocked on this network. TCP works, but audio and video may lag when the network is busy. If you run this network, allow UDP to the TURN port.");
  } else if (res.stun.ok) {
    res.verdict = "Calls may work, but the relay is unreachable.";
    res.advice.push("Direct connections can work, but people behind strict firewalls or NATs will not connect without the TURN relay.");
  } else {
    res.verdict = "Calls will not work from this network.";
    res.advice.push("Nothing reached callbox's STUN/TURN server.");
  }
  if (!anyTURN) {
    if (authFailed) res.advice.push("The TURN server refused the credentials. Their expiry is a timestamp: check that the server's clock is right, and that every callbox shares the same turn.secrets.");
    else res.advice.push("Check that the TURN port is open (UDP and TCP) in the server's firewall, and that turn.public_ip and turn.host in the configuration name an address clients can reach.");
  }
  if (res.stun.offered && !res.stun.ok && anyTURN) {
    res.advice.push("The STUN server did not answer, so UDP to it is blocked from here. Calls still connect through the relay.");
  }
  if (!tls.offered) res.advice.push("TURN over TLS is not configured on this server; networks that allow only HTTPS will not connect.");
  return res;
}

function render(res, iceServers) {
  const v = $("verdict");
  v.dataset.kind = res.ok ? (res.turn.udp.ok ? "good" : "warn") : "bad";
  $("verdict-title").textContent = res.verdict;
  $("verdict-text").textContent = `Tested ${iceServers.reduce((n, s) => n + [].concat(s.urls).length, 0)} server addresses handed out by this callbox.`;
  $("advice").replaceChildren(...res.advice.map((a) => el("li", {}, a)));
  const row = (ok, offered, title, good, bad) =>
    el("li", { class: offered ? (ok ? "good" : "bad") : "na" },
      el("span", { class: "mark", "aria-hidden": "true" }, offered ? (ok ? "✓" : "✗") : "–"),
      el("div", {}, el("strong", {}, title), el("p", { class: "muted" }, offered ? (ok ? good : bad) : "Not offered by this server.")));
  const { udp, tcp, tls } = res.turn;
  $("checks").replaceChildren(
    row(true, true, "Signaling server", `callbox at ${location.host} answered and handed out its ICE servers.`, ""),
    row(res.stun.ok, res.stun.offered, "STUN", res.stun.address ? `Works. The server sees you at ${res.stun.address}.` :
      "Works. The server sees you at your own address: there is no NAT between you and callbox.", "No answer over UDP: UDP to the server is blocked from this network."),
    row(udp.ok, udp.offered, "TURN over UDP", `Works: relay address ${udp.address}.`, "No relay over UDP: UDP to the TURN port is blocked, or the server is unreachable."),
    row(tcp.ok, tcp.offered, "TURN over TCP", `Works: relay address ${tcp.address}.`, "No relay over TCP: the TURN port is closed for TCP."),
    row(tls.ok, tls.offered, "TURN over TLS", `Works: relay address ${tls.address}.`, "No relay over TLS: check the certificate and the TLS port."),
  );
  $("candidates").tBodies[0].replaceChildren(...res.candidates.map((c) => el("tr", {},
    el("td", {}, c.type), el("td", {}, c.protocol + (c.relayProtocol ? ` (to TURN: ${c.relayProtocol})` : "")),
    el("td", {}, addrOf(c)), el("td", {}, c.server))));
  if (res.errors.length) {
    $("checks").append(el("li", { class: "na" }, el("span", { class: "mark", "aria-hidden": "true" }, "!"),
      el("div", {}, el("strong", {}, "Errors reported by the browser"),
        el("ul", {}, ...res.errors.map((e) => el("li", {}, `${e.server}: ${e.code} ${e.text}`))))));
  }
}

async function run(password) {
  $("again").hidden = true;
  $("verdict").dataset.kind = "running";
  $("verdict-title").textContent = "Testing…";
  // The server's own view of its relay address (turn.public_ip problems), read beside the test.
  const info = fetch("/api/info").then((r) => (r.ok ? r.json() : null)).catch(() => null);
  let iceServers;
  try {
    iceServers = await hubICEServers(password);
  } catch (err) {
    if (err.code === "unauthorized") {
      $("check-password").hidden = false;
      $("password").focus();
    }
    const res = { ok: false, error: err.code || "error", verdict: "Could not reach callbox's signaling server.", advice: [err.message] };
    $("verdict").dataset.kind = "bad";
    $("verdict-title").textContent = res.verdict;
    $("verdict-text").textContent = err.message;
    $("advice").replaceChildren();
    $("again").hidden = false;
    return res;
  }
  const jobs = [];
  for (const s of iceServers) {
    for (const url of [].concat(s.urls)) {
      const u = parseICEURL(url);
      if (u) jobs.push(gather(u, s));
    }
  }
  const res = summarize(await Promise.all(jobs));
  const problem = (await info)?.turn?.addressProblem;
  if (problem) {
    res.addressProblem = problem;
    res.advice.unshift(`Server configuration: ${problem}`);
  }
  render(res, iceServers);
  $("again").hidden = false;
  return res;
}

function start(password = "") {
  const state = { result: null, done: null };
  state.done = run(password).then((r) => { state.result = r; return r; });
  window.callboxCheck = state;
}

$("again").addEventListener("click", () => start($("password").value));
$("check-password").addEventListener("submit", (e) => {
  e.preventDefault();
  $("check-password").hidden = true;
  start($("password").value);
});
start();
