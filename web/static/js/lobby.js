// lobby.js: the call page before joining: name, password when asked,
// camera and microphone preview with a device picker, and the problems
// met on the way (camera denied, insecure page, server unreachable).

import { openMedia, listDevices, audioMeter, insecureContextAdvice } from "./media.js";
import { $, el, setButton } from "./ui.js";

const NAME_KEY = "callbox.name";
const CAM_KEY = "callbox.camera";
const MIC_KEY = "callbox.microphone";

/** The stored display name, or "". */
export function rememberedName() {
  try { return localStorage.getItem(NAME_KEY) || ""; } catch { return ""; }
}

function remember(key, value) {
  try { localStorage.setItem(key, value); } catch { /* private mode: fine */ }
}

function recall(key) {
  try { return localStorage.getItem(key) || ""; } catch { return ""; }
}

/**
 * Media is the local camera and microphone: one MediaStream whose tracks come
 * and go (camera off stops the camera, so its light goes out), shared with the
 * call so senders always find the current tracks.
 */
export class Media {
  constructor() {
    this.stream = new MediaStream();
    this.mic = true;
    this.cam = true;
    this.camId = recall(CAM_KEY);
    this.micId = recall(MIC_KEY);
    this.problems = [];
    this.meter = null;
    this.onchange = () => {};
  }

  /** Opens what is switched on, replacing the current tracks. */
  async open() {
    for (const t of this.stream.getTracks()) { t.stop(); this.stream.removeTrack(t); }
    const { stream, problems } = await openMedia({
      audio: true, video: this.cam, audioId: this.micId, videoId: this.camId,
    });
    this.problems = problems;
    for (const t of stream.getTracks()) this.stream.addTrack(t);
    if (!this.stream.getVideoTracks().length) this.cam = false;
    if (!this.stream.getAudioTracks().length) this.mic = false;
    for (const t of this.stream.getAudioTracks()) t.enabled = this.mic;
    this.resetMeter();
    this.onchange();
  }

  resetMeter() {
    this.meter?.stop();
    this.meter = audioMeter(this.stream);
  }

  level() { return this.mic && this.meter ? this.meter.level() : 0; }

  async setMic(on) {
    if (on && !this.stream.getAudioTracks().length) {
      // No microphone yet (denied or missing at first): ask again.
      const { stream, problems } = await openMedia({ audio: true, video: false, audioId: this.micId });
      this.problems = problems;
      const track = stream.getAudioTracks()[0];
      if (!track) { this.onchange(); return; }
      this.stream.addTrack(track);
      this.resetMeter();
    }
    this.mic = on;
    for (const t of this.stream.getAudioTracks()) t.enabled = on;
    this.onchange();
  }

  async setCam(on) {
    if (!on) {
      for (const t of this.stream.getVideoTracks()) { t.stop(); this.stream.removeTrack(t); }
      this.cam = false;
      this.onchange();
      return;
    }
    const { stream, problems } = await openMedia({ audio: false, video: true, videoId: this.camId });
    this.problems = problems;
    const track = stream.getVideoTracks()[0];
    if (track) {
      this.stream.addTrack(track);
      this.cam = true;
    }
    this.onchange();
  }

  async choose(kind, deviceId) {
    if (kind === "video") { this.camId = deviceId; remember(CAM_KEY, deviceId); }
    else { this.micId = deviceId; remember(MIC_KEY, deviceId); }
    await this.open();
  }

  stop() {
    for (const t of this.stream.getTracks()) t.stop();
    this.meter?.stop();
  }
}

export class Lobby {
  /** @param {Media} media @param {{room: string, relayOnly: boolean, onJoin: (name: string, password: string) => void}} opts */
  constructor(media, opts) {
    this.media = media;
    this.opts = opts;
    this.root = $("lobby");
    this.form = $("join-form");
    this.nameInput = $("name");
    this.password = $("password");
    this.joinBtn = $("join");
    this.problemsEl = $("lobby-problems");
    this.preview = $("preview");
    this.micBtn = $("preview-mic");
    this.camBtn = $("preview-cam");
    this.meterBar = $("preview-meter").firstElementChild;
    this.timer = 0;
    $("lobby-sub").textContent = opts.relayOnly
      ? `Room ${opts.room} · relay only: media goes through the TURN server`
      : `Room ${opts.room}`;
    this.nameInput.value = rememberedName();
    this.form.addEventListener("submit", (e) => {
      e.preventDefault();
      const name = this.nameInput.value.trim();
      if (!name) {
        this.setProblems(["Enter the name the others will see."]);
        this.nameInput.focus();
        return;
      }
      remember(NAME_KEY, name);
      this.opts.onJoin(name, this.password.value);
    });
    this.micBtn.addEventListener("click", () => this.media.setMic(!this.media.mic));
    this.camBtn.addEventListener("click", () => this.media.setCam(!this.media.cam));
    for (const [id, kind] of [["cam-select", "video"], ["mic-select", "audio"]]) {
      $(id).addEventListener("change", (e) => this.media.choose(kind, e.target.value));
    }
    // A headset plugged in while the lobby is open appears in the pickers.
    navigator.mediaDevices?.addEventListener?.("devicechange", () => {
      if (!this.root.hidden) this.fillDevices();
    });
  }

  async show() {
    this.root.hidden = false;
    this.render();
    this.timer = setInterval(() => {
      this.meterBar.style.setProperty("--level", String(Math.min(1, this.media.level() * 6)));
    }, 100);
    const advice = insecureContextAdvice();
    if (advice) this.setProblems([advice]);
    await this.media.open();
    await this.fillDevices();
    this.nameInput.focus();
  }

  hide() {
    this.root.hidden = true;
    clearInterval(this.timer);
  }

  /** Reflects the media state in the preview and its buttons. */
  render() {
    const m = this.media;
    // A video element with a stream that never delivers a frame holds back
    // the page's load event: attach the stream only with a camera in it.
    const src = m.stream.getVideoTracks().length ? m.stream : null;
    if (this.preview.srcObject !== src) this.preview.srcObject = src;
    if (src) this.preview.play().catch(() => {});
    $("preview-off").hidden = m.cam;
    setButton(this.micBtn, m.mic ? "mic" : "micOff", m.mic ? "Turn microphone off" : "Turn microphone on", !m.mic);
    setButton(this.camBtn, m.cam ? "cam" : "camOff", m.cam ? "Turn camera off" : "Turn camera on", !m.cam);
    this.micBtn.classList.toggle("off", !m.mic);
    this.camBtn.classList.toggle("off", !m.cam);
    if (m.problems.length) this.setProblems(m.problems);
  }

  async fillDevices() {
    const { cams, mics } = await listDevices();
    const fill = (select, list, current, what) => {
      select.replaceChildren(...list.map((d, i) =>
        el("option", { value: d.deviceId, selected: d.deviceId === current }, d.label || `${what} ${i + 1}`)));
      if (!list.length) select.append(el("option", { value: "" }, `No ${what.toLowerCase()} found`));
      select.disabled = list.length < 2;
    };
    const track = (k) => this.media.stream.getTracks().find((t) => t.kind === k);
    fill($("cam-select"), cams, track("video")?.getSettings().deviceId || this.media.camId, "Camera");
    fill($("mic-select"), mics, track("audio")?.getSettings().deviceId || this.media.micId, "Microphone");
  }

  setProblems(list) {
    this.problemsEl.replaceChildren(...list.map((p) => el("li", {}, p)));
  }

  setBusy(busy, label = "Joining…") {
    this.joinBtn.disabled = busy;
    this.joinBtn.textContent = busy ? label : "Join call";
  }

  askPassword(wrong) {
    $("password-row").hidden = false;
    this.setProblems([wrong ? "That password is not right. Try again." : "This callbox asks for a password to join."]);
    this.password.focus();
  }
}
