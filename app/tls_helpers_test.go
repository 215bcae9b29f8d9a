package app

import (
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/callbox/callbox/internal/testutil"

	"github.com/gorilla/websocket"
	"github.com/pion/turn/v4"

	"github.com/callbox/callbox/config"
)

// testHost is the name on the test certificate; clients dial 127.0.0.1
// and verify this name, as a browser would verify the domain.
const testHost = "callbox.test"

// certFiles writes a self-signed certificate for testHost and 127.0.0.1
// (certs' files mode reads it) and returns a client config trusting it.
func certFiles(t *testing.T) (certFile, keyFile string, client *tls.Config) {
	t.Helper()
	c := testutil.SelfSigned(t, 24*time.Hour, testHost, "127.0.0.1")
	certFile, keyFile = c.WriteFiles(t)
	return certFile, keyFile, c.ClientConfig(testHost)
}

// tlsConfig is testConfig with HTTPS, the port-80 listener and TURN over
// TLS on, all on loopback ports the kernel picks.
func tlsConfig(t *testing.T, shared bool) (config.Config, *tls.Config) {
	cfg := testConfig()
	certFile, keyFile, client := certFiles(t)
	cfg.TLS.CertFile, cfg.TLS.KeyFile = certFile, keyFile
	cfg.HTTP.HTTPSListen = "127.0.0.1:0"
	cfg.HTTP.RedirectListen = "127.0.0.1:0"
	cfg.TURN.TLSListen = "127.0.0.1:0"
	cfg.TURN.TLSOnHTTPS = shared
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg, client
}

func httpsClient(client *tls.Config) *http.Client {
	return &http.Client{
		Transport: &http.Transport{TLSClientConfig: client.Clone(), ForceAttemptHTTP2: true},
		Timeout:   10 * time.Second,
		// The redirect test looks at the 308 itself.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

func get(t *testing.T, c *http.Client, url string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

type iceServer struct {
	URLs       []string `json:"urls"`
	Username   string   `json:"username"`
	Credential string   `json:"credential"`
}

// joinWSS joins a room over wss:// at base and returns the socket and the
// ICE servers of the welcome.
func joinWSS(t *testing.T, base string, client *tls.Config, room string) (*websocket.Conn, []iceServer) {
	t.Helper()
	d := websocket.Dialer{TLSClientConfig: client.Clone(), HandshakeTimeout: 10 * time.Second}
	wsURL := "wss" + strings.TrimPrefix(base, "https") + "/ws"
	ws, resp, err := d.Dial(wsURL, http.Header{"Origin": {base}})
	if err != nil {
		t.Fatalf("dial %s: %v (%v)", wsURL, err, resp)
	}
	t.Cleanup(func() { ws.Close() })
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	if err := ws.WriteJSON(map[string]any{"type": "hello", "version": 1, "room": room, "name": "Ada"}); err != nil {
		t.Fatal(err)
	}
	var welcome struct {
		Type       string      `json:"type"`
		IceServers []iceServer `json:"iceServers"`
	}
	if err := ws.ReadJSON(&welcome); err != nil || welcome.Type != "welcome" {
		t.Fatalf("welcome over %s: %+v, %v", wsURL, welcome, err)
	}
	return ws, welcome.IceServers
}

// turnsServer finds the turns: URI whose port is port and its credentials.
func turnsServer(t *testing.T, servers []iceServer, port string) (uri, user, pass string) {
	t.Helper()
	for _, s := range servers {
		for _, u := range s.URLs {
			if strings.HasPrefix(u, "turns:"+testHost+":"+port+"?") {
				return u, s.Username, s.Credential
			}
		}
	}
	t.Fatalf("no turns:%s:%s URI among %+v", testHost, port, servers)
	return "", "", ""
}

// allocateTLS allocates a relay over TURN over TLS at addr, verifying the
// certificate as a browser would, and returns the relay's address.
func allocateTLS(t *testing.T, addr string, client *tls.Config, user, pass string) net.Addr {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, client)
	if err != nil {
		t.Fatalf("tls dial %s: %v", addr, err)
	}
	conn := turn.NewSTUNConn(c)
	defer conn.Close()
	tc, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: addr,
		TURNServerAddr: addr,
		Conn:           conn,
		Username:       user,
		Password:       pass,
		Realm:          config.Default().TURN.Realm,
		RTO:            500 * time.Millisecond,
		LoggerFactory:  nil,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	if err := tc.Listen(); err != nil {
		t.Fatal(err)
	}
	relay, err := tc.Allocate()
	if err != nil {
		t.Fatalf("allocate over TLS at %s: %v", addr, err)
	}
	defer relay.Close()
	return relay.LocalAddr()
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// tlsClient runs a client handshake on raw (a conn dialled elsewhere).
func tlsClient(raw net.Conn, cfg *tls.Config) *tls.Conn {
	return tls.Client(raw, cfg.Clone())
}
