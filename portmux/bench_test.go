package portmux

import (
	"crypto/tls"
	"encoding/binary"
	"io"
	"testing"
)

func BenchmarkClassify(b *testing.B) {
	stun := make([]byte, 8)
	binary.BigEndian.PutUint16(stun[0:2], 0x0003)
	copy(stun[4:], magicCookie[:])
	get := []byte("GET /ws HTTP/1.1")
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if i&1 == 0 {
			Classify(stun)
		} else {
			Classify(get)
		}
	}
}

// BenchmarkConnection is one TURN-over-TLS connection through the mux:
// TCP accept, TLS handshake (ECDSA P-256, TLS 1.3), the 8-byte peek and
// the hand-over, measured from the client's dial to the first echoed
// STUN header.
func BenchmarkConnection(b *testing.B) {
	m, clientTLS := startMuxB(b)
	addr := m.Addr().String()
	msg := make([]byte, 20)
	binary.BigEndian.PutUint16(msg[0:2], 0x0001)
	copy(msg[4:8], magicCookie[:])
	got := make([]byte, len(msg))
	b.ReportAllocs()
	for b.Loop() {
		c, err := tls.Dial("tcp", addr, clientTLS)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, got); err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}
