package turnserver

// The data plane: ChannelData and STUN Binding handled by callbox's own
// socket wrappers without going through pion.
//
// pion keeps the control plane (allocations, permissions, channel
// bindings, auth, refresh, quotas) and reports every change through its
// EventHandler (events.go). From those events each relay conn learns its
// client (the UDP listener socket and address) and its channel bindings,
// and each UDP listener learns which relay conn serves each client. The
// UDP listener and relay sockets are read by the data plane's loop
// (loop_linux.go), which:
//
//   - client → peer: reads the listener socket (recvmmsg, many datagrams
//     per system call) and writes the payload of a ChannelData for a bound
//     channel straight to the relay socket, with the same checks as the
//     relay conn's WriteTo (admitOut); answers a Binding request from a
//     batch written with one sendmmsg;
//   - peer → client: reads the relay socket, applies the same checks as
//     before (admitIn), frames a datagram from a bound peer as ChannelData
//     in place and writes it to the client through the listener socket.
//
// Everything else (requests, Send and Data indications, unknown channels,
// TCP and TLS allocations' peer datagrams) reaches pion unchanged, through
// the queue of its listener or relay conn (queue.go). The lookup state
// follows pion's events synchronously, so a channel or permission that
// pion removes stops relaying here at the same moment.

import (
	"encoding/binary"
	"hash/crc32"
	"net/netip"
)

const (
	channelHeader = 4
	// pionMTU is pion's read buffer on listeners and relays (inboundMTU
	// and rtpMTU in pion/turn v4.1.4): a datagram this long or longer is
	// dropped by pion as possibly truncated, so the fast path leaves such
	// datagrams to pion.
	pionMTU = 1600
	// Channel numbers of RFC 5766 §11 as pion accepts them.
	minChannel = 0x4000
	maxChannel = 0x7FFF
)

// channelBinding is one bound channel of an allocation.
type channelBinding struct {
	number uint16
	peer   netip.AddrPort // unmapped
}

// clientRoute is where an allocation's client is reached: the UDP
// listener socket its requests came in on, and its address.
type clientRoute struct {
	out  *udpListener
	addr netip.AddrPort // unmapped
}

// parseChannelData checks a client datagram as ChannelData with a bound
// channel could be: a valid channel number and a length that fits.
func parseChannelData(p []byte) (number uint16, payload []byte, ok bool) {
	if len(p) < channelHeader || len(p) >= pionMTU {
		return 0, nil, false
	}
	number = binary.BigEndian.Uint16(p[0:2])
	n := int(binary.BigEndian.Uint16(p[2:4]))
	if number < minChannel || number > maxChannel || n > len(p)-channelHeader {
		return 0, nil, false
	}
	return number, p[channelHeader : channelHeader+n], true
}

// frameChannelData writes the ChannelData header for the n payload bytes
// that follow it in buf (which starts with channelHeader free bytes) and
// pads the message to a multiple of 4 bytes, as pion does, returning the
// framed message. buf must have room for the padding.
func frameChannelData(buf []byte, number uint16, n int) []byte {
	binary.BigEndian.PutUint16(buf[0:2], number)
	binary.BigEndian.PutUint16(buf[2:4], uint16(n))
	end := channelHeader + n
	padded := (end + 3) &^ 3
	clear(buf[end:padded])
	return buf[:padded]
}

// STUN Binding as pion answers it: a success response with
// XOR-MAPPED-ADDRESS and FINGERPRINT.
const (
	typeBindingRequest  = 0x0001
	typeBindingSuccess  = 0x0101
	attrXORMappedAddr   = 0x0020
	attrFingerprint     = 0x8028
	fingerprintXOR      = 0x5354554e
	bindingReplyMaxSize = 20 + 4 + 20 + 8 // header, XOR-MAPPED-ADDRESS (IPv6), FINGERPRINT
)

// isBindingRequest reports whether p is a well-formed STUN Binding
// request: the header, a length that matches the datagram, and attributes
// that tile the body exactly. pion decodes those too and answers any that
// decode, whatever the attributes.
func isBindingRequest(p []byte) bool {
	if !isSTUN(p) || binary.BigEndian.Uint16(p[0:2]) != typeBindingRequest {
		return false
	}
	size := int(binary.BigEndian.Uint16(p[2:4]))
	if size%4 != 0 || 20+size != len(p) {
		return false
	}
	for body := p[20:]; len(body) > 0; {
		if len(body) < 4 {
			return false
		}
		l := (int(binary.BigEndian.Uint16(body[2:4])) + 3) &^ 3
		if l > len(body)-4 {
			return false
		}
		body = body[4+l:]
	}
	return true
}

// bindingReply writes the success response to the Binding request req,
// seen from src, into out (at least bindingReplyMaxSize bytes) and returns
// it.
func bindingReply(out, req []byte, src netip.AddrPort) []byte {
	ip := src.Addr().Unmap()
	addrLen := 4
	family := byte(0x01)
	if ip.Is6() {
		addrLen, family = 16, 0x02
	}
	size := 4 + 4 + addrLen + 8 // XOR-MAPPED-ADDRESS, FINGERPRINT
	binary.BigEndian.PutUint16(out[0:2], typeBindingSuccess)
	binary.BigEndian.PutUint16(out[2:4], uint16(size))
	copy(out[4:20], req[4:20]) // magic cookie and transaction ID
	a := out[20:]
	binary.BigEndian.PutUint16(a[0:2], attrXORMappedAddr)
	binary.BigEndian.PutUint16(a[2:4], uint16(4+addrLen))
	a[4], a[5] = 0, family
	binary.BigEndian.PutUint16(a[6:8], src.Port()^uint16(magicCookie>>16))
	if ip.Is4() {
		b := ip.As4()
		binary.BigEndian.PutUint32(a[8:12], binary.BigEndian.Uint32(b[:])^magicCookie)
	} else {
		b := ip.As16()
		for i := range 16 {
			a[8+i] = b[i] ^ out[4+i] // cookie then transaction ID
		}
	}
	f := out[20+8+addrLen:]
	binary.BigEndian.PutUint16(f[0:2], attrFingerprint)
	binary.BigEndian.PutUint16(f[2:4], 4)
	end := 20 + size
	binary.BigEndian.PutUint32(f[4:8], crc32.ChecksumIEEE(out[:end-8])^fingerprintXOR)
	return out[:end]
}
