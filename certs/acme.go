package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/mholt/acmez/v3"
	"github.com/mholt/acmez/v3/acme"
	"go.uber.org/zap"

	"github.com/callbox/callbox/config"
)

// Backoff of the first obtain when it fails (DNS not pointed here yet, port
// 80 closed): soon enough to notice a fix, slow enough for the CA's limits
// (Let's Encrypt allows 5 failed validations per name and hour).
const (
	obtainRetryMin = time.Minute
	obtainRetryMax = time.Hour
)

// acmeState is the ACME half of a Manager. certmagic keeps the certificates
// (storage, in-memory cache, renewal); the issuer below talks to the CA
// through acmez with HTTP-01 and TLS-ALPN-01 solvers of our own. certmagic's ACMEIssuer is
// not used because its solvers bind the challenge ports themselves when
// they are free and keep challenges in a process-wide map; ours live in the
// Manager and are served only by HTTPHandler and TLSConfig, on the app's
// own listeners.
type acmeState struct {
	// static after construction
	domains []string
	log     *slog.Logger
	zlog    *zap.Logger
	storage *guardedStorage
	issuer  *acmeIssuer
	solver  *httpSolver
	alpn    *alpnSolver
	// certmagic tuning, zero for its defaults (checks every 10 min, renew in
	// the last third of the lifetime); tests shorten them.
	renewCheck         time.Duration
	renewRatio         float64
	retryMin, retryMax time.Duration

	// magic is set by run once its cache exists; handshakes read it.
	magic atomic.Pointer[certmagic.Config]
}

func newACMEState(cfg config.TLS, log *slog.Logger) (*acmeState, error) {
	client, err := caHTTPClient(cfg.ACMECARoot)
	if err != nil {
		return nil, err
	}
	zlog := zapToSlog(log.Handler())
	solver := &httpSolver{chals: make(map[solverKey]string)}
	alpn := &alpnSolver{certs: make(map[string]*tls.Certificate)}
	// Made here so that a folder callbox cannot create fails start-up,
	// not the first order minutes later.
	if err := os.MkdirAll(cfg.ACMEStorage, 0o700); err != nil {
		return nil, fmt.Errorf("certs: acme_storage: %w", err)
	}
	storage := &guardedStorage{inner: &certmagic.FileStorage{Path: cfg.ACMEStorage}}
	domains := make([]string, len(cfg.ACMEDomains))
	for i, d := range cfg.ACMEDomains {
		domains[i] = strings.ToLower(d)
	}
	iss := &acmeIssuer{
		client: &acmez.Client{
			Client: &acme.Client{
				Directory:  cfg.ACMECA,
				HTTPClient: client,
				UserAgent:  "callbox",
				Logger:     log, // acmez adds the CA to each line
			},
			// Both challenges: HTTP-01 on port 80, TLS-ALPN-01 on 443 for
			// hosts whose port 80 is closed. acmez tries the other one
			// when one fails.
			ChallengeSolvers: map[string]acmez.Solver{
				acme.ChallengeTypeHTTP01:    solver,
				acme.ChallengeTypeTLSALPN01: alpn,
			},
		},
		key:     issuerKey(cfg.ACMECA),
		email:   cfg.ACMEEmail,
		storage: storage,
		log:     log,
	}
	return &acmeState{
		domains:  domains,
		log:      log,
		zlog:     zlog,
		storage:  storage,
		issuer:   iss,
		solver:   solver,
		alpn:     alpn,
		retryMin: obtainRetryMin,
		retryMax: obtainRetryMax,
	}, nil
}

// caHTTPClient trusts the system roots plus those in rootFile, for the CA's
// own HTTPS (a private CA, or pebble in tests).
func caHTTPClient(rootFile string) (*http.Client, error) {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	if rootFile != "" {
		pem, err := os.ReadFile(rootFile)
		if err != nil {
			return nil, fmt.Errorf("certs: acme_ca_root: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("certs: acme_ca_root %s: no PEM certificate in it", rootFile)
		}
		transport.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	// A bound per request: a stuck CA must not hang the obtain loop.
	return &http.Client{Transport: transport, Timeout: 2 * time.Minute}, nil
}

// run obtains the certificates, then leaves renewal to certmagic's
// maintenance goroutine until ctx ends, and stops it before returning.
func (a *acmeState) run(ctx context.Context) {
	// Deferred first, so it runs last: after Stop, renewal jobs still on
	// certmagic's queue (which cannot be waited for; Stop cancels their
	// context) find the storage closed.
	defer a.storage.close()
	cache, magic := a.newMagic()
	// Stop waits for the maintenance goroutine.
	defer cache.Stop()
	a.magic.Store(magic)

	wait := a.retryMin
	for {
		err := magic.ManageSync(ctx, a.domains)
		if err == nil {
			a.log.Info("certificates managed", "domains", a.domains)
			break
		}
		if ctx.Err() != nil {
			return
		}
		// A stored certificate, if any, is served meanwhile.
		a.log.Error("cannot obtain or renew certificate; do the names resolve to this host, with port 80 or 443 open?",
			"domains", a.domains, "retry_in", wait, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, a.retryMax)
	}
	<-ctx.Done()
}

// newMagic makes certmagic's cache (which starts its maintenance goroutine:
// the caller must Stop it) and a config on it that owns nothing global.
func (a *acmeState) newMagic() (*certmagic.Cache, *certmagic.Config) {
	cache := certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert: func(certmagic.Certificate) (*certmagic.Config, error) {
			return a.magic.Load(), nil
		},
		RenewCheckInterval: a.renewCheck,
		Logger:             a.zlog,
	})
	magic := certmagic.New(cache, certmagic.Config{
		RenewalWindowRatio: a.renewRatio,
		Issuers:            []certmagic.Issuer{a.issuer},
		Storage:            a.storage,
		Logger:             a.zlog,
		// Clients without SNI (Firefox on turns:, IP-only probes) and with
		// an unknown name get the first domain's certificate.
		DefaultServerName:  a.domains[0],
		FallbackServerName: a.domains[0],
	})
	return cache, magic
}

func (a *acmeState) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if len(hello.SupportedProtos) == 1 && hello.SupportedProtos[0] == acmez.ACMETLS1Protocol {
		return a.alpn.certificate(hello.ServerName)
	}
	magic := a.magic.Load()
	if magic == nil {
		return nil, errNoCertificate
	}
	return magic.GetCertificate(hello)
}
