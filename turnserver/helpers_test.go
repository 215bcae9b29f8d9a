package turnserver

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/callbox/callbox/internal/testutil"

	"github.com/pion/stun/v3"
	"github.com/pion/turn/v4"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/callbox/callbox/config"
)

const (
	testSecret  = "test-secret-0123456789"
	testSecret2 = "second-secret-abcdefghij"
)

// testConfig is the default TURN section on loopback with a kernel-chosen
// port, loopback peers allowed (every test peer is on 127.0.0.1) and two
// sockets so the SO_REUSEPORT path is exercised.
func testConfig() config.TURN {
	c := config.Default().TURN
	c.Listen = "127.0.0.1:0"
	c.Secrets = []string{testSecret}
	c.AllowLoopbackPeers = true
	c.UDPSockets = 2
	return c
}

type testServer struct {
	*Server
	reg  *prometheus.Registry
	logs *testutil.SyncBuffer
}

func startServer(t *testing.T, cfg config.TURN, protected ...netip.AddrPort) *testServer {
	t.Helper()
	logs := &testutil.SyncBuffer{}
	reg := prometheus.NewRegistry()
	s, err := New(cfg, Options{
		Logger:     slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})),
		Registerer: reg,
		Protected:  protected,
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	return &testServer{Server: s, reg: reg, logs: logs}
}

// metric reads one series from the registry; labels are name=value pairs.
func (ts *testServer) metric(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	families, err := ts.reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if labelsMatch(m, labels) {
				switch {
				case m.GetCounter() != nil:
					return m.GetCounter().GetValue()
				case m.GetGauge() != nil:
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	t.Fatalf("metric %s%v not found", name, labels)
	return 0
}

func labelsMatch(m *dto.Metric, want []string) bool {
	for i := 0; i+1 < len(want); i += 2 {
		found := false
		for _, l := range m.GetLabel() {
			if l.GetName() == want[i] && l.GetValue() == want[i+1] {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// eventually polls cond for up to 3 s: for counters that server goroutines
// update after the packet that the test observed.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// udpPeer is a UDP socket on loopback that counts what it receives and,
// if echo is set, sends it back.
type udpPeer struct {
	conn     *net.UDPConn
	mu       sync.Mutex
	received int
	bytes    int
	done     chan struct{}
}

func startPeer(t *testing.T, echo bool) *udpPeer {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatalf("peer listen: %v", err)
	}
	p := &udpPeer{conn: c, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFromUDP(buf)
			if err != nil {
				return
			}
			p.mu.Lock()
			p.received++
			p.bytes += n
			p.mu.Unlock()
			if echo {
				c.WriteToUDP(buf[:n], from)
			}
		}
	}()
	t.Cleanup(func() {
		c.Close()
		<-p.done
	})
	return p
}

func (p *udpPeer) addr() *net.UDPAddr { return p.conn.LocalAddr().(*net.UDPAddr) }

func (p *udpPeer) count() (packets, bytes int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.received, p.bytes
}

// turnClient is pion's TURN client over UDP or TCP to the test server.
func turnClient(t *testing.T, s *Server, username, password string, tcp bool) *turn.Client {
	t.Helper()
	var conn net.PacketConn
	server := s.UDPAddr().String()
	if tcp {
		c, err := net.Dial("tcp", s.TCPAddr().String())
		if err != nil {
			t.Fatalf("dial tcp: %v", err)
		}
		conn = turn.NewSTUNConn(c)
		server = s.TCPAddr().String()
	} else {
		c, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("client listen: %v", err)
		}
		conn = c
	}
	return startClient(t, conn, server, username, password, s.cfg.Realm)
}

// startClient runs pion's TURN client over conn against server, closed with the test.
func startClient(t *testing.T, conn net.PacketConn, server, username, password, realm string) *turn.Client {
	t.Helper()
	client, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: server,
		TURNServerAddr: server,
		Username:       username,
		Password:       password,
		Realm:          realm,
		Conn:           conn,
		RTO:            200 * time.Millisecond,
		LoggerFactory:  slogFactory{log: slog.New(slog.NewTextHandler(io.Discard, nil))},
	})
	if err != nil {
		t.Fatalf("turn client: %v", err)
	}
	if err := client.Listen(); err != nil {
		t.Fatalf("client listen: %v", err)
	}
	t.Cleanup(func() {
		client.Close()
		conn.Close()
	})
	return client
}

// rawClient speaks TURN by hand, for the error codes and request orders
// pion's client hides.
type rawClient struct {
	t        *testing.T
	conn     net.Conn
	tcp      bool
	username string
	password string
	realm    string
	nonce    stun.Nonce
}

func newRawClient(t *testing.T, s *Server, username, password string, tcp bool) *rawClient {
	t.Helper()
	network, addr := "udp4", s.UDPAddr().String()
	if tcp {
		network, addr = "tcp4", s.TCPAddr().String()
	}
	c, err := net.Dial(network, addr)
	if err != nil {
		t.Fatalf("dial %s: %v", network, err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawClient{t: t, conn: c, tcp: tcp, username: username, password: password, realm: s.cfg.Realm}
}

func (c *rawClient) roundTrip(req *stun.Message) *stun.Message {
	c.t.Helper()
	if _, err := c.conn.Write(req.Raw); err != nil {
		c.t.Fatalf("write: %v", err)
	}
	c.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	for {
		raw, err := c.readFrame()
		if err != nil {
			c.t.Fatalf("read response to %s: %v", req.Type, err)
		}
		resp := &stun.Message{Raw: raw}
		if resp.Decode() != nil || resp.TransactionID != req.TransactionID {
			continue // data or a stray response
		}
		return resp
	}
}

func (c *rawClient) readFrame() ([]byte, error) {
	if !c.tcp {
		buf := make([]byte, 2048)
		n, err := c.conn.Read(buf)
		return buf[:n], err
	}
	hdr := make([]byte, 4)
	if _, err := io.ReadFull(c.conn, hdr); err != nil {
		return nil, err
	}
	size := int(binary.BigEndian.Uint16(hdr[2:4]))
	if hdr[0]&0xC0 == 0 {
		size += 16 // STUN: 20-byte header, 4 already read
	} else {
		size = (size + 3) &^ 3
	}
	rest := make([]byte, size)
	if _, err := io.ReadFull(c.conn, rest); err != nil {
		return nil, err
	}
	return append(hdr, rest...), nil
}

// request sends an authenticated request and returns the response and its
// error code (0 on success). A 401 or 438 only renews the nonce.
func (c *rawClient) request(method stun.Method, attrs ...stun.Setter) (*stun.Message, int) {
	c.t.Helper()
	for range 3 {
		setters := []stun.Setter{stun.TransactionID, stun.NewType(method, stun.ClassRequest)}
		setters = append(setters, attrs...)
		if len(c.nonce) > 0 {
			setters = append(setters, stun.NewUsername(c.username), stun.NewRealm(c.realm), c.nonce,
				stun.NewLongTermIntegrity(c.username, c.realm, c.password))
		}
		setters = append(setters, stun.Fingerprint)
		req, err := stun.Build(setters...)
		if err != nil {
			c.t.Fatalf("build: %v", err)
		}
		resp := c.roundTrip(req)
		if resp.Type.Class == stun.ClassSuccessResponse {
			return resp, 0
		}
		var code stun.ErrorCodeAttribute
		if err := code.GetFrom(resp); err != nil {
			return resp, -1 // error response without a code
		}
		hadNonce := len(c.nonce) > 0
		if (code.Code == stun.CodeUnauthorized && !hadNonce) || code.Code == stun.CodeStaleNonce {
			if err := c.nonce.GetFrom(resp); err != nil {
				c.t.Fatalf("%d without a nonce", code.Code)
			}
			continue
		}
		return resp, int(code.Code)
	}
	c.t.Fatalf("%s: no answer but 401/438", method)
	return nil, 0
}

func requestedUDP() stun.Setter {
	return stun.RawAttribute{Type: stun.AttrRequestedTransport, Value: []byte{17, 0, 0, 0}}
}

func lifetime(d time.Duration) stun.Setter {
	v := make([]byte, 4)
	binary.BigEndian.PutUint32(v, uint32(d/time.Second))
	return stun.RawAttribute{Type: stun.AttrLifetime, Value: v}
}

func peerAttr(ip net.IP, port int) stun.Setter {
	return setterFunc(func(m *stun.Message) error {
		return stun.XORMappedAddress{IP: ip, Port: port}.AddToAs(m, stun.AttrXORPeerAddress)
	})
}

func channelAttr(n uint16) stun.Setter {
	return stun.RawAttribute{Type: stun.AttrChannelNumber, Value: []byte{byte(n >> 8), byte(n), 0, 0}}
}

type setterFunc func(*stun.Message) error

func (f setterFunc) AddTo(m *stun.Message) error { return f(m) }

// relayedAddr reads XOR-RELAYED-ADDRESS from an Allocate success.
func relayedAddr(t *testing.T, m *stun.Message) *net.UDPAddr {
	t.Helper()
	var xa stun.XORMappedAddress
	if err := xa.GetFromAs(m, stun.AttrXORRelayedAddress); err != nil {
		t.Fatalf("no relayed address: %v", err)
	}
	return &net.UDPAddr{IP: xa.IP, Port: xa.Port}
}

// allocate runs the 401 dance and an Allocate, returning the error code.
func (c *rawClient) allocate() (*stun.Message, int) {
	c.t.Helper()
	return c.request(stun.MethodAllocate, requestedUDP())
}

// channelEcho allocates for user, binds channel 0x4001 to the echo peer
// at pa and checks that a ChannelData datagram carrying tag comes back;
// the client stays open until the test ends.
func channelEcho(t *testing.T, s *Server, user string, pa *net.UDPAddr, tag byte) *rawClient {
	t.Helper()
	u, p := validCreds(user)
	c := newRawClient(t, s, u, p, false)
	if _, code := c.allocate(); code != 0 {
		t.Fatalf("%s: Allocate: %d", user, code)
	}
	if _, code := c.request(stun.MethodChannelBind, channelAttr(0x4001), peerAttr(pa.IP, pa.Port)); code != 0 {
		t.Fatalf("%s: ChannelBind: %d", user, code)
	}
	msg := []byte{0x40, 0x01, 0x00, 0x01, tag, 0, 0, 0}
	buf := make([]byte, 2048)
	c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.conn.Write(msg); err != nil {
		t.Fatal(err)
	}
	if n, err := c.conn.Read(buf); err != nil || !bytes.Equal(buf[:n], msg) {
		t.Fatalf("%s: echo % x, %v; want % x", user, buf[:n], err, msg)
	}
	return c
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func countLines(s, substr string) int { return strings.Count(s, substr) }

func mustPrefixes(cidrs ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(cidrs))
	for i, c := range cidrs {
		out[i] = netip.MustParsePrefix(c)
	}
	return out
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// newTestLoop is a data-plane loop for sockets a test wraps itself; the
// test starts it once its members are in, and it stops after them.
func newTestLoop(tb testing.TB) *dataLoop {
	tb.Helper()
	lp, err := newDataLoop(slog.New(slog.DiscardHandler), 0)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(lp.stop)
	return lp
}
