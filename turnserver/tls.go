package turnserver

// TURN over TLS (turns:, RFC 5766 §2.1): the same framing as TCP inside a
// TLS stream. pion needs nothing special for it: it gets a net.Listener whose
// conns are *tls.Conn, wrapped by tcpListener like plain TCP, so multi-secret
// auth, 403s for denied peers and the allocate timeout hold on TLS too.

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"strconv"
)

// listenTLS binds turn.tls_listen with the certificate of opts.TLS. It
// offers no ALPN: no HTTP on this port, and the ACME TLS-ALPN-01 challenge
// is answered on 443 only.
func (s *Server) listenTLS(opts Options) error {
	if s.cfg.TLSListen == "" && opts.Shared == nil {
		return nil
	}
	if opts.TLS == nil && s.cfg.TLSListen != "" {
		return fmt.Errorf("turnserver: turn.tls_listen %q is set but no certificate was given ([tls] is off)", s.cfg.TLSListen)
	}
	s.tlsHost = opts.TLSHost
	if s.tlsHost == "" {
		s.tlsHost = s.host
	}
	if opts.Shared != nil {
		s.shared = newTCPListener(opts.Shared, nil)
		s.sharedPort = opts.SharedPort
	}
	if s.cfg.TLSListen == "" {
		return nil
	}
	ln, err := net.Listen("tcp", s.cfg.TLSListen)
	if err != nil {
		return fmt.Errorf("turnserver: listen tls %s: %w", s.cfg.TLSListen, err)
	}
	cfg := opts.TLS.Clone()
	cfg.NextProtos = nil
	s.tlsAddr = ln.Addr().(*net.TCPAddr)
	s.tls = newTCPListener(tls.NewListener(ln, cfg), nil)
	return nil
}

// streamListeners are the listeners of TURN over a stream: TCP always,
// then the dedicated TLS port and the shared HTTPS port when configured.
func (s *Server) streamListeners() []*tcpListener {
	out := []*tcpListener{s.tcp}
	for _, l := range []*tcpListener{s.tls, s.shared} {
		if l != nil {
			out = append(out, l)
		}
	}
	return out
}

// TLSAddr is the bound turn.tls_listen address, nil when it is off.
func (s *Server) TLSAddr() *net.TCPAddr { return s.tlsAddr }

// turnsURIs are the turns: URIs: the dedicated port, then the shared one.
// The host is the certificate's name (Options.TLSHost): browsers check it,
// so an IP address works only with a certificate for that IP.
func (s *Server) turnsURIs() []string {
	var out []string
	if s.tlsAddr != nil {
		out = append(out, "turns:"+net.JoinHostPort(s.tlsHost, strconv.Itoa(s.tlsAddr.Port))+"?transport=tcp")
	}
	if s.shared != nil && s.sharedPort != 0 {
		out = append(out, "turns:"+net.JoinHostPort(s.tlsHost, strconv.Itoa(s.sharedPort))+"?transport=tcp")
	}
	return out
}

// tlsProtected adds the TLS port to the ports relays may never reach.
func (s *Server) tlsProtected(protected []netip.AddrPort) []netip.AddrPort {
	if s.tlsAddr == nil {
		return protected
	}
	return append(append([]netip.AddrPort(nil), protected...), s.tlsAddr.AddrPort())
}
