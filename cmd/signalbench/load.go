package main

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/callbox/callbox/internal/procfs"
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
	LatencyLog  string        // if set, a file prefix: every message's send time and latency go to PREFIX-SERVER-N.txt
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

// loadRun is the state of one measured run.
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
	if res.RSSBefore, err = procfs.RSS(srv.pid()); err != nil {
		return res, err
	}

	// The CPU of both sides during the joins tells which one limited them.
	self := os.Getpid()
	srvCPU0, _ := procfs.CPU(srv.pid())
	selfCPU0, _ := procfs.CPU(self)
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
	srvCPU1, _ := procfs.CPU(srv.pid())
	selfCPU1, _ := procfs.CPU(self)
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
	if res.RSSIdle, err = procfs.RSS(srv.pid()); err != nil {
		return res, err
	}

	cpu0, err := procfs.CPU(srv.pid())
	if err != nil {
		return res, err
	}
	selfCPU2, _ := procfs.CPU(self)
	phase := time.Now()
	res.Sent = r.send(ctx, clients)
	sendEnd := time.Now()
	// Let the last messages land; what has not after this is lost.
	for deadline := time.Now().Add(3 * time.Second); r.received.Load() < res.Sent && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	cpu1, err := procfs.CPU(srv.pid())
	if err != nil {
		return res, err
	}
	res.Received = r.received.Load()
	res.MsgRate = float64(res.Received) / sendEnd.Sub(phase).Seconds()
	if res.Received > 0 {
		res.CPUPerMsg = (cpu1 - cpu0) / time.Duration(res.Received)
		selfCPU3, _ := procfs.CPU(self)
		// The client's own cost bounds what the latencies can show.
		log.Info("relayed", "server", proto.Name(), "sent", res.Sent, "received", res.Received,
			"server_cpu_per_msg", res.CPUPerMsg, "bench_cpu_per_msg", (selfCPU3-selfCPU2)/time.Duration(res.Received))
	}
	lat := r.rec.sorted()
	if cfg.LatencyLog != "" {
		if err := writeLatencyLog(fmt.Sprintf("%s-%s-%d.txt", cfg.LatencyLog, proto.Name(), cfg.N), r.rec.pairs(), phase.Sub(r.epoch)); err != nil {
			log.Warn("latency log", "err", err)
		}
	}
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

// writeLatencyLog writes one line per delivered message: its send time
// from the start of the message phase and its latency, both in µs, in
// arrival order; where a run's tail sits in time tells what caused it.
func writeLatencyLog(path string, pairs [][2]int64, phase time.Duration) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("signalbench: latency log: %w", err)
	}
	w := bufio.NewWriter(f)
	for _, p := range pairs {
		fmt.Fprintf(w, "%.1f %.1f\n", float64(p[0]-int64(phase))/1e3, float64(p[1])/1e3)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("signalbench: latency log: %w", err)
	}
	return f.Close()
}
