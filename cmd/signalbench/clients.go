package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

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
	// guarded by wmu: when the write deadline was last set
	deadlineSet time.Time
}

// writeWait bounds one write of the load; the deadline is moved once a
// second rather than per write (each move is a timer update).
const writeWait = 5 * time.Second

func (c *benchClient) write(frame []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if now := time.Now(); now.Sub(c.deadlineSet) > time.Second {
		_ = c.conn.SetWriteDeadline(now.Add(writeWait))
		c.deadlineSet = now
	}
	return c.conn.WriteMessage(websocket.TextMessage, frame)
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
	var frame []byte // reused: Parse keeps nothing of it
	for {
		var err error
		frame, err = readMessage(c.conn, frame[:0])
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
			r.rec.addAt(in.stamp, now-in.stamp)
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

// readMessage is ReadMessage into buf, which grows to the largest message
// (a welcome) and then serves every one.
func readMessage(conn *websocket.Conn, buf []byte) ([]byte, error) {
	_, r, err := conn.NextReader()
	if err != nil {
		return buf, err
	}
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
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
