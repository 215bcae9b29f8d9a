package turnserver

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// listenUDP binds n UDP sockets to one address with SO_REUSEPORT, so the
// kernel spreads clients (by 4-tuple, stable per client) over n sockets.
// Port 0 is resolved by the first socket; the others join its port.
func listenUDP(ctx context.Context, network string, ip netip.Addr, port uint16, n int) ([]*net.UDPConn, error) {
	lc := net.ListenConfig{Control: setReusePort}
	conns := make([]*net.UDPConn, 0, n)
	closeAll := func() {
		for _, c := range conns {
			c.Close()
		}
	}
	for i := range n {
		addr := netip.AddrPortFrom(ip, port).String()
		pc, err := lc.ListenPacket(ctx, network, addr)
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("turnserver: listen %s %s (socket %d of %d): %w", network, addr, i+1, n, err)
		}
		c := pc.(*net.UDPConn)
		conns = append(conns, c)
		port = uint16(c.LocalAddr().(*net.UDPAddr).Port)
	}
	return conns, nil
}

// bufferSizes reads back the receive and send buffers the kernel gave
// c's socket, in the bytes asked for: Linux reports twice the size set
// (its bookkeeping share), so it is halved there.
func bufferSizes(c *net.UDPConn) (rcv, snd int, err error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, 0, err
	}
	var gerr error
	if err := rc.Control(func(fd uintptr) {
		if rcv, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF); gerr != nil {
			return
		}
		snd, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF)
	}); err != nil {
		return 0, 0, err
	}
	if gerr != nil {
		return 0, 0, fmt.Errorf("turnserver: getsockopt buffer sizes: %w", gerr)
	}
	if runtime.GOOS == "linux" {
		rcv, snd = rcv/2, snd/2
	}
	return rcv, snd, nil
}

func setReusePort(network, address string, rc syscall.RawConn) error {
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		if serr == nil {
			setBuffers(int(fd))
		}
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("turnserver: SO_REUSEPORT on %s %s: %w", network, address, serr)
	}
	return nil
}

// udpListener is one of the UDP listening sockets as pion sees it: it
// shows each STUN request to the authenticator before pion reads it, and
// is the client side of the data plane (fastpath.go): ChannelData for
// bound channels and Binding requests never reach pion. The data plane's
// loop (loop_linux.go) reads the socket; pion's read loop gets the rest
// through a queue.
type udpListener struct {
	sock  *udpSock
	auth  *authenticator
	local netip.AddrPort
	loop  *dataLoop
	id    int32 // in the loop

	toPion    *pionQueue
	done      chan struct{} // closed when pion's read loop got its final error
	once      sync.Once
	closeOnce sync.Once
	// slot is pion's side of the verdict: that of the request pion's
	// read loop has just read (see auth.go). Used by pion's goroutine.
	slot verdictSlot

	mu      sync.Mutex
	clients map[netip.AddrPort]*relayConn // guarded by mu: relay of each client with a UDP allocation here

	// owned by the loop
	in      inspector
	up      *batchWriter // ChannelData payloads to relay sockets
	rd      *batchReader
	wr      *batchWriter // Binding replies
	down    *batchWriter // peer → client ChannelData
	replies []byte       // a Binding reply slot per datagram of a batch
}

// udpBatch is how many datagrams one recvmmsg (and one sendmmsg of Binding
// replies) carries at most; udpBufSize holds any datagram pion would take
// (pionMTU) with room to tell a longer one apart. pionQueueSize bounds the
// requests waiting for pion on one socket.
const (
	udpBatch      = 32
	udpBufSize    = 2048
	pionQueueSize = 256
)

// newUDPListener takes c's socket over (see newUDPSock) and puts it in the
// loop.
func newUDPListener(c *net.UDPConn, auth *authenticator, loop *dataLoop) (*udpListener, error) {
	sock, err := newUDPSock(c)
	if err != nil {
		return nil, err
	}
	l := &udpListener{
		sock: sock, auth: auth, local: sock.localAddrPort(), loop: loop,
		toPion: newPionQueue(pionQueueSize), done: make(chan struct{}),
		clients: make(map[netip.AddrPort]*relayConn),
		up:      newBatchWriter(nil, udpBatch),
		rd:      newBatchReader(sock, udpBatch, udpBufSize), wr: newBatchWriter(sock, udpBatch),
		down:    newBatchWriter(sock, udpBatch),
		replies: make([]byte, udpBatch*bindingReplyMaxSize),
	}
	if l.id, err = loop.add(loopMember{l: l}, sock); err != nil {
		sock.close()
		return nil, err
	}
	return l, nil
}

// ReadFrom returns the next datagram pion must handle; the data plane's
// datagrams never come here.
func (l *udpListener) ReadFrom(p []byte) (int, net.Addr, error) {
	n, src, v, ok := l.toPion.get(p)
	if !ok {
		// pion's loop ends on the first error; mark it so Close
		// knows the reader is gone.
		l.once.Do(func() { close(l.done) })
		return 0, nil, net.ErrClosed
	}
	l.slot.put(v)
	// pion keeps the address of an allocation's client: a fresh one
	// each time.
	return n, net.UDPAddrFromAddrPort(src), nil
}

// WriteTo sends pion's replies and Data indications.
func (l *udpListener) WriteTo(p []byte, addr net.Addr) (int, error) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return 0, fmt.Errorf("turnserver: write to %T, want *net.UDPAddr", addr)
	}
	if err := sendTo(l.sock, p, ua.AddrPort()); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Close ends pion's read loop and closes the socket.
func (l *udpListener) Close() error {
	err := net.ErrClosed
	l.closeOnce.Do(func() {
		l.toPion.close()
		l.loop.forget(l.id)
		err = l.sock.close()
	})
	return err
}

func (l *udpListener) LocalAddr() net.Addr { return l.sock.local }

var errNoDeadline = errors.New("turnserver: deadlines are not supported on data plane sockets")

func (l *udpListener) SetDeadline(time.Time) error      { return errNoDeadline }
func (l *udpListener) SetReadDeadline(time.Time) error  { return errNoDeadline }
func (l *udpListener) SetWriteDeadline(time.Time) error { return errNoDeadline }

// take handles datagram i of a batch in the data plane or queues it for
// pion with the authenticator's verdict.
func (l *udpListener) take(i int, pkt []byte, src netip.AddrPort, trunc bool) {
	if !trunc && l.handle(i, pkt, src) {
		return
	}
	if !l.toPion.put(pkt, src, trunc, l.in.slot.take()) && l.auth.metrics != nil {
		l.auth.metrics.requestsDropped.Inc()
	}
}

// flush sends what the batch queued: payloads for a relay socket and
// Binding replies. Best effort, as pion's own writes.
func (l *udpListener) flush() {
	if l.up.n > 0 {
		l.up.flush() //nolint:errcheck // see above
	}
	if l.wr.n > 0 {
		l.wr.flush() //nolint:errcheck // see above
	}
}

// handle is the data plane and the authenticator's look at datagram i of
// the batch; it reports whether the datagram was dealt with here.
func (l *udpListener) handle(i int, p []byte, src netip.AddrPort) bool {
	if len(p) == 0 {
		return false
	}
	// ChannelData (first byte 0x40-0x7F), the bulk of the traffic.
	if p[0]&0xC0 == 0x40 {
		number, payload, ok := parseChannelData(p)
		if !ok {
			return false
		}
		rc := l.client(src)
		return rc != nil && rc.forward(l.up, number, payload)
	}
	if len(p) < 20 || p[0] >= 0x40 {
		return false
	}
	if isBindingRequest(p) {
		l.wr.add(bindingReply(l.replies[i*bindingReplyMaxSize:], p, src), src)
		return true
	}
	if reply := l.auth.inspect(&l.in, p, false, src, l.local); reply != nil {
		sendTo(l.sock, reply, src) //nolint:errcheck // best effort, as pion's own replies
		return true
	}
	return false
}

func (l *udpListener) client(src netip.AddrPort) *relayConn {
	l.mu.Lock()
	rc := l.clients[src]
	l.mu.Unlock()
	return rc
}

// allocationCreated routes the relay conn's client through this socket.
func (l *udpListener) allocationCreated(src netip.AddrPort, rc *relayConn) {
	rc.route.Store(&clientRoute{out: l, addr: src})
	l.mu.Lock()
	l.clients[src] = rc
	l.mu.Unlock()
}

// allocationDeleted forgets the client's relay once pion has closed it; a
// new allocation of the same client may already have replaced it.
func (l *udpListener) allocationDeleted(src netip.AddrPort) {
	l.mu.Lock()
	if rc := l.clients[src]; rc != nil && rc.closed.Load() {
		delete(l.clients, src)
	}
	l.mu.Unlock()
}

// tcpListener hands pion wrapped connections and owns them: pion closes
// the listener on Close but not the connections it accepted.
type tcpListener struct {
	net.Listener
	auth *authenticator

	mu     sync.Mutex
	conns  map[netip.AddrPort]*tcpConn // guarded by mu: open conns by remote address
	closed bool                        // guarded by mu

	// readers counts pion's per-conn goroutines still reading: one per
	// accepted conn until its Read fails (after which pion only cleans up).
	readers        int           // guarded by mu
	readersChanged chan struct{} // guarded by mu: closed and replaced when readers drops

	acceptDone chan struct{} // closed when pion's accept loop gets its final error
	acceptOnce sync.Once

	// allocateTimeout is how long a conn may stay open without an
	// allocation. Guarded by mu only so tests can shorten it.
	allocateTimeout time.Duration
}

// tcpAllocateTimeout bounds a TCP connection without an allocation, as
// coturn's max-allocate-timeout does: TURN over TCP exists to allocate,
// and pion keeps idle connections forever, a cheap way to use up file
// descriptors.
const tcpAllocateTimeout = 60 * time.Second

func newTCPListener(l net.Listener, auth *authenticator) *tcpListener {
	return &tcpListener{
		Listener:        l,
		auth:            auth,
		conns:           make(map[netip.AddrPort]*tcpConn),
		readersChanged:  make(chan struct{}),
		acceptDone:      make(chan struct{}),
		allocateTimeout: tcpAllocateTimeout,
	}
}

// allocation arms or clears the deadline of the conn from src: pion's
// events say when it gains or loses its allocation.
func (l *tcpListener) allocation(src net.Addr, open bool) {
	l.mu.Lock()
	c, timeout := l.conns[addrPortOf(src)], l.allocateTimeout
	l.mu.Unlock()
	if c == nil {
		return
	}
	deadline := time.Time{}
	if !open {
		deadline = time.Now().Add(timeout)
	}
	c.Conn.SetReadDeadline(deadline) //nolint:errcheck // fails only on a closed conn
}

func (l *tcpListener) readerDone() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.readers > 0 {
		l.readers--
		close(l.readersChanged)
		l.readersChanged = make(chan struct{})
	}
}

// Accept retries temporary failures (out of file descriptors, aborted
// handshakes): pion's accept loop ends for good on the first error, which
// would silently take TCP down.
func (l *tcpListener) Accept() (net.Conn, error) {
	backoff := 5 * time.Millisecond
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			if l.isClosed() || errors.Is(err, net.ErrClosed) || !temporary(err) {
				l.acceptOnce.Do(func() { close(l.acceptDone) })
				return nil, err
			}
			time.Sleep(backoff)
			backoff = min(2*backoff, time.Second)
			continue
		}
		tc := &tcpConn{
			Conn:  c,
			owner: l,
			br:    newTCPReader(c),
			src:   addrPortOf(c.RemoteAddr()),
			local: addrPortOf(c.LocalAddr()),
		}
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			c.Close()
			l.acceptOnce.Do(func() { close(l.acceptDone) })
			return nil, net.ErrClosed
		}
		l.conns[tc.src] = tc
		l.readers++
		timeout := l.allocateTimeout
		l.mu.Unlock()
		c.SetReadDeadline(time.Now().Add(timeout)) //nolint:errcheck // fails only on a closed conn
		return tc, nil
	}
}

func temporary(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM)
}

func (l *tcpListener) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

func (l *tcpListener) Close() error {
	l.mu.Lock()
	l.closed = true
	conns := make([]*tcpConn, 0, len(l.conns))
	for _, c := range l.conns {
		conns = append(conns, c)
	}
	l.mu.Unlock()
	err := l.Listener.Close()
	for _, c := range conns {
		c.Close()
	}
	return err
}

// wait returns when pion's accept loop and every conn's reader have seen
// their final error, or ctx ends.
func (l *tcpListener) wait(ctx context.Context) error {
	for {
		l.mu.Lock()
		n, ch := l.readers, l.readersChanged
		l.mu.Unlock()
		if n == 0 {
			break
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	select {
	case <-l.acceptDone:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (l *tcpListener) slot(src net.Addr) *verdictSlot {
	l.mu.Lock()
	defer l.mu.Unlock()
	if c := l.conns[addrPortOf(src)]; c != nil {
		return &c.in.slot
	}
	return nil
}

func (l *tcpListener) openConns() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns)
}

// tcpBufSize holds any STUN message pion would accept (its inbound MTU is
// 1600 bytes) so it can be inspected whole.
const tcpBufSize = 2048

func newTCPReader(c net.Conn) *bufio.Reader { return bufio.NewReaderSize(c, tcpBufSize) }

var errBadFrame = errors.New("turnserver: tcp stream is neither STUN nor ChannelData")

// tcpConn frames the TCP stream (RFC 5766 §11.5: STUN messages and padded
// ChannelData back to back) so every STUN request is inspected whole
// before pion's STUNConn reads its first byte. Read never returns bytes of
// two frames at once, so the verdict in the slot is always that of the
// frame pion is about to handle.
type tcpConn struct {
	net.Conn
	owner      *tcpListener
	src, local netip.AddrPort

	// owned by the reader (pion's per-conn goroutine)
	readDone  bool
	br        *bufio.Reader
	remaining int // bytes of the current frame not yet returned
	in        inspector

	closeOnce sync.Once
}

// Read hands out the stream one frame at a time (see tcpConn); its first
// error ends pion's goroutine for this conn, which Close waits for.
func (c *tcpConn) Read(p []byte) (int, error) {
	n, err := c.read(p)
	if err != nil && !c.readDone {
		c.readDone = true
		c.owner.readerDone()
	}
	return n, err
}

func (c *tcpConn) read(p []byte) (int, error) {
	for c.remaining == 0 {
		hdr, err := c.br.Peek(4)
		if err != nil {
			return 0, err
		}
		switch hdr[0] & 0xC0 {
		case 0x40: // ChannelData, padded to 4 bytes over TCP
			c.remaining = 4 + (int(binary.BigEndian.Uint16(hdr[2:4]))+3)&^3
		case 0x00: // STUN
			h, err := c.br.Peek(20)
			if err != nil {
				return 0, err
			}
			if !isSTUN(h) {
				return 0, errBadFrame
			}
			size := 20 + int(binary.BigEndian.Uint16(h[2:4]))
			if size <= c.br.Size() {
				frame, err := c.br.Peek(size)
				if err != nil {
					return 0, err
				}
				if reply := c.owner.auth.inspect(&c.in, frame, true, c.src, c.local); reply != nil {
					c.br.Discard(size) //nolint:errcheck // Peek proved the bytes are there
					if _, err := c.Conn.Write(reply); err != nil {
						return 0, err
					}
					continue
				}
			}
			// A larger message passes uninspected; pion drops anything
			// above its MTU without answering.
			c.remaining = size
		default:
			return 0, errBadFrame
		}
	}
	n, err := c.br.Read(p[:min(len(p), c.remaining)])
	c.remaining -= n
	return n, err
}

func (c *tcpConn) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(func() {
		c.owner.mu.Lock()
		if c.owner.conns[c.src] == c {
			delete(c.owner.conns, c.src)
		}
		c.owner.mu.Unlock()
	})
	return err
}
