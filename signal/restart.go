package signal

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"strings"
	"time"
)

// Resume tokens are signed rather than random so that a hub restarted
// inside the resume window (an upgrade, a crash, systemd's restart) can
// take back the sessions of the process before it: the peers keep their
// ids, so the browsers keep the calls that never needed the server (a
// direct path) instead of rebuilding every connection. The key comes from
// Options.ResumeKey, which the app derives from the TURN secret so that it
// survives a restart; without one it is random and only this process can
// resume its own tokens.

const restartTokenPrefix = "r."

// newToken returns the resume token of peer id in room.
func (h *Hub) newToken(room, id string) string {
	return restartTokenPrefix + id + "." + h.tokenMAC(room, id)
}

func (h *Hub) tokenMAC(room, id string) string {
	m := hmac.New(sha256.New, h.resumeKey)
	m.Write([]byte("callbox resume\x00" + room + "\x00" + id))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil)[:resumeTokenSz])
}

// restartClaim takes back a session of the process before this one: the
// token is signed with this hub's key, and this hub started less than a
// resume window ago, so that session may still be inside its window. Only
// a single process does this; in a cluster the other nodes hold the room.
func (h *Hub) restartClaim(room, token string) (Claimed, bool) {
	if _, local := h.router.(localRouter); !local {
		return Claimed{}, false
	}
	if time.Since(h.started) >= h.conf().ResumeWindow {
		return Claimed{}, false
	}
	rest, ok := strings.CutPrefix(token, restartTokenPrefix)
	if !ok {
		return Claimed{}, false
	}
	id, mac, ok := strings.Cut(rest, ".")
	if !ok || id == "" || !hmac.Equal([]byte(mac), []byte(h.tokenMAC(room, id))) {
		return Claimed{}, false
	}
	// The others on this hub, if any, resumed before it: they still have
	// it as reconnecting and are told it is back.
	return Claimed{ID: id, Reconnecting: true}, true
}
