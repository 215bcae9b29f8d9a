package turnserver

import (
	"net"
	"net/netip"

	"github.com/pion/turn/v4"
)

// events reports pion's events to the allocation table, the relays and the
// data plane; stream is the TCP or TLS listener of that pion server and udp
// its UDP socket, one of them nil.
func (s *Server) events(stream *tcpListener, udp *udpListener) turn.EventHandler {
	relay := func(a net.Addr) *relayConn { return s.relays.get(addrPortOf(a).Port()) }
	return turn.EventHandler{
		OnAllocationCreated: func(src, dst net.Addr, _, username, _ string, relayAddr net.Addr, _ int) {
			s.allocs.created(src, dst, username, relayAddr)
			if stream != nil {
				stream.allocation(src, true)
			}
			if rc := relay(relayAddr); udp != nil && rc != nil {
				udp.allocationCreated(addrPortOf(src), rc)
			}
		},
		OnAllocationDeleted: func(src, dst net.Addr, _, _, _ string) {
			s.allocs.deleted(src, dst)
			if stream != nil {
				stream.allocation(src, false)
			}
			if udp != nil {
				udp.allocationDeleted(addrPortOf(src))
			}
		},
		OnPermissionCreated: func(_, _ net.Addr, _, _, _ string, relayAddr net.Addr, peer net.IP) {
			if rc := relay(relayAddr); rc != nil {
				if ip, ok := netip.AddrFromSlice(peer); ok {
					rc.addPeer(ip)
				}
			}
		},
		OnPermissionDeleted: func(_, _ net.Addr, _, _, _ string, relayAddr net.Addr, peer net.IP) {
			if rc := relay(relayAddr); rc != nil {
				if ip, ok := netip.AddrFromSlice(peer); ok {
					rc.removePeer(ip)
				}
			}
		},
		OnChannelCreated: func(_, _ net.Addr, _, _, _ string, relayAddr, peer net.Addr, number uint16) {
			if rc := relay(relayAddr); rc != nil {
				rc.addChannel(number, addrPortOf(peer))
			}
		},
		OnChannelDeleted: func(_, _ net.Addr, _, _, _ string, relayAddr, _ net.Addr, number uint16) {
			if rc := relay(relayAddr); rc != nil {
				rc.removeChannel(number)
			}
		},
	}
}
