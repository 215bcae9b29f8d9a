package signal

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/callbox/callbox/config"
)

// pipeListener is an in-memory listener (net.Pipe): inside a synctest
// bubble, goroutines blocked on it are durably blocked, so the fake clock
// can run the hub's minutes of pings and credential lifetimes at once.
type pipeListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

func (l *pipeListener) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	server, client := net.Pipe()
	select {
	case l.conns <- server:
		return client, nil
	case <-l.done:
		return nil, net.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// newPipeServer is newTestServer over pipes; call it inside synctest.Test.
func newPipeServer(t *testing.T, mutate func(*config.Signal), ice ICEProvider) *testServer {
	t.Helper()
	ts := &testServer{reg: prometheus.NewRegistry(), url: "http://callbox.test"}
	hub, err := NewHub(testConfig(mutate), Options{Logger: testLogger(t), Registerer: ts.reg, ICE: ice})
	if err != nil {
		t.Fatal(err)
	}
	ts.hub = hub
	mux := http.NewServeMux()
	hub.Routes(mux)
	l := &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
	ts.dial = l.dial
	srv := &http.Server{Handler: mux}
	served := make(chan struct{})
	go func() {
		defer close(served)
		srv.Serve(l)
	}()
	t.Cleanup(func() {
		hub.Shutdown(context.Background())
		srv.Close()
		<-served
	})
	return ts
}

func TestICERefreshBeforeExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const ttl = 10 * time.Minute
		ts := newPipeServer(t, nil, testICE(ttl))
		start := time.Now()
		c, w := ts.join(t, "r", "A")
		prev := w.ICEExpires
		for i := 1; i <= 2; i++ {
			c.ws.SetReadDeadline(time.Now().Add(ttl))
			_, b, err := c.ws.ReadMessage() // pings are answered inside
			if err != nil {
				t.Fatalf("push %d: %v", i, err)
			}
			m := decodeMsg(t, b)
			if m.Type != "ice" || m.ICEExpires <= prev || len(m.ICEServers) != 2 || m.ICEServers[1].Credential == "" {
				t.Fatalf("push %d: %v %+v", i, m, m.ICEServers)
			}
			// Due at four fifths of each lifetime, give or take a sweep.
			want := time.Duration(i) * ttl * 4 / 5
			if got := time.Since(start); got < want || got > want+time.Second {
				t.Fatalf("push %d after %s, want %s", i, got, want)
			}
			if time.UnixMilli(prev).Before(time.Now()) {
				t.Fatalf("push %d came after the credentials expired", i)
			}
			prev = m.ICEExpires
		}
	})
}

func TestPingTimeoutMakesPeerReconnecting(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ts := newPipeServer(t, func(c *config.Signal) { c.PingInterval = 20 * time.Second }, nil)
		a, wa := ts.join(t, "r", "A")
		b, _ := ts.join(t, "r", "B")
		a.expect("joined")
		// A reads (so pings reach it) but never answers them: a half-dead socket.
		a.ws.SetPingHandler(func(string) error { return nil })
		start := time.Now()
		aDone := make(chan error, 1)
		go func() {
			a.ws.SetReadDeadline(time.Now().Add(10 * time.Minute))
			_, _, err := a.ws.ReadMessage()
			aDone <- err
		}()
		b.ws.SetReadDeadline(time.Now().Add(10 * time.Minute))
		_, raw, err := b.ws.ReadMessage() // B answers pings and stays
		if err != nil {
			t.Fatal(err)
		}
		if m := decodeMsg(t, raw); m.Type != "reconnecting" || m.ID != wa.ID {
			t.Fatalf("B got %v, want A reconnecting", m)
		}
		// Cut after 2.5 ping intervals without a pong, within a sweep.
		if got := time.Since(start); got < 50*time.Second || got > 51*time.Second {
			t.Fatalf("A cut after %s, want 50s", got)
		}
		if err := <-aDone; err == nil {
			t.Fatal("A's socket is still open")
		}
		if got := counterValue(t, ts.reg, "callbox_signal_disconnects_total", reasonTimeout); got != 1 {
			t.Fatalf("disconnects{ping_timeout} = %v", got)
		}
		// And the resume window (30 s) then ends it.
		if m, err := b.read(time.Minute); err != nil || m.Type != "left" || m.ID != wa.ID || m.Reason != "timeout" {
			t.Fatalf("B got %v, %v", m, err)
		}
	})
}

func TestHelloTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ts := newPipeServer(t, nil, nil)
		c := ts.dialWS(t)
		start := time.Now()
		c.ws.SetReadDeadline(time.Now().Add(time.Minute))
		_, raw, err := c.ws.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		if m := decodeMsg(t, raw); m.Type != "error" || m.Code != CodeHelloRequired || !m.Fatal {
			t.Fatalf("got %v", m)
		}
		if got := time.Since(start); got < helloTimeout || got > helloTimeout+time.Second {
			t.Fatalf("closed after %s, want %s", got, helloTimeout)
		}
		_, _, err = c.ws.ReadMessage()
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.ClosePolicyViolation {
			t.Fatalf("read: %v, want close 1008", err)
		}
	})
}

func TestResumeWindowExact(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ts := newPipeServer(t, func(c *config.Signal) { c.ResumeWindow = 30 * time.Second }, nil)
		a, wa := ts.join(t, "r", "A")
		b, _ := ts.join(t, "r", "B")
		a.expect("joined")
		a.drop()
		b.expect("reconnecting")
		start := time.Now()
		b.ws.SetReadDeadline(time.Now().Add(time.Minute))
		_, raw, err := b.ws.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		if m := decodeMsg(t, raw); m.Type != "left" || m.ID != wa.ID || m.Reason != "timeout" {
			t.Fatalf("got %v", m)
		}
		if got := time.Since(start); got < 30*time.Second || got > 31*time.Second {
			t.Fatalf("left after %s, want 30s", got)
		}
	})
}
