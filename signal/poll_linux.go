//go:build linux

package signal

import (
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// poller is the hub's epoll set of idle sockets: a socket waiting for its
// next message has no goroutine, so it costs no stack. When one becomes
// readable the poller serves it itself when that cannot wait (serveQuick),
// or hands it to a worker goroutine that reads what is there. Sockets are
// edge-triggered (no epoll_ctl per message): the client's pollState makes
// one goroutine at a time its reader, and that reader reads until the
// socket is empty (sockReader.drained) before giving it back. The epoll
// descriptor itself waits in Go's netpoller, so the poller goroutine parks
// like any socket read and no thread blocks.
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

// run serves or hands out every readable socket until close.
func (p *poller) run() {
	defer p.workers.Done()
	defer close(p.done)
	var events [128]syscall.EpollEvent
	ready := make([]*client, 0, len(events))
	// The whole loop runs inside one RawConn.Read: returning false parks
	// the poller in the netpoller until the epoll descriptor turns
	// readable, and readiness that came while it was serving is kept
	// (a fresh Read would forget it), so a batch that emptied the ready
	// list can park at once, without an epoll_wait that finds nothing.
	p.rc.Read(func(fd uintptr) bool {
		for {
			n, err := syscall.EpollWait(int(fd), events[:], 0)
			if err != nil || n == 0 {
				return false // nothing (or EINTR): wait for the netpoller
			}
			p.mu.Lock()
			for _, ev := range events[:n] {
				if fd := int(ev.Fd); fd < len(p.byFD) && p.byFD[fd] != nil && p.byFD[fd].claim() {
					p.byFD[fd].dwell.mark()
					ready = append(ready, p.byFD[fd])
				}
			}
			p.mu.Unlock()
			for _, c := range ready {
				// Served here when that needs no waiting: a hand-off to
				// a worker costs a goroutine switch, most often a
				// wake-up of another thread too, per message.
				if c.serveQuick() {
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
			if n < len(events) {
				return false // the ready list is empty: wait
			}
		}
	}) // returns when close closes the descriptor
}

// events: readable or closed, edge-triggered (1<<31 is EPOLLET, which
// syscall spells as a negative number that EpollEvent's uint32 refuses).
const pollEvents = syscall.EPOLLIN | syscall.EPOLLRDHUP | 1<<31

// add registers c; its first event comes at once if bytes are waiting.
// Until del, the socket is c's alone: it is closed
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

// rawOp is one system call through a RawConn. Its functions are bound
// once, when the pool makes it: a closure per call would be an allocation
// per message on the relay's path.
type rawOp struct {
	b     []byte
	n     int
	err   error
	write func(fd uintptr) bool
	read  func(fd uintptr) bool
}

var rawOps = sync.Pool{New: func() any {
	o := new(rawOp)
	o.write = func(fd uintptr) bool {
		o.n, o.err = syscall.Write(int(fd), o.b)
		return true // never wait: EAGAIN is the answer
	}
	o.read = func(fd uintptr) bool {
		o.n, o.err = syscall.Read(int(fd), o.b)
		return true
	}
	return o
}}

// writeSocket makes one non-blocking write attempt; n is what went out.
// EAGAIN (the socket buffer is full) is no error: n is 0.
func writeSocket(raw syscall.RawConn, b []byte) (n int, err error) {
	o := rawOps.Get().(*rawOp)
	o.b = b
	cerr := raw.Write(o.write)
	n, err = max(o.n, 0), o.err
	o.b, o.err = nil, nil
	rawOps.Put(o)
	if err == syscall.EAGAIN || err == syscall.EINTR {
		n, err = 0, nil
	}
	if cerr != nil {
		return n, cerr
	}
	return n, err
}

// readSocket makes one non-blocking read attempt into b: errEmpty when
// the socket has nothing, io.EOF at its end.
func readSocket(raw syscall.RawConn, b []byte) (n int, err error) {
	o := rawOps.Get().(*rawOp)
	o.b = b
	cerr := raw.Read(o.read)
	n, err = max(o.n, 0), o.err
	o.b, o.err = nil, nil
	rawOps.Put(o)
	switch {
	case cerr != nil:
		return 0, cerr
	case err == syscall.EAGAIN || err == syscall.EINTR:
		return 0, errEmpty
	case err != nil:
		return 0, err
	case n == 0 && len(b) > 0:
		return 0, io.EOF
	}
	return n, nil
}
