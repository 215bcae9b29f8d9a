package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// loadConfig is one measured run: n clients in rooms of room, then rate
// messages per second among them for duration.
type loadConfig struct {
	N, Room     int
	Rate        float64
	Duration    time.Duration
	Settle      time.Duration // between the last join and the idle RSS reading
	Concurrency int           // joins in flight
	JoinTimeout time.Duration // per client, dial to join answer
}

// result is one row of the table.
type result struct {
	Server         string
	N              int
	Joined         int
	JoinRate       float64 // clients joined per second
	RSSBefore      int64   // bytes, before the first client
	RSSIdle        int64   // bytes, with n idle clients
	Sent, Received int64
	MsgRate        float64 // messages delivered per second of the message phase
	P50, P99, Max  time.Duration
	// Server CPU time per join and per relayed message: unlike the rates
	// and latencies, these hold on a machine busy with other work.
	CPUPerJoin, CPUPerMsg time.Duration
	Heartbeats            int64   // keepalives the clients sent (PeerJS)
	LoadAvg               float64 // the machine's 1-minute load average at the end of the run
	Errors                int64
	ErrorsByCategory      map[string]int64
}

// KiBPerConn is the server's RSS growth per idle connection.
func (r result) KiBPerConn() float64 {
	if r.Joined == 0 {
		return 0
	}
	return float64(r.RSSIdle-r.RSSBefore) / float64(r.Joined) / 1024
}

// benchClient is one WebSocket of the load. Its reader goroutine is owned by
// the run's WaitGroup; writes go through wmu because gorilla allows one
// writer at a time and both the senders and the heartbeat write.
type benchClient struct {
	i, room int
	conn    *websocket.Conn
	// joined gets one value from the reader: nil on the join answer, or
	// why there was none. Buffered, so the reader never waits for open.
	joined chan error

	// written by the reader before it sends on joined, read after
	id string

	wmu sync.Mutex
}

func (c *benchClient) write(frame []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	return c.conn.WriteMessage(websocket.TextMessage, frame)
}

// run is the state of one measured run.
type loadRun struct {
	log    *slog.Logger
	proto  protocol
	cfg    loadConfig
	srv    *server
	epoch  time.Time // the clock of every stamp in this run
	rec    *recorder
	dialer *websocket.Dialer

	// how long joins took, in two parts: dial to upgraded WebSocket, and
	// from there to the join answer (callbox: hello to welcome)
	upgradeLat, answerLat *recorder

	received   atomic.Int64
	heartbeats atomic.Int64 // sent
	closing    atomic.Bool  // set before the bench closes its sockets

	lmu  sync.Mutex
	live []*benchClient // guarded by lmu: joined clients, in join order, for the heartbeat

	emu    sync.Mutex
	errs   map[string]int64
	logged int // error lines logged, to keep a failing run's log short

	readers sync.WaitGroup
}

func (r *loadRun) fail(category string, err error) {
	r.emu.Lock()
	defer r.emu.Unlock()
	r.errs[category]++
	if r.logged < 5 {
		r.logged++
		r.log.Warn("load error", "server", r.proto.Name(), "category", category, "err", err)
	}
}

// measure runs the whole sequence against a started server: join, idle
// memory, then the message phase. Every client is closed before it returns.
func measure(ctx context.Context, log *slog.Logger, proto protocol, srv *server, cfg loadConfig) (result, error) {
	r := &loadRun{
		log:   log,
		proto: proto,
		cfg:   cfg,
		srv:   srv,
		epoch: time.Now(),
		// room for every message of the phase plus a margin for a run
		// that sends faster than planned.
		rec:  newRecorder(int(cfg.Rate*cfg.Duration.Seconds()*1.1) + 1024),
		errs: map[string]int64{},
		dialer: &websocket.Dialer{
			HandshakeTimeout: cfg.JoinTimeout,
			ReadBufferSize:   2048,
			WriteBufferSize:  1024,
			// The bench's own memory does not matter much, but 10,000
			// idle write buffers are 10 MB for nothing.
			WriteBufferPool: &sync.Pool{},
		},
	}
	res := result{Server: proto.Name(), N: cfg.N}
	var err error
	if res.RSSBefore, err = readRSS(srv.pid()); err != nil {
		return res, err
	}

	// The CPU of both sides during the joins tells which one limited them.
	self := os.Getpid()
	srvCPU0, _ := readCPU(srv.pid())
	selfCPU0, _ := readCPU(self)
	joinStart := time.Now()
	// Heartbeats start with the first join: a slow join phase must not
	// outlast the server's alive timeout for the early clients.
	hbCtx, stopHeartbeat := context.WithCancel(ctx)
	var hb sync.WaitGroup
	if proto.Heartbeat() != nil {
		hb.Add(1)
		go func() {
			defer hb.Done()
			r.heartbeat(hbCtx)
		}()
	}
	clients, joinRate := r.join(ctx)
	defer func() {
		stopHeartbeat()
		hb.Wait()
		r.closeAll(clients)
	}()
	res.Joined, res.JoinRate = len(clients), joinRate
	joinSecs := time.Since(joinStart).Seconds()
	srvCPU1, _ := readCPU(srv.pid())
	selfCPU1, _ := readCPU(self)
	if len(clients) > 0 {
		res.CPUPerJoin = (srvCPU1 - srvCPU0) / time.Duration(len(clients))
	}
	log.Info("joined", "server", proto.Name(), "clients", len(clients), "of", cfg.N, "per_second", int(joinRate),
		"server_cpu", fmt.Sprintf("%.0f%%", 100*(srvCPU1-srvCPU0).Seconds()/joinSecs),
		"bench_cpu", fmt.Sprintf("%.0f%%", 100*(selfCPU1-selfCPU0).Seconds()/joinSecs),
		"upgrade_p50", percentile(r.upgradeLat.sorted(), 50), "upgrade_p99", percentile(r.upgradeLat.sorted(), 99),
		"answer_p50", percentile(r.answerLat.sorted(), 50), "answer_p99", percentile(r.answerLat.sorted(), 99))
	if len(clients) == 0 {
		return res, fmt.Errorf("signalbench: %s: no client joined", proto.Name())
	}

	select {
	case <-time.After(cfg.Settle):
	case <-ctx.Done():
		return res, ctx.Err()
	}
	if res.RSSIdle, err = readRSS(srv.pid()); err != nil {
		return res, err
	}

	cpu0, err := readCPU(srv.pid())
	if err != nil {
		return res, err
	}
	selfCPU2, _ := readCPU(self)
	phase := time.Now()
	res.Sent = r.send(ctx, clients)
	sendEnd := time.Now()
	// Let the last messages land; what has not after this is lost.
	for deadline := time.Now().Add(3 * time.Second); r.received.Load() < res.Sent && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	cpu1, err := readCPU(srv.pid())
	if err != nil {
		return res, err
	}
	res.Received = r.received.Load()
	res.MsgRate = float64(res.Received) / sendEnd.Sub(phase).Seconds()
	if res.Received > 0 {
		res.CPUPerMsg = (cpu1 - cpu0) / time.Duration(res.Received)
		selfCPU3, _ := readCPU(self)
		// The client's own cost bounds what the latencies can show.
		log.Info("relayed", "server", proto.Name(), "sent", res.Sent, "received", res.Received,
			"server_cpu_per_msg", res.CPUPerMsg, "bench_cpu_per_msg", (selfCPU3-selfCPU2)/time.Duration(res.Received))
	}
	lat := r.rec.sorted()
	res.P50, res.P99 = percentile(lat, 50), percentile(lat, 99)
	if len(lat) > 0 {
		res.Max = lat[len(lat)-1]
	}
	if lost := res.Sent - res.Received; lost > 0 {
		r.fail("lost", fmt.Errorf("%d of %d messages not delivered within 3s", lost, res.Sent))
	}
	if missing := cfg.N - res.Joined; missing > 0 {
		r.fail("not joined", fmt.Errorf("%d of %d clients did not join", missing, cfg.N))
	}
	res.LoadAvg = readLoadAvg()
	res.Heartbeats = r.heartbeats.Load()
	r.emu.Lock()
	res.ErrorsByCategory = r.errs
	for cat, n := range r.errs {
		if cat == "lost" || cat == "not joined" {
			n = 1 // a marker: the counts themselves are in Sent/Received and Joined
		}
		res.Errors += n
	}
	r.emu.Unlock()
	return res, nil
}

// join opens cfg.N clients, cfg.Concurrency at a time, each waiting for its
// join answer, and returns those that joined and the rate at which they did.
func (r *loadRun) join(ctx context.Context) ([]*benchClient, float64) {
	all := make([]*benchClient, r.cfg.N)
	next := atomic.Int64{}
	var wg sync.WaitGroup
	start := time.Now()
	var lastNanos atomic.Int64 // when the last join so far was answered
	r.upgradeLat, r.answerLat = newRecorder(r.cfg.N), newRecorder(r.cfg.N)
	for range min(r.cfg.Concurrency, r.cfg.N) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= r.cfg.N {
					return
				}
				c, err := r.open(ctx, i)
				if err != nil {
					r.fail("join", err)
					continue
				}
				all[i] = c
				r.lmu.Lock()
				r.live = append(r.live, c)
				r.lmu.Unlock()
				storeMax(&lastNanos, int64(time.Since(start)))
			}
		}()
	}
	wg.Wait()
	joined := make([]*benchClient, 0, len(all))
	for _, c := range all {
		if c != nil {
			joined = append(joined, c)
		}
	}
	elapsed := time.Duration(lastNanos.Load())
	if elapsed <= 0 {
		return joined, 0
	}
	return joined, float64(len(joined)) / elapsed.Seconds()
}

func storeMax(v *atomic.Int64, x int64) {
	for {
		old := v.Load()
		if x <= old || v.CompareAndSwap(old, x) {
			return
		}
	}
}

// open dials client i, starts its reader and waits for the join answer.
func (r *loadRun) open(ctx context.Context, i int) (*benchClient, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.JoinTimeout)
	defer cancel()
	hdr := http.Header{"Origin": {r.srv.base}}
	dialed := time.Now()
	conn, resp, err := r.dialer.DialContext(ctx, r.proto.URL(r.srv.base, i), hdr)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("dial client %d: %w (HTTP %s)", i, err, resp.Status)
		}
		return nil, fmt.Errorf("dial client %d: %w", i, err)
	}
	c := &benchClient{i: i, room: i / r.cfg.Room, conn: conn, joined: make(chan error, 1), id: r.proto.PresetID(i)}
	r.readers.Add(1)
	go func() {
		defer r.readers.Done()
		r.read(c)
	}()
	upgraded := time.Now()
	r.upgradeLat.add(upgraded.Sub(dialed))
	if hello := r.proto.Hello(i, c.room); hello != nil {
		if err := c.write(hello); err != nil {
			conn.Close()
			return nil, fmt.Errorf("client %d hello: %w", i, err)
		}
	}
	select {
	case err := <-c.joined:
		if err != nil {
			conn.Close()
			return nil, fmt.Errorf("client %d: %w", i, err)
		}
		r.answerLat.add(time.Since(upgraded))
		return c, nil
	case <-ctx.Done():
		conn.Close()
		return nil, fmt.Errorf("client %d: no join answer: %w", i, ctx.Err())
	}
}

// read is client c's reader goroutine: it answers pings (gorilla does so
// inside ReadMessage), records relayed messages and ends with the socket.
func (r *loadRun) read(c *benchClient) {
	joined := false
	for {
		_, frame, err := c.conn.ReadMessage()
		if err != nil {
			if !joined {
				// open reports it (or has given up and closed the socket).
				c.joined <- fmt.Errorf("closed before the join answer: %w", err)
			} else if !r.closing.Load() {
				r.fail("closed", fmt.Errorf("client %d: %w", c.i, err))
			}
			return
		}
		now := time.Since(r.epoch)
		in, err := r.proto.Parse(frame)
		if err != nil {
			r.fail("bad frame", fmt.Errorf("client %d: %w", c.i, err))
			continue
		}
		switch in.kind {
		case kindJoined:
			if joined {
				r.fail("bad frame", fmt.Errorf("client %d: a second join answer", c.i))
				continue
			}
			if in.id != "" {
				c.id = in.id
			}
			joined = true
			c.joined <- nil
		case kindSignal:
			r.rec.add(now - in.stamp)
			r.received.Add(1)
		case kindError:
			if !joined {
				// A refusal: open closes the socket and counts it.
				c.joined <- fmt.Errorf("refused: %s", in.detail)
				return
			}
			r.fail("server error", fmt.Errorf("client %d: %s", c.i, in.detail))
		}
	}
}

// heartbeat sends every joined client its keepalive once per
// HeartbeatEvery, spread evenly over the period as real clients' timers
// would be. Clients join while it runs; each tick takes the list as it is.
func (r *loadRun) heartbeat(ctx context.Context) {
	const tick = 20 * time.Millisecond
	t := time.NewTicker(tick)
	defer t.Stop()
	frame := r.proto.Heartbeat()
	var clients []*benchClient
	owed := 0.0 // heartbeats due but not sent: a fraction per tick for small N
	last := time.Now()
	for i := 0; ; {
		var now time.Time
		select {
		case <-ctx.Done():
			return
		case now = <-t.C:
		}
		// From the time elapsed, not the ticks: a busy machine drops ticks.
		elapsed := now.Sub(last)
		last = now
		r.lmu.Lock()
		clients = r.live // append-only: the prefix seen here stays valid
		r.lmu.Unlock()
		if len(clients) == 0 {
			continue
		}
		owed += float64(len(clients)) * float64(elapsed) / float64(r.proto.HeartbeatEvery())
		for ; owed >= 1; owed-- {
			if err := clients[i%len(clients)].write(frame); err != nil && !r.closing.Load() {
				r.fail("heartbeat", err)
			}
			r.heartbeats.Add(1)
			i++
		}
	}
}

// send paces rate messages per second for the configured duration: message
// j leaves at epoch+j/rate from client j mod n to another peer of its room.
// Several goroutines share the schedule so one slow write does not hold up
// the rest; a sender that falls behind sends at once, so the achieved rate
// shows it. It returns how many were sent.
func (r *loadRun) send(ctx context.Context, clients []*benchClient) int64 {
	const workers = 4
	total := int64(r.cfg.Rate * r.cfg.Duration.Seconds())
	interval := float64(time.Second) / r.cfg.Rate
	byRoom := map[int][]*benchClient{}
	for _, c := range clients {
		byRoom[c.room] = append(byRoom[c.room], c)
	}
	var sent atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := int64(w); j < total && ctx.Err() == nil; j += workers {
				if d := time.Until(start.Add(time.Duration(float64(j) * interval))); d > 0 {
					time.Sleep(d)
				}
				from := clients[j%int64(len(clients))]
				to := pickPeer(byRoom[from.room], from, j/int64(len(clients)))
				if to == nil {
					continue // alone in its room: its partner did not join
				}
				frame, err := r.proto.Signal(to.id, time.Since(r.epoch))
				if err == nil {
					err = from.write(frame)
				}
				if err != nil {
					r.fail("send", fmt.Errorf("client %d: %w", from.i, err))
					continue
				}
				sent.Add(1)
			}
		}()
	}
	wg.Wait()
	return sent.Load()
}

// pickPeer chooses the round'th other member of from's room, so that over a
// run every member of a room hears from every other.
func pickPeer(room []*benchClient, from *benchClient, round int64) *benchClient {
	if len(room) < 2 {
		return nil
	}
	self := 0
	for k, c := range room {
		if c == from {
			self = k
		}
	}
	offset := 1 + int(round%int64(len(room)-1))
	return room[(self+offset)%len(room)]
}

// closeAll closes every socket and waits for the readers to end.
func (r *loadRun) closeAll(clients []*benchClient) {
	r.closing.Store(true)
	for _, c := range clients {
		c.conn.Close()
	}
	done := make(chan struct{})
	go func() {
		r.readers.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		r.log.Error("readers still running 10s after close", "server", r.proto.Name())
	}
}
