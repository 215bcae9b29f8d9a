package turnserver

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v3"

	"github.com/callbox/callbox/config"
)

// testAuthenticator is an authenticator with no server around it, for the
// parsers' unit and fuzz tests.
func testAuthenticator(t testing.TB) *authenticator {
	m, err := newMetrics(nil, newRelayRegistry())
	if err != nil {
		t.Fatal(err)
	}
	a := &authenticator{
		realm:       "callbox",
		maxLifetime: time.Hour,
		policy:      newPeerPolicy(config.TURN{}),
		allocs:      newAllocTable(0, 0, m, discardLogger()),
		metrics:     m,
		log:         discardLogger(),
		limiter:     newLogLimiter(),
	}
	secrets := []string{testSecret, testSecret2}
	a.secrets.Store(&secrets)
	return a
}

// signedRequest is a request as a client holding secret would send it.
func signedRequest(t testing.TB, secret string, method stun.Method, attrs ...stun.Setter) []byte {
	u, p := MintCredentials(secret, "alice", time.Now().Add(time.Hour))
	setters := []stun.Setter{stun.TransactionID, stun.NewType(method, stun.ClassRequest)}
	setters = append(setters, attrs...)
	setters = append(setters, stun.NewUsername(u), stun.NewRealm("callbox"), stun.NewNonce("nonce"),
		stun.NewLongTermIntegrity(u, "callbox", p), stun.Fingerprint)
	m, err := stun.Build(setters...)
	if err != nil {
		t.Fatal(err)
	}
	return m.Raw
}

func TestInspectVerdicts(t *testing.T) {
	a := testAuthenticator(t)
	src := netip.MustParseAddrPort("192.0.2.1:4000")
	local := netip.MustParseAddrPort("127.0.0.1:3478")
	cases := []struct {
		name      string
		frame     []byte
		verdict   bool // a verdict is recorded
		reason    string
		wantReply bool
	}{
		{"allocate, first secret", signedRequest(t, testSecret, stun.MethodAllocate, requestedUDP()), true, "", false},
		{"allocate, second secret", signedRequest(t, testSecret2, stun.MethodAllocate, requestedUDP()), true, "", false},
		{"allocate, unknown secret", signedRequest(t, "unknown-secret-0000000", stun.MethodAllocate, requestedUDP()), true, authIntegrity, false},
		{"permission to private peer", signedRequest(t, testSecret, stun.MethodCreatePermission, peerAttr(net.IPv4(10, 0, 0, 1), 1)), true, "", true},
		{"permission to public peer", signedRequest(t, testSecret, stun.MethodCreatePermission, peerAttr(net.IPv4(8, 8, 8, 8), 1)), true, "", false},
		{"second peer private", signedRequest(t, testSecret, stun.MethodCreatePermission, peerAttr(net.IPv4(8, 8, 8, 8), 1), peerAttr(net.IPv4(127, 0, 0, 1), 1)), true, "", true},
		{"binding", stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw, false, "", false},
		{"unsigned allocate", stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest)).Raw, false, "", false},
		{"channel data", []byte{0x40, 0, 0, 4, 1, 2, 3, 4}, false, "", false},
		{"short", []byte{0, 3, 0}, false, "", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var in inspector
			reply := a.inspect(&in, tc.frame, false, src, local)
			v := in.slot.take()
			// A request answered here leaves no verdict: pion never sees it.
			wantSet := tc.verdict && !tc.wantReply
			if v.set != wantSet || v.reason != tc.reason {
				t.Errorf("verdict set=%v reason=%q, want set=%v reason=%q", v.set, v.reason, wantSet, tc.reason)
			}
			if (reply != nil) != tc.wantReply {
				t.Fatalf("reply = %x, want one: %v", reply, tc.wantReply)
			}
			if reply != nil {
				m := &stun.Message{Raw: reply}
				var code stun.ErrorCodeAttribute
				if err := m.Decode(); err != nil || code.GetFrom(m) != nil || code.Code != stun.CodeForbidden {
					t.Errorf("reply is not a 403: %v %v", err, code)
				}
			}
		})
	}
}

func FuzzInspect(f *testing.F) {
	f.Add(signedRequest(f, testSecret, stun.MethodAllocate, requestedUDP()))
	f.Add(signedRequest(f, testSecret2, stun.MethodRefresh, lifetime(time.Minute)))
	f.Add(signedRequest(f, testSecret, stun.MethodCreatePermission, peerAttr(net.IPv4(10, 0, 0, 1), 1)))
	f.Add(signedRequest(f, testSecret, stun.MethodChannelBind, channelAttr(0x4000), peerAttr(net.ParseIP("::ffff:127.0.0.1"), 1)))
	f.Add(stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw)
	f.Add([]byte{0x40, 0, 0, 4, 1, 2, 3, 4})
	a := testAuthenticator(f)
	src := netip.MustParseAddrPort("192.0.2.1:4000")
	local := netip.MustParseAddrPort("127.0.0.1:3478")
	f.Fuzz(func(t *testing.T, frame []byte) {
		var in inspector
		orig := append([]byte(nil), frame...)
		reply := a.inspect(&in, frame, false, src, local)
		if !bytes.Equal(orig, frame) {
			t.Fatalf("inspect changed the frame pion will read")
		}
		v := in.slot.take()
		if v.set && v.reason == "" && v.key == nil {
			t.Fatalf("accepted verdict without a key")
		}
		if reply != nil {
			m := &stun.Message{Raw: reply}
			if err := m.Decode(); err != nil || m.Type.Class != stun.ClassErrorResponse {
				t.Fatalf("reply is not an error response: %v", err)
			}
		}
	})
}

// streamConn is a net.Conn whose reads come from a byte slice in chunks
// of at most chunk bytes, as TCP may deliver them.
type streamConn struct {
	net.Conn
	r     *bytes.Reader
	chunk int
	out   bytes.Buffer
}

func (c *streamConn) Read(p []byte) (int, error) {
	if len(p) > c.chunk {
		p = p[:c.chunk]
	}
	return c.r.Read(p)
}
func (c *streamConn) Write(p []byte) (int, error) { return c.out.Write(p) }
func (c *streamConn) Close() error                { return nil }

// readAllFrames drains a tcpConn with pion's STUNConn-sized reads.
func readAllFrames(a *authenticator, stream []byte, chunk, readSize int) (got, replies []byte, err error) {
	sc := &streamConn{r: bytes.NewReader(stream), chunk: max(chunk, 1)}
	l := newTCPListener(nil, a)
	c := &tcpConn{Conn: sc, owner: l, br: newTCPReader(sc)}
	buf := make([]byte, max(readSize, 1))
	for {
		n, err := c.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = nil
			}
			return got, sc.out.Bytes(), err
		}
	}
}

func TestTCPFraming(t *testing.T) {
	allowed := signedRequest(t, testSecret, stun.MethodCreatePermission, peerAttr(net.IPv4(8, 8, 8, 8), 1))
	denied := signedRequest(t, testSecret, stun.MethodCreatePermission, peerAttr(net.IPv4(10, 0, 0, 1), 1))
	channel := []byte{0x40, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5, 0, 0, 0} // 5 bytes padded to 8
	a := testAuthenticator(t)
	cases := []struct {
		name        string
		stream      []byte
		want        []byte
		wantReplies int
		wantErr     bool
	}{
		{"stun and channel data", join(allowed, channel, allowed), join(allowed, channel, allowed), 0, false},
		{"denied request answered here", join(channel, denied, allowed), join(channel, allowed), 1, false},
		{"garbage", join(allowed, []byte{0xC0, 0, 0, 0}), allowed, 0, true},
		{"bad magic cookie", join(channel, make([]byte, 20)), channel, 0, true},
	}
	for _, tc := range cases {
		for _, chunk := range []int{1, 3, 7, 64, 4096} {
			for _, readSize := range []int{5, 1600} {
				got, replies, err := readAllFrames(a, tc.stream, chunk, readSize)
				if (err != nil) != tc.wantErr || !bytes.Equal(got, tc.want) {
					t.Errorf("%s (chunk %d, read %d): got %d bytes, err %v; want %d bytes, error %v",
						tc.name, chunk, readSize, len(got), err, len(tc.want), tc.wantErr)
				}
				if n := countFrames(replies); n != tc.wantReplies {
					t.Errorf("%s: %d replies, want %d", tc.name, n, tc.wantReplies)
				}
			}
		}
	}
}

func join(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func countFrames(b []byte) int {
	n := 0
	for len(b) >= 20 {
		size := 20 + int(b[2])<<8 | int(b[3])
		b = b[min(size, len(b)):]
		n++
	}
	return n
}

func FuzzTCPFraming(f *testing.F) {
	f.Add(signedRequest(f, testSecret, stun.MethodAllocate, requestedUDP()), uint8(7))
	f.Add([]byte{0x40, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5, 0, 0, 0}, uint8(1))
	f.Add(join(signedRequest(f, testSecret, stun.MethodCreatePermission, peerAttr(net.IPv4(10, 0, 0, 1), 1)), []byte{0x40, 0, 0, 0}), uint8(3))
	a := testAuthenticator(f)
	f.Fuzz(func(t *testing.T, stream []byte, chunk uint8) {
		got, replies, _ := readAllFrames(a, stream, int(chunk), 1600)
		// Without a 403 answered locally, bytes pass through unchanged
		// (the framer may stop early on garbage, never invent bytes).
		if len(replies) == 0 && !bytes.HasPrefix(stream, got) {
			t.Fatalf("framer changed the stream")
		}
		if len(got) > len(stream) {
			t.Fatalf("framer returned %d bytes from %d", len(got), len(stream))
		}
	})
}
