//go:build linux && !callbox_portable

package turnserver

// The data plane's reader: one goroutine reads every UDP listener socket
// and every relay socket, waiting for all of them in one epoll set with an
// ordinary blocking epoll_pwait.
//
// Before it, each socket had a reader parked in Go's netpoller (pion's
// listener loop, pion's per-allocation goroutine). At the 5–50 packets per
// second of a call every datagram found its reader asleep, so each one cost
// the netpoller thread's wake-up, the scheduler handing the goroutine over,
// and, whenever the poller found two ready at once, a second thread woken to
// run the other: about a tenth more CPU than coturn, which sleeps in its
// own epoll_wait (docs/performance.md). Here the thread that sleeps is the
// one that reads: the kernel wakes it, it reads every ready socket
// (recvmmsg), relays what the data plane relays (fastpath.go), sends each
// listener socket's peer → client ChannelData of the whole wake-up in one
// sendmmsg, and sleeps again, without the scheduler. What pion must
// handle (requests, Data indications, TCP allocations' peer datagrams)
// reaches pion's goroutines through queues (pionQueue).
//
// The sockets are out of Go's netpoller (udpSock): were they still in it,
// each datagram would wake the runtime's epoll thread as well.
//
// The wait is syscall.Syscall6, which tells the scheduler that this thread
// is in a system call: the runtime leaves its P alone while other Ps are
// idle, and takes it back for other goroutines after 10 ms of silence or
// when none is idle; the loop gets a P back on wake-up like any system
// call's return.

import (
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// goyield is the runtime's yield that puts the goroutine back on its own
// P's run queue. runtime.Gosched puts it on the global queue and wakes an
// idle thread to look for work: with the loop alone on its P, that thread
// often took the loop, and the one that yielded went to sleep, a hand-over
// between two threads 125 times a second (6 % of callbox's CPU in
// scenario (a), docs/performance.md). goyield is one of the runtime's
// linknames kept for outside packages (go.dev/issue/67401: "do not remove
// or change the type signature").
//
//go:linkname goyield runtime.goyield
func goyield()

// loopEvents is how many ready sockets one epoll_pwait reports at most;
// the others are reported at the next (the set is level-triggered).
const loopEvents = 128

// loopSlots is how many peer datagrams one wake-up holds framed before
// they are sent.
const loopSlots = 64

// wakeID is the epoll id of the loop's eventfd; sockets get 1, 2...
const wakeID = 0

// loopMember is one socket of the loop: a listener or a relay.
type loopMember struct {
	l *udpListener
	r *relayConn
}

// dataLoop owns the epoll set and the goroutine that waits on it.
type dataLoop struct {
	ep   int // epoll set
	wake int // eventfd that interrupts the wait (stop)
	log  *slog.Logger

	mu      sync.Mutex
	members map[int32]loopMember // guarded by mu
	nextID  int32                // guarded by mu
	quit    atomic.Bool
	started bool // owned by the loop's owner
	done    chan struct{}

	// owned by the loop goroutine
	busy   busyPriority
	events [loopEvents]unix.EpollEvent
	// Peer datagrams are read into slots and framed as ChannelData in
	// place (channelHeader bytes kept free in front); framed ones wait in
	// their listener's down writer until flushDown frees every slot.
	slots  [loopSlots][pionMTU]byte
	hdrs   [loopSlots]mmsghdr
	iovs   [loopSlots]unix.Iovec
	names  [loopSlots]sockaddr
	used   int
	dirty  []*udpListener // listeners with framed datagrams queued
	wakeRd [8]byte
}

// minProcs is the least GOMAXPROCS the loop runs well with. It waits
// holding its P; were that the only P (GOMAXPROCS=1: a one-CPU VPS, or a
// process pinned to one CPU), sysmon would find no idle P, take the P out of
// every wait past its 20 µs tick and keep polling at that tick: twice the
// CPU per relayed packet of the same loop beside a second, idle P
// (docs/performance.md, "One CPU").
const minProcs = 2

// reserveSpareP raises GOMAXPROCS to minProcs where it is lower; New calls
// it before it sizes the loops (dataLoops). Setting
// it ends the runtime's own updates of GOMAXPROCS, which would follow a
// change of the CPUs the process may use: given more later, it stays 2.
func reserveSpareP(log *slog.Logger) {
	if n := runtime.GOMAXPROCS(0); n < minProcs {
		runtime.GOMAXPROCS(minProcs)
		log.Info("turn: GOMAXPROCS raised so the data plane's wait leaves a P for the rest", "from", n, "to", minProcs)
	}
}

// newDataLoop makes a loop whose thread takes nice value busyNice while
// the loop is busy (priority_linux.go; 0 is never).
func newDataLoop(log *slog.Logger, busyNice int) (*dataLoop, error) {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("turnserver: epoll_create1: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(ep)
		return nil, fmt.Errorf("turnserver: eventfd: %w", err)
	}
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, wake, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: wakeID}); err != nil {
		unix.Close(ep)
		unix.Close(wake)
		return nil, fmt.Errorf("turnserver: epoll_ctl eventfd: %w", err)
	}
	lp := &dataLoop{ep: ep, wake: wake, log: log, members: make(map[int32]loopMember), done: make(chan struct{}),
		busy: newBusyPriority(busyNice, log)}
	for i := range lp.hdrs {
		lp.hdrs[i].hdr.Iov = &lp.iovs[i]
		lp.hdrs[i].hdr.SetIovlen(1)
		lp.hdrs[i].hdr.Name = (*byte)(unsafe.Pointer(&lp.names[i]))
		lp.iovs[i].Base = &lp.slots[i][channelHeader]
		lp.iovs[i].SetLen(pionMTU - channelHeader)
	}
	return lp, nil
}

// start runs the loop: after its members' owners are ready, since it
// calls into them at once. stop ends it.
func (lp *dataLoop) start() {
	lp.started = true
	go lp.run()
}

// stop ends the loop, waits for it and closes the set. The members'
// sockets are their owners' to close.
func (lp *dataLoop) stop() {
	if lp.quit.Swap(true) {
		return
	}
	if !lp.started {
		close(lp.done)
	}
	var one [8]byte
	one[0] = 1                  // eventfd counters are host-endian; any non-zero value wakes
	unix.Write(lp.wake, one[:]) //nolint:errcheck // only fails if the counter would overflow: then it is non-zero anyway
	<-lp.done
	unix.Close(lp.ep)
	unix.Close(lp.wake)
}

// add puts socket s in the set for m and returns its id.
func (lp *dataLoop) add(m loopMember, s *udpSock) (int32, error) {
	lp.mu.Lock()
	for {
		lp.nextID++
		if lp.nextID <= wakeID {
			lp.nextID = wakeID + 1
		}
		if _, taken := lp.members[lp.nextID]; !taken {
			break
		}
	}
	id := lp.nextID
	lp.members[id] = m
	lp.mu.Unlock()
	fd, ok := s.acquire()
	err := error(syscall.EBADF)
	if ok {
		err = unix.EpollCtl(lp.ep, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: id})
		s.release()
	}
	if err != nil {
		lp.forget(id)
		return 0, fmt.Errorf("turnserver: epoll_ctl add %s: %w", s.local, err)
	}
	return id, nil
}

// forget drops id; its socket leaves the set when it is closed.
func (lp *dataLoop) forget(id int32) {
	lp.mu.Lock()
	delete(lp.members, id)
	lp.mu.Unlock()
}

func (lp *dataLoop) member(id int32) loopMember {
	lp.mu.Lock()
	m := lp.members[id]
	lp.mu.Unlock()
	return m
}

// yieldEvery is how long the loop runs before it passes through the
// scheduler. The runtime takes a goroutine that has not been scheduled for
// 10 ms for a runaway: sysmon then preempts it and retakes its P out of
// every wait (a signal and a thread hand-off each time, and sysmon itself
// back to polling every 20 µs), since the loop never returns to the
// scheduler on its own. A yield (goyield), when nothing else is runnable,
// costs one pass through the scheduler on the same thread.
const yieldEvery = 8 * time.Millisecond

func (lp *dataLoop) run() {
	defer close(lp.done)
	defer lp.busy.lower()
	lastYield := monotonicNanos()
	for !lp.quit.Load() {
		if now := monotonicNanos(); now-lastYield > int64(yieldEvery) {
			goyield()
			lastYield = now
			lp.busy.tick(now)
		}
		n, _, e := syscall.Syscall6(unix.SYS_EPOLL_PWAIT, uintptr(lp.ep), uintptr(unsafe.Pointer(&lp.events[0])), loopEvents, uintptr(lp.busy.waitTimeout()), 0, 0)
		if e != 0 {
			if e == unix.EINTR {
				continue
			}
			lp.log.Error("turn: data plane stopped", "err", fmt.Errorf("turnserver: epoll_pwait: %w", e))
			return
		}
		lp.busy.events += int64(n)
		for i := range int(n) {
			id := lp.events[i].Fd
			if id == wakeID {
				unix.Read(lp.wake, lp.wakeRd[:]) //nolint:errcheck // resets the counter; quit is checked next
				continue
			}
			m := lp.member(id)
			switch {
			case m.l != nil:
				lp.readListener(m.l)
			case m.r != nil:
				lp.readRelay(m.r)
			}
		}
		lp.flushDown()
	}
}

// relayBuffer is the receive buffer a busy relay socket gets: one whose
// read fills a whole batch (dataLoop.readRelay). One loop reads every
// relay: while other work holds its thread (a burst on other sockets, the
// CPU taken by other processes) a busy allocation's datagrams wait here,
// and the default (208 KiB) holds about 100 full-size datagrams, 7 ms of a
// 15,000 packets/s stream. Only busy ones: given to every relay, the
// larger buffer cost 8 % more CPU per packet at 50 packets/s per call
// (docs/performance.md).
const relayBuffer = 1 << 20

// readListener reads one batch of l's socket (more stays ready for the
// next wait): the data plane's datagrams are handled at once, the rest
// queued for pion with the authenticator's verdict.
func (lp *dataLoop) readListener(l *udpListener) {
	n, err := l.rd.read()
	if err != nil || n == 0 {
		return // closed, or nothing after all
	}
	for i := range n {
		pkt, src, trunc := l.rd.msg(i)
		l.take(i, pkt, src, trunc)
	}
	l.flush()
}

// readRelay reads one batch of rc's socket (more stays ready for the next
// wait) and relays or queues each datagram.
func (lp *dataLoop) readRelay(rc *relayConn) {
	if lp.used+relayBatch > loopSlots {
		lp.flushDown()
	}
	fd, ok := rc.sock.acquire()
	if !ok {
		return // closed since the event
	}
	n, e := recvmmsg(fd, lp.hdrs[lp.used:lp.used+relayBatch])
	rc.sock.release()
	if e != 0 {
		return // EAGAIN; any other error shows again at pion's next write or at close
	}
	if n == relayBatch && !rc.busy {
		rc.busy = true
		rc.sock.growReceiveBuffer(relayBuffer)
	}
	route := rc.route.Load()
	for i := lp.used; i < lp.used+n; i++ {
		h := &lp.hdrs[i]
		if h.hdr.Flags&unix.MSG_TRUNC != 0 {
			continue // longer than pion's buffer: no use cut short
		}
		if msg := rc.fromPeer(lp.slots[i][:], int(h.len), sockaddrAddrPort(&lp.names[i]), route); msg != nil {
			lp.down(route, msg)
		}
	}
	lp.used += n
}

// down queues a framed datagram for the client of route.
func (lp *dataLoop) down(route *clientRoute, msg []byte) {
	l := route.out
	if l.down.n == 0 {
		lp.dirty = append(lp.dirty, l)
	} else if l.down.full() {
		l.down.flush() //nolint:errcheck // best effort, as pion's own writes
	}
	l.down.add(msg, route.addr)
}

// flushDown sends the framed peer datagrams and frees the slots.
func (lp *dataLoop) flushDown() {
	for i, l := range lp.dirty {
		if l.down.n > 0 {
			l.down.flush() //nolint:errcheck // best effort, as pion's own writes
		}
		lp.dirty[i] = nil
	}
	lp.dirty = lp.dirty[:0]
	lp.used = 0
}
