package turnserver

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v3"
)

// benchRelay is a relayConn on a real loopback socket and a peer socket
// with a permission on it.
func benchRelay(b *testing.B, bitrate float64) (*relayConn, *net.UDPConn) {
	b.Helper()
	rs, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	peer, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	guard := newRelayGuard(3478, netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.1"),
		[]netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:8080"), netip.MustParseAddrPort("127.0.0.1:9478")})
	loop := newTestLoop(b)
	rc, err := newRelayConn(rs, guard, bitrate, nil, loop)
	if err != nil {
		b.Fatal(err)
	}
	loop.start()
	rc.addPeer(netip.MustParseAddr("127.0.0.1"))
	b.Cleanup(func() {
		rc.Close()
		peer.Close()
	})
	return rc, peer
}

// BenchmarkRelayAdmit is the wrappers' own per-packet cost, both
// directions, without the system calls: what callbox adds to pion.
func BenchmarkRelayAdmit(b *testing.B) {
	for _, bc := range []struct {
		name    string
		bitrate float64
	}{{"unlimited", 0}, {"bitrate", 1e12}} {
		b.Run(bc.name, func(b *testing.B) {
			rc, _ := benchRelay(b, bc.bitrate)
			dst := netip.MustParseAddrPort("127.0.0.1:50000")
			b.ReportAllocs()
			for b.Loop() {
				if !rc.admitOut(dst, 1000) || !rc.admitIn(dst, 1000) {
					b.Fatal("dropped")
				}
			}
		})
	}
}

// BenchmarkRelayWriteTo is client→peer through the wrapper: one sendto.
func BenchmarkRelayWriteTo(b *testing.B) {
	rc, peer := benchRelay(b, 0)
	to := peer.LocalAddr()
	payload := make([]byte, 200)
	b.ReportAllocs()
	b.SetBytes(int64(len(payload)))
	for b.Loop() {
		if _, err := rc.WriteTo(payload, to); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRelayReadFrom is peer→client through the wrapper; each
// iteration includes the peer's sendto that feeds it.
func BenchmarkRelayReadFrom(b *testing.B) {
	rc, peer := benchRelay(b, 1e12)
	relayAddr := rc.LocalAddr().(*net.UDPAddr).AddrPort()
	payload := make([]byte, 200)
	buf := make([]byte, 1600)
	b.ReportAllocs()
	b.SetBytes(int64(len(payload)))
	for b.Loop() {
		if _, err := peer.WriteToUDPAddrPort(payload, relayAddr); err != nil {
			b.Fatal(err)
		}
		if _, _, err := rc.ReadFrom(buf); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPeerPolicy(b *testing.B) {
	p := newPeerPolicy(testConfig())
	addrs := []netip.Addr{netip.MustParseAddr("8.8.8.8"), netip.MustParseAddr("::ffff:10.0.0.1"), netip.MustParseAddr("2606:4700::1111")}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		p.check(addrs[i%len(addrs)])
		i++
	}
}

// BenchmarkInspectRequest is the control-path price of trying every
// secret: a Refresh signed with the second of two secrets.
func BenchmarkInspectRequest(b *testing.B) {
	a := testAuthenticator(b)
	frame := signedRequest(b, testSecret2, stun.MethodRefresh, lifetime(time.Minute))
	src := netip.MustParseAddrPort("192.0.2.1:4000")
	local := netip.MustParseAddrPort("127.0.0.1:3478")
	var in inspector
	b.ReportAllocs()
	for b.Loop() {
		a.inspect(&in, frame, false, src, local)
		if v := in.slot.take(); v.reason != "" {
			b.Fatal(v.reason)
		}
	}
}
