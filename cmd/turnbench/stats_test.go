package main

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

func TestPercentile(t *testing.T) {
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * time.Millisecond
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one", []time.Duration{7}, 99, 7},
		{"p50 of 100", hundred, 50, 50 * time.Millisecond},
		{"p99 of 100", hundred, 99, 99 * time.Millisecond},
		{"p99.9 of 100", hundred, 99.9, 100 * time.Millisecond},
		{"p100", hundred, 100, 100 * time.Millisecond},
		{"p0", hundred, 0, 0},
		{"p1 of 100", hundred, 1, time.Millisecond},
		{"p50 of 3", []time.Duration{1, 2, 3}, 50, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := percentile(tc.sorted, tc.p); got != tc.want {
				t.Fatalf("percentile(%v) = %v, want %v", tc.p, got, tc.want)
			}
		})
	}
}

func TestSpread(t *testing.T) {
	tests := []struct {
		name     string
		vals     []float64
		decimals int
		want     string
	}{
		{"none", nil, 1, "–"},
		{"one", []float64{1.25}, 2, "1.25"},
		{"odd", []float64{3, 1, 2}, 0, "2 (1–3)"},
		{"even", []float64{4, 1, 2, 3}, 1, "2.5 (1.0–4.0)"},
		{"equal", []float64{2, 2}, 1, "2.0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := spreadOf(tc.vals).format(tc.decimals); got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestRatio(t *testing.T) {
	tests := []struct {
		name string
		a, b []float64
		want string
	}{
		{"plain", []float64{9}, []float64{10}, "0.90×"},
		{"medians", []float64{1, 3, 100}, []float64{2, 2, 2}, "1.50×"},
		{"zero divisor", []float64{1}, []float64{0}, "–"},
		{"missing", nil, []float64{1}, "–"},
		{"nan", []float64{math.NaN()}, []float64{1}, "–"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := ratio(spreadOf(tc.a), spreadOf(tc.b)); got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestPairRounds(t *testing.T) {
	r := func(p99 float64, stealMS int) row {
		return row{p99: p99, steal: time.Duration(stealMS) * time.Millisecond}
	}
	p99 := func(r row) float64 { return r.p99 }
	tests := []struct {
		name           string
		callbox, other []row
		limit          time.Duration
		rounds         int
		atMost         int
		ratio          float64 // NaN: no round counted
	}{
		{"none", nil, nil, quietSteal, 0, 0, math.NaN()},
		{"quiet rounds", []row{r(1, 0), r(2, 10)}, []row{r(2, 0), r(2, 20)}, quietSteal, 2, 2, 0.75},
		{"a stolen window drops its round, either side",
			[]row{r(1, 0), r(9, 500), r(3, 0)}, []row{r(1, 0), r(1, 0), r(1, 30)}, quietSteal, 1, 1, 1},
		{"paired within the round, not across",
			// Medians over all rounds would be 2 against 2; round by round callbox is longer in each.
			[]row{r(1.1, 0), r(2.2, 0), r(3.3, 0)}, []row{r(1, 0), r(2, 0), r(3, 0)}, quietSteal, 3, 0, 1.1},
		{"uneven rounds count up to the shorter", []row{r(1, 0), r(1, 0)}, []row{r(2, 0)}, quietSteal, 1, 1, 0.5},
		{"the limit is the caller's", []row{r(1, 0)}, []row{r(2, 40)}, 50 * time.Millisecond, 1, 1, 0.5},
		{"a zero figure has no ratio", []row{r(1, 0)}, []row{r(0, 0)}, quietSteal, 0, 0, math.NaN()},
		{"nothing back is not a shorter tail", []row{r(0, 0), r(1, 0)}, []row{r(1, 0), r(2, 0)}, quietSteal, 1, 1, 0.5},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := pairRounds(tc.callbox, tc.other, tc.limit, p99)
			ratioOK := got.ratio == tc.ratio || (math.IsNaN(tc.ratio) && math.IsNaN(got.ratio)) || math.Abs(got.ratio-tc.ratio) < 1e-9
			if got.rounds != tc.rounds || got.atMost != tc.atMost || !ratioOK {
				t.Fatalf("pairRounds = %+v, want rounds %d, at most %d, ratio %v", got, tc.rounds, tc.atMost, tc.ratio)
			}
			if got.rounds < 6 && !math.IsNaN(got.lo) {
				t.Fatalf("pairRounds = %+v: an interval from %d rounds", got, got.rounds)
			}
		})
	}
}

// The interval's ranks are the sign test's: for n values, the k-th lowest
// and highest with 2·P(Binomial(n, ½) < k) ≤ 5 %, as printed tables of the
// test give them.
func TestMedianInterval(t *testing.T) {
	ranks := func(n int) []float64 { // 1, 2 ... n, shuffled so the sort matters
		v := make([]float64, n)
		for i := range v {
			v[i] = float64((i*7)%n + 1)
		}
		return v
	}
	tests := []struct {
		n      int
		lo, hi float64 // ranks; 0: no interval
	}{
		{0, 0, 0},
		{1, 0, 0},
		{5, 0, 0}, // even the extremes leave 2/32 = 6.25 % outside
		{6, 1, 6}, // 2/64 = 3.1 %
		{8, 1, 8},
		{9, 2, 8},
		{10, 2, 9},
		{12, 3, 10},
		{16, 4, 13},
		{20, 6, 15},
		{30, 10, 21},
		{40, 14, 27},
		{100, 40, 61},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprint(tc.n), func(t *testing.T) {
			if tc.n%7 == 0 && tc.n > 0 {
				t.Fatalf("n %d: the shuffle needs n prime to 7", tc.n)
			}
			lo, hi := medianInterval(ranks(tc.n))
			if tc.lo == 0 {
				if !math.IsNaN(lo) || !math.IsNaN(hi) {
					t.Fatalf("n %d: got %v–%v, want no interval", tc.n, lo, hi)
				}
				return
			}
			if lo != tc.lo || hi != tc.hi {
				t.Fatalf("n %d: got ranks %v–%v, want %v–%v", tc.n, lo, hi, tc.lo, tc.hi)
			}
		})
	}
}

// The report's paired table counts only quiet rounds, under -max-steal's
// limit when it is set, for CPU and the tail alike.
func TestWritePaired(t *testing.T) {
	quiet, stolen := time.Duration(0), 40*time.Millisecond
	b := &bench{results: map[string]map[string][]row{
		"a": {
			"callbox": {{p99: 0.4, cpu: 9, steal: quiet}, {p99: 0.9, cpu: 10, steal: stolen}},
			"coturn":  {{p99: 0.5, cpu: 10, steal: quiet}, {p99: 0.3, cpu: 10, steal: quiet}},
		},
		"b": {"callbox": {{p99: 1, cpu: 1, steal: stolen}}, "coturn": {{p99: 1, cpu: 1, steal: quiet}}},
	}}
	for _, tc := range []struct {
		name     string
		maxSteal time.Duration
		want     []string
	}{
		{"default limit", 0, []string{"more than 20ms to steal",
			"| (a) CPU per relayed packet | 1 | 0.90× | – | 1 of 1 |",
			"| (a) RTT p99 | 1 | 0.80× | – | 1 of 1 |", "| (b) RTT p99 | 0 | – | – | 0 of 0 |"}},
		{"-max-steal", 50 * time.Millisecond, []string{"more than 50ms to steal",
			"| (a) CPU per relayed packet | 2 | 0.95× | – | 2 of 2 |",
			"| (a) RTT p99 | 2 | 1.90× | – | 1 of 2 |", "| (b) RTT p99 | 1 | 1.00× | – | 1 of 1 |"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b.o.maxSteal = tc.maxSteal
			var out strings.Builder
			writePaired(&out, b, "coturn")
			for _, w := range tc.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("missing %q in:\n%s", w, out.String())
				}
			}
			if strings.Contains(out.String(), "(e)") {
				t.Errorf("(e) was not measured, yet reported:\n%s", out.String())
			}
		})
	}
	// From 6 quiet rounds on, the interval is printed.
	six := map[string][]row{}
	for i := range 6 {
		six["callbox"] = append(six["callbox"], row{p99: float64(i + 1), cpu: 1})
		six["coturn"] = append(six["coturn"], row{p99: 2, cpu: 1})
	}
	b.results = map[string]map[string][]row{"e": six}
	var out strings.Builder
	writePaired(&out, b, "coturn")
	if want := "| (e) RTT p99 | 6 | 1.75× | 0.50–3.00× | 2 of 6 |"; !strings.Contains(out.String(), want) {
		t.Errorf("missing %q in:\n%s", want, out.String())
	}
}

// kernelStamp finds SCM_TIMESTAMPNS among control messages and refuses
// what it cannot read.
func TestKernelStamp(t *testing.T) {
	stamp := func(level, typ int32, sec, nsec int64) []byte {
		b := make([]byte, unix.CmsgSpace(16))
		h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
		h.Level, h.Type = level, typ
		h.SetLen(unix.CmsgLen(16))
		ts := (*unix.Timespec)(unsafe.Pointer(&b[unix.CmsgLen(0)]))
		ts.Sec, ts.Nsec = sec, nsec
		return b
	}
	good := stamp(unix.SOL_SOCKET, unix.SCM_TIMESTAMPNS, 3, 7)
	other := stamp(unix.IPPROTO_IP, unix.IP_TTL, 0, 0)
	short := slices.Clone(good)
	(*unix.Cmsghdr)(unsafe.Pointer(&short[0])).SetLen(unix.CmsgLen(4))
	overlong := slices.Clone(good)
	(*unix.Cmsghdr)(unsafe.Pointer(&overlong[0])).SetLen(len(good) + 1)
	tests := []struct {
		name string
		oob  []byte
		want int64
		ok   bool
	}{
		{"none", nil, 0, false},
		{"the stamp", good, 3e9 + 7, true},
		{"after another message", append(slices.Clone(other), good...), 3e9 + 7, true},
		{"another message only", other, 0, false},
		{"cut short", good[:unix.SizeofCmsghdr+4], 0, false},
		{"a length too short for a timespec", short, 0, false},
		{"a length past the buffer", overlong, 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := kernelStamp(tc.oob)
			if got != tc.want || ok != tc.ok {
				t.Fatalf("kernelStamp = %d, %v; want %d, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestLegsP99(t *testing.T) {
	ms := time.Millisecond
	var samples []rttSample
	for i := range 100 {
		d := time.Duration(i+1) * ms / 10
		samples = append(samples, rttSample{up: d, echo: 2 * d, down: 3 * d, reader: 4 * d})
	}
	tests := []struct {
		name    string
		samples []rttSample
		want    string
	}{
		{"none", nil, "-"},
		{"no stamps", []rttSample{{sent: ms, rtt: ms}}, "-"},
		{"each leg's own p99", samples, "9.90/19.80/29.70/39.60"},
		{"unstamped probes left out", append([]rttSample{{rtt: time.Hour}}, samples...), "9.90/19.80/29.70/39.60"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := legsP99(tc.samples); got != tc.want {
				t.Fatalf("legsP99 = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestLatencyHist(t *testing.T) {
	us := time.Microsecond
	ramp := func(n int) []time.Duration { // 1 µs, 2 µs, … n µs and a bit
		var d []time.Duration
		for i := range n {
			d = append(d, time.Duration(i+1)*us+300*time.Nanosecond)
		}
		return d
	}
	tests := []struct {
		name string
		add  []time.Duration
		p    float64
		want time.Duration
	}{
		{"empty", nil, 99, 0},
		{"p0", ramp(10), 0, 0},
		{"nearest rank, to the µs below", ramp(1000), 99, 990 * us},
		{"p99.9", ramp(1000), 99.9, 999 * us},
		{"the largest", ramp(1000), 100, 1000 * us},
		{"median of two", []time.Duration{3 * us, 9 * us}, 50, 3 * us},
		{"past the span counts at its end", []time.Duration{us, time.Hour}, 100, histSpan},
		{"below zero counts as zero", []time.Duration{-us, 5 * us}, 50, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var h latencyHist
			for _, d := range tc.add {
				h.add(d)
			}
			if got := h.percentile(tc.p); got != tc.want || h.n != len(tc.add) {
				t.Fatalf("p%g of %d = %v (n %d), want %v", tc.p, len(tc.add), got, h.n, tc.want)
			}
		})
	}
}

// The pooled table: a line per server and scenario measured, legs only
// where probes carried them, the ratio only against coturn's.
func TestWritePooledTails(t *testing.T) {
	ms := time.Millisecond
	window := func(rtt time.Duration, stamped bool) []rttSample {
		var s []rttSample
		for i := range 100 {
			d := rtt * time.Duration(i+1) / 100
			if stamped {
				s = append(s, rttSample{rtt: d, up: d / 4, echo: d / 4, down: d / 4, reader: d / 4})
			} else {
				s = append(s, rttSample{rtt: d})
			}
		}
		return s
	}
	b := &bench{o: options{maxSteal: 30 * ms}}
	b.pool("callbox", "b").add(window(2*ms, true))
	b.pool("callbox", "b").add(window(2*ms, true))
	b.pool("coturn", "b").add(window(1*ms, false))
	b.pool("baseline", "a").add(window(1*ms, true))
	var out strings.Builder
	writePooledTails(&out, b, []string{"callbox", "baseline", "coturn"})
	for _, want := range []string{
		"at most 30ms of steal",
		"| (a) | baseline | 1 | 100 | 0.500 | 0.990 | 1.000 | 0.247 / 0.247 / 0.247 / 0.247 | – |",
		"| (b) | callbox | 2 | 200 | 1.000 | 1.980 | 2.000 | 0.495 / 0.495 / 0.495 / 0.495 | 2.00× |",
		"| (b) | coturn | 1 | 100 | 0.500 | 0.990 | 1.000 | – | – |",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("missing %q in:\n%s", want, out.String())
		}
	}
	var none strings.Builder
	writePooledTails(&none, &bench{}, []string{"callbox"})
	if none.Len() != 0 {
		t.Errorf("nothing pooled, yet printed:\n%s", none.String())
	}
}
