// protocol.js: the WebSocket to callbox's hub (docs/protocol.md, version 1).
// It owns the socket, the hello/welcome handshake, reconnection with backoff
// and resume, and turns server messages into events. It knows nothing of
// WebRTC or the DOM.

export const VERSION = 1;

/**
 * Error codes after which reconnecting cannot help: the user must act.
 * Not hello_required: this client always sends hello first, so for it that
 * code means its hello came more than 10 s after the upgrade (a lossy or
 * starved link), which the next attempt may well beat.
 */
const TERMINAL = new Set([
  "bad_version", "bad_room", "bad_name", "unauthorized",
  "invite_invalid", "invite_expired", "room_full", "too_large",
]);

/**
 * A fatal error from the hub (or the handshake), with the protocol's code.
 */
export class HubError extends Error {
  /** @param {string} code @param {string} reason */
  constructor(code, reason) {
    super(reason || code);
    this.code = code;
  }
}

/** The WebSocket URL of the hub serving this page. */
export function hubURL(loc = window.location) {
  return (loc.protocol === "https:" ? "wss://" : "ws://") + loc.host + "/ws";
}

/**
 * Signaling is one session with the hub. Events (CustomEvent, data in detail):
 *   state      {state}  "connecting" | "open" | "reconnecting" | "closed"
 *   welcome    the welcome message (also after a resume: detail.resumed)
 *   joined, left, renamed, reconnecting, resumed, signal, chat, ice: the server messages
 *   hubnotice  non-fatal error messages {code, reason}
 *   fatal      {error: HubError} the session is over; start a new one to retry
 *   retry      {attempt, delay, reason} the next reconnection attempt is in delay ms;
 *              reason: what the hub said when it closed, or "" 
 */
export class Signaling extends EventTarget {
  /**
   * @param {{room: string, name: string, password?: string, invite?: string,
   *          url?: string, log?: (msg: string, ...args: any[]) => void}} opts
   */
  constructor(opts) {
    super();
    this.opts = opts;
    this.url = opts.url || hubURL();
    this.log = opts.log || (() => {});
    /** @type {WebSocket|null} */
    this.ws = null;
    this.state = "closed";
    this.id = "";
    this.resumeToken = "";
    this.resumeWindow = 30000;
    this.lastSeq = 0;
    this.attempt = 0;
    this.timer = 0;
    this.stopped = false;
    this.welcomed = false;
    /** Why the hub last closed on us, when it said so (shown with the next retry). */
    this.lastError = "";
    /** How many welcomes this session had: 1 + the reconnections. */
    this.welcomes = 0;
    /** Messages sent while the socket is down, flushed after the next welcome. */
    this.queue = [];
  }

  /** Opens the session; resolves with the first welcome, rejects on a fatal error. */
  start() {
    this.stopped = false;
    return new Promise((resolve, reject) => {
      const onWelcome = (e) => { cleanup(); resolve(e.detail); };
      const onFatal = (e) => { cleanup(); reject(e.detail.error); };
      const cleanup = () => {
        this.removeEventListener("welcome", onWelcome);
        this.removeEventListener("fatal", onFatal);
      };
      this.addEventListener("welcome", onWelcome);
      this.addEventListener("fatal", onFatal);
      this.connect();
    });
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.emit("state", { state });
  }

  connect() {
    clearTimeout(this.timer);
    if (this.stopped) return;
    this.setState(this.welcomed ? "reconnecting" : "connecting");
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (err) {
      this.fail(new HubError("bad_url", String(err)));
      return;
    }
    this.ws = ws;
    let gotWelcome = false;
    ws.onopen = () => {
      const hello = { type: "hello", version: VERSION, room: this.opts.room, name: this.opts.name };
      if (this.opts.password) hello.password = this.opts.password;
      if (this.opts.invite) hello.invite = this.opts.invite;
      if (this.resumeToken) {
        hello.resume = this.resumeToken;
        hello.lastSeq = this.lastSeq;
      }
      ws.send(JSON.stringify(hello));
    };
    ws.onmessage = (ev) => {
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        this.log("hub sent non-JSON", ev.data);
        return;
      }
      if (msg.type === "welcome") gotWelcome = true;
      this.handle(ws, msg);
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return; // an old socket, already replaced
      this.ws = null;
      this.log("socket closed", ev.code, ev.reason);
      if (this.stopped) {
        this.setState("closed");
        return;
      }
      if (!gotWelcome) this.attempt++;
      this.scheduleReconnect();
    };
  }

  /** Backoff: 0.5 s doubling to 10 s, with jitter so a restarted hub is not hit at once. */
  scheduleReconnect(delay) {
    if (delay === undefined) {
      const base = Math.min(10000, 500 * 2 ** Math.min(this.attempt, 5));
      delay = this.attempt === 0 ? 100 : base / 2 + Math.random() * base / 2;
    }
    this.setState(this.welcomed ? "reconnecting" : "connecting");
    this.emit("retry", { attempt: this.attempt, delay, reason: this.lastError });
    this.lastError = "";
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), delay);
  }

  /** Reconnect now (the user pressed "retry"). */
  retryNow() {
    if (this.ws || this.stopped) return;
    this.connect();
  }

  handle(ws, msg) {
    switch (msg.type) {
      case "welcome": {
        const fresh = !msg.resumed;
        this.id = msg.id;
        this.resumeToken = msg.resume;
        this.resumeWindow = msg.resumeWindow || this.resumeWindow;
        this.attempt = 0;
        this.welcomed = true;
        this.welcomes++;
        for (const c of msg.history || []) this.lastSeq = Math.max(this.lastSeq, c.seq || 0);
        this.setState("open");
        const queued = this.queue;
        this.queue = [];
        for (const m of queued) {
          // After a fresh session the peer ids of queued signals are stale.
          if (fresh && m.type === "signal") continue;
          this.sendNow(m);
        }
        this.emit("welcome", msg);
        return;
      }
      case "chat":
        this.lastSeq = Math.max(this.lastSeq, msg.seq || 0);
        break;
      case "reconnect":
        // The server is going away: come back after the pause it asks for.
        this.log("server asks to reconnect", msg.reason);
        this.dropSocket(ws);
        this.scheduleReconnect(Math.max(0, msg.after || 1000) + Math.random() * 500);
        return;
      case "error":
        if (!msg.fatal) {
          this.emit("hubnotice", { code: msg.code, reason: msg.reason });
          return;
        }
        if (msg.code === "resume_failed") {
          // Our seat is gone: join afresh under a new id.
          this.resumeToken = "";
          this.lastSeq = 0;
          this.dropSocket(ws);
          this.scheduleReconnect(0);
          return;
        }
        if (TERMINAL.has(msg.code)) {
          this.fail(new HubError(msg.code, msg.reason));
          return;
        }
        // too_many_rooms, rate_limited, slow_consumer...: the socket closes, we come back.
        this.lastError = msg.reason || msg.code;
        this.emit("hubnotice", { code: msg.code, reason: msg.reason });
        return;
    }
    this.emit(msg.type, msg);
  }

  dropSocket(ws) {
    if (this.ws === ws) this.ws = null;
    ws.onclose = null;
    try { ws.close(); } catch { /* already closing */ }
  }

  fail(err) {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) this.dropSocket(this.ws);
    this.setState("closed");
    this.emit("fatal", { error: err });
  }

  sendNow(msg) {
    this.ws.send(JSON.stringify(msg));
  }

  /** Sends msg now, or after the next welcome when the socket is down. */
  send(msg) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN && this.state === "open") {
      this.sendNow(msg);
    } else if (!this.stopped) {
      this.queue.push(msg);
    }
  }

  signal(to, payload) { this.send({ type: "signal", to, payload }); }
  chat(text) { this.send({ type: "chat", text }); }
  rename(name) { this.opts.name = name; this.send({ type: "rename", name }); }

  /** Leaves the room for good (no resume). */
  leave() {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify({ type: "leave" }));
    }
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) this.dropSocket(this.ws);
    this.setState("closed");
  }
}

/** A random, unguessable room name: 20 characters of base32 (100 bits), in groups of 4. */
export function randomRoomName() {
  const alphabet = "abcdefghijkmnpqrstuvwxyz23456789"; // no l, o, 0, 1: read aloud without doubt
  const bytes = crypto.getRandomValues(new Uint8Array(20));
  let s = "";
  for (let i = 0; i < bytes.length; i++) {
    if (i > 0 && i % 4 === 0) s += "-";
    s += alphabet[bytes[i] & 31];
  }
  return s;
}

/** Whether name is a room name the hub accepts. */
export function validRoom(name) {
  return /^[A-Za-z0-9_-]{1,64}$/.test(name);
}
