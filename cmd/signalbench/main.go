// Command signalbench measures signaling servers under load: callbox's hub
// and, side by side in the same run, the PeerJS server (npm "peer").
//
// For each server and each N it starts a fresh server process, opens N
// WebSocket clients in rooms of -room peers, and measures the join rate, the
// server's RSS growth per idle connection, and the latency of relayed signal
// messages at -rate messages per second for -duration. It prints a Markdown
// table on stdout and its progress on stderr.
//
//	go run ./cmd/signalbench -n 1000,10000 -room 2 -rate 5000 -duration 10s
//
// Run it from inside the callbox module: it builds ./cmd/callbox and runs
// bench/peerjs (installing it with npm ci when node_modules is missing).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	ossignal "os/signal"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := ossignal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "signalbench:", err)
		os.Exit(2)
	}
}

// options are the command's flags.
type options struct {
	counts      []int
	servers     []string
	room        int
	rate        float64
	duration    time.Duration
	settle      time.Duration
	concurrency int
	joinTimeout time.Duration
	repo        string
	callbox     string
	cpuProfile  string
	latencyLog  string
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("signalbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: signalbench [flags]\n\n"+
			"Runs callbox's hub and the PeerJS server one after the other, a fresh process for\n"+
			"each -n, and prints a Markdown table: join rate, KiB per idle connection, message\n"+
			"rate achieved, p50/p99 relay latency, errors.\n\nflags:\n")
		fs.PrintDefaults()
	}
	var o options
	counts := fs.String("n", "1000,10000", "comma-separated `counts` of WebSocket clients, one run each")
	servers := fs.String("servers", "callbox,peerjs", "comma-separated servers to measure: callbox, peerjs")
	fs.IntVar(&o.room, "room", 2, "clients per room (PeerJS: peers that address each other)")
	fs.Float64Var(&o.rate, "rate", 5000, "signal messages per second, in total, during the message phase")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "length of the message phase")
	fs.DurationVar(&o.settle, "settle", 3*time.Second, "wait between the last join and the idle RSS reading")
	fs.IntVar(&o.concurrency, "concurrency", 100, "joins in flight at once")
	fs.DurationVar(&o.joinTimeout, "join-timeout", 10*time.Second, "per client, from dial to the join answer")
	fs.StringVar(&o.repo, "repo", ".", "a `dir` inside the callbox module (its root holds cmd/callbox and bench/peerjs)")
	fs.StringVar(&o.callbox, "callbox", "", "a prebuilt callbox `binary`; empty builds ./cmd/callbox")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write the load client's own CPU profile to `file` (the servers are not profiled)")
	fs.StringVar(&o.latencyLog, "latency-log", "", "write every message's send time and latency (µs) to `prefix`-SERVER-N.txt")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	var err error
	if o.counts, err = parseCounts(*counts); err != nil {
		return o, err
	}
	for _, s := range strings.Split(*servers, ",") {
		switch s = strings.TrimSpace(s); s {
		case "callbox", "peerjs":
			o.servers = append(o.servers, s)
		default:
			return o, fmt.Errorf("-servers: %q is not callbox or peerjs", s)
		}
	}
	switch {
	case o.room < 2:
		return o, fmt.Errorf("-room %d: must be >= 2 (a signal needs a peer)", o.room)
	case o.rate <= 0 || o.rate > 1e6:
		return o, fmt.Errorf("-rate %g: must be > 0 and <= 1000000", o.rate)
	case o.duration <= 0 || o.duration > 10*time.Minute:
		return o, fmt.Errorf("-duration %s: must be > 0 and <= 10m", o.duration)
	case o.settle < 0 || o.settle > time.Minute:
		return o, fmt.Errorf("-settle %s: must be between 0 and 1m", o.settle)
	case o.concurrency < 1 || o.concurrency > 10000:
		return o, fmt.Errorf("-concurrency %d: must be between 1 and 10000", o.concurrency)
	case o.joinTimeout <= 0:
		return o, fmt.Errorf("-join-timeout %s: must be > 0", o.joinTimeout)
	}
	for _, n := range o.counts {
		if n%o.room != 0 {
			return o, fmt.Errorf("-n %d is not a multiple of -room %d", n, o.room)
		}
	}
	return o, nil
}

// parseCounts reads "1000,10000". The bound is the open-files limit: one
// socket per client in this process and one in the server.
func parseCounts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 2 || n > 19000 {
			return nil, fmt.Errorf("-n: %q must be counts between 2 and 19000, as 1000,10000", s)
		}
		out = append(out, n)
	}
	return out, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	// Fewer collections in the load client keep its own pauses out of the
	// servers' latencies; its memory is not measured.
	debug.SetGCPercent(400)
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return fmt.Errorf("signalbench: -cpuprofile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("signalbench: -cpuprofile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	limit, err := raiseOpenFiles()
	if err != nil {
		return err
	}
	if need := uint64(maxOf(o.counts) + 256); limit < need {
		return fmt.Errorf("open-files limit %d is below the %d needed for -n %d", limit, need, maxOf(o.counts))
	}
	repo, err := repoRoot(o.repo)
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "signalbench-")
	if err != nil {
		return fmt.Errorf("signalbench: temp dir: %w", err)
	}
	defer os.RemoveAll(tmp)
	l := &launcher{log: log, repo: repo, tmp: tmp, callbox: o.callbox}

	var results []result
	var errs []error
	for _, name := range o.servers {
		for _, n := range o.counts {
			if ctx.Err() != nil {
				break
			}
			res, err := runOne(ctx, log, l, name, n, o)
			if err != nil {
				log.Error("run failed", "server", name, "n", n, "err", err)
				errs = append(errs, fmt.Errorf("%s n=%d: %w", name, n, err))
				continue
			}
			results = append(results, res)
		}
	}
	fmt.Fprintf(stdout, "\n%s", table(results, o))
	return errors.Join(append(errs, ctx.Err())...)
}

// runOne starts a fresh server, measures it and stops it.
func runOne(ctx context.Context, log *slog.Logger, l *launcher, name string, n int, o options) (res result, err error) {
	var srv *server
	var proto protocol
	switch name {
	case "callbox":
		srv, err = l.startCallbox(ctx, n, o.room, o.rate)
		proto = callboxProto{}
	default:
		srv, err = l.startPeerJS(ctx, n)
		proto = peerjsProto{}
	}
	if err != nil {
		return res, err
	}
	defer func() {
		if serr := srv.stop(); serr != nil && err == nil {
			err = serr
		}
	}()
	if lim, err := readOpenFilesLimit(srv.pid()); err == nil && lim < uint64(n+64) {
		return res, fmt.Errorf("%s (pid %d) may open only %d files; %d clients need more", name, srv.pid(), lim, n)
	}
	log.Info("measuring", "server", name, "pid", srv.pid(), "url", srv.base, "n", n, "room", o.room)
	return measure(ctx, log, proto, srv, loadConfig{
		N: n, Room: o.room, Rate: o.rate, Duration: o.duration, Settle: o.settle,
		Concurrency: o.concurrency, JoinTimeout: o.joinTimeout, LatencyLog: o.latencyLog,
	})
}

func maxOf(xs []int) int {
	m := 0
	for _, x := range xs {
		m = max(m, x)
	}
	return m
}

// table renders the results as Markdown.
func table(rs []result, o options) string {
	var b strings.Builder
	fmt.Fprintf(&b, "rooms of %d; message phase: %g msg/s for %s\n\n", o.room, o.rate, o.duration)
	b.WriteString("| server | N | join rate/s | KiB per idle conn | msg rate/s | p50 | p99 | max | CPU/join | CPU/msg | errors | load |\n")
	b.WriteString("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, r := range rs {
		fmt.Fprintf(&b, "| %s | %d | %.0f | %.1f | %.0f | %s | %s | %s | %s | %s | %s | %.1f |\n",
			r.Server, r.N, r.JoinRate, r.KiBPerConn(), r.MsgRate,
			fmtLatency(r.P50), fmtLatency(r.P99), fmtLatency(r.Max),
			fmtLatency(r.CPUPerJoin), fmtLatency(r.CPUPerMsg), fmtErrors(r), r.LoadAvg)
	}
	b.WriteString("\nCPU/join, CPU/msg: the server's CPU time (user+system) per join and per relayed message, " +
		"heartbeats included. load: the machine's 1-minute load average at the end of the run " +
		"(2 cores; above 2, other work skews the rates and latencies, much less the CPU and memory figures).\n")
	return b.String()
}

func fmtLatency(d time.Duration) string {
	switch {
	case d < 10*time.Microsecond:
		return fmt.Sprintf("%.1f µs", float64(d)/float64(time.Microsecond))
	case d < time.Millisecond:
		return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond))
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	}
}

// fmtErrors is the error count with its categories, "0" for a clean run.
func fmtErrors(r result) string {
	if r.Errors == 0 {
		return "0"
	}
	var parts []string
	for cat, n := range r.ErrorsByCategory {
		switch cat {
		case "lost":
			n = r.Sent - r.Received
		case "not joined":
			n = int64(r.N - r.Joined)
		}
		parts = append(parts, fmt.Sprintf("%s %d", cat, n))
	}
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}
