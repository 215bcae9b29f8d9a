package turnserver

import (
	"crypto/hmac"
	"crypto/md5" //nolint:gosec // RFC 5389 long-term credentials are defined with MD5.
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Credentials are TURN REST credentials in the shape of
// draft-uberti-behave-turn-rest-00, ready to be encoded as JSON for a client.
type Credentials struct {
	Username string    `json:"username"` // "EXPIRY:USER"
	Password string    `json:"password"` // base64(HMAC-SHA1(secret, Username))
	TTL      int64     `json:"ttl"`      // seconds
	URIs     []string  `json:"uris"`     // TURNURIs()
	Expires  time.Time `json:"-"`
}

// maxUsernameBytes is RFC 5389's bound on the USERNAME attribute.
const maxUsernameBytes = 513

// maxExpiryDigits keeps the expiry within int64 seconds and rejects absurd
// inputs before strconv sees them.
const maxExpiryDigits = 18

// MintCredentials is the TURN REST scheme as coturn's use-auth-secret does
// it: username "EXPIRY:USER" with EXPIRY in Unix seconds, password
// base64(HMAC-SHA1(secret, username)). It needs no Server, so the
// `callbox credentials` command can use it.
func MintCredentials(secret, user string, expires time.Time) (username, password string) {
	username = strconv.FormatInt(expires.Unix(), 10) + ":" + user
	return username, restPassword(secret, username)
}

func restPassword(secret, username string) string {
	mac := hmac.New(sha1.New, []byte(secret))
	mac.Write([]byte(username))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// longTermKey is the RFC 5389 long-term credential key,
// MD5(username ":" realm ":" password), that MESSAGE-INTEGRITY is keyed with.
func longTermKey(username, realm, password string) []byte {
	h := md5.New() //nolint:gosec // see import
	h.Write([]byte(username))
	h.Write([]byte{':'})
	h.Write([]byte(realm))
	h.Write([]byte{':'})
	h.Write([]byte(password))
	return h.Sum(nil)
}

var errBadUsername = errors.New("turnserver: malformed REST username")

// ParseUsername splits a TURN REST username "EXPIRY:USER" into its expiry
// and user id. A bare "EXPIRY" (coturn accepts it) gives an empty user. The
// user may itself contain colons: only the first one separates.
func ParseUsername(username string) (expires time.Time, user string, err error) {
	if len(username) > maxUsernameBytes {
		return time.Time{}, "", fmt.Errorf("%w: %d bytes, more than %d", errBadUsername, len(username), maxUsernameBytes)
	}
	if !utf8.ValidString(username) {
		return time.Time{}, "", fmt.Errorf("%w: not UTF-8", errBadUsername)
	}
	expiry, user, _ := strings.Cut(username, ":")
	if expiry == "" || len(expiry) > maxExpiryDigits {
		return time.Time{}, "", fmt.Errorf("%w: expiry must be 1 to %d digits", errBadUsername, maxExpiryDigits)
	}
	// strconv would accept a sign; the scheme is bare decimal digits.
	for i := 0; i < len(expiry); i++ {
		if expiry[i] < '0' || expiry[i] > '9' {
			return time.Time{}, "", fmt.Errorf("%w: expiry %q is not decimal digits", errBadUsername, expiry)
		}
	}
	secs, err := strconv.ParseInt(expiry, 10, 64)
	if err != nil {
		return time.Time{}, "", fmt.Errorf("%w: expiry %q: %v", errBadUsername, expiry, err)
	}
	return time.Unix(secs, 0), user, nil
}
