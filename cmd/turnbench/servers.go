package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// The servers under test run as child processes, one at a time, each in a
// fresh temporary folder that also holds its log.

const (
	benchRealm = "turnbench"
	readyLimit = 10 * time.Second
	stopLimit  = 5 * time.Second
)

type serverProc struct {
	kind   string
	cmd    *exec.Cmd
	dir    string
	addr   netip.AddrPort
	exited chan struct{}
	err    error // Wait's result, set before exited closes
}

// serverSetup is what every server of a run gets alike.
type serverSetup struct {
	callbox  string // path of the callbox binary
	baseline string // path of another callbox binary, server kind "baseline" (-baseline)
	coturn   string // path of coturn's turnserver
	secret   string
	relayMin int
	relayMax int
	// callboxEnv is added to callbox's environment (-callbox-env).
	callboxEnv []string
	// harness, when set, is this binary, run as serveTURN in place of
	// callbox to write a CPU profile to profilePrefix.N (N counts the
	// callbox processes of the run).
	harness       string
	profilePrefix string
	profiles      *int
	// cpus, when set, holds the servers to their CPUs (-server-cpus).
	cpus *cpuSplit
}

func (s serverSetup) command(kind, dir string, port int) (*exec.Cmd, error) {
	switch kind {
	case "callbox", "baseline":
		conf := fmt.Sprintf(`# written by turnbench
[http]
listen = "127.0.0.1:0"

[turn]
listen = "127.0.0.1:%d"
relay_ports = "%d-%d"
realm = %q
secrets = [%q]
allow_loopback_peers = true
user_quota = 0
total_quota = 0

[metrics]
listen = ""
`, port, s.relayMin, s.relayMax, benchRealm, s.secret)
		path := filepath.Join(dir, "callbox.toml")
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			return nil, fmt.Errorf("turnbench: write callbox config: %w", err)
		}
		bin := s.callbox
		if kind == "baseline" {
			bin = s.baseline
		}
		cmd := exec.Command(bin, "-config", path)
		if s.harness != "" && kind == "callbox" {
			*s.profiles++
			cmd = exec.Command(s.harness, harnessCmd, "-config", path,
				"-cpuprofile", s.profilePrefix+"."+strconv.Itoa(*s.profiles))
		}
		if len(s.callboxEnv) > 0 && kind == "callbox" {
			cmd.Env = append(os.Environ(), s.callboxEnv...)
		}
		return cmd, nil
	case "coturn":
		// The flags keep coturn from writing outside dir and from
		// starting listeners the other server does not have (TLS, CLI).
		args := []string{"--use-auth-secret", "--static-auth-secret=" + s.secret, "--realm=" + benchRealm,
			"--listening-ip=127.0.0.1", "--listening-port=" + strconv.Itoa(port), "--relay-ip=127.0.0.1",
			"--allow-loopback-peers", "--no-cli", "--no-tls", "--no-dtls",
			"--min-port=" + strconv.Itoa(s.relayMin), "--max-port=" + strconv.Itoa(s.relayMax),
			"--log-file=stdout", "--simple-log",
			"--pidfile=" + filepath.Join(dir, "turnserver.pid"), "--db=" + filepath.Join(dir, "turndb"),
			"--total-quota=0", "--user-quota=0"}
		if s.cpus != nil {
			// coturn counts the machine's CPUs, not the ones it may use.
			args = append(args, "--relay-threads="+strconv.Itoa(s.cpus.serverCPUs()))
		}
		return exec.Command(s.coturn, args...), nil
	}
	return nil, fmt.Errorf("turnbench: unknown server %q", kind)
}

// startServer runs one server on a free loopback port and returns once it
// answers STUN. The port is one the kernel just handed out; if another
// process takes it first the start is retried on a new one.
func startServer(ctx context.Context, kind string, setup serverSetup) (*serverProc, error) {
	var lastErr error
	for range 3 {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		dir, err := os.MkdirTemp("", "turnbench-"+kind+"-")
		if err != nil {
			return nil, fmt.Errorf("turnbench: temp dir: %w", err)
		}
		p, err := launch(ctx, kind, setup, dir, port)
		if err == nil {
			return p, nil
		}
		lastErr = err
		os.RemoveAll(dir)
	}
	return nil, lastErr
}

func launch(ctx context.Context, kind string, setup serverSetup, dir string, port int) (*serverProc, error) {
	cmd, err := setup.command(kind, dir, port)
	if err != nil {
		return nil, err
	}
	logFile, err := os.Create(filepath.Join(dir, kind+".log"))
	if err != nil {
		return nil, fmt.Errorf("turnbench: log file: %w", err)
	}
	defer logFile.Close() // the child holds its own descriptor
	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, logFile, logFile
	start := cmd.Start
	if setup.cpus != nil {
		start = func() error { return setup.cpus.start(cmd) }
	}
	if err := start(); err != nil {
		return nil, fmt.Errorf("turnbench: start %s: %w", kind, err)
	}
	p := &serverProc{kind: kind, cmd: cmd, dir: dir, exited: make(chan struct{}),
		addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(port))}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	if err := p.waitReady(ctx); err != nil {
		p.stop()
		return nil, fmt.Errorf("turnbench: %s on port %d: %w (log: %s)", kind, port, err, tail(p.logPath()))
	}
	return p, nil
}

func (p *serverProc) pid() int { return p.cmd.Process.Pid }

func (p *serverProc) logPath() string { return filepath.Join(p.dir, p.kind+".log") }

// waitReady sends STUN Binding requests until one is answered.
func (p *serverProc) waitReady(ctx context.Context) error {
	conn, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(p.addr))
	if err != nil {
		return err
	}
	defer conn.Close()
	req := make([]byte, stunHeader)
	binary.BigEndian.PutUint16(req[0:2], bindingRequest)
	binary.BigEndian.PutUint32(req[4:8], stunMagic)
	buf := make([]byte, 1500)
	for deadline := time.Now().Add(readyLimit); time.Now().Before(deadline); {
		select {
		case <-p.exited:
			return fmt.Errorf("exited: %v", p.err)
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		_, _ = conn.Write(req)
		_ = conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if n, err := conn.Read(buf); err == nil && isBindingResponse(buf[:n]) {
			return nil
		}
	}
	return errors.New("no STUN answer within " + readyLimit.String())
}

// stop ends the server by its PID: SIGTERM, then SIGKILL.
func (p *serverProc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(stopLimit):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// freePort finds a loopback port free for UDP and for TCP (callbox binds
// both): on a busy machine a port the kernel hands out for UDP is often
// still held on the TCP side (TIME-WAIT of someone else's connection).
func freePort() (int, error) {
	var lastErr error
	for range 20 {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			return 0, fmt.Errorf("turnbench: free port: %w", err)
		}
		port := c.LocalAddr().(*net.UDPAddr).Port
		l, err := net.Listen("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		c.Close()
		if err != nil {
			lastErr = err
			continue
		}
		l.Close()
		return port, nil
	}
	return 0, fmt.Errorf("turnbench: no port free for both UDP and TCP: %w", lastErr)
}

// tail returns the end of a log file for an error message, or from its
// panic on when there is one (the stack's end says little).
func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if i := bytes.Index(b, []byte("panic: ")); i >= 0 {
		b = b[i:min(len(b), i+2000)]
	} else if len(b) > 600 {
		b = b[len(b)-600:]
	}
	return string(b)
}

// buildCallbox compiles cmd/callbox into dir.
func buildCallbox(ctx context.Context, dir string) (string, error) {
	out := filepath.Join(dir, "callbox")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "github.com/callbox/callbox/cmd/callbox")
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("turnbench: go build callbox (run from inside the repository, or pass -callbox): %w", err)
	}
	return out, nil
}

// raiseOpenFiles lifts the soft open-files limit to the hard one: the
// generator holds a socket per allocation, and the servers started after
// this inherit the raised limit (Go restores the original for children
// unless the limit was set explicitly).
func raiseOpenFiles() (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("turnbench: getrlimit: %w", err)
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("turnbench: setrlimit %d: %w", lim.Max, err)
	}
	return lim.Cur, nil
}
