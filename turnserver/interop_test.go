package turnserver_test

import (
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/callbox/callbox/config"
	"github.com/callbox/callbox/internal/testutil"
	"github.com/callbox/callbox/turnserver"
)

// interopSecret is the static-auth-secret both sides share.
const interopSecret = "interop-secret-0123456789"

// startInteropServer runs a turnserver on 127.0.0.1 with a kernel-chosen
// port, loopback peers allowed (turnutils_peer is on 127.0.0.1) and two UDP
// sockets so SO_REUSEPORT is part of what coturn's client talks to. The log
// is shown only when the test fails.
func startInteropServer(t *testing.T) *turnserver.Server {
	t.Helper()
	cfg := config.Default().TURN
	cfg.Listen = "127.0.0.1:0"
	cfg.Secrets = []string{interopSecret}
	cfg.AllowLoopbackPeers = true
	cfg.UDPSockets = 2
	cfg.UserQuota = 0
	logs := &testutil.SyncBuffer{}
	s, err := turnserver.New(cfg, turnserver.Options{
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatalf("turnserver.New: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	return s
}

// TestInteropUClient relays with coturn's turnutils_uclient through callbox
// to turnutils_peer and back: every mode a browser or a coturn user relies
// on must finish with exit 0 and no packet lost.
func TestInteropUClient(t *testing.T) {
	uclient := coturnTool(t, "turnutils_uclient")
	s := startInteropServer(t)
	peerPort := startCoturnPeer(t)
	port := strconv.Itoa(s.UDPAddr().Port)
	if s.TCPAddr().Port != s.UDPAddr().Port {
		t.Fatalf("TCP port %d differs from UDP port %d", s.TCPAddr().Port, s.UDPAddr().Port)
	}
	// -X asks for an IPv4 relay explicitly; -c skips the RTCP allocation
	// pair (EVEN-PORT with a reservation), tested on its own below. -z 5
	// sends every 5 ms to keep the test short.
	base := []string{"-W", interopSecret, "-p", port, "-X", "-z", "5"}
	peer := []string{"-e", "127.0.0.1", "-r", strconv.Itoa(peerPort)}
	minted := s.Credentials("minted-user", time.Hour)

	tests := []struct {
		name    string
		args    []string
		clients int
		msgs    int
	}{
		{name: "udp channels", args: slices.Concat(peer, []string{"-c"}), clients: 2, msgs: 10},
		{name: "tcp channels", args: slices.Concat(peer, []string{"-c", "-t"}), clients: 2, msgs: 10},
		{name: "udp send indications", args: slices.Concat(peer, []string{"-c", "-s"}), clients: 2, msgs: 10},
		{name: "tcp send indications", args: slices.Concat(peer, []string{"-c", "-s", "-t"}), clients: 2, msgs: 10},
		{name: "udp client to client", args: []string{"-c", "-y"}, clients: 2, msgs: 10},
		{name: "tcp client to client", args: []string{"-c", "-y", "-t"}, clients: 2, msgs: 10},
		{name: "udp client to client send indications", args: []string{"-c", "-y", "-s"}, clients: 2, msgs: 10},
		{name: "many clients", args: slices.Concat(peer, []string{"-c"}), clients: 10, msgs: 20},
		// Without -c each client also allocates an RTCP relay: EVEN-PORT
		// with RESERVATION-TOKEN on the first, the token on the second.
		{name: "udp with rtcp pairs", args: peer, clients: 2, msgs: 10},
		{name: "large packets", args: slices.Concat(peer, []string{"-c", "-l", "1200"}), clients: 2, msgs: 10},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			args := slices.Concat(base, tc.args, []string{
				"-u", "user-" + strings.ReplaceAll(tc.name, " ", "-"),
				"-m", strconv.Itoa(tc.clients), "-n", strconv.Itoa(tc.msgs),
				"127.0.0.1",
			})
			out, err := runTool(t, uclient, args...)
			checkRelayed(t, out, err, tc.clients*tc.msgs)
		})
	}

	// Credentials minted by callbox, handed to coturn's client as a plain
	// long-term username and password (-u/-w), as a web app would hand them
	// to a browser.
	t.Run("callbox-minted credentials", func(t *testing.T) {
		t.Parallel()
		args := slices.Concat(peer, []string{
			"-u", minted.Username, "-w", minted.Password,
			"-p", port, "-X", "-z", "5", "-c", "-m", "2", "-n", "10", "127.0.0.1",
		})
		out, err := runTool(t, uclient, args...)
		checkRelayed(t, out, err, 20)
	})
}

// checkRelayed asserts a uclient run succeeded with every message back.
func checkRelayed(t *testing.T, out string, err error, want int) {
	t.Helper()
	if err != nil {
		t.Fatalf("turnutils_uclient: %v\n%s", err, out)
	}
	r, perr := parseUClient(out)
	if perr != nil {
		t.Fatalf("%v\n%s", perr, out)
	}
	if r.Lost != 0 || r.SendDropped != 0 || r.Sent != want || r.Received != want {
		t.Fatalf("sent %d, received %d, lost %d, send dropped %d; want %d each way and no loss\n%s",
			r.Sent, r.Received, r.Lost, r.SendDropped, want, out)
	}
}

// TestInteropUClientRejected: credentials callbox must refuse make coturn's
// client fail, with no data relayed.
func TestInteropUClientRejected(t *testing.T) {
	uclient := coturnTool(t, "turnutils_uclient")
	s := startInteropServer(t)
	peerPort := startCoturnPeer(t)
	port := strconv.Itoa(s.UDPAddr().Port)
	peer := []string{"-e", "127.0.0.1", "-r", strconv.Itoa(peerPort)}
	expired, expiredPass := turnserver.MintCredentials(interopSecret, "late", time.Now().Add(-time.Minute))

	tests := []struct {
		name string
		args []string
	}{
		{name: "wrong secret udp", args: []string{"-W", "not-the-secret-0123456789", "-u", "mallory"}},
		{name: "wrong secret tcp", args: []string{"-W", "not-the-secret-0123456789", "-u", "mallory", "-t"}},
		{name: "expired credential", args: []string{"-u", expired, "-w", expiredPass}},
		{name: "wrong password", args: []string{"-u", "4102444800:eve", "-w", "bm90IHRoZSBwYXNzd29yZA=="}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			args := slices.Concat(peer, tc.args, []string{"-p", port, "-X", "-c", "-n", "3", "-m", "1", "127.0.0.1"})
			out, err := runTool(t, uclient, args...)
			if err == nil {
				t.Fatalf("turnutils_uclient succeeded with credentials callbox must reject:\n%s", out)
			}
			// A refusal is an "error 4xx" line (pion answers 400 where
			// coturn says 401), not a timeout or a crash.
			if !reUClientError.MatchString(out) {
				t.Fatalf("turnutils_uclient failed (%v) without an error 4xx answer:\n%s", err, out)
			}
			if r, perr := parseUClient(out); perr == nil && r.Received > 0 {
				t.Fatalf("%d messages relayed with rejected credentials:\n%s", r.Received, out)
			}
		})
	}
}

// TestInteropStunclient: turnutils_stunclient must be told the address it
// sent from. The tool binds port 0 and does not print its own port, so a raw
// socket watches which source port really reached the server.
func TestInteropStunclient(t *testing.T) {
	stunclient := coturnTool(t, "turnutils_stunclient")
	s := startInteropServer(t)
	port := s.UDPAddr().Port

	// 127.0.0.2 proves the server reflects the source and does not echo
	// its own address.
	for _, local := range []string{"127.0.0.1", "127.0.0.2"} {
		t.Run("from "+local, func(t *testing.T) {
			sn, err := sniffUDP(port)
			if err != nil {
				if os.Getenv("CI") == "true" {
					t.Fatalf("%v: the port check needs CAP_NET_RAW (run as root)", err)
				}
				t.Logf("%v: checking the mapped IP only (the port check needs CAP_NET_RAW)", err)
			}
			out, runErr := runTool(t, stunclient, "-L", local, "-p", strconv.Itoa(port), "127.0.0.1")
			var seen []netip.AddrPort
			if sn != nil {
				seen = sn.stop()
			}
			if runErr != nil {
				t.Fatalf("turnutils_stunclient: %v\n%s", runErr, out)
			}
			mapped, err := parseStunclient(out)
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			if mapped.Addr() != netip.MustParseAddr(local) {
				t.Fatalf("mapped address %s, want IP %s\n%s", mapped, local, out)
			}
			if sn == nil {
				return
			}
			if len(seen) == 0 {
				t.Fatalf("the raw socket saw no datagram to port %d", port)
			}
			for _, src := range seen {
				if src != mapped {
					t.Fatalf("server was reached from %v, but told the client %s\n%s", seen, mapped, out)
				}
			}
		})
	}
}
