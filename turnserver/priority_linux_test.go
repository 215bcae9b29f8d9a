//go:build linux && !callbox_portable

package turnserver

import (
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/callbox/callbox/internal/procfs"
	"github.com/callbox/callbox/internal/testutil"
)

// fakeThreads stands in for the kernel's nice values in TestBusyPriority.
type fakeThreads struct {
	current int         // the thread the loop runs on
	nice    map[int]int // by thread id
	refuse  error       // what set returns, if anything
	sets    int
}

func (f *fakeThreads) ops() threadNice {
	return threadNice{
		gettid: func() int { return f.current },
		get:    func(tid int) (int, error) { return f.nice[tid], nil },
		set: func(tid, nice int) error {
			f.sets++
			if f.refuse != nil {
				return f.refuse
			}
			f.nice[tid] = nice
			return nil
		},
	}
}

func TestBusyPriority(t *testing.T) {
	const window = busyWindow
	// rate is how many ready sockets a window of d holds at perSecond.
	rate := func(perSecond int64, d time.Duration) int64 { return perSecond * int64(d) / int64(time.Second) }
	type step struct {
		tid    int
		events int64
		after  time.Duration
	}
	tests := []struct {
		name     string
		busyNice int
		start    map[int]int
		refuse   error
		steps    []step
		ended    bool // the loop ends after the steps
		want     map[int]int
		wantSets int
		wantOff  bool
	}{
		{name: "quiet stays", busyNice: -3, steps: []step{{1, rate(2000, window), window}, {1, rate(4900, window), window}},
			want: map[int]int{1: 0}},
		{name: "busy raises", busyNice: -3, steps: []step{{1, rate(6000, window), window}},
			want: map[int]int{1: -3}, wantSets: 1},
		{name: "a short window waits", busyNice: -3, steps: []step{{1, 1000, window / 2}},
			want: map[int]int{1: 0}},
		{name: "between the thresholds stays raised", busyNice: -3, steps: []step{{1, rate(6000, window), window}, {1, rate(4000, window), window}},
			want: map[int]int{1: -3}, wantSets: 1},
		{name: "quiet lowers", busyNice: -3, steps: []step{{1, rate(6000, window), window}, {1, rate(4000, window), window}, {1, rate(2000, window), window}},
			want: map[int]int{1: 0}, wantSets: 2},
		{name: "follows the loop to another thread", busyNice: -3, steps: []step{{1, rate(6000, window), window}, {2, 0, 8 * time.Millisecond}},
			want: map[int]int{1: 0, 2: -3}, wantSets: 3},
		{name: "puts back the thread's own value", busyNice: -3, start: map[int]int{1: 2},
			steps: []step{{1, rate(6000, window), window}}, ended: true,
			want: map[int]int{1: 2}, wantSets: 2},
		{name: "a thread already higher is left alone", busyNice: -3, start: map[int]int{1: -5},
			steps: []step{{1, rate(6000, window), window}}, ended: true,
			want: map[int]int{1: -5}},
		{name: "a thread given a priority is left alone", busyNice: -3, start: map[int]int{1: -1},
			steps: []step{{1, rate(6000, window), window}}, ended: true,
			want: map[int]int{1: -1}},
		{name: "refused turns it off", busyNice: -3, refuse: unix.EPERM,
			steps: []step{{1, rate(6000, window), window}, {1, rate(2000, window), window}, {1, rate(6000, window), window}},
			want:  map[int]int{1: 0}, wantSets: 1, wantOff: true},
		{name: "off", busyNice: 0, steps: []step{{1, rate(60000, window), window}},
			want: map[int]int{1: 0}},
		{name: "the loop's end lowers", busyNice: -10, steps: []step{{1, rate(6000, window), window}}, ended: true,
			want: map[int]int{1: 0}, wantSets: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeThreads{nice: map[int]int{}, refuse: tt.refuse}
			for tid, n := range tt.start {
				f.nice[tid] = n
			}
			for tid := range tt.want {
				if _, ok := f.nice[tid]; !ok {
					f.nice[tid] = 0
				}
			}
			var logs testutil.SyncBuffer
			now := int64(1e12)
			b := busyPriority{nice: tt.busyNice, os: f.ops(), log: slog.New(slog.NewTextHandler(&logs, nil)), since: now}
			for _, s := range tt.steps {
				f.current = s.tid
				b.events += s.events
				now += int64(s.after)
				b.tick(now)
			}
			if tt.ended {
				b.lower()
			}
			for tid, want := range tt.want {
				if got := f.nice[tid]; got != want {
					t.Errorf("thread %d: nice %d, want %d", tid, got, want)
				}
			}
			if f.sets != tt.wantSets {
				t.Errorf("%d calls to set, want %d", f.sets, tt.wantSets)
			}
			if off := b.nice == 0 && tt.busyNice != 0; off != tt.wantOff {
				t.Errorf("turned off: %v, want %v", off, tt.wantOff)
			}
			if warned := strings.Contains(logs.String(), "cannot raise"); warned != tt.wantOff {
				t.Errorf("warning logged: %v, want %v:\n%s", warned, tt.wantOff, logs.String())
			}
		})
	}
}

// threadNiceOf reads a thread's nice value from /proc (the 19th field of
// stat, after the parenthesised name).
func threadNiceOf(t *testing.T, tid int) int {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/stat", tid))
	if err != nil {
		t.Fatal(err)
	}
	return niceFromStat(t, string(data))
}

func niceFromStat(t *testing.T, stat string) int {
	t.Helper()
	fields, err := procfs.StatFields([]byte(stat))
	if err != nil || len(fields) <= 19-3 {
		t.Fatalf("stat %q: %v", stat, err)
	}
	n, err := strconv.Atoi(fields[19-3])
	if err != nil {
		t.Fatalf("stat %q: %v", stat, err)
	}
	return n
}

// needNice skips, or under CI fails, where this process may not raise a
// thread's priority.
func needNice(t *testing.T) {
	t.Helper()
	done := make(chan error)
	go func() {
		runtime.LockOSThread() // the thread ends with the goroutine: no priority leaks
		tid := unix.Gettid()
		err := osThreadNice.set(tid, -1)
		done <- err
	}()
	if err := <-done; err != nil {
		msg := fmt.Sprintf("cannot raise a thread's priority here (%v): run as root or with CAP_SYS_NICE", err)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
}

// TestBusyPriorityOnThread: the real system calls raise the calling
// thread alone and put its value back.
func TestBusyPriorityOnThread(t *testing.T) {
	needNice(t)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		runtime.LockOSThread() // the thread ends with the goroutine
		tid := unix.Gettid()
		if err := osThreadNice.set(tid, 2); err != nil {
			t.Error(err)
			return
		}
		b := newBusyPriority(-3, discardLogger())
		b.events = busyAbove
		b.tick(b.since + int64(time.Second))
		if got := threadNiceOf(t, tid); got != -3 {
			t.Errorf("busy: nice %d, want -3", got)
		}
		// Threads the runtime starts from this one must not inherit it.
		if attr, err := unix.SchedGetAttr(tid, 0); err != nil || attr.Flags&unix.SCHED_FLAG_RESET_ON_FORK == 0 {
			t.Errorf("busy: sched_getattr %+v, %v; want the reset-on-fork flag", attr, err)
		}
		if raised := raisedThreads(t, -3); len(raised) != 1 {
			t.Errorf("threads at -3: %v, want only the calling thread %d", raised, tid)
		}
		b.lower()
		if got := threadNiceOf(t, tid); got != 2 {
			t.Errorf("released: nice %d, want 2 (the thread's own)", got)
		}
	}()
	wg.Wait()
}

// raisedThreads lists this process's threads whose nice value is nice.
func raisedThreads(t *testing.T, nice int) []string {
	t.Helper()
	stats, err := filepath.Glob("/proc/self/task/*/stat")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range stats {
		data, err := os.ReadFile(p)
		if err != nil {
			continue // the thread has gone
		}
		if niceFromStat(t, string(data)) == nice {
			out = append(out, p)
		}
	}
	return out
}

// TestBusyLoopRaisesItsThread: twenty calls relaying as fast as they can
// make the loop busy and its thread takes turn.busy_nice; when they stop,
// it gets its value back.
func TestBusyLoopRaisesItsThread(t *testing.T) {
	needNice(t)
	const busyNice = -7 // a value nothing else here uses
	if got := raisedThreads(t, busyNice); len(got) != 0 {
		t.Fatalf("threads already at %d: %v", busyNice, got)
	}
	// The rate such calls make follows the CPU the test gets: under -race,
	// 48 of them made 2,000–4,600 ready sockets a second in one try and
	// 11,000–21,000 in the next, and in the whole suite,
	// beside the browser tests, it once stayed under 5,000 for 3 s. The
	// rule is TestBusyPriority's; this test is about the thread, so it
	// asks for a rate that all of those reach. Set back after the server
	// has stopped (cleanups run last registered, first run).
	above, below := busyAbove, busyBelow
	busyAbove, busyBelow = 1000, 500
	t.Cleanup(func() { busyAbove, busyBelow = above, below })
	cfg := testConfig()
	cfg.UDPSockets = 1
	cfg.BusyNice = busyNice
	ts := startServer(t, cfg)
	peer := startPeer(t, true)
	var clients []*rawClient
	for i := range 20 {
		clients = append(clients, channelEcho(t, ts.Server, fmt.Sprintf("busy%d", i), peer.addr(), byte(i)))
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Add(2)
		go func() { // drain the echoes, so the client's socket never fills
			defer wg.Done()
			buf := make([]byte, 2048)
			for {
				c.conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
				if _, err := c.conn.Read(buf); err != nil && !isTimeout(err) {
					return
				}
				select {
				case <-stop:
					return
				default:
				}
			}
		}()
		go func() {
			defer wg.Done()
			msg := []byte{0x40, 0x01, 0x00, 0x04, 1, 2, 3, 4}
			for {
				select {
				case <-stop:
					return
				default:
				}
				c.conn.Write(msg) //nolint:errcheck // load; the echoes are not counted
				time.Sleep(200 * time.Microsecond)
			}
		}()
	}
	if busyNiceAllowed(busyNice, discardLogger()) == 0 {
		// Under a seccomp filter that RLIMIT_NICE does not vouch for (a
		// container's, say) callbox leaves the priority alone by design:
		// then that is what is checked.
		time.Sleep(time.Second)
		close(stop)
		wg.Wait()
		if raised := raisedThreads(t, busyNice); len(raised) != 0 {
			t.Errorf("threads raised under a seccomp filter: %v", raised)
		}
		if !strings.Contains(ts.logs.String(), "stays as it is while busy") {
			t.Errorf("no log line about the priority left alone:\n%s", ts.logs.String())
		}
		return
	}
	eventually(t, "a thread at the busy nice value", func() bool { return len(raisedThreads(t, busyNice)) > 0 })
	close(stop)
	wg.Wait()
	// Silence: the raised loop wakes on its own to count it.
	eventually(t, "no thread at the busy nice value once quiet", func() bool { return len(raisedThreads(t, busyNice)) == 0 })
}

func TestRlimitAllowsNice(t *testing.T) {
	tests := []struct {
		limit uint64
		nice  int
		want  bool
	}{
		{0, -3, false},  // the default: no raising without CAP_SYS_NICE
		{20, -3, false}, // down to 0 only
		{23, -3, true},  // LimitNICE=-3
		{23, -5, false},
		{40, -20, true},
		{unix.RLIM_INFINITY, -20, true},
	}
	for _, tt := range tests {
		if got := rlimitAllowsNice(tt.limit, tt.nice); got != tt.want {
			t.Errorf("rlimitAllowsNice(%d, %d) = %v, want %v", tt.limit, tt.nice, got, tt.want)
		}
	}
}

// TestBusyNiceUnderSeccomp: under a seccomp filter, where a denied
// sched_setattr would kill the process, the loops leave their priority alone
// unless RLIMIT_NICE allows the value (TestRlimitAllowsNice; raising the
// limit here would need CAP_SYS_RESOURCE). The filter goes on a child
// process: it cannot be taken off again.
func TestBusyNiceUnderSeccomp(t *testing.T) {
	if os.Getenv("CALLBOX_SECCOMP_CHILD") == "1" {
		seccompChild(t)
		return
	}
	if seccompFiltered() {
		t.Skip("this test already runs under a seccomp filter")
	}
	if got := busyNiceAllowed(-3, discardLogger()); got != -3 {
		t.Fatalf("without a filter: %d, want -3", got)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestBusyNiceUnderSeccomp$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), "CALLBOX_SECCOMP_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	for _, want := range []string{"filtered true", "busy_nice -3: 0", "stays as it is while busy", "--- PASS: TestBusyNiceUnderSeccomp/busy_loop"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("child output lacks %q:\n%s", want, out)
		}
	}
}

// seccompChild drops RLIMIT_NICE to 0, installs a filter that allows every
// system call on all threads (what matters is that one is on), prints what
// busyNiceAllowed decides, and runs a busy server under it.
func seccompChild(t *testing.T) {
	if err := unix.Setrlimit(unix.RLIMIT_NICE, &unix.Rlimit{}); err != nil {
		t.Fatal("setrlimit:", err)
	}
	allowAll := []unix.SockFilter{{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ALLOW}}
	prog := unix.SockFprog{Len: uint16(len(allowAll)), Filter: &allowAll[0]}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		t.Fatal("no_new_privs:", err)
	}
	if _, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&prog))); e != 0 {
		t.Fatal("seccomp:", e)
	}
	fmt.Println("filtered", seccompFiltered())
	fmt.Printf("busy_nice -3: %d\n", busyNiceAllowed(-3, slog.New(slog.NewTextHandler(os.Stdout, nil))))
	t.Run("busy loop", TestBusyLoopRaisesItsThread) // its filtered branch: nothing raised
}
