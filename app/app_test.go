package app

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/turn/v4"

	"github.com/callbox/callbox/config"
)

func testConfig() config.Config {
	cfg := config.Default()
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.TURN.Listen = "127.0.0.1:0"
	cfg.TURN.AllowLoopbackPeers = true
	cfg.Metrics.Listen = "127.0.0.1:0"
	return cfg
}

func startApp(t *testing.T, cfg config.Config) (*App, context.CancelFunc, <-chan error) {
	t.Helper()
	a, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	// done is closed when Run returns, so both the test and the cleanup may wait on it.
	done := make(chan error, 1)
	go func() {
		done <- a.Run(ctx)
		close(done)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Error("app did not stop within 15s")
		}
	})
	return a, cancel, done
}

// The assembled server: a peer joins over the WebSocket, gets ICE servers
// from the hub, and those credentials allocate a relay on callbox's TURN.
func TestJoinThenAllocateWithHandedOutCredentials(t *testing.T) {
	a, _, _ := startApp(t, testConfig())

	wsURL := strings.Replace(a.HTTPURL(), "http", "ws", 1) + "/ws"
	hdr := http.Header{"Origin": {a.HTTPURL()}}
	ws, resp, err := websocket.DefaultDialer.Dial(wsURL, hdr)
	if err != nil {
		t.Fatalf("dial %s: %v (%v)", wsURL, err, resp)
	}
	defer ws.Close()
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	if err := ws.WriteJSON(map[string]any{"type": "hello", "version": 1, "room": "app-test", "name": "Ada"}); err != nil {
		t.Fatal(err)
	}
	var welcome struct {
		Type       string `json:"type"`
		ID         string `json:"id"`
		IceServers []struct {
			URLs       []string `json:"urls"`
			Username   string   `json:"username"`
			Credential string   `json:"credential"`
		} `json:"iceServers"`
	}
	if err := ws.ReadJSON(&welcome); err != nil || welcome.Type != "welcome" {
		t.Fatalf("welcome: %+v, %v", welcome, err)
	}
	var stunURL, turnUser, turnPass string
	for _, s := range welcome.IceServers {
		for _, u := range s.URLs {
			if strings.HasPrefix(u, "stun:") {
				stunURL = u
			}
			if strings.HasPrefix(u, "turn:") {
				turnUser, turnPass = s.Username, s.Credential
			}
		}
	}
	if stunURL == "" || turnUser == "" {
		t.Fatalf("welcome lacks stun: or turn: servers: %+v", welcome.IceServers)
	}
	if !strings.HasSuffix(turnUser, ":"+welcome.ID) {
		t.Errorf("TURN username %q is not minted for peer %q", turnUser, welcome.ID)
	}
	if want := "stun:" + a.TURN().UDPAddr().String(); stunURL != want {
		t.Errorf("stun URL %q, want %q", stunURL, want)
	}

	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: a.TURN().UDPAddr().String(),
		TURNServerAddr: a.TURN().UDPAddr().String(),
		Conn:           conn,
		Username:       turnUser,
		Password:       turnPass,
		Realm:          config.Default().TURN.Realm,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if err := client.Listen(); err != nil {
		t.Fatal(err)
	}
	relay, err := client.Allocate()
	if err != nil {
		t.Fatalf("allocate with the hub's credentials: %v", err)
	}
	relay.Close()
}

func TestHealthAndMetricsAndPages(t *testing.T) {
	a, _, _ := startApp(t, testConfig())
	for _, tt := range []struct{ url, want string }{
		{a.HTTPURL() + "/healthz", `"status":"ok"`},
		{a.HTTPURL() + "/", "<html"},
		{"http://" + a.metricsLn.Addr().String() + "/metrics", "callbox_turn_"},
		{"http://" + a.metricsLn.Addr().String() + "/metrics", "callbox_signal_"},
	} {
		resp, err := http.Get(tt.url)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), tt.want) {
			t.Errorf("GET %s: %d, body lacks %q", tt.url, resp.StatusCode, tt.want)
		}
	}
}

// Cancelling Run tells connected peers to reconnect and closes everything.
func TestShutdownTellsPeersToReconnect(t *testing.T) {
	a, cancel, done := startApp(t, testConfig())
	wsURL := strings.Replace(a.HTTPURL(), "http", "ws", 1) + "/ws"
	ws, _, err := websocket.DefaultDialer.Dial(wsURL, http.Header{"Origin": {a.HTTPURL()}})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	ws.WriteJSON(map[string]any{"type": "hello", "version": 1, "room": "bye", "name": "Ada"})
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	var msg map[string]any
	if err := ws.ReadJSON(&msg); err != nil || msg["type"] != "welcome" {
		t.Fatalf("welcome: %v %v", msg, err)
	}
	cancel()
	sawReconnect := false
	for {
		msg = nil
		err := ws.ReadJSON(&msg)
		if err == nil {
			sawReconnect = sawReconnect || msg["type"] == "reconnect"
			continue
		}
		if !sawReconnect {
			t.Errorf("socket ended (%v) without a reconnect message", err)
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.CloseServiceRestart {
			t.Errorf("socket ended with %v, want close code %d", err, websocket.CloseServiceRestart)
		}
		break
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run returned %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return")
	}
	if _, err := http.Get(a.HTTPURL() + "/healthz"); err == nil {
		t.Error("HTTP still answers after shutdown")
	}
}

// A TURN port already in use makes New fail with an error naming it, and
// the HTTP listener New had already bound is released.
func TestNewFailsCleanlyWhenTURNPortIsTaken(t *testing.T) {
	taken, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	web, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	webAddr := web.Addr().String()
	web.Close()

	cfg := testConfig()
	cfg.HTTP.Listen = webAddr
	cfg.TURN.Listen = taken.LocalAddr().String()
	cfg.TURN.UDPSockets = 1
	a, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil {
		a.Run(canceled())
		t.Fatal("New succeeded on a TURN port in use")
	}
	if !strings.Contains(err.Error(), cfg.TURN.Listen) {
		t.Errorf("error %q does not name %s", err, cfg.TURN.Listen)
	}
	ln, err := net.Listen("tcp", webAddr)
	if err != nil {
		t.Fatalf("HTTP listener not released after New failed: %v", err)
	}
	ln.Close()
}

func canceled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}
