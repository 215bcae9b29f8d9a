// Package app assembles callbox from its parts: the STUN/TURN server, the
// signaling hub, the web client and the metrics endpoint. cmd/callbox runs it
// from a config file; the end-to-end tests run the very same assembly
// in-process, which is why it is a package and not code inside main.
package app

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/callbox/callbox/config"
	"github.com/callbox/callbox/signal"
	"github.com/callbox/callbox/turnserver"
	"github.com/callbox/callbox/web"
)

// App is one running callbox: every listener is bound by New, served by Run.
type App struct {
	// static after construction
	cfg       config.Config
	log       *slog.Logger
	turn      *turnserver.Server
	hub       *signal.Hub
	web       *http.Server
	webLn     net.Listener
	metrics   *http.Server // nil when [metrics] listen is empty
	metricsLn net.Listener
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
	a = &App{cfg: cfg, log: logger}
	defer func() {
		if err != nil {
			a.closeListeners()
		}
	}()

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

	a.turn, err = turnserver.New(cfg.TURN, turnserver.Options{
		Logger:     logger.With("component", "turn"),
		Registerer: reg,
		Protected:  protected,
	})
	if err != nil {
		return nil, err
	}
	a.hub, err = signal.NewHub(cfg.Signal, signal.Options{
		Logger:     logger.With("component", "signal"),
		Registerer: reg,
		ICE:        a.iceServers,
	})
	if err != nil {
		a.turn.Close()
		return nil, err
	}
	mux := http.NewServeMux()
	a.hub.Routes(mux)
	web.Routes(mux)
	a.web = newHTTPServer(mux, logger)
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
	c := a.turn.Credentials(user, a.cfg.TURN.CredentialTTL)
	return []signal.ICEServer{
		{URLs: a.turn.STUNURIs()},
		{URLs: c.URIs, Username: c.Username, Credential: c.Password},
	}, c.Expires
}

// Run serves until ctx is done, then shuts down: clients are told to
// reconnect, sockets closed, TURN allocations ended, within
// [signal] shutdown_timeout plus a short grace for the listeners.
func (a *App) Run(ctx context.Context) error {
	a.log.Info("callbox running", "web", a.HTTPURL(), "turn_udp", a.turn.UDPAddr().String(), "turn_tcp", a.turn.TCPAddr().String(), "metrics", a.metricsAddr())
	errc := make(chan error, 2)
	var wg sync.WaitGroup
	serve := func(name string, srv *http.Server, ln net.Listener) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("app: serve %s %s: %w", name, ln.Addr(), err)
			}
		}()
	}
	serve("http", a.web, a.webLn)
	if a.metrics != nil {
		serve("metrics", a.metrics, a.metricsLn)
	}

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	a.log.Info("callbox shutting down")
	grace := a.cfg.Signal.ShutdownTimeout + 2*time.Second
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace)
	defer cancel()
	// The hub first, so peers hear "reconnect" before anything else goes away.
	errs := []error{runErr, a.hub.Shutdown(sctx), a.web.Shutdown(sctx)}
	if a.metrics != nil {
		errs = append(errs, a.metrics.Shutdown(sctx))
	}
	errs = append(errs, a.turn.Close())
	wg.Wait()
	a.log.Info("callbox stopped")
	return errors.Join(errs...)
}

// closeListeners releases what New bound when New fails half way.
func (a *App) closeListeners() {
	for _, ln := range []net.Listener{a.webLn, a.metricsLn} {
		if ln != nil {
			ln.Close()
		}
	}
}

// HTTPURL is the base URL of the web server, as "http://127.0.0.1:8080".
func (a *App) HTTPURL() string { return "http://" + a.webLn.Addr().String() }

// TURN is the running STUN/TURN server.
func (a *App) TURN() *turnserver.Server { return a.turn }

// Hub is the running signaling hub.
func (a *App) Hub() *signal.Hub { return a.hub }

func (a *App) metricsAddr() string {
	if a.metricsLn == nil {
		return "off"
	}
	return a.metricsLn.Addr().String()
}

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
