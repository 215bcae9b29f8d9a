// Package cluster joins callbox nodes into one service through NATS: it is
// the signal.Router of a node whose rooms are shared with other nodes.
// Presence and signals ride core NATS subjects, chat a JetStream stream
// (one order per room, the stream sequence being the chat seq), and every
// node keeps the whole cluster's membership, repaired from the other nodes'
// state when it misses anything. docs/cluster.md is the design.
package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/callbox/callbox/config"
	"github.com/callbox/callbox/signal"
)

// Options are a node's collaborators.
type Options struct {
	Logger     *slog.Logger
	Registerer prometheus.Registerer // nil: no metrics
	// Signal is the hub's section: history sizes the chat stream, and
	// resume_window is how long the peers of a dead node may resume.
	Signal config.Signal
}

const (
	// requestTimeout bounds a claim or a state request: a node that does
	// not answer in that time is treated as gone.
	requestTimeout = 2 * time.Second
	// deadAfter heartbeats missed, a node is dead.
	deadAfter = 3
	// idleInterest: a room without local peers keeps its chat copy this
	// long, so a peer that leaves and comes back does not reload it.
	idleInterest = time.Minute
	evQueue      = 8192 // events buffered between the NATS reader and the loop
)

// Node is one callbox node's membership of the cluster; it implements
// signal.Router.
type Node struct {
	// static after construction
	cfg     config.Cluster
	name    string
	boot    string // random per start: a restarted node is a new incarnation
	log     *slog.Logger
	window  time.Duration
	history int
	metrics *metrics

	// set by Start, then static
	hub  signal.Inbound
	nc   *nats.Conn
	js   jetstream.JetStream
	stop context.CancelFunc
	wg   sync.WaitGroup // every goroutine Start starts

	// safe for concurrent use on their own
	ready      atomic.Bool      // the chat stream and its consumer are in place
	chatSeq    atomic.Uint64    // stream sequence of the last chat the consumer delivered
	rechat     chan struct{}    // asks chatLoop to build the consumer again
	fetched    chan fetchResult // state answers, to the loop
	chat       *chatState       // its own leaf lock
	twinLogged atomic.Bool      // another process with this node's name was logged

	mu sync.Mutex
	// guarded by mu
	v         *view
	ver       uint64         // last event this node published
	turnLocal map[string]int // this node's TURN allocations by user
	closed    bool
}

type fetchResult struct {
	node, boot string
	st         wireState // every page's members, the last page's TURN counts
	err        error
}

// New builds a node; Start connects it.
func New(cfg config.Cluster, opts Options) (*Node, error) {
	if len(cfg.NATS) == 0 {
		return nil, errors.New("cluster: no NATS URL (cluster.nats)")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	name := cfg.Node
	if name == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("cluster: node name: %w", err)
		}
		name = sanitize(h)
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	b := make([]byte, 8)
	rand.Read(b)
	return &Node{
		cfg:       cfg,
		name:      name,
		boot:      hex.EncodeToString(b),
		log:       opts.Logger.With("node", name),
		window:    opts.Signal.ResumeWindow,
		history:   max(opts.Signal.History, 1),
		metrics:   m,
		chat:      newChatState(max(opts.Signal.History, 1)),
		fetched:   make(chan fetchResult, 16),
		rechat:    make(chan struct{}, 1),
		v:         newView(name),
		turnLocal: make(map[string]int),
	}, nil
}

// sanitize keeps the characters a subject token may hold.
func sanitize(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			b[i] = '_'
		}
	}
	if len(b) > 64 {
		b = b[:64]
	}
	return string(b)
}

// Name is the node's name in subjects.
func (n *Node) Name() string { return n.name }

// Start connects to NATS and starts the node's goroutines. A NATS that is
// not there yet is retried in the background: the node serves its own
// rooms meanwhile.
func (n *Node) Start(hub signal.Inbound) error {
	n.hub = hub
	opts := []nats.Option{
		nats.Name("callbox " + n.name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(100*time.Millisecond, time.Second),
		nats.RetryOnFailedConnect(true),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			n.metrics.connected.Set(0)
			n.log.Warn("cluster: NATS connection lost; serving local rooms only", "err", err)
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			n.metrics.connected.Set(1)
			n.log.Info("cluster: NATS connection back", "server", c.ConnectedUrlRedacted())
			n.heartbeat()
			n.nudgeChat()
		}),
		nats.ConnectHandler(func(c *nats.Conn) {
			n.metrics.connected.Set(1)
			n.log.Info("cluster: NATS connected", "server", c.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(func(_ *nats.Conn, s *nats.Subscription, err error) {
			n.log.Warn("cluster: NATS error", "subject", subjectOf(s), "err", err)
		}),
	}
	opts = append(opts, n.authOptions()...)
	nc, err := nats.Connect(strings.Join(n.cfg.NATS, ","), opts...)
	if err != nil {
		return fmt.Errorf("cluster: connect %v: %w", n.cfg.NATS, err)
	}
	if nc.IsConnected() {
		n.metrics.connected.Set(1)
	}
	n.mu.Lock() // heartbeat, from nats.go's handlers, reads it under mu
	n.nc = nc
	n.mu.Unlock()
	n.js, err = jetstream.New(nc)
	if err != nil {
		nc.Close()
		return fmt.Errorf("cluster: jetstream: %w", err)
	}
	evs := make(chan *nats.Msg, evQueue)
	subs := []func() (*nats.Subscription, error){
		func() (*nats.Subscription, error) { return nc.ChanSubscribe(subjEvents+"*", evs) },
		func() (*nats.Subscription, error) { return nc.Subscribe(subjSignal+n.name, n.onSignal) },
		func() (*nats.Subscription, error) { return nc.Subscribe(subjClaim+n.name, n.onClaim) },
		func() (*nats.Subscription, error) { return nc.Subscribe(subjState+n.name, n.onState) },
	}
	for _, sub := range subs {
		s, err := sub()
		if err != nil {
			nc.Close()
			return fmt.Errorf("cluster: subscribe: %w", err)
		}
		s.SetPendingLimits(evQueue*4, 64<<20)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n.stop = cancel
	n.wg.Add(3)
	go n.loop(ctx, evs)
	go n.chatLoop(ctx)
	go n.beat(ctx)
	n.heartbeat()
	return nil
}

func subjectOf(s *nats.Subscription) string {
	if s == nil {
		return ""
	}
	return s.Subject
}

func (n *Node) authOptions() []nats.Option {
	var opts []nats.Option
	c := n.cfg
	if c.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(c.CredsFile))
	}
	if c.User != "" {
		opts = append(opts, nats.UserInfo(c.User, c.Password))
	}
	if c.TLSCA != "" {
		opts = append(opts, nats.RootCAs(c.TLSCA))
	}
	if c.TLSCert != "" {
		opts = append(opts, nats.ClientCert(c.TLSCert, c.TLSKey))
	}
	return opts
}

// Close says goodbye (the others let this node's peers resume elsewhere at
// once), stops the goroutines and closes the connection.
func (n *Node) Close() error {
	n.mu.Lock()
	if n.closed || n.nc == nil {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	n.publishLocked(wireEvent{Type: evBye})
	n.mu.Unlock()
	n.nc.FlushTimeout(time.Second)
	n.stop()
	n.wg.Wait()
	n.nc.Close()
	return nil
}

// publishLocked numbers ev and sends it. Caller holds n.mu, which keeps
// the numbers in publishing order. Alive and bye take no number.
func (n *Node) publishLocked(ev wireEvent) {
	if n.nc == nil {
		return // not started: nobody to tell
	}
	ev.Node, ev.Boot = n.name, n.boot
	if ev.Type != evAlive && ev.Type != evBye {
		n.ver++
	}
	ev.Ver = n.ver
	b, _ := json.Marshal(ev) // plain strings and numbers: cannot fail
	if err := n.nc.Publish(subjEvents+n.name, b); err != nil {
		n.metrics.publishErrors.Inc()
	}
}

func (n *Node) heartbeat() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.closed && n.nc != nil {
		n.publishLocked(wireEvent{Type: evAlive})
	}
}

// beat sends the heartbeats, on a goroutine of their own so that a busy
// loop (a large state to apply, a hub slow to take its locks) does not make
// this node look dead to the others.
func (n *Node) beat(ctx context.Context) {
	defer n.wg.Done()
	t := time.NewTicker(n.cfg.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			n.heartbeat()
		}
	}
}
