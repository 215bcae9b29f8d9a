// tiles.js: the video tiles of the call page: one for us, one per remote peer,
// each with name, speaking ring, mute and camera state, and on demand the
// connection facts of that peer.

import { el, icon, initials, hue, setButton } from "./ui.js";
import { describeCandidateType, formatBitrate } from "./stats.js";

/** Above this inbound audio level a tile shows the speaking ring. */
const SPEAKING_LEVEL = 0.04;

export class Tiles {
  /** @param {HTMLElement} root */
  constructor(root) {
    this.root = root;
    /** @type {Map<string, Tile>} */
    this.tiles = new Map();
    this.blockedAudio = new Set();
    this.onAudioBlocked = () => {};
  }

  layout() {
    this.root.dataset.count = String(Math.min(this.tiles.size, 9));
  }

  /** The tile of id, created on first use. */
  get(id, name, local = false) {
    let t = this.tiles.get(id);
    if (!t) {
      t = new Tile(this, id, name, local);
      this.tiles.set(id, t);
      if (local) this.root.prepend(t.root); else this.root.append(t.root);
      this.layout();
    }
    return t;
  }

  remove(id) {
    const t = this.tiles.get(id);
    if (!t) return;
    t.root.remove();
    this.tiles.delete(id);
    this.blockedAudio.delete(t);
    this.layout();
  }

  clear() {
    for (const id of [...this.tiles.keys()]) this.remove(id);
  }

  /** Plays every remote tile whose sound the browser held back (after a click). */
  unblockAudio() {
    for (const t of this.blockedAudio) t.play();
    this.blockedAudio.clear();
  }
}

class Tile {
  constructor(tiles, id, name, local) {
    this.tiles = tiles;
    this.id = id;
    this.local = local;
    this.video = el("video", { playsinline: true, autoplay: true, "aria-hidden": "true" });
    // Our own preview is muted (no echo) and mirrored like a mirror.
    if (local) { this.video.muted = true; this.video.classList.add("mirror"); }
    this.avatar = el("div", { class: "avatar", "aria-hidden": "true" });
    this.nameEl = el("span", { class: "tile-name" });
    this.micEl = el("span", { class: "tile-mic", title: "Microphone off" }, icon("micOff"));
    this.badge = el("span", { class: "tile-badge" });
    this.factsEl = el("dl", { class: "facts", hidden: true, "aria-live": "off" });
    this.infoBtn = el("button", { class: "tile-info", type: "button", "aria-expanded": "false" });
    setButton(this.infoBtn, "info", `Connection details for ${name || "this person"}`);
    this.infoBtn.addEventListener("click", () => this.toggleFacts());
    this.root = el("figure", { class: "tile", "data-peer": id },
      this.video, this.avatar,
      el("figcaption", {}, this.micEl, this.nameEl, this.badge),
      local ? null : this.infoBtn,
      this.factsEl);
    this.setName(name);
    this.setMedia({ mic: true, cam: false, screen: false });
  }

  setName(name) {
    this.name = name || "Guest";
    this.nameEl.textContent = this.local ? `${this.name} (you)` : this.name;
    this.avatar.textContent = initials(this.name);
    this.avatar.style.setProperty("--hue", String(hue(this.name)));
    this.root.setAttribute("aria-label", this.local ? "You" : this.name);
    if (!this.local) this.infoBtn.setAttribute("aria-label", `Connection details for ${this.name}`);
  }

  setStream(stream) {
    if (this.video.srcObject !== stream) this.video.srcObject = stream;
    this.play();
  }

  play() {
    this.video.play().catch((err) => {
      if (err.name === "NotAllowedError" && !this.local) {
        // Autoplay with sound needs a click on this page first.
        this.tiles.blockedAudio.add(this);
        this.tiles.onAudioBlocked();
      }
    });
  }

  /** @param {{mic: boolean, cam: boolean, screen: boolean}} m */
  setMedia(m) {
    this.media = m;
    const showVideo = m.cam || m.screen;
    this.root.classList.toggle("no-video", !showVideo);
    this.root.classList.toggle("screen", !!m.screen);
    this.video.classList.toggle("mirror", this.local && !m.screen);
    this.micEl.hidden = !!m.mic;
    this.badge.textContent = m.screen ? "Sharing screen" : "";
    this.badge.hidden = !m.screen;
  }

  setSpeaking(level) {
    this.root.classList.toggle("speaking", !!(this.media && this.media.mic) && level > SPEAKING_LEVEL);
  }

  /** @param {string} state  "connecting" | "connected" | "reconnecting" | "failed" ... */
  setState(state, relayed) {
    this.root.dataset.state = state;
    this.root.classList.toggle("relayed", !!relayed);
  }

  toggleFacts() {
    const open = this.factsEl.hidden;
    this.factsEl.hidden = !open;
    this.infoBtn.setAttribute("aria-expanded", open ? "true" : "false");
    if (open && this.lastFacts) this.showFacts(this.lastFacts);
  }

  /** Fills the details panel with one peer's facts (see call.js snapshot). */
  showFacts(p) {
    this.lastFacts = p;
    if (this.factsEl.hidden) return;
    const rows = [
      ["Connection", p.reconnecting ? "reconnecting to the server" : p.connectionState],
      ["This side", describeCandidateType(p.localCandidateType) + (p.relayProtocol ? ` over ${p.relayProtocol.toUpperCase()}` : "")],
      ["Far side", describeCandidateType(p.remoteCandidateType)],
      ["Protocol", (p.protocol || "—").toUpperCase()],
      ["Round trip", p.rtt == null ? "—" : `${Math.round(p.rtt * 1000)} ms`],
      ["Receiving", formatBitrate(p.rates.inBps)],
      ["Sending", formatBitrate(p.rates.outBps)],
      ["Packet loss", `${(p.rates.loss * 100).toFixed(1)} %`],
      ["Video", p.frameWidth ? `${p.frameWidth}×${p.frameHeight}` : "—"],
    ];
    this.factsEl.replaceChildren(...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  }
}
