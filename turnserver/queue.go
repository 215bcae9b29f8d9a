package turnserver

import (
	"net/netip"
	"sync"
)

// pionDgram is a datagram on its way to pion.
type pionDgram struct {
	buf   [pionMTU]byte
	n     int
	trunc bool
	src   netip.AddrPort
	v     verdict // the authenticator's verdict on a listener's request
}

var pionDgramPool = sync.Pool{New: func() any { return new(pionDgram) }}

// pionQueue carries datagrams from the loop to one of pion's reading
// goroutines. Bounded: when pion falls behind, datagrams are dropped, as
// a full socket buffer would drop them.
type pionQueue struct {
	q       chan *pionDgram
	closing chan struct{}
	once    sync.Once
}

func newPionQueue(size int) *pionQueue {
	return &pionQueue{q: make(chan *pionDgram, size), closing: make(chan struct{})}
}

// put copies p for pion (the loop's buffers are reused); false: the queue
// is full and p is dropped.
func (pq *pionQueue) put(p []byte, src netip.AddrPort, trunc bool, v verdict) bool {
	d := pionDgramPool.Get().(*pionDgram)
	d.n = copy(d.buf[:], p)
	d.trunc, d.src, d.v = trunc, src, v
	select {
	case pq.q <- d:
		return true
	default:
		d.v = verdict{}
		pionDgramPool.Put(d)
		return false
	}
}

// get waits for the next datagram, copies it into p and returns its
// length, source and verdict; ok is false once the queue is closed.
func (pq *pionQueue) get(p []byte) (n int, src netip.AddrPort, v verdict, ok bool) {
	select {
	case d := <-pq.q:
		n = copy(p, d.buf[:d.n])
		if d.trunc {
			n = len(p) // pion drops it as too long
		}
		src, v = d.src, d.v
		d.v = verdict{}
		pionDgramPool.Put(d)
		return n, src, v, true
	case <-pq.closing:
		return 0, netip.AddrPort{}, verdict{}, false
	}
}

func (pq *pionQueue) close() { pq.once.Do(func() { close(pq.closing) }) }
