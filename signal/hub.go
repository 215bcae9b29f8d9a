// Package signal is callbox's signaling hub: browsers join rooms over one
// WebSocket each, find each other, exchange offers, answers and ICE
// candidates, chat, and receive ICE servers with TURN credentials minted for
// them alone. The wire protocol is docs/protocol.md. The hub knows nothing of
// TURN itself: it asks an ICEProvider.
package signal

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/callbox/callbox/config"
)

// ICEServer is one entry of RTCConfiguration.iceServers.
type ICEServer struct {
	URLs       []string `json:"urls"`
	Username   string   `json:"username,omitempty"`
	Credential string   `json:"credential,omitempty"`
}

// ICEProvider mints ICE servers for one user id (the peer id, or the API
// username); expires is when the TURN credentials in them expire.
type ICEProvider func(user string) (servers []ICEServer, expires time.Time)

// Options are the hub's collaborators.
type Options struct {
	Logger     *slog.Logger
	Registerer prometheus.Registerer // nil: no metrics
	ICE        ICEProvider
	// Router shares rooms with other hubs (package cluster); nil is one process.
	Router Router
	// ResumeKey signs resume tokens; one that survives a restart lets the
	// next process resume this one's sessions (restart.go). Nil: random.
	ResumeKey []byte
}

// reconnectAfter is the least `after` of the reconnect message at
// shutdown; each client gets up to twice that, at random, so that a
// restarted server is not hit by every client in the same millisecond.
const reconnectAfter = time.Second

func reconnectMessage() []byte {
	after := reconnectAfter + rand.N(reconnectAfter)
	return encode(reconnectMsg{Type: "reconnect", Reason: "server shutting down", After: after.Milliseconds()})
}

// Hub is the signaling server. Its goroutines: one reader per socket, at
// most one writer per socket while it has something to send, and one
// sweeper (pings, dead sockets, hello timeouts, resume windows, ICE
// refresh). Shutdown waits for all of them.
type Hub struct {
	// cfg is swapped whole by SetConfig (SIGHUP); read it through conf().
	cfg atomic.Pointer[config.Signal]

	// static after construction
	log       *slog.Logger
	ice       ICEProvider
	router    Router
	metrics   *metrics
	upgrader  websocket.Upgrader
	tick      time.Duration // sweeper period
	stop      context.CancelFunc
	started   time.Time // restartClaim accepts the previous process's tokens for a resume window
	resumeKey []byte    // signs resume tokens

	pollOnce sync.Once
	poll     *poller // set once, by poller() (reader.go); nil: a goroutine per socket

	wg sync.WaitGroup // every goroutine the hub starts

	mu sync.Mutex
	// guarded by mu
	closing      bool
	clients      map[*client]struct{}
	perIP        map[string]int
	rooms        map[string]*room
	peers        map[string]*peer    // by id
	resumes      map[string]*peer    // by resume token
	reconnecting map[*peer]time.Time // peers without a socket, and when their window ends
	sweepBuf     []*client           // reused by the sweeper
}

// NewHub builds a hub and starts its sweeper; Shutdown stops it.
func NewHub(cfg config.Signal, opts Options) (*Hub, error) {
	whole := config.Default()
	whole.Signal = cfg
	if err := whole.Validate(); err != nil {
		return nil, fmt.Errorf("signal: config: %w", err)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	if opts.Router == nil {
		opts.Router = localRouter{}
	}
	h := &Hub{
		log:     opts.Logger,
		ice:     opts.ICE,
		router:  opts.Router,
		metrics: m,
		upgrader: websocket.Upgrader{
			HandshakeTimeout: 10 * time.Second,
			// 0: gorilla reads through the hijacked bufio.Reader, which
			// serveWS makes a small one of its own (see hijacker).
			ReadBufferSize:  0,
			WriteBufferSize: writeBufferSize,
			// Write buffers are borrowed per frame, so idle sockets hold none.
			WriteBufferPool: &sync.Pool{},
			// serveWS checks the Origin itself, before the per-IP count.
			CheckOrigin: func(*http.Request) bool { return true },
		},
		tick:         sweepPeriod(cfg),
		clients:      make(map[*client]struct{}),
		perIP:        make(map[string]int),
		rooms:        make(map[string]*room),
		peers:        make(map[string]*peer),
		resumes:      make(map[string]*peer),
		reconnecting: make(map[*peer]time.Time),
	}
	h.resumeKey = opts.ResumeKey
	if len(h.resumeKey) == 0 {
		h.resumeKey = []byte(randomID(32))
	}
	h.started = time.Now()
	h.cfg.Store(&cfg)
	ctx, cancel := context.WithCancel(context.Background())
	h.stop = cancel
	h.wg.Add(1)
	go h.sweep(ctx)
	return h, nil
}

// sweepPeriod is fine enough for the ping interval and the resume window,
// and coarse enough that walking every client stays cheap.
func sweepPeriod(cfg config.Signal) time.Duration {
	d := 250 * time.Millisecond
	d = min(d, cfg.PingInterval/8)
	if cfg.ResumeWindow > 0 {
		d = min(d, cfg.ResumeWindow/8)
	}
	return max(d, 10*time.Millisecond)
}

// conf is the configuration in force. Each use reads it anew, so a
// SetConfig applies from the next message or connection on.
func (h *Hub) conf() *config.Signal { return h.cfg.Load() }

// SetConfig applies a new [signal] section (SIGHUP reload) without dropping
// anyone: access mode, password, invite secret, origins, API keys and
// limits apply to the next join, message or connection. Peers already in
// a room stay, even if the new access mode would refuse them, and rooms
// above a lowered max_peers_per_room keep their peers. The sweeper's
// period stays as computed at start.
func (h *Hub) SetConfig(cfg config.Signal) error {
	whole := config.Default()
	whole.Signal = cfg
	if err := whole.Validate(); err != nil {
		return fmt.Errorf("signal: config: %w", err)
	}
	h.cfg.Store(&cfg)
	return nil
}

// Routes registers GET /ws, GET /api/turn and GET /healthz on mux.
func (h *Hub) Routes(mux *http.ServeMux) {
	mux.HandleFunc("GET /ws", h.serveWS)
	mux.HandleFunc("GET /api/turn", h.serveTURN)
	mux.HandleFunc("GET /healthz", h.serveHealth)
}

func (h *Hub) serveWS(w http.ResponseWriter, r *http.Request) {
	if !originAllowed(r, h.conf().Origins) {
		h.metrics.rejected.WithLabelValues("origin").Inc()
		http.Error(w, "origin not allowed", http.StatusForbidden)
		return
	}
	ip := clientIP(r)
	h.mu.Lock()
	if h.closing {
		h.mu.Unlock()
		h.metrics.rejected.WithLabelValues("shutting_down").Inc()
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	if h.perIP[ip] >= h.conf().MaxConnectionsPerIP {
		h.mu.Unlock()
		h.metrics.rejected.WithLabelValues("per_ip").Inc()
		http.Error(w, "too many connections from your address", http.StatusTooManyRequests)
		return
	}
	h.perIP[ip]++
	h.mu.Unlock()

	hj := &hijacker{ResponseWriter: w, br: bufio.NewReaderSize(nil, readBufferSize)}
	ws, err := h.upgrader.Upgrade(hj, r, nil)
	if err != nil { // Upgrade has answered the request
		h.mu.Lock()
		if h.perIP[ip]--; h.perIP[ip] <= 0 {
			delete(h.perIP, ip)
		}
		h.mu.Unlock()
		h.metrics.rejected.WithLabelValues("upgrade").Inc()
		return
	}
	c := newClient(h, ws, hj.br, ip)
	h.mu.Lock()
	if h.closing {
		if h.perIP[ip]--; h.perIP[ip] <= 0 {
			delete(h.perIP, ip)
		}
		h.mu.Unlock()
		// Shutdown has already told the others; this one learns the same.
		ws.SetWriteDeadline(time.Now().Add(time.Second))
		ws.WriteMessage(websocket.TextMessage, reconnectMessage())
		ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseServiceRestart, "server shutting down"), time.Now().Add(time.Second))
		ws.Close()
		return
	}
	h.clients[c] = struct{}{}
	h.gaugesLocked()
	h.wg.Add(1)
	h.mu.Unlock()
	// The reader is a fresh goroutine and the handler returns: net/http then
	// drops its connection state (two 4 KiB bufio buffers, the request, a
	// deep stack) that a reader inside the handler would keep for the whole
	// life of the socket: 24 KiB per idle socket instead of 13 (measured).
	c.startReader()
}

// hijacker hands gorilla a small bufio.Reader of ours instead of net/http's
// 4 KiB one, and lets the reader see when it is empty.
type hijacker struct {
	http.ResponseWriter
	br *bufio.Reader
}

func (h *hijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	if brw.Reader.Buffered() > 0 {
		// Bytes before the handshake completed: gorilla refuses these,
		// and must see them to.
		return conn, brw, nil
	}
	h.br.Reset(conn)
	return conn, bufio.NewReadWriter(h.br, brw.Writer), nil
}

// Shutdown tells every client to reconnect ("reconnect" message), closes
// every socket with 1012 and a reason, and waits for all goroutines, bounded
// by ctx and cfg.ShutdownTimeout. net/http does not close hijacked conns: the
// hub does.
func (h *Hub) Shutdown(ctx context.Context) error {
	h.mu.Lock()
	if h.closing {
		h.mu.Unlock()
		return errors.New("signal: shutdown: already shut down")
	}
	h.closing = true
	clients := h.snapshotLocked(nil)
	h.mu.Unlock()
	h.reportDwell()
	h.stop()
	defer h.closePoller() // after the last reader: parked sockets need it to end

	for _, c := range clients {
		c.send(reconnectMessage())
		c.closeWith(reasonShutdown, websocket.CloseServiceRestart, "server shutting down")
	}
	done := make(chan struct{})
	go func() {
		h.wg.Wait()
		close(done)
	}()
	timer := time.NewTimer(h.conf().ShutdownTimeout)
	defer timer.Stop()
	var err error
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		err = fmt.Errorf("signal: shutdown: %w", ctx.Err())
	case <-timer.C:
		err = fmt.Errorf("signal: shutdown: clients still open after %s; closed them", h.conf().ShutdownTimeout)
	}
	// Out of time: cut what is left. Closed sockets end their readers and
	// writers at once, so this wait is short.
	h.mu.Lock()
	clients = h.snapshotLocked(clients[:0])
	h.mu.Unlock()
	for _, c := range clients {
		c.abort(reasonShutdown)
	}
	<-done
	return err
}

// PeerCount is how many peers the hub holds, reconnecting ones included
// (after Shutdown: those no other node has claimed yet).
func (h *Hub) PeerCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.peers)
}

// DropSockets closes every client socket abruptly, as a network failure
// would (no close frame, no leave): the peers stay in their rooms as
// reconnecting and may resume. It returns how many, once their readers have
// ended (so those peers are reconnecting by then).
func (h *Hub) DropSockets() int {
	h.mu.Lock()
	clients := h.snapshotLocked(nil)
	h.mu.Unlock()
	for _, c := range clients {
		c.abort(reasonDropped)
	}
	h.awaitEnded(clients, 5*time.Second)
	return len(clients)
}

func (h *Hub) snapshotLocked(buf []*client) []*client {
	for c := range h.clients {
		buf = append(buf, c)
	}
	return buf
}

// iceFor asks the provider for ICE servers for user; no provider, none.
func (h *Hub) iceFor(user string) ([]ICEServer, time.Time) {
	if h.ice == nil {
		return []ICEServer{}, time.Time{}
	}
	servers, expires := h.ice(user)
	if servers == nil {
		servers = []ICEServer{}
	}
	return servers, expires
}

// sweep is the hub's one clock: pings, dead sockets, hello timeouts,
// resume windows and ICE refresh, so an idle socket costs no timer.
func (h *Hub) sweep(ctx context.Context) {
	defer h.wg.Done()
	t := time.NewTicker(h.tick)
	defer t.Stop()
	type due struct {
		c *client
		p *peer
	}
	var work []due
	var pings []*client
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			work = work[:0]
			h.mu.Lock()
			h.expireLocked(now)
			for c := range h.clients {
				work = append(work, due{c, c.peer})
			}
			h.mu.Unlock()
			for _, w := range work {
				if h.check(w.c, w.p, now) {
					pings = append(pings, w.c)
				}
			}
			clear(work) // let closed clients be collected
			h.ping(ctx, pings)
			clear(pings)
			pings = pings[:0]
		}
	}
}

// pingStep is the pause between the batches of a sweep's pings.
const pingStep = 5 * time.Millisecond

// ping sends the pings due in one sweep spread over three quarters of the
// sweep period: at 10,000 clients and a 25 s ping interval, 100 to 200 are
// due every 250 ms, and sent at once they come back as as many pongs at
// once; every signal relayed meanwhile waited behind both (signalbench
// saw a stall of 2 to 10 ms after every sweep, its p99's tail).
func (h *Hub) ping(ctx context.Context, cs []*client) {
	steps := max(1, int(h.tick*3/4/pingStep))
	per := (len(cs) + steps - 1) / steps
	for i := 0; i < len(cs); i += per {
		if i > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(pingStep):
			}
		}
		for _, c := range cs[i:min(i+per, len(cs))] {
			c.push(frame{kind: framePing}, true) // the sweeper holds no lock here
		}
	}
}

// check is the sweeper's visit to one client; true when a ping is due.
func (h *Hub) check(c *client, p *peer, now time.Time) (pingDue bool) {
	ns := now.UnixNano()
	ping := h.conf().PingInterval.Nanoseconds()
	if ns-c.lastRead.Load() > 2*ping+ping/2 {
		c.abort(reasonTimeout)
		return false
	}
	if c.nextPing == 0 {
		// Spread the pings of sockets that connected together.
		c.nextPing = ns + ping/2 + rand.Int64N(ping/2+1)
	}
	if ns >= c.nextPing {
		c.nextPing = ns + ping
		pingDue = true
	}
	if p == nil {
		if ns-c.born > helloTimeout.Nanoseconds() {
			c.fail(protoErr(CodeHelloRequired, true, "no hello within %s", helloTimeout))
		}
		return pingDue
	}
	if r := p.iceRefresh.Load(); r != 0 && ns >= r {
		servers, expires := h.iceFor(p.id)
		p.iceRefresh.Store(refreshAt(now, expires))
		c.send(encode(iceMsg{Type: "ice", ICEServers: servers, ICEExpires: unixMilli(expires)}))
	}
	return pingDue
}

func (h *Hub) gaugesLocked() {
	h.metrics.connections.Set(float64(len(h.clients)))
	h.metrics.rooms.Set(float64(len(h.rooms)))
	h.metrics.peers.Set(float64(len(h.peers)))
}
