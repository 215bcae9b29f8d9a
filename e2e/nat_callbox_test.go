//go:build linux

package e2e

// callbox in the internet namespace, as its own process: the test binary
// runs itself under `ip netns exec` with CALLBOX_E2E_SERVE set, and that
// child is nothing but app.New and Run on a config file, as cmd/callbox
// does. A process of its own is what lets every socket callbox opens (the
// relays too, made later on any thread) live in the namespace, and makes
// "restart callbox mid-call" a signal to a PID and a new start.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/callbox/callbox/app"
	"github.com/callbox/callbox/config"
	"github.com/callbox/callbox/internal/testutil"
)

// serveEnv names the config file the child serves; see TestMain.
const serveEnv = "CALLBOX_E2E_SERVE"

func TestMain(m *testing.M) {
	if path := os.Getenv(serveEnv); path != "" {
		if err := serveCallbox(path); err != nil {
			fmt.Fprintln(os.Stderr, "callbox:", err)
			os.Exit(2)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// serveCallbox is the child: callbox on the config at path until SIGTERM,
// or until its stdin closes (the test binary is gone).
func serveCallbox(path string) error {
	cfg, err := config.Load(path)
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	ctx, orphaned := context.WithCancel(ctx)
	go func() {
		io.Copy(io.Discard, os.Stdin)
		orphaned()
	}()
	a, err := app.New(cfg, logger)
	if err != nil {
		return err
	}
	return a.Run(ctx)
}

// natCallbox is callbox serving the test network: HTTPS and TURN over TLS
// sharing port 443 (the firewall lets nothing else out), STUN/TURN on
// 3478, all on callboxIP. Ports are fixed: the namespace is the test's own.
type natCallbox struct {
	t      *testing.T
	net    *natNet
	art    *artifacts
	config string
	cert   testutil.Cert
	cmd    *exec.Cmd
	stdin  io.Closer
	done   chan error
	starts int
}

const (
	startTimeout  = 90 * time.Second
	callboxHTTPS  = 443
	callboxTURN   = 3478
	natTURNSecret = "nat-test-secret-0123456789"
)

// startNatCallbox writes the config and starts callbox; it is stopped at cleanup.
func startNatCallbox(t *testing.T, n *natNet, art *artifacts) *natCallbox {
	t.Helper()
	cert := testutil.SelfSigned(t, 24*time.Hour, callboxIP.String())
	certFile, keyFile := cert.WriteFiles(t)
	// The secret is fixed, as an operator's is: credentials minted before
	// a restart stay valid after it.
	conf := fmt.Sprintf(`[http]
listen = "127.0.0.1:8080"
https_listen = "%[1]s:%[2]d"

[turn]
listen = "%[1]s:%[3]d"
host = "%[1]s"
secrets = [%[7]q]
allowed_peers = ["%[4]s"]
tls_on_https = true

[tls]
cert_file = %[5]q
key_file = %[6]q

[metrics]
listen = ""
`, callboxIP, callboxHTTPS, callboxTURN, publicNet, certFile, keyFile, natTURNSecret)
	path := filepath.Join(t.TempDir(), "callbox.toml")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := config.Parse([]byte(conf)); err != nil {
		t.Fatalf("the test's callbox config: %v", err)
	}
	s := &natCallbox{t: t, net: n, art: art, config: path, cert: cert}
	if err := s.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.stop(); err != nil {
			t.Error(err)
		}
	})
	return s
}

// start runs callbox and waits until its HTTPS port accepts connections.
func (s *natCallbox) start() error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	s.starts++
	cmd := exec.Command("ip", "netns", "exec", s.net.inet, exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), serveEnv+"="+s.config)
	w := &prefixWriter{art: s.art, prefix: fmt.Sprintf("callbox#%d", s.starts)}
	cmd.Stdout, cmd.Stderr = w, w
	// The child stops when this pipe closes, so it never outlives the test
	// binary. (Not Pdeathsig: that follows the thread that forked, and Go
	// ends threads.)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start callbox: %w", err)
	}
	s.cmd, s.stdin = cmd, stdin
	s.done = make(chan error, 1)
	go func() { s.done <- cmd.Wait() }()
	s.art.logf("callbox #%d started, pid %d", s.starts, cmd.Process.Pid)
	addr := netip.AddrPortFrom(callboxIP, callboxHTTPS).String()
	// Generous: a race-built binary starting on two busy cores.
	deadline := time.Now().Add(startTimeout)
	for {
		var c net.Conn
		err := inNS(s.net.inet, func() (err error) {
			c, err = net.DialTimeout("tcp", addr, time.Second)
			return err
		})
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case err := <-s.done:
			s.cmd = nil
			return fmt.Errorf("callbox exited before it listened: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("callbox not listening on %s after %v: %v", addr, startTimeout, err)
		}
	}
}

// stop sends SIGTERM (a graceful stop: clients are told to reconnect) and
// waits; after 20 s it kills.
func (s *natCallbox) stop() error {
	if s.cmd == nil {
		return nil
	}
	defer func() {
		s.stdin.Close()
		s.cmd = nil
	}()
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-s.done:
		s.art.logf("callbox #%d stopped: %v", s.starts, err)
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			return err
		}
		if err != nil {
			return fmt.Errorf("callbox #%d exited with %v", s.starts, err)
		}
		return nil
	case <-time.After(20 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
		return fmt.Errorf("callbox #%d did not stop within 20s of SIGTERM: killed", s.starts)
	}
}

// pageURL is the call page of room, joining at once as name.
func (s *natCallbox) pageURL(room, name string) string {
	return fmt.Sprintf("https://%s/r/%s?name=%s", callboxIP, room, name)
}

// prefixWriter puts a child's output lines into the test's log.
type prefixWriter struct {
	art    *artifacts
	prefix string
	rest   []byte
}

func (w *prefixWriter) Write(p []byte) (int, error) {
	w.rest = append(w.rest, p...)
	for {
		i := strings.IndexByte(string(w.rest), '\n')
		if i < 0 {
			return len(p), nil
		}
		fmt.Fprintf(w.art, "%8.3fs %s: %s\n", time.Since(w.art.start).Seconds(), w.prefix, w.rest[:i])
		w.rest = w.rest[i+1:]
	}
}
