package turnserver

import (
	"bytes"
	"fmt"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/pion/stun/v3"
	dto "github.com/prometheus/client_model/go"
)

// TestPionQueueBounded: when pion falls behind (here: nobody reads),
// datagrams the data plane leaves to it are dropped at the queue's bound
// and counted, and the ones kept come out in order.
func TestPionQueueBounded(t *testing.T) {
	fp := newFastPair(t)
	fp.rc.removeChannel(0x4000) // peer datagrams become Data indications: pion's
	const sent = 3 * relayQueueSize
	for i := range sent {
		if _, err := fp.peer.WriteToUDPAddrPort([]byte{byte(i)}, fp.relayAddr()); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "drops counted", func() bool {
		return fp.rc.stats.busy[toClient].Load() == sent-relayQueueSize
	})
	buf := make([]byte, pionMTU)
	for i := range relayQueueSize {
		n, _, err := fp.rc.ReadFrom(buf)
		if err != nil || n != 1 || buf[0] != byte(i) {
			t.Fatalf("pion read %d: % x %v", i, buf[:n], err)
		}
	}

	// The same on a listener socket: requests beyond the queue's bound
	// are dropped and counted while the data plane goes on relaying. Sent
	// in steps the loop keeps up with, so that the socket's buffer (the
	// kernel's default) drops none and every drop is the queue's.
	req := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodRefresh, stun.ClassRequest)).Raw
	send := func(n int) {
		for range n {
			if _, err := fp.client.WriteToUDPAddrPort(req, fp.listenAddr()); err != nil {
				t.Fatal(err)
			}
		}
	}
	for queued := 0; queued < pionQueueSize; {
		step := min(32, pionQueueSize-queued)
		send(step)
		queued += step
		eventually(t, "requests queued", func() bool { return len(fp.l.toPion.q) == queued })
	}
	const beyond = 50
	send(beyond)
	eventually(t, "drops counted", func() bool { return requestsDropped(t, fp.l) == beyond })
	fp.rc.addChannel(0x4000, fp.peer.LocalAddr().(*net.UDPAddr).AddrPort())
	// A full socket buffer may drop a datagram: sent until one arrives.
	msg := []byte{0x40, 0x00, 0x00, 0x02, 'o', 'k', 0, 0}
	for deadline := time.Now().Add(5 * time.Second); ; {
		if _, err := fp.client.WriteToUDPAddrPort(msg, fp.listenAddr()); err != nil {
			t.Fatal(err)
		}
		fp.peer.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		n, _, err := fp.peer.ReadFromUDPAddrPort(buf)
		if err == nil && string(buf[:n]) == "ok" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing relayed behind the flood: %v", err)
		}
	}
	got := 0
	for {
		done := make(chan struct{})
		go func() {
			defer close(done)
			fp.l.ReadFrom(buf) //nolint:errcheck // ends at the listener's Close
		}()
		select {
		case <-done:
			got++
			continue
		case <-time.After(200 * time.Millisecond):
		}
		fp.l.Close()
		<-done
		break
	}
	if got != pionQueueSize {
		t.Fatalf("pion got %d requests, want the queue's bound %d", got, pionQueueSize)
	}
}

// requestsDropped reads l's callbox_turn_requests_dropped_total.
func requestsDropped(t *testing.T, l *udpListener) int {
	t.Helper()
	var m dto.Metric
	if err := l.auth.metrics.requestsDropped.Write(&m); err != nil {
		t.Fatal(err)
	}
	return int(m.GetCounter().GetValue())
}

// TestRelayChurn: relays opened, sent to and closed while datagrams are
// still queued on them; the loop serves the next ones and the listener.
func TestRelayChurn(t *testing.T) {
	fp := newFastPair(t)
	peerAddr := fp.peer.LocalAddr().(*net.UDPAddr).AddrPort()
	for i := range 50 {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		rc, err := newRelayConn(c, fp.rc.guard, 0, nil, fp.l.loop)
		if err != nil {
			t.Fatal(err)
		}
		rc.addPeer(peerAddr.Addr())
		for range 20 {
			fp.peer.WriteToUDPAddrPort([]byte{byte(i)}, rc.LocalAddr().(*net.UDPAddr).AddrPort()) //nolint:errcheck // what is sent matters less than the close
		}
		if i%2 == 0 {
			runtime.Gosched()
		}
		if err := rc.Close(); err != nil {
			t.Fatalf("close relay %d: %v", i, err)
		}
		if _, _, err := rc.ReadFrom(make([]byte, pionMTU)); err == nil {
			// pion's reader may still take what was queued; it must
			// end with an error once the queue is empty.
			for err == nil {
				_, _, err = rc.ReadFrom(make([]byte, pionMTU))
			}
		}
	}
	msg := []byte{0x40, 0x00, 0x00, 0x02, 'o', 'k', 0, 0}
	buf := make([]byte, 2048)
	fp.peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		if _, err := fp.client.WriteToUDPAddrPort(msg, fp.listenAddr()); err != nil {
			t.Fatal(err)
		}
		n, _, err := fp.peer.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("relay after the churn: %v", err)
		}
		if bytes.Equal(buf[:n], []byte("ok")) {
			break // datagrams of the closed relays' peer may come first
		}
	}
}

// TestDataLoops: with more Ps, each UDP listener socket gets a loop of its
// own (up to GOMAXPROCS-1) and its clients' relays join it; traffic of
// many clients crosses every loop.
func TestDataLoops(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(4))
	cfg := testConfig()
	cfg.UDPSockets = 3
	ts := startServer(t, cfg)
	if len(ts.loops) != 3 {
		t.Fatalf("%d loops, want 3", len(ts.loops))
	}
	peer := startPeer(t, true)
	pa := peer.addr()
	const clients = 24
	for i := range clients {
		channelEcho(t, ts.Server, fmt.Sprintf("user%d", i), pa, byte(i))
	}
	// SO_REUSEPORT spreads 24 client addresses over the 3 sockets: every
	// loop holds its listener and some relays.
	for i, lp := range ts.loops {
		if members := lp.size(); members < 2 {
			t.Errorf("loop %d has %d members, want its listener and relays", i, members)
		}
	}
}
