// Package certs provides the server certificate for HTTPS and TURN over TLS,
// either from a certificate and key file pair (re-read when the files change
// or on Reload) or from an ACME CA (obtained and renewed by certmagic, with
// HTTP-01 challenges answered by the port-80 handler).
package certs

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mholt/acmez/v3"

	"github.com/callbox/callbox/config"
)

// defaultPollInterval is how often files mode looks at the files' mtimes:
// renewals by certbot and friends land hours before expiry, so half a
// minute is prompt without being busy.
const defaultPollInterval = 30 * time.Second

// errNoCertificate is returned to handshakes before a certificate exists
// (ACME still obtaining it).
var errNoCertificate = errors.New("certs: no certificate yet")

type mode int

const (
	modeOff mode = iota
	modeFiles
	modeACME
)

// Manager provides the server certificate for HTTPS and for TURN over TLS
// (turns:), from files or ACME. The app serves HTTPHandler on port 80, uses
// TLSConfig for HTTPS and turns:, calls Reload on SIGHUP and runs Run once,
// for as long as it serves.
type Manager struct {
	// static after construction
	cfg  config.TLS
	log  *slog.Logger
	mode mode
	// pollInterval is the files mode's mtime check period; tests shorten it.
	pollInterval time.Duration
	acme         *acmeState // nil unless mode is modeACME

	// files mode: the pair served, swapped whole so handshakes never lock
	pair atomic.Pointer[tls.Certificate]
	// reloadMu serialises Reload (SIGHUP and the poller) and guards stamp.
	reloadMu sync.Mutex
	stamp    fileStamp // the files' state when last read, good or broken
}

// New checks cfg and, in files mode, loads the pair so that a broken pair
// fails start-up. In ACME mode nothing is fetched until Run.
func New(cfg config.TLS, logger *slog.Logger) (*Manager, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	// The section's checks live with the schema; run them on a default
	// config carrying this section, so a hand-built config.TLS (tests, the
	// app) gets the same errors as the file.
	full := config.Default()
	full.TLS = cfg
	if err := full.Validate(); err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	m := &Manager{cfg: cfg, log: logger.With("component", "certs"), pollInterval: defaultPollInterval}
	switch {
	case cfg.CertFile != "":
		m.mode = modeFiles
		if err := m.Reload(); err != nil {
			return nil, err
		}
	case len(cfg.ACMEDomains) > 0:
		m.mode = modeACME
		st, err := newACMEState(cfg, m.log)
		if err != nil {
			return nil, err
		}
		m.acme = st
	}
	return m, nil
}

// Enabled is false when [tls] sets neither files nor ACME domains.
func (m *Manager) Enabled() bool { return m.mode != modeOff }

// TLSConfig returns a new config on each call, so a caller may change it
// (TURN over TLS, for one, offers no HTTP ALPN). In ACME mode its ALPN list
// ends with acme-tls/1, for TLS-ALPN-01 challenges on port 443. The certificate is looked
// up at each handshake, so reloads and renewals need no restart. Clients
// that send no SNI (Firefox on turns:) get the first ACME domain's
// certificate, or the file pair.
func (m *Manager) TLSConfig() *tls.Config {
	protos := []string{"h2", "http/1.1"}
	if m.mode == modeACME {
		// Listed last: the server picks by its own order, and only the
		// CA's validator offers it, alone.
		protos = append(protos, acmez.ACMETLS1Protocol)
	}
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		NextProtos:     protos,
		GetCertificate: m.getCertificate,
	}
}

func (m *Manager) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	switch m.mode {
	case modeFiles:
		return m.pair.Load(), nil
	case modeACME:
		return m.acme.getCertificate(hello)
	}
	return nil, errors.New("certs: TLS is off ([tls] sets no certificate)")
}

// HTTPHandler is the port-80 handler: it answers ACME HTTP-01 challenges and
// redirects everything else to https with the same host, path and query.
// When TLS is off it is fallback (a 404 when fallback is nil).
func (m *Manager) HTTPHandler(fallback http.Handler) http.Handler {
	if fallback == nil {
		fallback = http.NotFoundHandler()
	}
	if !m.Enabled() {
		return fallback
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if m.acme != nil && strings.HasPrefix(r.URL.Path, challengePath) {
			// An unknown token is a 404, not a redirect: the CA reads
			// the body, and a redirect would only hide the failure.
			if !m.acme.solver.serve(w, r) {
				http.NotFound(w, r)
			}
			return
		}
		target, err := m.httpsURL(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		// 308 keeps the method and body (a POST stays a POST).
		http.Redirect(w, r, target, http.StatusPermanentRedirect)
	})
}

// httpsURL is r's URL on https. The port is dropped: port 80 pairs with 443.
func (m *Manager) httpsURL(r *http.Request) (string, error) {
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if host == "" && len(m.cfg.ACMEDomains) > 0 {
		host = m.cfg.ACMEDomains[0] // HTTP/1.0 without Host
	}
	if host == "" {
		return "", errors.New("missing Host header")
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip.Is6() {
			host = "[" + ip.String() + "]"
		}
	} else if !validHostname(host) {
		return "", fmt.Errorf("bad Host header %q", r.Host)
	}
	// A raw '#' (which no browser sends) would start a fragment in the
	// Location; escaping it keeps the query as it came.
	query := strings.ReplaceAll(r.URL.RawQuery, "#", "%23")
	u := url.URL{Scheme: "https", Host: host, Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: query}
	return u.String(), nil
}

// validHostname accepts DNS names (and the underscores some intranets use):
// anything else in a Host header would make a redirect to somewhere else, or
// no URL at all.
func validHostname(h string) bool {
	if len(h) > 253 {
		return false
	}
	for _, c := range h {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			return false
		}
	}
	return true
}

// Reload re-reads the cert/key files (SIGHUP). A broken new pair leaves the
// old one in service and is returned as an error naming the file. It does
// nothing outside files mode: ACME certificates renew by themselves.
func (m *Manager) Reload() error {
	if m.mode != modeFiles {
		return nil
	}
	m.reloadMu.Lock()
	defer m.reloadMu.Unlock()
	return m.reloadLocked()
}

func (m *Manager) reloadLocked() error {
	// Stamp before reading: a write racing the read shows up as a change
	// at the next poll and is read again.
	m.stamp = statFiles(m.cfg.CertFile, m.cfg.KeyFile)
	pair, err := loadPair(m.cfg.CertFile, m.cfg.KeyFile)
	if err != nil {
		if m.pair.Load() != nil {
			return fmt.Errorf("%w (still serving the previous certificate)", err)
		}
		return err
	}
	m.pair.Store(pair)
	leaf := pair.Leaf
	m.log.Info("certificate loaded", "file", m.cfg.CertFile, "names", leaf.DNSNames,
		"not_after", leaf.NotAfter.UTC().Format(time.RFC3339))
	if left := time.Until(leaf.NotAfter); left < 0 {
		m.log.Error("certificate has expired: browsers will refuse it", "file", m.cfg.CertFile, "not_after", leaf.NotAfter)
	} else if left < 7*24*time.Hour {
		m.log.Warn("certificate expires within a week", "file", m.cfg.CertFile, "not_after", leaf.NotAfter)
	}
	return nil
}

// Run does the background work until ctx ends: in files mode it polls the
// files' mtimes and reloads on change; in ACME mode it obtains the
// certificates (retrying with backoff) and keeps them renewed. It returns
// nil when ctx ends, after its goroutines have stopped.
func (m *Manager) Run(ctx context.Context) error {
	switch m.mode {
	case modeFiles:
		m.pollFiles(ctx)
	case modeACME:
		m.acme.run(ctx)
	default:
		<-ctx.Done()
	}
	return nil
}

func (m *Manager) pollFiles(ctx context.Context) {
	t := time.NewTicker(m.pollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		m.reloadMu.Lock()
		if statFiles(m.cfg.CertFile, m.cfg.KeyFile) != m.stamp {
			// A half-written pair fails here; the stamp then differs again
			// once the second file lands, and the pair is read once more.
			if err := m.reloadLocked(); err != nil {
				m.log.Error("certificate files changed but cannot be loaded", "err", err)
			}
		}
		m.reloadMu.Unlock()
	}
}
