package turnserver

import (
	"crypto/tls"
	"net"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/callbox/callbox/internal/testutil"

	"github.com/pion/turn/v4"
)

// testTLS is a server config with a fresh self-signed certificate for
// "turn.test", and a client config trusting it.
func testTLS(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	c := testutil.SelfSigned(t, time.Hour, "turn.test")
	return &tls.Config{Certificates: []tls.Certificate{c.TLSCertificate()}, NextProtos: []string{"h2", "http/1.1"}},
		c.ClientConfig("turn.test")
}

// tlsTurnClient is pion's TURN client over TLS to addr (RFC 5766 framing
// inside the TLS stream, as browsers do for turns:).
func tlsTurnClient(t *testing.T, addr string, clientTLS *tls.Config, username, password string) *turn.Client {
	t.Helper()
	c, err := tls.Dial("tcp", addr, clientTLS)
	if err != nil {
		t.Fatalf("tls dial %s: %v", addr, err)
	}
	return startClient(t, turn.NewSTUNConn(c), addr, username, password, "callbox")
}

// relayOnce allocates and sends one packet to peer through the relay.
func relayOnce(t *testing.T, client *turn.Client, peer *udpPeer) {
	t.Helper()
	relay, err := client.Allocate()
	if err != nil {
		t.Fatalf("allocate: %v", err)
	}
	defer relay.Close()
	before, _ := peer.count()
	if _, err := relay.WriteTo([]byte("over tls"), peer.addr()); err != nil {
		t.Fatalf("relay write: %v", err)
	}
	eventually(t, "packet at the peer", func() bool { n, _ := peer.count(); return n > before })
}

func TestTURNOverTLS(t *testing.T) {
	serverTLS, clientTLS := testTLS(t)
	// The shared port's listener stands in for portmux: it hands over
	// TLS conns, as the splitter does after the handshake.
	sharedTCP, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sharedPort := sharedTCP.Addr().(*net.TCPAddr).Port
	cfg := testConfig()
	cfg.TLSListen = "127.0.0.1:0"
	cfg.Secrets = []string{testSecret, testSecret2}
	s, err := New(cfg, Options{
		Logger: discardLogger(), TLS: serverTLS, TLSHost: "turn.test",
		Shared: tls.NewListener(sharedTCP, serverTLS), SharedPort: sharedPort,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}()

	uris := s.TURNURIs()
	for _, want := range []string{
		"turns:turn.test:" + strconv.Itoa(s.TLSAddr().Port) + "?transport=tcp",
		"turns:turn.test:" + strconv.Itoa(sharedPort) + "?transport=tcp",
	} {
		if !slices.Contains(uris, want) {
			t.Errorf("TURNURIs() = %v, want %s among them", uris, want)
		}
	}

	peer := startPeer(t, false)
	for _, tc := range []struct {
		name, addr, secret string
	}{
		{"dedicated port", s.TLSAddr().String(), testSecret},
		{"dedicated port, second secret", s.TLSAddr().String(), testSecret2},
		{"shared port", sharedTCP.Addr().String(), testSecret},
	} {
		t.Run(tc.name, func(t *testing.T) {
			user, pass := MintCredentials(tc.secret, "alice", time.Now().Add(time.Hour))
			relayOnce(t, tlsTurnClient(t, tc.addr, clientTLS, user, pass), peer)
		})
	}
	t.Run("wrong secret refused", func(t *testing.T) {
		user, pass := MintCredentials("not-a-configured-secret", "mallory", time.Now().Add(time.Hour))
		c := tlsTurnClient(t, s.TLSAddr().String(), clientTLS, user, pass)
		if relay, err := c.Allocate(); err == nil {
			relay.Close()
			t.Fatal("allocation with an unknown secret succeeded")
		}
	})
	t.Run("no ALPN on the dedicated port", func(t *testing.T) {
		cc := clientTLS.Clone()
		cc.NextProtos = []string{"http/1.1"}
		c, err := tls.Dial("tcp", s.TLSAddr().String(), cc)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if p := c.ConnectionState().NegotiatedProtocol; p != "" {
			t.Errorf("negotiated %q on the TURN port", p)
		}
	})
}

func TestTLSListenNeedsCertificate(t *testing.T) {
	cfg := testConfig()
	cfg.TLSListen = "127.0.0.1:0"
	if s, err := New(cfg, Options{Logger: discardLogger()}); err == nil {
		s.Close()
		t.Fatal("New accepted turn.tls_listen without a certificate")
	}
}
