// Package app assembles callbox from its parts: the STUN/TURN server, the
// signaling hub, the web client and the metrics endpoint. cmd/callbox runs it
// from a config file; the end-to-end tests run the very same assembly
// in-process, which is why it is a package and not code inside main.
package app

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/callbox/callbox/certs"
	"github.com/callbox/callbox/cluster"
	"github.com/callbox/callbox/config"
	"github.com/callbox/callbox/portmux"
	"github.com/callbox/callbox/signal"
	"github.com/callbox/callbox/turnserver"
	"github.com/callbox/callbox/web"
)

// App is one running callbox: every listener is bound by New, served by Run.
type App struct {
	// cfg is the configuration in force, swapped whole by Reload.
	cfg atomic.Pointer[config.Config]

	// static after construction
	log        *slog.Logger
	certs      *certs.Manager
	turn       *turnserver.Server
	hub        *signal.Hub
	cluster    *cluster.Node // nil without [cluster] nats
	web        *http.Server
	webLn      net.Listener
	metrics    *http.Server // nil when [metrics] listen is empty
	metricsLn  net.Listener
	https      *http.Server // nil when http.https_listen is empty
	httpsLn    net.Listener // raw TCP; TLS is added by ServeTLS or the mux
	mux        *portmux.Mux // nil unless turn.tls_on_https
	redirect   *http.Server // nil when http.redirect_listen is empty
	redirectLn net.Listener

	reloadMu sync.Mutex // serialises Reload
}

// New binds every listener (a port 0 is resolved by the kernel) and starts
// the TURN server. With no TURN secret configured it generates a random one,
// which is right for a local demo and says so in the log.
func New(cfg config.Config, logger *slog.Logger) (a *App, err error) {
	if len(cfg.TURN.Secrets) == 0 {
		secret, err := RandomSecret()
		if err != nil {
			return nil, err
		}
		cfg.TURN.Secrets = []string{secret}
		logger.Warn("turn.secrets is empty: generated a random TURN secret for this run; set turn.secrets for credentials that survive a restart")
	}
	a = &App{log: logger}
	a.cfg.Store(&cfg)
	// built, not a: every "return nil, err" below sets a to nil before
	// this runs.
	built := a
	defer func() {
		if err != nil {
			built.closeListeners()
		}
	}()

	a.certs, err = certs.New(cfg.TLS, logger)
	if err != nil {
		return nil, err
	}
	a.webLn, err = net.Listen("tcp", cfg.HTTP.Listen)
	if err != nil {
		return nil, fmt.Errorf("app: listen http %s: %w", cfg.HTTP.Listen, err)
	}
	protected := []netip.AddrPort{addrPort(a.webLn.Addr())}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if cfg.Metrics.Listen != "" {
		a.metricsLn, err = net.Listen("tcp", cfg.Metrics.Listen)
		if err != nil {
			return nil, fmt.Errorf("app: listen metrics %s: %w", cfg.Metrics.Listen, err)
		}
		protected = append(protected, addrPort(a.metricsLn.Addr()))
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		a.metrics = newHTTPServer(mux, logger)
	}

	topts := turnserver.Options{
		Logger:     logger.With("component", "turn"),
		Registerer: reg,
	}
	if protected, err = a.listenTLS(cfg, reg, &topts, protected); err != nil {
		return nil, err
	}
	topts.Protected = protected
	var router signal.Router
	if len(cfg.Cluster.NATS) > 0 {
		a.cluster, err = cluster.New(cfg.Cluster, cluster.Options{
			Logger:     logger.With("component", "cluster"),
			Registerer: reg,
			Signal:     cfg.Signal,
		})
		if err != nil {
			return nil, err
		}
		router = a.cluster
		topts.RemoteAllocations = a.cluster.RemoteAllocations
		topts.OnAllocations = a.cluster.LocalAllocations
	}
	a.turn, err = turnserver.New(cfg.TURN, topts)
	if err != nil {
		return nil, err
	}
	a.hub, err = signal.NewHub(cfg.Signal, signal.Options{
		Logger:     logger.With("component", "signal"),
		Registerer: reg,
		ICE:        a.iceServers,
		Router:     router,
		ResumeKey:  resumeKey(cfg.TURN.Secrets[0]),
	})
	if err != nil {
		a.turn.Close()
		return nil, err
	}
	if a.cluster != nil {
		if err := a.cluster.Start(a.hub); err != nil {
			a.hub.Shutdown(context.Background())
			a.turn.Close()
			return nil, err
		}
	}
	mux := http.NewServeMux()
	a.hub.Routes(mux)
	web.Routes(mux)
	mux.HandleFunc("GET /api/info", a.serveInfo)
	a.web = newHTTPServer(mux, logger)
	a.serversTLS(mux, logger)
	a.logHostAddresses()
	return a, nil
}

func newHTTPServer(h http.Handler, logger *slog.Logger) *http.Server {
	return &http.Server{
		Handler: h,
		// Slowloris: a client gets this long to send its headers.
		ReadHeaderTimeout: 10 * time.Second,
		// Bodies here are small (no uploads). Hijacked WebSockets are not
		// bound by it: the hub sets its own deadlines after the upgrade.
		ReadTimeout: 30 * time.Second,
		// Pages and static files are small; a stalled reader is cut.
		WriteTimeout: 30 * time.Second,
		// Keep-alive connections of idle tabs are closed after two minutes.
		IdleTimeout: 2 * time.Minute,
		ErrorLog:    slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
}

// iceServers is the hub's ICEProvider: callbox's own STUN, and TURN with
// credentials minted for this user alone.
func (a *App) iceServers(user string) ([]signal.ICEServer, time.Time) {
	cfg := a.cfg.Load()
	c := a.turn.Credentials(user, cfg.TURN.CredentialTTL)
	// The other nodes' TURN accepts the same credentials (one shared
	// secret): listed after this node's own, for a browser to fall back on.
	uris := append(c.URIs, cfg.Cluster.TURNURIs...)
	return []signal.ICEServer{
		{URLs: a.turn.STUNURIs()},
		{URLs: uris, Username: c.Username, Credential: c.Password},
	}, c.Expires
}

// Run serves until ctx is done, then shuts down: clients are told to
// reconnect, sockets closed, TURN allocations ended, within
// [signal] shutdown_timeout plus a short grace for the listeners. It also
// runs the certificate manager (renewals, file polling) and the port-443
// splitter, and waits for both.
func (a *App) Run(ctx context.Context) error {
	a.log.Info("callbox running", "web", a.HTTPURL(), "https", a.httpsAddr(), "redirect", a.redirectAddr(),
		"turn_udp", a.turn.UDPAddr().String(), "turn_tcp", a.turn.TCPAddr().String(), "turn_tls", a.turnTLSAddr(),
		"turn_on_https", a.mux != nil, "metrics", a.metricsAddr())
	errc := make(chan error, 6)
	var wg sync.WaitGroup
	serve := func(name string, srv *http.Server, ln net.Listener, tls bool) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			if tls {
				err = srv.ServeTLS(ln, "", "") // the certificate comes from srv.TLSConfig
			} else {
				err = srv.Serve(ln)
			}
			if err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("app: serve %s %s: %w", name, ln.Addr(), err)
			}
		}()
	}
	serve("http", a.web, a.webLn, false)
	if a.metrics != nil {
		serve("metrics", a.metrics, a.metricsLn, false)
	}
	if a.redirect != nil {
		serve("redirect", a.redirect, a.redirectLn, false)
	}
	// bg is the certificate manager's and the splitter's: they stop after
	// the servers that need them.
	bg, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBG()
	switch {
	case a.mux != nil:
		serve("https", a.https, a.mux.HTTP(), false) // the mux did the handshake
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.mux.Run(bg); err != nil {
				errc <- err
			}
		}()
	case a.https != nil:
		serve("https", a.https, a.httpsLn, true)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		a.certs.Run(bg) //nolint:errcheck // returns nil when bg ends
	}()

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	a.log.Info("callbox shutting down")
	grace := a.cfg.Load().Signal.ShutdownTimeout + 2*time.Second
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace)
	defer cancel()
	// The hub first, so peers hear "reconnect" before anything else goes away.
	errs := []error{runErr, a.hub.Shutdown(sctx), a.web.Shutdown(sctx)}
	if a.cluster != nil {
		// After the hub: peers told to reconnect elsewhere claim their
		// sessions (and the signals held for them) from this node while
		// it still answers. They come back after 1 to 2 s (the reconnect
		// message's "after"); those that do not are the cluster's to
		// resume once this node says bye.
		a.awaitClaims(sctx, 3*time.Second)
		errs = append(errs, a.cluster.Close())
	}
	for _, srv := range []*http.Server{a.https, a.redirect, a.metrics} {
		if srv != nil {
			errs = append(errs, srv.Shutdown(sctx))
		}
	}
	stopBG()
	errs = append(errs, a.turn.Close())
	wg.Wait()
	a.log.Info("callbox stopped")
	return errors.Join(errs...)
}

// awaitClaims waits until other nodes have claimed every peer of the hub,
// or for at most d.
func (a *App) awaitClaims(ctx context.Context, d time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for a.hub.PeerCount() > 0 {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// closeListeners releases what New bound when New fails half way.
func (a *App) closeListeners() {
	for _, ln := range []net.Listener{a.webLn, a.metricsLn, a.httpsLn, a.redirectLn} {
		if ln != nil {
			ln.Close()
		}
	}
}

// HTTPURL is the base URL of the web server, as "http://127.0.0.1:8080".
func (a *App) HTTPURL() string { return "http://" + a.webLn.Addr().String() }

// TURN is the running STUN/TURN server.
func (a *App) TURN() *turnserver.Server { return a.turn }

// Cluster is the node's NATS membership; nil without [cluster] nats.
func (a *App) Cluster() *cluster.Node { return a.cluster }

// Hub is the running signaling hub.
func (a *App) Hub() *signal.Hub { return a.hub }

// RandomSecret returns a fresh 32-byte secret, base64url-encoded.
func RandomSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("app: random secret: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

func addrPort(a net.Addr) netip.AddrPort {
	if tcp, ok := a.(*net.TCPAddr); ok {
		return tcp.AddrPort()
	}
	return netip.AddrPort{}
}

// resumeKey derives the key of the hub's resume tokens from the TURN
// secret, the one secret a restarted process is sure to have again, so the
// next process can resume this one's sessions.
func resumeKey(turnSecret string) []byte {
	m := hmac.New(sha256.New, []byte(turnSecret))
	m.Write([]byte("callbox signal resume tokens"))
	return m.Sum(nil)
}
