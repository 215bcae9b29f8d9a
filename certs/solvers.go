package certs

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"

	"github.com/mholt/acmez/v3"
	"github.com/mholt/acmez/v3/acme"
)

// challengePath is where HTTP-01 key authorizations are fetched (RFC 8555 §8.3).
const challengePath = "/.well-known/acme-challenge/"

// httpSolver answers HTTP-01 challenges through Manager.HTTPHandler.
type httpSolver struct {
	mu    sync.Mutex
	chals map[solverKey]string // guarded by mu: key authorization by name and token
}

type solverKey struct{ host, token string }

func (s *httpSolver) Present(_ context.Context, chal acme.Challenge) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.chals[solverKey{strings.ToLower(chal.Identifier.Value), chal.Token}] = chal.KeyAuthorization
	return nil
}

func (s *httpSolver) CleanUp(_ context.Context, chal acme.Challenge) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.chals, solverKey{strings.ToLower(chal.Identifier.Value), chal.Token})
	return nil
}

// serve writes the key authorization when r asks for a challenge in flight
// for its Host; the name must match so that another name pointed at this
// server cannot read it (DNS rebinding).
func (s *httpSolver) serve(w http.ResponseWriter, r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	key := solverKey{strings.ToLower(host), strings.TrimPrefix(r.URL.Path, challengePath)}
	s.mu.Lock()
	keyAuth, ok := s.chals[key]
	s.mu.Unlock()
	if !ok {
		return false
	}
	w.Header().Set("Content-Type", "text/plain")
	_, _ = w.Write([]byte(keyAuth))
	return true
}

// alpnSolver answers TLS-ALPN-01 challenges (RFC 8737) in the handshake:
// a client offering only the acme-tls/1 protocol gets a certificate that
// carries the key authorization for the name it asked for.
type alpnSolver struct {
	mu    sync.Mutex
	certs map[string]*tls.Certificate // guarded by mu: challenge certificate by name
}

func (s *alpnSolver) Present(_ context.Context, chal acme.Challenge) error {
	cert, err := acmez.TLSALPN01ChallengeCert(chal)
	if err != nil {
		return fmt.Errorf("certs: tls-alpn-01 certificate for %s: %w", chal.Identifier.Value, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.certs[strings.ToLower(chal.Identifier.Value)] = cert
	return nil
}

func (s *alpnSolver) CleanUp(_ context.Context, chal acme.Challenge) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.certs, strings.ToLower(chal.Identifier.Value))
	return nil
}

func (s *alpnSolver) certificate(name string) (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cert, ok := s.certs[strings.ToLower(name)]
	if !ok {
		return nil, fmt.Errorf("certs: no tls-alpn-01 challenge in progress for %q", name)
	}
	return cert, nil
}
