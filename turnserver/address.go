package turnserver

// Which address relays are advertised on, and whether clients beyond this
// host's network can reach it.

import (
	"fmt"
	"net"
	"net/netip"
)

// relayAddress is the address advertised in relay candidates: the public
// IP, else the listen IP, else (listening on all addresses) the host's
// address pickRelayAddress chooses. pion v4 relays over IPv4 only.
func relayAddress(publicIP string, listenIP netip.Addr) (netip.Addr, error) {
	if publicIP != "" {
		ip, err := netip.ParseAddr(publicIP)
		if err != nil || !ip.Unmap().Is4() {
			return netip.Addr{}, fmt.Errorf("turnserver: turn.public_ip %q: relays are IPv4, want an IPv4 address", publicIP)
		}
		return ip.Unmap(), nil
	}
	if listenIP.Is4() && !listenIP.IsUnspecified() {
		return listenIP, nil
	}
	if listenIP.IsLoopback() {
		return netip.AddrFrom4([4]byte{127, 0, 0, 1}), nil
	}
	return pickRelayAddress(HostAddrs()), nil
}

// pickRelayAddress chooses among the host's addresses: a public IPv4
// address first (a VPS with a private second interface must not advertise
// that one), else a private one (behind 1:1 NAT: AddressProblem then says
// to set turn.public_ip), else IPv4 loopback.
func pickRelayAddress(addrs []netip.Addr) netip.Addr {
	var private netip.Addr
	for _, a := range addrs {
		if !a.Is4() || a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsUnspecified() {
			continue
		}
		if !isPrivate4(a) {
			return a
		}
		if !private.IsValid() {
			private = a
		}
	}
	if private.IsValid() {
		return private
	}
	return netip.AddrFrom4([4]byte{127, 0, 0, 1})
}

// isPrivate4 is RFC 1918 or carrier-grade NAT (RFC 6598) space: not
// reachable from the internet.
func isPrivate4(a netip.Addr) bool {
	return a.IsPrivate() || cgnat.Contains(a)
}

var cgnat = netip.MustParsePrefix("100.64.0.0/10")

// HostAddrs are the addresses of this host's interfaces, IPv4 unmapped;
// nil when they cannot be listed.
func HostAddrs() []netip.Addr {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, a := range addrs {
		if pn, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(pn.IP); ok {
				out = append(out, ip.Unmap())
			}
		}
	}
	return out
}

// AddressProblem explains why clients beyond this host's network cannot
// reach its relays (the relay address is private or loopback although the
// listener is not: a VPS behind 1:1 NAT without turn.public_ip), or is
// empty. /api/info shows it, so the /check page can too.
func (s *Server) AddressProblem() string {
	if !unreachableRelay(s.listenIP, s.relayIP) {
		return ""
	}
	return fmt.Sprintf("relay address %s is private or loopback but the listener %s is not: clients outside this network cannot reach relays. "+
		"Set turn.public_ip to this host's public IPv4 address", s.relayIP, s.udpAddr)
}

// RelayAddress is the address advertised in relay candidates.
func (s *Server) RelayAddress() netip.Addr { return s.relayIP }

// unreachableRelay reports a relay address that clients beyond this host's
// network cannot reach although the listener invites them.
func unreachableRelay(listenIP, relayIP netip.Addr) bool {
	return !listenIP.IsLoopback() && (isPrivate4(relayIP) || relayIP.IsLoopback() || relayIP.IsLinkLocalUnicast())
}
