package signal

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/callbox/callbox/config"
)

// MintInvite returns the invite token (EXPIRY.SIG as in docs/protocol.md) for room.
func MintInvite(secret, room string, expires time.Time) string {
	exp := strconv.FormatInt(expires.Unix(), 10)
	return exp + "." + inviteSig(secret, room, exp)
}

func inviteSig(secret, room, exp string) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(room))
	mac.Write([]byte{'\n'})
	mac.Write([]byte(exp))
	return base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// checkInvite verifies the signature before the expiry, so that a forged
// token is reported as forged whatever expiry it claims.
func checkInvite(secret, room, token string, now time.Time) error {
	exp, sig, ok := strings.Cut(token, ".")
	if token == "" {
		return protoErr(CodeInviteInvalid, true, "this room needs an invite link")
	}
	if !ok || exp == "" || len(exp) > 19 || !hmac.Equal([]byte(sig), []byte(inviteSig(secret, room, exp))) {
		return protoErr(CodeInviteInvalid, true, "the invite link is not valid for room %s", room)
	}
	n, err := strconv.ParseInt(exp, 10, 64)
	if err != nil {
		return protoErr(CodeInviteInvalid, true, "the invite link is not valid for room %s", room)
	}
	if now.Unix() >= n {
		return protoErr(CodeInviteExpired, true, "the invite link expired at %s", time.Unix(n, 0).UTC().Format(time.RFC3339))
	}
	return nil
}

// checkAccess applies [signal] access to a hello that is not a resume.
func checkAccess(cfg *config.Signal, m *inMsg, now time.Time) error {
	switch cfg.Access {
	case config.AccessPassword:
		if subtle.ConstantTimeCompare([]byte(m.Password), []byte(cfg.Password)) != 1 {
			return protoErr(CodeUnauthorized, true, "wrong or missing password")
		}
	case config.AccessInvite:
		return checkInvite(cfg.InviteSecret, m.Room, m.Invite, now)
	}
	return nil
}

// originAllowed accepts requests without an Origin (not from a browser, so
// no cross-site risk), from the request's own host, or from a host in
// [signal] origins. An entry without a port matches any port of that host.
func originAllowed(r *http.Request, allowed []string) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	if strings.EqualFold(u.Host, r.Host) {
		return true
	}
	for _, a := range allowed {
		if strings.EqualFold(u.Host, a) {
			return true
		}
		if !strings.Contains(a, ":") && strings.EqualFold(u.Hostname(), a) {
			return true
		}
	}
	return false
}

// keyAllowed compares key with every configured key in constant time, and
// does not stop at the first match, so timing tells nothing about which.
func keyAllowed(key string, keys []string) bool {
	ok := 0
	for _, k := range keys {
		ok |= subtle.ConstantTimeCompare([]byte(key), []byte(k))
	}
	return ok == 1 && key != ""
}

// clientIP is the address that [signal] max_connections_per_ip counts.
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
