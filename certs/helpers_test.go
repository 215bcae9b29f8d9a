package certs

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/callbox/callbox/internal/testutil"
)

// testLogger writes to the test's output, so a failing test shows what the
// Manager said. Lines from certmagic's own goroutines after the test has
// ended are dropped: the testing package panics on them.
func testLogger(t *testing.T) *slog.Logger {
	w := &testWriter{w: t.Output()}
	t.Cleanup(w.close) // registered first, so it runs after every other cleanup
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type testWriter struct {
	mu sync.Mutex
	w  io.Writer // guarded by mu; nil once the test has ended
}

func (tw *testWriter) Write(p []byte) (int, error) {
	tw.mu.Lock()
	defer tw.mu.Unlock()
	if tw.w == nil {
		return len(p), nil
	}
	return tw.w.Write(p)
}

func (tw *testWriter) close() {
	tw.mu.Lock()
	tw.w = nil
	tw.mu.Unlock()
}

// selfSigned makes a self-signed certificate for name (its own CA, so a
// client can put it in RootCAs) and returns its PEM pair and the parsed certificate.
func selfSigned(t testing.TB, name string) (certPEM, keyPEM []byte, leaf *x509.Certificate) {
	t.Helper()
	c := testutil.SelfSigned(t, 30*24*time.Hour, name)
	certPEM, keyPEM = c.PEM(t)
	return certPEM, keyPEM, c.Leaf
}

// writeFile replaces name atomically, as certbot does, so a poller never
// reads half a file.
func writeFile(t testing.TB, name string, data []byte) {
	t.Helper()
	tmp := name + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, name); err != nil {
		t.Fatal(err)
	}
}

// writePair writes a fresh self-signed pair for name into dir and returns
// the file names and the certificate.
func writePair(t testing.TB, dir, name string) (certFile, keyFile string, leaf *x509.Certificate) {
	t.Helper()
	certPEM, keyPEM, leaf := selfSigned(t, name)
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeFile(t, certFile, certPEM)
	writeFile(t, keyFile, keyPEM)
	return certFile, keyFile, leaf
}

// serveTLS serves a fixed body over HTTPS with m's TLS config on a loopback
// port and returns the address. It stops when the test ends.
func serveTLS(t *testing.T, m *Manager) string {
	t.Helper()
	return serveTLSOn(t, listen(t), m)
}

// listen opens a loopback TCP listener.
func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// closedPort is a loopback port nothing listens on (it was just freed).
func closedPort(t *testing.T) int {
	ln := listen(t)
	ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func port(ln net.Listener) int { return ln.Addr().(*net.TCPAddr).Port }

// serveTLSOn is serveTLS on a given listener.
func serveTLSOn(t *testing.T, ln net.Listener, m *Manager) string {
	t.Helper()
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write([]byte("callbox"))
		}),
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          slog.NewLogLogger(slog.DiscardHandler, slog.LevelError),
	}
	tlsLn := tls.NewListener(ln, m.TLSConfig())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := srv.Serve(tlsLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("https server: %v", err)
		}
	})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		wg.Wait()
	})
	return ln.Addr().String()
}

// servedCert does a TLS handshake with addr, sending serverName as SNI (none
// when empty), and returns the leaf certificate the server presented.
func servedCert(t *testing.T, addr, serverName string) (*x509.Certificate, error) {
	t.Helper()
	d := &tls.Dialer{
		NetDialer: &net.Dialer{Timeout: 5 * time.Second},
		// Only what is presented matters here; verifying is the caller's.
		Config: &tls.Config{ServerName: serverName, InsecureSkipVerify: true},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	certs := conn.(*tls.Conn).ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return nil, errors.New("no certificate presented")
	}
	return certs[0], nil
}

// waitFor polls cond every 20 ms until it is true or d has passed.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func sameCert(a, b *x509.Certificate) bool {
	return a != nil && b != nil && bytes.Equal(a.Raw, b.Raw)
}
