package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/callbox/callbox/config"
	"github.com/callbox/callbox/turnserver"
	"golang.org/x/sys/unix"
)

const testSecret = "turnbench-test-secret-0123"

// startTURN runs callbox's TURN server in this process: the generator's
// control and data planes are then tested against the real thing without
// building a binary. CPU figures are this test process's.
func startTURN(t *testing.T) *turnserver.Server {
	t.Helper()
	cfg := config.Default().TURN
	cfg.Listen = "127.0.0.1:0"
	cfg.Secrets = []string{testSecret}
	cfg.AllowLoopbackPeers = true
	cfg.UDPSockets = 2
	cfg.UserQuota = 0
	s, err := turnserver.New(cfg, turnserver.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatalf("turnserver.New: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestRelayTrial(t *testing.T) {
	s := startTURN(t)
	server := s.UDPAddr().AddrPort()
	var trial atomic.Uint32
	var echoes []*echoPeer
	for range 2 {
		e, err := startEcho(&trial)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(e.close)
		echoes = append(echoes, e)
	}
	flows, err := setupFlows(server, testSecret, 6, echoes, time.Now().Add(30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		perFlow float64
		size    int
	}{
		{"small packets", 50, 200},
		{"large packets", 100, 1200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := runTrial(flows, echoes, &trial, os.Getpid(), tc.perFlow, tc.size, 400*time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			want := int64(tc.perFlow * 6 * 0.4)
			if r.sent != want {
				t.Fatalf("sent %d packets, want %d", r.sent, want)
			}
			// A loopback relay under test load may drop a little; the
			// point is that probes go round and are counted.
			if r.up < want*9/10 || r.down < want*9/10 || r.down > r.sent {
				t.Fatalf("sent %d, up %d, down %d", r.sent, r.up, r.down)
			}
			if len(r.rtts) != int(r.down) || r.rtts[0] <= 0 || r.rtts[len(r.rtts)-1] > 5*time.Second {
				t.Fatalf("%d RTTs for %d packets, min %v", len(r.rtts), r.down, r.rtts[0])
			}
			if r.cpuRun <= 0 || r.rss <= 0 {
				t.Fatalf("cpu %v, rss %d", r.cpuRun, r.rss)
			}
			checkLegs(t, r.samples)
			checkRTTTrace(t, r)
			checkPooled(t, r)
		})
	}
	releaseFlows(flows)
	deadline := time.Now().Add(5 * time.Second)
	for s.AllocationCount() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := s.AllocationCount(); n != 0 {
		t.Fatalf("%d allocations left after release", n)
	}
}

// checkLegs: every probe back carries its legs (the kernel stamped it at
// the echo peer and at the client), and they add up to its round trip. A
// leg may come out a little below 0 only from the wall and monotonic
// clocks drifting apart within the test.
func checkLegs(t *testing.T, samples []rttSample) {
	t.Helper()
	const drift = 50 * time.Microsecond
	for _, s := range samples {
		legs := []time.Duration{s.up, s.echo, s.down, s.reader}
		if s.up == 0 || s.up+s.echo+s.down+s.reader != s.rtt || slices.Min(legs) < -drift {
			t.Fatalf("probe sent at %v: rtt %v, legs up %v, echo %v, down %v, reader %v: want legs >= 0 adding up to the rtt",
				s.sent, s.rtt, s.up, s.echo, s.down, s.reader)
		}
	}
}

// checkPooled pools r's probes as the report does, twice: the tail of
// the pool is the tail of the probes, to the microsecond, and a window
// adds its probes.
func checkPooled(t *testing.T, r trialResult) {
	t.Helper()
	var p pooledRTT
	p.add(r.samples)
	p.add(r.samples)
	twice := slices.Sorted(slices.Values(append(slices.Clone(r.rtts), r.rtts...)))
	for _, pct := range []float64{50, 99, 99.9, 100} {
		if got, want := p.rtt.percentile(pct), percentile(twice, pct).Truncate(time.Microsecond); got != want {
			t.Errorf("pooled p%g = %v, want %v", pct, got, want)
		}
	}
	var downs []time.Duration
	for _, s := range r.samples {
		downs = append(downs, s.down, s.down)
	}
	slices.Sort(downs)
	if p.windows != 2 || p.rtt.n != 2*len(r.rtts) || p.legs[2].n != len(downs) ||
		p.legs[2].percentile(99) != max(0, percentile(downs, 99)).Truncate(time.Microsecond) {
		t.Errorf("pooled %d windows, %d probes, %d down legs, down p99 %v; want 2, %d, %d, %v", p.windows, p.rtt.n,
			p.legs[2].n, p.legs[2].percentile(99), 2*len(r.rtts), len(downs), percentile(downs, 99).Truncate(time.Microsecond))
	}
}

// checkRTTTrace writes r's -rtt-trace file and reads it back: a line per
// probe that came back, in send order, from 0.
func checkRTTTrace(t *testing.T, r trialResult) {
	t.Helper()
	b := &bench{o: options{rttTrace: filepath.Join(t.TempDir(), "t")}, traced: map[string]int{}}
	if err := b.writeRTTTrace("callbox", "a", r.samples); err != nil {
		t.Fatal(err)
	}
	text, err := os.ReadFile(b.o.rttTrace + ".callbox.a.1")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(text)), "\n")
	if len(lines) != int(r.down) {
		t.Fatalf("%d trace lines for %d probes back", len(lines), r.down)
	}
	last := -1.0
	for i, line := range lines {
		var sent, rtt, up, echo, down, reader float64
		if _, err := fmt.Sscanf(line, "%f %f %f %f %f %f", &sent, &rtt, &up, &echo, &down, &reader); err != nil || sent < last || rtt <= 0 || (i == 0 && sent != 0) {
			t.Fatalf("trace line %d %q after %.3f: want send times from 0 in order, a positive RTT and four legs", i, line, last)
		}
		last = sent
	}
}

func TestSetupRejected(t *testing.T) {
	s := startTURN(t)
	var trial atomic.Uint32
	e, err := startEcho(&trial)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.close)
	_, err = setupFlows(s.UDPAddr().AddrPort(), "wrong-secret-0123456789", 2, []*echoPeer{e}, time.Now().Add(10*time.Second))
	if err == nil || !strings.Contains(err.Error(), "2 of 2 allocations failed") {
		t.Fatalf("err = %v, want both allocations refused", err)
	}
}

func TestBinding(t *testing.T) {
	s := startTURN(t)
	r, err := runBinding(s.UDPAddr().AddrPort(), os.Getpid(), 2, 8, 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if r.answers < 100 || r.rate() <= 0 || r.cpuRun <= 0 {
		t.Fatalf("%d answers in %v, cpu %v", r.answers, r.elapsed, r.cpuRun)
	}
}

// TestFreePort: the port is free for TCP as well as UDP, as callbox
// binds both.
func TestFreePort(t *testing.T) {
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	u, err := net.ListenPacket("udp4", addr)
	if err != nil {
		t.Fatalf("udp %s: %v", addr, err)
	}
	u.Close()
	l, err := net.Listen("tcp4", addr)
	if err != nil {
		t.Fatalf("tcp %s: %v", addr, err)
	}
	l.Close()
}

func TestParseFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{name: "defaults"},
		{name: "many", args: []string{"-many", "-rounds", "1"}},
		{name: "zero rounds", args: []string{"-rounds", "0"}, wantErr: "-rounds"},
		{name: "tiny duration", args: []string{"-duration", "1ms"}, wantErr: "-duration"},
		{name: "unknown server", args: []string{"-servers", "eturnal"}, wantErr: "unknown server"},
		{name: "unknown scenario", args: []string{"-scenarios", "a,z"}, wantErr: "unknown scenario"},
		{name: "loss", args: []string{"-loss", "0"}, wantErr: "-loss"},
		{name: "window", args: []string{"-binding-window", "1000"}, wantErr: "-binding-window"},
		{name: "stray argument", args: []string{"extra"}, wantErr: "unexpected"},
		{name: "baseline", args: []string{"-baseline", "/bin/true", "-servers", "callbox,baseline,coturn"}},
		{name: "baseline without binary", args: []string{"-servers", "callbox,baseline"}, wantErr: "-baseline"},
		{name: "callbox env", args: []string{"-callbox-env", "GOMAXPROCS=1,GOGC=50"}},
		{name: "callbox env without value", args: []string{"-callbox-env", "GOMAXPROCS"}, wantErr: "KEY=VALUE"},
		{name: "max steal", args: []string{"-max-steal", "50ms"}},
		{name: "negative max steal", args: []string{"-max-steal", "-1s"}, wantErr: "-max-steal"},
		{name: "server cpus", args: []string{"-server-cpus", "1"}},
		{name: "server cpus backwards", args: []string{"-server-cpus", "3-1"}, wantErr: "-server-cpus"},
		{name: "server cpus not numbers", args: []string{"-server-cpus", "one"}, wantErr: "-server-cpus"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseFlags(tc.args, io.Discard)
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

// TestLeastStolenTrial: with -max-steal a window is measured again while
// its steal is over the limit, at most stealTries in all, and the least
// stolen counts.
func TestLeastStolenTrial(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		name      string
		limit     time.Duration
		steals    []time.Duration // of the successive windows
		wantSteal time.Duration
		wantTries int
	}{
		{name: "off", limit: 0, steals: []time.Duration{900 * ms}, wantSteal: 900 * ms, wantTries: 1},
		{name: "under the limit", limit: 50 * ms, steals: []time.Duration{50 * ms}, wantSteal: 50 * ms, wantTries: 1},
		{name: "second is clean", limit: 50 * ms, steals: []time.Duration{400 * ms, 10 * ms}, wantSteal: 10 * ms, wantTries: 2},
		{name: "all stolen, least kept", limit: 50 * ms, steals: []time.Duration{300 * ms, 900 * ms, 200 * ms}, wantSteal: 200 * ms, wantTries: 3},
		{name: "first least", limit: 50 * ms, steals: []time.Duration{100 * ms, 900 * ms, 200 * ms}, wantSteal: 100 * ms, wantTries: 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := &bench{o: options{maxSteal: tc.limit}, log: slog.New(slog.DiscardHandler)}
			tries := 0
			res, err := b.leastStolenTrial("callbox", "a", func() (trialResult, error) {
				tries++
				return trialResult{steal: tc.steals[tries-1]}, nil
			})
			if err != nil || res.steal != tc.wantSteal || tries != tc.wantTries || b.retried != tc.wantTries-1 {
				t.Fatalf("steal %v after %d tries (retried %d), err %v; want %v after %d", res.steal, tries, b.retried, err, tc.wantSteal, tc.wantTries)
			}
		})
	}
}

// TestRunCoturn runs the whole command, briefly, against coturn: process
// start and stop, every scenario kind, the report.
func TestRunCoturn(t *testing.T) {
	if _, err := exec.LookPath("turnserver"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("turnserver not found (CI=true): install the Debian package coturn")
		}
		t.Skip("turnserver not found: install the Debian package coturn to run this test")
	}
	if testing.Short() {
		t.Skip("starts coturn; skipped with -short")
	}
	var allowed unix.CPUSet
	if err := unix.SchedGetaffinity(0, &allowed); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		extra []string
		want  []string
	}{
		{name: "shared CPUs"},
		// The last CPU for coturn, the others for the generator.
		{name: "server CPUs", extra: []string{"-server-cpus", strconv.Itoa(lastCPU(allowed))},
			want: []string{"The servers ran on CPU " + strconv.Itoa(lastCPU(allowed)) + " (coturn with --relay-threads=1)"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.extra != nil && allowed.Count() < 2 {
				t.Skip("one CPU: none to spare for -server-cpus")
			}
			var out, errs bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			args := append([]string{"-servers", "coturn", "-rounds", "1", "-duration", "300ms",
				"-search-duration", "200ms", "-search-steps", "0", "-scenarios", "a,c,d"}, tc.extra...)
			if err := run(ctx, args, &out, &errs); err != nil {
				t.Fatalf("run: %v\n%s", err, errs.String())
			}
			report := out.String()
			for _, want := range append([]string{"| (a) 20 allocations", "| (c) 4 allocations", "| (d) STUN Binding | coturn |", "coturn 4."}, tc.want...) {
				if !strings.Contains(report, want) {
					t.Errorf("report lacks %q:\n%s", want, report)
				}
			}
			var after unix.CPUSet
			if err := unix.SchedGetaffinity(0, &after); err != nil || after != allowed {
				t.Errorf("this thread's CPUs after run: %v (%v), want them back as before", after, err)
			}
		})
	}
}
