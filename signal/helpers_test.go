package signal

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/callbox/callbox/config"
)

// testICE is a fixed ICE provider: the hub's contract with turnserver is a
// function, so a function is the real thing here.
func testICE(ttl time.Duration) ICEProvider {
	return func(user string) ([]ICEServer, time.Time) {
		exp := time.Now().Add(ttl)
		return []ICEServer{
			{URLs: []string{"stun:127.0.0.1:3478"}},
			{URLs: []string{"turn:127.0.0.1:3478?transport=udp", "turn:127.0.0.1:3478?transport=tcp"},
				Username: exp.Format("20060102150405") + ":" + user, Credential: "secret-for-" + user},
		}, exp
	}
}

type testServer struct {
	hub  *Hub
	reg  *prometheus.Registry
	url  string // http://host:port, or https://
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
	tls  *tls.Config
}

func testConfig(mutate func(*config.Signal)) config.Signal {
	cfg := config.Default().Signal
	cfg.MessagesPerSecond = 1000
	cfg.MessageBurst = 1000
	if mutate != nil {
		mutate(&cfg)
	}
	return cfg
}

// newTestServer runs a hub on httptest.NewServer (a real socket on 127.0.0.1:0).
func newTestServer(t testing.TB, mutate func(*config.Signal)) *testServer {
	t.Helper()
	return startTestServer(t, mutate, false)
}

// startTestServer is newTestServer, over TLS when withTLS.
func startTestServer(t testing.TB, mutate func(*config.Signal), withTLS bool) *testServer {
	t.Helper()
	return startTestServerKey(t, mutate, withTLS, nil)
}

// startTestServerKey is startTestServer with a resume-token key.
func startTestServerKey(t testing.TB, mutate func(*config.Signal), withTLS bool, resumeKey []byte) *testServer {
	t.Helper()
	ts := &testServer{reg: prometheus.NewRegistry()}
	hub, err := NewHub(testConfig(mutate), Options{Logger: testLogger(t), Registerer: ts.reg, ICE: testICE(time.Hour), ResumeKey: resumeKey})
	if err != nil {
		t.Fatal(err)
	}
	ts.hub = hub
	mux := http.NewServeMux()
	hub.Routes(mux)
	srv := httptest.NewUnstartedServer(mux)
	if withTLS {
		srv.StartTLS()
		ts.tls = srv.Client().Transport.(*http.Transport).TLSClientConfig
	} else {
		srv.Start()
	}
	ts.url = srv.URL
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		hub.Shutdown(ctx)
		srv.Close()
	})
	return ts
}

type testClient struct {
	t  testing.TB
	ws *websocket.Conn
}

// msg holds any server message: the fields of every type, by name.
type msg struct {
	Type         string          `json:"type"`
	ID           string          `json:"id"`
	Room         string          `json:"room"`
	Name         string          `json:"name"`
	Resume       string          `json:"resume"`
	ResumeWindow int64           `json:"resumeWindow"`
	Resumed      bool            `json:"resumed"`
	Peers        []peerInfo      `json:"peers"`
	Peer         peerInfo        `json:"peer"`
	ICEServers   []ICEServer     `json:"iceServers"`
	ICEExpires   int64           `json:"iceExpires"`
	History      []chatMsg       `json:"history"`
	From         string          `json:"from"`
	Payload      json.RawMessage `json:"payload"`
	Seq          int64           `json:"seq"`
	Time         int64           `json:"time"`
	Text         string          `json:"text"`
	Code         string          `json:"code"`
	Reason       string          `json:"reason"`
	Fatal        bool            `json:"fatal"`
	After        int64           `json:"after"`
}

func (ts *testServer) wsURL() string { return "ws" + strings.TrimPrefix(ts.url, "http") + "/ws" }

// tryDial dials /ws; on a refused upgrade it returns the HTTP status.
func (ts *testServer) tryDial(t testing.TB, hdr http.Header) (*testClient, int, error) {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second, NetDialContext: ts.dial, TLSClientConfig: ts.tls}
	ws, resp, err := d.Dial(ts.wsURL(), hdr)
	if err != nil {
		code := 0
		if resp != nil {
			code = resp.StatusCode
			resp.Body.Close()
		}
		return nil, code, err
	}
	c := &testClient{t: t, ws: ws}
	t.Cleanup(func() { ws.Close() })
	return c, http.StatusSwitchingProtocols, nil
}

func (ts *testServer) dialWS(t testing.TB) *testClient {
	t.Helper()
	c, _, err := ts.tryDial(t, nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	return c
}

// join dials and joins room as name, and returns the welcome.
func (ts *testServer) join(t testing.TB, room, name string) (*testClient, msg) {
	t.Helper()
	c := ts.dialWS(t)
	c.send(map[string]any{"type": "hello", "version": 1, "room": room, "name": name})
	return c, c.expect("welcome")
}

func (c *testClient) send(v any) {
	c.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		c.t.Fatal(err)
	}
	c.sendRaw(b)
}

func (c *testClient) sendRaw(b []byte) {
	c.t.Helper()
	c.ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := c.ws.WriteMessage(websocket.TextMessage, b); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

// next reads one message; it fails the test on a close or a timeout.
func (c *testClient) next() msg {
	c.t.Helper()
	m, err := c.read(5 * time.Second)
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return m
}

func (c *testClient) read(wait time.Duration) (msg, error) {
	c.ws.SetReadDeadline(time.Now().Add(wait))
	_, b, err := c.ws.ReadMessage()
	if err != nil {
		return msg{}, err
	}
	var m msg
	if err := json.Unmarshal(b, &m); err != nil {
		return msg{}, err
	}
	return m, nil
}

func (c *testClient) expect(typ string) msg {
	c.t.Helper()
	m := c.next()
	if m.Type != typ {
		c.t.Fatalf("got %+v, want a %s", m, typ)
	}
	return m
}

func (c *testClient) expectError(code string, fatal bool) msg {
	c.t.Helper()
	m := c.expect("error")
	if m.Code != code || m.Fatal != fatal {
		c.t.Fatalf("got error %s (fatal %v: %s), want %s (fatal %v)", m.Code, m.Fatal, m.Reason, code, fatal)
	}
	return m
}

// expectClose reads until the socket closes and checks the close code.
func (c *testClient) expectClose(code int) {
	c.t.Helper()
	for {
		_, err := c.read(5 * time.Second)
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) {
			c.t.Fatalf("read: %v, want close %d", err, code)
		}
		if ce.Code != code {
			c.t.Fatalf("close %d %q, want %d", ce.Code, ce.Text, code)
		}
		return
	}
}

// drop breaks the socket without a close frame, as a network failure would.
func (c *testClient) drop() { c.ws.NetConn().Close() }

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// waitFor polls cond: for state that has no message to wait on (gauges
// after a socket ends). It is a bounded wait, not a timing assertion.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// String keeps failure messages short: payloads can be 60 KB.
func (m msg) String() string {
	p := string(m.Payload)
	if len(p) > 40 {
		p = p[:40] + "…"
	}
	return fmt.Sprintf("{%s id=%s code=%s fatal=%v reason=%q from=%s seq=%d text=%.40q payload=%s}", m.Type, m.ID, m.Code, m.Fatal, m.Reason, m.From, m.Seq, m.Text, p)
}

func decodeMsg(t testing.TB, b []byte) msg {
	t.Helper()
	var m msg
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("decode %q: %v", b, err)
	}
	return m
}
