//go:build linux

package e2e

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/pion/stun/v3"
)

// The routers behave as their names say, checked with STUN from behind
// each before any call is trusted to them: the mapping (the same public
// port for two destinations, or not), the filtering (whether a reply from
// a port the client never sent to gets in), and the firewall's ports.
func TestNATRouters(t *testing.T) {
	n := newNatNet(t)
	probe := startProbe(t, n)
	tests := []struct {
		kind natKind
		// sameMapping: one public address for both destinations
		// (endpoint-independent mapping); open: a reply from elsewhere gets in.
		sameMapping, open, udp, tcpOther bool
	}{
		{natNone, true, true, true, true},
		{natFullCone, true, true, true, true},
		{natPortRestr, true, false, true, true},
		{natSymmetric, false, false, true, true},
		{natFirewall, false, false, false, false},
	}
	for _, tt := range tests {
		t.Run(string(tt.kind), func(t *testing.T) {
			t.Parallel()
			c, err := n.addClient(tt.kind)
			if err != nil {
				t.Fatal(err)
			}
			got, err := probe.run(c)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: %s", tt.kind, got)
			if got.udp != tt.udp {
				t.Fatalf("UDP answered: %v, want %v", got.udp, tt.udp)
			}
			if !got.tcp443 {
				t.Error("TCP to port 443 does not get through")
			}
			if got.tcpOther != tt.tcpOther {
				t.Errorf("TCP to port %d gets through: %v, want %v", callboxTURN, got.tcpOther, tt.tcpOther)
			}
			if !tt.udp {
				return
			}
			if got.first.Addr() != c.wan {
				t.Errorf("mapped address %s, want the router's %s", got.first, c.wan)
			}
			if same := got.first == got.second; same != tt.sameMapping {
				t.Errorf("mapped %s then %s: same = %v, want %v", got.first, got.second, same, tt.sameMapping)
			}
			if got.open != tt.open {
				t.Errorf("a reply from a port never sent to got in: %v, want %v", got.open, tt.open)
			}
		})
	}
	// The fault TestNATFaults injects: a cut uplink lets nothing through,
	// and everything again once restored.
	t.Run("uplink cut", func(t *testing.T) {
		c, err := n.addClient(natPortRestr)
		if err != nil {
			t.Fatal(err)
		}
		for _, up := range []bool{false, true} {
			if err := c.setUplink(up); err != nil {
				t.Fatal(err)
			}
			got, err := probe.run(c)
			if err != nil {
				t.Fatal(err)
			}
			if got.udp != up || got.tcp443 != up || got.tcpOther != up {
				t.Errorf("uplink up = %v: %s", up, got)
			}
		}
	})
}

// probe is a STUN responder in the internet namespace on two ports, and
// TCP listeners on 443 and on callbox's TURN port. Each binding request
// is answered from the port it came to, and also from the other port,
// which the client never sent to.
type probe struct {
	udp [2]*net.UDPConn
	wg  sync.WaitGroup
}

// probeResult is what a client behind a router saw.
type probeResult struct {
	udp           bool           // any STUN answer
	first, second netip.AddrPort // mapped address towards port 0, then port 1
	open          bool           // the other port's answer got in before we sent to it
	tcp443        bool
	tcpOther      bool
	localPort     uint16
	answers       [2][]netip.AddrPort // where each probe's answers came from
	tries         [2]int              // requests sent per probe
}

func (r probeResult) String() string {
	return fmt.Sprintf("udp=%v mapped %s then %s (local port %d, answers %v after %v requests) open=%v tcp443=%v tcp%d=%v",
		r.udp, r.first, r.second, r.localPort, r.answers, r.tries, r.open, r.tcp443, callboxTURN, r.tcpOther)
}

func startProbe(t *testing.T, n *natNet) *probe {
	t.Helper()
	p := &probe{}
	var lns []net.Listener
	err := inNS(n.inet, func() error {
		for i := range p.udp {
			c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(callboxIP, uint16(3480+i))))
			if err != nil {
				return err
			}
			p.udp[i] = c
		}
		for _, port := range []int{callboxHTTPS, callboxTURN} {
			ln, err := net.Listen("tcp4", fmt.Sprintf("%s:%d", callboxIP, port))
			if err != nil {
				return err
			}
			lns = append(lns, ln)
		}
		return nil
	})
	t.Cleanup(func() {
		for _, c := range p.udp {
			if c != nil {
				c.Close()
			}
		}
		for _, ln := range lns {
			ln.Close()
		}
		p.wg.Wait()
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, ln := range lns {
		p.wg.Go(func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		})
	}
	for i := range p.udp {
		p.wg.Go(func() { p.answer(i) })
	}
	return p
}

func (p *probe) answer(i int) {
	buf := make([]byte, 1500)
	for {
		n, from, err := p.udp[i].ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		req := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
		if req.Decode() != nil || req.Type != stun.BindingRequest {
			continue
		}
		resp, err := stun.Build(req, stun.BindingSuccess,
			&stun.XORMappedAddress{IP: from.Addr().AsSlice(), Port: int(from.Port())}, stun.Fingerprint)
		if err != nil {
			continue
		}
		p.udp[i].WriteToUDPAddrPort(resp.Raw, from)
		p.udp[1-i].WriteToUDPAddrPort(resp.Raw, from)
	}
}

// run probes from inside c's namespace.
func (p *probe) run(c *natClient) (probeResult, error) {
	var r probeResult
	var conn *net.UDPConn
	err := inNS(c.ns, func() (err error) {
		conn, err = net.ListenUDP("udp4", nil)
		if err != nil {
			return err
		}
		for port, ok := range map[int]*bool{callboxHTTPS: &r.tcp443, callboxTURN: &r.tcpOther} {
			tc, err := net.DialTimeout("tcp4", fmt.Sprintf("%s:%d", callboxIP, port), 500*time.Millisecond)
			if err == nil {
				tc.Close()
				*ok = true
			}
		}
		return nil
	})
	if err != nil {
		return r, err
	}
	defer conn.Close()
	r.localPort = uint16(conn.LocalAddr().(*net.UDPAddr).Port)
	var froms [2][]netip.AddrPort
	var mapped [2]netip.AddrPort
	for i := range p.udp {
		req := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
		to := p.udp[i].LocalAddr().(*net.UDPAddr).AddrPort()
		buf := make([]byte, 1500)
		// Sent again while the answer from to is missing (UDP, and a busy
		// machine under the race detector can take longer than one
		// deadline); once it is in, the other socket's answer, if it gets
		// in at all, arrives well within the last deadline.
		for try := 0; try < 5 && !mapped[i].IsValid(); try++ {
			if _, err := conn.WriteToUDPAddrPort(req.Raw, to); err != nil {
				return r, err
			}
			r.tries[i]++
			conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			for {
				n, from, err := conn.ReadFromUDPAddrPort(buf)
				if err != nil {
					var ne net.Error
					if errors.As(err, &ne) && ne.Timeout() {
						break
					}
					return r, err
				}
				m := &stun.Message{Raw: buf[:n]}
				var xor stun.XORMappedAddress
				if m.Decode() != nil || m.TransactionID != req.TransactionID || xor.GetFrom(m) != nil {
					continue
				}
				r.udp = true
				froms[i] = append(froms[i], from)
				if from == to && !mapped[i].IsValid() {
					ip, _ := netip.AddrFromSlice(xor.IP)
					mapped[i] = netip.AddrPortFrom(ip.Unmap(), uint16(xor.Port))
					conn.SetReadDeadline(time.Now().Add(400 * time.Millisecond))
				}
			}
		}
	}
	r.first, r.second, r.answers = mapped[0], mapped[1], froms
	other := p.udp[1].LocalAddr().(*net.UDPAddr).AddrPort()
	for _, f := range froms[0] {
		r.open = r.open || f == other
	}
	return r, nil
}
