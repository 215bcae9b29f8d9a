package turnserver_test

// Helpers that drive coturn's client tools (Debian package coturn):
// turnutils_uclient, turnutils_peer and turnutils_stunclient, and parse
// what they print. They are a TURN client we did not write, which is the
// point of the interop tests.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/callbox/callbox/internal/testutil"
)

// toolTimeout bounds one run of a coturn tool; a healthy run of the small
// loads used here takes 1-3 s.
const toolTimeout = 30 * time.Second

// coturnTool finds one of coturn's binaries. Locally a missing tool skips the
// test; under CI=true it fails it, because .ci/run installs the package.
func coturnTool(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not found (CI=true, so this is a failure): install the Debian package coturn", name)
		}
		t.Skipf("%s not found: install the Debian package coturn (apt-get install coturn) to run this test", name)
	}
	return path
}

// runTool runs a tool to completion and returns its combined output.
func runTool(t *testing.T, path string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), toolTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	// The tools spawn no children, but a stuck pipe must not hang the test.
	cmd.WaitDelay = 2 * time.Second
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("%s timed out after %s: %w", path, toolTimeout, ctx.Err())
	}
	return out.String(), err
}

// uclientReport is the summary turnutils_uclient prints at its end.
type uclientReport struct {
	Sent, Received int // tot_send_msgs, tot_recv_msgs of the final summary
	Lost           int // "Total lost packets N"
	SendDropped    int // "total send dropped N"
}

var (
	reUClientTotals = regexp.MustCompile(`tot_send_msgs=(\d+), tot_recv_msgs=(\d+)`)
	reUClientLost   = regexp.MustCompile(`Total lost packets (\d+) \([^)]*\), total send dropped (\d+)`)
	reUClientError  = regexp.MustCompile(`error 4\d\d`)
)

// parseUClient reads the final summary of turnutils_uclient. The tool prints
// running totals as it goes ("start_mclient: msz=2, tot_send_msgs=5, ...")
// and the final ones last, so the last match wins.
func parseUClient(out string) (uclientReport, error) {
	var r uclientReport
	totals := reUClientTotals.FindAllStringSubmatch(out, -1)
	if len(totals) == 0 {
		return r, errors.New("uclient output: no tot_send_msgs line")
	}
	last := totals[len(totals)-1]
	lost := reUClientLost.FindAllStringSubmatch(out, -1)
	if len(lost) == 0 {
		return r, errors.New("uclient output: no \"Total lost packets\" line")
	}
	lastLost := lost[len(lost)-1]
	nums := []*int{&r.Sent, &r.Received, &r.Lost, &r.SendDropped}
	for i, s := range []string{last[1], last[2], lastLost[1], lastLost[2]} {
		n, err := strconv.Atoi(s)
		if err != nil {
			return r, fmt.Errorf("uclient output: number %q: %w", s, err)
		}
		*nums[i] = n
	}
	return r, nil
}

var reReflexive = regexp.MustCompile(`UDP reflexive addr: (\S+)`)

// parseStunclient returns the mapped address turnutils_stunclient printed
// ("IPv4. UDP reflexive addr: 127.0.0.1:40956"). It prints the line more than
// once; every copy must agree.
func parseStunclient(out string) (netip.AddrPort, error) {
	matches := reReflexive.FindAllStringSubmatch(out, -1)
	if len(matches) == 0 {
		return netip.AddrPort{}, errors.New("stunclient output: no \"UDP reflexive addr\" line")
	}
	var first netip.AddrPort
	for i, m := range matches {
		ap, err := netip.ParseAddrPort(m[1])
		if err != nil {
			return netip.AddrPort{}, fmt.Errorf("stunclient output: address %q: %w", m[1], err)
		}
		if i == 0 {
			first = ap
		} else if ap != first {
			return netip.AddrPort{}, fmt.Errorf("stunclient output: two different addresses %s and %s", first, ap)
		}
	}
	return first, nil
}

// startCoturnPeer runs turnutils_peer, coturn's UDP echo peer, on a free
// loopback port and returns that port once it echoes. The tool takes a port
// number, not :0, so a port the kernel just handed out is reused; another
// process may grab it in between, hence the retries.
func startCoturnPeer(t *testing.T) int {
	t.Helper()
	path := coturnTool(t, "turnutils_peer")
	var lastErr error
	for range 5 {
		port, err := freeUDPPort()
		if err != nil {
			t.Fatalf("free port: %v", err)
		}
		cmd := exec.Command(path, "-L", "127.0.0.1", "-p", strconv.Itoa(port))
		var out testutil.SyncBuffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatalf("start %s: %v", path, err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		stop := func() {
			_ = cmd.Process.Kill()
			<-exited
		}
		if lastErr = waitEcho(port, exited); lastErr == nil {
			t.Cleanup(stop)
			return port
		}
		stop()
		lastErr = fmt.Errorf("%w; output: %s", lastErr, out.String())
	}
	t.Fatalf("turnutils_peer never echoed: %v", lastErr)
	return 0
}

func freeUDPPort() (int, error) {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return 0, err
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port, nil
}

// waitEcho probes an echo peer until a datagram comes back, the peer process
// exits, or 3 s pass.
func waitEcho(port int, exited <-chan error) error {
	c, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
	if err != nil {
		return fmt.Errorf("dial echo peer: %w", err)
	}
	defer c.Close()
	probe := []byte("callbox-interop-probe")
	buf := make([]byte, 64)
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			return fmt.Errorf("turnutils_peer exited: %v", err)
		default:
		}
		if _, err := c.Write(probe); err != nil {
			return fmt.Errorf("probe echo peer: %w", err)
		}
		_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		n, err := c.Read(buf)
		if err == nil && bytes.Equal(buf[:n], probe) {
			return nil
		}
	}
	return errors.New("no echo within 3s")
}

// sniffUDPSources records the source addresses of UDP datagrams sent to
// 127.0.0.1:dstPort, seen through a raw socket (it needs CAP_NET_RAW). It is
// how a test learns which port a tool that binds port 0 really used.
type sniffer struct {
	conn *net.IPConn
	wg   sync.WaitGroup
	mu   sync.Mutex
	seen []netip.AddrPort // guarded by mu
}

func sniffUDP(dstPort int) (*sniffer, error) {
	conn, err := net.ListenIP("ip4:udp", &net.IPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, fmt.Errorf("raw udp socket: %w", err)
	}
	s := &sniffer{conn: conn}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		buf := make([]byte, 2048)
		for {
			// Go strips the IPv4 header: the UDP header comes first.
			n, from, err := conn.ReadFromIP(buf)
			if err != nil {
				return // closed by stop
			}
			src, dst, ok := udpPorts(buf[:n])
			if !ok || int(dst) != dstPort {
				continue
			}
			ip, _ := netip.AddrFromSlice(from.IP.To4())
			s.mu.Lock()
			s.seen = append(s.seen, netip.AddrPortFrom(ip, src))
			s.mu.Unlock()
		}
	}()
	return s, nil
}

// stop closes the socket, waits for the reader and returns what it saw.
func (s *sniffer) stop() []netip.AddrPort {
	s.conn.Close()
	s.wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seen
}

// udpPorts reads the source and destination ports of a UDP header.
func udpPorts(b []byte) (src, dst uint16, ok bool) {
	if len(b) < 8 {
		return 0, 0, false
	}
	return uint16(b[0])<<8 | uint16(b[1]), uint16(b[2])<<8 | uint16(b[3]), true
}
