//go:build !linux

package signal

import (
	"net"
	"syscall"
)

// Without epoll every socket has a reader goroutine of its own (readLoop).
type poller struct{}

func newPoller() (*poller, error) { return nil, nil }

func (p *poller) add(*client) error { panic("signal: no poller on this platform") }
func (p *poller) del(*client)       {}
func (p *poller) close()            {}

func rawConn(net.Conn) syscall.RawConn { return nil }

func shutdownSocket(syscall.RawConn) {}

func writeSocket(syscall.RawConn, []byte) (int, error) {
	panic("signal: no raw writes on this platform")
}

func readSocket(syscall.RawConn, []byte) (int, error) {
	panic("signal: no raw reads on this platform")
}
