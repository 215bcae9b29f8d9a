package cluster

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/callbox/callbox/config"
)

// The cluster's cost per signal, in-process: one NATS server, two nodes
// (hub + cluster.Node on httptest), real WebSocket clients. Pairs of peers,
// one room per pair; the sender is always on node a, the receiver on node a
// ("local") or node b ("cross"). Run, with the load average written down:
//
//	go test -run '^$' -bench 'Cluster' -benchtime 4000x ./cluster/

// benchRate is the total signal rate of the latency benchmark (msg/s).
const benchRate = 1000

const benchPairs = 20

type benchPair struct {
	from, to *websocket.Conn
	toID     string
}

func benchSetup(b *testing.B, cross bool) []benchPair {
	b.Helper()
	nats := startNATS(b, 1)
	scfg := testSignal(func(s *config.Signal) {
		s.MessagesPerSecond = 1e6
		s.MessageBurst = 100000
		s.SendQueue = 4096
	})
	nodes := startCluster(b, nats, scfg, "a", "b")
	recvNode := nodes[0]
	if cross {
		recvNode = nodes[1]
	}
	pairs := make([]benchPair, benchPairs)
	for i := range pairs {
		room := "bench-" + strconv.Itoa(i)
		rcv := join(b, recvNode, room, "rcv")
		snd := join(b, nodes[0], room, "snd")
		// The receiver saw the sender join: node a knows the receiver.
		rcv.expectPresence("joined", snd.w.ID)
		pairs[i] = benchPair{from: snd.ws, to: rcv.ws, toID: rcv.w.ID}
	}
	return pairs
}

// receive reads signals on every pair's receiver until want have come,
// calling got with each one's send time.
func receive(pairs []benchPair, want int64, got func(sent int64)) (wait func() error) {
	var wg sync.WaitGroup
	var count atomic.Int64
	var errMu sync.Mutex
	var firstErr error
	for _, p := range pairs {
		wg.Go(func() {
			for count.Load() < want {
				p.to.SetReadDeadline(time.Now().Add(20 * time.Second))
				_, data, err := p.to.ReadMessage()
				if err != nil {
					if count.Load() < want {
						errMu.Lock()
						firstErr = fmt.Errorf("receiver: %w (after %d of %d)", err, count.Load(), want)
						errMu.Unlock()
					}
					return
				}
				var m struct {
					Type    string `json:"type"`
					Payload struct {
						T int64 `json:"t"`
					} `json:"payload"`
				}
				if json.Unmarshal(data, &m) == nil && m.Type == "signal" {
					got(m.Payload.T)
					if count.Add(1) >= want {
						// Unblock the other readers.
						for _, q := range pairs {
							q.to.SetReadDeadline(time.Now())
						}
					}
				}
			}
		})
	}
	return func() error {
		wg.Wait()
		return firstErr
	}
}

func sendSignal(p benchPair, t int64) error {
	p.from.SetWriteDeadline(time.Now().Add(5 * time.Second))
	return p.from.WriteMessage(websocket.TextMessage,
		[]byte(`{"type":"signal","to":"`+p.toID+`","payload":{"t":`+strconv.FormatInt(t, 10)+`}}`))
}

// BenchmarkClusterSignalLatency: b.N signals at benchRate msg/s spread over
// the pairs; p50 and p99 from the sender's write to the receiver's read.
func BenchmarkClusterSignalLatency(b *testing.B) {
	for _, mode := range []struct {
		name  string
		cross bool
	}{{"local", false}, {"cross", true}} {
		b.Run(mode.name, func(b *testing.B) {
			pairs := benchSetup(b, mode.cross)
			var mu sync.Mutex
			lat := make([]time.Duration, 0, b.N)
			wait := receive(pairs, int64(b.N), func(sent int64) {
				d := time.Duration(time.Now().UnixNano() - sent)
				mu.Lock()
				lat = append(lat, d)
				mu.Unlock()
			})
			interval := time.Second / benchRate
			b.ResetTimer()
			start := time.Now()
			for i := range b.N {
				if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
					time.Sleep(d)
				}
				if err := sendSignal(pairs[i%len(pairs)], time.Now().UnixNano()); err != nil {
					b.Fatal(err)
				}
			}
			if err := wait(); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
		})
	}
}

// BenchmarkClusterThroughput: b.N signals as fast as the nodes carry them,
// each sender at most window ahead of its receiver (the hub's send queue
// would otherwise cut a receiver that falls behind, as it should).
func BenchmarkClusterThroughput(b *testing.B) {
	const window = 256
	for _, mode := range []struct {
		name  string
		cross bool
	}{{"local", false}, {"cross", true}} {
		b.Run(mode.name, func(b *testing.B) {
			pairs := benchSetup(b, mode.cross)
			per := b.N / len(pairs)
			if per == 0 {
				per = 1
			}
			total := int64(per * len(pairs))
			recvd := make([]atomic.Int64, len(pairs))
			// One receiver per pair so each pair's window is its own.
			var rwg sync.WaitGroup
			for i, p := range pairs {
				rwg.Go(func() {
					for recvd[i].Load() < int64(per) {
						p.to.SetReadDeadline(time.Now().Add(20 * time.Second))
						_, data, err := p.to.ReadMessage()
						if err != nil {
							b.Errorf("pair %d: %v after %d", i, err, recvd[i].Load())
							return
						}
						if len(data) > 15 && string(data[9:15]) == "signal" {
							recvd[i].Add(1)
						}
					}
				})
			}
			b.ResetTimer()
			start := time.Now()
			var swg sync.WaitGroup
			for i, p := range pairs {
				swg.Go(func() {
					for n := range per {
						for int64(n)-recvd[i].Load() >= window {
							time.Sleep(50 * time.Microsecond)
						}
						if err := sendSignal(p, 0); err != nil {
							b.Errorf("pair %d: %v", i, err)
							return
						}
					}
				})
			}
			swg.Wait()
			rwg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(total)/elapsed.Seconds(), "msg/s")
		})
	}
}
