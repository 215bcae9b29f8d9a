// chat.js: the chat panel: history, names, times, and an unread marker for
// what arrived while the panel was closed or the tab hidden.

import { el, formatTime } from "./ui.js";

export class Chat {
  /**
   * @param {{panel: HTMLElement, log: HTMLElement, form: HTMLFormElement, input: HTMLInputElement,
   *          badge: HTMLElement, toggle: HTMLButtonElement, send: (text: string) => void}} p
   */
  constructor(p) {
    Object.assign(this, p);
    this.selfId = "";
    this.unread = 0;
    this.seen = new Set();
    this.divider = null;
    this.form.addEventListener("submit", (e) => {
      e.preventDefault();
      const text = this.input.value.trim();
      if (!text) return;
      this.send(text.slice(0, 4000));
      this.input.value = "";
    });
    this.toggle.addEventListener("click", () => this.setOpen(this.panel.hidden));
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden && !this.panel.hidden) this.markRead();
    });
  }

  /** Shows or hides the panel; focus: move the keyboard to the message box. */
  setOpen(open, focus = true) {
    this.panel.hidden = !open;
    this.toggle.setAttribute("aria-pressed", open ? "true" : "false");
    this.toggle.setAttribute("aria-expanded", open ? "true" : "false");
    if (open) {
      this.markRead();
      this.log.scrollTop = this.log.scrollHeight;
      if (focus) this.input.focus({ preventScroll: true });
    }
  }

  markRead() {
    this.unread = 0;
    this.badge.hidden = true;
    this.badge.textContent = "";
    this.toggle.setAttribute("aria-label", "Chat");
  }

  /** Replaces the log with the history of a fresh welcome. */
  reset(history) {
    this.log.replaceChildren();
    this.seen.clear();
    this.divider = null;
    for (const m of history || []) this.add(m, true);
  }

  /** Adds one chat message; quiet: part of the history, not new. */
  add(m, quiet = false) {
    if (this.seen.has(m.seq)) return; // a resume may replay what we already show
    this.seen.add(m.seq);
    const mine = m.from === this.selfId;
    const away = this.panel.hidden || document.hidden;
    if (!quiet && !mine && away) {
      if (this.unread === 0) {
        this.divider?.remove();
        this.divider = el("li", { class: "chat-divider", role: "separator" }, "New messages");
        this.log.append(this.divider);
      }
      this.unread++;
      this.badge.textContent = String(this.unread);
      this.badge.hidden = false;
      this.toggle.setAttribute("aria-label", `Chat, ${this.unread} unread`);
    }
    const atBottom = this.log.scrollHeight - this.log.scrollTop - this.log.clientHeight < 40;
    this.log.append(el("li", { class: mine ? "msg mine" : "msg", "data-seq": m.seq },
      el("div", { class: "msg-head" },
        el("span", { class: "msg-name" }, mine ? "You" : m.name),
        el("time", { datetime: new Date(m.time).toISOString() }, formatTime(m.time))),
      el("p", { class: "msg-text" }, m.text)));
    if (atBottom || mine) this.log.scrollTop = this.log.scrollHeight;
  }

  /** A line from the room itself ("Grace joined"). */
  notice(text) {
    this.log.append(el("li", { class: "chat-notice" }, text));
  }
}
