package check

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// testCA signs leaf certificates for the TLS tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "callbox test CA"},
		NotBefore:             time.Now().Add(-365 * 24 * time.Hour),
		NotAfter:              time.Now().Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// leaf issues a server certificate for names (DNS names or IP addresses)
// valid from notBefore to notAfter.
func (ca *testCA) leaf(t *testing.T, notBefore, notAfter time.Time, names ...string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: names[0]},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

func TestCertVerdict(t *testing.T) {
	ca := newTestCA(t)
	other := newTestCA(t)
	now := time.Now()
	day := 24 * time.Hour
	cases := []struct {
		name   string
		chain  []*x509.Certificate
		host   string
		roots  *x509.CertPool
		status Status
		detail string
		advice string
	}{
		{name: "valid", chain: []*x509.Certificate{ca.leaf(t, now.Add(-day), now.Add(60*day), "call.example.com").Leaf},
			host: "call.example.com", roots: ca.pool, status: OK, detail: "(59 days)"},
		{name: "valid for an IP", chain: []*x509.Certificate{ca.leaf(t, now.Add(-day), now.Add(60*day), "192.0.2.7").Leaf},
			host: "192.0.2.7", roots: ca.pool, status: OK},
		{name: "expiring soon", chain: []*x509.Certificate{ca.leaf(t, now.Add(-80*day), now.Add(5*day+time.Hour), "call.example.com").Leaf},
			host: "call.example.com", roots: ca.pool, status: Warn, detail: "(5 days)", advice: "renewed"},
		{name: "expired", chain: []*x509.Certificate{ca.leaf(t, now.Add(-90*day), now.Add(-2*day), "call.example.com").Leaf},
			host: "call.example.com", roots: ca.pool, status: Fail, detail: "expired on", advice: "renew it"},
		{name: "not yet valid", chain: []*x509.Certificate{ca.leaf(t, now.Add(day), now.Add(90*day), "call.example.com").Leaf},
			host: "call.example.com", roots: ca.pool, status: Fail, detail: "not valid before", advice: "clock"},
		{name: "wrong host", chain: []*x509.Certificate{ca.leaf(t, now.Add(-day), now.Add(60*day), "other.example.com").Leaf},
			host: "call.example.com", roots: ca.pool, status: Fail, detail: "is for other.example.com, not call.example.com", advice: "acme_domains"},
		{name: "unknown issuer", chain: []*x509.Certificate{ca.leaf(t, now.Add(-day), now.Add(60*day), "call.example.com").Leaf},
			host: "call.example.com", roots: other.pool, status: Fail, detail: "not trusted", advice: "full chain"},
		{name: "no certificate", host: "call.example.com", roots: ca.pool, status: Fail, detail: "no certificate"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := CertVerdict(tc.chain, tc.host, tc.roots, now)
			if got.Status != tc.status || !strings.Contains(got.Detail, tc.detail) || !strings.Contains(got.Advice, tc.advice) {
				t.Errorf("got %+v, want status %s, detail ~%q, advice ~%q", got, tc.status, tc.detail, tc.advice)
			}
		})
	}
}

// httpsFront serves HTTPS with cert in front of a real callbox, as a TLS
// reverse proxy would (WebSockets included). keepHost passes the
// browser's Host header on, as a correctly configured proxy does.
func httpsFront(t *testing.T, backend string, cert tls.Certificate, keepHost bool) *httptest.Server {
	t.Helper()
	target, err := url.Parse(backend)
	if err != nil {
		t.Fatal(err)
	}
	proxy := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(target)
		if keepHost {
			r.Out.Host = r.In.Host
		}
	}}
	srv := httptest.NewUnstartedServer(proxy)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func TestHTTPSInFront(t *testing.T) {
	ca := newTestCA(t)
	now := time.Now()
	day := 24 * time.Hour
	a := startApp(t, testConfig())
	cases := []struct {
		name     string
		cert     tls.Certificate
		keepHost bool
		want     map[string]Status
		advice   map[string]string
	}{
		{name: "valid certificate", cert: ca.leaf(t, now.Add(-day), now.Add(60*day), "127.0.0.1"), keepHost: true,
			want: map[string]Status{NameHTTPS: OK, NamePage: OK, NameWebSocket: OK, NameTURNUDP: OK, NameRelay: OK}},
		{name: "expired certificate", cert: ca.leaf(t, now.Add(-90*day), now.Add(-day), "127.0.0.1"), keepHost: true,
			// Past the certificate, the rest is still checked and healthy.
			want:   map[string]Status{NameHTTPS: Fail, NamePage: OK, NameWebSocket: OK, NameTURNUDP: OK, NameRelay: OK},
			advice: map[string]string{NameHTTPS: "renew it"}},
		{name: "proxy rewrites Host", cert: ca.leaf(t, now.Add(-day), now.Add(60*day), "127.0.0.1"),
			want:   map[string]Status{NameHTTPS: OK, NamePage: OK, NameWebSocket: Fail, NameTURNUDP: Skip},
			advice: map[string]string{NameWebSocket: "[signal] origins"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			front := httpsFront(t, a.HTTPURL(), tc.cert, tc.keepHost)
			opts := testOptions(front.URL)
			opts.RootCAs = ca.pool
			rep := runCheck(t, opts)
			for name, st := range tc.want {
				res := mustGet(t, rep, name)
				if res.Status != st {
					t.Errorf("%s: %s (%s), want %s", name, res.Status, res.Detail, st)
				}
				if adv := tc.advice[name]; !strings.Contains(res.Advice, adv) {
					t.Errorf("%s advice %q, want it to contain %q", name, res.Advice, adv)
				}
			}
		})
	}
}

// tlsFront terminates TLS with cert and pipes the stream to TURN's TCP
// listener: TURN over TLS as a turns: URI reaches it.
func tlsFront(t *testing.T, backend string, cert tls.Certificate) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn // guarded by mu
	)
	t.Cleanup(func() {
		ln.Close()
		// A client the test forgot to close must not hang the cleanup.
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() { pipe(c, backend) })
		}
	})
	return ln.Addr().String()
}

// pipe copies both ways until either side closes.
func pipe(c net.Conn, backend string) {
	defer c.Close()
	b, err := net.Dial("tcp", backend)
	if err != nil {
		return
	}
	defer b.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		io.Copy(b, c)
		b.Close()
	}()
	io.Copy(c, b)
	c.Close()
	<-done
}

func TestTURNOverTLS(t *testing.T) {
	ca := newTestCA(t)
	now := time.Now()
	day := 24 * time.Hour
	a := startApp(t, testConfig())
	cred := a.TURN().Credentials("check-test", time.Hour)
	cases := []struct {
		name   string
		cert   tls.Certificate
		status Status
		detail string
	}{
		{name: "valid certificate", cert: ca.leaf(t, now.Add(-day), now.Add(60*day), "127.0.0.1"), status: OK, detail: "over TLS"},
		{name: "expired certificate", cert: ca.leaf(t, now.Add(-90*day), now.Add(-day), "127.0.0.1"), status: Fail, detail: "expired"},
		{name: "certificate for another host", cert: ca.leaf(t, now.Add(-day), now.Add(60*day), "turn.example.com"), status: Fail, detail: "not 127.0.0.1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			addr := tlsFront(t, a.TURN().TCPAddr().String(), tc.cert)
			r := &runner{opts: Options{StepTimeout: 3 * time.Second, Now: time.Now, Resolver: net.DefaultResolver, RootCAs: ca.pool}, log: slog.New(slog.DiscardHandler)}
			r.ice, _ = parseICE([]iceServer{{URLs: []string{"turns:" + addr + "?transport=tcp"}, Username: cred.Username, Credential: cred.Password}}, 0)
			defer r.closeAllocations()
			r.checkTURN(context.Background(), NameTURNTLS)
			res := mustGet(t, r.report, NameTURNTLS)
			if res.Status != tc.status || !strings.Contains(res.Detail, tc.detail) {
				t.Errorf("got %+v, want %s with %q", res, tc.status, tc.detail)
			}
		})
	}
}

// A TURN server that refuses the handed-out credentials (the hub and TURN
// disagree on turn.secrets) is told apart from an unreachable one.
func TestTURNRefusesCredentials(t *testing.T) {
	a := startApp(t, testConfig())
	cred := a.TURN().Credentials("check-test", time.Hour)
	r := &runner{opts: Options{StepTimeout: 3 * time.Second, Now: time.Now, Resolver: net.DefaultResolver}, log: slog.New(slog.DiscardHandler)}
	r.ice, _ = parseICE([]iceServer{{URLs: a.TURN().TURNURIs(), Username: cred.Username, Credential: "not-the-password"}}, 0)
	defer r.closeAllocations()
	r.checkTURN(context.Background(), NameTURNUDP)
	res := mustGet(t, r.report, NameTURNUDP)
	if res.Status != Fail || !strings.Contains(res.Detail, "refused") || !strings.Contains(res.Advice, "turn.secrets") {
		t.Errorf("got %+v, want a refusal with turn.secrets advice", res)
	}
	if r.kept != nil {
		t.Error("a failed allocation was kept")
	}
}

// writePEM writes cert and its key as the files [tls] cert_file and
// key_file name.
func writePEM(t *testing.T, cert tls.Certificate) (certFile, keyFile string) {
	t.Helper()
	dir := t.TempDir()
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// callbox serving HTTPS and TURN over TLS itself, from certificate files,
// on its own port and shared with HTTPS (tls_on_https): with a good
// certificate every check passes, turns: included; with an expired one
// both HTTPS and turns: fail and say to renew it.
func TestCallboxWithTLS(t *testing.T) {
	ca := newTestCA(t)
	now := time.Now()
	day := 24 * time.Hour
	good := ca.leaf(t, now.Add(-time.Hour), now.Add(60*day), "127.0.0.1")
	expired := ca.leaf(t, now.Add(-90*day), now.Add(-day), "127.0.0.1")
	cases := []struct {
		name       string
		cert       tls.Certificate
		tlsListen  bool
		tlsOnHTTPS bool
		want       Status
	}{
		{name: "turns on its own port", cert: good, tlsListen: true, want: OK},
		{name: "turns on the HTTPS port", cert: good, tlsOnHTTPS: true, want: OK},
		{name: "expired certificate", cert: expired, tlsListen: true, want: Fail},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.TLS.CertFile, cfg.TLS.KeyFile = writePEM(t, tc.cert)
			cfg.HTTP.HTTPSListen = "127.0.0.1:0"
			if tc.tlsListen {
				cfg.TURN.TLSListen = "127.0.0.1:0"
			}
			cfg.TURN.TLSOnHTTPS = tc.tlsOnHTTPS
			a := startApp(t, cfg)
			opts := testOptions(a.HTTPSURL())
			opts.RootCAs = ca.pool
			rep := runCheck(t, opts)
			if rep.Failed() != (tc.want == Fail) {
				t.Errorf("Failed() = %v, want %v", rep.Failed(), tc.want == Fail)
			}
			for _, name := range []string{NameHTTPS, NameTURNTLS} {
				res := mustGet(t, rep, name)
				if res.Status != tc.want {
					t.Errorf("%s: %s (%s), want %s", name, res.Status, res.Detail, tc.want)
				}
				if tc.want == Fail && !strings.Contains(res.Advice, "renew it") {
					t.Errorf("%s advice %q, want it to say renew it", name, res.Advice)
				}
			}
			// Past the certificate, the rest is checked and healthy.
			for _, name := range []string{NameWebSocket, NameTURNUDP, NameTURNTCP, NameRelay} {
				if res := mustGet(t, rep, name); res.Status != OK {
					t.Errorf("%s: %s (%s), want ok", name, res.Status, res.Detail)
				}
			}
		})
	}
}
