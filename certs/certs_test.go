package certs

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mholt/acmez/v3"
	"github.com/mholt/acmez/v3/acme"

	"github.com/callbox/callbox/config"
)

func TestNew(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	certFile, keyFile, _ := writePair(t, dir, "files.test")
	missing := filepath.Join(dir, "missing.pem")
	combined := filepath.Join(dir, "combined.pem")
	certPEM, _ := os.ReadFile(certFile)
	keyPEM, _ := os.ReadFile(keyFile)
	writeFile(t, combined, append(keyPEM, certPEM...))
	acme := func(c config.TLS) config.TLS {
		c.ACMECA, c.ACMEStorage = config.LetsEncrypt, dir
		return c
	}
	tests := []struct {
		name    string
		cfg     config.TLS
		enabled bool
		wantErr string
	}{
		{"off", config.TLS{}, false, ""},
		{"files", config.TLS{CertFile: certFile, KeyFile: keyFile}, true, ""},
		{"one file with key and chain", config.TLS{CertFile: combined, KeyFile: combined}, true, ""},
		{"acme", acme(config.TLS{ACMEDomains: []string{"call.example.com"}}), true, ""},
		{"cert without key", config.TLS{CertFile: certFile}, false, "tls.cert_file: is set but tls.key_file is not"},
		{"files and acme", acme(config.TLS{CertFile: certFile, KeyFile: keyFile, ACMEDomains: []string{"a.example"}}), false, "tls.acme_domains"},
		{"missing cert file", config.TLS{CertFile: missing, KeyFile: keyFile}, false, "cert_file: open " + missing},
		{"missing key file", config.TLS{CertFile: certFile, KeyFile: missing}, false, "key_file: open " + missing},
		{"swapped", config.TLS{CertFile: keyFile, KeyFile: certFile}, false, "cert_file " + keyFile + ": holds a private key but no certificate"},
		{"missing ca root", acme(config.TLS{ACMEDomains: []string{"a.example"}, ACMECARoot: missing}), false, "acme_ca_root"},
		{"storage not creatable", config.TLS{ACMEDomains: []string{"a.example"}, ACMECA: config.LetsEncrypt, ACMEStorage: filepath.Join(certFile, "acme")}, false, "acme_storage: mkdir"},
		{"ca root not pem", acme(config.TLS{ACMEDomains: []string{"a.example"}, ACMECARoot: keyFile}), false, "acme_ca_root " + keyFile + ": no PEM certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := New(tt.cfg, testLogger(t))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("New: error %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			if m.Enabled() != tt.enabled {
				t.Errorf("Enabled() = %v, want %v", m.Enabled(), tt.enabled)
			}
		})
	}
}

func TestTLSConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	certFile, keyFile, leaf := writePair(t, dir, "files.test")
	m, err := New(config.TLS{CertFile: certFile, KeyFile: keyFile}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	c := m.TLSConfig()
	if c.MinVersion != tls.VersionTLS12 {
		t.Errorf("MinVersion = %x, want TLS 1.2", c.MinVersion)
	}
	if strings.Join(c.NextProtos, ",") != "h2,http/1.1" {
		t.Errorf("NextProtos = %v, want [h2 http/1.1]", c.NextProtos)
	}
	c.NextProtos = nil // a caller's change must not leak into the next config
	if m.TLSConfig().NextProtos == nil {
		t.Error("TLSConfig returns a shared config")
	}
	addr := serveTLS(t, m)

	// A client that trusts the certificate verifies chain and name, over
	// HTTP/2 as the ALPN offers.
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "files.test"}, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get("https://" + addr + "/")
	if err != nil {
		t.Fatalf("GET over verified TLS: %v", err)
	}
	resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Errorf("protocol %s, want HTTP/2", resp.Proto)
	}
	// TLS 1.1 is refused.
	if _, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS11}); err == nil {
		t.Error("a TLS 1.1 handshake succeeded")
	}
	// No SNI (Firefox on turns:) still gets the pair.
	got, err := servedCert(t, addr, "")
	if err != nil || !sameCert(got, leaf) {
		t.Errorf("without SNI: served %v, %v; want the file's certificate", got, err)
	}
}

func TestReload(t *testing.T) {
	t.Parallel()
	// Each broken replacement must leave the served pair alone and name the
	// file at fault.
	otherCert, otherKey, _ := selfSigned(t, "other.test")
	newCert, _, _ := selfSigned(t, "files.test")
	tests := []struct {
		name       string
		cert, key  func(certFile, keyFile string) []byte // nil leaves the file as it is
		remove     string                                // "cert" or "key": delete that file
		wantInErr  string                                // {cert} and {key} stand for the file names
		wantInErr2 string
	}{
		{name: "garbage cert", cert: func(string, string) []byte { return []byte("not pem") }, wantInErr: "cert_file {cert}: no CERTIFICATE PEM block"},
		{name: "truncated cert", cert: func(string, string) []byte {
			return []byte(strings.Replace(string(otherCert), "\n", "\nAAAA", 3))
		}, wantInErr: "cert_file {cert}"},
		{name: "key does not match", cert: func(string, string) []byte { return newCert }, wantInErr: "key_file {key} (for cert_file {cert})", wantInErr2: "private key does not match public key"},
		{name: "garbage key", key: func(string, string) []byte { return []byte("nope") }, wantInErr: "key_file {key}: no PEM data"},
		{name: "swapped", cert: func(string, string) []byte { return otherKey }, key: func(string, string) []byte { return otherCert }, wantInErr: "cert_file {cert}: holds a private key"},
		{name: "cert removed", remove: "cert", wantInErr: "cert_file: open {cert}"},
		{name: "key removed", remove: "key", wantInErr: "key_file: open {key}"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			certFile, keyFile, old := writePair(t, dir, "files.test")
			m, err := New(config.TLS{CertFile: certFile, KeyFile: keyFile}, testLogger(t))
			if err != nil {
				t.Fatal(err)
			}
			addr := serveTLS(t, m)
			if tt.cert != nil {
				writeFile(t, certFile, tt.cert(certFile, keyFile))
			}
			if tt.key != nil {
				writeFile(t, keyFile, tt.key(certFile, keyFile))
			}
			switch tt.remove {
			case "cert":
				os.Remove(certFile)
			case "key":
				os.Remove(keyFile)
			}
			err = m.Reload()
			if err == nil {
				t.Fatal("Reload of a broken pair returned nil")
			}
			for _, want := range []string{tt.wantInErr, tt.wantInErr2, "still serving the previous certificate"} {
				want = strings.NewReplacer("{cert}", certFile, "{key}", keyFile).Replace(want)
				if !strings.Contains(err.Error(), want) {
					t.Errorf("Reload error %q, want it to contain %q", err, want)
				}
			}
			if got, err := servedCert(t, addr, "files.test"); err != nil || !sameCert(got, old) {
				t.Errorf("after a broken reload: served %v, %v; want the old certificate", got.Subject, err)
			}
			// Repairing the files and reloading serves the new pair.
			_, _, fixed := writePair(t, dir, "files.test")
			if err := m.Reload(); err != nil {
				t.Fatalf("Reload of a good pair: %v", err)
			}
			if got, err := servedCert(t, addr, "files.test"); err != nil || !sameCert(got, fixed) {
				t.Errorf("after a good reload: served serial %v, %v; want %v", got.SerialNumber, err, fixed.SerialNumber)
			}
		})
	}
}

// TestPollFiles covers the path without SIGHUP: Run notices changed files
// by their mtime, size and inode, survives a half-written pair, and stops
// with its context.
func TestPollFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	certFile, keyFile, first := writePair(t, dir, "files.test")
	m, err := New(config.TLS{CertFile: certFile, KeyFile: keyFile}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	m.pollInterval = 20 * time.Millisecond
	addr := serveTLS(t, m)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := m.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	defer func() {
		cancel()
		wg.Wait()
	}()
	served := func() *x509.Certificate {
		got, err := servedCert(t, addr, "files.test")
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		return got
	}
	if !sameCert(served(), first) {
		t.Fatal("the first pair is not served")
	}

	// Replaced files are picked up.
	_, _, second := writePair(t, dir, "files.test")
	waitFor(t, 5*time.Second, "the poller to serve the second pair", func() bool { return sameCert(served(), second) })

	// A half-written renewal (new certificate, old key) keeps the second
	// pair; once the key lands, the third pair is served.
	certPEM, keyPEM, third := selfSigned(t, "files.test")
	writeFile(t, certFile, certPEM)
	time.Sleep(10 * m.pollInterval) // several polls see the mismatched pair
	if !sameCert(served(), second) {
		t.Fatal("a mismatched pair replaced the served one")
	}
	writeFile(t, keyFile, keyPEM)
	waitFor(t, 5*time.Second, "the poller to serve the third pair", func() bool { return sameCert(served(), third) })

	// Run returns promptly when its context ends.
	cancel()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}

func TestHTTPHandler(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	certFile, keyFile, _ := writePair(t, dir, "files.test")
	files, err := New(config.TLS{CertFile: certFile, KeyFile: keyFile}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	acme, err := New(config.TLS{ACMEDomains: []string{"call.example.com"}, ACMECA: config.LetsEncrypt, ACMEStorage: dir}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	// A challenge in flight, as acmez presents it.
	acme.acme.solver.chals[solverKey{"call.example.com", "tok_EN-1"}] = "tok_EN-1.thumbprint"
	off, err := New(config.TLS{}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	fallback := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusTeapot)
	})

	tests := []struct {
		name       string
		m          *Manager
		method     string
		target     string // request URL; its host becomes the Host header
		host       string // overrides the Host header when set
		wantStatus int
		wantLoc    string
		wantBody   string
	}{
		{"redirect root", files, "GET", "http://files.test/", "", 308, "https://files.test/", ""},
		{"redirect keeps path and query", files, "GET", "http://files.test/room/a%20b?x=1&y=%2F", "", 308, "https://files.test/room/a%20b?x=1&y=%2F", ""},
		{"redirect drops port 80", files, "GET", "http://files.test:80/r", "", 308, "https://files.test/r", ""},
		{"redirect POST keeps method (308)", files, "POST", "http://files.test/api", "", 308, "https://files.test/api", ""},
		{"redirect IPv6 literal", files, "GET", "http://[2001:db8::1]:80/x", "", 308, "https://[2001:db8::1]/x", ""},
		{"redirect escaped slash", files, "GET", "http://files.test/a%2Fb", "", 308, "https://files.test/a%2Fb", ""},
		{"bad host", files, "GET", "http://files.test/", "evil.test/x", 400, "", ""},
		{"missing host, no domain", files, "GET", "http://files.test/", "-", 400, "", ""},
		{"missing host, acme domain", acme, "GET", "http://call.example.com/p", "-", 308, "https://call.example.com/p", ""},
		{"challenge answered", acme, "GET", "http://call.example.com/.well-known/acme-challenge/tok_EN-1", "", 200, "", "tok_EN-1.thumbprint"},
		{"challenge with port in Host", acme, "GET", "http://call.example.com:80/.well-known/acme-challenge/tok_EN-1", "", 200, "", "tok_EN-1.thumbprint"},
		{"challenge host case-insensitive", acme, "GET", "http://CALL.example.com/.well-known/acme-challenge/tok_EN-1", "", 200, "", "tok_EN-1.thumbprint"},
		{"challenge for another host", acme, "GET", "http://evil.example.com/.well-known/acme-challenge/tok_EN-1", "", 404, "", ""},
		{"challenge unknown token", acme, "GET", "http://call.example.com/.well-known/acme-challenge/other", "", 404, "", ""},
		{"challenge POST", acme, "POST", "http://call.example.com/.well-known/acme-challenge/tok_EN-1", "", 404, "", ""},
		{"acme redirects the rest", acme, "GET", "http://call.example.com/room?r=1", "", 308, "https://call.example.com/room?r=1", ""},
		{"challenge path in files mode redirects", files, "GET", "http://files.test/.well-known/acme-challenge/x", "", 308, "https://files.test/.well-known/acme-challenge/x", ""},
		{"tls off uses fallback", off, "GET", "http://files.test/", "", http.StatusTeapot, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(tt.method, tt.target, nil)
			switch tt.host {
			case "":
			case "-":
				r.Host = ""
			default:
				r.Host = tt.host
			}
			w := httptest.NewRecorder()
			tt.m.HTTPHandler(fallback).ServeHTTP(w, r)
			if w.Code != tt.wantStatus {
				t.Fatalf("status %d, want %d (body %q)", w.Code, tt.wantStatus, w.Body)
			}
			if loc := w.Header().Get("Location"); loc != tt.wantLoc {
				t.Errorf("Location %q, want %q", loc, tt.wantLoc)
			}
			if tt.wantBody != "" && w.Body.String() != tt.wantBody {
				t.Errorf("body %q, want %q", w.Body, tt.wantBody)
			}
		})
	}
	if h := off.HTTPHandler(nil); h == nil {
		t.Error("HTTPHandler(nil) with TLS off is nil")
	}
}

// FuzzHTTPHandler feeds the port-80 handler raw requests (its outside input
// is the request line and the Host header): it must never panic, and a
// redirect must be https to the request's own host, path and query.
func FuzzHTTPHandler(f *testing.F) {
	f.Add("files.test", "/room?a=1")
	f.Add("files.test:80", "/a%2Fb")
	f.Add("[::1]:80", "/?x=%zz")
	f.Add("", "//evil.test/")
	f.Add("evil.test@files.test", "/")
	f.Add("call.example.com", "/.well-known/acme-challenge/tok")
	f.Add("files.test", "*")
	f.Add("files.test", "http://other.test/abs?q")
	dir := f.TempDir()
	certFile, keyFile, _ := writePair(f, dir, "files.test")
	m, err := New(config.TLS{CertFile: certFile, KeyFile: keyFile}, nil)
	if err != nil {
		f.Fatal(err)
	}
	h := m.HTTPHandler(nil)
	f.Fuzz(func(t *testing.T, host, target string) {
		raw := "GET " + target + " HTTP/1.1\r\nHost: " + host + "\r\n\r\n"
		r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
		if err != nil {
			return // net/http refuses it before any handler runs
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != http.StatusPermanentRedirect {
			return
		}
		loc := w.Header().Get("Location")
		u, err := url.Parse(loc)
		if err != nil || u.Scheme != "https" {
			t.Fatalf("redirect %q is not an https URL (%v)", loc, err)
		}
		want := r.Host
		if h, _, err := net.SplitHostPort(want); err == nil {
			want = h
		}
		want = strings.Trim(want, "[]")
		if ip, err := netip.ParseAddr(want); err == nil {
			want = ip.String() // written in its canonical form
		}
		if u.Hostname() != want {
			t.Fatalf("redirect %q goes to host %q, want %q", loc, u.Hostname(), want)
		}
		if strings.HasPrefix(r.URL.Path, "/") && u.Path != r.URL.Path || u.RawQuery != escapeNonASCII(strings.ReplaceAll(r.URL.RawQuery, "#", "%23")) {
			t.Fatalf("redirect %q: path %q query %q, want %q %q", loc, u.Path, u.RawQuery, r.URL.Path, r.URL.RawQuery)
		}
	})
}

// escapeNonASCII does what http.Redirect does to a Location: bytes above
// 0x7f become %XX, which a browser decodes back to the same bytes.
func escapeNonASCII(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			fmt.Fprintf(&b, "%%%02x", s[i])
		} else {
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

// FuzzCheckChain feeds the certificate file parser arbitrary bytes.
func FuzzCheckChain(f *testing.F) {
	certPEM, keyPEM, _ := selfSigned(f, "fuzz.test")
	f.Add(certPEM)
	f.Add(keyPEM)
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		_ = checkChain(data)
	})
}

// TestTLSALPNChallenge: a client offering only acme-tls/1 gets the
// challenge certificate for the name in progress, and nothing for others.
func TestTLSALPNChallenge(t *testing.T) {
	t.Parallel()
	m, err := New(config.TLS{ACMEDomains: []string{"call.example.com"}, ACMECA: config.LetsEncrypt, ACMEStorage: t.TempDir()}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if protos := m.TLSConfig().NextProtos; protos[len(protos)-1] != acmez.ACMETLS1Protocol {
		t.Fatalf("NextProtos %v do not end with acme-tls/1", protos)
	}
	chal := acme.Challenge{
		Type:             acme.ChallengeTypeTLSALPN01,
		Token:            "tok",
		KeyAuthorization: "tok.thumbprint",
		Identifier:       acme.Identifier{Type: "dns", Value: "call.example.com"},
	}
	if err := m.acme.alpn.Present(context.Background(), chal); err != nil {
		t.Fatal(err)
	}
	addr := serveTLS(t, m)
	handshake := func(name string, protos []string) (tls.ConnectionState, error) {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr,
			&tls.Config{ServerName: name, NextProtos: protos, InsecureSkipVerify: true})
		if err != nil {
			return tls.ConnectionState{}, err
		}
		defer conn.Close()
		return conn.ConnectionState(), nil
	}
	tests := []struct {
		name, serverName string
		protos           []string
		wantChallenge    bool
	}{
		{"challenge", "call.example.com", []string{acmez.ACMETLS1Protocol}, true},
		{"challenge, name in capitals", "CALL.example.com", []string{acmez.ACMETLS1Protocol}, true},
		{"other name", "other.example.com", []string{acmez.ACMETLS1Protocol}, false},
		// A browser: no certificate yet (Run has not obtained one), and
		// never the challenge certificate.
		{"browser", "call.example.com", []string{"h2", "http/1.1"}, false},
	}
	acmeIdentifier := asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 1, 31} // RFC 8737
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cs, err := handshake(tt.serverName, tt.protos)
			if !tt.wantChallenge {
				if err == nil {
					t.Fatalf("handshake succeeded with %v", cs.PeerCertificates[0].DNSNames)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cs.NegotiatedProtocol != acmez.ACMETLS1Protocol {
				t.Errorf("negotiated %q", cs.NegotiatedProtocol)
			}
			found := false
			for _, ext := range cs.PeerCertificates[0].Extensions {
				found = found || ext.Id.Equal(acmeIdentifier)
			}
			if !found {
				t.Error("certificate lacks the acmeIdentifier extension")
			}
		})
	}
	if err := m.acme.alpn.CleanUp(context.Background(), chal); err != nil {
		t.Fatal(err)
	}
	if _, err := handshake("call.example.com", []string{acmez.ACMETLS1Protocol}); err == nil {
		t.Error("challenge certificate still served after CleanUp")
	}
}
