package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"
)

// writeReport prints the Markdown: machine, command, one table of every
// scenario with the median and the min–max over rounds, and the
// callbox÷coturn ratios issue 7 sets targets for.
func writeReport(w io.Writer, b *bench, servers []string, args []string) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "Measured %s UTC on %s; %d rounds, %s per scenario, took %s; load average %s at the start, %s at the end.\n\n",
		b.started.UTC().Format("2006-01-02 15:04"), machine(), b.o.rounds, b.o.duration,
		time.Since(b.started).Round(time.Second), b.loadStart, b.loadEnd)
	fmt.Fprintf(bw, "Command: `go run ./cmd/turnbench %s`\n\n", strings.Join(args, " "))
	fmt.Fprintf(bw, "Servers: %s.\n\n", versions(b.setup, servers))
	if c := b.setup.cpus; c != nil {
		fmt.Fprintf(bw, "The servers ran on CPU %s (coturn with --relay-threads=%d), the generator on the other CPUs.\n\n", c.serverList, c.serverCPUs())
	}
	if b.o.maxSteal > 0 {
		fmt.Fprintf(bw, "Windows of (a), (b), (e) robbed of more than %s by the hypervisor (steal) were measured again, up to %d tries, the least stolen counting: %d measured again.\n\n", b.o.maxSteal, stealTries, b.retried)
	}
	fmt.Fprintln(bw, "Each cell: median (min–max) over rounds. Up: client → peer packets per second as the echo peer received them; down: back at the clients. CPU: the server process's time on CPU per relayed packet (each direction counts once), from /proc/PID/task/*/schedstat; \"stat\": the same from utime+stime in /proc/PID/stat (10 ms ticks). RSS at the end of the window.")
	fmt.Fprintln(bw)
	fmt.Fprintln(bw, "| Scenario | Server | Up pkt/s | Down pkt/s | Loss % | RTT p50 ms | RTT p99 ms | CPU µs/pkt | CPU µs/pkt (stat) | RSS MiB |")
	fmt.Fprintln(bw, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, sc := range b.selected() {
		for _, kind := range servers {
			rows := b.results[sc.id][kind]
			if len(rows) == 0 {
				continue
			}
			col := func(f func(row) float64) spread {
				vals := make([]float64, len(rows))
				for i, r := range rows {
					vals[i] = f(r)
				}
				return spreadOf(vals)
			}
			title := fmt.Sprintf("(%s) %s", sc.id, sc.title)
			if sc.kind == "binding" {
				fmt.Fprintf(bw, "| %s | %s | %s answers/s | – | – | – | – | %s | %s | %s |\n", title, kind,
					col(func(r row) float64 { return r.up }).format(0),
					col(func(r row) float64 { return r.cpu }).format(2),
					col(func(r row) float64 { return r.cpuStat }).format(2),
					col(func(r row) float64 { return r.rssMiB }).format(1))
				continue
			}
			if sc.kind == "search" {
				title = fmt.Sprintf("(c) 4 allocations × %d B, highest rate with loss < %g %%", b.o.searchSize, b.o.lossPct)
			}
			fmt.Fprintf(bw, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", title, kind,
				col(func(r row) float64 { return r.up }).format(0),
				col(func(r row) float64 { return r.down }).format(0),
				col(func(r row) float64 { return r.loss }).format(3),
				col(func(r row) float64 { return r.p50 }).format(2),
				col(func(r row) float64 { return r.p99 }).format(2),
				col(func(r row) float64 { return r.cpu }).format(2),
				col(func(r row) float64 { return r.cpuStat }).format(2),
				col(func(r row) float64 { return r.rssMiB }).format(1))
		}
	}
	if slices.Contains(servers, "callbox") && slices.Contains(servers, "coturn") {
		writeRatios(bw, b, "coturn", true)
	}
	if slices.Contains(servers, "callbox") && slices.Contains(servers, "baseline") {
		writeRatios(bw, b, "baseline", false)
	}
	writePooledTails(bw, b, servers)
	return bw.Flush()
}

// writePooledTails prints each server's round trips of every quiet window
// as one distribution: with 50,000 probes a window in (b), a run's p99 and p99.9
// then rest on every round at once, where the medians and the paired table
// take one p99 from each.
func writePooledTails(w io.Writer, b *bench, servers []string) {
	var lines []string
	for _, id := range []string{"a", "b", "e"} {
		ref := b.pooled[id]["coturn"]
		for _, kind := range servers {
			p := b.pooled[id][kind]
			if p == nil {
				continue
			}
			vs := "–"
			if ref != nil && kind != "coturn" && ref.rtt.percentile(99) > 0 {
				vs = fmt.Sprintf("%.2f×", float64(p.rtt.percentile(99))/float64(ref.rtt.percentile(99)))
			}
			legs := "–"
			if p.legs[0].n > 0 {
				legs = fmt.Sprintf("%.3f / %.3f / %.3f / %.3f", ms(p.legs[0].percentile(99)), ms(p.legs[1].percentile(99)),
					ms(p.legs[2].percentile(99)), ms(p.legs[3].percentile(99)))
			}
			lines = append(lines, fmt.Sprintf("| (%s) | %s | %d | %d | %.3f | %.3f | %.3f | %s | %s |", id, kind, p.windows, p.rtt.n,
				ms(p.rtt.percentile(50)), ms(p.rtt.percentile(99)), ms(p.rtt.percentile(99.9)), legs, vs))
		}
	}
	if len(lines) == 0 {
		return
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "Pooled: every probe of each server's windows with at most %s of steal, as one distribution (to the µs; each leg its own percentile, over the probes with stamps):\n\n", b.quietLimit())
	fmt.Fprintln(w, "| Scenario | Server | Windows | Probes | RTT p50 ms | RTT p99 ms | RTT p99.9 ms | Legs p99 ms: up / echo / down / reader | RTT p99 ÷ coturn's |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|---|---:|")
	for _, l := range lines {
		fmt.Fprintln(w, l)
	}
}

// writeRatios prints callbox÷other of the medians, next to issue 7's
// targets when other is coturn.
func writeRatios(w io.Writer, b *bench, other string, targets bool) {
	med := func(id, kind string, f func(row) float64) spread {
		var vals []float64
		for _, r := range b.results[id][kind] {
			vals = append(vals, f(r))
		}
		return spreadOf(vals)
	}
	type line struct {
		id, what, target string
		f                func(row) float64
	}
	cpu := func(r row) float64 { return r.cpu }
	lines := []line{
		{"a", "(a) CPU per relayed packet", "≤ 0.9×", cpu},
		{"b", "(b) CPU per relayed packet", "≤ 0.9×", cpu},
		{"e", "(e) CPU per relayed packet", "≤ 0.9×", cpu},
		{"c", "(c) highest loss-free rate", "≥ 1.1×", func(r row) float64 { return r.up }},
		{"d", "(d) Binding answers per second", "≥ 1.2×", func(r row) float64 { return r.up }},
		{"d", "(d) CPU per Binding answer", "≤ 1.0×", cpu},
		{"a", "(a) RTT p99", "≤ 1.0×", func(r row) float64 { return r.p99 }},
		{"b", "(b) RTT p99", "≤ 1.0×", func(r row) float64 { return r.p99 }},
		{"e", "(e) RTT p99", "≤ 1.0×", func(r row) float64 { return r.p99 }},
		{"a", "(a) RSS", "≤ 1.0×", func(r row) float64 { return r.rssMiB }},
		{"b", "(b) RSS", "≤ 1.0×", func(r row) float64 { return r.rssMiB }},
		{"e", "(e) RSS", "≤ 1.0×", func(r row) float64 { return r.rssMiB }},
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "| callbox ÷ %s (medians) | Ratio | Issue 7 target |\n", other)
	fmt.Fprintln(w, "|---|---:|---:|")
	for _, l := range lines {
		if b.results[l.id] == nil {
			continue
		}
		if !targets {
			l.target = "–"
		}
		fmt.Fprintf(w, "| %s | %s | %s |\n", l.what, ratio(med(l.id, "callbox", l.f), med(l.id, other, l.f)), l.target)
	}
	writePaired(w, b, other)
}

// writePaired prints CPU per packet and RTT p99 compared round by round,
// over the rounds where neither server's window lost more than the steal
// limit, each median ratio with its 95 % interval: how far apart the
// servers are beyond doubt, where the medians alone move 10–20 % from one
// run to the next.
func writePaired(w io.Writer, b *bench, other string) {
	limit := b.quietLimit()
	var lines []string
	for _, fig := range []struct {
		what string
		f    func(row) float64
	}{
		{"CPU per relayed packet", func(r row) float64 { return r.cpu }},
		{"RTT p99", func(r row) float64 { return r.p99 }},
	} {
		for _, id := range []string{"a", "b", "e"} {
			if b.results[id] == nil {
				continue
			}
			p := pairRounds(b.results[id]["callbox"], b.results[id][other], limit, fig.f)
			r, in := "–", "–"
			if p.rounds > 0 {
				r = fmt.Sprintf("%.2f×", p.ratio)
			}
			if !math.IsNaN(p.lo) {
				in = fmt.Sprintf("%.2f–%.2f×", p.lo, p.hi)
			}
			lines = append(lines, fmt.Sprintf("| (%s) %s | %d | %s | %s | %d of %d |", id, fig.what, p.rounds, r, in, p.atMost, p.rounds))
		}
	}
	if len(lines) == 0 {
		return
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "Paired by round, over the rounds where neither window lost more than %s to steal (each round's callbox ÷ %s, then the median; "+
		"the interval holds the median ratio with 95 %% confidence, by the sign test, from 6 rounds on):\n\n", limit, other)
	fmt.Fprintf(w, "| callbox ÷ %s (paired) | Quiet rounds | Median ratio | 95 %% interval | callbox at most %s's |\n", other, other)
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|")
	for _, l := range lines {
		fmt.Fprintln(w, l)
	}
}

// machine describes the CPU, core count and kernel.
func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	kernel := "unknown kernel"
	var u syscall.Utsname
	if syscall.Uname(&u) == nil {
		var sb strings.Builder
		for _, c := range u.Release {
			if c == 0 {
				break
			}
			sb.WriteByte(byte(c))
		}
		kernel = "Linux " + sb.String()
	}
	return fmt.Sprintf("%s, %d cores, %s, %s", model, runtime.NumCPU(), kernel, runtime.Version())
}

// versions asks each binary for its version.
func versions(s serverSetup, servers []string) string {
	var parts []string
	for _, kind := range servers {
		var out []byte
		var err error
		switch kind {
		case "callbox":
			out, err = exec.Command(s.callbox, "version").Output()
		case "baseline":
			out, err = exec.Command(s.baseline, "version").Output()
			out = append([]byte("baseline "), out...)
		case "coturn":
			out, err = exec.Command(s.coturn, "--version").Output()
			out = append([]byte("coturn "), out...)
		}
		v := strings.TrimSpace(string(out))
		if err != nil || v == "" {
			v = kind + " (version unknown)"
		}
		parts = append(parts, v)
	}
	return strings.Join(parts, ", ")
}
