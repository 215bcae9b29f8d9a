// Package portmux shares one TCP port (443) between HTTPS and TURN over TLS,
// for networks that let nothing else out. It does the TLS handshake itself,
// then reads the first bytes the client sends: a STUN message (first two
// bits 0b00, magic cookie 0x2112A442 at bytes 4 to 7) goes to the TURN
// listener, an HTTP request to the HTTPS listener. SNI is not used: Firefox
// sends none for turns:.
package portmux

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

const (
	// handshakeTimeout bounds the TLS handshake: a client that stalls in
	// it holds a goroutine and a socket until then.
	handshakeTimeout = 10 * time.Second
	// peekTimeout bounds the wait for the first bytes after the
	// handshake: HTTP and TURN clients both speak first, at once.
	peekTimeout = 10 * time.Second
	// maxPending bounds connections in handshake or peek at once, so a
	// flood of idle connections costs sockets, not unbounded goroutines.
	maxPending = 1024
	// acmeTLS1 is the ALPN of ACME TLS-ALPN-01 challenges (RFC 8737): the
	// handshake itself is the answer, no bytes follow.
	acmeTLS1 = "acme-tls/1"
)

// magicCookie is STUN's fixed value at bytes 4 to 7 (RFC 5389 §6).
var magicCookie = [4]byte{0x21, 0x12, 0xA4, 0x42}

// Kinds of connection, as metric labels.
const (
	KindHTTP      = "http"
	KindTURN      = "turn"
	KindBad       = "bad_first_bytes"
	KindHandshake = "handshake_failed"
	KindACME      = "acme_challenge"
)

// Mux splits one listener. Build it with New, serve HTTP() with an
// http.Server and TURN() with the TURN server, and run Run.
type Mux struct {
	// static after construction
	ln    net.Listener
	tls   *tls.Config
	log   *slog.Logger
	http  *chanListener
	turn  *chanListener
	count *prometheus.CounterVec // nil without a Registerer
	kinds map[string]*atomic.Int64
	// handshakeTimeout and peekTimeout are the constants; tests shorten them.
	handshakeTimeout, peekTimeout time.Duration

	lastBadLog atomic.Int64 // unix nanoseconds; bad first bytes log at most every 10 s
}

// New takes over ln (a TCP listener) and serves TLS on it with cfg. The
// "h2" ALPN is dropped from cfg: HTTP connections reach net/http through a
// wrapper that is not a *tls.Conn, so it can serve only HTTP/1.1 on them.
// reg may be nil.
func New(ln net.Listener, cfg *tls.Config, logger *slog.Logger, reg prometheus.Registerer) (*Mux, error) {
	cfg = cfg.Clone()
	cfg.NextProtos = slices.DeleteFunc(slices.Clone(cfg.NextProtos), func(p string) bool { return p == "h2" })
	m := &Mux{
		ln:    ln,
		tls:   cfg,
		log:   logger,
		http:  newChanListener(ln.Addr()),
		turn:  newChanListener(ln.Addr()),
		kinds: make(map[string]*atomic.Int64),

		handshakeTimeout: handshakeTimeout,
		peekTimeout:      peekTimeout,
	}
	for _, k := range []string{KindHTTP, KindTURN, KindBad, KindHandshake, KindACME} {
		m.kinds[k] = new(atomic.Int64)
	}
	if reg != nil {
		m.count = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "callbox_portmux_connections_total",
			Help: "Connections on the shared HTTPS/TURN port by what they turned out to be.",
		}, []string{"kind"})
		if err := reg.Register(m.count); err != nil {
			return nil, fmt.Errorf("portmux: register metrics: %w", err)
		}
	}
	return m, nil
}

// HTTP is the listener of HTTPS connections (handshake done, first bytes
// not yet read by anyone). Its conns carry the TLS state: see ConnContext.
func (m *Mux) HTTP() net.Listener { return m.http }

// TURN is the listener of TURN-over-TLS connections.
func (m *Mux) TURN() net.Listener { return m.turn }

// Addr is the shared listener's address.
func (m *Mux) Addr() net.Addr { return m.ln.Addr() }

// Count is how many connections turned out to be of kind so far.
func (m *Mux) Count(kind string) int64 {
	if c := m.kinds[kind]; c != nil {
		return c.Load()
	}
	return 0
}

// Run accepts until ctx ends or the listener fails, then closes the
// listener and waits for the connections still in handshake or peek. The
// connections already handed over belong to their servers.
func (m *Mux) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := context.AfterFunc(ctx, func() { m.ln.Close() })
	defer stop()
	sem := make(chan struct{}, maxPending)
	backoff := 5 * time.Millisecond
	for {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		c, err := m.ln.Accept()
		if err != nil {
			<-sem
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			if !temporary(err) {
				return fmt.Errorf("portmux: accept %s: %w", m.ln.Addr(), err)
			}
			// Out of file descriptors and the like: wait, do not spin.
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return nil
			}
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			m.route(ctx, c)
		}()
	}
}

func temporary(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM)
}

// route handshakes, peeks and hands c over, or closes it.
func (m *Mux) route(ctx context.Context, raw net.Conn) {
	tc := tls.Server(raw, m.tls)
	raw.SetDeadline(time.Now().Add(m.handshakeTimeout)) //nolint:errcheck // fails only on a closed conn
	hctx, cancel := context.WithTimeout(ctx, m.handshakeTimeout)
	err := tc.HandshakeContext(hctx)
	cancel()
	if err != nil {
		m.counted(KindHandshake)
		m.log.Debug("portmux: TLS handshake failed", "remote", raw.RemoteAddr().String(), "err", err)
		raw.Close()
		return
	}
	if tc.ConnectionState().NegotiatedProtocol == acmeTLS1 {
		// The CA's validator has read the challenge certificate; it
		// closes the connection itself, and sends nothing we could serve.
		m.counted(KindACME)
		tc.Close()
		return
	}
	raw.SetDeadline(time.Now().Add(m.peekTimeout)) //nolint:errcheck
	pc := &Conn{Conn: tc}
	n, err := io.ReadFull(tc, pc.first[:])
	pc.n = n
	if err != nil {
		m.bad(raw.RemoteAddr(), pc.first[:n], err)
		tc.Close()
		return
	}
	raw.SetDeadline(time.Time{}) //nolint:errcheck // each server sets its own
	var dst *chanListener
	switch Classify(pc.first[:]) {
	case KindTURN:
		dst = m.turn
	case KindHTTP:
		dst = m.http
	default:
		m.bad(raw.RemoteAddr(), pc.first[:], nil)
		tc.Close()
		return
	}
	if !dst.deliver(ctx, pc) {
		tc.Close()
		return
	}
	m.counted(Classify(pc.first[:]))
}

func (m *Mux) counted(kind string) {
	m.kinds[kind].Add(1)
	if m.count != nil {
		m.count.WithLabelValues(kind).Inc()
	}
}

// bad counts a connection that sent neither STUN nor HTTP, and logs it at
// most every 10 s so a scanner cannot flood the log.
func (m *Mux) bad(remote net.Addr, first []byte, err error) {
	m.counted(KindBad)
	now := time.Now().UnixNano()
	last := m.lastBadLog.Load()
	if now-last < int64(10*time.Second) || !m.lastBadLog.CompareAndSwap(last, now) {
		return
	}
	m.log.Warn("portmux: connection on the shared port sent neither STUN nor HTTP; closed (logged at most every 10s)",
		"remote", remote.String(), "first_bytes", fmt.Sprintf("%q", first), "err", err, "total", m.kinds[KindBad].Load())
}

// firstLen is how many bytes are read to classify a connection: enough for
// the STUN magic cookie, and shorter than any HTTP request line.
const firstLen = 8

// Classify tells what a connection's first 8 bytes are: KindTURN for a
// STUN header, KindHTTP for an HTTP/1 method or the HTTP/2 preface,
// KindBad otherwise.
func Classify(first []byte) string {
	if len(first) < firstLen {
		return KindBad
	}
	if first[0]&0xC0 == 0 && [4]byte(first[4:8]) == magicCookie {
		return KindTURN
	}
	// An HTTP method is an uppercase token followed by a space.
	for i, c := range first {
		switch {
		case c >= 'A' && c <= 'Z':
		case c == ' ' && i >= 3:
			return KindHTTP
		default:
			return KindBad
		}
	}
	return KindBad // all letters: longer than any method browsers send
}
