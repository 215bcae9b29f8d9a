//go:build unix

package signal

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

// tcpPair is a real loopback TCP connection: the hub's side and the peer's.
func tcpPair(t *testing.T) (server, peer net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close(); peer.Close() })
	return server, peer
}

// TestParkSwallowsPongs: the parked reader takes the empty pongs answering
// our pings off the socket itself and leaves everything else for gorilla.
func TestParkSwallowsPongs(t *testing.T) {
	pong := []byte{0x8A, 0x80, 1, 2, 3, 4}
	text := []byte{0x81, 0x82, 1, 2, 3, 4, 'h' ^ 1, 'i' ^ 2}
	pongWithData := []byte{0x8A, 0x81, 1, 2, 3, 4, 'x'}
	cat := func(bs ...[]byte) []byte { return bytes.Join(bs, nil) }
	for _, tc := range []struct {
		name      string
		sent      []byte
		left      []byte // what gorilla must still find
		sawPong   bool
		readyPeek bool // readableNow before waitReadable
	}{
		{"text", text, text, false, true},
		{"pong then text", cat(pong, text), text, true, false},
		{"two pongs then text", cat(pong, pong, text), text, true, false},
		{"text then pong", cat(text, pong), cat(text, pong), false, true},
		{"pong with payload is gorilla's", pongWithData, pongWithData, false, true},
		{"half a pong is gorilla's", pong[:3], pong[:3], false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			server, peer := tcpPair(t)
			c := &client{raw: rawConn(server)}
			if c.raw == nil {
				t.Skip("no raw socket on this platform")
			}
			if _, err := peer.Write(tc.sent); err != nil {
				t.Fatal(err)
			}
			// Wait until the bytes have arrived, so readableNow sees them.
			probe := make([]byte, len(tc.sent))
			for {
				n := 0
				c.raw.Control(func(fd uintptr) { n, _, _ = recvPeek(fd, probe) })
				if n == len(tc.sent) {
					break
				}
				time.Sleep(time.Millisecond)
			}
			if got := c.readableNow(); got != tc.readyPeek {
				t.Fatalf("readableNow = %v, want %v", got, tc.readyPeek)
			}
			if err := c.waitReadable(); err != nil {
				t.Fatal(err)
			}
			if got := c.lastRead.Load() != 0; got != tc.sawPong {
				t.Fatalf("pong seen = %v, want %v", got, tc.sawPong)
			}
			peer.Close()
			rest, err := io.ReadAll(server)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(rest, tc.left) {
				t.Fatalf("left on the socket % x, want % x", rest, tc.left)
			}
		})
	}
}

func TestParkEOF(t *testing.T) {
	server, peer := tcpPair(t)
	c := &client{raw: rawConn(server)}
	if c.raw == nil {
		t.Skip("no raw socket on this platform")
	}
	peer.Close()
	// EOF is for gorilla to find: waitReadable returns without error.
	if err := c.waitReadable(); err != nil {
		t.Fatal(err)
	}
}
