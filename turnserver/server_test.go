package turnserver

import (
	"bytes"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/pion/stun/v3"
)

func creds(secret, user string, expires time.Time) (string, string) {
	return MintCredentials(secret, user, expires)
}

func validCreds(user string) (string, string) {
	return creds(testSecret, user, time.Now().Add(time.Hour))
}

// sendUntil writes msg through the relay until want receives it: the
// first datagrams may race the permission pion's client creates.
func readWithRetry(t *testing.T, relay net.PacketConn, to net.Addr, msg []byte) []byte {
	t.Helper()
	buf := make([]byte, 1600)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := relay.WriteTo(msg, to); err != nil {
			t.Fatalf("relay write: %v", err)
		}
		relay.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, _, err := relay.ReadFrom(buf)
		if err == nil {
			return buf[:n]
		}
		if !isTimeout(err) {
			t.Fatalf("relay read: %v", err)
		}
	}
	t.Fatalf("nothing came back through the relay")
	return nil
}

func TestRelayEcho(t *testing.T) {
	for _, tcp := range []bool{false, true} {
		t.Run(map[bool]string{false: "udp", true: "tcp"}[tcp], func(t *testing.T) {
			ts := startServer(t, testConfig())
			peer := startPeer(t, true)
			user, pass := validCreds("alice")
			client := turnClient(t, ts.Server, user, pass, tcp)
			relay, err := client.Allocate()
			if err != nil {
				t.Fatalf("allocate: %v", err)
			}
			defer relay.Close()
			if got := relay.LocalAddr().(*net.UDPAddr); !got.IP.Equal(net.IPv4(127, 0, 0, 1)) ||
				got.Port < int(ts.cfg.RelayPorts.Min) || got.Port > int(ts.cfg.RelayPorts.Max) {
				t.Errorf("relay address %v outside 127.0.0.1:%s", got, ts.cfg.RelayPorts)
			}
			for i := range 5 {
				msg := []byte(fmt.Sprintf("hello %d", i))
				if got := readWithRetry(t, relay, peer.addr(), msg); !bytes.Equal(got, msg) {
					t.Fatalf("echo = %q, want %q", got, msg)
				}
			}
			if n := ts.metric(t, "callbox_turn_allocations_active"); n != 1 {
				t.Errorf("allocations_active = %v, want 1", n)
			}
			// Counters move just after the datagram leaves, so the echo
			// can overtake them.
			eventually(t, "relay counters", func() bool {
				return ts.metric(t, "callbox_turn_relayed_packets_total", "direction", dirClientToPeer) >= 5 &&
					ts.metric(t, "callbox_turn_relayed_packets_total", "direction", dirPeerToClient) >= 5 &&
					ts.metric(t, "callbox_turn_relayed_bytes_total", "direction", dirPeerToClient) >= 5*7
			})
			relay.Close() // Refresh with lifetime 0 deletes the allocation
			eventually(t, "allocation deleted", func() bool { return ts.AllocationCount() == 0 })
			if n := ts.metric(t, "callbox_turn_allocations_created_total"); n != 1 {
				t.Errorf("allocations_created_total = %v, want 1", n)
			}
		})
	}
}

func TestRelayToRelay(t *testing.T) {
	ts := startServer(t, testConfig())
	ua, pa := validCreds("alice")
	ub, pb := validCreds("bob")
	relayA, err := turnClient(t, ts.Server, ua, pa, false).Allocate()
	if err != nil {
		t.Fatalf("allocate A: %v", err)
	}
	defer relayA.Close()
	relayB, err := turnClient(t, ts.Server, ub, pb, true).Allocate()
	if err != nil {
		t.Fatalf("allocate B: %v", err)
	}
	defer relayB.Close()

	// B permits A's relay (same IP: 127.0.0.1); its first datagram is lost
	// at A, which has no permission yet.
	if _, err := relayB.WriteTo([]byte("open"), relayA.LocalAddr()); err != nil {
		t.Fatalf("B write: %v", err)
	}
	eventually(t, "A dropping B's datagram", func() bool {
		return ts.metric(t, "callbox_turn_relay_dropped_packets_total", "direction", dirPeerToClient, "reason", dropNoPermission) == 1
	})
	got := make(chan []byte, 1)
	go func() {
		buf := make([]byte, 1600)
		relayB.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, from, err := relayB.ReadFrom(buf)
		if err != nil {
			got <- nil
			return
		}
		relayB.WriteTo(buf[:n], from) // answer through B's relay to A's relay
		got <- append([]byte(nil), buf[:n]...)
	}()
	msg := []byte("relay to relay")
	if echo := readWithRetry(t, relayA, relayB.LocalAddr(), msg); !bytes.Equal(echo, msg) {
		t.Fatalf("A got %q back, want %q", echo, msg)
	}
	if b := <-got; !bytes.Equal(b, msg) {
		t.Fatalf("B got %q, want %q", b, msg)
	}
}

func TestSTUNBinding(t *testing.T) {
	ts := startServer(t, testConfig())
	for _, tcp := range []bool{false, true} {
		t.Run(map[bool]string{false: "udp", true: "tcp"}[tcp], func(t *testing.T) {
			rc := newRawClient(t, ts.Server, "", "", tcp)
			req := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
			resp := rc.roundTrip(req)
			var xa stun.XORMappedAddress
			if err := xa.GetFrom(resp); err != nil {
				t.Fatalf("binding response without XOR-MAPPED-ADDRESS: %v", err)
			}
			if got, want := xa.String(), rc.conn.LocalAddr().String(); got != want {
				t.Errorf("mapped address = %s, want %s", got, want)
			}
		})
	}
}

func TestAuthRefusals(t *testing.T) {
	ts := startServer(t, testConfig())
	past := time.Now().Add(-time.Minute)
	cases := []struct {
		name, user, pass, realm, reason string
	}{
		{"wrong secret", "", "", "", authIntegrity},
		{"expired", "", "", "", authExpired},
		{"not a REST username", "alice", restPassword(testSecret, "alice"), "", authBadUsername},
		{"negative expiry", "-5:alice", restPassword(testSecret, "-5:alice"), "", authBadUsername},
		{"wrong password", "", "bm90IHRoZSBwYXNzd29yZA==", "", authIntegrity},
		{"wrong realm", "", "", "elsewhere", authWrongRealm},
	}
	cases[0].user, cases[0].pass = creds("not-the-secret-at-all", "alice", time.Now().Add(time.Hour))
	cases[1].user, cases[1].pass = creds(testSecret, "alice", past)
	cases[4].user, _ = validCreds("alice")
	cases[5].user, cases[5].pass = validCreds("alice")
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := ts.metric(t, "callbox_turn_auth_failures_total", "reason", tc.reason)
			for _, tcp := range []bool{false, true} {
				rc := newRawClient(t, ts.Server, tc.user, tc.pass, tcp)
				if tc.realm != "" {
					rc.realm = tc.realm
				}
				// Twice from the same source: both refused, one log line.
				for range 2 {
					if _, code := rc.allocate(); code != 400 {
						t.Fatalf("tcp=%v: Allocate answered %d, want 400 (pion's code for auth failures)", tcp, code)
					}
				}
			}
			if got := ts.metric(t, "callbox_turn_auth_failures_total", "reason", tc.reason) - before; got != 4 {
				t.Errorf("auth_failures_total{reason=%q} rose by %v, want 4", tc.reason, got)
			}
		})
	}
	// Every refusal above came from 127.0.0.1: the log has one line.
	if n := countLines(ts.logs.String(), "authentication failed"); n != 1 {
		t.Errorf("%d 'authentication failed' log lines from one source, want 1:\n%s", n, ts.logs.String())
	}
	if ts.AllocationCount() != 0 {
		t.Errorf("refused requests left %d allocations", ts.AllocationCount())
	}
}

func TestSecretRotation(t *testing.T) {
	cfg := testConfig()
	cfg.Secrets = []string{testSecret2, testSecret} // new first, old still accepted
	ts := startServer(t, cfg)
	const removed = "removed-secret-zyxwvutsrq"
	exp := time.Now().Add(time.Hour)
	for _, tc := range []struct {
		name, secret string
		want         int
	}{
		{"new", testSecret2, 0},
		{"old", testSecret, 0},
		{"removed", removed, 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, p := creds(tc.secret, "alice-"+tc.name, exp)
			rc := newRawClient(t, ts.Server, u, p, false)
			if _, code := rc.allocate(); code != tc.want {
				t.Fatalf("Allocate with %s secret: %d, want %d", tc.name, code, tc.want)
			}
			if tc.want == 0 {
				// The response must be signed with the key that matched,
				// or the client would discard it.
				if _, code := rc.request(stun.MethodRefresh, lifetime(time.Minute)); code != 0 {
					t.Fatalf("Refresh: %d", code)
				}
			}
		})
	}
	if got := ts.Credentials("carol", time.Hour); !strings.HasSuffix(got.Username, ":carol") ||
		got.Password != restPassword(testSecret2, got.Username) {
		t.Errorf("Credentials are not signed with the first secret: %+v", got)
	}

	// Runtime rotation: drop the old secret.
	if err := ts.SetSecrets([]string{testSecret2}); err != nil {
		t.Fatal(err)
	}
	u, p := creds(testSecret, "dave", exp)
	if _, code := newRawClient(t, ts.Server, u, p, false).allocate(); code != 400 {
		t.Errorf("Allocate with a secret removed by SetSecrets: %d, want 400", code)
	}
	if err := ts.SetSecrets(nil); err == nil {
		t.Error("SetSecrets(nil) accepted")
	}
}

func TestExpiredCredentialKeepsAllocation(t *testing.T) {
	cfg := testConfig()
	cfg.MaxAllocationLifetime = 3 * time.Hour
	ts := startServer(t, cfg)
	peer := startPeer(t, false)
	u, p := creds(testSecret, "alice", time.Now().Add(time.Hour))

	for _, tcp := range []bool{false, true} {
		t.Run(map[bool]string{false: "udp", true: "tcp"}[tcp], func(t *testing.T) {
			ts.auth.skew.Store(0)
			rc := newRawClient(t, ts.Server, u, p, tcp)
			if _, code := rc.allocate(); code != 0 {
				t.Fatalf("Allocate: %d", code)
			}
			// Two hours later the credential has expired.
			ts.auth.skew.Store(int64(2 * time.Hour))
			steps := []struct {
				method stun.Method
				attrs  []stun.Setter
			}{
				{stun.MethodRefresh, []stun.Setter{lifetime(10 * time.Minute)}},
				{stun.MethodCreatePermission, []stun.Setter{peerAttr(peer.addr().IP, peer.addr().Port)}},
				{stun.MethodChannelBind, []stun.Setter{channelAttr(0x4001), peerAttr(peer.addr().IP, peer.addr().Port)}},
			}
			for _, s := range steps {
				if _, code := rc.request(s.method, s.attrs...); code != 0 {
					t.Fatalf("%s after the credential expired: %d, want success", s.method, code)
				}
			}
			// A new allocation with the same expired credential is refused.
			if _, code := newRawClient(t, ts.Server, u, p, tcp).allocate(); code != 400 {
				t.Errorf("new Allocate with an expired credential: %d, want 400", code)
			}
			// Past max_allocation_lifetime from creation, refreshes stop.
			before := ts.metric(t, "callbox_turn_auth_failures_total", "reason", authMaxLifetime)
			ts.auth.skew.Store(int64(4 * time.Hour))
			if _, code := rc.request(stun.MethodRefresh, lifetime(10*time.Minute)); code != 400 {
				t.Errorf("Refresh past max_allocation_lifetime: %d, want 400", code)
			}
			if got := ts.metric(t, "callbox_turn_auth_failures_total", "reason", authMaxLifetime) - before; got != 1 {
				t.Errorf("max_lifetime failures rose by %v, want 1", got)
			}
			ts.auth.skew.Store(0)
			if _, code := rc.request(stun.MethodRefresh, lifetime(0)); code != 0 {
				t.Errorf("delete: %d", code)
			}
		})
	}
}

func TestURIsAndCredentials(t *testing.T) {
	cfg := testConfig()
	ts := startServer(t, cfg)
	port := ts.UDPAddr().Port
	if got, want := ts.STUNURIs(), []string{fmt.Sprintf("stun:127.0.0.1:%d", port)}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("STUNURIs = %v, want %v", got, want)
	}
	want := []string{fmt.Sprintf("turn:127.0.0.1:%d?transport=udp", port), fmt.Sprintf("turn:127.0.0.1:%d?transport=tcp", port)}
	if got := ts.TURNURIs(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("TURNURIs = %v, want %v", got, want)
	}
	if ts.TCPAddr().Port != port {
		t.Errorf("TCP port %d != UDP port %d", ts.TCPAddr().Port, port)
	}
	c := ts.Credentials("alice", 90*time.Minute)
	if c.TTL != 5400 || len(c.URIs) != 2 || time.Until(c.Expires) > 90*time.Minute {
		t.Errorf("Credentials = %+v", c)
	}
	relay, err := turnClient(t, ts.Server, c.Username, c.Password, false).Allocate()
	if err != nil {
		t.Fatalf("allocate with minted credentials: %v", err)
	}
	relay.Close()

	cfg.Host = "turn.example.com"
	cfg.PublicIP = "203.0.113.7"
	ts2 := startServer(t, cfg)
	if got := ts2.TURNURIs()[0]; got != fmt.Sprintf("turn:turn.example.com:%d?transport=udp", ts2.UDPAddr().Port) {
		t.Errorf("with host: %s", got)
	}
	if !strings.Contains(ts2.logs.String(), "relay_address=203.0.113.7") {
		t.Errorf("start-up log does not name the relay address:\n%s", ts2.logs.String())
	}
}

func TestIPv6Listener(t *testing.T) {
	cfg := testConfig()
	cfg.Listen = "[::1]:0"
	s, err := New(cfg, Options{Logger: discardLogger()})
	if err != nil {
		t.Skipf("no IPv6 loopback here: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	port := s.UDPAddr().Port
	if got, want := s.STUNURIs()[0], fmt.Sprintf("stun:[::1]:%d", port); got != want {
		t.Errorf("STUNURIs = %s, want %s", got, want)
	}
	peer := startPeer(t, true)
	u, p := validCreds("alice")
	conn, err := net.Dial("udp6", s.UDPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rc := &rawClient{t: t, conn: conn, username: u, password: p, realm: cfg.Realm}
	resp, code := rc.allocate()
	if code != 0 {
		t.Fatalf("Allocate over IPv6: %d", code)
	}
	if relay := relayedAddr(t, resp); !relay.IP.Equal(net.IPv4(127, 0, 0, 1)) {
		t.Errorf("relay %v, want on 127.0.0.1", relay)
	}
	if _, code := rc.request(stun.MethodCreatePermission, peerAttr(peer.addr().IP, peer.addr().Port)); code != 0 {
		t.Errorf("CreatePermission: %d", code)
	}
}

func TestNewErrors(t *testing.T) {
	cfg := testConfig()
	cfg.Secrets = nil
	if _, err := New(cfg, Options{Logger: discardLogger()}); err == nil {
		t.Error("New accepted no secrets")
	}
	if _, err := New(testConfig(), Options{}); err == nil {
		t.Error("New accepted a nil logger")
	}
	cfg = testConfig()
	cfg.Listen = "127.0.0.1:notaport"
	if _, err := New(cfg, Options{Logger: discardLogger()}); err == nil {
		t.Error("New accepted a bad listen address")
	}
}

func TestCloseIdempotent(t *testing.T) {
	s, err := New(testConfig(), Options{Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	u, p := validCreds("alice")
	for _, tcp := range []bool{false, true} {
		rc := newRawClient(t, s, u, p, tcp)
		if _, code := rc.allocate(); code != 0 {
			t.Fatalf("allocate: %d", code)
		}
	}
	if s.AllocationCount() != 2 {
		t.Fatalf("AllocationCount = %d, want 2", s.AllocationCount())
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if s.AllocationCount() != 0 || s.tcp.openConns() != 0 || len(s.relays.all()) != 0 {
		t.Errorf("after Close: %d allocations, %d TCP conns, %d relays", s.AllocationCount(), s.tcp.openConns(), len(s.relays.all()))
	}
	s.tcp.mu.Lock()
	readers := s.tcp.readers
	s.tcp.mu.Unlock()
	if readers != 0 {
		t.Errorf("after Close: %d TCP readers still running", readers)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestConfiguredTURNURIs(t *testing.T) {
	cases := []struct {
		name, listen, publicIP, host, want string
	}{
		{"listen address", "127.0.0.1:3478", "", "", "turn:127.0.0.1:3478?transport=udp"},
		{"public ip", "0.0.0.0:3478", "198.51.100.7", "", "turn:198.51.100.7:3478?transport=udp"},
		{"host", "0.0.0.0:443", "198.51.100.7", "turn.example.com", "turn:turn.example.com:443?transport=udp"},
		{"ipv6 loopback", "[::1]:3478", "", "", "turn:[::1]:3478?transport=udp"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.Listen, cfg.PublicIP, cfg.Host = tc.listen, tc.publicIP, tc.host
			got := ConfiguredTURNURIs(cfg)
			if len(got) != 2 || got[0] != tc.want || got[1] != strings.Replace(tc.want, "udp", "tcp", 1) {
				t.Errorf("ConfiguredTURNURIs = %v, want %s and its tcp twin", got, tc.want)
			}
		})
	}
}
