package signal

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/callbox/callbox/config"
)

// BenchmarkRelay: one signal from A to B through the hub over real
// loopback sockets, one at a time; the latency of each is sent to received.
//
//	go test -run '^$' -bench Relay -benchmem ./signal
func BenchmarkRelay(b *testing.B) {
	ts := newBenchServer(b)
	a, _ := ts.join(b, "bench", "A")
	c, wc := ts.join(b, "bench", "B")
	a.expect("joined")
	msg, _ := json.Marshal(map[string]any{"type": "signal", "to": wc.ID, "payload": map[string]any{
		"candidate": map[string]any{"candidate": "candidate:1 1 udp 2122260223 192.0.2.1 54321 typ host generation 0", "sdpMid": "0", "sdpMLineIndex": 0},
	}})
	lat := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		if err := a.ws.WriteMessage(websocket.TextMessage, msg); err != nil {
			b.Fatal(err)
		}
		if _, _, err := c.ws.ReadMessage(); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

// BenchmarkJoin: dial, hello and welcome, one client at a time, in rooms
// of four; the sockets stay open until the end.
func BenchmarkJoin(b *testing.B) {
	ts := newBenchServer(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		c := ts.dialWS(b)
		c.send(hello("room"+string(rune('a'+i/4%26))+string(rune('a'+i/104%26))+string(rune('a'+i/2704%26)), "J"))
		c.expect("welcome")
	}
}

func newBenchServer(b *testing.B) *testServer {
	return newTestServer(b, func(c *config.Signal) {
		c.MaxConnectionsPerIP = 1 << 20
		c.MessagesPerSecond = 1e9
		c.MessageBurst = 100000
	})
}

// benchSignal is a browser's ICE candidate message as the hub receives it.
var benchSignal = []byte(`{"type":"signal","to":"pAbCdEfGh","payload":{"t":123456789012,"candidate":{"candidate":"candidate:842163049 1 udp 1677729535 192.0.2.10 61432 typ srflx raddr 10.0.0.5 rport 61432 generation 0 ufrag Xk9f network-cost 999","sdpMid":"0","sdpMLineIndex":0}}}`)

// BenchmarkSignalPath: the per-message work of a relayed signal without
// the sockets: decoding the client's message, json.Unmarshal (before)
// against decodeSignal, and encoding the relayed one, json.Marshal (before)
// against the splice.
//
//	go test -run '^$' -bench SignalPath -benchmem ./signal
func BenchmarkSignalPath(b *testing.B) {
	b.Run("decode=unmarshal", func(b *testing.B) { // the path before decodeSignal, and every other message's
		b.ReportAllocs()
		for b.Loop() {
			var m inMsg
			if err := json.Unmarshal(benchSignal, &m); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decode=fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := decode(benchSignal); err != nil {
				b.Fatal(err)
			}
		}
	})
	m, _ := decode(benchSignal)
	b.Run("encode=marshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			encode(signalOut{Type: "signal", From: "pZyXwVuTs", Payload: m.Payload})
		}
	})
	b.Run("encode=splice", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			encodeSignal("pZyXwVuTs", m.Payload)
		}
	})
}
