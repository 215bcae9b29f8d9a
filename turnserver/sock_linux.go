//go:build linux && !callbox_portable

package turnserver

import (
	"fmt"
	"net"
	"net/netip"
	"sync"

	"golang.org/x/sys/unix"
)

// udpSock is a UDP socket of the data plane: a listener or relay socket
// that only callbox's loop reads (loop_linux.go). It is taken out of Go's
// netpoller, where every datagram would also wake the runtime's own epoll
// thread: one context switch per packet for nothing, on a machine where
// context switches are most of the cost.
type udpSock struct {
	// mu is held for reading around every system call on fd and for
	// writing to close it, so a call in flight never meets a descriptor
	// number that was closed and reused.
	mu    sync.RWMutex
	fd    int  // -1 once closed; guarded by mu
	v6    bool // AF_INET6: IPv4 destinations go IPv4-mapped
	local *net.UDPAddr
}

// newUDPSock takes c's socket over: it duplicates the descriptor and
// closes c. Closing c deletes c's descriptor from Go's netpoller; the
// duplicate, never registered there, keeps the socket (and its port)
// open, still non-blocking.
func newUDPSock(c *net.UDPConn) (*udpSock, error) {
	la, _ := c.LocalAddr().(*net.UDPAddr)
	if la == nil {
		c.Close()
		return nil, fmt.Errorf("turnserver: socket %s is not UDP", c.LocalAddr())
	}
	rc, err := c.SyscallConn()
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("turnserver: raw conn of %s: %w", la, err)
	}
	fd := -1
	var derr error
	if err := rc.Control(func(f uintptr) { fd, derr = unix.FcntlInt(f, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		derr = err
	}
	c.Close()
	if derr != nil {
		return nil, fmt.Errorf("turnserver: take over socket %s: %w", la, derr)
	}
	return &udpSock{fd: fd, v6: la.IP.To4() == nil, local: la}, nil
}

// acquire returns the descriptor for one system call; release follows.
// false: the socket is closed.
func (s *udpSock) acquire() (int, bool) {
	s.mu.RLock()
	if s.fd < 0 {
		s.mu.RUnlock()
		return -1, false
	}
	return s.fd, true
}

func (s *udpSock) release() { s.mu.RUnlock() }

// close closes the socket, which also takes it out of the loop's epoll
// set (the descriptor is the socket's only one).
func (s *udpSock) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fd < 0 {
		return net.ErrClosed
	}
	err := unix.Close(s.fd)
	s.fd = -1
	if err != nil {
		return fmt.Errorf("turnserver: close %s: %w", s.local, err)
	}
	return nil
}

func (s *udpSock) localAddrPort() netip.AddrPort { return addrPortOf(s.local) }

// growReceiveBuffer asks for an n-byte receive buffer (see setBuffer).
func (s *udpSock) growReceiveBuffer(n int) {
	if fd, ok := s.acquire(); ok {
		setBuffer(fd, unix.SO_RCVBUFFORCE, unix.SO_RCVBUF, n)
		s.release()
	}
}
