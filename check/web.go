package check

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"
)

func (r *runner) checkDNS(ctx context.Context) {
	if ip, ok := r.target.IP(); ok {
		r.hostAddrs = []netip.Addr{ip}
		r.add(NameDNS, Skip, r.target.Host+" is an IP address: nothing to resolve", "")
		return
	}
	sctx, cancel := r.step(ctx)
	defer cancel()
	addrs, err := r.opts.Resolver.LookupNetIP(sctx, "ip", r.target.Host)
	if err != nil || len(addrs) == 0 {
		r.dnsFailed = true
		r.add(NameDNS, Fail, fmt.Sprintf("%s does not resolve: %v", r.target.Host, err),
			fmt.Sprintf("create an A record (and an AAAA record for IPv6) for %s pointing at the server's public address; a record made minutes ago may still be propagating", r.target.Host))
		return
	}
	var v4, v6 []string
	for _, a := range addrs {
		a = a.Unmap()
		r.hostAddrs = append(r.hostAddrs, a)
		if a.Is4() {
			v4 = append(v4, a.String())
		} else {
			v6 = append(v6, a.String())
		}
	}
	var parts []string
	if len(v4) > 0 {
		parts = append(parts, "A "+strings.Join(v4, ", "))
	}
	if len(v6) > 0 {
		parts = append(parts, "AAAA "+strings.Join(v6, ", "))
	}
	detail := r.target.Host + ": " + strings.Join(parts, "; ")
	for _, a := range r.hostAddrs {
		if !r.target.Loopback() && !public(a) {
			r.add(NameDNS, Warn, detail, fmt.Sprintf("%s is not a public address: people outside its network cannot reach the server", a))
			return
		}
	}
	r.add(NameDNS, OK, detail, "")
}

// public reports an address reachable from the Internet at large.
func public(a netip.Addr) bool {
	a = a.Unmap()
	return a.IsGlobalUnicast() && !a.IsPrivate() &&
		!netip.MustParsePrefix("100.64.0.0/10").Contains(a) // carrier-grade NAT
}

func (r *runner) checkHTTPS(ctx context.Context) {
	if r.target.Scheme == "http" {
		if r.target.Loopback() {
			r.add(NameHTTPS, OK, "plain HTTP on a loopback address, which browsers treat as secure; a public server needs HTTPS", "")
			return
		}
		r.add(NameHTTPS, Fail, "plain HTTP on "+r.target.Host,
			"browsers hide the camera on plain HTTP: configure [tls] (cert_file/key_file, or acme_domains) and check https://"+hostForURL(r.target.Host))
		return
	}
	if r.dnsFailed {
		r.add(NameHTTPS, Skip, "skipped: "+r.target.Host+" does not resolve", "")
		return
	}
	sctx, cancel := r.step(ctx)
	defer cancel()
	chain, err := r.tlsChain(sctx, "tcp", r.target.Addr(), r.target.Host)
	if err != nil {
		r.insecure = true
		r.add(NameHTTPS, Fail, fmt.Sprintf("TLS to %s: %s", r.target.Addr(), describeNetErr(sctx, err)),
			fmt.Sprintf("is callbox serving HTTPS on %s? Check [tls] and that TCP port %s is open in the firewall", r.target.Addr(), r.target.Port))
		return
	}
	res := CertVerdict(chain, r.target.Host, r.opts.RootCAs, r.opts.Now())
	res.Name = NameHTTPS
	if res.Status == Fail {
		r.insecure = true
		res.Detail += " (the checks below look past it)"
	}
	r.report.Checks = append(r.report.Checks, res)
}

// tlsChain does a TLS handshake that accepts any certificate and returns
// the chain, so the verdict can say what is wrong with it instead of the
// handshake only failing.
func (r *runner) tlsChain(ctx context.Context, network, addr, host string) ([]*x509.Certificate, error) {
	conn, err := r.dialTLS(ctx, network, addr, host)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates, nil
}

func (r *runner) dialTLS(ctx context.Context, network, addr, host string) (*tls.Conn, error) {
	d := tls.Dialer{Config: insecureConfig(host)}
	conn, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return conn.(*tls.Conn), nil
}

// insecureConfig skips Go's verification; CertVerdict does it afterwards.
func insecureConfig(host string) *tls.Config {
	cfg := &tls.Config{InsecureSkipVerify: true} //nolint:gosec // verified by CertVerdict
	if _, err := netip.ParseAddr(host); err != nil {
		cfg.ServerName = host
	}
	return cfg
}

// CertVerdict judges a server's certificate chain for host at time now:
// chain verified to roots (nil: the system's), valid for host, not expired
// (Fail) and not expiring within 14 days (Warn).
func CertVerdict(chain []*x509.Certificate, host string, roots *x509.CertPool, now time.Time) Result {
	if len(chain) == 0 {
		return Result{Status: Fail, Detail: "the server sent no certificate", Advice: "configure [tls] cert_file and key_file, or acme_domains"}
	}
	leaf := chain[0]
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err := leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: roots, Intermediates: inter, CurrentTime: now})
	days := int(leaf.NotAfter.Sub(now).Hours() / 24)
	expiry := leaf.NotAfter.UTC().Format("2006-01-02 15:04 MST")
	var invalid x509.CertificateInvalidError
	var hostErr x509.HostnameError
	var unknown x509.UnknownAuthorityError
	switch {
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		if now.After(leaf.NotAfter) {
			return Result{Status: Fail, Detail: fmt.Sprintf("certificate for %s expired on %s", host, expiry),
				Advice: "renew it: with acme_domains callbox renews by itself, so read its log for ACME errors (ports 80 or 443 must be reachable for the challenge); with cert_file, install a fresh certificate and send SIGHUP"}
		}
		return Result{Status: Fail, Detail: fmt.Sprintf("certificate for %s is not valid before %s", host, leaf.NotBefore.UTC().Format(time.RFC3339)),
			Advice: "check the clock of the server and of this machine"}
	case errors.As(err, &hostErr):
		return Result{Status: Fail, Detail: fmt.Sprintf("certificate is for %s, not %s", certNames(leaf), host),
			Advice: fmt.Sprintf("get a certificate that names %s (add it to [tls] acme_domains)", host)}
	case errors.As(err, &unknown):
		return Result{Status: Fail, Detail: fmt.Sprintf("certificate for %s is not trusted: %v (issuer %q)", host, err, leaf.Issuer.CommonName),
			Advice: "use a certificate from a public CA (acme_domains does it for you); with cert_file, give the full chain (fullchain.pem), not the certificate alone"}
	case err != nil:
		return Result{Status: Fail, Detail: fmt.Sprintf("certificate for %s does not verify: %v", host, err),
			Advice: "use a certificate from a public CA (acme_domains does it for you)"}
	}
	detail := fmt.Sprintf("certificate for %s from %q, valid until %s (%d days)", host, leaf.Issuer.CommonName, expiry, days)
	if leaf.NotAfter.Sub(now) < expiryWarning {
		return Result{Status: Warn, Detail: detail,
			Advice: "it should have been renewed by now: with acme_domains read callbox's log for ACME errors; with cert_file, install a fresh certificate and send SIGHUP"}
	}
	return Result{Status: OK, Detail: detail}
}

func certNames(c *x509.Certificate) string {
	names := append([]string(nil), c.DNSNames...)
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	if len(names) == 0 {
		return fmt.Sprintf("%q", c.Subject.CommonName)
	}
	return strings.Join(names, ", ")
}

// httpClient is what a browser would use, looking past a certificate the
// https check already failed.
func (r *runner) httpClient() *http.Client {
	tr := &http.Transport{
		TLSClientConfig:   r.tlsConfig(r.target.Host),
		ForceAttemptHTTP2: true,
		DisableKeepAlives: true,
	}
	return &http.Client{Transport: tr}
}

// tlsConfig verifies like a browser unless the https check already failed.
func (r *runner) tlsConfig(host string) *tls.Config {
	if r.insecure {
		return insecureConfig(host)
	}
	cfg := &tls.Config{RootCAs: r.opts.RootCAs}
	if _, err := netip.ParseAddr(host); err != nil {
		cfg.ServerName = host
	}
	return cfg
}

func (r *runner) checkPage(ctx context.Context) {
	if r.dnsFailed {
		r.add(NamePage, Skip, "skipped: "+r.target.Host+" does not resolve", "")
		return
	}
	sctx, cancel := r.step(ctx)
	defer cancel()
	url := r.target.Base() + "/"
	req, err := http.NewRequestWithContext(sctx, http.MethodGet, url, nil)
	if err != nil {
		r.add(NamePage, Fail, err.Error(), "")
		return
	}
	start := time.Now()
	client := r.httpClient()
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		r.pageFailed = true
		r.add(NamePage, Fail, fmt.Sprintf("GET %s: %s", url, describeNetErr(sctx, err)),
			fmt.Sprintf("is callbox running, and TCP port %s open in the firewall?", r.target.Port))
		return
	}
	defer resp.Body.Close()
	n, _ := io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	took := time.Since(start).Round(time.Millisecond)
	if resp.StatusCode != http.StatusOK {
		r.add(NamePage, Fail, fmt.Sprintf("GET %s answered %s", url, resp.Status),
			"something other than callbox answers here: behind a reverse proxy, check that it forwards / to callbox's http.listen")
		return
	}
	r.add(NamePage, OK, fmt.Sprintf("GET / answered 200 %s, %d bytes in %s", resp.Header.Get("Content-Type"), n, took), "")
}

// randomRoom names a throwaway room as the browser's /check page does.
func randomRoom() string {
	b := make([]byte, 6)
	rand.Read(b)
	return "check-" + hex.EncodeToString(b)
}

// describeNetErr says what a dial or transaction error means to a person.
func describeNetErr(ctx context.Context, err error) string {
	var dnsErr *net.DNSError
	switch {
	case errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil || isTimeout(err):
		return "no answer (timed out): a firewall drops the packets, or nothing runs there"
	case isRefused(err):
		return "connection refused: nothing listens on that port"
	case errors.As(err, &dnsErr):
		return "name does not resolve: " + dnsErr.Err
	}
	return err.Error()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
