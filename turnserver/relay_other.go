//go:build !linux

package turnserver

import "net/netip"

// relayRx: without recvmmsg the relay reads one datagram at a time.
type relayRx struct{ io *dgram }

func (c *relayConn) initRx() { c.rx.io = newDgram() }

// readData returns the next peer datagram that pion must handle, in p;
// the others (refused, or relayed as ChannelData here) never leave.
func (c *relayConn) readData(p []byte) (int, netip.AddrPort, error) {
	for {
		route := c.route.Load()
		off := 0
		if route != nil {
			off = channelHeader
		}
		n, src, trunc, err := c.rx.io.recvFrom(c.sock, p[off:])
		if err != nil {
			return 0, src, err
		}
		if trunc || !c.admitIn(src, n) {
			continue
		}
		if route != nil {
			if number, ok := c.channelByPeer(src); ok {
				c.rx.io.sendTo(route.out.sock, frameChannelData(p, number, n), route.addr) //nolint:errcheck // best effort
				continue
			}
		}
		return copy(p, p[off:off+n]), src, nil
	}
}
