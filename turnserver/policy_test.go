package turnserver

import (
	"net/netip"
	"testing"

	"github.com/callbox/callbox/config"
)

func TestPeerPolicyBuiltin(t *testing.T) {
	p := newPeerPolicy(config.TURN{})
	cases := []struct {
		addr   string
		reason string // "" means allowed
	}{
		// loopback, including every IPv6 form that embeds it
		{"127.0.0.1", denyLoopback},
		{"127.255.255.254", denyLoopback},
		{"::1", denyLoopback},
		{"::ffff:127.0.0.1", denyLoopback},
		{"64:ff9b::7f00:1", denyLoopback},
		{"2002:7f00:1::", denyLoopback},
		{"::127.0.0.1", denyLoopback}, // IPv4-compatible
		// this network
		{"0.0.0.0", denyThisNetwork},
		{"0.1.2.3", denyThisNetwork},
		{"::", denyThisNetwork},
		{"::ffff:0.0.0.0", denyThisNetwork},
		// RFC 1918
		{"10.0.0.1", denyPrivate},
		{"10.255.255.255", denyPrivate},
		{"172.16.0.1", denyPrivate},
		{"172.31.255.255", denyPrivate},
		{"192.168.0.1", denyPrivate},
		{"::ffff:192.168.1.1", denyPrivate},
		{"64:ff9b::a00:1", denyPrivate},
		{"2002:c0a8:101::1", denyPrivate},
		// CGNAT, link-local, metadata
		{"100.64.0.1", denyCGNAT},
		{"100.127.255.255", denyCGNAT},
		{"169.254.169.254", denyLinkLocal},
		{"::ffff:169.254.169.254", denyLinkLocal},
		{"fe80::1", denyLinkLocal},
		{"fe80::1%eth0", denyLinkLocal},
		// ULA, multicast, reserved, broadcast
		{"fd00::1", denyULA},
		{"fc00::1", denyULA},
		{"224.0.0.1", denyMulticast},
		{"239.255.255.250", denyMulticast},
		{"ff02::1", denyMulticast},
		{"240.0.0.1", denyReserved},
		{"255.255.255.255", denyReserved},
		{"192.88.99.1", denyReserved},
		{"fec0::1", denyReserved},
		{"100::1", denyReserved},
		{"64:ff9b:1::1", denyReserved},
		// documentation, benchmarking, IETF
		{"192.0.2.1", denyDocumentation},
		{"198.51.100.1", denyDocumentation},
		{"203.0.113.1", denyDocumentation},
		{"2001:db8::1", denyDocumentation},
		{"3fff::1", denyDocumentation},
		{"198.18.0.1", denyBenchmarking},
		{"198.19.255.255", denyBenchmarking},
		{"192.0.0.8", denyIETF},
		{"2001::1", denyIETF}, // Teredo
		// public addresses, direct and embedded
		{"8.8.8.8", ""},
		{"1.1.1.1", ""},
		{"172.32.0.1", ""},
		{"100.128.0.1", ""},
		{"198.20.0.1", ""},
		{"::ffff:8.8.8.8", ""},
		{"64:ff9b::808:808", ""},
		{"2002:808:808::1", ""},
		{"2606:4700::1111", ""},
	}
	for _, tc := range cases {
		t.Run(tc.addr, func(t *testing.T) {
			ok, reason := p.check(netip.MustParseAddr(tc.addr))
			if ok != (tc.reason == "") || reason != tc.reason {
				t.Errorf("check(%s) = %v, %q; want reason %q", tc.addr, ok, reason, tc.reason)
			}
		})
	}
	if ok, reason := p.check(netip.Addr{}); ok || reason != denyInvalid {
		t.Errorf("zero address: %v, %q", ok, reason)
	}
}

func TestPeerPolicyConfig(t *testing.T) {
	cases := []struct {
		name   string
		cfg    config.TURN
		addr   string
		reason string
	}{
		{"loopback switch on", config.TURN{AllowLoopbackPeers: true}, "127.0.0.1", ""},
		{"loopback switch covers ::1", config.TURN{AllowLoopbackPeers: true}, "::1", ""},
		{"loopback switch covers mapped", config.TURN{AllowLoopbackPeers: true}, "::ffff:127.0.0.5", ""},
		{"loopback switch leaves private", config.TURN{AllowLoopbackPeers: true}, "10.0.0.1", denyPrivate},
		{"allowed overrides builtin", config.TURN{AllowedPeers: mustPrefixes("10.0.0.0/8")}, "10.1.2.3", ""},
		{"allowed covers mapped form", config.TURN{AllowedPeers: mustPrefixes("10.0.0.0/8")}, "::ffff:10.1.2.3", ""},
		{"allowed written mapped", config.TURN{AllowedPeers: mustPrefixes("::ffff:10.0.0.0/104")}, "10.9.9.9", ""},
		{"allowed is narrow", config.TURN{AllowedPeers: mustPrefixes("10.0.0.0/24")}, "10.0.1.1", denyPrivate},
		{"denied adds", config.TURN{DeniedPeers: mustPrefixes("8.8.8.0/24")}, "8.8.8.8", denyConfigured},
		{"denied covers NAT64 form", config.TURN{DeniedPeers: mustPrefixes("8.8.8.0/24")}, "64:ff9b::808:808", denyConfigured},
		{"longer deny beats allow", config.TURN{AllowedPeers: mustPrefixes("10.0.0.0/8"), DeniedPeers: mustPrefixes("10.0.0.1/32")}, "10.0.0.1", denyConfigured},
		{"longer allow beats deny", config.TURN{AllowedPeers: mustPrefixes("8.8.8.8/32"), DeniedPeers: mustPrefixes("8.0.0.0/8")}, "8.8.8.8", ""},
		{"tie denies", config.TURN{AllowedPeers: mustPrefixes("8.8.8.0/24"), DeniedPeers: mustPrefixes("8.8.8.0/24")}, "8.8.8.8", denyConfigured},
		{"denied beats loopback switch", config.TURN{AllowLoopbackPeers: true, DeniedPeers: mustPrefixes("127.0.0.0/8")}, "127.0.0.1", denyConfigured},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ok, reason := newPeerPolicy(tc.cfg).check(netip.MustParseAddr(tc.addr))
			if ok != (tc.reason == "") || reason != tc.reason {
				t.Errorf("check(%s) = %v, %q; want reason %q", tc.addr, ok, reason, tc.reason)
			}
		})
	}
}

func TestRelayGuard(t *testing.T) {
	g := newRelayGuard(3478, netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("198.51.100.7"),
		[]netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:8080"), netip.MustParseAddrPort("0.0.0.0:9478")})
	cases := []struct {
		dst     string
		blocked bool
	}{
		{"127.0.0.1:3478", true},
		{"127.0.0.1:8080", true},
		{"127.0.0.2:8080", true},
		{"0.0.0.0:9478", true},
		{"198.51.100.7:3478", true},
		{"[::ffff:127.0.0.1]:8080", true},
		{"[::1]:3478", true},
		{"127.0.0.1:50000", false}, // another allocation's relay
		{"198.51.100.7:50000", false},
		{"8.8.8.8:3478", false}, // someone else's TURN server
		{"8.8.8.8:8080", false},
	}
	for _, tc := range cases {
		t.Run(tc.dst, func(t *testing.T) {
			if got := g.blocks(netip.MustParseAddrPort(tc.dst)); got != tc.blocked {
				t.Errorf("blocks(%s) = %v, want %v", tc.dst, got, tc.blocked)
			}
		})
	}
}

func FuzzPeerPolicy(f *testing.F) {
	for _, s := range []string{"127.0.0.1", "::ffff:127.0.0.1", "64:ff9b::7f00:1", "2002:a00:1::", "::7f00:1", "8.8.8.8", "fe80::1%eth0", "::", "2001:db8::1"} {
		a := netip.MustParseAddr(s)
		b := a.As16()
		f.Add(b[:])
	}
	p := newPeerPolicy(config.TURN{AllowedPeers: mustPrefixes("10.1.0.0/16"), DeniedPeers: mustPrefixes("8.8.4.0/24")})
	f.Fuzz(func(t *testing.T, raw []byte) {
		a, ok := netip.AddrFromSlice(raw)
		if !ok {
			return
		}
		allowed, reason := p.check(a)
		if allowed != (reason == "") {
			t.Fatalf("check(%s) = %v with reason %q", a, allowed, reason)
		}
		n := normalise(a)
		// Every way of writing the same IPv4 address gets one answer.
		if n.Is4() {
			v4ok, v4reason := p.check(n)
			if allowed != v4ok || reason != v4reason {
				t.Fatalf("check(%s) = %v %q but check(%s) = %v %q", a, allowed, reason, n, v4ok, v4reason)
			}
			mapped := netip.AddrFrom16(n.As16())
			if mok, mreason := p.check(mapped); mok != v4ok || mreason != v4reason {
				t.Fatalf("mapped %s: %v %q, IPv4 %s: %v %q", mapped, mok, mreason, n, v4ok, v4reason)
			}
		}
		// Nothing on loopback or private ranges ever passes unless the
		// allow list names it.
		if allowed && (n.IsLoopback() || n.IsPrivate() || n.IsLinkLocalUnicast() || n.IsUnspecified() || n.IsMulticast()) &&
			!netip.MustParsePrefix("10.1.0.0/16").Contains(n) {
			t.Fatalf("check(%s) (normalised %s) allowed", a, n)
		}
	})
}

func TestUnreachableRelayWarning(t *testing.T) {
	cases := []struct {
		listen, relay string
		warn          bool
	}{
		{"127.0.0.1", "127.0.0.1", false}, // local demo
		{"0.0.0.0", "10.0.0.5", true},     // VPS behind NAT without public_ip
		{"0.0.0.0", "100.64.1.1", true},   // CGNAT
		{"192.168.1.10", "192.168.1.10", true},
		{"0.0.0.0", "198.51.100.7", false},
		{"10.0.0.5", "203.0.113.9", false}, // public_ip set
		{"::1", "127.0.0.1", false},
	}
	for _, tc := range cases {
		t.Run(tc.listen+"->"+tc.relay, func(t *testing.T) {
			if got := unreachableRelay(netip.MustParseAddr(tc.listen), netip.MustParseAddr(tc.relay)); got != tc.warn {
				t.Errorf("unreachableRelay = %v, want %v", got, tc.warn)
			}
		})
	}
}
