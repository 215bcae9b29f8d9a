package signal

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/callbox/callbox/config"
)

func TestPasswordMode(t *testing.T) {
	ts := newTestServer(t, func(c *config.Signal) { c.Access = config.AccessPassword; c.Password = "correct horse" })
	for _, tc := range []struct {
		name, password string
		ok             bool
	}{
		{"right", "correct horse", true},
		{"wrong", "correct hors", false},
		{"longer", "correct horse!", false},
		{"missing", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ts.dialWS(t)
			m := hello("r", "A")
			if tc.password != "" {
				m["password"] = tc.password
			}
			c.send(m)
			if tc.ok {
				c.expect("welcome")
				return
			}
			c.expectError(CodeUnauthorized, true)
			c.expectClose(websocket.ClosePolicyViolation)
		})
	}
}

func TestInviteMode(t *testing.T) {
	const secret = "0123456789abcdef-invite"
	ts := newTestServer(t, func(c *config.Signal) { c.Access = config.AccessInvite; c.InviteSecret = secret })
	future := time.Now().Add(time.Hour)
	valid := MintInvite(secret, "room1", future)
	exp, sig, _ := strings.Cut(valid, ".")
	for _, tc := range []struct {
		name, room, token, code string
	}{
		{"valid", "room1", valid, ""},
		{"expired", "room1", MintInvite(secret, "room1", time.Now().Add(-time.Second)), CodeInviteExpired},
		{"other room", "room2", valid, CodeInviteInvalid},
		{"other secret", "room1", MintInvite("another secret, 16+", "room1", future), CodeInviteInvalid},
		{"expiry moved", "room1", exp + "1." + sig, CodeInviteInvalid},
		{"no signature", "room1", exp, CodeInviteInvalid},
		{"missing", "room1", "", CodeInviteInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ts.dialWS(t)
			m := hello(tc.room, "A")
			m["invite"] = tc.token
			c.send(m)
			if tc.code == "" {
				c.expect("welcome")
				return
			}
			c.expectError(tc.code, true)
			c.expectClose(websocket.ClosePolicyViolation)
		})
	}
}

// TestInviteFormat pins the token to docs/protocol.md: EXPIRY.SIG with SIG
// the unpadded base64url HMAC-SHA256 of ROOM "\n" EXPIRY (computed
// independently with Python's hmac module).
func TestInviteFormat(t *testing.T) {
	tok := MintInvite("0123456789abcdef", "team", time.Unix(1764122400, 0))
	want := "1764122400.xU4hv-XjLx0kJCWWJnn9LXsJ8O8XTxc5alV3DQu-0PM"
	if tok != want {
		t.Fatalf("MintInvite = %s, want %s", tok, want)
	}
	if err := checkInvite("0123456789abcdef", "team", tok, time.Unix(1764122399, 0)); err != nil {
		t.Fatalf("checkInvite: %v", err)
	}
}

func TestValidRoom(t *testing.T) {
	for _, tc := range []struct {
		room string
		ok   bool
	}{
		{"a", true}, {"Team-standup_2", true}, {strings.Repeat("x", 64), true},
		{"", false}, {strings.Repeat("x", 65), false}, {"a b", false}, {"é", false}, {"a.b", false},
	} {
		if err := ValidRoom(tc.room); (err == nil) != tc.ok {
			t.Errorf("ValidRoom(%q) = %v, want ok=%v", tc.room, err, tc.ok)
		}
	}
}

func TestAPITurn(t *testing.T) {
	const key = "api-key-0123456789"
	ts := newTestServer(t, func(c *config.Signal) { c.APIKeys = []string{"another-key-0123456", key} })
	off := newTestServer(t, nil)
	for _, tc := range []struct {
		name   string
		srv    *testServer
		query  string
		bearer string
		want   int
	}{
		{"off without keys", off, "service=turn&username=alice&key=" + key, "", http.StatusNotFound},
		{"no key", ts, "service=turn&username=alice", "", http.StatusUnauthorized},
		{"wrong key", ts, "service=turn&username=alice&key=api-key-0123456788", "", http.StatusUnauthorized},
		{"key in query", ts, "service=turn&username=alice&key=" + key, "", http.StatusOK},
		{"bearer", ts, "service=turn&username=alice", key, http.StatusOK},
		{"no service", ts, "username=alice&key=" + key, "", http.StatusBadRequest},
		{"other service", ts, "service=stun&username=alice&key=" + key, "", http.StatusBadRequest},
		{"no username", ts, "service=turn&key=" + key, "", http.StatusBadRequest},
		{"username with a colon", ts, "service=turn&username=a:b&key=" + key, "", http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", tc.srv.url+"/api/turn?"+tc.query, nil)
			if tc.bearer != "" {
				req.Header.Set("Authorization", "Bearer "+tc.bearer)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("HTTP %d, want %d", resp.StatusCode, tc.want)
			}
			if tc.want != http.StatusOK {
				return
			}
			var got turnResponse
			if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
				t.Fatal(err)
			}
			if !strings.HasSuffix(got.Username, ":alice") || got.Password != "secret-for-alice" {
				t.Fatalf("credentials %q / %q, want minted for alice", got.Username, got.Password)
			}
			if got.TTL < 3500 || got.TTL > 3600 {
				t.Fatalf("ttl %d, want about an hour", got.TTL)
			}
			if len(got.URIs) != 2 || !strings.HasPrefix(got.URIs[0], "turn:") || !strings.HasPrefix(got.URIs[1], "turn:") {
				t.Fatalf("uris %v, want the two turn: URIs only", got.URIs)
			}
		})
	}
}
