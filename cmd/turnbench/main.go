// Command turnbench measures callbox's TURN relay against coturn's
// turnserver on this machine: both run one after the other under the same
// load from the same generator, for several rounds in alternating order,
// and the result is a Markdown table with the spread over rounds.
//
//	go run ./cmd/turnbench [-rounds 3] [-duration 5s] [-many] [-callbox PATH]
//
// Scenarios: (a) 20 allocations × 50 pps × 1000 B, (b) 200 × 50 pps × 200 B,
// (c) 4 allocations at the highest rate with loss under -loss, (d) STUN
// Binding answers per second, (e, with -many) 2,000 allocations × 5 pps.
// See docs/performance.md for what each column means.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	ossignal "os/signal"
	"runtime/pprof"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == harnessCmd {
		if err := serveTURN(os.Args[2:], os.Stderr); err != nil {
			fmt.Fprintln(os.Stderr, "turnbench:", err)
			os.Exit(1)
		}
		return
	}
	ctx, stop := ossignal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "turnbench:", err)
		}
		os.Exit(1)
	}
}

// options are the command's flags.
type options struct {
	callbox        string
	coturn         string
	servers        string
	rounds         int
	duration       time.Duration
	searchDuration time.Duration
	searchSteps    int
	searchSize     int
	lossPct        float64
	many           bool
	scenarios      string
	bindSockets    int
	bindWindow     int
	keep           bool
	cpuProfile     string
	callboxProfile string
	callboxEnv     string
	baseline       string
	verbose        bool
	rttTrace       string
	maxSteal       time.Duration
	serverCPUs     string
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("turnbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.callbox, "callbox", "", "callbox `binary` to measure; empty: go build ./cmd/callbox into a temp folder")
	fs.StringVar(&o.coturn, "coturn", "turnserver", "coturn's turnserver `binary` (Debian package coturn)")
	fs.StringVar(&o.servers, "servers", "callbox,coturn", "servers to measure, comma-separated")
	fs.IntVar(&o.rounds, "rounds", 3, "rounds; each runs every server once, the order alternating")
	fs.DurationVar(&o.duration, "duration", 5*time.Second, "measured time of each scenario")
	fs.DurationVar(&o.searchDuration, "search-duration", 2*time.Second, "time of each trial of the rate search (c)")
	fs.IntVar(&o.searchSteps, "search-steps", 4, "bisection steps of the rate search after the doubling phase")
	fs.IntVar(&o.searchSize, "search-size", 1000, "payload bytes of the rate search (c)")
	fs.Float64Var(&o.lossPct, "loss", 0.1, "loss in percent at or above which a rate of the search (c) fails")
	fs.BoolVar(&o.many, "many", false, "also run (e): 2,000 allocations × 5 pps × 200 B")
	fs.StringVar(&o.scenarios, "scenarios", "a,b,c,d", "scenarios to run, comma-separated (e is added by -many)")
	fs.IntVar(&o.bindSockets, "binding-sockets", 8, "client sockets of the Binding scenario (d); several, so SO_REUSEPORT servers spread them")
	fs.IntVar(&o.bindWindow, "binding-window", 16, "requests in flight per socket in (d)")
	fs.BoolVar(&o.keep, "keep", false, "keep the servers' temp folders (configs and logs)")
	fs.BoolVar(&o.verbose, "v", false, "log every trial of the rate search")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write the generator's own CPU profile to `file` (what the load costs)")
	fs.StringVar(&o.callboxProfile, "callbox-cpuprofile", "", "profile callbox's TURN server: run it in this binary's harness (turnserver.New on the same config, no hub) and write its CPU profile of each round to `prefix`.N")
	fs.StringVar(&o.baseline, "baseline", "", "another callbox `binary` (say, built from an older commit), measured as server \"baseline\" when -servers names it")
	fs.StringVar(&o.callboxEnv, "callbox-env", "", "extra environment of the callbox process, comma-separated `KEY=VALUE` pairs (e.g. GOGC=50,GODEBUG=gctrace=1)")
	fs.StringVar(&o.rttTrace, "rtt-trace", "", "write each measured window's probes (send time, RTT and its legs: up, echo, down, reader; ms) to `prefix`.SERVER.SCENARIO.N")
	fs.DurationVar(&o.maxSteal, "max-steal", 0, "measure a window of (a), (b) or (e) again when the hypervisor's steal time in it exceeded `limit` (up to 3 tries; the least stolen counts); 0: never")
	fs.StringVar(&o.serverCPUs, "server-cpus", "", "run the servers on these CPUs (say 1, or 2-3) and the generator on the others; coturn gets as many relay threads as CPUs, as on a machine of that size; empty: everything shares every CPU")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if o.serverCPUs != "" {
		if _, err := parseCPUList(o.serverCPUs); err != nil {
			return o, fmt.Errorf("-server-cpus: %w", err)
		}
	}
	for _, kv := range splitList(o.callboxEnv) {
		if !strings.Contains(kv, "=") {
			return o, fmt.Errorf("-callbox-env %q: want KEY=VALUE", kv)
		}
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.rounds < 1 || o.rounds > 100 {
		return o, fmt.Errorf("-rounds %d: must be between 1 and 100", o.rounds)
	}
	if o.duration < 100*time.Millisecond || o.duration > 10*time.Minute {
		return o, fmt.Errorf("-duration %s: must be between 100ms and 10m", o.duration)
	}
	if o.searchDuration < 100*time.Millisecond || o.searchDuration > time.Minute {
		return o, fmt.Errorf("-search-duration %s: must be between 100ms and 1m", o.searchDuration)
	}
	if o.searchSteps < 0 || o.searchSteps > 10 {
		return o, fmt.Errorf("-search-steps %d: must be between 0 and 10", o.searchSteps)
	}
	if o.searchSize < probeHeader || o.searchSize > 1400 {
		return o, fmt.Errorf("-search-size %d: must be between %d and 1400", o.searchSize, probeHeader)
	}
	if o.lossPct <= 0 || o.lossPct > 50 {
		return o, fmt.Errorf("-loss %g: must be above 0 and at most 50", o.lossPct)
	}
	if o.maxSteal < 0 {
		return o, fmt.Errorf("-max-steal %s: must not be negative", o.maxSteal)
	}
	if o.bindSockets < 1 || o.bindSockets > 64 || o.bindWindow < 1 || o.bindWindow > batchSize {
		return o, fmt.Errorf("-binding-sockets must be 1..64 and -binding-window 1..%d", batchSize)
	}
	for _, s := range splitList(o.servers) {
		if s != "callbox" && s != "coturn" && s != "baseline" {
			return o, fmt.Errorf("-servers: unknown server %q (callbox, coturn, baseline)", s)
		}
		if s == "baseline" && o.baseline == "" {
			return o, errors.New("-servers baseline needs -baseline PATH")
		}
	}
	if len(splitList(o.servers)) == 0 {
		return o, errors.New("-servers: empty")
	}
	for _, s := range splitList(o.scenarios) {
		if scenarioByID(s) == nil {
			return o, fmt.Errorf("-scenarios: unknown scenario %q (a, b, c, d, e)", s)
		}
	}
	return o, nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	level := slog.LevelInfo
	if o.verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	if _, err := raiseOpenFiles(); err != nil {
		log.Warn("open files limit not raised", "err", err)
	}
	servers := splitList(o.servers)
	setup := serverSetup{secret: "turnbench-secret-0123456789", relayMin: 40000, relayMax: 47999, profiles: new(int)}
	if setup.coturn, err = exec.LookPath(o.coturn); err != nil && slices.Contains(servers, "coturn") {
		return fmt.Errorf("coturn's turnserver: %w (install the Debian package coturn, or -servers callbox)", err)
	}
	setup.callboxEnv = splitList(o.callboxEnv)
	if o.serverCPUs != "" {
		var allowed unix.CPUSet
		if err := unix.SchedGetaffinity(0, &allowed); err != nil {
			return fmt.Errorf("-server-cpus: %w", err)
		}
		if setup.cpus, err = newCPUSplit(o.serverCPUs, allowed); err != nil {
			return fmt.Errorf("-server-cpus: %w", err)
		}
		if err := setup.cpus.pinGenerator(); err != nil {
			return err
		}
		defer pinThreads(&allowed) //nolint:errcheck // back as it was, for a caller that goes on (the tests)
	}
	setup.baseline = o.baseline
	if o.callboxProfile != "" {
		if setup.harness, err = os.Executable(); err != nil {
			return fmt.Errorf("-callbox-cpuprofile: %w", err)
		}
		setup.profilePrefix = o.callboxProfile
	}
	if slices.Contains(servers, "callbox") && setup.harness == "" {
		setup.callbox = o.callbox
		if setup.callbox == "" {
			dir, err := os.MkdirTemp("", "turnbench-build-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(dir)
			log.Info("building callbox")
			if setup.callbox, err = buildCallbox(ctx, dir); err != nil {
				return err
			}
		}
	}
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	b := &bench{o: o, setup: setup, log: log, results: map[string]map[string][]row{}, traced: map[string]int{}}
	if err := b.runRounds(ctx, servers); err != nil {
		return err
	}
	return writeReport(stdout, b, servers, args)
}
