package turnserver

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/pion/stun/v3"
)

func TestParseChannelData(t *testing.T) {
	tests := []struct {
		name    string
		in      []byte
		ok      bool
		number  uint16
		payload []byte
	}{
		{"exact", []byte{0x40, 0x00, 0x00, 0x02, 'h', 'i'}, true, 0x4000, []byte("hi")},
		{"padded", []byte{0x40, 0x01, 0x00, 0x02, 'h', 'i', 0, 0}, true, 0x4001, []byte("hi")},
		{"empty payload", []byte{0x7F, 0xFF, 0x00, 0x00}, true, 0x7FFF, []byte{}},
		{"short header", []byte{0x40, 0x00, 0x00}, false, 0, nil},
		{"length past end", []byte{0x40, 0x00, 0x00, 0x03, 'h', 'i'}, false, 0, nil},
		{"not a channel", []byte{0x3F, 0xFF, 0x00, 0x00}, false, 0, nil},
		{"reserved range", []byte{0x80, 0x00, 0x00, 0x00}, false, 0, nil},
		{"pion's MTU", append([]byte{0x40, 0x00, 0x06, 0x3C}, make([]byte, pionMTU-4)...), false, 0, nil},
		{"under pion's MTU", append([]byte{0x40, 0x00, 0x06, 0x3B}, make([]byte, pionMTU-5)...), true, 0x4000, make([]byte, pionMTU-5)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			number, payload, ok := parseChannelData(tc.in)
			if ok != tc.ok || number != tc.number || !bytes.Equal(payload, tc.payload) {
				t.Fatalf("parseChannelData = %#x %q %v, want %#x %q %v", number, payload, ok, tc.number, tc.payload, tc.ok)
			}
		})
	}
}

func TestFrameChannelData(t *testing.T) {
	for _, n := range []int{0, 1, 2, 3, 4, 5, 200, 1000, 1592} {
		buf := bytes.Repeat([]byte{0xEE}, pionMTU)
		for i := range n {
			buf[channelHeader+i] = byte(i)
		}
		msg := frameChannelData(buf, 0x4123, n)
		if len(msg)%4 != 0 || len(msg) < channelHeader+n || len(msg) > channelHeader+n+3 {
			t.Fatalf("n=%d: framed length %d", n, len(msg))
		}
		number, payload, ok := parseChannelData(msg)
		if !ok || number != 0x4123 || len(payload) != n {
			t.Fatalf("n=%d: reparsed %#x %d %v", n, number, len(payload), ok)
		}
		for i, b := range msg[channelHeader+n:] {
			if b != 0 {
				t.Fatalf("n=%d: padding byte %d is %#x", n, i, b)
			}
		}
	}
}

// TestBindingReply checks the hand-built answer with pion's own decoder:
// the mapped address is the source and the fingerprint holds.
func TestBindingReply(t *testing.T) {
	for _, src := range []string{"192.0.2.7:40000", "[2001:db8::7]:1", "[::ffff:198.51.100.1]:65535"} {
		t.Run(src, func(t *testing.T) {
			ap := netip.MustParseAddrPort(src)
			req := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
			if !isBindingRequest(req.Raw) {
				t.Fatal("isBindingRequest refused a pion request")
			}
			out := make([]byte, bindingReplyMaxSize)
			raw := bindingReply(out, req.Raw, ap)
			m := &stun.Message{Raw: append([]byte(nil), raw...)}
			if err := m.Decode(); err != nil {
				t.Fatalf("decode: %v", err)
			}
			if m.Type != stun.BindingSuccess || m.TransactionID != req.TransactionID {
				t.Fatalf("type %v id %x", m.Type, m.TransactionID)
			}
			if err := stun.Fingerprint.Check(m); err != nil {
				t.Fatalf("fingerprint: %v", err)
			}
			var xa stun.XORMappedAddress
			if err := xa.GetFrom(m); err != nil {
				t.Fatal(err)
			}
			got, _ := netip.AddrFromSlice(xa.IP)
			if got.Unmap() != ap.Addr().Unmap() || xa.Port != int(ap.Port()) {
				t.Fatalf("mapped %s:%d, want %s", xa.IP, xa.Port, ap)
			}
		})
	}
}

func TestIsBindingRequest(t *testing.T) {
	good := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.NewSoftware("x"), stun.Fingerprint).Raw
	tests := []struct {
		name string
		in   []byte
		want bool
	}{
		{"plain", stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw, true},
		{"attributes", good, true},
		{"truncated", good[:len(good)-4], false},
		{"trailing bytes", append(append([]byte(nil), good...), 0, 0, 0, 0), false},
		{"response", stun.MustBuild(stun.TransactionID, stun.BindingSuccess).Raw, false},
		{"allocate", stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest)).Raw, false},
		{"attribute past end", func() []byte {
			b := append([]byte(nil), good...)
			binary.BigEndian.PutUint16(b[22:24], 200)
			return b
		}(), false},
		{"short", good[:19], false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := isBindingRequest(tc.in); got != tc.want {
				t.Fatalf("isBindingRequest = %v, want %v", got, tc.want)
			}
		})
	}
}

// FuzzDataPlane: whatever a client sends, the fast path's parsers do not
// panic, never read past the datagram, and a Binding request they accept
// is one pion decodes too, answered with a reply pion decodes.
func FuzzDataPlane(f *testing.F) {
	f.Add([]byte{0x40, 0x00, 0x00, 0x02, 'h', 'i'})
	f.Add(stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint).Raw)
	f.Add(stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.NewSoftware("x")).Raw)
	f.Fuzz(func(t *testing.T, p []byte) {
		if number, payload, ok := parseChannelData(p); ok {
			if number < minChannel || len(payload) > len(p)-channelHeader {
				t.Fatalf("accepted %#x with %d of %d bytes", number, len(payload), len(p))
			}
		}
		if !isBindingRequest(p) {
			return
		}
		m := &stun.Message{Raw: append([]byte(nil), p...)}
		if err := m.Decode(); err != nil {
			t.Fatalf("accepted a request pion cannot decode: %v", err)
		}
		reply := &stun.Message{Raw: bindingReply(make([]byte, bindingReplyMaxSize), p, netip.MustParseAddrPort("[2001:db8::1]:9"))}
		if err := reply.Decode(); err != nil || stun.Fingerprint.Check(reply) != nil {
			t.Fatalf("reply does not decode: %v", err)
		}
	})
}

// fastPair is a UDP listener wrapper and a relay conn on loopback sockets
// with a client routed to the relay and channel 0x4000 bound to a peer.
type fastPair struct {
	l      *udpListener
	rc     *relayConn
	client *net.UDPConn
	peer   *net.UDPConn
}

func newFastPair(tb testing.TB) *fastPair {
	tb.Helper()
	listen := func() *net.UDPConn {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { c.Close() })
		return c
	}
	lc, rs, client, peer := listen(), listen(), listen(), listen()
	loop := newTestLoop(tb)
	l, err := newUDPListener(lc, testAuthenticator(tb), loop)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { l.Close() })
	guard := newRelayGuard(uint16(l.LocalAddr().(*net.UDPAddr).Port), netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.1"), nil)
	rc, err := newRelayConn(rs, guard, 0, nil, loop)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { rc.Close() })
	peerAddr := peer.LocalAddr().(*net.UDPAddr).AddrPort()
	rc.addPeer(peerAddr.Addr())
	rc.addChannel(0x4000, peerAddr)
	l.allocationCreated(client.LocalAddr().(*net.UDPAddr).AddrPort(), rc)
	loop.start()
	return &fastPair{l: l, rc: rc, client: client, peer: peer}
}

func (fp *fastPair) listenAddr() netip.AddrPort {
	return fp.l.LocalAddr().(*net.UDPAddr).AddrPort()
}
func (fp *fastPair) relayAddr() netip.AddrPort { return fp.rc.LocalAddr().(*net.UDPAddr).AddrPort() }

// TestFastPathRelays sends ChannelData both ways through the wrappers
// alone and checks the bytes, the counters, and that removing the channel
// hands the traffic back to pion.
func TestFastPathRelays(t *testing.T) {
	fp := newFastPair(t)
	buf := make([]byte, 2048)
	deadline := time.Now().Add(5 * time.Second)
	fp.peer.SetReadDeadline(deadline)
	fp.client.SetReadDeadline(deadline)

	// client → peer: ChannelData in, the bare payload out. ReadFrom only
	// returns with a datagram for pion: the Refresh sent after it.
	msg := []byte{0x40, 0x00, 0x00, 0x05, 'h', 'e', 'l', 'l', 'o', 0, 0, 0}
	if _, err := fp.client.WriteToUDPAddrPort(msg, fp.listenAddr()); err != nil {
		t.Fatal(err)
	}
	toPion := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodRefresh, stun.ClassRequest)).Raw
	if _, err := fp.client.WriteToUDPAddrPort(toPion, fp.listenAddr()); err != nil {
		t.Fatal(err)
	}
	n, _, err := fp.l.ReadFrom(buf)
	if err != nil || !bytes.Equal(buf[:n], toPion) {
		t.Fatalf("pion got %d bytes %v, want the Refresh", n, err)
	}
	n, _, err = fp.peer.ReadFromUDPAddrPort(buf)
	if err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("peer got %q %v", buf[:n], err)
	}

	// peer → client: framed as ChannelData on the listener socket.
	done := make(chan error, 1)
	pionBuf := make([]byte, pionMTU)
	go func() {
		_, _, err := fp.rc.ReadFrom(pionBuf)
		done <- err
	}()
	if _, err := fp.peer.WriteToUDPAddrPort([]byte("world"), fp.relayAddr()); err != nil {
		t.Fatal(err)
	}
	n, from, err := fp.client.ReadFromUDPAddrPort(buf)
	if err != nil || from != fp.listenAddr() || !bytes.Equal(buf[:n], []byte{0x40, 0x00, 0x00, 0x05, 'w', 'o', 'r', 'l', 'd', 0, 0, 0}) {
		t.Fatalf("client got % x from %s: %v", buf[:n], from, err)
	}
	tot := fp.rc.stats.snapshot()
	if tot.packets != [2]uint64{1, 1} || tot.bytes != [2]uint64{5, 5} {
		t.Fatalf("counters %+v", tot)
	}

	// Without the channel, the peer's datagram goes to pion (which sends
	// a Data indication) and the client's ChannelData too (pion drops it).
	fp.rc.removeChannel(0x4000)
	if _, err := fp.peer.WriteToUDPAddrPort([]byte("again"), fp.relayAddr()); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if string(pionBuf[:5]) != "again" {
		t.Fatalf("pion got %q", pionBuf[:5])
	}
	if _, err := fp.client.WriteToUDPAddrPort(msg, fp.listenAddr()); err != nil {
		t.Fatal(err)
	}
	n, _, err = fp.l.ReadFrom(buf)
	if err != nil || !bytes.Equal(buf[:n], msg) {
		t.Fatalf("pion got % x %v, want the unbound ChannelData", buf[:n], err)
	}
}

// BenchmarkFastPathUp is client → peer: the client's sendto, the loop's
// wake-up, one recvmmsg of the listener, the checks, the relay's sendto.
func BenchmarkFastPathUp(b *testing.B) {
	fp := newFastPair(b)
	msg := append([]byte{0x40, 0x00, 0x00, 0xC8}, make([]byte, 200)...)
	dst := fp.listenAddr()
	buf := make([]byte, 2048)
	b.ReportAllocs()
	b.SetBytes(200)
	for b.Loop() {
		if _, err := fp.client.WriteToUDPAddrPort(msg, dst); err != nil {
			b.Fatal(err)
		}
		if _, _, err := fp.peer.ReadFromUDPAddrPort(buf); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFastPathDown is peer → client: the peer's sendto, the relay's
// read, the checks, the framing and the sendto on the listener socket.
func BenchmarkFastPathDown(b *testing.B) {
	fp := newFastPair(b)
	done := make(chan struct{})
	go func() {
		defer close(done)
		fp.rc.ReadFrom(make([]byte, pionMTU)) //nolint:errcheck // ends when the relay closes
	}()
	b.Cleanup(func() {
		fp.rc.Close()
		<-done
	})
	payload := make([]byte, 200)
	dst := fp.relayAddr()
	buf := make([]byte, 2048)
	b.ReportAllocs()
	b.SetBytes(200)
	for b.Loop() {
		if _, err := fp.peer.WriteToUDPAddrPort(payload, dst); err != nil {
			b.Fatal(err)
		}
		if _, _, err := fp.client.ReadFromUDPAddrPort(buf); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFastPathBinding is one Binding request answered by the
// loop: the client's sendto, the wake-up, recvmmsg, the reply, sendmmsg.
func BenchmarkFastPathBinding(b *testing.B) {
	fp := newFastPair(b)
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint).Raw
	dst := fp.listenAddr()
	buf := make([]byte, 2048)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := fp.client.WriteToUDPAddrPort(req, dst); err != nil {
			b.Fatal(err)
		}
		if _, _, err := fp.client.ReadFromUDPAddrPort(buf); err != nil {
			b.Fatal(err)
		}
	}
}

// TestFastPathFollowsPion runs a real server: after ChannelBind the data
// plane carries the channel both ways; after the allocation is deleted
// the listener and the relay forget it. Counters count what it carried.
func TestFastPathFollowsPion(t *testing.T) {
	ts := startServer(t, testConfig())
	peer := startPeer(t, true)
	u, p := validCreds("alice")
	c := newRawClient(t, ts.Server, u, p, false)
	resp, code := c.allocate()
	if code != 0 {
		t.Fatalf("Allocate: %d", code)
	}
	relay := relayedAddr(t, resp)
	pa := peer.addr()
	if _, code := c.request(stun.MethodChannelBind, channelAttr(0x4001), peerAttr(pa.IP, pa.Port)); code != 0 {
		t.Fatalf("ChannelBind: %d", code)
	}
	src := c.conn.LocalAddr().(*net.UDPAddr).AddrPort()
	var l *udpListener
	var rc *relayConn
	for _, ul := range ts.udp {
		if r := ul.client(src); r != nil {
			l, rc = ul, r
		}
	}
	if rc == nil || rc.route.Load() == nil || rc.port != uint16(relay.Port) {
		t.Fatalf("no route for %s to relay %s", src, relay)
	}
	if got, ok := rc.channelPeer(0x4001); !ok || got != pa.AddrPort() {
		t.Fatalf("channel 0x4001 → %s %v, want %s", got, ok, pa)
	}

	const rounds = 20
	msg := []byte{0x40, 0x01, 0x00, 0x03, 'a', 'b', 'c', 0}
	buf := make([]byte, 2048)
	c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	for i := range rounds {
		if _, err := c.conn.Write(msg); err != nil {
			t.Fatal(err)
		}
		n, err := c.conn.Read(buf)
		if err != nil {
			t.Fatalf("echo %d: %v", i, err)
		}
		if !bytes.Equal(buf[:n], msg) {
			t.Fatalf("echo %d: % x, want % x", i, buf[:n], msg)
		}
	}
	tot := rc.stats.snapshot()
	if tot.packets != [2]uint64{rounds, rounds} || tot.bytes != [2]uint64{3 * rounds, 3 * rounds} {
		t.Fatalf("counters %+v", tot)
	}
	if got := ts.metric(t, "callbox_turn_relayed_packets_total", "direction", dirPeerToClient); got != rounds {
		t.Errorf("relayed_packets_total{peer_to_client} = %v, want %d", got, rounds)
	}

	if _, code := c.request(stun.MethodRefresh, lifetime(0)); code != 0 {
		t.Fatalf("delete: %d", code)
	}
	eventually(t, "allocation forgotten", func() bool { return l.client(src) == nil })
	if len(*rc.channels.Load()) != 0 {
		t.Errorf("channels left after the allocation: %v", *rc.channels.Load())
	}
}

// TestFastPathBursts: the loop reads one batch per ready socket per
// wake-up, which is only right if whatever stays queued is reported again.
// Bursts in both directions, then silence: every datagram must arrive
// without a later one to push it out.
func TestFastPathBursts(t *testing.T) {
	fp := newFastPair(t)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		fp.rc.ReadFrom(make([]byte, pionMTU)) //nolint:errcheck // ends when the relay closes
	}()
	go func() {
		defer wg.Done()
		fp.l.ReadFrom(make([]byte, pionMTU)) //nolint:errcheck // ends when the socket closes
	}()
	t.Cleanup(func() {
		fp.rc.Close()
		fp.l.Close()
		wg.Wait()
	})
	tests := []struct {
		name     string
		from, to *net.UDPConn
		dst      netip.AddrPort
		msg      []byte
	}{
		{"peer to client", fp.peer, fp.client, fp.relayAddr(), []byte("burst")},
		{"client to peer", fp.client, fp.peer, fp.listenAddr(), []byte{0x40, 0x00, 0x00, 0x05, 'b', 'u', 'r', 's', 't', 0, 0, 0}},
	}
	buf := make([]byte, 2048)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for round := range 200 {
				burst := 1 + round%(udpBatch+relayBatch+3) // across batch boundaries
				for range burst {
					if _, err := tc.from.WriteToUDPAddrPort(tc.msg, tc.dst); err != nil {
						t.Fatal(err)
					}
				}
				tc.to.SetReadDeadline(time.Now().Add(2 * time.Second))
				for i := range burst {
					if _, _, err := tc.to.ReadFromUDPAddrPort(buf); err != nil {
						t.Fatalf("round %d: datagram %d of %d: %v", round, i+1, burst, err)
					}
				}
			}
		})
	}
}

// TestFastPathBatchMix: one relay read takes several datagrams; those of
// the peer with a channel leave framed in one sendmmsg, those of a peer
// with a permission but no channel go to pion one ReadFrom at a time, in
// order, across reads of more datagrams than one batch holds.
func TestFastPathBatchMix(t *testing.T) {
	fp := newFastPair(t)
	other, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Close() })
	for _, tc := range []struct {
		name  string
		total int // datagrams of the burst, alternating channel peer and other
	}{{"one batch", relayBatch}, {"several batches", 3*relayBatch + 3}} {
		t.Run(tc.name, func(t *testing.T) {
			for i := range tc.total {
				from := fp.peer
				if i%2 == 1 {
					from = other
				}
				if _, err := from.WriteToUDPAddrPort([]byte{byte(i)}, fp.relayAddr()); err != nil {
					t.Fatal(err)
				}
			}
			// The queue holds the whole burst before the first read.
			time.Sleep(20 * time.Millisecond)
			buf := make([]byte, pionMTU)
			for i := 1; i < tc.total; i += 2 {
				n, from, err := fp.rc.ReadFrom(buf)
				if err != nil || n != 1 || buf[0] != byte(i) || from.(*net.UDPAddr).Port != other.LocalAddr().(*net.UDPAddr).Port {
					t.Fatalf("pion read %d: % x from %v, %v; want %02x from the other peer", i, buf[:n], from, err, i)
				}
			}
			fp.client.SetReadDeadline(time.Now().Add(2 * time.Second))
			for i := 0; i < tc.total; i += 2 {
				n, _, err := fp.client.ReadFromUDPAddrPort(buf)
				if err != nil || !bytes.Equal(buf[:n], []byte{0x40, 0x00, 0x00, 0x01, byte(i), 0, 0, 0}) {
					t.Fatalf("client datagram %d: % x, %v", i, buf[:n], err)
				}
			}
		})
	}
}
