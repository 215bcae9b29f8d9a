package turnserver

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/turn/v4"
)

// relayGenerator is pion's port-range generator with every relay socket it
// opens wrapped in a relayConn, where callbox enforces what pion's
// PermissionHandler cannot see (ports) and cannot do (rate limits).
type relayGenerator struct {
	inner    *turn.RelayAddressGeneratorPortRange
	guard    *relayGuard
	registry *relayRegistry
	loop     *dataLoop
	// bytesPerSec is turn.max_bitrate in bytes; 0 is unlimited.
	bytesPerSec float64
}

var errNoTCPRelay = errors.New("turnserver: TCP relays (RFC 6062) are not supported")

func (g *relayGenerator) Validate() error { return g.inner.Validate() }

func (g *relayGenerator) AllocatePacketConn(network string, requestedPort int) (net.PacketConn, net.Addr, error) {
	conn, addr, err := g.inner.AllocatePacketConn(network, requestedPort)
	if err != nil {
		return nil, nil, fmt.Errorf("turnserver: relay %s port %d: %w", network, requestedPort, err)
	}
	udp, ok := conn.(*net.UDPConn)
	if !ok {
		conn.Close()
		return nil, nil, fmt.Errorf("turnserver: relay socket is %T, want *net.UDPConn", conn)
	}
	rc, err := newRelayConn(udp, g.guard, g.bytesPerSec, g.registry.remove, g.loop)
	if err != nil {
		return nil, nil, err
	}
	g.registry.add(rc)
	return rc, addr, nil
}

func (g *relayGenerator) AllocateConn(string, int) (net.Conn, net.Addr, error) {
	return nil, nil, errNoTCPRelay
}

// relayGuard knows the server's own non-relay ports and own addresses.
// Immutable after construction.
type relayGuard struct {
	ports     []uint16       // TURN listener, HTTP, metrics...
	own       []netip.Addr   // addresses that reach this host
	ownRanges []netip.Prefix // ranges that always reach this host (loopback, 0.0.0.0/8)
}

// blocks reports whether a datagram to dst would reach one of the server's
// own services. Ports are compared first: almost every packet leaves on a
// port that is not protected and costs a few comparisons.
func (g *relayGuard) blocks(dst netip.AddrPort) bool {
	port := dst.Port()
	hit := false
	for _, p := range g.ports {
		if p == port {
			hit = true
			break
		}
	}
	if !hit {
		return false
	}
	ip := normalise(dst.Addr())
	for _, a := range g.own {
		if a == ip {
			return true
		}
	}
	for _, p := range g.ownRanges {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// tokenBucket polices one direction of one allocation. Both directions are
// touched by one goroutine each in pion today; the mutex keeps that an
// implementation detail of pion rather than an assumption of ours.
type tokenBucket struct {
	mu     sync.Mutex
	rate   float64 // bytes per second; 0 disables the bucket
	burst  float64 // bytes
	tokens float64 // guarded by mu
	last   int64   // guarded by mu: monotonic nanoseconds of the last refill
}

// burstWindow is how much traffic above the rate a bucket absorbs: enough
// for a video key frame at the capped rate without letting a sender double
// its rate for long.
const burstWindow = 500 * time.Millisecond

// minBurst lets one full-size datagram through even at the lowest cap.
const minBurst = 2 * 1600

func (b *tokenBucket) init(bytesPerSec float64) {
	b.rate = bytesPerSec
	b.burst = max(bytesPerSec*burstWindow.Seconds(), minBurst)
	b.tokens = b.burst
	b.last = monotonicNanos()
}

func (b *tokenBucket) allow(n int) bool {
	if b.rate == 0 {
		return true
	}
	return b.allowAt(n, monotonicNanos())
}

// allowAt is allow at a given time (monotonic nanoseconds), for tests.
func (b *tokenBucket) allowAt(n int, now int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.tokens = min(b.burst, b.tokens+float64(now-b.last)*b.rate/1e9)
	b.last = now
	if b.tokens < float64(n) {
		return false
	}
	b.tokens -= float64(n)
	return true
}

var epoch = time.Now()

func monotonicNanos() int64 { return int64(time.Since(epoch)) }

// relayStats are one relay conn's counters; index 0 is client→peer, 1 is
// peer→client.
type relayStats struct {
	packets, bytes, protected, bitrate, noPerm, busy [2]atomic.Uint64
}

func (s *relayStats) snapshot() relayTotals {
	var t relayTotals
	for d := range 2 {
		t.packets[d] = s.packets[d].Load()
		t.bytes[d] = s.bytes[d].Load()
		t.protected[d] = s.protected[d].Load()
		t.bitrate[d] = s.bitrate[d].Load()
		t.noPerm[d] = s.noPerm[d].Load()
		t.busy[d] = s.busy[d].Load()
	}
	return t
}

// relayBatch is how many datagrams the loop reads from one relay socket
// per wake-up. At a few packets per second per call a read brings one
// datagram; at a high rate a read brings several, all for the same client,
// so they leave together. relayQueueSize bounds the peer datagrams waiting
// for pion on one allocation (Data indications).
const (
	relayBatch     = 8
	relayQueueSize = 16
)

const (
	toPeer   = 0
	toClient = 1
)

// relayConn is the relay socket of one allocation as pion sees it. WriteTo
// carries client→peer datagrams (pion has checked the permission), ReadFrom
// the peer→client ones the data plane leaves to pion. Per-packet work is a
// few comparisons and atomic adds, with no allocation, so the loop can
// reuse the checks.
type relayConn struct {
	// static after construction
	sock    *udpSock
	port    uint16
	guard   *relayGuard
	loop    *dataLoop
	id      int32 // in the loop
	onClose func(*relayConn)
	toPion  *pionQueue

	// peers is the copy-on-write set of peer IPs (unmapped) with a
	// permission on this allocation, fed by pion's permission events.
	peers   atomic.Pointer[[]netip.Addr]
	peersMu sync.Mutex // serialises writers of peers

	// The data plane's view of pion's state (fastpath.go), fed by pion's
	// events: the client of a UDP allocation (nil for TCP and TLS ones,
	// which pion relays itself) and the bound channels, copy-on-write.
	route      atomic.Pointer[clientRoute]
	channels   atomic.Pointer[[]channelBinding]
	channelsMu sync.Mutex // serialises writers of channels

	buckets [2]tokenBucket
	stats   relayStats

	// owned by the single reader (pion's per-allocation packet loop):
	// the net.Addr of the last peer seen, reused while the peer stays the
	// same so ReadFrom does not allocate one per datagram. pion only reads
	// the address within the iteration that received it.
	lastPeer     netip.AddrPort
	lastPeerAddr *net.UDPAddr

	busy bool // owned by the Linux loop: the socket has its larger buffer (relayBuffer)

	closed    atomic.Bool
	closeOnce sync.Once
}

// newRelayConn takes conn's socket over (see newUDPSock) and puts it in
// the loop.
func newRelayConn(conn *net.UDPConn, guard *relayGuard, bytesPerSec float64, onClose func(*relayConn), loop *dataLoop) (*relayConn, error) {
	sock, err := newUDPSock(conn)
	if err != nil {
		return nil, err
	}
	c := &relayConn{sock: sock, port: uint16(sock.local.Port), guard: guard, loop: loop, onClose: onClose,
		toPion: newPionQueue(relayQueueSize)}
	c.buckets[toPeer].init(bytesPerSec)
	c.buckets[toClient].init(bytesPerSec)
	empty := []netip.Addr{}
	c.peers.Store(&empty)
	noChannels := []channelBinding{}
	c.channels.Store(&noChannels)
	if c.id, err = loop.add(loopMember{r: c}, sock); err != nil {
		sock.close()
		return nil, err
	}
	return c, nil
}

// WriteTo sends a client's datagram to a peer. Datagrams callbox refuses
// are dropped silently (reported as written): an error here would only
// make pion log once per packet.
func (c *relayConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return 0, fmt.Errorf("turnserver: relay write to %T, want *net.UDPAddr", addr)
	}
	dst := ua.AddrPort()
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	if !c.admitOut(dst, len(p)) {
		return len(p), nil
	}
	if err := sendTo(c.sock, p, dst); err != nil {
		return 0, err
	}
	return len(p), nil
}

// admitOut decides whether a client's datagram of n bytes may go to dst,
// and counts it either way. It is the per-packet policy of WriteTo, apart
// so that a batched sender (sendmmsg) can apply it per message.
func (c *relayConn) admitOut(dst netip.AddrPort, n int) bool {
	if c.guard.blocks(dst) {
		c.stats.protected[toPeer].Add(1)
		return false
	}
	if !c.buckets[toPeer].allow(n) {
		c.stats.bitrate[toPeer].Add(1)
		return false
	}
	c.stats.packets[toPeer].Add(1)
	c.stats.bytes[toPeer].Add(uint64(n))
	return true
}

// admitIn is ReadFrom's per-packet policy for a peer datagram of n bytes
// from src (unmapped), apart for the same reason as admitOut.
func (c *relayConn) admitIn(src netip.AddrPort, n int) bool {
	if !c.permitted(src.Addr()) {
		c.stats.noPerm[toClient].Add(1)
		return false
	}
	if !c.buckets[toClient].allow(n) {
		c.stats.bitrate[toClient].Add(1)
		return false
	}
	c.stats.packets[toClient].Add(1)
	c.stats.bytes[toClient].Add(uint64(n))
	return true
}

// ReadFrom returns the next peer datagram the data plane leaves to pion
// (see dataLoop.readRelay): one that has a permission and fits the
// bitrate, from a peer without a bound channel or for a TCP or TLS
// allocation. Others were dropped before pion did any work for them or
// relayed as ChannelData without coming here.
func (c *relayConn) ReadFrom(p []byte) (int, net.Addr, error) {
	n, src, _, ok := c.toPion.get(p)
	if !ok {
		return 0, nil, net.ErrClosed
	}
	return n, c.peerAddr(src), nil
}

// peerAddr returns src as a net.Addr, reused while the peer stays the same
// so ReadFrom does not allocate one per datagram. pion only reads the
// address within the iteration that received it.
func (c *relayConn) peerAddr(src netip.AddrPort) net.Addr {
	if src != c.lastPeer || c.lastPeerAddr == nil {
		c.lastPeer = src
		c.lastPeerAddr = net.UDPAddrFromAddrPort(src)
	}
	return c.lastPeerAddr
}

// fromPeer is the data plane's handling of a peer datagram of n bytes at
// buf[channelHeader:] (the header's room kept free in front): refused by
// the policy, queued for pion (a Data indication, or a TCP or TLS
// allocation's datagram; a drop counted when pion is that far behind), or
// framed in buf as ChannelData for the client of route, which it returns
// for the caller to send. route is c.route as the caller loaded it.
func (c *relayConn) fromPeer(buf []byte, n int, src netip.AddrPort, route *clientRoute) []byte {
	if !c.admitIn(src, n) {
		return nil
	}
	if route != nil {
		if number, ok := c.channelByPeer(src); ok {
			return frameChannelData(buf, number, n)
		}
	}
	if !c.toPion.put(buf[channelHeader:channelHeader+n], src, false, verdict{}) {
		c.stats.busy[toClient].Add(1)
	}
	return nil
}

// channelByPeer returns the channel bound to peer, if any.
func (c *relayConn) channelByPeer(peer netip.AddrPort) (uint16, bool) {
	for _, b := range *c.channels.Load() {
		if b.peer == peer {
			return b.number, true
		}
	}
	return 0, false
}

// channelPeer returns the peer bound to channel number, if any.
func (c *relayConn) channelPeer(number uint16) (netip.AddrPort, bool) {
	for _, b := range *c.channels.Load() {
		if b.number == number {
			return b.peer, true
		}
	}
	return netip.AddrPort{}, false
}

// addChannel records a binding pion created (OnChannelCreated).
func (c *relayConn) addChannel(number uint16, peer netip.AddrPort) {
	peer = netip.AddrPortFrom(peer.Addr().Unmap(), peer.Port())
	c.channelsMu.Lock()
	defer c.channelsMu.Unlock()
	old := *c.channels.Load()
	next := make([]channelBinding, 0, len(old)+1)
	for _, b := range old {
		if b.number != number && b.peer != peer {
			next = append(next, b)
		}
	}
	next = append(next, channelBinding{number: number, peer: peer})
	c.channels.Store(&next)
}

// removeChannel forgets a binding pion removed (OnChannelDeleted).
func (c *relayConn) removeChannel(number uint16) {
	c.channelsMu.Lock()
	defer c.channelsMu.Unlock()
	old := *c.channels.Load()
	next := make([]channelBinding, 0, len(old))
	for _, b := range old {
		if b.number != number {
			next = append(next, b)
		}
	}
	c.channels.Store(&next)
}

// forward is the client → peer fast path for a ChannelData payload on
// channel number: it reports false when the channel is not bound (pion
// then handles the datagram and drops it with its usual error).
// The payload is queued on w, the caller's writer, which the caller
// flushes before its buffers are reused: datagrams of one client arrive
// back to back (a sender's burst), so one sendmmsg on the relay socket
// carries a run of them. w holds datagrams of one relay socket at a time.
func (c *relayConn) forward(w *batchWriter, number uint16, payload []byte) bool {
	peer, ok := c.channelPeer(number)
	if !ok {
		return false
	}
	if c.admitOut(peer, len(payload)) {
		if w.n > 0 && (w.sock != c.sock || w.full()) {
			w.flush() //nolint:errcheck // as WriteTo: UDP is best effort
		}
		if w.n == 0 {
			w.to(c.sock)
		}
		w.add(payload, peer)
	}
	return true
}

func (c *relayConn) permitted(ip netip.Addr) bool {
	for _, a := range *c.peers.Load() {
		if a == ip {
			return true
		}
	}
	return false
}

func (c *relayConn) addPeer(ip netip.Addr) {
	ip = ip.Unmap()
	c.peersMu.Lock()
	defer c.peersMu.Unlock()
	old := *c.peers.Load()
	for _, a := range old {
		if a == ip {
			return
		}
	}
	next := make([]netip.Addr, len(old), len(old)+1)
	copy(next, old)
	next = append(next, ip)
	c.peers.Store(&next)
}

func (c *relayConn) removePeer(ip netip.Addr) {
	ip = ip.Unmap()
	c.peersMu.Lock()
	defer c.peersMu.Unlock()
	old := *c.peers.Load()
	next := make([]netip.Addr, 0, len(old))
	for _, a := range old {
		if a != ip {
			next = append(next, a)
		}
	}
	c.peers.Store(&next)
}

func (c *relayConn) Close() error {
	err := net.ErrClosed
	c.closeOnce.Do(func() {
		c.closed.Store(true)
		c.toPion.close()
		c.loop.forget(c.id)
		err = c.sock.close()
		if c.onClose != nil {
			c.onClose(c)
		}
	})
	return err
}

func (c *relayConn) LocalAddr() net.Addr              { return c.sock.local }
func (c *relayConn) SetDeadline(time.Time) error      { return errNoDeadline }
func (c *relayConn) SetReadDeadline(time.Time) error  { return errNoDeadline }
func (c *relayConn) SetWriteDeadline(time.Time) error { return errNoDeadline }
