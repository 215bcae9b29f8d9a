package app

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/callbox/callbox/config"
	"github.com/callbox/callbox/portmux"
	"github.com/callbox/callbox/turnserver"
)

// listenTLS binds the HTTPS and port-80 listeners, builds the port-443
// splitter when TURN shares the HTTPS port, and fills in TURN's TLS
// options. It returns protected with the new listeners added: relays must
// never reach them.
func (a *App) listenTLS(cfg config.Config, reg prometheus.Registerer, topts *turnserver.Options, protected []netip.AddrPort) ([]netip.AddrPort, error) {
	var err error
	if cfg.HTTP.RedirectListen != "" {
		if a.redirectLn, err = net.Listen("tcp", cfg.HTTP.RedirectListen); err != nil {
			return nil, fmt.Errorf("app: listen redirect %s: %w", cfg.HTTP.RedirectListen, err)
		}
		protected = append(protected, addrPort(a.redirectLn.Addr()))
	}
	if !a.certs.Enabled() {
		return protected, nil
	}
	topts.TLS = a.certs.TLSConfig()
	topts.TLSHost = a.tlsHost(cfg)
	if cfg.HTTP.HTTPSListen == "" {
		return protected, nil
	}
	if a.httpsLn, err = net.Listen("tcp", cfg.HTTP.HTTPSListen); err != nil {
		return nil, fmt.Errorf("app: listen https %s: %w", cfg.HTTP.HTTPSListen, err)
	}
	// The HTTPS port is not protected when TURN shares it: relays go to
	// peers' addresses anyway, and blocking it would only refuse a
	// harmless loop back through the splitter.
	if !cfg.TURN.TLSOnHTTPS {
		return append(protected, addrPort(a.httpsLn.Addr())), nil
	}
	a.mux, err = portmux.New(a.httpsLn, a.certs.TLSConfig(), a.log.With("component", "portmux"), reg)
	if err != nil {
		return nil, err
	}
	topts.Shared = a.mux.TURN()
	topts.SharedPort = a.httpsLn.Addr().(*net.TCPAddr).Port
	return protected, nil
}

// serversTLS builds the HTTPS server (the same handlers as plain HTTP) and
// the port-80 one (ACME HTTP-01 and redirects) on the listeners listenTLS
// bound.
func (a *App) serversTLS(h http.Handler, logger *slog.Logger) {
	if a.redirectLn != nil {
		// With TLS off it serves the app itself (docs/tls.md).
		a.redirect = newHTTPServer(a.certs.HTTPHandler(h), logger)
	}
	switch {
	case a.mux != nil:
		// The mux did the handshake: net/http sees a wrapper, not a
		// *tls.Conn, and learns the TLS state through the context.
		a.https = newHTTPServer(portmux.WithTLSState(h), logger)
		a.https.ConnContext = portmux.ConnContext
	case a.httpsLn != nil:
		a.https = newHTTPServer(h, logger)
		a.https.TLSConfig = a.certs.TLSConfig()
	}
}

// tlsHost is the certificate's name for turns: URIs (browsers check it):
// turn.host, else the first ACME domain, else the first DNS name of the
// certificate file. Empty leaves turnserver to use the turn: URIs' host.
func (a *App) tlsHost(cfg config.Config) string {
	if cfg.TURN.Host != "" {
		return cfg.TURN.Host
	}
	if len(cfg.TLS.ACMEDomains) > 0 {
		return cfg.TLS.ACMEDomains[0]
	}
	// Files mode has its certificate loaded since certs.New.
	cert, err := a.certs.TLSConfig().GetCertificate(&tls.ClientHelloInfo{})
	if err == nil && cert != nil && cert.Leaf != nil && len(cert.Leaf.DNSNames) > 0 {
		return cert.Leaf.DNSNames[0]
	}
	a.log.Warn("turns: URIs carry an IP address: browsers accept it only if the certificate names that IP; set turn.host to the certificate's name")
	return ""
}

func (a *App) httpsAddr() string    { return addrOrOff(a.httpsLn) }
func (a *App) redirectAddr() string { return addrOrOff(a.redirectLn) }
func (a *App) metricsAddr() string  { return addrOrOff(a.metricsLn) }
func (a *App) turnTLSAddr() string {
	if addr := a.turn.TLSAddr(); addr != nil {
		return addr.String()
	}
	return "off"
}

func addrOrOff(ln net.Listener) string {
	if ln == nil {
		return "off"
	}
	return ln.Addr().String()
}

// HTTPSURL is the base URL of the HTTPS server, as "https://127.0.0.1:8443",
// or "" when it is off.
func (a *App) HTTPSURL() string {
	if a.httpsLn == nil {
		return ""
	}
	return "https://" + a.httpsLn.Addr().String()
}

// RedirectURL is the base URL of the port-80 server, or "" when it is off.
func (a *App) RedirectURL() string {
	if a.redirectLn == nil {
		return ""
	}
	return "http://" + a.redirectLn.Addr().String()
}
