package signal

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/callbox/callbox/config"
)

func TestJoinPresence(t *testing.T) {
	ts := newTestServer(t, nil)
	a, wa := ts.join(t, "standup", "  Ada  ")
	if wa.Name != "Ada" || wa.Room != "standup" || wa.Resumed || len(wa.Peers) != 0 || wa.Resume == "" || wa.ResumeWindow != 30000 {
		t.Fatalf("welcome of the first peer: %+v", wa)
	}
	if len(wa.ICEServers) != 2 || wa.ICEServers[1].Username == "" || wa.ICEExpires <= time.Now().UnixMilli() {
		t.Fatalf("welcome ICE: %+v expires %d", wa.ICEServers, wa.ICEExpires)
	}
	if got := wa.ICEServers[1].Credential; got != "secret-for-"+wa.ID {
		t.Fatalf("TURN credential minted for %q, want the peer id %q", got, wa.ID)
	}
	b, wb := ts.join(t, "standup", "Grace")
	if len(wb.Peers) != 1 || wb.Peers[0] != (peerInfo{ID: wa.ID, Name: "Ada"}) {
		t.Fatalf("welcome of the second peer lists %+v", wb.Peers)
	}
	if j := a.expect("joined"); j.Peer != (peerInfo{ID: wb.ID, Name: "Grace"}) {
		t.Fatalf("joined: %+v", j)
	}
	b.send(map[string]any{"type": "rename", "name": "Grace H."})
	if r := a.expect("renamed"); r.ID != wb.ID || r.Name != "Grace H." {
		t.Fatalf("renamed: %+v", r)
	}
	b.send(map[string]any{"type": "leave"})
	if l := a.expect("left"); l.ID != wb.ID || l.Reason != "left" {
		t.Fatalf("left: %+v", l)
	}
	b.expectClose(websocket.CloseNormalClosure)
	a.send(map[string]any{"type": "leave"})
	a.expectClose(websocket.CloseNormalClosure)
	waitFor(t, "the empty room to vanish", func() bool {
		ts.hub.mu.Lock()
		defer ts.hub.mu.Unlock()
		return len(ts.hub.rooms) == 0 && len(ts.hub.peers) == 0 && len(ts.hub.clients) == 0
	})
}

func TestRelayStaysInRoom(t *testing.T) {
	ts := newTestServer(t, nil)
	a, wa := ts.join(t, "one", "A")
	b, wb := ts.join(t, "one", "B")
	a.expect("joined")
	c, wc := ts.join(t, "two", "C")
	d, wd := ts.join(t, "two", "D")
	c.expect("joined")

	offer := json.RawMessage(`{"description":{"type":"offer","sdp":"v=0\r\n"}}`)
	a.send(map[string]any{"type": "signal", "to": wb.ID, "payload": offer})
	got := b.expect("signal")
	if got.From != wa.ID || string(got.Payload) != string(offer) {
		t.Fatalf("relayed %+v payload %s", got, got.Payload)
	}
	// Across rooms: refused, and nothing reaches C.
	a.send(map[string]any{"type": "signal", "to": wc.ID, "payload": offer})
	a.expectError(CodeUnknownPeer, false)
	d.send(map[string]any{"type": "signal", "to": wc.ID, "payload": "marker"})
	if m := c.expect("signal"); m.From != wd.ID || string(m.Payload) != `"marker"` {
		t.Fatalf("C's next message is %+v, want D's marker (a leak from room one?)", m)
	}
	// To itself: there is no such other peer.
	a.send(map[string]any{"type": "signal", "to": wa.ID, "payload": 1})
	a.expectError(CodeUnknownPeer, false)
}

func TestChatOrderConcurrentSenders(t *testing.T) {
	const senders, each = 4, 40
	// A burst without any rate limit: the queue must hold it all.
	ts := newTestServer(t, func(c *config.Signal) { c.SendQueue = senders * each })
	clients := make([]*testClient, senders)
	for i := range clients {
		clients[i], _ = ts.join(t, "chat", fmt.Sprintf("s%d", i))
		for _, prev := range clients[:i] {
			prev.expect("joined")
		}
	}
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range each {
				b, _ := json.Marshal(map[string]any{"type": "chat", "text": fmt.Sprintf("%d-%d", i, n)})
				if err := c.ws.WriteMessage(websocket.TextMessage, b); err != nil {
					t.Errorf("send: %v", err)
					return
				}
			}
		}()
	}
	seen := make([][]string, senders)
	for i, c := range clients {
		for n := 1; n <= senders*each; n++ {
			m := c.expect("chat")
			if m.Seq != int64(n) {
				t.Fatalf("client %d: chat seq %d, want %d", i, m.Seq, n)
			}
			seen[i] = append(seen[i], m.From+"/"+m.Text)
		}
	}
	wg.Wait()
	for i := 1; i < senders; i++ {
		for n := range seen[0] {
			if seen[i][n] != seen[0][n] {
				t.Fatalf("client %d saw %q at seq %d, client 0 saw %q", i, seen[i][n], n+1, seen[0][n])
			}
		}
	}
}

func TestHistoryOnJoin(t *testing.T) {
	ts := newTestServer(t, func(c *config.Signal) { c.History = 3 })
	a, wa := ts.join(t, "h", "A")
	for i := 1; i <= 5; i++ {
		a.send(map[string]any{"type": "chat", "text": fmt.Sprintf("m%d", i)})
		a.expect("chat")
	}
	_, wb := ts.join(t, "h", "B")
	if len(wb.History) != 3 {
		t.Fatalf("history of %d chats, want 3: %+v", len(wb.History), wb.History)
	}
	for i, m := range wb.History {
		if m.Seq != int64(i+3) || m.Text != fmt.Sprintf("m%d", i+3) || m.From != wa.ID || m.Name != "A" || m.Time == 0 {
			t.Fatalf("history[%d] = %+v", i, m)
		}
	}
}

func TestResumeInsideWindow(t *testing.T) {
	ts := newTestServer(t, func(c *config.Signal) { c.ResumeWindow = 5 * time.Second })
	a, wa := ts.join(t, "r", "A")
	b, wb := ts.join(t, "r", "B")
	a.expect("joined")
	b.send(map[string]any{"type": "chat", "text": "before"})
	a.expect("chat")
	b.expect("chat")

	a.drop()
	if m := b.expect("reconnecting"); m.ID != wa.ID {
		t.Fatalf("reconnecting: %+v", m)
	}
	b.send(map[string]any{"type": "chat", "text": "while away"})
	b.expect("chat")
	for i := range 2 {
		b.send(map[string]any{"type": "signal", "to": wa.ID, "payload": i})
	}
	b.send(map[string]any{"type": "signal", "to": wb.ID + "x", "payload": 0}) // a round trip: the two above are queued
	b.expectError(CodeUnknownPeer, false)

	a2 := ts.dialWS(t)
	a2.send(map[string]any{"type": "hello", "version": 1, "room": "r", "name": "A", "resume": wa.Resume, "lastSeq": 1})
	w := a2.expect("welcome")
	if !w.Resumed || w.ID != wa.ID || len(w.Peers) != 1 || w.Peers[0].ID != wb.ID {
		t.Fatalf("resumed welcome: %+v", w)
	}
	if len(w.History) != 1 || w.History[0].Text != "while away" {
		t.Fatalf("history after lastSeq 1: %+v", w.History)
	}
	for i := range 2 {
		if m := a2.expect("signal"); m.From != wb.ID || string(m.Payload) != fmt.Sprint(i) {
			t.Fatalf("held signal %d: %+v", i, m)
		}
	}
	if m := b.expect("resumed"); m.ID != wa.ID {
		t.Fatalf("resumed: %+v", m)
	}
	// The resumed peer is fully back.
	b.send(map[string]any{"type": "signal", "to": wa.ID, "payload": "live"})
	if m := a2.expect("signal"); string(m.Payload) != `"live"` {
		t.Fatalf("after resume: %+v", m)
	}
	if got := counterValue(t, ts.reg, "callbox_signal_resumes_total", ""); got != 1 {
		t.Fatalf("resumes_total = %v, want 1", got)
	}
}

func TestResumeTakesOverLiveSocket(t *testing.T) {
	ts := newTestServer(t, nil)
	a, wa := ts.join(t, "r", "A")
	b, _ := ts.join(t, "r", "B")
	a.expect("joined")
	a2 := ts.dialWS(t)
	a2.send(map[string]any{"type": "hello", "version": 1, "room": "r", "name": "A", "resume": wa.Resume})
	if w := a2.expect("welcome"); !w.Resumed || w.ID != wa.ID {
		t.Fatalf("welcome: %+v", w)
	}
	if _, err := a.read(5 * time.Second); err == nil {
		t.Fatal("the replaced socket is still open")
	}
	// B saw nothing: the peer never went away. Its next message is A's chat.
	a2.send(map[string]any{"type": "chat", "text": "still here"})
	if m := b.expect("chat"); m.From != wa.ID {
		t.Fatalf("B got %+v", m)
	}
}

func TestResumeOutsideWindow(t *testing.T) {
	ts := newTestServer(t, func(c *config.Signal) { c.ResumeWindow = 200 * time.Millisecond })
	a, wa := ts.join(t, "r", "A")
	b, _ := ts.join(t, "r", "B")
	a.expect("joined")
	a.drop()
	b.expect("reconnecting")
	if m := b.expect("left"); m.ID != wa.ID || m.Reason != "timeout" {
		t.Fatalf("left: %+v", m)
	}
	a2 := ts.dialWS(t)
	a2.send(map[string]any{"type": "hello", "version": 1, "room": "r", "name": "A", "resume": wa.Resume})
	a2.expectError(CodeResumeFailed, true)
	a2.expectClose(websocket.ClosePolicyViolation)
}

func TestResumeFailures(t *testing.T) {
	ts := newTestServer(t, nil)
	_, wa := ts.join(t, "r", "A")
	for _, tc := range []struct{ name, room, token string }{
		{"unknown token", "r", "rnope"},
		{"other room", "other", wa.Resume},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ts.dialWS(t)
			c.send(map[string]any{"type": "hello", "version": 1, "room": tc.room, "name": "X", "resume": tc.token})
			c.expectError(CodeResumeFailed, true)
			c.expectClose(websocket.ClosePolicyViolation)
		})
	}
}

func TestGracefulShutdown(t *testing.T) {
	ts := newTestServer(t, nil)
	a, _ := ts.join(t, "s", "A")
	b, _ := ts.join(t, "s", "B")
	a.expect("joined")
	idle := ts.dialWS(t) // connected, never joined
	errc := make(chan error, 1)
	go func() { errc <- ts.hub.Shutdown(context.Background()) }()
	for _, c := range []*testClient{a, b, idle} {
		if m := c.expect("reconnect"); m.After < 1000 || m.After >= 2000 || m.Reason == "" {
			t.Fatalf("reconnect: %+v", m)
		}
		c.expectClose(websocket.CloseServiceRestart)
	}
	if err := <-errc; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if _, code, _ := ts.tryDial(t, nil); code != http.StatusServiceUnavailable {
		t.Fatalf("dial while shut down: HTTP %d, want 503", code)
	}
	resp, err := http.Get(ts.url + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/healthz while shut down: %d", resp.StatusCode)
	}
}

func TestShutdownForcesStuckClients(t *testing.T) {
	ts := newTestServer(t, func(c *config.Signal) { c.ShutdownTimeout = 100 * time.Millisecond })
	a, _ := ts.join(t, "s", "A")
	_ = a // never reads: it does not answer the close handshake
	if err := ts.hub.Shutdown(context.Background()); err == nil {
		t.Fatal("Shutdown with a client that never closes returned nil, want the timeout error")
	}
	ts.hub.mu.Lock()
	n := len(ts.hub.clients)
	ts.hub.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d clients left after Shutdown", n)
	}
}

func TestDropSockets(t *testing.T) {
	ts := newTestServer(t, nil)
	a, wa := ts.join(t, "d", "A")
	b, _ := ts.join(t, "d", "B")
	a.expect("joined")
	if n := ts.hub.DropSockets(); n != 2 {
		t.Fatalf("DropSockets = %d, want 2", n)
	}
	for _, c := range []*testClient{a, b} {
		for {
			m, err := c.read(5 * time.Second)
			if err == nil {
				if m.Type != "reconnecting" { // the other one may drop first
					t.Fatalf("got %v after DropSockets", m)
				}
				continue
			}
			if ce, ok := err.(*websocket.CloseError); !ok || ce.Code != websocket.CloseAbnormalClosure {
				t.Fatalf("read after DropSockets: %v, want an abrupt end (1006)", err)
			}
			break
		}
	}
	// A socket's end reaches the hub after the client sees it: wait until
	// both are processed, or A could resume before B is marked reconnecting.
	waitFor(t, "both sockets to be processed as dropped", func() bool {
		ts.hub.mu.Lock()
		defer ts.hub.mu.Unlock()
		return len(ts.hub.clients) == 0
	})
	a2 := ts.dialWS(t)
	a2.send(map[string]any{"type": "hello", "version": 1, "room": "d", "name": "A", "resume": wa.Resume})
	w := a2.expect("welcome")
	if len(w.Peers) != 1 || !w.Peers[0].Reconnecting {
		t.Fatalf("B should be listed as reconnecting: %+v", w.Peers)
	}
}

func TestHealthz(t *testing.T) {
	ts := newTestServer(t, nil)
	ts.join(t, "x", "A")
	ts.join(t, "y", "B")
	ts.dialWS(t)
	waitFor(t, "the third socket to be registered", func() bool {
		ts.hub.mu.Lock()
		defer ts.hub.mu.Unlock()
		return len(ts.hub.clients) == 3
	})
	resp, err := http.Get(ts.url + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var h health
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || h != (health{Status: "ok", Connections: 3, Rooms: 2, Peers: 2}) {
		t.Fatalf("/healthz: %d %+v", resp.StatusCode, h)
	}
}

// TestPongsKeepIdleSocket runs the keepalive over real sockets, through
// the parked reader: pongs keep A, silence cuts B. It takes a few seconds
// (2.5 ping intervals of the shortest allowed, 1 s), in parallel.
func TestPongsKeepIdleSocket(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, func(c *config.Signal) { c.PingInterval = time.Second })
	a, _ := ts.join(t, "k", "A")
	b, wb := ts.join(t, "k", "B")
	a.expect("joined")
	b.ws.SetPingHandler(func(string) error { return nil }) // B never answers
	go b.read(10 * time.Second)
	// gorilla answers pings only while reading: A reads all along.
	got := make(chan msg, 16)
	go func() {
		defer close(got)
		for {
			m, err := a.read(30 * time.Second)
			if err != nil {
				return
			}
			got <- m
		}
	}()
	if m := <-got; m.Type != "reconnecting" || m.ID != wb.ID {
		t.Fatalf("A got %v, want B reconnecting", m)
	}
	time.Sleep(1500 * time.Millisecond) // A is now past its own 2.5 s
	a.send(map[string]any{"type": "chat", "text": "alive"})
	if m, ok := <-got; !ok || m.Type != "chat" || m.Text != "alive" {
		t.Fatalf("A got %v (open %v), want its chat", m, ok)
	}
	if n := counterValue(t, ts.reg, "callbox_signal_disconnects_total", reasonTimeout); n != 1 {
		t.Fatalf("disconnects{ping_timeout} = %v, want 1 (B only)", n)
	}
}

// TestOverTLS: behind TLS the reader cannot park on the socket (TLS holds
// plaintext of its own) and reads in one loop instead; same behaviour.
func TestOverTLS(t *testing.T) {
	ts := startTestServer(t, nil, true)
	a, wa := ts.join(t, "tls", "A")
	b, wb := ts.join(t, "tls", "B")
	a.expect("joined")
	ts.hub.mu.Lock()
	for c := range ts.hub.clients {
		if c.raw != nil {
			t.Error("a TLS socket got a raw conn to park on")
		}
	}
	ts.hub.mu.Unlock()
	a.send(map[string]any{"type": "signal", "to": wb.ID, "payload": "over tls"})
	if m := b.expect("signal"); m.From != wa.ID || string(m.Payload) != `"over tls"` {
		t.Fatalf("got %v", m)
	}
	b.send(map[string]any{"type": "leave"})
	if m := a.expect("left"); m.ID != wb.ID {
		t.Fatalf("got %v", m)
	}
}
