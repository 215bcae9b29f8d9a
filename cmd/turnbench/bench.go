package main

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"
)

// scenario is one load of the comparison.
type scenario struct {
	id      string
	title   string
	kind    string // "relay", "search" or "binding"
	allocs  int
	perFlow float64 // packets per second per allocation
	size    int     // payload bytes
}

var scenarios = []scenario{
	{id: "a", title: "20 allocations × 50 pps × 1000 B", kind: "relay", allocs: 20, perFlow: 50, size: 1000},
	{id: "b", title: "200 allocations × 50 pps × 200 B", kind: "relay", allocs: 200, perFlow: 50, size: 200},
	{id: "c", title: "4 allocations, highest loss-free rate", kind: "search", allocs: 4},
	{id: "d", title: "STUN Binding", kind: "binding"},
	{id: "e", title: "2,000 allocations × 5 pps × 200 B", kind: "relay", allocs: 2000, perFlow: 5, size: 200},
}

func scenarioByID(id string) *scenario {
	for i := range scenarios {
		if scenarios[i].id == id {
			return &scenarios[i]
		}
	}
	return nil
}

// row is one scenario measured on one server in one round.
type row struct {
	up, down   float64 // relayed packets per second (d: answers per second in up)
	loss       float64 // percent
	p50, p99   float64 // ms
	cpu        float64 // µs per relayed packet (d: per answer), all threads' run time
	cpuStat    float64 // the same from utime+stime
	rssMiB     float64
	searchRate float64 // (c): highest passing offered rate, pps over all flows
	// diagnostics for the log
	genCPU      float64 // the generator's CPU, µs per relayed packet
	kernelDrops int64
	steal       time.Duration
	legsP99     string // "up/echo/down/reader" p99 in ms, when the probes carried them
}

type bench struct {
	o       options
	setup   serverSetup
	log     *slog.Logger
	results map[string]map[string][]row      // scenario id, server kind
	traced  map[string]int                   // -rtt-trace windows written, by "SERVER.SCENARIO"
	pooled  map[string]map[string]*pooledRTT // scenario id, server kind: the quiet windows' probes
	retried int                              // windows measured again for steal (-max-steal)
	started time.Time
	// load averages at the start and the end, for the report
	loadStart, loadEnd string
}

func (b *bench) selected() []scenario {
	var out []scenario
	ids := splitList(b.o.scenarios)
	if b.o.many && !slices.Contains(ids, "e") {
		ids = append(ids, "e")
	}
	for _, sc := range scenarios {
		if slices.Contains(ids, sc.id) {
			out = append(out, sc)
		}
	}
	return out
}

// runRounds runs every server once per round, reversing the order in odd
// rounds so drift on the machine (thermal, other load) hits both alike.
func (b *bench) runRounds(ctx context.Context, servers []string) error {
	b.started = time.Now()
	b.loadStart = loadAverage()
	for r := range b.o.rounds {
		order := slices.Clone(servers)
		if r%2 == 1 {
			slices.Reverse(order)
		}
		for _, kind := range order {
			if err := ctx.Err(); err != nil {
				return err
			}
			b.log.Info("round", "n", r+1, "of", b.o.rounds, "server", kind)
			if err := b.runServer(ctx, kind); err != nil {
				return fmt.Errorf("round %d, %s: %w", r+1, kind, err)
			}
		}
	}
	b.loadEnd = loadAverage()
	return nil
}

func (b *bench) runServer(ctx context.Context, kind string) error {
	p, err := startServer(ctx, kind, b.setup)
	if err != nil {
		return err
	}
	defer func() {
		p.stop()
		if b.o.keep {
			b.log.Info("kept", "server", kind, "dir", p.dir)
		} else {
			os.RemoveAll(p.dir)
		}
	}()
	var trial atomic.Uint32
	// Two echo peers so the echo is not one core's work at the top rates.
	var echoes []*echoPeer
	defer func() {
		for _, e := range echoes {
			e.close()
		}
	}()
	for range 2 {
		e, err := startEcho(&trial)
		if err != nil {
			return err
		}
		echoes = append(echoes, e)
	}
	for _, sc := range b.selected() {
		if err := ctx.Err(); err != nil {
			return err
		}
		select {
		case <-p.exited:
			return fmt.Errorf("%s exited: %v (log: %s)", kind, p.err, tail(p.logPath()))
		default:
		}
		rw, err := b.runScenario(p, sc, echoes, &trial)
		if err != nil {
			return fmt.Errorf("(%s): %w", sc.id, err)
		}
		b.log.Info("measured", "server", kind, "scenario", sc.id, "up_pps", int(rw.up), "down_pps", int(rw.down),
			"loss_pct", fmt.Sprintf("%.3f", rw.loss), "p99_ms", fmt.Sprintf("%.2f", rw.p99),
			"cpu_us", fmt.Sprintf("%.2f", rw.cpu), "cpu_stat_us", fmt.Sprintf("%.2f", rw.cpuStat),
			"rss_mib", fmt.Sprintf("%.1f", rw.rssMiB), "generator_cpu_us", fmt.Sprintf("%.2f", rw.genCPU),
			"kernel_drops", rw.kernelDrops, "steal_ms", rw.steal.Milliseconds(), "legs_p99_ms", rw.legsP99, "load", loadAverage())
		if b.results[sc.id] == nil {
			b.results[sc.id] = map[string][]row{}
		}
		b.results[sc.id][kind] = append(b.results[sc.id][kind], rw)
		time.Sleep(300 * time.Millisecond) // let the server settle between scenarios
	}
	return nil
}

func (b *bench) runScenario(p *serverProc, sc scenario, echoes []*echoPeer, trial *atomic.Uint32) (row, error) {
	if sc.kind == "binding" {
		r, err := runBinding(p.addr, p.pid(), b.o.bindSockets, b.o.bindWindow, b.o.duration)
		if err != nil {
			return row{}, err
		}
		return row{up: r.rate(), cpu: r.cpuPerAnswer(false), cpuStat: r.cpuPerAnswer(true),
			rssMiB: float64(r.rss) / (1 << 20)}, nil
	}
	flows, err := setupFlows(p.addr, b.setup.secret, sc.allocs, echoes, time.Now().Add(2*time.Minute))
	if err != nil {
		return row{}, err
	}
	defer releaseFlows(flows)
	var res trialResult
	var rate float64
	if sc.kind == "search" {
		res, rate, err = b.searchRate(p, flows, echoes, trial)
	} else {
		res, err = b.leastStolenTrial(p.kind, sc.id, func() (trialResult, error) {
			return runTrial(flows, echoes, trial, p.pid(), sc.perFlow, sc.size, b.o.duration)
		})
		if err == nil && b.o.rttTrace != "" {
			err = b.writeRTTTrace(p.kind, sc.id, res.samples)
		}
		if err == nil && res.steal <= b.quietLimit() {
			b.pool(p.kind, sc.id).add(res.samples)
		}
	}
	if err != nil {
		return row{}, err
	}
	return rowOf(res, rate), nil
}

// stealTries is how many windows -max-steal measures at most.
const stealTries = 3

// leastStolenTrial measures sc's window, and again while the hypervisor
// stole more than -max-steal of it (a 5 s window of this machine is
// normally robbed of 0–50 ms; a bad one of a second and more, which makes
// that round's tail the neighbours', not the server's). Of the tries, the
// least stolen counts, so both servers meet the same rule.
func (b *bench) leastStolenTrial(server, scenario string, measure func() (trialResult, error)) (trialResult, error) {
	best, err := measure()
	for try := 2; err == nil && b.o.maxSteal > 0 && best.steal > b.o.maxSteal && try <= stealTries; try++ {
		b.log.Info("steal over the limit: measuring again", "server", server, "scenario", scenario,
			"steal_ms", best.steal.Milliseconds(), "try", try)
		b.retried++
		var res trialResult
		if res, err = measure(); err == nil && res.steal < best.steal {
			best = res
		}
	}
	return best, err
}

// quietLimit is the steal a window may have had and still count in the
// report's paired and pooled comparisons: -max-steal, or quietSteal
// without it.
func (b *bench) quietLimit() time.Duration {
	if b.o.maxSteal > 0 {
		return b.o.maxSteal
	}
	return quietSteal
}

// pool is where kind's probes of scenario id go.
func (b *bench) pool(kind, id string) *pooledRTT {
	if b.pooled == nil {
		b.pooled = map[string]map[string]*pooledRTT{}
	}
	if b.pooled[id] == nil {
		b.pooled[id] = map[string]*pooledRTT{}
	}
	if b.pooled[id][kind] == nil {
		b.pooled[id][kind] = &pooledRTT{}
	}
	return b.pooled[id][kind]
}

// writeRTTTrace writes every probe of a measured window as "sent_ms rtt_ms
// up_ms echo_ms down_ms reader_ms" lines (rttSample; legs 0 where unknown)
// in send order, to PREFIX.SERVER.SCENARIO.N (N counts that
// server's windows of that scenario), for finding when a tail happens.
func (b *bench) writeRTTTrace(kind, scenario string, samples []rttSample) error {
	b.traced[kind+"."+scenario]++
	path := fmt.Sprintf("%s.%s.%s.%d", b.o.rttTrace, kind, scenario, b.traced[kind+"."+scenario])
	slices.SortFunc(samples, func(x, y rttSample) int { return cmp.Compare(x.sent, y.sent) })
	var buf bytes.Buffer
	for _, s := range samples {
		fmt.Fprintf(&buf, "%.3f %.3f %.3f %.3f %.3f %.3f\n", ms(s.sent-samples[0].sent), ms(s.rtt),
			ms(s.up), ms(s.echo), ms(s.down), ms(s.reader))
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("turnbench: rtt trace: %w", err)
	}
	return nil
}

func rowOf(r trialResult, rate float64) row {
	return row{
		up: r.upPPS(), down: r.downPPS(), loss: r.lossPct(),
		p50: ms(percentile(r.rtts, 50)), p99: ms(percentile(r.rtts, 99)),
		cpu: r.cpuPerPacket(false), cpuStat: r.cpuPerPacket(true),
		rssMiB: float64(r.rss) / (1 << 20), searchRate: rate,
		genCPU: float64(r.genCPU) / float64(time.Microsecond) / float64(max(1, r.up+r.down)), kernelDrops: r.kernelDrops, steal: r.steal,
		legsP99: legsP99(r.samples),
	}
}

// legsP99 is the p99 of each leg of the round trips (rttSample), in ms, as
// "up/echo/down/reader": which leg a server's tail is in. Each leg's own
// p99, so they do not add up to the round trip's.
func legsP99(samples []rttSample) string {
	legs := [4][]time.Duration{}
	for _, s := range samples {
		if l, ok := s.legs(); ok {
			for i, d := range l {
				legs[i] = append(legs[i], d)
			}
		}
	}
	if len(legs[0]) == 0 {
		return "-"
	}
	parts := make([]string, len(legs))
	for i, l := range legs {
		slices.Sort(l)
		parts[i] = fmt.Sprintf("%.2f", ms(percentile(l, 99)))
	}
	return strings.Join(parts, "/")
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// Bounds of the rate search, per allocation: the doubling starts low
// enough for any server to pass and stops at a rate no loopback relay
// on a small machine reaches.
const (
	searchStart = 1000.0
	searchMax   = 512000.0
)

// searchRate finds the highest rate the server relays with loss under
// -loss: doubling from searchStart until a trial fails, then bisecting.
// A trial also fails when the generator could not offer 97 % of the rate,
// since the machine then cannot carry it either.
func (b *bench) searchRate(p *serverProc, flows []*flow, echoes []*echoPeer, trial *atomic.Uint32) (trialResult, float64, error) {
	var best trialResult
	// A rate fails only when two trials in a row fail: on a shared machine
	// one burst of someone else's work must not end the search.
	pass := func(perFlow float64) (bool, error) {
		for range 2 {
			time.Sleep(200 * time.Millisecond) // let queues of the last trial empty
			r, err := runTrial(flows, echoes, trial, p.pid(), perFlow, b.o.searchSize, b.o.searchDuration)
			if err != nil {
				return false, err
			}
			ok := r.lossPct() < b.o.lossPct && r.sentPPS() >= 0.97*r.target
			b.log.Debug("search trial", "server", p.kind, "offered", int(r.target), "sent", int(r.sentPPS()),
				"loss_pct", r.lossPct(), "pass", ok)
			if ok {
				best = r
				return true, nil
			}
		}
		return false, nil
	}
	lo, hi := 0.0, 0.0
	for rate := searchStart; rate <= searchMax; rate *= 2 {
		ok, err := pass(rate)
		if err != nil {
			return best, 0, err
		}
		if !ok {
			hi = rate
			break
		}
		lo = rate
	}
	if hi == 0 {
		return best, lo * float64(len(flows)), nil
	}
	for range b.o.searchSteps {
		mid := (lo + hi) / 2
		ok, err := pass(mid)
		if err != nil {
			return best, 0, err
		}
		if ok {
			lo = mid
		} else {
			hi = mid
		}
	}
	return best, lo * float64(len(flows)), nil
}
