// home.js: the start page: make a room with an unguessable name and show its
// link, or go to a room by name.

import { randomRoomName, validRoom } from "./protocol.js";
import { $, toast, copyText } from "./ui.js";

function roomURL(name) {
  return new URL(`/r/${encodeURIComponent(name)}`, location.href).href;
}

$("new-call").addEventListener("click", () => {
  const url = roomURL(randomRoomName());
  $("share-link").value = url;
  $("open-call").href = url;
  $("created").hidden = false;
  $("share-link").select();
  $("copy").focus();
});

$("copy").addEventListener("click", async () => {
  toast(await copyText($("share-link").value, $("share-link")) ? "Link copied" : "Select the link and copy it");
});

$("join-room").addEventListener("submit", (e) => {
  e.preventDefault();
  const name = $("room").value.trim();
  if (!validRoom(name)) {
    $("room").setAttribute("aria-invalid", "true");
    $("room-help").textContent = "That name cannot be used: letters, digits, - and _ only, up to 64 characters.";
    $("room").focus();
    return;
  }
  location.href = roomURL(name);
});
