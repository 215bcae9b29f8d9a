// media.js: camera, microphone and screen capture, and what to tell a person
// when the browser refuses them.

/** Whether the browser will give us a camera at all on this page. */
export function mediaAvailable() {
  return !!(navigator.mediaDevices && navigator.mediaDevices.getUserMedia);
}

/** The explanation for a page that is not a secure context, or "" when it is. */
export function insecureContextAdvice(loc = window.location) {
  if (window.isSecureContext) return "";
  return `Your browser only allows the camera and microphone on secure pages (HTTPS, or http://localhost). ` +
    `This page was opened as ${loc.protocol}//${loc.host}, so you can join but only watch and listen. ` +
    `To fix it, serve callbox over HTTPS, for example behind Caddy or nginx with a certificate, ` +
    `and open https://${loc.hostname}${loc.pathname}.`;
}

/**
 * Opens camera and microphone, falling back to whichever of them works.
 * @param {{audioId?: string, videoId?: string, audio?: boolean, video?: boolean}} want
 * @returns {Promise<{stream: MediaStream, problems: string[]}>}
 */
export async function openMedia(want = {}) {
  const problems = [];
  if (!mediaAvailable()) {
    return { stream: new MediaStream(), problems: [insecureContextAdvice() || "This browser cannot capture camera or microphone."] };
  }
  const audio = want.audio === false ? false : (want.audioId ? { deviceId: { exact: want.audioId } } : true);
  const video = want.video === false ? false :
    { ...(want.videoId ? { deviceId: { exact: want.videoId } } : {}), width: { ideal: 1280 }, height: { ideal: 720 } };
  const attempts = [{ audio, video }];
  if (audio && video) attempts.push({ audio, video: false }, { audio: false, video });
  let firstError = null;
  for (const c of attempts) {
    if (!c.audio && !c.video) continue;
    try {
      const stream = await navigator.mediaDevices.getUserMedia(c);
      if (firstError) problems.push(explainMediaError(firstError, c.video ? "microphone" : "camera"));
      return { stream, problems };
    } catch (err) {
      firstError = firstError || err;
      if (err.name === "NotAllowedError" || err.name === "SecurityError") break; // denying one denies both
    }
  }
  if (firstError) problems.push(explainMediaError(firstError, "camera and microphone"));
  return { stream: new MediaStream(), problems };
}

/** A sentence for a getUserMedia failure. */
export function explainMediaError(err, what) {
  switch (err && err.name) {
    case "NotAllowedError":
    case "SecurityError":
      return `Access to the ${what} was denied. You can still join; to be seen and heard, allow the ${what} ` +
        `in your browser's site settings (the icon left of the address) and reload.`;
    case "NotFoundError":
    case "OverconstrainedError":
      return `No ${what} was found. You join without it.`;
    case "NotReadableError":
    case "AbortError":
      return `The ${what} is in use by another application or could not be started. Close it and try again.`;
    default:
      return `Could not open the ${what}: ${err ? err.message || err.name : "unknown error"}.`;
  }
}

/** Lists cameras and microphones (labels appear once permission is granted). */
export async function listDevices() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.enumerateDevices) return { cams: [], mics: [] };
  const all = await navigator.mediaDevices.enumerateDevices();
  return {
    cams: all.filter((d) => d.kind === "videoinput"),
    mics: all.filter((d) => d.kind === "audioinput"),
  };
}

/** Asks for a screen or window; resolves to its video track or null when cancelled. */
export async function openScreen() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getDisplayMedia) {
    throw new Error("This browser cannot share the screen.");
  }
  try {
    const s = await navigator.mediaDevices.getDisplayMedia({ video: { frameRate: { ideal: 15 } }, audio: false });
    const track = s.getVideoTracks()[0] || null;
    // Text must stay readable: under load the encoder then drops frames
    // rather than resolution.
    if (track && "contentHint" in track) track.contentHint = "detail";
    return track;
  } catch (err) {
    if (err.name === "NotAllowedError" || err.name === "AbortError") return null; // the person cancelled
    throw err;
  }
}

/**
 * A level meter on a local audio track, for the "you are speaking" ring.
 * Returns a function giving the level 0..1, and a stop function.
 */
export function audioMeter(stream) {
  const track = stream.getAudioTracks()[0];
  const AC = window.AudioContext || window.webkitAudioContext;
  if (!track || !AC) return { level: () => 0, stop: () => {} };
  const ctx = new AC();
  const src = ctx.createMediaStreamSource(new MediaStream([track]));
  const an = ctx.createAnalyser();
  an.fftSize = 512;
  src.connect(an);
  const buf = new Float32Array(an.fftSize);
  return {
    level() {
      if (ctx.state === "suspended") ctx.resume().catch(() => {});
      an.getFloatTimeDomainData(buf);
      let sum = 0;
      for (const v of buf) sum += v * v;
      return Math.sqrt(sum / buf.length);
    },
    stop() { ctx.close().catch(() => {}); },
  };
}
