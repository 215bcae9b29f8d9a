package turnserver

import (
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Which sockets turn.listen asks for: ":PORT" is dual-stack, an explicit
// address is its own family only. (Binding the wildcard is left out: tests
// bind loopback only.)
func TestListenNetworks(t *testing.T) {
	for _, tc := range []struct {
		listen, ip, udp, tcp string
	}{
		{":3478", "::", "udp", "tcp"},
		{"[::]:3478", "::", "udp", "tcp"},
		{"0.0.0.0:3478", "0.0.0.0", "udp4", "tcp4"},
		{"127.0.0.1:3478", "127.0.0.1", "udp4", "tcp4"},
		{"[::1]:3478", "::1", "udp6", "tcp6"},
		{"[2001:db8::1]:3478", "2001:db8::1", "udp6", "tcp6"},
		{"localhost:3478", "127.0.0.1", "udp4", "tcp4"},
	} {
		t.Run(tc.listen, func(t *testing.T) {
			ip, _, err := parseListen(tc.listen)
			if err != nil {
				t.Fatal(err)
			}
			udp, tcp := listenNetworks(ip)
			if ip.String() != tc.ip || udp != tc.udp || tcp != tc.tcp {
				t.Errorf("%s: %s %s %s, want %s %s %s", tc.listen, ip, udp, tcp, tc.ip, tc.udp, tc.tcp)
			}
		})
	}
}

func TestConfiguredTURNSURIs(t *testing.T) {
	for _, tc := range []struct {
		name, host, tlsListen, want string
	}{
		{"with host", "turn.example.com", ":5349", "turns:turn.example.com:5349?transport=tcp"},
		{"no host: no turns", "", ":5349", ""},
		{"tls off", "turn.example.com", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.Host, cfg.TLSListen = tc.host, tc.tlsListen
			got := ConfiguredTURNURIs(cfg)
			last := ""
			if len(got) == 3 {
				last = got[2]
			}
			if last != tc.want || (tc.want == "" && len(got) != 2) {
				t.Errorf("ConfiguredTURNURIs = %v, want turns URI %q", got, tc.want)
			}
		})
	}
}

func TestPickRelayAddress(t *testing.T) {
	addrs := func(ss ...string) []netip.Addr {
		var out []netip.Addr
		for _, s := range ss {
			out = append(out, netip.MustParseAddr(s))
		}
		return out
	}
	for _, tc := range []struct {
		name  string
		addrs []netip.Addr
		want  string
	}{
		{"public after private", addrs("127.0.0.1", "10.0.0.5", "203.0.113.10"), "203.0.113.10"},
		{"only private (1:1 NAT)", addrs("127.0.0.1", "172.31.5.9", "fe80::1"), "172.31.5.9"},
		{"carrier-grade NAT is private", addrs("100.64.1.2", "198.51.100.4"), "198.51.100.4"},
		{"ipv6 only", addrs("::1", "2001:db8::5"), "127.0.0.1"},
		{"link-local skipped", addrs("169.254.1.1", "192.168.1.2"), "192.168.1.2"},
		{"nothing", nil, "127.0.0.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := pickRelayAddress(tc.addrs); got.String() != tc.want {
				t.Errorf("pickRelayAddress = %s, want %s", got, tc.want)
			}
		})
	}
}

// bufferSizes reads back what the kernel gave, in the units asked for.
func TestBufferSizes(t *testing.T) {
	const small = 64 << 10
	c := udpWithBuffers(t, askBuffers(small))
	rcv, snd, err := bufferSizes(c)
	if err != nil || rcv != small || snd != small {
		t.Fatalf("bufferSizes = %d, %d, %v; want %d each", rcv, snd, err, small)
	}
}

// udpWithBuffers opens a loopback UDP socket, closed at the test's end, and
// sets its buffers with set.
func udpWithBuffers(t *testing.T, set func(fd int) error) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = set(int(fd)) }); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Fatal(serr)
	}
	return c
}

// askBuffers asks for size-byte receive and send buffers, as an
// unprivileged process can.
func askBuffers(size int) func(fd int) error {
	return func(fd int) error {
		for _, opt := range []int{unix.SO_RCVBUF, unix.SO_SNDBUF} {
			if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, opt, size); err != nil {
				return err
			}
		}
		return nil
	}
}

// checkBuffers' warning, on a socket that got less than listenerBuffer:
// TestListenerBufferWarning reaches this branch only without CAP_NET_ADMIN,
// which a root test run (CI) has.
func TestCheckBuffersWarns(t *testing.T) {
	for _, tc := range []struct {
		name     string
		set      func(fd int) error
		small    bool // asked for less than listenerBuffer
		wantWarn bool
	}{
		{"small buffers", askBuffers(64 << 10), true, true},
		{"the buffers asked for", func(fd int) error { setBuffers(fd); return nil }, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := udpWithBuffers(t, tc.set)
			if rcv, snd, _ := bufferSizes(c); !tc.small && (rcv < listenerBuffer || snd < listenerBuffer) {
				t.Skipf("this process cannot get %d-byte buffers (%d, %d): needs CAP_NET_ADMIN or net.core.rmem_max/wmem_max raised", listenerBuffer, rcv, snd)
			}
			var logs strings.Builder
			s := &Server{log: slog.New(slog.NewTextHandler(&logs, nil))}
			s.checkBuffers(c)
			out := logs.String()
			warned := strings.Contains(out, "UDP listener buffers are smaller than asked")
			if warned != tc.wantWarn {
				t.Fatalf("warned = %v, want %v; log:\n%s", warned, tc.wantWarn, out)
			}
			if !warned {
				return
			}
			for _, want := range []string{"receive_bytes=65536", "send_bytes=65536", "asked_bytes=4194304", bufferLimitFix(runtime.GOOS)} {
				if !strings.Contains(out, want) {
					t.Errorf("warning lacks %q:\n%s", want, out)
				}
			}
		})
	}
}

// The listener warns, naming the fix, exactly when its sockets did not
// get listenerBuffer: without CAP_NET_ADMIN and with the kernel's limits
// under it (a root test process gets them past any limit).
func TestListenerBufferWarning(t *testing.T) {
	s := startServer(t, testConfig())
	limitsSuffice := true
	for _, name := range []string{"rmem_max", "wmem_max"} {
		b, err := os.ReadFile("/proc/sys/net/core/" + name)
		if err != nil {
			t.Fatal(err)
		}
		n, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			t.Fatal(err)
		}
		limitsSuffice = limitsSuffice && n >= listenerBuffer
	}
	netAdmin := hasNetAdmin(t)
	wantWarning := !netAdmin && !limitsSuffice
	warned := strings.Contains(s.logs.String(), "UDP listener buffers are smaller than asked")
	if warned != wantWarning || (warned && !strings.Contains(s.logs.String(), "net.core.rmem_max")) {
		t.Fatalf("warned = %v, want %v (CAP_NET_ADMIN %v, limits suffice %v); log:\n%s", warned, wantWarning, netAdmin, limitsSuffice, s.logs.String())
	}
}

// The warning's fix names the limit of the system it runs on.
func TestBufferLimitFix(t *testing.T) {
	for _, tc := range []struct{ goos, want string }{
		{"linux", "net.core.rmem_max and net.core.wmem_max to 4194304 (systemd/99-callbox.conf"},
		{"freebsd", "kern.ipc.maxsockbuf above 4194304"},
		{"darwin", "kern.ipc.maxsockbuf above 4194304"},
	} {
		if got := bufferLimitFix(tc.goos); !strings.Contains(got, tc.want) {
			t.Errorf("%s: %q, want it to contain %q", tc.goos, got, tc.want)
		}
	}
}

// hasNetAdmin reports whether this process holds CAP_NET_ADMIN (what
// SO_RCVBUFFORCE needs), from CapEff in /proc/self/status.
func hasNetAdmin(t *testing.T) bool {
	t.Helper()
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(status)) {
		if hex, ok := strings.CutPrefix(line, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(hex), 16, 64)
			if err != nil {
				t.Fatalf("CapEff %q: %v", hex, err)
			}
			return caps&(1<<unix.CAP_NET_ADMIN) != 0
		}
	}
	t.Fatal("no CapEff in /proc/self/status")
	return false
}
