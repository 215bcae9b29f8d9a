//go:build !linux

package turnserver

import (
	"golang.org/x/sys/unix"
	"net"
	"net/netip"
	"syscall"
)

// Without recvmmsg/sendmmsg the batches hold one datagram per system call;
// the data plane works the same.

type batchReader struct {
	onBatch func(n int) bool
	c       *net.UDPConn
	bufs    [][]byte
	n       int
	src     netip.AddrPort
	trunc   bool
}

func newBatchReader(s *udpSock, _, size int) *batchReader {
	return &batchReader{c: s.conn, bufs: [][]byte{make([]byte, size)}}
}

func (r *batchReader) read() (int, error) {
	n, _, flags, src, err := r.c.ReadMsgUDPAddrPort(r.bufs[0], nil)
	if err != nil {
		return 0, err
	}
	r.n, r.src, r.trunc = n, netip.AddrPortFrom(src.Addr().Unmap(), src.Port()), flags&syscall.MSG_TRUNC != 0
	return 1, nil
}

func (r *batchReader) serve() error {
	for {
		n, err := r.read()
		if err != nil {
			return err
		}
		if r.onBatch(n) {
			return nil
		}
	}
}

func (r *batchReader) msg(int) ([]byte, netip.AddrPort, bool) { return r.bufs[0][:r.n], r.src, r.trunc }

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

// dgram is one datagram at a time through net.UDPConn.
type dgram struct{}

func newDgram() *dgram { return &dgram{} }

func (d *dgram) sendTo(s *udpSock, p []byte, dst netip.AddrPort) error {
	_, err := s.conn.WriteToUDPAddrPort(p, dst)
	return err
}

func (d *dgram) recvFrom(s *udpSock, p []byte) (int, netip.AddrPort, bool, error) {
	n, _, flags, src, err := s.conn.ReadMsgUDPAddrPort(p, nil)
	return n, netip.AddrPortFrom(src.Addr().Unmap(), src.Port()), flags&syscall.MSG_TRUNC != 0, err
}
