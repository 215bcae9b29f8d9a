//go:build !linux || callbox_portable

package turnserver

import (
	"net"
	"net/netip"
)

// udpSock is a UDP socket of the data plane. Without epoll each socket
// keeps its net.UDPConn and a reading goroutine (loop_other.go).
type udpSock struct {
	conn  *net.UDPConn
	v6    bool
	local *net.UDPAddr
}

func newUDPSock(c *net.UDPConn) (*udpSock, error) {
	la, _ := c.LocalAddr().(*net.UDPAddr)
	if la == nil {
		c.Close()
		return nil, net.UnknownNetworkError(c.LocalAddr().Network())
	}
	return &udpSock{conn: c, v6: la.IP.To4() == nil, local: la}, nil
}

func (s *udpSock) close() error { return s.conn.Close() }

func (s *udpSock) localAddrPort() netip.AddrPort { return addrPortOf(s.local) }
