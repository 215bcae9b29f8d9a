package turnserver

import (
	"fmt"
	"net/netip"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// relayBatchBufs is a relay reader's working set for one wake-up: buffers,
// headers and the writer of framed ChannelData. Pooled: a reader takes one
// when the poller wakes it and gives it back before it parks, so 2,000
// quiet allocations do not each hold one.
type relayBatchBufs struct {
	hdrs  [relayBatch]mmsghdr
	iovs  [relayBatch]unix.Iovec
	names [relayBatch]sockaddr
	bufs  [relayBatch][pionMTU]byte
	w     *batchWriter // ChannelData to the client, through its listener socket
	off   int          // where datagrams start in bufs: room for a ChannelData header

	// datagrams of the last read that pion must handle, in order
	pion            [relayBatch]uint8
	nPion, nextPion int
}

var relayBufPool = sync.Pool{New: func() any {
	b := &relayBatchBufs{w: newBatchWriter(nil, relayBatch)}
	for i := range b.hdrs {
		b.hdrs[i].hdr.Iov = &b.iovs[i]
		b.hdrs[i].hdr.SetIovlen(1)
		b.hdrs[i].hdr.Name = (*byte)(unsafe.Pointer(&b.names[i]))
	}
	return b
}}

// relayRx is the relay conn's reader state. Owned by the relay's reader,
// pion's per-allocation goroutine.
type relayRx struct {
	fn    func(fd uintptr) bool // c.rxRecv, bound once
	b     *relayBatchBufs       // held from a wake-up until every datagram for pion is handed out
	errno syscall.Errno
}

func (c *relayConn) initRx() { c.rx.fn = c.rxRecv }

// readData returns the next peer datagram that pion must handle, in p;
// the others (refused, or relayed as ChannelData here) never leave.
func (c *relayConn) readData(p []byte) (int, netip.AddrPort, error) {
	rx := &c.rx
	if rx.b == nil {
		rx.errno = 0
		err := c.sock.rc.Read(rx.fn)
		if err == nil && rx.errno != 0 {
			err = fmt.Errorf("turnserver: relay recvmmsg: %w", rx.errno)
		}
		if err != nil {
			if rx.b != nil {
				relayBufPool.Put(rx.b)
				rx.b = nil
			}
			return 0, netip.AddrPort{}, err
		}
	}
	b := rx.b
	i := int(b.pion[b.nextPion])
	b.nextPion++
	n := copy(p, b.bufs[i][b.off:b.off+int(b.hdrs[i].len)])
	src := sockaddrAddrPort(&b.names[i])
	if b.nextPion == b.nPion {
		relayBufPool.Put(b)
		rx.b = nil
	}
	return n, src, nil
}

// rxRecv runs inside RawConn.Read: it reads and relays until datagrams for
// pion turn up (true, rx.b holds them) or the queue is empty (false: park,
// without a buffer set).
func (c *relayConn) rxRecv(fd uintptr) bool {
	rx := &c.rx
	b := relayBufPool.Get().(*relayBatchBufs)
	for {
		route := c.route.Load()
		b.off = 0
		if route != nil {
			b.off = channelHeader // room to frame ChannelData in place
		}
		for i := range b.hdrs {
			b.iovs[i].Base = &b.bufs[i][b.off]
			b.iovs[i].SetLen(pionMTU - b.off)
			b.hdrs[i].hdr.Namelen = uint32(unsafe.Sizeof(sockaddr{}))
			b.hdrs[i].hdr.Flags = 0
		}
		r, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&b.hdrs[0])), relayBatch, 0, 0, 0)
		if e != 0 {
			switch e {
			case unix.EINTR:
				continue
			case unix.EAGAIN:
				relayBufPool.Put(b)
				return false
			}
			relayBufPool.Put(b)
			rx.errno = e
			return true
		}
		n := int(r)
		b.nPion, b.nextPion = 0, 0
		for i := range n {
			c.rxOne(b, route, i)
		}
		if b.w.n > 0 {
			b.w.flush() //nolint:errcheck // best effort, as pion's own writes
		}
		if b.nPion > 0 {
			rx.b = b
			return true
		}
		if n < relayBatch {
			relayBufPool.Put(b)
			return false
		}
	}
}

// rxOne handles datagram i of the batch in b.
func (c *relayConn) rxOne(b *relayBatchBufs, route *clientRoute, i int) {
	h := &b.hdrs[i]
	if h.hdr.Flags&unix.MSG_TRUNC != 0 {
		return // longer than pion's buffer: no use cut short
	}
	n := int(h.len)
	src := sockaddrAddrPort(&b.names[i])
	if !c.admitIn(src, n) {
		return
	}
	if route != nil {
		if number, ok := c.channelByPeer(src); ok {
			if b.w.n == 0 {
				b.w.to(route.out.sock)
			}
			b.w.add(frameChannelData(b.bufs[i][:], number, n), route.addr)
			return
		}
	}
	// For pion (a Data indication, or a TCP allocation's datagram).
	b.pion[b.nPion] = uint8(i)
	b.nPion++
}
