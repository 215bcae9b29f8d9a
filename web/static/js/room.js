// room.js: the call page (/r/ROOM). It wires the hub session (protocol.js),
// the mesh (call.js) and the DOM (lobby.js, tiles.js, chat.js).
//
// URL parameters: ?name=NAME joins at once under that name; ?relay=1 forces
// iceTransportPolicy "relay"; ?invite=TOKEN is passed to the hub in hello.
//
// For tests and debugging, window.callbox exposes:
//   peers(): Promise<Array<{id, name, connectionState, iceConnectionState,
//            localCandidateType, remoteCandidateType, protocol, relayProtocol,
//            localCandidateUrl, rtt, framesDecoded, frameWidth, frameHeight,
//            bytesReceived, packetsLost, reconnecting, restarts,
//            media: {mic, cam, screen},       what that peer says it sends
//            sendingVideo, sendingWidth,     what we send it: "camera" | "screen" | "none"
//            turnUsername}>>                  the TURN credential its connection uses now
//            one entry per remote peer, from a fresh getStats
//   state(): {phase, id, signaling, peers, screen, welcomes, iceUpdates, relayOnly}
//   phase is "lobby" | "joining" | "call" | "ended"

import { Signaling } from "./protocol.js";
import { Call } from "./call.js";
import { Tiles } from "./tiles.js";
import { Chat } from "./chat.js";
import { Lobby, Media } from "./lobby.js";
import { openScreen } from "./media.js";
import { $, setButton, toast, copyText } from "./ui.js";

const room = decodeURIComponent(location.pathname.replace(/^\/r\//, "").replace(/\/+$/, ""));
const params = new URLSearchParams(location.search);
const relayOnly = params.get("relay") === "1";
const invite = params.get("invite") || "";
const log = (...a) => console.info("[callbox]", ...a);

const media = new Media();
const tiles = new Tiles($("tiles"));
let phase = "lobby";
/** @type {Signaling|null} */ let sig = null;
/** @type {Call|null} */ let call = null;
let localTick = 0;

document.title = `${room} · callbox`;
$("room-name").textContent = room;

const lobby = new Lobby(media, { room, relayOnly, onJoin: join });
media.onchange = () => {
  if (phase === "lobby" || phase === "joining") lobby.render();
  else renderLocal();
  call?.refreshTracks();
  call?.setMedia({ mic: media.mic, cam: media.cam });
  renderControls();
};

const chat = new Chat({
  panel: $("chat"), log: $("chat-log"), form: $("chat-form"), input: $("chat-input"),
  badge: $("chat-badge"), toggle: $("btn-chat"),
  send: (text) => sig?.chat(text),
});
$("chat-close").addEventListener("click", () => { chat.setOpen(false); renderControls(); });
setButton($("chat-close"), "close", "Close chat");
setButton($("chat-send"), "send", "Send message");

// Share link: the page's own URL without ?name and ?relay, which are personal.
const share = new URL(location.href);
share.searchParams.delete("name");
share.searchParams.delete("relay");
$("copy-link").addEventListener("click", async () => {
  toast(await copyText(share.href) ? "Invite link copied" : `Share this link: ${share.href}`);
});

window.callbox = {
  room,
  relayOnly,
  peers: async () => (call ? call.snapshot() : []),
  icePairs: async () => (call ? call.icePairs() : {}),
  state: () => ({
    phase,
    id: sig?.id || "",
    signaling: sig?.state || "closed",
    peers: call ? call.peers.size : 0,
    screen: !!call?.media.screen,
    welcomes: sig?.welcomes || 0,
    iceUpdates: call?.iceUpdates || 0,
    statsTicks: call?.statsTicks || 0,
    relayOnly,
  }),
};

async function join(name, password) {
  if (phase === "joining" || phase === "call") return;
  phase = "joining";
  lobby.setBusy(true);
  sig = new Signaling({ room, name, password, invite, log });
  call = new Call(sig, { localStream: media.stream, relayOnly, log });
  call.setMedia({ mic: media.mic, cam: media.cam, screen: false });
  wire(sig, call);
  try {
    await sig.start();
  } catch (err) {
    onFatal(err, password);
  }
}

function wire(sig, call) {
  sig.addEventListener("welcome", (e) => {
    const w = e.detail;
    log(`welcome: id ${w.id}, resumed ${w.resumed}, ${w.peers?.length || 0} peers`);
    chat.selfId = w.id;
    if (!w.resumed) chat.reset(w.history);
    else for (const m of w.history || []) chat.add(m);
    if (phase !== "call") enterCall(w);
    if (w.resumed) toast("Reconnected", "info", 2500);
    renderStatus();
  });
  sig.addEventListener("retry", (e) => {
    const { attempt, delay, reason } = e.detail;
    if (phase === "joining" && (attempt > 0 || reason)) {
      const s = Math.ceil(delay / 1000);
      const why = reason ? `The server says: ${reason}.` : `Can't reach the callbox server at ${location.host}.`;
      lobby.setProblems([`${why} Trying again in ${s} s…`]);
    }
  });
  sig.addEventListener("state", renderStatus);
  sig.addEventListener("chat", (e) => chat.add(e.detail));
  sig.addEventListener("hubnotice", (e) => {
    if (e.detail.code !== "unknown_peer") toast(e.detail.reason || e.detail.code, "warn");
  });
  sig.addEventListener("fatal", (e) => { if (phase === "call") onFatal(e.detail.error); });

  call.addEventListener("peerjoined", (e) => {
    const p = e.detail.peer;
    tiles.get(p.id, p.name).setState("connecting");
    if (phase === "call") chat.notice(`${p.name || "Someone"} joined`);
    renderStatus();
  });
  call.addEventListener("peerleft", (e) => {
    const { peer, reason } = e.detail;
    tiles.remove(peer.id);
    if (reason !== "rejoined") chat.notice(`${peer.name || "Someone"} ${reason === "timeout" ? "lost connection" : "left"}`);
    renderStatus();
  });
  call.addEventListener("peerstream", (e) => {
    const p = e.detail.peer;
    if (!call.peers.has(p.id)) return; // a late event of a closed connection
    tiles.get(p.id, p.name).setStream(p.stream);
  });
  call.addEventListener("peermedia", (e) => {
    const p = e.detail.peer;
    if (!call.peers.has(p.id)) return; // a late event of a closed connection
    tiles.get(p.id, p.name).setMedia(p.remoteMedia);
  });
  call.addEventListener("peerrenamed", (e) => tiles.get(e.detail.peer.id).setName(e.detail.peer.name));
  call.addEventListener("peerstate", (e) => {
    const p = e.detail.peer;
    if (!call.peers.has(p.id)) return; // a late event of a closed connection
    tiles.get(p.id, p.name).setState(p.reconnecting ? "reconnecting" : p.pc.connectionState, isRelayed(p.facts));
    renderStatus();
  });
  call.addEventListener("stats", () => {
    for (const p of call.peers.values()) {
      const t = tiles.get(p.id, p.name);
      t.setSpeaking(p.rates.audioLevel);
      t.setState(p.reconnecting ? "reconnecting" : p.pc.connectionState, isRelayed(p.facts));
      t.showFacts({ ...p.facts, id: p.id, name: p.name, connectionState: p.pc.connectionState, reconnecting: p.reconnecting, rates: p.rates });
    }
    renderStatus();
  });
}

function isRelayed(f) {
  return f.localCandidateType === "relay" || f.remoteCandidateType === "relay";
}

function enterCall(w) {
  phase = "call";
  lobby.hide();
  $("stage").hidden = false;
  $("controls").hidden = false;
  tiles.onAudioBlocked = () => { $("btn-sound").hidden = false; };
  tiles.get("local", w.name, true);
  renderLocal();
  renderControls();
  // Chat opens by default where there is room for it beside the videos.
  chat.setOpen(window.matchMedia("(min-width: 1000px)").matches, false);
  // Problems met in the lobby (camera denied...) still matter when it was skipped.
  for (const p of media.problems) toast(p, "warn", 12000);
  if (!w.peers?.length) toast("You are the first one here. Copy the invite link to bring others in.", "info", 8000);
  localTick = setInterval(() => tiles.get("local").setSpeaking(media.level()), 150);
}

function renderLocal() {
  const t = tiles.tiles.get("local");
  if (!t) return;
  const screen = call?.screenTrack;
  t.setStream(screen ? new MediaStream([screen]) : media.stream);
  t.setMedia({ mic: media.mic, cam: media.cam, screen: !!screen });
}

function renderControls() {
  const sharing = !!call?.screenTrack;
  setButton($("btn-mic"), media.mic ? "mic" : "micOff", media.mic ? "Mute microphone" : "Unmute microphone", !media.mic);
  setButton($("btn-cam"), media.cam ? "cam" : "camOff", media.cam ? "Turn camera off" : "Turn camera on", !media.cam);
  setButton($("btn-screen"), "screen", sharing ? "Stop sharing screen" : "Share screen", sharing);
  const badge = $("chat-badge");
  setButton($("btn-chat"), "chat", "Chat", !$("chat").hidden);
  $("btn-chat").append(badge);
  setButton($("btn-leave"), "leave", "Leave call");
  $("btn-mic").classList.toggle("off", !media.mic);
  $("btn-cam").classList.toggle("off", !media.cam);
  $("btn-screen").classList.toggle("on", sharing);
  $("btn-chat").classList.toggle("on", !$("chat").hidden);
}

/** The status line: what the connection is doing, in a few words. */
function renderStatus() {
  const st = $("status");
  let text = "";
  let kind = "ok";
  if (!sig) { st.textContent = ""; return; }
  if (sig.state === "reconnecting") { text = "Reconnecting to the server…"; kind = "warn"; }
  else if (sig.state === "connecting") { text = "Connecting…"; kind = "warn"; }
  else if (sig.state === "closed") { text = "Disconnected"; kind = "bad"; }
  else if (call) {
    const peers = [...call.peers.values()];
    const connected = peers.filter((p) => p.pc.connectionState === "connected");
    const relayed = connected.some((p) => isRelayed(p.facts));
    if (!peers.length) text = "Waiting for others";
    else {
      text = `${connected.length} of ${peers.length} connected`;
      if (connected.length < peers.length) kind = "warn";
    }
    if (relayed) text += " · relayed via TURN";
    else if (relayOnly) text += " · relay only";
  }
  st.textContent = text;
  st.dataset.kind = kind;
}

function onFatal(err, password) {
  log("fatal", err.code, err.message);
  const wasInCall = phase === "call";
  teardown();
  switch (err.code) {
    case "unauthorized":
      if (!wasInCall) { backToLobby(); lobby.askPassword(!!password); return; }
      break;
    case "bad_name":
      if (!wasInCall) { backToLobby(); lobby.setProblems([err.message]); return; }
      break;
    case "room_full":
      return ended("This room is full", `${err.message}. Try again when someone leaves.`);
    case "invite_expired":
      return ended("This invite has expired", "Ask the person who sent you the link for a new one.");
    case "invite_invalid":
      return ended("This invite link is not valid",
        invite ? "It may be cut short or meant for another room. Check the link you were sent." :
          "This callbox only lets people in with an invite link. Ask for one.");
  }
  ended("Could not stay in the call", err.message || err.code);
}

function backToLobby() {
  phase = "lobby";
  lobby.setBusy(false);
  $("status").textContent = "";
}

function teardown() {
  clearInterval(localTick);
  call?.close();
  call = null;
  sig = null;
  tiles.clear();
}

function ended(title, text) {
  phase = "ended";
  teardown();
  media.stop();
  lobby.hide();
  $("stage").hidden = true;
  $("controls").hidden = true;
  $("ended").hidden = false;
  $("ended-title").textContent = title;
  $("ended-text").textContent = text;
  $("status").textContent = "";
  $("rejoin").focus();
}

$("rejoin").addEventListener("click", () => location.reload());
$("btn-mic").addEventListener("click", () => media.setMic(!media.mic).catch((err) => toast(err.message, "error")));
$("btn-cam").addEventListener("click", () => media.setCam(!media.cam).catch((err) => toast(err.message, "error")));
$("btn-sound").addEventListener("click", () => { tiles.unblockAudio(); $("btn-sound").hidden = true; });
$("btn-leave").addEventListener("click", () => {
  sig?.leave();
  ended("You left the call", "Join again with the button below, or start a new call.");
});
$("btn-screen").addEventListener("click", async () => {
  if (!call) return;
  if (call.screenTrack) {
    call.stopScreen();
  } else {
    try {
      const track = await openScreen();
      if (!track || !call) return;
      track.addEventListener("ended", () => { call?.stopScreen(); renderLocal(); renderControls(); });
      await call.startScreen(track);
    } catch (err) {
      toast(`Screen sharing failed: ${err.message}`, "error");
    }
  }
  renderLocal();
  renderControls();
});
$("btn-chat").addEventListener("click", () => renderControls());
// Phones and some browsers cannot capture the screen: no button that only fails.
$("btn-screen").hidden = !navigator.mediaDevices?.getDisplayMedia;
// Leaving the page says goodbye at once, so the others do not wait out the resume window.
window.addEventListener("pagehide", () => sig?.leave());
document.addEventListener("keydown", (e) => {
  if (phase !== "call" || e.target instanceof HTMLInputElement || e.ctrlKey || e.metaKey || e.altKey) return;
  if (e.key === "m") $("btn-mic").click();
  else if (e.key === "v") $("btn-cam").click();
});

const nameParam = (params.get("name") || "").trim();
if (nameParam) {
  // A link with ?name= joins straight away (tests, kiosks, bookmarks).
  lobby.nameInput.value = nameParam;
  lobby.show().then(() => join(nameParam, ""));
} else {
  lobby.show();
}
