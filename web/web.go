// Package web serves callbox's browser client: the start page, the call page,
// the /check diagnostics page and their ES modules and CSS, all embedded in
// the binary so a callbox on a LAN without internet still works. The client
// loads nothing from any other host; it learns its ICE servers from the hub.
package web

import (
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"io/fs"
	"net/http"
	"strings"
)

//go:embed static
var staticFS embed.FS

// etags maps each embedded file's path to a strong ETag of its content.
// Embedded files carry no modification time, so without these every reload
// would download every module again; with them a reload is a round of 304s.
var etags = func() map[string]string {
	m := map[string]string{}
	err := fs.WalkDir(staticFS, "static", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := staticFS.ReadFile(path)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(data)
		m[path] = `"` + base64.RawURLEncoding.EncodeToString(sum[:12]) + `"`
		return nil
	})
	if err != nil {
		panic("web: hash embedded files: " + err.Error()) // cannot happen: embed.FS is in memory
	}
	return m
}()

// Routes registers the pages and static files on mux:
//
//	GET /{$}        the start page (make a room, share its link)
//	GET /r/{room}   the call page; 404 for a room name the hub would refuse
//	GET /check      connectivity diagnostics against callbox's STUN/TURN
//	GET /static/    ES modules, CSS, icons
func Routes(mux *http.ServeMux) {
	mux.Handle("GET /{$}", page("static/home.html"))
	mux.Handle("GET /check", page("static/check.html"))
	call := page("static/call.html")
	mux.HandleFunc("GET /r/{room}", func(w http.ResponseWriter, r *http.Request) {
		if !ValidRoom(r.PathValue("room")) {
			securityHeaders(w, r)
			http.Error(w, "no such room: room names are 1 to 64 characters of A-Z a-z 0-9 - _", http.StatusNotFound)
			return
		}
		call.ServeHTTP(w, r)
	})
	files := http.FileServerFS(staticFS)
	mux.HandleFunc("GET /static/", func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/") {
			// No directory listings: the client's file names are not an interface.
			securityHeaders(w, r)
			http.NotFound(w, r)
			return
		}
		serveFile(w, r, files, strings.TrimPrefix(r.URL.Path, "/"))
	})
	mux.HandleFunc("GET /favicon.ico", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/static/icon.svg", http.StatusMovedPermanently)
	})
}

// page serves one embedded HTML file at a route of its own.
func page(path string) http.Handler {
	files := http.FileServerFS(staticFS)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		serveFile(w, r, files, path)
	})
}

// serveFile serves path from the embedded files with the security headers
// and a revalidating cache policy. Assets are not fingerprinted, so
// "no-cache" (store, but ask with If-None-Match first) keeps an upgraded
// server from mixing old and new modules in one page.
func serveFile(w http.ResponseWriter, r *http.Request, files http.Handler, path string) {
	securityHeaders(w, r)
	h := w.Header()
	h.Set("Cache-Control", "no-cache")
	if tag, ok := etags[path]; ok {
		h.Set("ETag", tag) // http.ServeContent answers If-None-Match with 304 from this
	}
	// FileServerFS opens the file named by the URL, so point the URL at
	// path (the route, as /r/{room}, names no file). Pages are not called
	// index.html: FileServer would redirect that name to its directory.
	r2 := new(http.Request)
	*r2 = *r
	u := *r.URL
	u.Path = "/" + path
	u.RawPath = ""
	r2.URL = &u
	files.ServeHTTP(w, r2)
}

// securityHeaders sets the strict policy every response of the client gets.
func securityHeaders(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", ContentSecurityPolicy(r.Host))
	h.Set("X-Content-Type-Options", "nosniff")
	// Invite tokens travel in the call page's URL: never leak it in a Referer.
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Permissions-Policy", "camera=(self), microphone=(self), display-capture=(self), geolocation=()")
}

// ContentSecurityPolicy is the policy of every page: everything from this
// origin only, and WebSockets to the same host. host is the request's Host
// header; one that is not a plain host[:port] is left out, so a forged Host
// cannot inject directives (the page then falls back to 'self', which
// current browsers also match against ws: and wss: of the same host).
func ContentSecurityPolicy(host string) string {
	connect := "connect-src 'self'"
	if validHost(host) {
		connect += " ws://" + host + " wss://" + host
	}
	return "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; " +
		"media-src 'self' blob: mediastream:; font-src 'self'; manifest-src 'self'; " +
		connect + "; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
}

// validHost accepts what a Host header legitimately holds: a DNS name, an IPv4
// address or a bracketed IPv6 address, optionally with a port.
func validHost(host string) bool {
	if host == "" || len(host) > 255 {
		return false
	}
	for _, c := range []byte(host) {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '.', c == '-', c == ':', c == '[', c == ']', c == '_':
		default:
			return false
		}
	}
	return true
}

// ValidRoom reports whether name is a room name the hub accepts (docs/protocol.md):
// 1 to 64 characters of A-Z a-z 0-9 - _.
func ValidRoom(name string) bool {
	if name == "" || len(name) > 64 {
		return false
	}
	for _, c := range []byte(name) {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
		default:
			return false
		}
	}
	return true
}
