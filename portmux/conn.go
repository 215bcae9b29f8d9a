package portmux

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"sync"
)

// Conn is a TLS connection whose first bytes the mux has read: Read
// returns them first, then the rest of the stream.
type Conn struct {
	*tls.Conn
	// owned by the reader
	first [firstLen]byte
	n     int // bytes of first read by the mux
	off   int // bytes of first already returned
}

func (c *Conn) Read(p []byte) (int, error) {
	if c.off < c.n {
		k := copy(p, c.first[c.off:c.n])
		c.off += k
		return k, nil
	}
	return c.Conn.Read(p)
}

// NetConn is the TCP connection under TLS.
func (c *Conn) NetConn() net.Conn { return c.Conn.NetConn() }

type tlsStateKey struct{}

// ConnContext is for http.Server.ConnContext: it keeps the TLS state of a
// Conn in the request context, where WithTLSState finds it. net/http sets
// Request.TLS only for a *tls.Conn, which a Conn cannot be.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	if pc, ok := c.(*Conn); ok {
		st := pc.ConnectionState()
		return context.WithValue(ctx, tlsStateKey{}, &st)
	}
	return ctx
}

// WithTLSState fills Request.TLS from ConnContext's value, so handlers can
// tell an HTTPS request on the shared port from plain HTTP.
func WithTLSState(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil {
			if st, ok := r.Context().Value(tlsStateKey{}).(*tls.ConnectionState); ok {
				r.TLS = st
			}
		}
		h.ServeHTTP(w, r)
	})
}

// chanListener is a net.Listener fed by the mux.
type chanListener struct {
	addr   net.Addr
	ch     chan net.Conn
	done   chan struct{}
	closed sync.Once
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

// deliver waits until a server accepts c; false when the listener is
// closed or ctx ends first (the caller closes c).
func (l *chanListener) deliver(ctx context.Context, c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		return false
	case <-ctx.Done():
		return false
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.closed.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }
