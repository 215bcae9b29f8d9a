package turnserver

import (
	"net"
	"testing"
	"time"

	"github.com/pion/stun/v3"
	"golang.org/x/sys/unix"
)

// TestFastPathFlood: the listener's reader reads at most drainBatches
// batches of one socket per event, then re-arms it. Queue more than that
// on each socket before the reader starts: every datagram must still come
// through, without another one arriving to raise an edge.
func TestFastPathFlood(t *testing.T) {
	const flood = drainBatches*udpBatch + udpBatch + 5
	fp := newFastPairMode(t, true)
	// Room for the whole flood in each socket (as root, past rmem_max).
	for _, s := range []*udpSock{fp.l.sock, fp.rc.sock} {
		var got int
		if err := s.rc.Control(func(fd uintptr) {
			setBuffers(int(fd))
			got, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
		}); err != nil {
			t.Fatal(err)
		}
		if got < 1<<20 {
			t.Skipf("receive buffer %d bytes: too small for the flood (needs root or net.core.rmem_max >= 1 MiB)", got)
		}
	}
	for _, c := range []*net.UDPConn{fp.client, fp.peer} {
		if err := c.SetReadBuffer(4 << 20); err != nil {
			t.Fatal(err)
		}
	}
	msg := []byte{0x40, 0x00, 0x00, 0x01, 'x', 0, 0, 0}
	for range flood {
		if _, err := fp.client.WriteToUDPAddrPort(msg, fp.listenAddr()); err != nil {
			t.Fatal(err)
		}
		if _, err := fp.peer.WriteToUDPAddrPort([]byte("y"), fp.relayAddr()); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(20 * time.Millisecond) // every datagram queued
	fp.serveListener(t)
	buf := make([]byte, 2048)
	for _, to := range []*net.UDPConn{fp.peer, fp.client} {
		to.SetReadDeadline(time.Now().Add(5 * time.Second))
		for i := range flood {
			if _, _, err := to.ReadFromUDPAddrPort(buf); err != nil {
				t.Fatalf("%s: datagram %d of %d: %v", to.LocalAddr(), i+1, flood, err)
			}
		}
	}
}

// TestFastPathWakeAfterPion: a peer datagram that arrives while the
// listener's reader is away in pion (handling a request it returned) must
// be relayed when pion reads again, without another datagram to push it.
func TestFastPathWakeAfterPion(t *testing.T) {
	fp := newFastPairMode(t, true)
	fp.l.auth = testAuthenticator(t)
	refresh := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodRefresh, stun.ClassRequest)).Raw
	buf := make([]byte, 2048)
	for round := range 20 {
		if _, err := fp.client.WriteToUDPAddrPort(refresh, fp.listenAddr()); err != nil {
			t.Fatal(err)
		}
		if n, _, err := fp.l.ReadFrom(buf); err != nil || n != len(refresh) {
			t.Fatalf("round %d: pion got %d bytes, %v; want the Refresh", round, n, err)
		}
		// The reader is away in "pion" now.
		if _, err := fp.peer.WriteToUDPAddrPort([]byte("late"), fp.relayAddr()); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
		got := make(chan error, 1)
		go func() {
			fp.client.SetReadDeadline(time.Now().Add(2 * time.Second))
			_, _, err := fp.client.ReadFromUDPAddrPort(make([]byte, 2048))
			got <- err
		}()
		// Back from pion: the next ReadFrom returns only for the next
		// Refresh, sent once the peer datagram came through.
		next := make(chan error, 1)
		go func() {
			_, _, err := fp.l.ReadFrom(buf)
			next <- err
		}()
		if err := <-got; err != nil {
			t.Fatalf("round %d: the peer datagram did not come through: %v", round, err)
		}
		if _, err := fp.client.WriteToUDPAddrPort(refresh, fp.listenAddr()); err != nil {
			t.Fatal(err)
		}
		if err := <-next; err != nil {
			t.Fatal(err)
		}
	}
}
