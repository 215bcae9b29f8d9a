//go:build linux

package signal

import (
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// poller is the hub's epoll set of idle sockets: a socket waiting for its
// next message has no goroutine, so it costs no stack. When one becomes
// readable the poller hands it to a worker goroutine that reads what is
// there and re-arms the socket (EPOLLONESHOT: at most one reader per
// socket, without a lock). The epoll descriptor itself waits in Go's
// netpoller, so the poller goroutine parks like any socket read and no
// thread blocks.
//
// Workers outlive their socket for workerIdle, waiting for the next one:
// a fresh goroutine per message would grow its stack from 2 KiB through
// the JSON handling every time (runtime.newstack was 12 % of the hub's CPU
// in the message phase), and idle workers are few (as many as sockets were
// served at once).
type poller struct {
	// static after construction
	epfd int
	file *os.File // epfd, so the Go netpoller tells us when events are ready
	rc   syscall.RawConn
	done chan struct{} // closed when run has returned
	quit chan struct{} // closed by close: idle workers end

	jobs    chan *client   // unbuffered: a send succeeds only into an idle worker
	workers sync.WaitGroup // run and the workers

	mu sync.Mutex
	// guarded by mu
	byFD   []*client // registered sockets by descriptor (below 20,000 here)
	closed bool
}

func newPoller() (*poller, error) {
	fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("signal: epoll_create1: %w", err)
	}
	if err := syscall.SetNonblock(fd, true); err != nil {
		syscall.Close(fd)
		return nil, fmt.Errorf("signal: epoll nonblock: %w", err)
	}
	// A non-blocking descriptor handed to os.NewFile joins the netpoller.
	f := os.NewFile(uintptr(fd), "signal-epoll")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("signal: epoll raw conn: %w", err)
	}
	p := &poller{epfd: fd, file: f, rc: rc, done: make(chan struct{}), quit: make(chan struct{}), jobs: make(chan *client)}
	p.workers.Add(1)
	go p.run()
	return p, nil
}

// workerIdle is how long a worker waits for another socket before ending.
const workerIdle = 2 * time.Second

// worker serves c, then whatever socket it is handed next, until it has
// waited workerIdle for one.
func (p *poller) worker(c *client) {
	defer p.workers.Done()
	idle := time.NewTimer(workerIdle)
	defer idle.Stop()
	for {
		c.serve()
		idle.Reset(workerIdle)
		select {
		case c = <-p.jobs:
		case <-idle.C:
			return
		case <-p.quit:
			return
		}
	}
}

// run hands every readable socket to a fresh serve goroutine until close.
// Those goroutines are counted in the hub's WaitGroup as their client's
// reader; the poller itself is waited for by close.
func (p *poller) run() {
	defer p.workers.Done()
	defer close(p.done)
	var events [128]syscall.EpollEvent
	ready := make([]*client, 0, len(events))
	for {
		n := 0
		err := p.rc.Read(func(fd uintptr) bool {
			var err error
			n, err = syscall.EpollWait(int(fd), events[:], 0)
			return err == nil && n > 0 // nothing (or EINTR): wait for the netpoller
		})
		if err != nil {
			return // closed
		}
		p.mu.Lock()
		for _, ev := range events[:n] {
			if fd := int(ev.Fd); fd < len(p.byFD) && p.byFD[fd] != nil {
				ready = append(ready, p.byFD[fd])
			}
		}
		p.mu.Unlock()
		for i, c := range ready {
			// The last one is served here when that needs no waiting: a
			// hand-off to a worker costs a goroutine switch, most often a
			// wake-up of another thread too, per message.
			if i == len(ready)-1 && c.serveQuick() {
				continue
			}
			select {
			case p.jobs <- c:
			default:
				p.workers.Add(1)
				go p.worker(c)
			}
		}
		clear(ready)
		ready = ready[:0]
	}
}

// events: readable or closed, once per arming.
const pollEvents = syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT

// add registers c, armed. Until del, the socket is c's alone: it is closed
// only by its reader's end (abort shuts it down instead), so its descriptor
// cannot be reused under us.
func (p *poller) add(c *client) error {
	var err error
	cerr := c.raw.Control(func(fd uintptr) {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.closed {
			err = net.ErrClosed
			return
		}
		if int(fd) >= len(p.byFD) {
			p.byFD = append(p.byFD, make([]*client, int(fd)+1-len(p.byFD)+len(p.byFD)/2)...)
		}
		p.byFD[fd] = c
		ev := syscall.EpollEvent{Events: pollEvents, Fd: int32(fd)}
		if err = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, int(fd), &ev); err != nil {
			p.byFD[fd] = nil
		}
	})
	if cerr != nil {
		return cerr
	}
	return err
}

// arm waits for c's next bytes; if they are already there, it fires at once.
func (p *poller) arm(c *client) error {
	var err error
	cerr := c.raw.Control(func(fd uintptr) {
		// Under mu, which run takes before it starts the next serve: that
		// is the happens-before edge the race detector sees (the kernel's
		// own ordering is invisible to it).
		p.mu.Lock()
		defer p.mu.Unlock()
		ev := syscall.EpollEvent{Events: pollEvents, Fd: int32(fd)}
		err = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_MOD, int(fd), &ev)
	})
	if cerr != nil {
		return cerr
	}
	return err
}

// del forgets c; its reader calls it before closing the socket.
func (p *poller) del(c *client) {
	if p == nil {
		return // c was read by readLoop
	}
	c.raw.Control(func(fd uintptr) {
		p.mu.Lock()
		defer p.mu.Unlock()
		if int(fd) < len(p.byFD) && p.byFD[fd] == c {
			p.byFD[fd] = nil
			syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, int(fd), nil)
		}
	})
}

// close stops the poller once no socket needs it (the hub's readers have
// ended) and waits for it.
func (p *poller) close() {
	if p == nil {
		return
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	p.mu.Unlock()
	p.file.Close() // wakes run's Read with an error
	<-p.done
	close(p.quit)
	p.workers.Wait()
}

// rawConn is the descriptor of a plain TCP socket, which the poller can
// wait on and push can write to directly; nil for anything else (TLS buffers plaintext of its own, so its
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

// shutdownSocket breaks a socket without closing its descriptor: a blocked
// read or write fails at once, and a parked socket turns readable (EOF),
// which wakes its reader to close it.
func shutdownSocket(raw syscall.RawConn) {
	raw.Control(func(fd uintptr) {
		syscall.Shutdown(int(fd), syscall.SHUT_RDWR)
	})
}

// writeSocket makes one non-blocking write attempt; n is what went out.
// EAGAIN (the socket buffer is full) is no error: n is 0.
func writeSocket(raw syscall.RawConn, b []byte) (n int, err error) {
	cerr := raw.Write(func(fd uintptr) bool {
		n, err = syscall.Write(int(fd), b)
		return true
	})
	if err == syscall.EAGAIN || err == syscall.EINTR {
		n, err = 0, nil
	}
	n = max(n, 0)
	if cerr != nil {
		return n, cerr
	}
	return n, err
}
