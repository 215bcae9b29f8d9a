package certs

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/asn1"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/mholt/acmez/v3"
	"github.com/mholt/acmez/v3/acme"

	"github.com/callbox/callbox/config"
)

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
