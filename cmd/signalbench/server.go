package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// server is one server process started by the bench, and only ever stopped
// by it through its own PID.
type server struct {
	name string
	base string // "http://127.0.0.1:PORT"
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited and been reaped
	err  error         // Wait's result; read after done
	out  *tailWriter   // the last lines of its stdout and stderr, for errors
}

func (s *server) pid() int { return s.cmd.Process.Pid }

// start runs cmd and reaps it in a goroutine that done announces.
func start(name string, cmd *exec.Cmd, out *tailWriter) (*server, error) {
	// If the bench dies without cleaning up, the kernel kills the server.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("signalbench: start %s: %w", name, err)
	}
	s := &server{name: name, cmd: cmd, done: make(chan struct{}), out: out}
	go func() {
		s.err = cmd.Wait()
		close(s.done)
	}()
	return s, nil
}

// stop asks the server to exit (SIGTERM), kills it after a grace period and
// waits until it is reaped.
func (s *server) stop() error {
	select {
	case <-s.done:
		return fmt.Errorf("signalbench: %s exited early: %v\n%s", s.name, s.err, s.out)
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
		return nil
	case <-time.After(10 * time.Second):
	}
	_ = s.cmd.Process.Kill()
	<-s.done
	return fmt.Errorf("signalbench: %s ignored SIGTERM for 10s; killed", s.name)
}

// waitHTTP polls url until it answers 200, the server exits or ctx ends.
func (s *server) waitHTTP(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	// No keep-alive: an idle probe connection would sit in the server
	// through the whole measurement.
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return fmt.Errorf("signalbench: %s readiness: %w", s.name, err)
		}
		if resp, err := hc.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-s.done:
			return fmt.Errorf("signalbench: %s exited before it was ready: %v\n%s", s.name, s.err, s.out)
		case <-ctx.Done():
			return fmt.Errorf("signalbench: %s not ready at %s: %w\n%s", s.name, url, ctx.Err(), s.out)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// launcher starts fresh servers of each kind, one per measured run, so that
// every run starts from the same empty server.
type launcher struct {
	log       *slog.Logger
	repo      string // module root: cmd/callbox and bench/peerjs are under it
	tmp       string // the bench's own temp dir
	callbox   string // built binary
	buildOnce sync.Once
	buildErr  error
	npmOnce   sync.Once
	npmErr    error
}

// startCallbox builds the callbox binary once, writes a config sized for n
// connections and starts it.
func (l *launcher) startCallbox(ctx context.Context, n, room int, rate float64) (*server, error) {
	l.buildOnce.Do(func() {
		if l.callbox != "" {
			return
		}
		bin := filepath.Join(l.tmp, "callbox")
		cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/callbox")
		cmd.Dir = l.repo
		l.log.Info("building callbox", "dir", l.repo)
		if out, err := cmd.CombinedOutput(); err != nil {
			l.buildErr = fmt.Errorf("signalbench: go build ./cmd/callbox: %w\n%s", err, out)
			return
		}
		l.callbox = bin
	})
	if l.buildErr != nil {
		return nil, l.buildErr
	}
	httpPort, err := freePort("tcp")
	if err != nil {
		return nil, err
	}
	turnPort, err := freePort("udp")
	if err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(l.tmp, "callbox.toml")
	if err := os.WriteFile(cfgPath, []byte(callboxConfig(httpPort, turnPort, n, room, rate)), 0o600); err != nil {
		return nil, fmt.Errorf("signalbench: write callbox config: %w", err)
	}
	out := newTailWriter(4096)
	cmd := exec.Command(l.callbox, "-config", cfgPath)
	cmd.Stdout, cmd.Stderr = out, out
	s, err := start("callbox", cmd, out)
	if err != nil {
		return nil, err
	}
	s.base = "http://127.0.0.1:" + strconv.Itoa(httpPort)
	if err := s.waitHTTP(ctx, s.base+"/healthz"); err != nil {
		_ = s.stop()
		return nil, err
	}
	return s, nil
}

// callboxConfig is a config whose limits let n bench clients from one
// address in rooms of room peers send rate messages per second in all
// freely (each sends rate/n), with metrics and info logs off so the run
// measures the hub alone.
func callboxConfig(httpPort, turnPort, n, room int, rate float64) string {
	return fmt.Sprintf(`[http]
listen = "127.0.0.1:%d"

[turn]
listen = "127.0.0.1:%d"
relay_ports = "40000-40100"

[signal]
max_connections_per_ip = %d
max_rooms = %d
max_peers_per_room = %d
messages_per_second = %.1f
message_burst = 10000

[metrics]
listen = ""

[log]
level = "warn"
`, httpPort, turnPort, n+100, n+100, max(room, 2), max(1000, 4*rate/float64(n)))
}

// freePort asks the kernel for a free loopback port and releases it for
// the server about to be started; a lost race only fails that start.
// For "udp" the TCP port of the same number must be free too (TURN serves
// both on one port), which a few tries find.
func freePort(network string) (port int, err error) {
	for range 10 {
		if port, err = tryFreePort(network); err == nil {
			return port, nil
		}
	}
	return 0, err
}

func tryFreePort(network string) (int, error) {
	switch network {
	case "udp":
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("signalbench: free udp port: %w", err)
		}
		defer c.Close()
		port := c.LocalAddr().(*net.UDPAddr).Port
		// TURN takes TCP on the same port: check it is free too.
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			return 0, fmt.Errorf("signalbench: free udp+tcp port %d: %w", port, err)
		}
		ln.Close()
		return port, nil
	default:
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("signalbench: free tcp port: %w", err)
		}
		defer ln.Close()
		return ln.Addr().(*net.TCPAddr).Port, nil
	}
}

// startPeerJS installs the pinned PeerJS server if needed (npm ci) and runs
// bench/peerjs/server.mjs with its connection limit above n.
func (l *launcher) startPeerJS(ctx context.Context, n int) (*server, error) {
	dir := filepath.Join(l.repo, "bench", "peerjs")
	l.npmOnce.Do(func() {
		if _, err := os.Stat(filepath.Join(dir, "node_modules", "peer", "package.json")); err == nil {
			return
		}
		l.log.Info("installing the PeerJS server", "dir", dir)
		cmd := exec.CommandContext(ctx, "npm", "ci", "--no-audit", "--no-fund")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			l.npmErr = fmt.Errorf("signalbench: npm ci in %s: %w\n%s", dir, err, out)
		}
	})
	if l.npmErr != nil {
		return nil, l.npmErr
	}
	out := newTailWriter(4096)
	ready := &readyWriter{prefix: "listening ", port: make(chan int, 1), next: out}
	cmd := exec.Command("node", "server.mjs", "0", strconv.Itoa(n+100))
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = ready, out
	s, err := start("peerjs", cmd, out)
	if err != nil {
		return nil, err
	}
	select {
	case port := <-ready.port:
		s.base = "http://127.0.0.1:" + strconv.Itoa(port)
	case <-s.done:
		return nil, fmt.Errorf("signalbench: peerjs exited before it was ready: %v\n%s", s.err, out)
	case <-time.After(30 * time.Second):
		_ = s.stop()
		return nil, fmt.Errorf("signalbench: peerjs printed no port in 30s\n%s", out)
	case <-ctx.Done():
		_ = s.stop()
		return nil, ctx.Err()
	}
	if err := s.waitHTTP(ctx, s.base+"/"); err != nil {
		_ = s.stop()
		return nil, err
	}
	return s, nil
}

// readyWriter passes a child's stdout on and reports the port of its first
// "listening PORT" line.
type readyWriter struct {
	prefix string
	port   chan int // buffered 1; one send at most
	next   *tailWriter

	mu   sync.Mutex
	line []byte
	sent bool
}

func (w *readyWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, c := range p {
		if c != '\n' {
			if len(w.line) < 256 {
				w.line = append(w.line, c)
			}
			continue
		}
		if rest, ok := strings.CutPrefix(string(w.line), w.prefix); ok && !w.sent {
			if port, err := strconv.Atoi(strings.TrimSpace(rest)); err == nil {
				w.port <- port
				w.sent = true
			}
		}
		w.line = w.line[:0]
	}
	return w.next.Write(p)
}

// tailWriter keeps the last bytes written to it: a child's output, kept
// for the error message when the child fails.
type tailWriter struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func newTailWriter(max int) *tailWriter { return &tailWriter{max: max} }

func (w *tailWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	if over := len(w.buf) - w.max; over > 0 {
		w.buf = append(w.buf[:0], w.buf[over:]...)
	}
	return len(p), nil
}

func (w *tailWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return string(bytes.TrimSpace(w.buf))
}

// repoRoot finds the module root from dir upwards (the directory with go.mod).
func repoRoot(dir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", errors.New("signalbench: no go.mod above " + dir + "; run it inside the callbox module or pass -repo")
		}
	}
}
