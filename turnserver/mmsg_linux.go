package turnserver

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// UDP I/O of the data plane: recvmmsg/sendmmsg batches and single
// datagrams, written against the system calls rather than
// golang.org/x/net's ReadBatch/WriteBatch (which return each source as a
// new *net.UDPAddr, one allocation per datagram) or net.UDPConn (see
// below). Addresses stay netip.AddrPort in preallocated space. Everything
// runs through syscall.RawConn, so a read that would block parks the
// goroutine in Go's netpoller like any other socket read, and a close
// cannot race a call in flight.
//
// The calls are RawSyscall, without the runtime's entersyscall/exitsyscall:
// the sockets are non-blocking, so each call returns at once. Measured under
// perf at 1,000 packets/s, entersyscall cost more than the packets: each
// one wakes the runtime's sysmon thread from its idle sleep and resets it
// to polling every 20 µs, some 20 % of the process's CPU in context
// switches (see docs/performance.md).

// mmsghdr is struct mmsghdr of <sys/socket.h>.
type mmsghdr struct {
	hdr unix.Msghdr
	len uint32
	_   [4]byte
}

// sockaddr holds a sockaddr_in or sockaddr_in6, whichever the kernel writes.
type sockaddr = unix.RawSockaddrInet6

// batchReader reads up to len(bufs) datagrams per system call. Owned by
// one goroutine.
type batchReader struct {
	rc    syscall.RawConn
	hdrs  []mmsghdr
	iovs  []unix.Iovec
	names []sockaddr
	bufs  [][]byte
	// results of the last read
	n     int
	errno syscall.Errno
	fn    func(fd uintptr) bool // r.recv, bound once so Read does not allocate
	// onBatch, when serving, takes each batch and reports whether serve
	// should return (see serve).
	onBatch func(n int) bool
	serveFn func(fd uintptr) bool // r.serveRecv, bound once
}

func newBatchReader(s *udpSock, batch, size int) *batchReader {
	r := &batchReader{
		rc:    s.rc,
		hdrs:  make([]mmsghdr, batch),
		iovs:  make([]unix.Iovec, batch),
		names: make([]sockaddr, batch),
		bufs:  make([][]byte, batch),
	}
	slab := make([]byte, batch*size)
	for i := range batch {
		r.bufs[i] = slab[i*size : (i+1)*size : (i+1)*size]
		r.iovs[i].Base = &r.bufs[i][0]
		r.iovs[i].SetLen(size)
		r.hdrs[i].hdr.Iov = &r.iovs[i]
		r.hdrs[i].hdr.SetIovlen(1)
		r.hdrs[i].hdr.Name = (*byte)(unsafe.Pointer(&r.names[i]))
	}
	r.fn = r.recv
	r.serveFn = r.serveRecv
	return r
}

// read fills the batch and returns how many datagrams arrived (at least
// one), blocking until one does.
func (r *batchReader) read() (int, error) {
	r.n, r.errno = 0, 0
	if err := r.rc.Read(r.fn); err != nil {
		return 0, err
	}
	if r.errno != 0 {
		return 0, fmt.Errorf("turnserver: recvmmsg: %w", r.errno)
	}
	return r.n, nil
}

func (r *batchReader) recv(fd uintptr) bool {
	switch r.recvmmsg(fd) {
	case unix.EAGAIN:
		return false // wait in the netpoller
	}
	return true
}

func (r *batchReader) recvmmsg(fd uintptr) syscall.Errno {
	for i := range r.hdrs {
		r.hdrs[i].hdr.Namelen = uint32(unsafe.Sizeof(sockaddr{}))
		r.hdrs[i].hdr.Flags = 0
	}
	for {
		n, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.hdrs[0])), uintptr(len(r.hdrs)), 0, 0, 0)
		switch e {
		case 0:
			r.n = int(n)
			return 0
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return e
		}
		r.errno = e
		return e
	}
}

// serve reads batches and hands each to r.onBatch inside one RawConn.Read,
// until onBatch returns true or the socket fails. A batch shorter than the
// array proves the queue was empty at that instant, so serve parks in the
// netpoller right away instead of asking again for the EAGAIN Go's
// edge-triggered poller otherwise needs: any datagram arriving later
// raises a new edge, which wakes the parked read (or, arriving while the
// batch is handled, leaves the poller ready for it). One system call per
// wake-up less; under this machine's virtualisation a system call costs
// microseconds.
func (r *batchReader) serve() error {
	r.errno = 0
	if err := r.rc.Read(r.serveFn); err != nil {
		return err
	}
	if r.errno != 0 {
		return fmt.Errorf("turnserver: recvmmsg: %w", r.errno)
	}
	return nil
}

func (r *batchReader) serveRecv(fd uintptr) bool {
	for {
		switch r.recvmmsg(fd) {
		case 0:
		case unix.EAGAIN:
			return false
		default:
			return true
		}
		if r.onBatch(r.n) {
			return true
		}
		if r.n < len(r.hdrs) {
			return false
		}
	}
}

// msg returns datagram i of the last read and its source (unmapped). A
// datagram longer than the buffer comes back truncated to len(buf) with
// trunc set.
func (r *batchReader) msg(i int) (p []byte, src netip.AddrPort, trunc bool) {
	h := &r.hdrs[i]
	return r.bufs[i][:min(int(h.len), len(r.bufs[i]))], sockaddrAddrPort(&r.names[i]), h.hdr.Flags&unix.MSG_TRUNC != 0
}

// sockaddrAddrPort decodes a sockaddr_in or sockaddr_in6 without
// allocating; IPv4-mapped IPv6 comes back as IPv4.
func sockaddrAddrPort(sa *sockaddr) netip.AddrPort {
	switch sa.Family {
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa4.Port))[:])
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), port)
	case unix.AF_INET6:
		port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), port)
	}
	return netip.AddrPort{}
}

// putSockaddr encodes dst for a socket of family v6 (true: AF_INET6, IPv4
// destinations as IPv4-mapped) and returns the length to pass the kernel.
func putSockaddr(sa *sockaddr, dst netip.AddrPort, v6 bool) uint32 {
	*sa = sockaddr{}
	if !v6 {
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		sa4.Family = unix.AF_INET
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa4.Port))[:], dst.Port())
		sa4.Addr = dst.Addr().As4()
		return unix.SizeofSockaddrInet4
	}
	sa.Family = unix.AF_INET6
	binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:], dst.Port())
	sa.Addr = dst.Addr().As16()
	return unix.SizeofSockaddrInet6
}

// batchWriter queues datagrams and sends them with one sendmmsg. Owned by
// one goroutine; the payloads must stay untouched until flush.
type batchWriter struct {
	sock  *udpSock // the socket the queued datagrams leave on (see to)
	rc    syscall.RawConn
	v6    bool // the socket is AF_INET6
	hdrs  []mmsghdr
	iovs  []unix.Iovec
	names []sockaddr
	n     int // queued
	sent  int // progress of the flush in flight
	errno syscall.Errno
	fn    func(fd uintptr) bool
}

// newBatchWriter returns a writer for s; s may be nil when every batch
// names its socket with to.
func newBatchWriter(s *udpSock, batch int) *batchWriter {
	w := &batchWriter{
		hdrs:  make([]mmsghdr, batch),
		iovs:  make([]unix.Iovec, batch),
		names: make([]sockaddr, batch),
	}
	for i := range batch {
		w.hdrs[i].hdr.Iov = &w.iovs[i]
		w.hdrs[i].hdr.SetIovlen(1)
		w.hdrs[i].hdr.Name = (*byte)(unsafe.Pointer(&w.names[i]))
	}
	w.fn = w.send
	if s != nil {
		w.to(s)
	}
	return w
}

// to makes s the socket of the next datagrams; the caller flushes first
// when datagrams for another socket are queued.
func (w *batchWriter) to(s *udpSock) {
	w.sock, w.rc, w.v6 = s, s.rc, s.v6
}

// full reports whether the next add needs a flush first.
func (w *batchWriter) full() bool { return w.n == len(w.hdrs) }

// add queues p for dst; the caller flushes when full.
func (w *batchWriter) add(p []byte, dst netip.AddrPort) {
	i := w.n
	if w.v6 && dst.Addr().Is4() {
		dst = netip.AddrPortFrom(netip.AddrFrom16(dst.Addr().As16()), dst.Port())
	}
	w.hdrs[i].hdr.Namelen = putSockaddr(&w.names[i], dst, w.v6)
	w.iovs[i].Base = unsafe.SliceData(p)
	w.iovs[i].SetLen(len(p))
	w.n++
}

// flush sends everything queued. A datagram the kernel refuses (an
// unreachable destination, a full buffer) is dropped, as a failed
// WriteTo of a single datagram would be: UDP is best effort.
func (w *batchWriter) flush() error {
	var err error
	for w.sent = 0; w.sent < w.n; {
		w.errno = 0
		if rerr := w.rc.Write(w.fn); rerr != nil {
			err = rerr // socket closed
			break
		}
		if w.errno != 0 {
			w.sent++ // skip the datagram at fault
		}
	}
	for i := range w.n {
		w.iovs[i].Base = nil // drop references to the payloads
	}
	w.n = 0
	return err
}

func (w *batchWriter) send(fd uintptr) bool {
	for {
		n, _, e := unix.RawSyscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&w.hdrs[w.sent])), uintptr(w.n-w.sent), 0, 0, 0)
		switch e {
		case 0:
			w.sent += int(n)
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		w.errno = e
		return true
	}
}

// listenerBuffer is the receive and send buffer asked for each listener
// socket, as coturn does: the kernel's default (208 KiB) overflows in
// bursts of many clients sending at once.
const listenerBuffer = 4 << 20

// setBuffers raises the socket's buffers to listenerBuffer: past
// net.core.rmem_max/wmem_max with SO_*BUFFORCE where the process may
// (CAP_NET_ADMIN), else up to those limits. Failure keeps the default.
func setBuffers(fd int) {
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, listenerBuffer) != nil {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, listenerBuffer) //nolint:errcheck // best effort
	}
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, listenerBuffer) != nil {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, listenerBuffer) //nolint:errcheck // best effort
	}
}

// dgram does one sendto or recvfrom at a time through a RawConn. Owned by
// one goroutine; fn is bound once so a call does not allocate.
type dgram struct {
	sa    sockaddr
	salen uint32
	p     []byte
	n     int
	send  bool
	errno syscall.Errno
	fn    func(fd uintptr) bool
}

func newDgram() *dgram {
	d := &dgram{}
	d.fn = d.call
	return d
}

func (d *dgram) call(fd uintptr) bool {
	for {
		var n uintptr
		var e syscall.Errno
		if d.send {
			n, _, e = unix.RawSyscall6(unix.SYS_SENDTO, fd, uintptr(unsafe.Pointer(unsafe.SliceData(d.p))), uintptr(len(d.p)),
				0, uintptr(unsafe.Pointer(&d.sa)), uintptr(d.salen))
		} else {
			d.salen = uint32(unsafe.Sizeof(d.sa))
			// MSG_TRUNC: the datagram's real length, to tell a cut one.
			n, _, e = unix.RawSyscall6(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(unsafe.SliceData(d.p))), uintptr(len(d.p)),
				unix.MSG_TRUNC, uintptr(unsafe.Pointer(&d.sa)), uintptr(unsafe.Pointer(&d.salen)))
		}
		switch e {
		case 0:
			d.n = int(n)
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		d.errno = e
		return true
	}
}

// sendTo sends p to dst on s.
func (d *dgram) sendTo(s *udpSock, p []byte, dst netip.AddrPort) error {
	v6 := s.v6
	if v6 && dst.Addr().Is4() {
		dst = netip.AddrPortFrom(netip.AddrFrom16(dst.Addr().As16()), dst.Port())
	}
	d.salen = putSockaddr(&d.sa, dst, v6)
	d.p, d.send, d.errno = p, true, 0
	err := s.rc.Write(d.fn)
	d.p = nil
	if err == nil && d.errno != 0 {
		err = fmt.Errorf("turnserver: sendto %s: %w", dst, d.errno)
	}
	return err
}

// recvFrom reads one datagram into p, blocking until one arrives; trunc
// reports a datagram longer than p (n is then len(p)).
func (d *dgram) recvFrom(s *udpSock, p []byte) (n int, src netip.AddrPort, trunc bool, err error) {
	d.p, d.send, d.errno = p, false, 0
	err = s.rc.Read(d.fn)
	d.p = nil
	if err == nil && d.errno != 0 {
		err = fmt.Errorf("turnserver: recvfrom: %w", d.errno)
	}
	if err != nil {
		return 0, netip.AddrPort{}, false, err
	}
	if d.n > len(p) {
		return len(p), sockaddrAddrPort(&d.sa), true, nil
	}
	return d.n, sockaddrAddrPort(&d.sa), false, nil
}
