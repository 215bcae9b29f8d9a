//go:build unix

package signal

import (
	"net"
	"syscall"
	"time"
)

// rawConn is the descriptor of a plain TCP socket, which the reader can
// park on; nil for anything else (TLS buffers plaintext of its own, so its
// socket's readiness says nothing).
func rawConn(conn net.Conn) syscall.RawConn {
	tc, ok := conn.(*net.TCPConn)
	if !ok {
		return nil
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	return raw
}

// waitReadable returns when the socket has bytes for gorilla (or an EOF or
// error for it to find). The empty pongs answering the hub's pings are
// consumed here, so a socket that is only kept alive never wakes a drain.
func (c *client) waitReadable() error {
	for {
		pong := false
		err := c.raw.Read(func(fd uintptr) bool {
			var b [emptyPongLen + 2]byte
			n, _, err := recvPeek(fd, b[:])
			if err == syscall.EAGAIN || err == syscall.EINTR {
				return false // wait for readiness
			}
			if err == nil && isEmptyPong(b[:n]) {
				// Gorilla stands between messages (the socket was parked
				// with its buffer empty), so taking a whole control frame
				// off the socket leaves it where it was.
				syscall.Recvfrom(int(fd), b[:emptyPongLen], syscall.MSG_DONTWAIT)
				pong = true
			}
			return true
		})
		if err != nil {
			return err
		}
		if !pong {
			return nil
		}
		c.lastRead.Store(time.Now().UnixNano())
	}
}

// readableNow tells, without waiting, whether the socket has bytes for
// gorilla; a pong alone is left to waitReadable.
func (c *client) readableNow() bool {
	ready := false
	c.raw.Control(func(fd uintptr) {
		var b [emptyPongLen + 2]byte
		n, _, err := recvPeek(fd, b[:])
		ready = err != syscall.EAGAIN && !(err == nil && isEmptyPong(b[:n]))
	})
	return ready
}

// recvPeek peeks at the socket without waiting or consuming.
func recvPeek(fd uintptr, b []byte) (int, syscall.Sockaddr, error) {
	return syscall.Recvfrom(int(fd), b, syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
}
