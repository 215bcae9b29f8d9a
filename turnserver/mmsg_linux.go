//go:build linux && !callbox_portable

package turnserver

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// UDP I/O of the data plane: recvmmsg/sendmmsg batches and single
// datagrams, written against the system calls rather than
// golang.org/x/net's ReadBatch/WriteBatch (which return each source as a
// new *net.UDPAddr, one allocation per datagram). Addresses stay
// netip.AddrPort in preallocated space. The sockets are the data plane's
// own (udpSock, out of Go's netpoller) and non-blocking: every call
// returns at once, and only the loop (loop_linux.go) waits, in epoll.
//
// The calls are RawSyscall, without the runtime's entersyscall/exitsyscall:
// a call that cannot block needs neither. Measured under perf at 1,000
// packets/s, entersyscall cost more than the packets when the runtime's
// sysmon thread was idle: each one woke it and reset it to polling every
// 20 µs (see docs/performance.md).

// mmsghdr is struct mmsghdr of <sys/socket.h>.
type mmsghdr struct {
	hdr unix.Msghdr
	len uint32
	_   [4]byte
}

// sockaddr holds a sockaddr_in or sockaddr_in6, whichever the kernel writes.
type sockaddr = unix.RawSockaddrInet6

// batchReader reads up to len(bufs) datagrams per system call from one
// socket. Owned by one goroutine.
type batchReader struct {
	sock  *udpSock
	hdrs  []mmsghdr
	iovs  []unix.Iovec
	names []sockaddr
	bufs  [][]byte
	n     int // datagrams of the last read
}

func newBatchReader(s *udpSock, batch, size int) *batchReader {
	r := &batchReader{
		sock:  s,
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
	return r
}

// read fills the batch without waiting and returns how many datagrams
// it holds: 0 when none is queued.
func (r *batchReader) read() (int, error) {
	r.n = 0
	fd, ok := r.sock.acquire()
	if !ok {
		return 0, net.ErrClosed
	}
	defer r.sock.release()
	n, e := recvmmsg(fd, r.hdrs)
	switch e {
	case 0:
		r.n = n
	case unix.EAGAIN:
	default:
		return 0, fmt.Errorf("turnserver: recvmmsg: %w", e)
	}
	return r.n, nil
}

// recvmmsg reads up to len(hdrs) datagrams from fd, without waiting.
func recvmmsg(fd int, hdrs []mmsghdr) (int, syscall.Errno) {
	for i := range hdrs {
		hdrs[i].hdr.Namelen = uint32(unsafe.Sizeof(sockaddr{}))
		hdrs[i].hdr.Flags = 0
	}
	for {
		n, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, uintptr(fd), uintptr(unsafe.Pointer(&hdrs[0])), uintptr(len(hdrs)), unix.MSG_DONTWAIT, 0, 0)
		if e == unix.EINTR {
			continue
		}
		return int(n), e
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
	v6    bool     // the socket is AF_INET6
	hdrs  []mmsghdr
	iovs  []unix.Iovec
	names []sockaddr
	n     int // queued
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
	if s != nil {
		w.to(s)
	}
	return w
}

// to makes s the socket of the next datagrams; the caller flushes first
// when datagrams for another socket are queued.
func (w *batchWriter) to(s *udpSock) {
	w.sock, w.v6 = s, s.v6
}

// full reports whether the next add needs a flush first.
func (w *batchWriter) full() bool { return w.n == len(w.hdrs) }

// add queues p for dst; the caller flushes when full.
func (w *batchWriter) add(p []byte, dst netip.AddrPort) {
	i := w.n
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
	if fd, ok := w.sock.acquire(); ok {
		for sent := 0; sent < w.n; {
			n, _, e := unix.RawSyscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&w.hdrs[sent])), uintptr(w.n-sent), unix.MSG_DONTWAIT, 0, 0)
			switch e {
			case 0:
				sent += int(n)
			case unix.EINTR:
			default:
				sent++ // skip the datagram at fault
			}
		}
		w.sock.release()
	} else {
		err = net.ErrClosed
	}
	for i := range w.n {
		w.iovs[i].Base = nil // drop references to the payloads
	}
	w.n = 0
	return err
}

// listenerBuffer is the receive and send buffer asked for each listener
// socket, as coturn does: the kernel's default (208 KiB) overflows in
// bursts of many clients sending at once.
const listenerBuffer = 4 << 20

// setBuffers raises the socket's buffers to listenerBuffer: past
// net.core.rmem_max/wmem_max with SO_*BUFFORCE where the process may
// (CAP_NET_ADMIN), else up to those limits. Failure keeps the default.
func setBuffers(fd int) {
	setBuffer(fd, unix.SO_RCVBUFFORCE, unix.SO_RCVBUF, listenerBuffer)
	setBuffer(fd, unix.SO_SNDBUFFORCE, unix.SO_SNDBUF, listenerBuffer)
}

// setBuffer asks for an n-byte buffer with the FORCE option (past the
// system's limit, where the process may), else the plain one (up to it).
// Best effort: the default stays on failure.
func setBuffer(fd, force, plain, n int) {
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, force, n) != nil {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, plain, n) //nolint:errcheck // best effort
	}
}

// sendTo sends p to dst on s; safe from any goroutine.
func sendTo(s *udpSock, p []byte, dst netip.AddrPort) error {
	var sa sockaddr
	salen := putSockaddr(&sa, dst, s.v6)
	fd, ok := s.acquire()
	if !ok {
		return net.ErrClosed
	}
	defer s.release()
	for {
		_, _, e := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)),
			unix.MSG_DONTWAIT, uintptr(unsafe.Pointer(&sa)), uintptr(salen))
		switch e {
		case 0:
			return nil
		case unix.EINTR:
			continue
		}
		return fmt.Errorf("turnserver: sendto %s: %w", dst, e)
	}
}
