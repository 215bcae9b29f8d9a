//go:build !linux || callbox_portable

package turnserver

import (
	"net"
	"net/netip"

	"golang.org/x/sys/unix"
)

// Without recvmmsg/sendmmsg the batches hold one datagram per system call;
// the data plane works the same.

// batchReader is the Linux loop's (dataLoop.readListener); the readers of
// loop_other.go hand datagrams to udpListener.take one at a time.
type batchReader struct{}

func newBatchReader(*udpSock, int, int) *batchReader { return nil }

type batchWriter struct {
	sock *udpSock
	c    *net.UDPConn
	n    int
	p    [][]byte
	dsts []netip.AddrPort
}

func newBatchWriter(s *udpSock, batch int) *batchWriter {
	w := &batchWriter{p: make([][]byte, batch), dsts: make([]netip.AddrPort, batch)}
	if s != nil {
		w.to(s)
	}
	return w
}

func (w *batchWriter) to(s *udpSock) { w.sock, w.c = s, s.conn }

func (w *batchWriter) full() bool { return w.n == len(w.p) }

func (w *batchWriter) add(p []byte, dst netip.AddrPort) {
	w.p[w.n], w.dsts[w.n] = p, dst
	w.n++
}

func (w *batchWriter) flush() error {
	var err error
	for i := range w.n {
		if _, werr := w.c.WriteToUDPAddrPort(w.p[i], w.dsts[i]); werr != nil && err == nil {
			err = werr
		}
		w.p[i] = nil
	}
	w.n = 0
	return err
}

const listenerBuffer = 4 << 20

// setBuffers asks for listenerBuffer, up to the system's limits.
func setBuffers(fd int) {
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, listenerBuffer) //nolint:errcheck // best effort
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, listenerBuffer) //nolint:errcheck // best effort
}

// sendTo sends p to dst on s; safe from any goroutine.
func sendTo(s *udpSock, p []byte, dst netip.AddrPort) error {
	_, err := s.conn.WriteToUDPAddrPort(p, dst)
	return err
}
