package certs

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"

	"github.com/caddyserver/certmagic"
	"github.com/mholt/acmez/v3"
	"github.com/mholt/acmez/v3/acme"
)

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
