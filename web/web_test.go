package web

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"path"
	"regexp"
	"strings"
	"testing"
)

func newServer(t *testing.T) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	Routes(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, url string, header map[string]string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read body: %v", url, err)
	}
	return resp, string(body)
}

func TestRoutes(t *testing.T) {
	srv := newServer(t)
	tests := []struct {
		path     string
		status   int
		ctype    string
		contains string
	}{
		{"/", 200, "text/html", `src="/static/js/home.js"`},
		{"/r/team-standup", 200, "text/html", `src="/static/js/room.js"`},
		{"/r/a_B-9?name=Ada&relay=1", 200, "text/html", `playsinline autoplay muted`},
		{"/check", 200, "text/html", `src="/static/js/check.js"`},
		{"/static/js/protocol.js", 200, "text/javascript", "export class Signaling"},
		{"/static/app.css", 200, "text/css", "prefers-color-scheme: dark"},
		{"/static/icon.svg", 200, "image/svg+xml", "<svg"},
		{"/r/" + strings.Repeat("x", 65), 404, "text/plain", "no such room"},
		{"/r/bad%20room", 404, "text/plain", "no such room"},
		{"/r/bad.room", 404, "text/plain", "no such room"},
		{"/static/", 404, "text/plain", ""},
		{"/static/js/", 404, "text/plain", ""},
		{"/static/nope.js", 404, "text/plain", ""},
		{"/nope", 404, "text/plain", ""},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			resp, body := get(t, srv.URL+tt.path, nil)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.status)
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, tt.ctype) {
				t.Errorf("Content-Type %q, want %s", ct, tt.ctype)
			}
			if !strings.Contains(body, tt.contains) {
				t.Errorf("body lacks %q", tt.contains)
			}
		})
	}
}

func TestSecurityHeaders(t *testing.T) {
	srv := newServer(t)
	host := strings.TrimPrefix(srv.URL, "http://")
	for _, p := range []string{"/", "/r/x", "/check", "/static/js/call.js", "/r/bad.room"} {
		t.Run(p, func(t *testing.T) {
			resp, _ := get(t, srv.URL+p, nil)
			h := resp.Header
			csp := h.Get("Content-Security-Policy")
			for _, want := range []string{"default-src 'none'", "script-src 'self'", "style-src 'self'",
				"connect-src 'self' ws://" + host + " wss://" + host, "frame-ancestors 'none'"} {
				if !strings.Contains(csp, want) {
					t.Errorf("CSP %q lacks %q", csp, want)
				}
			}
			if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") {
				t.Errorf("CSP allows inline code: %q", csp)
			}
			want := map[string]string{
				"X-Content-Type-Options": "nosniff",
				"Referrer-Policy":        "no-referrer",
				"X-Frame-Options":        "DENY",
			}
			for k, v := range want {
				if got := h.Get(k); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
		})
	}
}

func TestCaching(t *testing.T) {
	srv := newServer(t)
	for _, p := range []string{"/", "/r/room1", "/check", "/static/js/room.js", "/static/app.css"} {
		t.Run(p, func(t *testing.T) {
			resp, _ := get(t, srv.URL+p, nil)
			if cc := resp.Header.Get("Cache-Control"); cc != "no-cache" {
				t.Errorf("Cache-Control %q, want no-cache", cc)
			}
			tag := resp.Header.Get("ETag")
			if tag == "" {
				t.Fatal("no ETag")
			}
			resp, body := get(t, srv.URL+p, map[string]string{"If-None-Match": tag})
			if resp.StatusCode != http.StatusNotModified || body != "" {
				t.Errorf("revalidation: status %d, %d bytes; want 304, empty", resp.StatusCode, len(body))
			}
		})
	}
}

// The client must work on a LAN without internet and must not leak calls to
// third parties: no URL of another host in any page, module or stylesheet.
func TestNoExternalResources(t *testing.T) {
	external := regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}|stun:[a-z]|turns?:[a-z]|googleapis|gstatic|cdn[.j]`)
	allowed := []string{"http://www.w3.org/2000/svg"} // an XML namespace, never fetched
	err := fs.WalkDir(staticFS, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := staticFS.ReadFile(p)
		if err != nil {
			return err
		}
		text := string(data)
		for _, a := range allowed {
			text = strings.ReplaceAll(text, a, "")
		}
		// Comments and prose may name schemes (e.g. "turn: URIs"); code is what matters.
		for _, m := range external.FindAllString(text, -1) {
			t.Errorf("%s refers to %q", p, m)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Every relative import of every module names an embedded file, so a typo
// is caught here rather than as a blank page.
func TestModuleImportsResolve(t *testing.T) {
	imp := regexp.MustCompile(`(?m)^import .* from "(\./[^"]+)";$|^} from "(\./[^"]+)";$`)
	pages := regexp.MustCompile(`(?:src|href)="(/static/[^"]+)"`)
	files, err := fs.Glob(staticFS, "static/js/*.js")
	if err != nil {
		t.Fatal(err)
	}
	html, err := fs.Glob(staticFS, "static/*.html")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range append(files, html...) {
		t.Run(f, func(t *testing.T) {
			data, err := staticFS.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var refs []string
			for _, m := range imp.FindAllStringSubmatch(string(data), -1) {
				refs = append(refs, path.Join(path.Dir(f), m[1]+m[2]))
			}
			for _, m := range pages.FindAllStringSubmatch(string(data), -1) {
				refs = append(refs, strings.TrimPrefix(m[1], "/"))
			}
			for _, r := range refs {
				if _, ok := etags[r]; !ok {
					t.Errorf("%s refers to %s, which is not embedded", f, r)
				}
			}
		})
	}
}

func TestValidRoom(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"a", true},
		{"team-standup_2", true},
		{strings.Repeat("Z", 64), true},
		{"", false},
		{strings.Repeat("Z", 65), false},
		{"with space", false},
		{"dot.ted", false},
		{"ünï", false},
		{"../etc", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ValidRoom(tt.name); got != tt.ok {
				t.Errorf("ValidRoom(%q) = %v, want %v", tt.name, got, tt.ok)
			}
		})
	}
}

func TestContentSecurityPolicyHost(t *testing.T) {
	tests := []struct {
		host    string
		connect string
	}{
		{"callbox.example.com", "connect-src 'self' ws://callbox.example.com wss://callbox.example.com;"},
		{"127.0.0.1:8080", "connect-src 'self' ws://127.0.0.1:8080 wss://127.0.0.1:8080;"},
		{"[::1]:8080", "connect-src 'self' ws://[::1]:8080 wss://[::1]:8080;"},
		{"", "connect-src 'self';"},
		{"evil; script-src *", "connect-src 'self';"},
		{"a\r\nSet-Cookie: x", "connect-src 'self';"},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			if csp := ContentSecurityPolicy(tt.host); !strings.Contains(csp, tt.connect) {
				t.Errorf("CSP %q lacks %q", csp, tt.connect)
			}
		})
	}
}

var roomRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// The room name comes from the URL: ValidRoom must agree with the protocol's rule.
func FuzzValidRoom(f *testing.F) {
	for _, s := range []string{"a", "team-standup", "", "a b", strings.Repeat("x", 65), "é", "a\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := ValidRoom(s), roomRE.MatchString(s); got != want {
			t.Errorf("ValidRoom(%q) = %v, regexp says %v", s, got, want)
		}
	})
}

// The Host header is outside input placed in a header: it must never add a directive.
func FuzzContentSecurityPolicy(f *testing.F) {
	for _, s := range []string{"example.com", "127.0.0.1:80", "[::1]:1", "x; default-src *", "a\nb", "a,b", "a b"} {
		f.Add(s)
	}
	base := strings.Count(ContentSecurityPolicy(""), ";")
	f.Fuzz(func(t *testing.T, host string) {
		csp := ContentSecurityPolicy(host)
		if n := strings.Count(csp, ";"); n != base {
			t.Fatalf("host %q changed the number of directives: %q", host, csp)
		}
		if strings.ContainsAny(csp, "\r\n,*") {
			t.Fatalf("host %q put a forbidden character in %q", host, csp)
		}
		if strings.Count(csp, "connect-src") != 1 {
			t.Fatalf("host %q: %q", host, csp)
		}
	})
}

// What a page load costs the server: the call page and a module, fresh and
// revalidated (the common case after the first visit).
func BenchmarkServe(b *testing.B) {
	mux := http.NewServeMux()
	Routes(mux)
	for _, bb := range []struct {
		name, path string
		revalidate bool
	}{
		{"call-page", "/r/team-standup", false},
		{"call-page-304", "/r/team-standup", true},
		{"module", "/static/js/call.js", false},
		{"module-304", "/static/js/call.js", true},
	} {
		b.Run(bb.name, func(b *testing.B) {
			req := httptest.NewRequest(http.MethodGet, bb.path, nil)
			if bb.revalidate {
				rec := httptest.NewRecorder()
				mux.ServeHTTP(rec, req)
				req.Header.Set("If-None-Match", rec.Header().Get("ETag"))
			}
			b.ReportAllocs()
			for b.Loop() {
				rec := httptest.NewRecorder()
				mux.ServeHTTP(rec, req)
				if rec.Code != http.StatusOK && rec.Code != http.StatusNotModified {
					b.Fatalf("status %d", rec.Code)
				}
			}
		})
	}
}
