package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/ipv4"
)

// STUN Binding load: a closed loop. Each socket keeps a window of requests
// in flight and sends a new one for every answer, so the server runs as
// fast as it can answer without an offered rate to tune, and nothing is
// lost to an overload the generator caused.

const (
	stunMagic       = 0x2112A442
	bindingRequest  = 0x0001
	bindingResponse = 0x0101
	stunHeader      = 20
	// refillAfter restarts a socket's window when no answer came for this
	// long (a lost request would otherwise shrink the window for good).
	refillAfter = 100 * time.Millisecond
)

// isBindingResponse reports whether b is a STUN Binding success response.
func isBindingResponse(b []byte) bool {
	return len(b) >= stunHeader && binary.BigEndian.Uint16(b[0:2]) == bindingResponse &&
		binary.BigEndian.Uint32(b[4:8]) == stunMagic
}

// bindingResult is what one binding run measured.
type bindingResult struct {
	answers int64
	elapsed time.Duration
	cpuRun  time.Duration
	cpuStat time.Duration
	rss     int64
}

func (r bindingResult) rate() float64 { return float64(r.answers) / r.elapsed.Seconds() }

func (r bindingResult) cpuPerAnswer(stat bool) float64 {
	if r.answers == 0 {
		return 0
	}
	cpu := r.cpuRun
	if stat {
		cpu = r.cpuStat
	}
	return float64(cpu) / float64(time.Microsecond) / float64(r.answers)
}

type bindingSocket struct {
	conn    *net.UDPConn
	pc      *ipv4.PacketConn
	tid     atomic.Uint64 // counter written into transaction IDs
	answers atomic.Int64
	mu      sync.Mutex // serialises writes from the reader and the refill
	out     []ipv4.Message
}

// send writes n fresh requests.
func (s *bindingSocket) send(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n = min(n, len(s.out))
	for i := range s.out[:n] {
		b := s.out[i].Buffers[0]
		binary.BigEndian.PutUint64(b[12:20], s.tid.Add(1))
	}
	for done := 0; done < n; {
		k, err := s.pc.WriteBatch(s.out[done:n], 0)
		if err != nil {
			return
		}
		done += k
	}
}

func (s *bindingSocket) read() {
	msgs := newBatch(batchSize, 1500)
	for {
		n, err := s.pc.ReadBatch(msgs, 0)
		if err != nil {
			if errors.Is(err, net.ErrClosed) || isTimeout(err) {
				return
			}
			continue
		}
		k := 0
		for i := range msgs[:n] {
			if isBindingResponse(msgs[i].Buffers[0][:msgs[i].N]) {
				k++
			}
		}
		s.answers.Add(int64(k))
		s.send(k)
	}
}

// runBinding drives sockets×window Binding requests at server for d after
// a short warm-up, measuring the server process pid over the window.
func runBinding(server netip.AddrPort, pid, sockets, window int, d time.Duration) (bindingResult, error) {
	socks := make([]*bindingSocket, 0, sockets)
	defer func() {
		for _, s := range socks {
			s.conn.Close()
		}
	}()
	for i := range sockets {
		conn, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(server))
		if err != nil {
			return bindingResult{}, fmt.Errorf("turnbench: binding socket: %w", err)
		}
		enlargeBuffers(conn)
		s := &bindingSocket{conn: conn, pc: ipv4.NewPacketConn(conn), out: newBatch(window, stunHeader)}
		for j := range s.out {
			b := s.out[j].Buffers[0]
			binary.BigEndian.PutUint16(b[0:2], bindingRequest)
			binary.BigEndian.PutUint32(b[4:8], stunMagic)
			binary.BigEndian.PutUint32(b[8:12], uint32(i)) // the rest of the ID is the counter
		}
		socks = append(socks, s)
	}
	var readers sync.WaitGroup
	for _, s := range socks {
		readers.Go(s.read)
		s.send(window)
	}
	defer func() {
		for _, s := range socks {
			_ = s.conn.SetReadDeadline(time.Now())
		}
		readers.Wait()
	}()

	warmup := min(d/5, time.Second)
	last := make([]int64, len(socks))
	tick := func(until time.Time) {
		for time.Now().Before(until) {
			time.Sleep(refillAfter)
			for i, s := range socks {
				if a := s.answers.Load(); a == last[i] {
					s.send(window)
				} else {
					last[i] = a
				}
			}
		}
	}
	tick(time.Now().Add(warmup))

	count := func() (n int64) {
		for _, s := range socks {
			n += s.answers.Load()
		}
		return n
	}
	before, err := sampleProc(pid)
	if err != nil {
		return bindingResult{}, err
	}
	n0, t0 := count(), time.Now()
	tick(t0.Add(d))
	n1, elapsed := count(), time.Since(t0)
	after, err := sampleProc(pid)
	if err != nil {
		return bindingResult{}, err
	}
	return bindingResult{answers: n1 - n0, elapsed: elapsed,
		cpuRun: after.runCPU - before.runCPU, cpuStat: after.statCPU - before.statCPU, rss: after.rss}, nil
}
