package app

import (
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// HTTPS and TURN over TLS on their own ports: the page and the WebSocket
// over HTTPS, the port-80 redirect, and a turns: allocation with the
// credentials the hub handed out over wss.
func TestHTTPSAndTURNOverTLS(t *testing.T) {
	cfg, client := tlsConfig(t, false)
	a, cancel, done := startApp(t, cfg)
	hc := httpsClient(client)

	t.Run("page over https", func(t *testing.T) {
		resp, body := get(t, hc, a.HTTPSURL()+"/")
		if resp.StatusCode != 200 || !strings.Contains(body, "<html") {
			t.Fatalf("GET /: %d", resp.StatusCode)
		}
		if resp.ProtoMajor != 2 {
			t.Errorf("served %s, want HTTP/2 on the dedicated HTTPS port", resp.Proto)
		}
	})
	t.Run("port 80 redirects", func(t *testing.T) {
		resp, _ := get(t, hc, a.RedirectURL()+"/r/standup?x=1")
		if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusPermanentRedirect || loc != "https://127.0.0.1/r/standup?x=1" {
			t.Fatalf("redirect: %d Location %q", resp.StatusCode, loc)
		}
	})
	t.Run("api info", func(t *testing.T) {
		_, body := get(t, hc, a.HTTPSURL()+"/api/info")
		if !strings.Contains(body, `"tls":true`) || !strings.Contains(body, "turns:"+testHost) {
			t.Fatalf("/api/info: %s", body)
		}
	})
	var servers []iceServer
	t.Run("websocket over https", func(t *testing.T) {
		_, servers = joinWSS(t, a.HTTPSURL(), client, "tls-room")
	})
	t.Run("turns allocation on the dedicated port", func(t *testing.T) {
		port := strconv.Itoa(a.TURN().TLSAddr().Port)
		_, user, pass := turnsServer(t, servers, port)
		allocateTLS(t, a.TURN().TLSAddr().String(), client, user, pass)
	})

	// Graceful stop within the bound, with a wss client connected.
	joinWSS(t, a.HTTPSURL(), client, "stop-room")
	start := time.Now()
	cancel()
	bound := cfg.Signal.ShutdownTimeout + 2*time.Second
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
		t.Logf("stopped in %s (bound %s)", time.Since(start).Round(time.Millisecond), bound)
	case <-time.After(bound + time.Second):
		t.Fatalf("Run did not return within %s", bound)
	}
	if c, err := net.DialTimeout("tcp", a.httpsLn.Addr().String(), time.Second); err == nil {
		c.Close()
		t.Error("HTTPS port still accepts after shutdown")
	}
}

// One port for everything: an HTTPS GET, a WebSocket join and a TURN over
// TLS allocation, all on the HTTPS listener.
func TestSinglePort(t *testing.T) {
	cfg, client := tlsConfig(t, true)
	cfg.TURN.TLSListen = "" // only the shared port
	a, _, _ := startApp(t, cfg)
	hc := httpsClient(client)
	port := strconv.Itoa(a.httpsLn.Addr().(*net.TCPAddr).Port)

	resp, body := get(t, hc, a.HTTPSURL()+"/")
	if resp.StatusCode != 200 || !strings.Contains(body, "<html") {
		t.Fatalf("GET /: %d", resp.StatusCode)
	}
	_, servers := joinWSS(t, a.HTTPSURL(), client, "one-port")
	uri, user, pass := turnsServer(t, servers, port)
	if want := "turns:" + testHost + ":" + port + "?transport=tcp"; uri != want {
		t.Errorf("turns URI %q, want %q", uri, want)
	}
	allocateTLS(t, a.httpsLn.Addr().String(), client, user, pass)
	// The mux counts a connection once its server has taken it, which can
	// be after the server has answered on it.
	for deadline := time.Now().Add(5 * time.Second); a.mux.Count("turn") != 1 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if n := a.mux.Count("turn"); n != 1 {
		t.Errorf("mux counted %d TURN connections, want 1", n)
	}
}

// With TLS off, the port-80 listener serves the app itself (a LAN or a
// demo behind a proxy that terminates TLS).
func TestRedirectListenWithoutTLSServesApp(t *testing.T) {
	cfg := testConfig()
	cfg.HTTP.RedirectListen = "127.0.0.1:0"
	a, _, _ := startApp(t, cfg)
	resp, body := get(t, http.DefaultClient, a.RedirectURL()+"/")
	if resp.StatusCode != 200 || !strings.Contains(body, "<html") {
		t.Fatalf("GET / on the port-80 listener: %d", resp.StatusCode)
	}
}
