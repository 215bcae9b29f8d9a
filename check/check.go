// Package check tests a deployed callbox from the outside, the way a browser
// would: DNS, the HTTPS certificate, the page, a WebSocket join, the ICE
// servers handed out, a STUN Binding, TURN allocations over UDP, TCP and TLS
// with the handed-out credentials, and a packet relayed between two of them.
// Each check ends in a Result with, for a failure, advice in plain words.
package check

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"time"
)

// Status is the verdict of one check.
type Status string

// Statuses, from best to worst; Skip is a check that could not or need not run.
const (
	OK   Status = "ok"
	Warn Status = "warn"
	Fail Status = "fail"
	Skip Status = "skip"
)

// Check names, in the order Run reports them.
const (
	NameURL   = "url"
	NameDNS   = "dns"
	NameHTTPS = "https"
	NamePage  = "page"
	// NamePublicAddress is the server's own view of its relay address (/api/info).
	NamePublicAddress = "public-address"
	NameWebSocket     = "websocket"
	NameICE           = "ice-servers"
	NameSTUN          = "stun"
	NameTURNUDP       = "turn-udp"
	NameTURNTCP       = "turn-tcp"
	NameTURNTLS       = "turn-tls"
	NameRelay         = "relay"
)

// Result is one check.
type Result struct {
	Name   string `json:"name"`
	Status Status `json:"status"`
	Detail string `json:"detail"`
	// Advice says what to change, for failures and warnings.
	Advice string `json:"advice,omitempty"`
}

// Report is the outcome of Run, one Result per check in order.
type Report struct {
	URL    string   `json:"url"`
	Checks []Result `json:"checks"`
}

// Failed reports whether any check failed.
func (r Report) Failed() bool {
	for _, c := range r.Checks {
		if c.Status == Fail {
			return true
		}
	}
	return false
}

// Get returns the check called name, and whether there is one.
func (r Report) Get(name string) (Result, bool) {
	for _, c := range r.Checks {
		if c.Name == name {
			return c, true
		}
	}
	return Result{}, false
}

// Options say what to check and how.
type Options struct {
	// URL is the server (https://call.example.com, http://127.0.0.1:8080)
	// or a call link (/r/ROOM?invite=TOKEN), whose room and invite are used
	// unless Room or Invite are set.
	URL string
	// Room to join; empty joins a throwaway room with a random name.
	Room     string
	Password string
	Invite   string
	// Timeout bounds the whole run; 0 leaves it to ctx.
	Timeout time.Duration
	// StepTimeout bounds each network step (a dial, a STUN or TURN
	// transaction) so that one silent port does not eat the time of the
	// checks after it; 0 means 5 s.
	StepTimeout time.Duration
	// RootCAs verifies certificates; nil uses the system roots.
	RootCAs *x509.CertPool
	// Resolver looks names up; nil uses net.DefaultResolver.
	Resolver *net.Resolver
	// Now is the clock certificate and credential expiry is judged by;
	// nil is time.Now.
	Now    func() time.Time
	Logger *slog.Logger // nil discards
}

// Certificates expiring sooner than this are a warning: ACME renews 30 days
// ahead, so a certificate this close to its end is not being renewed.
const expiryWarning = 14 * 24 * time.Hour

const defaultStepTimeout = 5 * time.Second

// Target is a parsed URL to check.
type Target struct {
	Scheme string // "http" or "https"
	Host   string // name or IP, without brackets
	Port   string // explicit or the scheme's default
	Room   string // from a /r/ROOM link
	Invite string // from ?invite=
}

// Base is scheme://host:port, the origin a browser would send.
func (t Target) Base() string {
	port := t.Port
	if (t.Scheme == "https" && port == "443") || (t.Scheme == "http" && port == "80") {
		return t.Scheme + "://" + hostForURL(t.Host)
	}
	return t.Scheme + "://" + net.JoinHostPort(t.Host, port)
}

// Addr is host:port for dialing.
func (t Target) Addr() string { return net.JoinHostPort(t.Host, t.Port) }

// IP is the host when it is an IP literal.
func (t Target) IP() (netip.Addr, bool) {
	ip, err := netip.ParseAddr(t.Host)
	return ip.Unmap(), err == nil
}

// Loopback reports a host that is a loopback address or "localhost", which
// browsers treat as a secure context even on plain HTTP.
func (t Target) Loopback() bool {
	if ip, ok := t.IP(); ok {
		return ip.IsLoopback()
	}
	h := strings.ToLower(strings.TrimSuffix(t.Host, "."))
	return h == "localhost" || strings.HasSuffix(h, ".localhost")
}

func hostForURL(host string) string {
	if strings.Contains(host, ":") {
		return "[" + host + "]"
	}
	return host
}

// ParseTarget reads what a user types: a base URL, a bare host name (taken
// as https://), or a call link /r/ROOM?invite=TOKEN.
func ParseTarget(raw string) (Target, error) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return Target{}, errors.New("check: no URL given")
	}
	if !strings.Contains(raw, "://") {
		raw = "https://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil {
		return Target{}, fmt.Errorf("check: URL %q: %w", raw, err)
	}
	t := Target{Scheme: strings.ToLower(u.Scheme), Host: u.Hostname(), Port: u.Port()}
	switch t.Scheme {
	case "https":
		if t.Port == "" {
			t.Port = "443"
		}
	case "http":
		if t.Port == "" {
			t.Port = "80"
		}
	default:
		return Target{}, fmt.Errorf("check: URL %q: scheme %q, want http or https", raw, u.Scheme)
	}
	if t.Host == "" {
		return Target{}, fmt.Errorf("check: URL %q has no host", raw)
	}
	if u.User != nil {
		return Target{}, fmt.Errorf("check: URL %q: user info is not supported (use -password)", raw)
	}
	if strings.ContainsAny(t.Host, " /\\?#@%") {
		return Target{}, fmt.Errorf("check: URL %q: bad host %q", raw, t.Host)
	}
	if _, perr := parsePort(t.Port); perr != nil {
		return Target{}, fmt.Errorf("check: URL %q: %w", raw, perr)
	}
	if room, ok := strings.CutPrefix(u.Path, "/r/"); ok {
		t.Room = strings.TrimSuffix(room, "/")
	}
	t.Invite = u.Query().Get("invite")
	return t, nil
}

func parsePort(s string) (int, error) {
	n := 0
	if s == "" || len(s) > 5 {
		return 0, fmt.Errorf("bad port %q", s)
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("bad port %q", s)
		}
		n = n*10 + int(c-'0')
	}
	if n < 1 || n > 65535 {
		return 0, fmt.Errorf("port %d out of range", n)
	}
	return n, nil
}

// runner carries what one check learns for the next ones.
type runner struct {
	opts   Options
	target Target
	log    *slog.Logger
	report Report

	hostAddrs []netip.Addr // the web host's addresses (DNS or the literal)
	dnsFailed bool
	// pageFailed: the web server did not answer at all.
	pageFailed bool
	// insecure: the certificate failed its check, which is reported once;
	// the checks after it look past it to say what else is wrong.
	insecure bool
	welcome  *serverMsg // nil when the WebSocket check failed
	ice      iceSet
	// kept is the first allocation that worked (UDP, else TCP, else TLS),
	// reused by the relay check with a second one made the same way.
	kept *allocation
}

// Run runs every check within opts.Timeout (and ctx) and reports them all;
// it never stops early, so one report shows every problem it can see.
func Run(ctx context.Context, opts Options) Report {
	if opts.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, opts.Timeout)
		defer cancel()
	}
	if opts.StepTimeout <= 0 {
		opts.StepTimeout = defaultStepTimeout
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Resolver == nil {
		opts.Resolver = net.DefaultResolver
	}
	r := &runner{opts: opts, log: opts.Logger, report: Report{URL: opts.URL}}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	t, err := ParseTarget(opts.URL)
	if err != nil {
		r.add(NameURL, Fail, err.Error(), "give the address of the server, as https://call.example.com or a call link https://call.example.com/r/ROOM?invite=…")
		return r.report
	}
	r.target = t
	defer r.closeAllocations()

	checks := []struct {
		name string
		run  func(context.Context)
	}{
		{NameDNS, r.checkDNS},
		{NameHTTPS, r.checkHTTPS},
		{NamePage, r.checkPage},
		{NamePublicAddress, r.checkPublicAddress},
		{NameWebSocket, r.checkWebSocket},
		{NameICE, func(context.Context) { r.checkICE() }},
		{NameSTUN, r.checkSTUN},
		{NameTURNUDP, func(ctx context.Context) { r.checkTURN(ctx, NameTURNUDP) }},
		{NameTURNTCP, func(ctx context.Context) { r.checkTURN(ctx, NameTURNTCP) }},
		{NameTURNTLS, func(ctx context.Context) { r.checkTURN(ctx, NameTURNTLS) }},
		{NameRelay, r.checkRelay},
	}
	for _, c := range checks {
		if ctx.Err() != nil {
			// The check cut off by the deadline failed; these never started.
			r.add(c.name, Skip, "not run: out of time (raise -timeout)", "")
			continue
		}
		c.run(ctx)
	}
	return r.report
}

func (r *runner) add(name string, s Status, detail, advice string) {
	r.log.Debug("check", "name", name, "status", s, "detail", detail)
	r.report.Checks = append(r.report.Checks, Result{Name: name, Status: s, Detail: detail, Advice: advice})
}

// step is a context for one network step: StepTimeout or what is left.
func (r *runner) step(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, r.opts.StepTimeout)
}

func (r *runner) closeAllocations() {
	if r.kept != nil {
		r.kept.close()
		r.kept = nil
	}
}
