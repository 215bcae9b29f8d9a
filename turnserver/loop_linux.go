package turnserver

// One reader per UDP listener socket for the listener and for the relay
// sockets of the allocations that arrived on it.
//
// Without it every relay socket has its own reader (pion's per-allocation
// goroutine) parked in Go's netpoller: each peer datagram wakes that
// goroutine, and when the poller hands back two ready goroutines at once
// the runtime wakes a second thread for the other, which then spins and
// sleeps again (futex, sched_yield: about a tenth of callbox's CPU at 50
// packets per second per call, see docs/performance.md). Here the
// listener's reader waits on an epoll set of its own that holds the
// listener socket and those relay sockets (the set itself is what it
// parks on in Go's netpoller), and one wake-up serves every socket that
// is ready: client → peer as before, peer → client framed as ChannelData
// into a slab and sent to the clients with one sendmmsg on the listener
// socket. pion's per-allocation goroutine then only sees what the data
// plane leaves to it (Data indications), through a queue.

import (
	"fmt"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// epollEvents is how many ready sockets one epoll_wait reports at most; a
// shorter answer proves the set had nothing more ready at that instant.
const epollEvents = 64

// listenerEvent is the epoll id of the listener socket; relays get 1, 2...
const listenerEvent = 0

// epollSet is a listener's epoll instance. The fields below the file are
// owned by the listener's reader.
type epollSet struct {
	fd   int
	file *os.File // the set in Go's netpoller (closing it wakes the reader)
	rc   syscall.RawConn

	events    [epollEvents]unix.EpollEvent
	n, next   int  // events of the last wait, next one to handle
	short     bool // the last wait came back short: park after its events
	errno     syscall.Errno
	fn        func(fd uintptr) bool // l.epRecv, bound once
	lstFn     func(fd uintptr) bool // l.lstRecv, bound once
	relFn     func(fd uintptr) bool // l.relRecv, bound once
	lstDone   bool                  // the listener socket proved empty
	lstErr    syscall.Errno
	relay     *relayConn // the relay relFn reads
	relayErr  syscall.Errno
	relayDone bool

	// Peer datagrams are read into slots and framed in place; framed
	// ones wait in down until the next flush, which frees every slot.
	slots [udpBatch][pionMTU]byte
	hdrs  [udpBatch]mmsghdr
	iovs  [udpBatch]unix.Iovec
	names [udpBatch]sockaddr
	used  int
	down  *batchWriter
}

// newEpollSet makes the epoll set of listener socket s, holding s.
func newEpollSet(s *udpSock) (*epollSet, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("turnserver: epoll_create1: %w", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("turnserver: epoll set non-blocking: %w", err)
	}
	f := os.NewFile(uintptr(fd), "turn-epoll")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("turnserver: epoll raw conn: %w", err)
	}
	ep := &epollSet{fd: fd, file: f, rc: rc, down: newBatchWriter(s, udpBatch)}
	for i := range ep.hdrs {
		ep.hdrs[i].hdr.Iov = &ep.iovs[i]
		ep.hdrs[i].hdr.SetIovlen(1)
		ep.hdrs[i].hdr.Name = (*byte)(unsafe.Pointer(&ep.names[i]))
		// room to frame ChannelData in place
		ep.iovs[i].Base = &ep.slots[i][channelHeader]
		ep.iovs[i].SetLen(pionMTU - channelHeader)
	}
	if err := ep.add(s, listenerEvent); err != nil {
		f.Close()
		return nil, err
	}
	return ep, nil
}

// add puts socket s in the set, edge-triggered, reported as id.
func (ep *epollSet) add(s *udpSock, id int32) error {
	var err error
	cerr := s.rc.Control(func(fd uintptr) {
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLET, Fd: id}
		err = unix.EpollCtl(ep.fd, unix.EPOLL_CTL_ADD, int(fd), &ev)
	})
	if cerr != nil {
		return fmt.Errorf("turnserver: epoll add: %w", cerr)
	}
	if err != nil {
		return fmt.Errorf("turnserver: epoll add: %w", err)
	}
	return nil
}

// remove takes socket s out of the set (closing s would too; this keeps
// the set exact while the socket lingers).
func (ep *epollSet) remove(s *udpSock) {
	s.rc.Control(func(fd uintptr) { //nolint:errcheck // a closed socket has left the set already
		unix.EpollCtl(ep.fd, unix.EPOLL_CTL_DEL, int(fd), nil) //nolint:errcheck // see above
	})
}

func (ep *epollSet) close() error { return ep.file.Close() }

// serve runs the reader until a datagram for pion is in l.pion or the set
// fails (closed).
func (l *udpListener) serveEpoll() error {
	ep := l.ep
	ep.errno = 0
	if err := ep.rc.Read(ep.fn); err != nil {
		return err
	}
	if ep.errno != 0 {
		return fmt.Errorf("turnserver: epoll_wait: %w", ep.errno)
	}
	return nil
}

// epRecv runs inside the set's RawConn.Read: it handles ready sockets
// until a datagram for pion turns up or an error (true), or nothing is
// ready (false: park until the set is readable again). It does not ask
// the set again after a short answer: whatever arrives later raises a new
// edge on the set, which wakes the parked reader.
func (l *udpListener) epRecv(fd uintptr) bool {
	ep := l.ep
	for {
		for ep.next < ep.n {
			if l.handleEvent(ep.events[ep.next].Fd) {
				l.flushDown()
				return true
			}
			ep.next++
		}
		l.flushDown()
		if ep.short {
			ep.short = false
			return false
		}
		n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, fd, uintptr(unsafe.Pointer(&ep.events[0])), epollEvents, 0, 0, 0)
		switch e {
		case 0:
		case unix.EINTR:
			continue
		default:
			ep.errno = e
			return true
		}
		ep.n, ep.next = int(n), 0
		if n == 0 {
			return false
		}
		ep.short = int(n) < epollEvents
	}
}

// handleEvent drains the socket of one event; true means stop (a datagram
// for pion, or the listener socket failed).
func (l *udpListener) handleEvent(id int32) bool {
	ep := l.ep
	if id == listenerEvent {
		for {
			ep.lstDone, ep.lstErr = false, 0
			if err := l.sock.rc.Read(ep.lstFn); err != nil {
				ep.errno = syscall.EBADF
				return true
			}
			if ep.lstErr != 0 {
				ep.errno = ep.lstErr
				return true
			}
			if ep.lstDone {
				return false
			}
			if l.onBatch(l.rd.n) {
				return true // handed to pion; the drain goes on at the next read
			}
			if l.rd.n < udpBatch {
				return false
			}
		}
	}
	l.mu.Lock()
	rc := l.relays[id]
	l.mu.Unlock()
	if rc == nil {
		return false // closed since the event
	}
	ep.relay, ep.relayErr, ep.relayDone = rc, 0, false
	for !ep.relayDone {
		if rc.sock.rc.Read(ep.relFn) != nil || ep.relayErr != 0 {
			break // closed: pion's reader sees it through done
		}
	}
	ep.relay = nil
	return false
}

// lstRecv reads one batch of the listener socket; it never parks.
func (l *udpListener) lstRecv(fd uintptr) bool {
	switch e := l.rd.recvmmsg(fd); e {
	case 0:
		l.next, l.got = 0, l.rd.n
	case unix.EAGAIN:
		l.ep.lstDone = true
	default:
		l.ep.lstErr = e
	}
	return true
}

// relRecv reads one batch of ep.relay's socket into free slots and
// handles it; it never parks.
func (l *udpListener) relRecv(fd uintptr) bool {
	ep := l.ep
	if udpBatch-ep.used < relayBatch {
		l.flushDown()
	}
	k := udpBatch - ep.used
	for i := ep.used; i < udpBatch; i++ {
		ep.hdrs[i].hdr.Namelen = uint32(unsafe.Sizeof(sockaddr{}))
		ep.hdrs[i].hdr.Flags = 0
	}
	for {
		r, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&ep.hdrs[ep.used])), uintptr(k), 0, 0, 0)
		switch e {
		case 0:
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			ep.relayDone = true
			return true
		default:
			ep.relayErr = e
			return true
		}
		n := int(r)
		rc := ep.relay
		route := rc.route.Load()
		for i := ep.used; i < ep.used+n; i++ {
			l.relayOne(rc, route, i)
		}
		ep.used += n
		ep.relayDone = n < k
		return true
	}
}

// relayOne handles the peer datagram in slot i from relay rc.
func (l *udpListener) relayOne(rc *relayConn, route *clientRoute, i int) {
	ep := l.ep
	h := &ep.hdrs[i]
	if h.hdr.Flags&unix.MSG_TRUNC != 0 {
		return // longer than pion's buffer: no use cut short
	}
	n := int(h.len)
	src := sockaddrAddrPort(&ep.names[i])
	if !rc.admitIn(src, n) {
		return
	}
	if number, ok := rc.channelByPeer(src); ok && route != nil {
		ep.down.add(frameChannelData(ep.slots[i][:], number, n), route.addr)
		return
	}
	rc.queueForPion(ep.slots[i][channelHeader:channelHeader+n], src)
}

// flushDown sends the framed peer datagrams and frees the slots.
func (l *udpListener) flushDown() {
	ep := l.ep
	if ep.down.n > 0 {
		ep.down.flush() //nolint:errcheck // best effort, as pion's own writes
	}
	ep.used = 0
}

// own makes the listener's reader read rc's socket: called from pion's
// OnAllocationCreated, before pion starts the allocation's reader.
func (l *udpListener) own(rc *relayConn) {
	if l.ep == nil || rc.sock == nil {
		return
	}
	l.mu.Lock()
	for {
		l.nextRelay++
		if l.nextRelay <= listenerEvent {
			l.nextRelay = listenerEvent + 1
		}
		if l.relays[l.nextRelay] == nil {
			break
		}
	}
	id := l.nextRelay
	l.relays[id] = rc
	l.mu.Unlock()
	rc.ownBy(l, id)
	if err := l.ep.add(rc.sock, id); err != nil {
		// The relay is closed already (pion then deletes the
		// allocation); nothing to read.
		l.disown(rc)
	}
}

// disown forgets rc (closing).
func (l *udpListener) disown(rc *relayConn) {
	l.mu.Lock()
	if l.relays[rc.ownerID] == rc {
		delete(l.relays, rc.ownerID)
	}
	l.mu.Unlock()
	if l.ep != nil {
		l.ep.remove(rc.sock)
	}
}

// initEpoll gives the listener its epoll set; without one (the kernel
// refuses) each relay keeps its own reader.
func (l *udpListener) initEpoll() error {
	ep, err := newEpollSet(l.sock)
	if err != nil {
		return err
	}
	ep.fn, ep.lstFn, ep.relFn = l.epRecv, l.lstRecv, l.relRecv
	l.ep = ep
	return nil
}
