package app

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/stun/v3"
	"github.com/pion/turn/v4"
	"golang.org/x/sys/unix"

	"github.com/callbox/callbox/config"
	"github.com/callbox/callbox/internal/testutil"
)

// hostileNet is a network namespace joined to this one by a veth pair,
// whose only way out is TCP to one port of the server's address: the
// network of a hotel or an office that lets HTTPS out and nothing else.
// Addresses are in 198.18.0.0/15 (RFC 2544 benchmarking): no real
// network uses them.
type hostileNet struct {
	name     string
	server   netip.Addr // host side of the veth
	client   netip.Addr // namespace side
	t        *testing.T
	hostVeth string
	nsPath   string
}

func runCmd(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// newHostileNet builds the namespace; ports are opened later by allowTCP.
// Everything is torn down at cleanup.
func newHostileNet(t *testing.T) *hostileNet {
	t.Helper()
	testutil.RequireNetns(t)
	id := os.Getpid() % 100000
	third := byte(1 + os.Getpid()%250) // keeps concurrent runs apart
	h := &hostileNet{
		t:        t,
		name:     fmt.Sprintf("cbx%d", id),
		hostVeth: fmt.Sprintf("cbh%d", id),
		server:   netip.AddrFrom4([4]byte{198, 18, third, 1}),
		client:   netip.AddrFrom4([4]byte{198, 18, third, 2}),
	}
	nsVeth := fmt.Sprintf("cbn%d", id)
	h.nsPath = "/run/netns/" + h.name
	t.Cleanup(func() {
		// Deleting the namespace destroys its veth end, and so the pair.
		exec.Command("ip", "netns", "del", h.name).Run()
		exec.Command("ip", "link", "del", h.hostVeth).Run()
	})
	runCmd(t, "ip", "netns", "add", h.name)
	runCmd(t, "ip", "link", "add", h.hostVeth, "type", "veth", "peer", "name", nsVeth)
	runCmd(t, "ip", "link", "set", nsVeth, "netns", h.name)
	runCmd(t, "ip", "addr", "add", h.server.String()+"/30", "dev", h.hostVeth)
	runCmd(t, "ip", "link", "set", h.hostVeth, "up")
	in := []string{"ip", "netns", "exec", h.name}
	runCmd(t, append(in, "ip", "addr", "add", h.client.String()+"/30", "dev", nsVeth)...)
	runCmd(t, append(in, "ip", "link", "set", nsVeth, "up")...)
	runCmd(t, append(in, "ip", "link", "set", "lo", "up")...)
	runCmd(t, append(in, "iptables", "-P", "OUTPUT", "DROP")...)
	runCmd(t, append(in, "iptables", "-A", "OUTPUT", "-o", "lo", "-j", "ACCEPT")...)
	return h
}

// allowTCP opens TCP to port of the server, the namespace's only way out.
func (h *hostileNet) allowTCP(port int) {
	h.t.Helper()
	runCmd(h.t, "ip", "netns", "exec", h.name, "iptables", "-A", "OUTPUT", "-p", "tcp",
		"-d", h.server.String(), "--dport", strconv.Itoa(port), "-j", "ACCEPT")
}

// inNS runs f on an OS thread moved into the namespace: sockets f creates
// belong to the namespace for their whole life, whichever thread uses
// them later. The thread is never unlocked, so the runtime discards it
// instead of reusing it elsewhere.
func (h *hostileNet) inNS(f func()) {
	h.t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		fd, err := unix.Open(h.nsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns: %w", err)
			return
		}
		f()
		errc <- nil
	}()
	if err := <-errc; err != nil {
		h.t.Fatal(err)
	}
}

// dial opens a TCP connection from inside the namespace.
func (h *hostileNet) dial(ctx context.Context, network, addr string) (c net.Conn, err error) {
	h.inNS(func() {
		d := net.Dialer{Timeout: 2 * time.Second}
		// Dial makes the socket on this thread before it waits.
		c, err = d.DialContext(ctx, network, addr)
	})
	return c, err
}

// A browser in a network that lets out only TCP to port 443 still gets a
// relay: the page, the WebSocket and TURN over TLS all go through the one
// port, and the relay carries a packet to a peer and back.
func TestOnlyHTTPSPortGetsRelay(t *testing.T) {
	hn := newHostileNet(t)
	cfg, clientTLS := tlsConfig(t, true)
	cfg.HTTP.HTTPSListen = netip.AddrPortFrom(hn.server, 0).String()
	cfg.TURN.TLSListen = ""
	cfg.TURN.Listen = netip.AddrPortFrom(hn.server, 0).String()
	cfg.TURN.AllowedPeers = []netip.Prefix{netip.MustParsePrefix("198.18.0.0/15")}
	a, _, _ := startApp(t, cfg)
	httpsPort := a.httpsLn.Addr().(*net.TCPAddr).Port
	hn.allowTCP(httpsPort)

	t.Run("everything else is blocked", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		if c, err := hn.dial(ctx, "tcp", a.TURN().TCPAddr().String()); err == nil {
			c.Close()
			t.Fatal("TCP to the TURN port got through")
		}
		var conn net.PacketConn
		hn.inNS(func() { conn, _ = net.ListenPacket("udp4", ":0") })
		if conn == nil {
			t.Fatal("no UDP socket in the namespace")
		}
		defer conn.Close()
		req := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
		conn.WriteTo(req.Raw, a.TURN().UDPAddr())
		conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if _, _, err := conn.ReadFrom(make([]byte, 1500)); err == nil {
			t.Fatal("STUN over UDP got an answer")
		}
	})

	base := a.HTTPSURL()
	tr := &http.Transport{TLSClientConfig: clientTLS.Clone(), DialContext: hn.dial}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(base + "/")
	if err != nil {
		t.Fatalf("GET / from the namespace: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET /: %d", resp.StatusCode)
	}

	d := websocket.Dialer{TLSClientConfig: clientTLS.Clone(), NetDialContext: hn.dial, HandshakeTimeout: 10 * time.Second}
	ws, _, err := d.Dial("wss"+strings.TrimPrefix(base, "https")+"/ws", http.Header{"Origin": {base}})
	if err != nil {
		t.Fatalf("wss from the namespace: %v", err)
	}
	defer ws.Close()
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	ws.WriteJSON(map[string]any{"type": "hello", "version": 1, "room": "hotel", "name": "Ada"})
	var welcome struct {
		Type       string      `json:"type"`
		IceServers []iceServer `json:"iceServers"`
	}
	if err := ws.ReadJSON(&welcome); err != nil || welcome.Type != "welcome" {
		t.Fatalf("welcome: %+v %v", welcome, err)
	}
	_, user, pass := turnsServer(t, welcome.IceServers, strconv.Itoa(httpsPort))

	// The turns: host is the certificate's name; the namespace's
	// "resolver" maps it to the server's address.
	raw, err := hn.dial(context.Background(), "tcp", a.httpsLn.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	tc := tlsClient(raw, clientTLS)
	conn := turn.NewSTUNConn(tc)
	defer conn.Close()
	client, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: a.httpsLn.Addr().String(),
		TURNServerAddr: a.httpsLn.Addr().String(),
		Conn:           conn,
		Username:       user,
		Password:       pass,
		Realm:          config.Default().TURN.Realm,
		RTO:            500 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if err := client.Listen(); err != nil {
		t.Fatal(err)
	}
	relay, err := client.Allocate()
	if err != nil {
		t.Fatalf("allocate over TLS on the HTTPS port: %v", err)
	}
	defer relay.Close()
	t.Logf("relay %s through %s", relay.LocalAddr(), a.httpsLn.Addr())

	// A peer next to the server echoes what the relay sends it.
	peer, err := net.ListenPacket("udp4", netip.AddrPortFrom(hn.server, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	go func() {
		buf := make([]byte, 1500)
		n, from, err := peer.ReadFrom(buf)
		if err == nil {
			peer.WriteTo(buf[:n], from)
		}
	}()
	if _, err := relay.WriteTo([]byte("from the hotel"), peer.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	relay.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1500)
	n, _, err := relay.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "from the hotel" {
		t.Fatalf("echo through the relay: %q, %v", buf[:n], err)
	}
}
