package portmux

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/callbox/callbox/internal/testutil"
)

func TestClassify(t *testing.T) {
	stun := make([]byte, 8)
	binary.BigEndian.PutUint16(stun[0:2], 0x0001) // Binding request
	copy(stun[4:], magicCookie[:])
	channelData := []byte{0x40, 0x00, 0x00, 0x04, 0x21, 0x12, 0xA4, 0x42}
	for _, tc := range []struct {
		name  string
		first []byte
		want  string
	}{
		{"stun binding", stun, KindTURN},
		{"get", []byte("GET / HTTP/1.1"), KindHTTP},
		{"options", []byte("OPTIONS * HTTP/1.1"), KindHTTP},
		{"h2 preface", []byte("PRI * HTTP/2.0"), KindHTTP},
		{"channel data", channelData, KindBad},
		{"stun without cookie", []byte{0, 1, 0, 0, 1, 2, 3, 4}, KindBad},
		{"lowercase method", []byte("get / HTTP/1.1"), KindBad},
		{"short method", []byte("GE / HTTP"), KindBad},
		{"no space", []byte("ABCDEFGH"), KindBad},
		{"tls in tls", []byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01}, KindBad},
		{"too short", []byte("GET "), KindBad},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Classify(tc.first); got != tc.want {
				t.Errorf("Classify(%q) = %s, want %s", tc.first, got, tc.want)
			}
		})
	}
}

func FuzzClassify(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1"))
	f.Add([]byte{0, 1, 0, 0, 0x21, 0x12, 0xA4, 0x42})
	f.Add([]byte{0x16, 0x03, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		switch k := Classify(b); k {
		case KindTURN:
			if len(b) < 8 || b[0]&0xC0 != 0 || b[4] != 0x21 {
				t.Fatalf("%q classified STUN", b)
			}
		case KindHTTP, KindBad:
		default:
			t.Fatalf("unknown kind %q", k)
		}
	})
}

func testCert(t testing.TB) (server, client *tls.Config) {
	t.Helper()
	c := testutil.SelfSigned(t, time.Hour, "mux.test")
	return &tls.Config{
			Certificates: []tls.Certificate{c.TLSCertificate()},
			NextProtos:   []string{"h2", "http/1.1", acmeTLS1},
		},
		c.ClientConfig("mux.test")
}

// startMux runs a Mux on 127.0.0.1:0 with an HTTP server on HTTP() that
// reports whether it saw TLS, and an echo server on TURN().
func startMux(t *testing.T) (*Mux, *tls.Config) { return startMuxB(t) }

func startMuxB(t testing.TB) (*Mux, *tls.Config) {
	return startMuxTimeouts(t, handshakeTimeout, peekTimeout)
}

func startMuxTimeouts(t testing.TB, handshake, peek time.Duration) (*Mux, *tls.Config) {
	t.Helper()
	serverTLS, clientTLS := testCert(t)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(ln, serverTLS, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	m.handshakeTimeout, m.peekTimeout = handshake, peek
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil {
			http.Error(w, "no TLS state", http.StatusInternalServerError)
			return
		}
		io.WriteString(w, "hello over "+r.Proto)
	})
	srv := &http.Server{Handler: WithTLSState(mux), ConnContext: ConnContext, ReadHeaderTimeout: 5 * time.Second}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); m.Run(ctx) }()
	go func() { defer wg.Done(); srv.Serve(m.HTTP()) }()
	go func() {
		// TURN stand-in: echoes whatever the connection sends.
		defer wg.Done()
		for {
			c, err := m.TURN().Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() { defer wg.Done(); defer c.Close(); io.Copy(c, c) }()
		}
	}()
	t.Cleanup(func() {
		cancel()
		m.TURN().Close()
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		srv.Shutdown(sctx)
		wg.Wait()
	})
	return m, clientTLS
}

func TestMux(t *testing.T) {
	m, clientTLS := startMux(t)
	addr := m.Addr().String()

	t.Run("https", func(t *testing.T) {
		tr := &http.Transport{TLSClientConfig: clientTLS, ForceAttemptHTTP2: true}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get("https://" + addr + "/")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		// h2 is dropped from ALPN: net/http can serve only HTTP/1.1 here.
		if resp.StatusCode != 200 || string(body) != "hello over HTTP/1.1" {
			t.Fatalf("GET: %d %q", resp.StatusCode, body)
		}
	})
	t.Run("stun", func(t *testing.T) {
		c, err := tls.Dial("tcp", addr, clientTLS)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		msg := make([]byte, 20)
		binary.BigEndian.PutUint16(msg[0:2], 0x0001)
		copy(msg[4:8], magicCookie[:])
		copy(msg[8:], "transaction!")
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(c, got); err != nil {
			t.Fatal(err)
		}
		if string(got) != string(msg) {
			t.Fatalf("echo %x, want %x (first bytes must reach the TURN side intact)", got, msg)
		}
	})
	t.Run("bad first bytes", func(t *testing.T) {
		before := m.Count(KindBad)
		c, err := tls.Dial("tcp", addr, clientTLS)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte("\x16\x03\x01garbage"))
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatal("read succeeded on a connection that should be closed")
		}
		if m.Count(KindBad) != before+1 {
			t.Fatalf("bad count %d, want %d", m.Count(KindBad), before+1)
		}
	})
	t.Run("acme-tls/1 ends after the handshake", func(t *testing.T) {
		cc := clientTLS.Clone()
		cc.NextProtos = []string{acmeTLS1}
		c, err := tls.Dial("tcp", addr, cc)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatal("read succeeded")
		}
		if m.Count(KindACME) < 1 {
			t.Fatal("not counted as an ACME challenge")
		}
	})
	t.Run("handshake failure", func(t *testing.T) {
		before := m.Count(KindHandshake)
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("GET / HTTP/1.1\r\n\r\n")) // plain HTTP on the TLS port
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.ReadAll(c)
		c.Close()
		deadline := time.Now().Add(5 * time.Second)
		for m.Count(KindHandshake) == before && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if m.Count(KindHandshake) != before+1 {
			t.Fatal("plain HTTP not counted as a failed handshake")
		}
	})
}

// Silent clients are closed when the handshake or the peek times out, so
// they hold a socket only that long.
func TestMuxTimeouts(t *testing.T) {
	const bound = 300 * time.Millisecond
	m, clientTLS := startMuxTimeouts(t, bound, bound)
	addr := m.Addr().String()
	for _, tc := range []struct {
		name string
		dial func() (net.Conn, error)
		kind string
	}{
		{"silent before the handshake", func() (net.Conn, error) { return net.Dial("tcp", addr) }, KindHandshake},
		{"silent after the handshake", func() (net.Conn, error) { return tls.Dial("tcp", addr, clientTLS) }, KindBad},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := m.Count(tc.kind)
			c, err := tc.dial()
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			start := time.Now()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Read(make([]byte, 1)); err == nil {
				t.Fatal("read succeeded")
			}
			if d := time.Since(start); d > bound+time.Second {
				t.Errorf("closed after %s, bound %s", d, bound)
			}
			// The handshake's context closes the socket before route
			// counts it: the count may trail the client's EOF a little.
			for deadline := time.Now().Add(5 * time.Second); m.Count(tc.kind) != before+1 && time.Now().Before(deadline); {
				time.Sleep(10 * time.Millisecond)
			}
			if m.Count(tc.kind) != before+1 {
				t.Errorf("%s count %d, want %d", tc.kind, m.Count(tc.kind), before+1)
			}
		})
	}
}
