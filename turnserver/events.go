package turnserver

import (
	"net"
	"net/netip"

	"github.com/pion/turn/v4"
)

// events reports pion's events to the allocation table and the relays;
// stream is the TCP or TLS listener of that pion server, nil for UDP.
func (s *Server) events(stream *tcpListener) turn.EventHandler {
	return turn.EventHandler{
		OnAllocationCreated: func(src, dst net.Addr, _, username, _ string, relay net.Addr, _ int) {
			s.allocs.created(src, dst, username, relay)
			if stream != nil {
				stream.allocation(src, true)
			}
		},
		OnAllocationDeleted: func(src, dst net.Addr, _, _, _ string) {
			s.allocs.deleted(src, dst)
			if stream != nil {
				stream.allocation(src, false)
			}
		},
		OnPermissionCreated: func(_, _ net.Addr, _, _, _ string, relay net.Addr, peer net.IP) {
			if rc := s.relays.get(uint16(addrPortOf(relay).Port())); rc != nil {
				if ip, ok := netip.AddrFromSlice(peer); ok {
					rc.addPeer(ip)
				}
			}
		},
		OnPermissionDeleted: func(_, _ net.Addr, _, _, _ string, relay net.Addr, peer net.IP) {
			if rc := s.relays.get(uint16(addrPortOf(relay).Port())); rc != nil {
				if ip, ok := netip.AddrFromSlice(peer); ok {
					rc.removePeer(ip)
				}
			}
		},
	}
}
