//go:build !unix

package signal

import (
	"net"
	"syscall"
)

// rawConn: without unix sockets the plain reader loop reads.
func rawConn(net.Conn) syscall.RawConn { return nil }

func (c *client) waitReadable() error { panic("signal: park without a raw conn") }

func (c *client) readableNow() bool { return true }
