package turnserver

import (
	"fmt"
	"net/netip"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// relayRx is the relay conn's reader state: up to two datagrams per
// recvmmsg, the second into a pooled buffer. Two, so a short batch proves
// the socket's queue empty and the reader parks without the EAGAIN read
// Go's edge-triggered poller otherwise needs (see batchReader.serve): per
// relayed packet one system call less. Owned by the relay's reader, pion's
// per-allocation goroutine.
type relayRx struct {
	hdrs  [2]mmsghdr
	iovs  [2]unix.Iovec
	names [2]sockaddr
	fn    func(fd uintptr) bool

	// during one read
	p     []byte  // pion's buffer
	extra *[]byte // the second buffer, from relayBufs
	errno syscall.Errno
	out   int            // bytes of the datagram for pion in p; -1: none yet
	src   netip.AddrPort // its source

	// a second datagram for pion kept for the next ReadFrom
	pending    *[]byte
	pendingOff int
	pendingN   int
	pendingSrc netip.AddrPort
}

// relayBufs holds the second buffers of relay reads: only allocations
// being read at this instant hold one.
var relayBufs = sync.Pool{New: func() any {
	b := make([]byte, pionMTU)
	return &b
}}

func (c *relayConn) initRx() {
	for i := range c.rx.hdrs {
		c.rx.hdrs[i].hdr.Iov = &c.rx.iovs[i]
		c.rx.hdrs[i].hdr.SetIovlen(1)
		c.rx.hdrs[i].hdr.Name = (*byte)(unsafe.Pointer(&c.rx.names[i]))
	}
	c.rx.fn = c.rxRecv
}

// readData returns the next peer datagram that pion must handle, in p;
// the others (refused, or relayed as ChannelData here) never leave.
func (c *relayConn) readData(p []byte) (int, netip.AddrPort, error) {
	rx := &c.rx
	if rx.pending != nil {
		n := copy(p, (*rx.pending)[rx.pendingOff:rx.pendingOff+rx.pendingN])
		src := rx.pendingSrc
		relayBufs.Put(rx.pending)
		rx.pending = nil
		return n, src, nil
	}
	rx.p, rx.out, rx.errno = p, -1, 0
	err := c.sock.rc.Read(rx.fn)
	rx.p = nil
	if err == nil && rx.errno != 0 {
		err = fmt.Errorf("turnserver: relay recvmmsg: %w", rx.errno)
	}
	if err != nil {
		return 0, netip.AddrPort{}, err
	}
	return rx.out, rx.src, nil
}

// rxRecv runs inside RawConn.Read: it reads and relays until a datagram
// for pion turns up (true) or the queue is empty (false: park).
func (c *relayConn) rxRecv(fd uintptr) bool {
	rx := &c.rx
	for {
		route := c.route.Load()
		off := 0
		if route != nil {
			off = channelHeader // room to frame ChannelData in place
		}
		rx.extra = relayBufs.Get().(*[]byte)
		bufs := [2][]byte{rx.p, *rx.extra}
		for i := range rx.hdrs {
			rx.iovs[i].Base = &bufs[i][off]
			rx.iovs[i].SetLen(len(bufs[i]) - off)
			rx.hdrs[i].hdr.Namelen = uint32(unsafe.Sizeof(sockaddr{}))
			rx.hdrs[i].hdr.Flags = 0
		}
		r, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&rx.hdrs[0])), uintptr(len(rx.hdrs)), 0, 0, 0)
		if e != 0 {
			relayBufs.Put(rx.extra)
			rx.extra = nil
			switch e {
			case unix.EINTR:
				continue
			case unix.EAGAIN:
				return false
			}
			rx.errno = e
			return true
		}
		n := int(r)
		for i := range n {
			c.rxOne(route, bufs[i], off, i)
		}
		if rx.extra != nil {
			relayBufs.Put(rx.extra)
			rx.extra = nil
		}
		if rx.out >= 0 {
			return true
		}
		if n < len(rx.hdrs) {
			return false
		}
	}
}

// rxOne handles datagram i of a batch, at buf[off:].
func (c *relayConn) rxOne(route *clientRoute, buf []byte, off, i int) {
	rx := &c.rx
	h := &rx.hdrs[i]
	if h.hdr.Flags&unix.MSG_TRUNC != 0 {
		return // longer than pion's buffer: no use cut short
	}
	n := int(h.len)
	src := sockaddrAddrPort(&rx.names[i])
	if !c.admitIn(src, n) {
		return
	}
	if route != nil {
		if number, ok := c.channelByPeer(src); ok {
			c.io.sendTo(route.out.sock, frameChannelData(buf, number, n), route.addr) //nolint:errcheck // best effort, as pion's own writes
			return
		}
	}
	// For pion (a Data indication, or a TCP allocation's datagram).
	if rx.out < 0 {
		rx.out, rx.src = copy(rx.p, buf[off:off+n]), src
		return
	}
	rx.pending, rx.pendingOff, rx.pendingN, rx.pendingSrc = rx.extra, off, n, src
	rx.extra = nil
}
