package check

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/pion/logging"
	"github.com/pion/stun/v3"
	"github.com/pion/turn/v4"
)

// allocation is one TURN client with its relay. Its read loop is the only
// goroutine it starts; close waits for it.
type allocation struct {
	uri       iceURI // what it was made from
	tls       bool
	label     string // UDP, TCP or TLS
	client    *turn.Client
	conn      net.PacketConn // to the server: connected UDP, or a stream in turn.STUNConn
	relay     net.PacketConn
	relayAddr netip.AddrPort
	server    netip.AddrPort
	done      chan struct{}
	readErr   error // set by the read loop before done closes
}

// connectedUDP lets pion's client use a connected UDP socket, whose reads
// report an ICMP port-unreachable as "connection refused". Everything the
// client sends goes to the server, so the destination is ignored.
type connectedUDP struct{ *net.UDPConn }

func (c connectedUDP) WriteTo(b []byte, _ net.Addr) (int, error) { return c.Write(b) }

// transports of the three TURN checks.
var turnChecks = map[string]struct {
	scheme stun.SchemeType
	proto  stun.ProtoType
	label  string
}{
	NameTURNUDP: {stun.SchemeTypeTURN, stun.ProtoTypeUDP, "UDP"},
	NameTURNTCP: {stun.SchemeTypeTURN, stun.ProtoTypeTCP, "TCP"},
	NameTURNTLS: {stun.SchemeTypeTURNS, stun.ProtoTypeUnknown, "TLS"},
}

func transportLabel(u iceURI, tlsHost bool) string {
	switch {
	case tlsHost:
		return "TLS"
	case u.uri.Proto == stun.ProtoTypeTCP:
		return "TCP"
	}
	return "UDP"
}

// certError is a turns: certificate that failed CertVerdict.
type certError struct{ res Result }

func (e *certError) Error() string { return e.res.Detail }

// allocate dials u over its transport and allocates a UDP relay with u's
// credentials, within one step.
func (r *runner) allocate(ctx context.Context, u iceURI, tlsHost bool) (*allocation, error) {
	ip, err := r.resolve4(ctx, u.uri.Host)
	if err != nil {
		return nil, err
	}
	server := netip.AddrPortFrom(ip, uint16(u.uri.Port))
	sctx, cancel := r.step(ctx)
	defer cancel()
	var d net.Dialer
	var conn net.PacketConn
	switch {
	case tlsHost:
		raw, err := d.DialContext(sctx, "tcp", server.String())
		if err != nil {
			return nil, fmt.Errorf("check: dial tcp %s: %w", server, err)
		}
		tc := tls.Client(raw, insecureConfig(u.uri.Host))
		if err := tc.HandshakeContext(sctx); err != nil {
			raw.Close()
			return nil, fmt.Errorf("check: TLS handshake with %s: %w", server, err)
		}
		if res := CertVerdict(tc.ConnectionState().PeerCertificates, u.uri.Host, r.opts.RootCAs, r.opts.Now()); res.Status == Fail {
			tc.Close()
			return nil, &certError{res}
		}
		conn = turn.NewSTUNConn(tc)
	case u.uri.Proto == stun.ProtoTypeTCP:
		c, err := d.DialContext(sctx, "tcp", server.String())
		if err != nil {
			return nil, fmt.Errorf("check: dial tcp %s: %w", server, err)
		}
		conn = turn.NewSTUNConn(c)
	default:
		c, err := d.DialContext(sctx, "udp", server.String())
		if err != nil {
			return nil, fmt.Errorf("check: dial udp %s: %w", server, err)
		}
		conn = connectedUDP{c.(*net.UDPConn)}
	}
	client, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: server.String(),
		TURNServerAddr: server.String(),
		Conn:           conn,
		Username:       u.username,
		Password:       u.credential,
		LoggerFactory:  pionLoggers{r.log},
	})
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("check: TURN client for %s: %w", server, err)
	}
	a := &allocation{uri: u, tls: tlsHost, label: transportLabel(u, tlsHost), client: client, conn: conn, server: server, done: make(chan struct{})}
	go a.readLoop(r.log)
	// pion's transactions know no context: closing them ends the wait.
	stop := context.AfterFunc(sctx, client.Close)
	relay, err := client.Allocate()
	stop()
	if err != nil {
		a.close()
		if a.readErr != nil && isRefused(a.readErr) {
			err = a.readErr
		}
		if sctx.Err() != nil {
			err = fmt.Errorf("%w (%v)", sctx.Err(), err)
		}
		return nil, fmt.Errorf("check: allocate at %s: %w", server, err)
	}
	a.relay = relay
	if ua, ok := relay.LocalAddr().(*net.UDPAddr); ok {
		a.relayAddr = ua.AddrPort()
		a.relayAddr = netip.AddrPortFrom(a.relayAddr.Addr().Unmap(), a.relayAddr.Port())
	}
	return a, nil
}

func (a *allocation) readLoop(log *slog.Logger) {
	defer close(a.done)
	buf := make([]byte, 64<<10)
	for {
		n, from, err := a.conn.ReadFrom(buf)
		if err != nil {
			a.readErr = err
			// Pending transactions would otherwise wait out every retransmission.
			a.client.Close()
			return
		}
		if _, err := a.client.HandleInbound(buf[:n], from); err != nil {
			log.Debug("check: TURN inbound", "server", a.server, "err", err)
		}
	}
}

// close releases the allocation (without waiting for the answer) and the
// socket, and waits for the read loop.
func (a *allocation) close() {
	if a.relay != nil {
		a.relay.Close()
	}
	a.client.Close()
	a.conn.Close()
	<-a.done
}

func (r *runner) checkTURN(ctx context.Context, name string) {
	tc := turnChecks[name]
	u, ok := r.ice.find(tc.scheme, tc.proto)
	if !ok {
		switch {
		case r.welcome == nil:
			r.add(name, Skip, "skipped: no ICE servers (see websocket)", "")
		case name == NameTURNTLS:
			r.add(name, Skip, "not offered: no turns: URI", "configure [tls] so that browsers on networks that let only HTTPS out still get a relay")
		default:
			r.add(name, Skip, "not offered", "")
		}
		return
	}
	start := time.Now()
	a, err := r.allocate(ctx, u, name == NameTURNTLS)
	if err != nil {
		var ce *certError
		if errors.As(err, &ce) {
			r.add(name, Fail, u.raw+": "+ce.res.Detail, ce.res.Advice)
			return
		}
		r.add(name, Fail, fmt.Sprintf("Allocate over %s (%s): %s", tc.label, u.raw, allocateDetail(ctx, err)), r.allocateAdvice(u, tc.label, err))
		return
	}
	took := time.Since(start).Round(time.Millisecond)
	if r.kept == nil {
		r.kept = a
	} else {
		defer a.close()
	}
	relayIP, serverIP := a.relayAddr.Addr(), a.server.Addr()
	detail := fmt.Sprintf("relay %s allocated over %s at %s in %s", a.relayAddr, tc.label, a.server, took)
	switch {
	case relayIP != serverIP:
		r.add(name, Fail, detail+"; the server is reached at "+serverIP.String(),
			fmt.Sprintf("turn.public_ip is probably wrong: relay address %s, server reachable at %s; set turn.public_ip to %s, or leave it empty when the server has that address on an interface", relayIP, serverIP, serverIP))
	case public(relayIP):
		r.add(name, OK, detail+" (public)", "")
	case r.serverLoopback(serverIP):
		r.add(name, OK, detail+" (loopback: the server runs on this machine)", "")
	default:
		r.add(name, Warn, detail+" (private: reachable inside this network only)",
			"a server for the Internet needs turn.public_ip set to its public IPv4 address")
	}
}

func allocateDetail(ctx context.Context, err error) string {
	var te *stun.TurnError
	if errors.As(err, &te) {
		return fmt.Sprintf("refused %d %s", te.ErrorCodeAttr.Code, te.ErrorCodeAttr.Reason)
	}
	return describeNetErr(ctx, err)
}

func (r *runner) allocateAdvice(u iceURI, label string, err error) string {
	var te *stun.TurnError
	if errors.As(err, &te) {
		switch te.ErrorCodeAttr.Code {
		case stun.CodeBadRequest, stun.CodeUnauthorized:
			return "the TURN server refused the credentials the hub handed out: check that turn.secrets is the same for both and that the server's clock is right"
		case stun.CodeForbidden:
			return "the TURN server forbids this client: check its log"
		case stun.CodeAllocQuotaReached:
			return "allocation quota reached: raise turn.user_quota or turn.total_quota"
		case stun.CodeInsufficientCapacity:
			return "no relay port free: widen turn.relay_ports"
		}
		return "see the TURN server's log"
	}
	port := u.uri.Port
	switch {
	case label == "UDP":
		ip, _ := netip.ParseAddr(u.uri.Host)
		return udpAdvice(netip.AddrPortFrom(ip, uint16(port)), err)
	case isRefused(err):
		return fmt.Sprintf("nothing listens on TCP port %d: is callbox running with turn.listen on that port?", port)
	}
	return fmt.Sprintf("open TCP port %d in the server's firewall (and the cloud provider's security group)", port)
}

// checkRelay sends a packet from one relay to another and back: the path
// of a call between two browsers that both need TURN.
func (r *runner) checkRelay(ctx context.Context) {
	a := r.kept
	if a == nil {
		r.add(NameRelay, Skip, "skipped: needs a TURN allocation (see turn-udp, turn-tcp, turn-tls)", "")
		return
	}
	b, err := r.allocate(ctx, a.uri, a.tls)
	if err != nil {
		r.add(NameRelay, Fail, fmt.Sprintf("second allocation over %s: %s", a.label, allocateDetail(ctx, err)), r.allocateAdvice(a.uri, a.label, err))
		return
	}
	defer b.close()
	sctx, cancel := r.step(ctx)
	defer cancel()
	start := time.Now()
	if err := permit(sctx, a, b); err != nil {
		r.add(NameRelay, Fail, "CreatePermission: "+allocateDetail(sctx, err),
			"the TURN server's peer policy refuses its own relay address: check turn.denied_peers and turn.allowed_peers")
		return
	}
	if err := bounce(sctx, a, b); err != nil {
		advice := fmt.Sprintf("open the relay ports (turn.relay_ports, UDP) in the firewall of %s", a.relayAddr.Addr())
		if a.relayAddr.Addr() != a.server.Addr() {
			advice = "the relay address is wrong (see turn-udp): packets sent to it never reach the server"
		}
		r.add(NameRelay, Fail, fmt.Sprintf("%s ⇄ %s: %s", a.relayAddr, b.relayAddr, describeNetErr(sctx, err)), advice)
		return
	}
	r.add(NameRelay, OK, fmt.Sprintf("a packet went %s → %s and back in %s (clients over %s)", a.relayAddr, b.relayAddr, time.Since(start).Round(time.Millisecond), a.label), "")
}

func permit(ctx context.Context, a, b *allocation) error {
	for _, p := range [][2]*allocation{{a, b}, {b, a}} {
		stop := context.AfterFunc(ctx, p[0].client.Close)
		err := p[0].client.CreatePermission(net.UDPAddrFromAddrPort(p[1].relayAddr))
		stop()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("check: permission on %s for %s: %w", p[0].relayAddr, p[1].relayAddr, err)
		}
	}
	return nil
}

// bounce sends a ping from a's relay to b's and b answers; both are
// resent every 200 ms until they arrive or ctx ends.
func bounce(ctx context.Context, a, b *allocation) error {
	ping := []byte("callbox-check ping " + randomRoom())
	pong := append([]byte("pong "), ping...)
	if err := roundTrip(ctx, a, b, ping); err != nil {
		return err
	}
	return roundTrip(ctx, b, a, pong)
}

func roundTrip(ctx context.Context, from, to *allocation, payload []byte) error {
	buf := make([]byte, 1500)
	dst := net.UDPAddrFromAddrPort(to.relayAddr)
	for ctx.Err() == nil {
		if _, err := from.relay.WriteTo(payload, dst); err != nil {
			return fmt.Errorf("check: send from relay %s: %w", from.relayAddr, err)
		}
		to.relay.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		for {
			n, _, err := to.relay.ReadFrom(buf)
			if err != nil {
				break // resend
			}
			if bytes.Equal(buf[:n], payload) {
				return nil
			}
		}
	}
	return fmt.Errorf("check: nothing arrived at %s: %w", to.relayAddr, ctx.Err())
}

// pionLoggers sends pion's logs to slog, at debug level: the check reports
// what matters itself.
type pionLoggers struct{ log *slog.Logger }

func (f pionLoggers) NewLogger(scope string) logging.LeveledLogger {
	return pionLogger{f.log.With("pion", scope)}
}

type pionLogger struct{ log *slog.Logger }

func (l pionLogger) Trace(msg string)                  {}
func (l pionLogger) Tracef(string, ...any)             {}
func (l pionLogger) Debug(msg string)                  { l.log.Debug(msg) }
func (l pionLogger) Debugf(format string, args ...any) { l.log.Debug(fmt.Sprintf(format, args...)) }
func (l pionLogger) Info(msg string)                   { l.log.Debug(msg) }
func (l pionLogger) Infof(format string, args ...any)  { l.log.Debug(fmt.Sprintf(format, args...)) }
func (l pionLogger) Warn(msg string)                   { l.log.Debug(msg) }
func (l pionLogger) Warnf(format string, args ...any)  { l.log.Debug(fmt.Sprintf(format, args...)) }
func (l pionLogger) Error(msg string)                  { l.log.Debug(msg) }
func (l pionLogger) Errorf(format string, args ...any) { l.log.Debug(fmt.Sprintf(format, args...)) }
