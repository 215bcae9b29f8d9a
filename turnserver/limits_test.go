package turnserver

import (
	"bytes"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/pion/stun/v3"
)

func TestQuota(t *testing.T) {
	cfg := testConfig()
	cfg.UserQuota = 2
	cfg.TotalQuota = 3
	ts := startServer(t, cfg)
	alloc := func(user string) (*rawClient, int) {
		u, p := validCreds(user)
		rc := newRawClient(t, ts.Server, u, p, false)
		_, code := rc.allocate()
		return rc, code
	}
	steps := []struct {
		user string
		want int
	}{
		{"alice", 0},
		{"alice", 0},
		{"alice", 486}, // user quota
		{"bob", 0},
		{"carol", 486}, // total quota
	}
	var first *rawClient
	for i, s := range steps {
		rc, code := alloc(s.user)
		if code != s.want {
			t.Fatalf("step %d (%s): Allocate %d, want %d", i, s.user, code, s.want)
		}
		if i == 0 {
			first = rc
		}
	}
	if got := ts.metric(t, "callbox_turn_quota_rejections_total", "scope", "user"); got != 1 {
		t.Errorf("user quota rejections = %v, want 1", got)
	}
	if got := ts.metric(t, "callbox_turn_quota_rejections_total", "scope", "total"); got != 1 {
		t.Errorf("total quota rejections = %v, want 1", got)
	}
	// Deleting one of alice's allocations frees a slot for her.
	if _, code := first.request(stun.MethodRefresh, lifetime(0)); code != 0 {
		t.Fatalf("delete: %d", code)
	}
	eventually(t, "allocation deleted", func() bool { return ts.AllocationCount() == 2 })
	if _, code := alloc("alice"); code != 0 {
		t.Errorf("Allocate after a delete: %d, want success", code)
	}
}

func TestPeerPolicyAnswers403(t *testing.T) {
	cfg := testConfig()
	cfg.AllowLoopbackPeers = false
	cfg.AllowedPeers = mustPrefixes("10.0.0.0/8")
	ts := startServer(t, cfg)
	u, p := validCreds("alice")
	for _, tcp := range []bool{false, true} {
		rc := newRawClient(t, ts.Server, u, p, tcp)
		if _, code := rc.allocate(); code != 0 {
			t.Fatalf("Allocate: %d", code)
		}
		cases := []struct {
			name   string
			method stun.Method
			peer   string
			want   int
			reason string
		}{
			{"loopback", stun.MethodCreatePermission, "127.0.0.1", 403, denyLoopback},
			{"mapped loopback", stun.MethodCreatePermission, "::ffff:127.0.0.1", 403, denyLoopback},
			{"metadata", stun.MethodChannelBind, "169.254.169.254", 403, denyLinkLocal},
			{"cgnat", stun.MethodChannelBind, "100.64.0.1", 403, denyCGNAT},
			{"private", stun.MethodCreatePermission, "192.168.1.1", 403, denyPrivate},
			{"allowed override", stun.MethodCreatePermission, "10.1.2.3", 0, ""},
			{"public", stun.MethodCreatePermission, "8.8.8.8", 0, ""},
		}
		for i, tc := range cases {
			t.Run(fmt.Sprintf("tcp=%v/%s", tcp, tc.name), func(t *testing.T) {
				var before float64
				if tc.reason != "" {
					before = ts.metric(t, "callbox_turn_peer_denied_total", "reason", tc.reason)
				}
				attrs := []stun.Setter{peerAttr(net.ParseIP(tc.peer), 5000)}
				if tc.method == stun.MethodChannelBind {
					attrs = append([]stun.Setter{channelAttr(0x4000 + uint16(i))}, attrs...)
				}
				resp, code := rc.request(tc.method, attrs...)
				if code != tc.want {
					t.Fatalf("%s to %s: %d, want %d", tc.method, tc.peer, code, tc.want)
				}
				if tc.reason == "" {
					return
				}
				// The 403 is signed with the client's key.
				if err := stun.NewLongTermIntegrity(u, ts.cfg.Realm, p).Check(resp); err != nil {
					t.Errorf("403 integrity: %v", err)
				}
				if got := ts.metric(t, "callbox_turn_peer_denied_total", "reason", tc.reason) - before; got != 1 {
					t.Errorf("peer_denied_total{reason=%q} rose by %v, want 1", tc.reason, got)
				}
			})
		}
	}
}

func TestBitrateCap(t *testing.T) {
	cfg := testConfig()
	cfg.MaxBitrate = 80_000 // 10 kB/s, burst 5 kB
	ts := startServer(t, cfg)
	peer := startPeer(t, false)
	u, p := validCreds("alice")
	client := turnClient(t, ts.Server, u, p, false)
	relay, err := client.Allocate()
	if err != nil {
		t.Fatalf("allocate: %v", err)
	}
	defer relay.Close()
	payload := bytes.Repeat([]byte{'x'}, 1000)

	// Client to peer: 100 kB in a burst.
	start := time.Now()
	for range 100 {
		if _, err := relay.WriteTo(payload, peer.addr()); err != nil {
			t.Fatalf("write: %v", err)
		}
	}
	elapsed := time.Since(start)
	time.Sleep(100 * time.Millisecond) // let the last datagrams land
	_, got := peer.count()
	limit := 5000 + int(10_000*(elapsed+100*time.Millisecond).Seconds()) + 1000
	if got == 0 || got > limit {
		t.Errorf("peer received %d bytes of 100000 sent in %v; cap allows %d", got, elapsed, limit)
	}
	eventually(t, "bitrate drops counted", func() bool {
		return ts.metric(t, "callbox_turn_relay_dropped_packets_total", "direction", dirClientToPeer, "reason", dropBitrate) > 0
	})

	// Peer to client: the peer now has a permission; send it a burst back.
	start = time.Now()
	for range 100 {
		peer.conn.WriteTo(payload, relay.LocalAddr())
	}
	received := 0
	buf := make([]byte, 1600)
	for {
		relay.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		n, _, err := relay.ReadFrom(buf)
		if err != nil {
			break
		}
		received += n
	}
	elapsed = time.Since(start)
	if limit := 5000 + int(10_000*elapsed.Seconds()) + 1000; received == 0 || received > limit {
		t.Errorf("client received %d bytes of 100000 in %v; cap allows %d", received, elapsed, limit)
	}
	if n := ts.metric(t, "callbox_turn_relay_dropped_packets_total", "direction", dirPeerToClient, "reason", dropBitrate); n == 0 {
		t.Error("no peer_to_client bitrate drops counted")
	}
}

func TestProtectedPorts(t *testing.T) {
	guarded := startPeer(t, false) // stands for the HTTP or metrics listener
	ts := startServer(t, testConfig(), guarded.addr().AddrPort())
	open := startPeer(t, false)
	u, p := validCreds("alice")
	relay, err := turnClient(t, ts.Server, u, p, false).Allocate()
	if err != nil {
		t.Fatalf("allocate: %v", err)
	}
	defer relay.Close()
	for _, to := range []*net.UDPAddr{guarded.addr(), ts.UDPAddr(), {IP: net.IPv4(127, 0, 0, 2), Port: guarded.addr().Port}} {
		for range 5 {
			relay.WriteTo([]byte("probe"), to)
		}
	}
	eventually(t, "open peer reached", func() bool {
		relay.WriteTo([]byte("probe"), open.addr())
		n, _ := open.count()
		return n > 0
	})
	if n, _ := guarded.count(); n != 0 {
		t.Errorf("protected service received %d datagrams through the relay", n)
	}
	eventually(t, "drops counted", func() bool {
		return ts.metric(t, "callbox_turn_relay_dropped_packets_total", "direction", dirClientToPeer, "reason", dropProtectedPort) >= 15
	})
}

func TestNoPermissionDropped(t *testing.T) {
	ts := startServer(t, testConfig())
	u, p := validCreds("alice")
	relay, err := turnClient(t, ts.Server, u, p, false).Allocate()
	if err != nil {
		t.Fatalf("allocate: %v", err)
	}
	defer relay.Close()
	stranger := startPeer(t, false)
	for range 3 {
		stranger.conn.WriteTo([]byte("spam"), relay.LocalAddr())
	}
	eventually(t, "unpermitted datagrams dropped", func() bool {
		return ts.metric(t, "callbox_turn_relay_dropped_packets_total", "direction", dirPeerToClient, "reason", dropNoPermission) == 3
	})
}

func TestTCPAllocateTimeout(t *testing.T) {
	ts := startServer(t, testConfig())
	ts.tcp.mu.Lock()
	ts.tcp.allocateTimeout = 300 * time.Millisecond
	ts.tcp.mu.Unlock()
	u, p := validCreds("alice")

	idle := newRawClient(t, ts.Server, u, p, true)
	allocated := newRawClient(t, ts.Server, u, p, true)
	if _, code := allocated.allocate(); code != 0 {
		t.Fatalf("Allocate: %d", code)
	}
	// The idle conn is closed by the server; read sees EOF, not a timeout.
	idle.conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := idle.conn.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("conn without an allocation still open after the timeout: %v", err)
	}
	// The allocated one outlives the timeout and still answers.
	time.Sleep(500 * time.Millisecond)
	if _, code := allocated.request(stun.MethodRefresh, lifetime(time.Minute)); code != 0 {
		t.Fatalf("Refresh on the allocated conn: %d", code)
	}
	// Deleting the allocation re-arms the timeout.
	if _, code := allocated.request(stun.MethodRefresh, lifetime(0)); code != 0 {
		t.Fatalf("delete: %d", code)
	}
	allocated.conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := allocated.conn.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("conn open after its allocation was deleted and the timeout passed: %v", err)
	}
}
