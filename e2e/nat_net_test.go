//go:build linux

package e2e

// The test network of the NAT tests: an "internet" namespace with a bridge
// where callbox runs on a public-looking address, and per client either a
// home router namespace doing NAT in the kernel with the client behind it,
// or (kind "none") the client straight on the internet bridge.
//
// Every link is created inside the namespaces themselves (ip -n NS link add
// ... peer ... netns NS2), so no interface ever appears in the host's
// namespace and the addresses inside cannot clash with other tests on the
// machine; only the namespace names are global, and they carry a random
// suffix. Deleting the namespaces destroys everything else with them.

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/callbox/callbox/internal/testutil"
	"golang.org/x/sys/unix"
)

// natKind is the kind of router a client sits behind.
type natKind string

const (
	natNone      natKind = "none"      // a host with a public address, no router
	natFullCone  natKind = "fullcone"  // MASQUERADE keeping ports, any inbound UDP let in to the mapped port
	natPortRestr natKind = "portrestr" // MASQUERADE and conntrack: replies from where we sent only
	natSymmetric natKind = "symmetric" // MASQUERADE --random-fully: a new port per destination
	natFirewall  natKind = "firewall"  // MASQUERADE, UDP dropped, TCP out to port 443 only
)

// Addresses of the test network. 203.0.113.0/24 (TEST-NET-3, RFC 5737) is
// its internet: no real network routes it, and callbox's peer policy denies
// it until turn.allowed_peers opens it, as an operator would for a real
// public range.
var (
	publicNet  = netip.MustParsePrefix("203.0.113.0/24")
	callboxIP  = netip.MustParseAddr("203.0.113.1")
	routerWAN0 = 10  // routers' WAN addresses are 203.0.113.10+i
	publicHost = 100 // public clients are 203.0.113.100+i
)

// natNet is one test's network. Its methods may be called from several
// goroutines (cells are built in parallel).
type natNet struct {
	t      *testing.T
	prefix string // of every namespace name: "cbnat" + random hex
	inet   string // the internet namespace

	mu    sync.Mutex
	next  int // guarded by mu: index of the next client
	names []string
}

// natClient is one client: its namespace, its address inside it, and its
// router (empty for kind none).
type natClient struct {
	net    *natNet
	kind   natKind
	ns     string
	router string
	addr   netip.Addr // the client's own address (private behind a router)
	wan    netip.Addr // the address the internet sees (the router's, or addr)
}

// newNatNet builds the internet namespace with its bridge and callbox's
// address on it. Everything is deleted at cleanup, even after a failure.
func newNatNet(t *testing.T) *natNet {
	t.Helper()
	testutil.RequireNetns(t)
	b := make([]byte, 3)
	rand.Read(b)
	n := &natNet{t: t, prefix: "cbnat" + hex.EncodeToString(b)}
	t.Cleanup(n.teardown)
	var err error
	if n.inet, err = n.addNS("inet"); err != nil {
		t.Fatal(err)
	}
	// A set address: a bridge without one takes the lowest of its ports'
	// addresses, so it changed as clients were plugged in beside a running
	// probe, and hosts still sending to its old address were unanswered
	// until their ARP entry went stale (TestNATRouters, 1 run in 10).
	n.must("ip", "-n", n.inet, "link", "add", "br0", "address", "02:00:cb:00:00:01", "type", "bridge")
	n.must("ip", "-n", n.inet, "addr", "add", callboxIP.String()+"/24", "dev", "br0")
	n.must("ip", "-n", n.inet, "link", "set", "br0", "up")
	return n
}

// addNS creates a namespace named prefix-role with its loopback up.
func (n *natNet) addNS(role string) (string, error) {
	name := n.prefix + "-" + role
	if err := run("ip", "netns", "add", name); err != nil {
		return "", err
	}
	n.mu.Lock()
	n.names = append(n.names, name)
	n.mu.Unlock()
	// No IPv6 in the test's networks (every address is IPv4): a veth's
	// link-local address turns valid a second or two after the link comes
	// up, when its duplicate address detection ends, and Chromium takes
	// that for a network change and fails the page's loads in flight
	// (net::ERR_NETWORK_CHANGED; seen when the browsers started fast).
	return name, runAll(
		[]string{"ip", "netns", "exec", name, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"},
		[]string{"ip", "-n", name, "link", "set", "lo", "up"},
	)
}

func (n *natNet) teardown() {
	n.mu.Lock()
	names := n.names
	n.names = nil
	n.mu.Unlock()
	for _, name := range names {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			n.t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	}
}

// must runs a command and fails the test on error (test goroutine only).
func (n *natNet) must(args ...string) {
	n.t.Helper()
	if err := run(args...); err != nil {
		n.t.Fatal(err)
	}
}

func run(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// runAll runs commands in order and stops at the first error.
func runAll(cmds ...[]string) error {
	for _, c := range cmds {
		if err := run(c...); err != nil {
			return err
		}
	}
	return nil
}

// attach plugs namespace ns into the internet bridge as iface with addr.
func (n *natNet) attach(ns, iface string, addr netip.Addr) error {
	host := fmt.Sprintf("p%d", n.indexOf(ns)) // bridge port, local to the internet namespace
	return runAll(
		[]string{"ip", "-n", n.inet, "link", "add", host, "type", "veth", "peer", "name", iface, "netns", ns},
		[]string{"ip", "-n", n.inet, "link", "set", host, "master", "br0", "up"},
		[]string{"ip", "-n", ns, "addr", "add", addr.String() + "/24", "dev", iface},
		[]string{"ip", "-n", ns, "link", "set", iface, "up"},
	)
}

func (n *natNet) indexOf(ns string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	for i, name := range n.names {
		if name == ns {
			return i
		}
	}
	return -1
}

// addClient builds a client of kind: its namespace, and its router unless
// kind is none. It returns an error rather than failing, so cells can be
// built from several goroutines.
func (n *natNet) addClient(kind natKind) (*natClient, error) {
	n.mu.Lock()
	i := n.next
	n.next++
	n.mu.Unlock()
	ns, err := n.addNS(fmt.Sprintf("c%d", i))
	if err != nil {
		return nil, err
	}
	c := &natClient{net: n, kind: kind, ns: ns}
	if kind == natNone {
		c.addr = netip.AddrFrom4([4]byte{203, 0, 113, byte(publicHost + i)})
		c.wan = c.addr
		return c, n.attach(c.ns, "eth0", c.addr)
	}
	if c.router, err = n.addNS(fmt.Sprintf("r%d", i)); err != nil {
		return nil, err
	}
	c.wan = netip.AddrFrom4([4]byte{203, 0, 113, byte(routerWAN0 + i)})
	// Every home has its own LAN, so host candidates never collide.
	gw := netip.AddrFrom4([4]byte{192, 168, byte(i), 1})
	c.addr = netip.AddrFrom4([4]byte{192, 168, byte(i), 2})
	r, in := c.router, []string{"ip", "netns", "exec", c.router}
	cmds := [][]string{
		{"ip", "-n", r, "link", "add", "lan", "type", "veth", "peer", "name", "eth0", "netns", c.ns},
		{"ip", "-n", r, "addr", "add", gw.String() + "/24", "dev", "lan"},
		{"ip", "-n", r, "link", "set", "lan", "up"},
		{"ip", "-n", c.ns, "addr", "add", c.addr.String() + "/24", "dev", "eth0"},
		{"ip", "-n", c.ns, "link", "set", "eth0", "up"},
		{"ip", "-n", c.ns, "route", "add", "default", "via", gw.String()},
		append(in, "sysctl", "-qw", "net.ipv4.ip_forward=1"),
	}
	if err := runAll(cmds...); err != nil {
		return nil, err
	}
	if err := n.attach(r, "wan", c.wan); err != nil {
		return nil, err
	}
	ipt := func(args ...string) []string { return append(append(in[:len(in):len(in)], "iptables", "-w"), args...) }
	var rules [][]string
	masq := ipt("-t", "nat", "-A", "POSTROUTING", "-o", "wan", "-j", "MASQUERADE")
	// Inbound: only what conntrack knows as a reply, and nothing to the
	// router itself (no ICMP port unreachable to give the game away).
	restricted := [][]string{
		ipt("-A", "FORWARD", "-i", "wan", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"),
		ipt("-A", "FORWARD", "-i", "wan", "-j", "DROP"),
		ipt("-A", "INPUT", "-i", "wan", "-m", "conntrack", "--ctstate", "NEW,INVALID", "-j", "DROP"),
	}
	switch kind {
	case natFullCone:
		// MASQUERADE keeps the client's source port whenever it is free,
		// so the mapping is the same for every destination; any new UDP
		// arriving on the WAN goes to the client on the same port.
		rules = append(rules, masq,
			ipt("-t", "nat", "-A", "PREROUTING", "-i", "wan", "-p", "udp", "-j", "DNAT", "--to-destination", c.addr.String()))
	case natPortRestr:
		rules = append(append(rules, masq), restricted...)
	case natSymmetric:
		rules = append(append(rules,
			ipt("-t", "nat", "-A", "POSTROUTING", "-o", "wan", "-j", "MASQUERADE", "--random-fully")), restricted...)
	case natFirewall:
		rules = append(rules, masq,
			ipt("-P", "FORWARD", "DROP"),
			ipt("-A", "FORWARD", "-i", "wan", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"),
			ipt("-A", "FORWARD", "-i", "lan", "-p", "tcp", "--dport", "443", "-j", "ACCEPT"),
			ipt("-A", "INPUT", "-i", "wan", "-m", "conntrack", "--ctstate", "NEW,INVALID", "-j", "DROP"))
	default:
		return nil, fmt.Errorf("unknown NAT kind %q", kind)
	}
	return c, runAll(rules...)
}

// setUplink cuts (down) or restores everything the router forwards for
// its client, both ways: media, TURN and the WebSocket. One rule, so the
// cut starts when the command returns. A client without a router has
// its own traffic dropped instead.
func (c *natClient) setUplink(up bool) error {
	op := "-I"
	if up {
		op = "-D"
	}
	if c.router != "" {
		return run("ip", "netns", "exec", c.router, "iptables", "-w", op, "FORWARD", "-j", "DROP")
	}
	return runAll(
		[]string{"ip", "netns", "exec", c.ns, "iptables", "-w", op, "OUTPUT", "!", "-o", "lo", "-j", "DROP"},
		[]string{"ip", "netns", "exec", c.ns, "iptables", "-w", op, "INPUT", "!", "-i", "lo", "-j", "DROP"},
	)
}

// inNS runs f on an OS thread moved into namespace ns: sockets f creates
// belong to ns for their whole life, whichever thread uses them later.
// The thread is moved back before it is unlocked. It must not die instead:
// a child process started on it (Chromium, with Pdeathsig) would be killed.
func inNS(ns string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		home, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open own netns: %w", err)
			return
		}
		defer unix.Close(home)
		fd, err := unix.Open("/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open netns %s: %w", ns, err)
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		err = f()
		// Back home, or the thread stays locked and ends with this goroutine.
		if unix.Setns(home, unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}
