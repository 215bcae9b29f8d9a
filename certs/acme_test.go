package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/callbox/callbox/internal/testutil"

	"github.com/caddyserver/certmagic"
	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"
	"github.com/miekg/dns"

	"github.com/callbox/callbox/config"
)

// pebble is Let's Encrypt's test ACME server, run in-process on loopback.
type pebble struct {
	dirURL   string // ACME directory
	rootFile string // PEM of the directory's own HTTPS certificate (acme_ca_root)
	ca       *ca.CAImpl
	srv      *httptest.Server
}

// issuingRoots is the pool a browser would need: the root that signs the
// certificates pebble issues (made fresh at each start).
func (p *pebble) issuingRoots() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(p.ca.GetRootCert(0).Cert)
	return pool
}

// startPebble runs pebble's CA, VA and web front end. Its VA validates
// HTTP-01 on httpPort and TLS-ALPN-01 on tlsPort of whatever resolver says
// (the test's DNS server, which says 127.0.0.1), and certificates live
// validity seconds.
func startPebble(t *testing.T, httpPort, tlsPort int, resolver string, validity uint64) *pebble {
	t.Helper()
	// Read by pebble's constructors: no random 0-5 s sleep before each
	// validation, no 5% of nonces refused, no reuse of a valid
	// authorization (so that a renewal is validated again).
	t.Setenv("PEBBLE_VA_NOSLEEP", "1")
	t.Setenv("PEBBLE_WFE_NONCEREJECT", "0")
	t.Setenv("PEBBLE_AUTHZREUSE", "0")
	logger := log.New(io.Discard, "", 0)
	if testing.Verbose() {
		logger = log.New(&testWriter{w: t.Output()}, "pebble ", 0)
	}
	store := db.NewMemoryStore()
	authority := ca.New(logger, store, "", "ecdsa", 0, 1, map[string]ca.Profile{
		"default": {Description: "short-lived, for renewal tests", ValidityPeriod: validity},
	})
	validator := va.New(logger, httpPort, tlsPort, false, resolver, store)
	front := wfe.New(logger, store, validator, authority, []string{"pebble.letsencrypt.org"}, false, false, 1, 1)
	srv := httptest.NewUnstartedServer(front.Handler())
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)

	rootFile := filepath.Join(t.TempDir(), "pebble-wfe.pem")
	if err := os.WriteFile(rootFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return &pebble{dirURL: srv.URL + wfe.DirectoryPath, rootFile: rootFile, ca: authority, srv: srv}
}

// startDNS answers every A question with 127.0.0.1 and every other one with
// no records, over TCP (pebble's resolver client uses TCP). It returns the
// address and stops when the test ends.
func startDNS(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{Listener: ln, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		for _, question := range q.Question {
			if question.Qtype == dns.TypeA {
				m.Answer = append(m.Answer, &dns.A{
					Hdr: dns.RR_Header{Name: question.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
					A:   net.IPv4(127, 0, 0, 1),
				})
			}
		}
		_ = w.WriteMsg(m)
	})}
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := srv.ActivateAndServe(); err != nil && !errors.Is(err, net.ErrClosed) {
			t.Errorf("dns server: %v", err)
		}
	})
	t.Cleanup(func() {
		_ = srv.Shutdown()
		wg.Wait()
	})
	return ln.Addr().String()
}

// serveHTTP serves h on ln (the test's port 80) until the test ends.
func serveHTTP(t *testing.T, ln net.Listener, h http.Handler) {
	t.Helper()
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("port-80 server: %v", err)
		}
	})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		wg.Wait()
	})
}

// runManager runs m until the test ends and checks that Run returns nil
// promptly when its context does.
func runManager(t *testing.T, m *Manager) {
	t.Helper()
	testutil.Run(t, "Run", 10*time.Second, m.Run)
}

// acmeSetup makes a Manager for domain against peb, serves its HTTPHandler
// on port80 and its TLSConfig on port443 (either may be nil: not served),
// and returns it with the HTTPS address.
func acmeSetup(t *testing.T, peb *pebble, domain string, port80, port443 net.Listener, storage string) (*Manager, config.TLS, string) {
	t.Helper()
	cfg := config.TLS{
		ACMEDomains: []string{domain},
		ACMEEmail:   "ops@callbox.test",
		ACMECA:      peb.dirURL,
		ACMECARoot:  peb.rootFile,
		ACMEStorage: storage,
	}
	m, err := New(cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	m.acme.retryMin, m.acme.retryMax = 100*time.Millisecond, time.Second
	if port80 != nil {
		serveHTTP(t, port80, m.HTTPHandler(nil))
	}
	addr := ""
	if port443 != nil {
		addr = serveTLSOn(t, port443, m)
	}
	return m, cfg, addr
}

// TestACME obtains a certificate from pebble over HTTP-01 (answered by
// HTTPHandler) or TLS-ALPN-01 (answered in TLSConfig's handshake), serves it
// with TLSConfig to a client that trusts only pebble's root, and lets
// certmagic renew it by itself. Then, with the CA gone, a second Manager on
// the same storage still serves the stored certificate.
func TestACME(t *testing.T) {
	// Not parallel: t.Setenv configures pebble.
	const domain = "call.callbox.test"
	port80, port443 := listen(t), listen(t)
	// 20 s certificates: certmagic renews them when pebble's renewal window
	// (ARI) opens, or at 3/4 of their life, checked every 250 ms.
	peb := startPebble(t, port(port80), port(port443), startDNS(t), 20)
	m, cfg, addr := acmeSetup(t, peb, domain, port80, port443, t.TempDir())
	m.acme.renewCheck, m.acme.renewRatio = 250*time.Millisecond, 0.75
	storage := cfg.ACMEStorage

	// Before Run: no certificate, the handshake fails.
	if _, err := servedCert(t, addr, domain); err == nil {
		t.Fatal("a certificate was served before Run")
	}
	runManager(t, m)

	roots := peb.issuingRoots()
	var first *x509.Certificate
	waitFor(t, 30*time.Second, "the ACME certificate to be served", func() bool {
		first, _ = servedCert(t, addr, domain)
		return first != nil
	})
	verifyHTTPS(t, addr, domain, roots)
	t.Logf("obtained serial %x, valid %s to %s", first.SerialNumber, first.NotBefore.Format(time.TimeOnly), first.NotAfter.Format(time.TimeOnly))
	// Clients without SNI (Firefox on turns:) get it too.
	if got, err := servedCert(t, addr, ""); err != nil || !sameCert(got, first) {
		t.Errorf("without SNI: %v; want the domain's certificate", err)
	}

	var renewed *x509.Certificate
	waitFor(t, 30*time.Second, "certmagic to renew the certificate", func() bool {
		got, _ := servedCert(t, addr, domain)
		if got != nil && !sameCert(got, first) {
			renewed = got
		}
		return renewed != nil
	})
	verifyHTTPS(t, addr, domain, roots)
	t.Logf("renewed: serial %x, valid %s to %s", renewed.SerialNumber, renewed.NotBefore.Format(time.TimeOnly), renewed.NotAfter.Format(time.TimeOnly))

	// What is stored where (docs/tls.md describes it).
	key := certmagic.StorageKeys.Safe(issuerKey(peb.dirURL)) // "127.0.0.1-PORT-dir"
	for _, rel := range []string{
		"acme/" + key + "/users/ops@callbox.test/account.key",
		"certificates/" + key + "/" + domain + "/" + domain + ".crt",
		"certificates/" + key + "/" + domain + "/" + domain + ".key",
		"certificates/" + key + "/" + domain + "/" + domain + ".json",
	} {
		if _, err := os.Stat(filepath.Join(storage, rel)); err != nil {
			t.Errorf("storage: %v", err)
		}
	}

	// A restart while the CA is unreachable serves what is in storage.
	peb.srv.Close()
	m2, _, addr2 := acmeSetup(t, peb, domain, nil, listen(t), storage)
	runManager(t, m2)
	waitFor(t, 30*time.Second, "the restarted manager to serve the stored certificate", func() bool {
		got, _ := servedCert(t, addr2, domain)
		return got != nil
	})
	verifyHTTPS(t, addr2, domain, roots)
}

// TestACMEChallenge obtains a certificate with only one of the two
// challenges possible: port 80 closed leaves TLS-ALPN-01 on 443, and the
// other way round.
func TestACMEChallenge(t *testing.T) {
	tests := []struct {
		name              string
		serve80, serve443 bool
	}{
		{"http-01 only", true, false},
		{"tls-alpn-01 only", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			const domain = "challenge.callbox.test"
			port80, port443 := listen(t), listen(t)
			peb := startPebble(t, port(port80), port(port443), startDNS(t), 3600)
			var ln80, ln443 net.Listener
			if tt.serve80 {
				ln80 = port80
			} else {
				port80.Close() // connection refused
			}
			if tt.serve443 {
				ln443 = port443
			} else {
				port443.Close()
			}
			m, _, _ := acmeSetup(t, peb, domain, ln80, ln443, t.TempDir())
			// The certificate is checked on a listener of its own, so that
			// the 443 pebble validates against can stay closed.
			addr := serveTLS(t, m)
			runManager(t, m)
			waitFor(t, 30*time.Second, "the certificate to be served", func() bool {
				got, _ := servedCert(t, addr, domain)
				return got != nil
			})
			verifyHTTPS(t, addr, domain, peb.issuingRoots())
		})
	}
}

// verifyHTTPS does a GET as a browser would: chain to roots, name checked.
func verifyHTTPS(t *testing.T, addr, domain string, roots *x509.CertPool) {
	t.Helper()
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots},
		// The name resolves to the test server, as DNS would.
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}
	defer tr.CloseIdleConnections()
	_, port, _ := net.SplitHostPort(addr)
	resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get("https://" + net.JoinHostPort(domain, port) + "/")
	if err != nil {
		t.Fatalf("verified GET https://%s: %v", domain, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "callbox" {
		t.Errorf("body %q", body)
	}
}

// TestACMERetry: while the CA cannot validate (nothing answers on the
// ports pebble is told), Run keeps retrying and logs why, and
// returns promptly when its context ends.
func TestACMERetry(t *testing.T) {
	peb := startPebble(t, closedPort(t), closedPort(t), startDNS(t), 60)
	var logs testutil.SyncBuffer
	m, err := New(config.TLS{
		ACMEDomains: []string{"fails.callbox.test"},
		ACMECA:      peb.dirURL,
		ACMECARoot:  peb.rootFile,
		ACMEStorage: t.TempDir(),
	}, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	m.acme.retryMin, m.acme.retryMax = 50*time.Millisecond, 100*time.Millisecond
	runManager(t, m)
	want := "cannot obtain or renew certificate"
	waitFor(t, 30*time.Second, "two failed attempts to be logged", func() bool {
		return countLines(logs.String(), want) >= 2
	})
	if _, err := servedCert(t, serveTLS(t, m), "fails.callbox.test"); err == nil {
		t.Error("a certificate was served although none could be obtained")
	}
}

func countLines(s, substr string) int {
	n := 0
	for line := range strings.Lines(s) {
		if strings.Contains(line, substr) {
			n++
		}
	}
	return n
}
