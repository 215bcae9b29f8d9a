package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/gorilla/websocket"

	"github.com/callbox/callbox/config"
	"github.com/callbox/callbox/signal"
)

// What a person sees when the hub says no: a password prompt that retries,
// a full room, an expired or forged invite; and a good invite gets in. One
// browser visits a fresh callbox per case.
func TestBrowserAccess(t *testing.T) {
	art := newArtifacts(t)
	const password = "correct horse battery"
	const inviteSecret = "0123456789abcdef-invite-secret"
	b := startBrowsers(t, art, func(string) string { return "about:blank" }, "visitor")[0]

	inviteMode := func(c *config.Config) {
		c.Signal.Access = config.AccessInvite
		c.Signal.InviteSecret = inviteSecret
	}
	tests := []struct {
		name   string
		config func(*config.Config)
		query  func(room string) string
		seats  int // peers already in the room, joined over plain WebSockets
		run    func(t *testing.T, b *browser)
	}{
		{
			name:   "password",
			config: func(c *config.Config) { c.Signal.Access = config.AccessPassword; c.Signal.Password = password },
			run: func(t *testing.T, b *browser) {
				waitText(t, b, "#lobby-problems", "asks for a password")
				b.screenshot("password-asked")
				b.do("wrong password", chromedp.SendKeys(chromedp.CSS("#password"), "wrong password\r"))
				waitText(t, b, "#lobby-problems", "not right")
				mustEvalJS[bool](b, `(document.getElementById("password").value = "") === ""`)
				b.do("right password", chromedp.SendKeys(chromedp.CSS("#password"), password))
				if got := mustEvalJS[string](b, `document.getElementById("password").value`); got != password {
					t.Fatalf("password field holds %q", got)
				}
				b.do("join", chromedp.Click(chromedp.CSS("#join")))
				waitPhase(t, b, "call")
			},
		},
		{
			name:   "room-full",
			config: func(c *config.Config) { c.Signal.MaxPeersPerRoom = 2 },
			seats:  2,
			run: func(t *testing.T, b *browser) {
				waitPhase(t, b, "ended")
				waitText(t, b, "#ended-title", "This room is full")
			},
		},
		{
			name:   "invite-expired",
			config: inviteMode,
			query: func(room string) string {
				return "&invite=" + signal.MintInvite(inviteSecret, room, time.Now().Add(-time.Minute))
			},
			run: func(t *testing.T, b *browser) {
				waitPhase(t, b, "ended")
				waitText(t, b, "#ended-title", "This invite has expired")
			},
		},
		{
			name:   "invite-forged",
			config: inviteMode,
			query: func(room string) string {
				return "&invite=" + signal.MintInvite("another secret, not the server's", room, time.Now().Add(time.Hour))
			},
			run: func(t *testing.T, b *browser) {
				waitPhase(t, b, "ended")
				waitText(t, b, "#ended-title", "not valid")
			},
		},
		{
			name:   "invite-good",
			config: inviteMode,
			query: func(room string) string {
				return "&invite=" + signal.MintInvite(inviteSecret, room, time.Now().Add(time.Hour))
			},
			run: func(t *testing.T, b *browser) { waitPhase(t, b, "call") },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startCallbox(t, art, tt.config)
			room := randomRoom(tt.name)
			for i := range tt.seats {
				occupySeat(t, s, room, fmt.Sprintf("seat%d", i))
			}
			extra := ""
			if tt.query != nil {
				extra = tt.query(room)
			}
			b.t = t
			if err := b.navigate(callURL(s, room, "visitor", extra)); err != nil {
				t.Fatal(err)
			}
			tt.run(t, b)
			b.screenshot(tt.name)
		})
	}
	b.t = t
}

// occupySeat joins room over a plain WebSocket, as a browser would, and stays
// until the test ends.
func occupySeat(t *testing.T, s *callboxServer, room, name string) {
	t.Helper()
	wsURL := "ws" + strings.TrimPrefix(s.HTTPURL(), "http") + "/ws"
	d := websocket.Dialer{HandshakeTimeout: actionTimeout}
	c, _, err := d.Dial(wsURL, map[string][]string{"Origin": {s.HTTPURL()}})
	if err != nil {
		t.Fatalf("dial %s: %v", wsURL, err)
	}
	t.Cleanup(func() { c.Close() })
	hello := map[string]any{"type": "hello", "version": 1, "room": room, "name": name}
	if err := c.WriteJSON(hello); err != nil {
		t.Fatalf("%s: send hello: %v", name, err)
	}
	c.SetReadDeadline(time.Now().Add(actionTimeout))
	var msg struct {
		Type string `json:"type"`
	}
	_, data, err := c.ReadMessage()
	if err == nil {
		err = json.Unmarshal(data, &msg)
	}
	if err != nil || msg.Type != "welcome" {
		t.Fatalf("%s: want welcome, got %s (%v)", name, data, err)
	}
	// Nobody reads further: the hub's pings go unanswered, but the test is
	// far shorter than its ping timeout.
}

// waitPhase waits until the call page is in phase (lobby, call, ended).
func waitPhase(t *testing.T, b *browser, phase string) {
	t.Helper()
	waitUntil(t, fmt.Sprintf("%s in phase %s", b.name, phase), connectTimeout, func() (bool, string, error) {
		st, err := b.state()
		return st.Phase == phase, fmt.Sprintf("%+v", st), err
	})
}

// waitText waits until the element sel shows text containing want.
func waitText(t *testing.T, b *browser, sel, want string) {
	t.Helper()
	js := fmt.Sprintf(`(document.querySelector(%q) || {}).textContent || ""`, sel)
	waitUntil(t, fmt.Sprintf("%s showing %q in %s", b.name, want, sel), actionTimeout, func() (bool, string, error) {
		got, err := evalJS[string](b, js)
		return strings.Contains(got, want), got, err
	})
}
