//go:build linux && !callbox_portable

package turnserver

import (
	"net/netip"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestPutSockaddr: what the data plane sends to, encoded for the socket's
// family; on an AF_INET6 socket (a dual-stack listener) an IPv4 client
// goes IPv4-mapped, and decodes back to itself.
func TestPutSockaddr(t *testing.T) {
	tests := []struct {
		name       string
		dst        string
		v6         bool
		wantFamily uint16
		wantLen    uint32
		wantAddr   string // as the kernel sees it
	}{
		{"IPv4 socket", "192.0.2.7:40000", false, unix.AF_INET, unix.SizeofSockaddrInet4, "192.0.2.7"},
		{"IPv4 client on a dual-stack socket", "192.0.2.7:40000", true, unix.AF_INET6, unix.SizeofSockaddrInet6, "::ffff:192.0.2.7"},
		{"IPv6 client", "[2001:db8::7]:1", true, unix.AF_INET6, unix.SizeofSockaddrInet6, "2001:db8::7"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dst := netip.MustParseAddrPort(tc.dst)
			var sa sockaddr
			n := putSockaddr(&sa, dst, tc.v6)
			if sa.Family != tc.wantFamily || n != tc.wantLen {
				t.Fatalf("family %d length %d, want %d %d", sa.Family, n, tc.wantFamily, tc.wantLen)
			}
			if tc.v6 {
				if got := netip.AddrFrom16(sa.Addr); got != netip.MustParseAddr(tc.wantAddr) {
					t.Fatalf("address %s, want %s", got, tc.wantAddr)
				}
			}
			if back := sockaddrAddrPort(&sa); back != dst {
				t.Fatalf("decodes to %s, want %s", back, dst)
			}
		})
	}
}

// size is how many sockets the loop reads.
func (lp *dataLoop) size() int {
	lp.mu.Lock()
	defer lp.mu.Unlock()
	return len(lp.members)
}

// TestOneCPUKeepsSpareP: on one CPU (GOMAXPROCS=1) the server raises
// GOMAXPROCS to 2, so the loop's wait holding its P leaves one for the
// rest, and says so; the relay works.
func TestOneCPUKeepsSpareP(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	ts := startServer(t, testConfig())
	if got := runtime.GOMAXPROCS(0); got != minProcs {
		t.Fatalf("GOMAXPROCS %d after New, want %d", got, minProcs)
	}
	if !strings.Contains(ts.logs.String(), "GOMAXPROCS raised") {
		t.Errorf("no log line about GOMAXPROCS:\n%s", ts.logs.String())
	}
	peer := startPeer(t, true)
	channelEcho(t, ts.Server, "one-cpu", peer.addr(), 1)
}
