// Package turnserver is callbox's STUN/TURN server: pion/turn with TURN
// REST credentials verified against several secrets, a peer policy that
// keeps relays out of the server's own network, quotas, bitrate caps and
// Prometheus metrics. See auth.go for how the secrets fit pion's API.
package turnserver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/pion/turn/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/callbox/callbox/config"
)

// Options are what New needs besides the configuration.
type Options struct {
	Logger     *slog.Logger          // required
	Registerer prometheus.Registerer // nil: no metrics registered
	// Protected lists the server's own non-relay services (HTTP, metrics
	// listeners) that relayed traffic may never reach, in addition to the
	// TURN listen port itself.
	Protected []netip.AddrPort
	// TLS is the certificate for turn.tls_listen (see tls.go); nil with
	// turn.tls_listen set is an error.
	TLS *tls.Config
	// TLSHost is the certificate's name, the host of the turns: URIs;
	// empty: the host of the turn: URIs.
	TLSHost string
	// Shared, when set, is a listener of TLS connections already
	// handshaken on a port shared with HTTPS (package portmux); they are
	// served as TURN over TLS and SharedPort is put in a turns: URI.
	Shared     net.Listener
	SharedPort int
	// RemoteAllocations, when set, is how many allocations a user id
	// holds on other servers sharing this one's quotas (package cluster):
	// turn.user_quota counts them too.
	RemoteAllocations func(user string) int
	// OnAllocations, when set, hears each change of a user id's count of
	// allocations (and reservations) on this server. Called with the
	// allocation table's lock held: it must not call back into the server.
	OnAllocations func(user string, count int)
}

// Server is a running STUN/TURN server.
type Server struct {
	// static after construction
	cfg        config.TURN
	log        *slog.Logger
	reg        prometheus.Registerer
	metrics    *metrics
	auth       *authenticator
	allocs     *allocTable
	relays     *relayRegistry
	loops      []*dataLoop // the data plane: each reads its UDP listeners and their relay sockets
	udp        []*udpListener
	tcp        *tcpListener
	tls        *tcpListener // nil when turn.tls_listen is off
	shared     *tcpListener // nil without Options.Shared
	tlsAddr    *net.TCPAddr
	tlsHost    string // put in turns: URIs
	sharedPort int
	pion       []*turn.Server
	udpAddr    *net.UDPAddr
	tcpAddr    *net.TCPAddr
	relayIP    netip.Addr
	listenIP   netip.Addr
	host       string // put in URIs
	closeOnce  sync.Once
	closeErr   error
}

// shutdownWait bounds how long Close waits for pion's goroutines to report
// their allocations deleted.
const shutdownWait = 5 * time.Second

// New binds the listeners (UDP with cfg.UDPSockets SO_REUSEPORT sockets,
// 0 = runtime.NumCPU(); TCP on the same address) and starts serving.
// cfg.Secrets must be non-empty (main generates a random one for the
// no-config demo).
func New(cfg config.TURN, opts Options) (*Server, error) {
	if opts.Logger == nil {
		return nil, errors.New("turnserver: Options.Logger is required")
	}
	if len(cfg.Secrets) == 0 {
		return nil, errors.New("turnserver: turn.secrets is empty; at least one secret is required")
	}
	listenIP, port, err := parseListen(cfg.Listen)
	if err != nil {
		return nil, err
	}
	sockets := cfg.UDPSockets
	if sockets == 0 {
		sockets = runtime.NumCPU()
	}
	s := &Server{cfg: cfg, log: opts.Logger, reg: opts.Registerer, relays: newRelayRegistry()}
	reserveSpareP(s.log)
	if err := s.newLoops(dataLoops(sockets), busyNiceAllowed(cfg.BusyNice, s.log)); err != nil {
		return nil, err
	}
	if err := s.listen(listenIP, port, sockets); err != nil {
		s.stopLoops()
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			s.closeListeners()
			s.stopLoops()
		}
	}()

	s.metrics, err = newMetrics(opts.Registerer, s.relays)
	if err != nil {
		return nil, err
	}
	defer func() {
		if !ok {
			s.metrics.unregister(opts.Registerer)
		}
	}()
	s.allocs = newAllocTable(cfg.UserQuota, cfg.TotalQuota, s.metrics, s.log)
	s.allocs.remote, s.allocs.notify = opts.RemoteAllocations, opts.OnAllocations
	s.auth = &authenticator{
		realm:       cfg.Realm,
		maxLifetime: cfg.MaxAllocationLifetime,
		policy:      newPeerPolicy(cfg),
		allocs:      s.allocs,
		metrics:     s.metrics,
		log:         s.log,
		limiter:     newLogLimiter(),
	}
	if err := s.SetSecrets(cfg.Secrets); err != nil {
		return nil, err
	}

	s.listenIP = listenIP
	s.relayIP, err = relayAddress(cfg.PublicIP, listenIP)
	if err != nil {
		return nil, err
	}
	// Relays bind where the listener does; pion relays over IPv4 only, so
	// an IPv6 loopback listener gets IPv4 loopback relays, any other IPv6
	// listener relays on every IPv4 address.
	relayBind := "0.0.0.0"
	switch {
	case listenIP.Is4() && !listenIP.IsUnspecified():
		relayBind = listenIP.String()
	case listenIP.IsLoopback():
		relayBind = "127.0.0.1"
	}
	s.host = uriHost(cfg, listenIP, s.relayIP)
	if err := s.listenTLS(opts); err != nil {
		return nil, err
	}
	guard := newRelayGuard(uint16(s.udpAddr.Port), listenIP, s.relayIP, s.tlsProtected(opts.Protected))

	if err := s.startPion(relayBind, guard); err != nil {
		return nil, err
	}
	for _, lp := range s.loops {
		lp.start()
	}
	ok = true
	s.logStart(listenIP, sockets)
	return s, nil
}

func parseListen(listen string) (netip.Addr, uint16, error) {
	host, portStr, err := net.SplitHostPort(listen)
	if err != nil {
		return netip.Addr{}, 0, fmt.Errorf("turnserver: turn.listen %q: %w", listen, err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return netip.Addr{}, 0, fmt.Errorf("turnserver: turn.listen %q: bad port: %w", listen, err)
	}
	var ip netip.Addr
	switch host {
	case "":
		// ":3478" listens on IPv6 and IPv4 alike (see listenNetworks);
		// "0.0.0.0:3478" is IPv4 only.
		ip = netip.IPv6Unspecified()
	case "localhost":
		ip = netip.AddrFrom4([4]byte{127, 0, 0, 1})
	default:
		if ip, err = netip.ParseAddr(host); err != nil {
			return netip.Addr{}, 0, fmt.Errorf("turnserver: turn.listen %q: %w", listen, err)
		}
	}
	return ip.Unmap(), uint16(port), nil
}

// listen binds UDP and then TCP on the same port. When the port is chosen
// by the kernel the TCP port may be taken; it then tries another port.
func (s *Server) listen(ip netip.Addr, port uint16, sockets int) error {
	udpNet, tcpNet := listenNetworks(ip)
	tries := 1
	if port == 0 {
		tries = 10
	}
	var lastErr error
	for range tries {
		udpPort := port
		if port == 0 {
			var err error
			if udpPort, err = freeUDPPort(udpNet, ip); err != nil {
				return err
			}
		}
		conns, err := listenUDP(context.Background(), udpNet, ip, udpPort, sockets)
		if err != nil {
			if port == 0 {
				lastErr = err // taken between probe and bind: try another
				continue
			}
			return err
		}
		udpAddr := conns[0].LocalAddr().(*net.UDPAddr)
		addr := netip.AddrPortFrom(ip, uint16(udpAddr.Port)).String()
		var lc net.ListenConfig
		tl, err := lc.Listen(context.Background(), tcpNet, addr)
		if err != nil {
			for _, c := range conns {
				c.Close()
			}
			lastErr = fmt.Errorf("turnserver: listen %s %s: %w", tcpNet, addr, err)
			continue
		}
		s.checkBuffers(conns[0]) // once, for the sockets kept
		s.udpAddr = udpAddr
		s.tcpAddr = tl.Addr().(*net.TCPAddr)
		for i, c := range conns {
			l, err := newUDPListener(c, nil, s.loops[i%len(s.loops)])
			if err != nil {
				for _, c := range conns[i+1:] {
					c.Close()
				}
				for _, l := range s.udp {
					l.Close()
				}
				s.udp = nil
				tl.Close()
				return err
			}
			s.udp = append(s.udp, l)
		}
		s.tcp = newTCPListener(tl, nil)
		return nil
	}
	return lastErr
}

// checkBuffers warns when the listener sockets did not get the buffers
// asked for: without CAP_NET_ADMIN (the shipped systemd unit has none) the
// kernel caps them at net.core.rmem_max and wmem_max, 208 KiB by default,
// and a burst from many clients then overflows the receive buffer.
func (s *Server) checkBuffers(c *net.UDPConn) {
	rcv, snd, err := bufferSizes(c)
	if err != nil {
		s.log.Warn("turn: cannot read the UDP listener's buffer sizes", "err", err)
		return
	}
	if rcv < listenerBuffer || snd < listenerBuffer {
		s.log.Warn("turn: UDP listener buffers are smaller than asked; bursts from many clients may be dropped",
			"receive_bytes", rcv, "send_bytes", snd, "asked_bytes", listenerBuffer,
			"fix", bufferLimitFix(runtime.GOOS))
	}
}

// bufferLimitFix says which system limit caps the buffers on goos.
func bufferLimitFix(goos string) string {
	if goos == "linux" {
		return fmt.Sprintf("set net.core.rmem_max and net.core.wmem_max to %d (systemd/99-callbox.conf, docs/deploy.md)", listenerBuffer)
	}
	// The BSDs and macOS cap every socket buffer, bookkeeping included,
	// at one sysctl.
	return fmt.Sprintf("raise kern.ipc.maxsockbuf above %d", listenerBuffer)
}

// listenNetworks picks the networks for ip: the IPv6 wildcard gets Go's
// "udp"/"tcp", which bind one dual-stack socket (IPv4 clients arrive as
// ::ffff:a.b.c.d, unmapped wherever callbox keys by address); any other
// address gets its own family only. Relays stay IPv4 either way.
func listenNetworks(ip netip.Addr) (udpNet, tcpNet string) {
	switch {
	case ip.Is6() && ip.IsUnspecified():
		return "udp", "tcp"
	case ip.Is6():
		return "udp6", "tcp6"
	}
	return "udp4", "tcp4"
}

// freeUDPPort asks the kernel for a UDP port nobody holds. Binding port 0
// with SO_REUSEPORT set could instead land on a port another process of
// the same user already shares by SO_REUSEPORT (Linux skips those in its
// search), and the two servers would split each other's clients. The probe
// has no SO_REUSEPORT, so its port is free; it is released just before the
// real sockets bind.
func freeUDPPort(network string, ip netip.Addr) (uint16, error) {
	probe, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)))
	if err != nil {
		return 0, fmt.Errorf("turnserver: listen %s %s: %w", network, netip.AddrPortFrom(ip, 0), err)
	}
	port := uint16(probe.LocalAddr().(*net.UDPAddr).Port)
	probe.Close()
	return port, nil
}

// dataLoops is how many loops read the UDP sockets: one per UDP listener
// socket, but no more than GOMAXPROCS-1. A loop's thread keeps its P while
// it waits in epoll_pwait (see loop_linux.go), so at least one P must stay
// for everything else: were every P held that way, the runtime would have
// to take one back out of a wait for each goroutine that wakes up. New
// calls reserveSpareP first, so there are at least two.
func dataLoops(sockets int) int {
	return max(1, min(sockets, runtime.GOMAXPROCS(0)-1))
}

func (s *Server) newLoops(n, busyNice int) error {
	for range n {
		lp, err := newDataLoop(s.log, busyNice)
		if err != nil {
			s.stopLoops()
			return err
		}
		s.loops = append(s.loops, lp)
	}
	return nil
}

func (s *Server) stopLoops() {
	for _, lp := range s.loops {
		lp.stop()
	}
}

// closeListeners is New's cleanup when it fails after binding.
func (s *Server) closeListeners() {
	for _, p := range s.pion {
		p.Close()
	}
	for _, l := range s.udp {
		l.Close()
	}
	for _, l := range s.streamListeners() {
		l.Close()
	}
}

// newRelayGuard protects the TURN port and opts.Protected on every address
// of this host (taken at start: addresses added later are not known).
func newRelayGuard(turnPort uint16, listenIP, relayIP netip.Addr, protected []netip.AddrPort) *relayGuard {
	g := &relayGuard{ports: []uint16{turnPort}}
	for _, p := range protected {
		g.ports = append(g.ports, p.Port())
		g.own = append(g.own, p.Addr().Unmap())
	}
	g.own = append(g.own, listenIP, relayIP)
	g.own = append(g.own, HostAddrs()...)
	for _, c := range []string{"0.0.0.0/8", "127.0.0.0/8", "::/128", "::1/128"} {
		g.ownRanges = append(g.ownRanges, netip.MustParsePrefix(c))
	}
	return g
}

// startPion runs one pion Server per UDP socket, each with an AuthHandler
// bound to that socket's verdict slot (see auth.go), and one per stream
// listener (TCP, and TLS where configured).
func (s *Server) startPion(relayBind string, guard *relayGuard) error {
	permission := func(_ net.Addr, peer net.IP) bool {
		// Defence in depth: the listener wrappers already answered 403
		// for denied peers, so this refuses only what slipped past them.
		ip, _ := netip.AddrFromSlice(peer)
		ok, _ := s.auth.policy.check(ip)
		return ok
	}
	generator := func(loop *dataLoop) *relayGenerator {
		// One generator per pion server: pion calls it from that server's
		// read loop only. Its relays join the loop of the server's
		// listener, whose socket their clients' ChannelData leaves on.
		return &relayGenerator{
			inner: &turn.RelayAddressGeneratorPortRange{
				RelayAddress: net.IP(s.relayIP.AsSlice()),
				MinPort:      s.cfg.RelayPorts.Min,
				MaxPort:      s.cfg.RelayPorts.Max,
				MaxRetries:   30,
				Address:      relayBind,
			},
			guard:       guard,
			registry:    s.relays,
			loop:        loop,
			bytesPerSec: float64(s.cfg.MaxBitrate) / 8,
		}
	}
	quota := func(username, _ string, src net.Addr) bool { return s.allocs.reserve(username, src) }
	base := turn.ServerConfig{
		LoggerFactory: slogFactory{log: s.log},
		Realm:         s.cfg.Realm,
		QuotaHandler:  quota,
	}
	for _, l := range s.udp {
		l.auth = s.auth
		sc := base
		sc.EventHandler = s.events(nil, l)
		sc.PacketConnConfigs = []turn.PacketConnConfig{{PacketConn: l, RelayAddressGenerator: generator(l.loop), PermissionHandler: permission}}
		sc.AuthHandler = func(username, realm string, src net.Addr) ([]byte, bool) {
			return s.auth.authHandler(&l.slot, username, realm, src)
		}
		ps, err := turn.NewServer(sc)
		if err != nil {
			return fmt.Errorf("turnserver: start udp %s: %w", s.udpAddr, err)
		}
		s.pion = append(s.pion, ps)
	}
	for i, l := range s.streamListeners() {
		l.auth = s.auth
		sc := base
		sc.EventHandler = s.events(l, nil)
		sc.ListenerConfigs = []turn.ListenerConfig{{Listener: l, RelayAddressGenerator: generator(s.loops[i%len(s.loops)]), PermissionHandler: permission}}
		sc.AuthHandler = func(username, realm string, src net.Addr) ([]byte, bool) {
			slot := l.slot(src)
			if slot == nil {
				slot = &verdictSlot{} // conn already gone: refused as no_verdict
			}
			return s.auth.authHandler(slot, username, realm, src)
		}
		ps, err := turn.NewServer(sc)
		if err != nil {
			return fmt.Errorf("turnserver: start stream %s: %w", l.Addr(), err)
		}
		s.pion = append(s.pion, ps)
	}
	return nil
}

func (s *Server) logStart(listenIP netip.Addr, sockets int) {
	s.log.Info("turn: listening", "udp", s.udpAddr.String(), "tcp", s.tcpAddr.String(), "udp_sockets", sockets, "data_loops", len(s.loops),
		"relay_address", s.relayIP.String(), "relay_ports", s.cfg.RelayPorts.String(), "realm", s.cfg.Realm,
		"max_bitrate", s.cfg.MaxBitrate, "user_quota", s.cfg.UserQuota, "total_quota", s.cfg.TotalQuota)
	// A wrong advertised address is the most common TURN support issue:
	// clients get relay candidates they cannot reach.
	if s.tlsAddr != nil || s.shared != nil {
		s.log.Info("turn: TURN over TLS", "tls", s.TLSAddr(), "shared_port", s.sharedPort, "uris", s.turnsURIs())
	}
	if p := s.AddressProblem(); p != "" {
		s.log.Error("turn: "+p, "relay_address", s.relayIP.String(), "listen", s.udpAddr.String())
	}
	if s.cfg.AllowLoopbackPeers {
		s.log.Warn("turn: turn.allow_loopback_peers is on: clients can relay to this host's loopback services; only for tests and local demos")
	}
}

// Close stops the listeners, closes every allocation and waits for the
// read loops to report them gone. It is idempotent.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		var errs []error
		for _, p := range s.pion {
			if err := p.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), shutdownWait)
		defer cancel()
		for _, l := range s.udp {
			select {
			case <-l.done:
			case <-ctx.Done():
			}
		}
		for _, l := range s.streamListeners() {
			if err := l.wait(ctx); err != nil {
				errs = append(errs, fmt.Errorf("turnserver: close: %s readers still running after %s: %w", l.Addr(), shutdownWait, err))
			}
		}
		if err := s.allocs.waitEmpty(ctx); err != nil {
			errs = append(errs, fmt.Errorf("turnserver: close: %d allocations still open after %s: %w", s.allocs.count(), shutdownWait, err))
		}
		// Relays pion opened without an allocation (EVEN-PORT probing)
		// or left behind are closed here.
		for _, rc := range s.relays.all() {
			rc.Close()
		}
		s.stopLoops()
		s.metrics.unregister(s.reg)
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

// UDPAddr is the actual bound UDP address (port 0 resolved).
func (s *Server) UDPAddr() *net.UDPAddr { return s.udpAddr }

// TCPAddr is the actual bound TCP address.
func (s *Server) TCPAddr() *net.TCPAddr { return s.tcpAddr }

// AllocationCount is the number of allocations open now.
func (s *Server) AllocationCount() int { return s.allocs.count() }

// SetSecrets replaces the secrets (for rotation, e.g. on SIGHUP): the
// first signs new credentials, all verify. Running allocations are not
// affected until their next request.
func (s *Server) SetSecrets(secrets []string) error {
	if len(secrets) == 0 {
		return errors.New("turnserver: SetSecrets: at least one secret is required")
	}
	cp := append([]string(nil), secrets...)
	s.auth.secrets.Store(&cp)
	return nil
}

// Credentials mints TURN REST credentials for user, signed with the first
// secret.
func (s *Server) Credentials(user string, ttl time.Duration) Credentials {
	expires := time.Now().Add(ttl).Truncate(time.Second)
	username, password := MintCredentials((*s.auth.secrets.Load())[0], user, expires)
	return Credentials{
		Username: username,
		Password: password,
		TTL:      int64(ttl / time.Second),
		URIs:     s.TURNURIs(),
		Expires:  expires,
	}
}

// STUNURIs are the stun: URIs clients are given.
func (s *Server) STUNURIs() []string {
	return []string{"stun:" + net.JoinHostPort(s.host, strconv.Itoa(s.udpAddr.Port))}
}

// TURNURIs are the turn: URIs clients are given, UDP first, then the
// turns: ones when TURN over TLS is on.
func (s *Server) TURNURIs() []string {
	return append(turnURIs(s.host, s.udpAddr.Port), s.turnsURIs()...)
}
