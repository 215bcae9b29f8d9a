package signal

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/callbox/callbox/config"
)

func hello(room, name string) map[string]any {
	return map[string]any{"type": "hello", "version": 1, "room": room, "name": name}
}

// TestFatalHello covers every error that ends a socket at its first message.
func TestFatalHello(t *testing.T) {
	ts := newTestServer(t, nil)
	for _, tc := range []struct {
		name string
		msg  string
		code string
	}{
		{"chat first", `{"type":"chat","text":"hi"}`, CodeHelloRequired},
		{"not JSON first", `hello?`, CodeHelloRequired},
		{"unknown type first", `{"type":"nope"}`, CodeHelloRequired},
		{"no version", `{"type":"hello","room":"r","name":"A"}`, CodeBadVersion},
		{"version 2", `{"type":"hello","version":2,"room":"r","name":"A"}`, CodeBadVersion},
		{"empty room", `{"type":"hello","version":1,"room":"","name":"A"}`, CodeBadRoom},
		{"room with a slash", `{"type":"hello","version":1,"room":"a/b","name":"A"}`, CodeBadRoom},
		{"room too long", `{"type":"hello","version":1,"room":"` + strings.Repeat("a", 65) + `","name":"A"}`, CodeBadRoom},
		{"blank name", `{"type":"hello","version":1,"room":"r","name":"   "}`, CodeBadName},
		{"name with a newline", `{"type":"hello","version":1,"room":"r","name":"A\nB"}`, CodeBadName},
		{"name too long", `{"type":"hello","version":1,"room":"r","name":"` + strings.Repeat("é", 65) + `"}`, CodeBadName},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ts.dialWS(t)
			c.sendRaw([]byte(tc.msg))
			c.expectError(tc.code, true)
			c.expectClose(websocket.ClosePolicyViolation)
		})
	}
}

// TestNonFatalErrors: the socket stays usable after each of these.
func TestNonFatalErrors(t *testing.T) {
	ts := newTestServer(t, nil)
	c, _ := ts.join(t, "r", "A")
	for _, tc := range []struct {
		name string
		msg  string
		code string
	}{
		{"not JSON", `{{`, CodeBadMessage},
		{"no type", `{"text":"x"}`, CodeBadMessage},
		{"unknown type", `{"type":"dance"}`, CodeBadMessage},
		{"wrong field type", `{"type":"chat","text":5}`, CodeBadMessage},
		{"signal without payload", `{"type":"signal","to":"p1"}`, CodeBadMessage},
		{"second hello", `{"type":"hello","version":1,"room":"r","name":"A"}`, CodeAlreadyJoined},
		{"empty chat", `{"type":"chat","text":" "}`, CodeBadChat},
		{"chat too long", `{"type":"chat","text":"` + strings.Repeat("x", 4001) + `"}`, CodeBadChat},
		{"bad rename", `{"type":"rename","name":""}`, CodeBadName},
		{"unknown peer", `{"type":"signal","to":"pnobody","payload":{}}`, CodeUnknownPeer},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c.sendRaw([]byte(tc.msg))
			c.expectError(tc.code, false)
			c.send(map[string]any{"type": "chat", "text": "still here"})
			c.expect("chat")
		})
	}
}

func TestLimits(t *testing.T) {
	t.Run("too large", func(t *testing.T) {
		ts := newTestServer(t, func(c *config.Signal) { c.MaxMessageBytes = 1024 })
		c, _ := ts.join(t, "r", "A")
		c.sendRaw([]byte(`{"type":"chat","text":"` + strings.Repeat("x", 2000) + `"}`))
		c.expectError(CodeTooLarge, true)
		c.expectClose(websocket.CloseMessageTooBig)
	})
	t.Run("rate limited", func(t *testing.T) {
		ts := newTestServer(t, func(c *config.Signal) { c.MessagesPerSecond = 1; c.MessageBurst = 3 })
		c, _ := ts.join(t, "r", "A") // the hello took one token
		for range 2 {
			c.send(map[string]any{"type": "rename", "name": "B"})
		}
		for range 10 {
			c.send(map[string]any{"type": "rename", "name": "B"})
		}
		c.expectError(CodeRateLimited, false)
		c.expectError(CodeRateLimited, true)
		c.expectClose(websocket.ClosePolicyViolation)
	})
	t.Run("room full", func(t *testing.T) {
		ts := newTestServer(t, func(c *config.Signal) { c.MaxPeersPerRoom = 2 })
		ts.join(t, "r", "A")
		ts.join(t, "r", "B")
		c := ts.dialWS(t)
		c.send(hello("r", "C"))
		c.expectError(CodeRoomFull, true)
		c.expectClose(websocket.ClosePolicyViolation)
		ts.join(t, "other", "C") // other rooms still take peers
	})
	t.Run("too many rooms", func(t *testing.T) {
		ts := newTestServer(t, func(c *config.Signal) { c.MaxRooms = 1 })
		ts.join(t, "r", "A")
		ts.join(t, "r", "B") // an existing room is fine
		c := ts.dialWS(t)
		c.send(hello("s", "C"))
		c.expectError(CodeTooManyRooms, true)
		c.expectClose(websocket.CloseTryAgainLater)
	})
	t.Run("connections per IP", func(t *testing.T) {
		ts := newTestServer(t, func(c *config.Signal) { c.MaxConnectionsPerIP = 2 })
		a := ts.dialWS(t)
		ts.dialWS(t)
		if _, code, _ := ts.tryDial(t, nil); code != http.StatusTooManyRequests {
			t.Fatalf("third connection: HTTP %d, want 429", code)
		}
		a.ws.Close()
		waitFor(t, "the slot to free", func() bool {
			_, code, _ := ts.tryDial(t, nil)
			return code == http.StatusSwitchingProtocols
		})
	})
	t.Run("slow consumer", func(t *testing.T) {
		ts := newTestServer(t, func(c *config.Signal) { c.SendQueue = 8 })
		slow, ws := ts.join(t, "r", "Slow")
		fast, _ := ts.join(t, "r", "Fast")
		slow.expect("joined")
		// Signals of 60 KB: the socket buffers fill after some MB, then
		// the hub's queue of 8 fills.
		big, _ := json.Marshal(map[string]any{"type": "signal", "to": ws.ID, "payload": strings.Repeat("x", 60000)})
		for i := 0; ts.hub.slowClients() == 0; i++ {
			if i == 900 {
				t.Fatal("900 signals of 60 KB did not fill the queue")
			}
			fast.sendRaw(big)
			if i%10 == 0 { // a round trip, so the hub has handled the signals sent
				fast.send(map[string]any{"type": "signal", "to": "pnobody", "payload": 0})
				fast.expectError(CodeUnknownPeer, false)
			}
		}
		// The slow client now reads: chats, then the error and the close.
		for {
			m := slow.next()
			if m.Type == "signal" {
				continue
			}
			if m.Type != "error" || m.Code != CodeSlowConsumer || !m.Fatal {
				t.Fatalf("got %+v, want the slow_consumer error", m)
			}
			break
		}
		slow.expectClose(websocket.CloseTryAgainLater)
		for {
			if m := fast.next(); m.Type == "reconnecting" {
				if m.ID != ws.ID {
					t.Fatalf("reconnecting: %+v", m)
				}
				break
			}
		}
	})
}

func TestOrigin(t *testing.T) {
	ts := newTestServer(t, func(c *config.Signal) { c.Origins = []string{"app.example.com", "other.example:8443"} })
	host := strings.TrimPrefix(ts.url, "http://")
	for _, tc := range []struct {
		origin string
		want   int
	}{
		{"", http.StatusSwitchingProtocols},
		{"http://" + host, http.StatusSwitchingProtocols},
		{"https://app.example.com", http.StatusSwitchingProtocols},
		{"https://app.example.com:444", http.StatusSwitchingProtocols},
		{"https://other.example:8443", http.StatusSwitchingProtocols},
		{"https://other.example", http.StatusForbidden},
		{"https://evil.example", http.StatusForbidden},
		{"http://" + host + ".evil.example", http.StatusForbidden},
		{"null", http.StatusForbidden},
	} {
		t.Run(tc.origin, func(t *testing.T) {
			hdr := http.Header{}
			if tc.origin != "" {
				hdr.Set("Origin", tc.origin)
			}
			if _, code, _ := ts.tryDial(t, hdr); code != tc.want {
				t.Fatalf("Origin %q: HTTP %d, want %d", tc.origin, code, tc.want)
			}
		})
	}
}

// counterValue reads one metric (a counter or gauge) from reg; label is the
// value of its only label, or "" for none.
func counterValue(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if label != "" && (len(m.GetLabel()) != 1 || m.GetLabel()[0].GetValue() != label) {
				continue
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}

func TestMetrics(t *testing.T) {
	ts := newTestServer(t, nil)
	a, wa := ts.join(t, "m", "A")
	b, _ := ts.join(t, "m", "B")
	a.expect("joined")
	b.send(map[string]any{"type": "signal", "to": wa.ID, "payload": json.RawMessage(`{}`)})
	a.expect("signal")
	for _, tc := range []struct {
		name, label string
		want        float64
	}{
		{"callbox_signal_connections", "", 2},
		{"callbox_signal_rooms", "", 1},
		{"callbox_signal_peers", "", 2},
		{"callbox_signal_messages_total", "hello", 2},
		{"callbox_signal_messages_total", "signal", 1},
	} {
		t.Run(tc.name+"/"+tc.label, func(t *testing.T) {
			if got := counterValue(t, ts.reg, tc.name, tc.label); got != tc.want {
				t.Fatalf("%s{%s} = %v, want %v", tc.name, tc.label, got, tc.want)
			}
		})
	}
	b.drop()
	a.expect("reconnecting")
	waitFor(t, "the disconnect to be counted", func() bool {
		return counterValue(t, ts.reg, "callbox_signal_disconnects_total", reasonDropped) == 1
	})
}

// slowClients counts the clients ended as slow consumers whose sockets are
// still open: the slow test's sign that the queue overflowed.
func (h *Hub) slowClients() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for c := range h.clients {
		c.qmu.Lock()
		if c.reason == CodeSlowConsumer {
			n++
		}
		c.qmu.Unlock()
	}
	return n
}

// TestTokenBucket drives allow with a synthetic clock.
func TestTokenBucket(t *testing.T) {
	ts := newTestServer(t, func(c *config.Signal) { c.MessagesPerSecond = 10; c.MessageBurst = 4 })
	c := &client{h: ts.hub, tokens: 4}
	t0 := time.Unix(1000, 0)
	c.tokensAt = t0.UnixNano()
	c.closed = true // errors go nowhere
	for _, step := range []struct {
		at   time.Duration
		want bool
	}{
		{0, true}, {0, true}, {0, true}, {0, true}, // the burst
		{0, false},                     // empty
		{100 * time.Millisecond, true}, // one token per 100 ms
		{100 * time.Millisecond, false},
		{10 * time.Second, true}, // refilled, but never above the burst
		{10 * time.Second, true}, {10 * time.Second, true}, {10 * time.Second, true},
		{10 * time.Second, false},
	} {
		if got := c.allow(t0.Add(step.at)); got != step.want {
			t.Fatalf("allow at %s = %v, want %v (tokens %.2f)", step.at, got, step.want, c.tokens)
		}
	}
}

// TestHistoryRing: the room's chat ring keeps the newest, oldest first,
// also when [signal] history changes under it (SetConfig).
func TestHistoryRing(t *testing.T) {
	var r room
	seqs := func() (out []int64) {
		for _, m := range r.chatsAfter(0) {
			out = append(out, m.Seq)
		}
		return out
	}
	seq := int64(0)
	add := func(n, max int) {
		for range n {
			seq++
			r.addChat(chatMsg{Seq: seq}, max)
		}
	}
	for _, step := range []struct {
		n, max int
		want   []int64
	}{
		{5, 3, []int64{3, 4, 5}},
		{1, 3, []int64{4, 5, 6}},
		{1, 5, []int64{4, 5, 6, 7}}, // grown
		{2, 5, []int64{5, 6, 7, 8, 9}},
		{1, 2, []int64{9, 10}}, // shrunk
		{1, 0, nil},            // off
		{2, 2, []int64{12, 13}},
	} {
		add(step.n, step.max)
		if got := seqs(); !slices.Equal(got, step.want) {
			t.Fatalf("after %d more with history %d: %v, want %v", step.n, step.max, got, step.want)
		}
	}
}
