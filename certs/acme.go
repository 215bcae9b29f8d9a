package certs

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/mholt/acmez/v3"
	"github.com/mholt/acmez/v3/acme"
	"go.uber.org/zap"

	"github.com/callbox/callbox/config"
)

// challengePath is where HTTP-01 key authorizations are fetched (RFC 8555 §8.3).
const challengePath = "/.well-known/acme-challenge/"

// Backoff of the first obtain when it fails (DNS not pointed here yet, port
// 80 closed): soon enough to notice a fix, slow enough for the CA's limits
// (Let's Encrypt allows 5 failed validations per name and hour).
const (
	obtainRetryMin = time.Minute
	obtainRetryMax = time.Hour
)

// acmeState is the ACME half of a Manager. certmagic keeps the certificates
// (storage, in-memory cache, renewal); the issuer below talks to the CA
// through acmez with an HTTP-01 solver of our own. certmagic's ACMEIssuer is
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
				Logger:     log.With("ca", cfg.ACMECA),
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

// issuerKey names a CA in storage paths the way certmagic's ACMEIssuer
// does ("acme-v02.api.letsencrypt.org-directory"), so a folder is readable
// by either.
func issuerKey(ca string) string {
	rest, _ := strings.CutPrefix(ca, "https://")
	rest = strings.Trim(rest, "/")
	return strings.NewReplacer("/", "-", "\\", "-").Replace(rest)
}

// acmeIssuer is a certmagic.Issuer that orders certificates over ACME.
type acmeIssuer struct {
	// static after construction
	client  *acmez.Client
	key     string
	email   string
	storage certmagic.Storage
	log     *slog.Logger

	mu      sync.Mutex
	account *acme.Account // guarded by mu; registered on first use
}

var (
	_ certmagic.Issuer            = (*acmeIssuer)(nil)
	_ certmagic.RenewalInfoGetter = (*acmeIssuer)(nil)
)

func (i *acmeIssuer) IssuerKey() string { return i.key }

// Issue orders a certificate for the CSR's names and returns the first
// chain the CA offers.
func (i *acmeIssuer) Issue(ctx context.Context, csr *x509.CertificateRequest) (*certmagic.IssuedCertificate, error) {
	acct, err := i.getAccount(ctx)
	if err != nil {
		return nil, err
	}
	params, err := acmez.OrderParametersFromCSR(acct, csr)
	if err != nil {
		return nil, fmt.Errorf("certs: order: %w", err)
	}
	chains, err := i.client.ObtainCertificate(ctx, params)
	if err != nil {
		var prob acme.Problem
		if errors.As(err, &prob) && prob.Type == acme.ProblemTypeAccountDoesNotExist {
			i.mu.Lock()
			i.account = nil // register again next time
			i.mu.Unlock()
		}
		return nil, fmt.Errorf("certs: obtain %v from %s: %w", csr.DNSNames, i.client.Directory, err)
	}
	if len(chains) == 0 {
		return nil, fmt.Errorf("certs: obtain %v from %s: no certificate returned", csr.DNSNames, i.client.Directory)
	}
	i.log.Info("certificate issued", "names", csr.DNSNames, "ca", i.client.Directory)
	return &certmagic.IssuedCertificate{Certificate: chains[0].ChainPEM, Metadata: chains[0]}, nil
}

// GetRenewalInfo lets certmagic follow the CA's renewal window (ARI, RFC 9773).
func (i *acmeIssuer) GetRenewalInfo(ctx context.Context, cert certmagic.Certificate) (acme.RenewalInfo, error) {
	return i.client.GetRenewalInfo(ctx, cert.Leaf)
}

// accountKeyPath is where the account key lives in storage, one per CA and email.
func (i *acmeIssuer) accountKeyPath() string {
	email := i.email
	if email == "" {
		email = "default"
	}
	return "acme/" + certmagic.StorageKeys.Safe(i.key) + "/users/" + certmagic.StorageKeys.Safe(email) + "/account.key"
}

// getAccount loads the account key from storage, or makes and stores one,
// and registers it. Registering an existing key returns its account, so
// only the key needs keeping.
func (i *acmeIssuer) getAccount(ctx context.Context) (acme.Account, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.account != nil {
		return *i.account, nil
	}
	path := i.accountKeyPath()
	keyPEM, err := i.storage.Load(ctx, path)
	var key crypto.Signer
	switch {
	case err == nil:
		if key, err = decodeAccountKey(keyPEM); err != nil {
			return acme.Account{}, fmt.Errorf("certs: account key %s: %w", path, err)
		}
	case errors.Is(err, os.ErrNotExist):
		// Stored before registering: a crash in between reuses the key
		// rather than leaving an account nobody holds.
		if key, keyPEM, err = newAccountKey(); err != nil {
			return acme.Account{}, err
		}
		if err := i.storage.Store(ctx, path, keyPEM); err != nil {
			return acme.Account{}, fmt.Errorf("certs: store account key: %w", err)
		}
	default:
		return acme.Account{}, fmt.Errorf("certs: load account key: %w", err)
	}
	acct := acme.Account{TermsOfServiceAgreed: true, PrivateKey: key}
	if i.email != "" {
		acct.Contact = []string{"mailto:" + i.email}
	}
	acct, err = i.client.NewAccount(ctx, acct)
	if err != nil {
		return acme.Account{}, fmt.Errorf("certs: register ACME account with %s: %w", i.client.Directory, err)
	}
	i.log.Info("ACME account ready", "ca", i.client.Directory, "account", acct.Location)
	i.account = &acct
	return acct, nil
}

// newAccountKey makes an ECDSA P-256 key, the smallest every CA takes.
func newAccountKey() (crypto.Signer, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: account key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: account key: %w", err)
	}
	return key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func decodeAccountKey(data []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM data")
	}
	var key any
	var err error
	switch block.Type {
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	}
	if err != nil {
		return nil, err
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%T is not a signing key", key)
	}
	return signer, nil
}

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
