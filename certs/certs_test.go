package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

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
