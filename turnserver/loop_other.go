//go:build !linux || callbox_portable

package turnserver

import (
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
)

// Without epoll, the loop is a goroutine per socket, blocked in its own
// read; the handling of a datagram runs under the loop's mutex, so the
// state the Linux loop owns alone still has one owner at a time.

type loopMember struct {
	l *udpListener
	r *relayConn
}

type dataLoop struct {
	mu      sync.Mutex // serialises the handling of datagrams
	readers sync.WaitGroup
	started chan struct{}
	once    sync.Once
	nextID  atomic.Int32
}

// reserveSpareP has nothing to do here: these readers wait in Go's
// netpoller, holding no P.
func reserveSpareP(*slog.Logger) {}

// busyNiceAllowed is 0: these readers are goroutines on any thread, with
// no thread of their own to raise (turn.busy_nice is for the Linux loop).
func busyNiceAllowed(int, *slog.Logger) int { return 0 }

func newDataLoop(*slog.Logger, int) (*dataLoop, error) {
	return &dataLoop{started: make(chan struct{})}, nil
}

func (lp *dataLoop) start() { lp.once.Do(func() { close(lp.started) }) }

// stop waits for the readers, which end when their sockets close.
func (lp *dataLoop) stop() {
	lp.start()
	lp.readers.Wait()
}

func (lp *dataLoop) add(m loopMember, s *udpSock) (int32, error) {
	lp.readers.Add(1)
	go lp.read(m, s)
	return lp.nextID.Add(1), nil
}

func (lp *dataLoop) forget(int32) {}

func (lp *dataLoop) read(m loopMember, s *udpSock) {
	defer lp.readers.Done()
	<-lp.started
	var buf [udpBufSize]byte
	for {
		n, _, flags, src, err := s.conn.ReadMsgUDPAddrPort(buf[channelHeader:], nil)
		if err != nil {
			return
		}
		src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
		trunc := flags&syscall.MSG_TRUNC != 0
		lp.mu.Lock()
		if m.l != nil {
			m.l.take(0, buf[channelHeader:channelHeader+n], src, trunc)
			m.l.flush()
		} else if !trunc && n < pionMTU-channelHeader {
			route := m.r.route.Load()
			if msg := m.r.fromPeer(buf[:], n, src, route); msg != nil {
				sendTo(route.out.sock, msg, route.addr) //nolint:errcheck // best effort, as pion's own writes
			}
		}
		lp.mu.Unlock()
	}
}
