//go:build linux && !callbox_portable

package turnserver

// A busy data loop raises its thread's priority (turn.busy_nice).
//
// One thread carries every call's datagrams. When the CPUs are contended
// (other processes, or the clients themselves on the same machine) the
// scheduler shares them by weight per thread, so coturn's two relay threads
// hold twice the weight of callbox's one loop, and with many calls one
// wake-up of the loop left waiting for a CPU delays every call at once: in
// scenario (b) callbox's peer → client leg was the longer one in every run
// (docs/performance.md). At nice −3 the thread weighs about two (1991
// against 1024), what two threads hold. Only while busy: at a few thousand
// datagrams a second each one has the loop to itself, and priority only
// buys preemptions of the threads the loop wakes (the whole process at −3
// cost 8 % more CPU per packet in scenario (a)).

import (
	"errors"
	"log/slog"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/callbox/callbox/internal/procfs"
)

// busyAbove is the rate of ready sockets a second from which a loop counts
// as busy, busyBelow the rate below which it no longer does (apart, so that
// a rate near one of them does not flap). Scenario (a) of the bench, 20
// calls at 50 packets a second each way, is at most 2,000 (a ready socket
// carries one datagram or more). Variables only so that
// TestBusyLoopRaisesItsThread can ask for a rate its load reaches when the
// suite under -race leaves the loop little CPU.
var (
	busyAbove int64 = 5000
	busyBelow int64 = 3000
)

// busyWindow is how long the rate is counted over.
const busyWindow = 250 * time.Millisecond

// threadNice reads and sets a thread's nice value; a variable for tests.
type threadNice struct {
	gettid func() int
	get    func(tid int) (int, error)
	set    func(tid, nice int) error
}

// errNotNormal: the thread runs under another scheduling policy than
// SCHED_OTHER (CPUSchedulingPolicy= in a unit): the operator's choice.
var errNotNormal = errors.New("not SCHED_OTHER")

// osThreadNice uses sched_setattr rather than setpriority to set, for its
// reset-on-fork flag: a thread the Go runtime starts from the raised one
// (a new M) would otherwise inherit the raised priority for good. With
// the flag it starts at nice 0. An unprivileged thread cannot clear the
// flag, so it stays on the thread once lowered too; it changes nothing for
// a thread at nice 0 or more.
var osThreadNice = threadNice{
	gettid: unix.Gettid,
	get: func(tid int) (int, error) {
		attr, err := unix.SchedGetAttr(tid, 0)
		if err != nil {
			return 0, err
		}
		if attr.Policy != unix.SCHED_NORMAL {
			return 0, errNotNormal
		}
		return int(attr.Nice), nil
	},
	set: func(tid, nice int) error {
		return unix.SchedSetAttr(tid, &unix.SchedAttr{Policy: unix.SCHED_NORMAL, Flags: unix.SCHED_FLAG_RESET_ON_FORK, Nice: int32(nice)}, 0)
	},
}

// busyPriority is one loop's: owned by its goroutine.
type busyPriority struct {
	nice   int // the busy thread's nice value; 0 is off
	os     threadNice
	log    *slog.Logger
	events int64 // ready sockets since since
	since  int64
	tid    int // the raised thread; 0 when none is
	saved  int // its nice value before
}

func newBusyPriority(nice int, log *slog.Logger) busyPriority {
	return busyPriority{nice: nice, os: osThreadNice, log: log, since: monotonicNanos()}
}

// tick runs between waits, at the loop's yields: the loop's goroutine may
// have moved to another thread at the yield, and the priority follows it.
func (b *busyPriority) tick(now int64) {
	if b.nice == 0 {
		return
	}
	if b.tid != 0 {
		if tid := b.os.gettid(); tid != b.tid {
			b.lower()
			b.raise(tid)
		}
	}
	elapsed := now - b.since
	if elapsed < int64(busyWindow) {
		return
	}
	rate := b.events * int64(time.Second) / elapsed
	b.events, b.since = 0, now
	switch {
	case b.tid == 0 && rate >= busyAbove:
		if b.raise(b.os.gettid()) {
			b.log.Debug("turn: data plane busy, thread priority raised", "ready_per_second", rate, "nice", b.nice)
		}
	case b.tid != 0 && rate < busyBelow:
		b.lower()
		b.log.Debug("turn: data plane quiet, thread priority back", "ready_per_second", rate)
	}
}

// waitTimeout is the loop's epoll timeout in milliseconds: none (-1),
// but a raised loop wakes after a window of silence to count it, so that an
// idle thread does not keep the priority.
func (b *busyPriority) waitTimeout() int {
	if b.tid != 0 {
		return int(busyWindow / time.Millisecond)
	}
	return -1
}

// raise gives thread tid the busy nice value and says whether it did.
func (b *busyPriority) raise(tid int) bool {
	saved, err := b.os.get(tid)
	if err != nil || saved < 0 {
		// Gone, under another policy, or already given a priority (a
		// negative nice, as Nice= in a unit): the operator's, left alone.
		return false
	}
	if err := b.os.set(tid, b.nice); err != nil {
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
			b.log.Warn("turn: cannot raise the data plane thread's priority while busy; set turn.busy_nice = 0, or allow it (CAP_SYS_NICE, or LimitNICE as in systemd/callbox.service)",
				"nice", b.nice, "err", err)
			b.nice = 0
		}
		return false
	}
	b.tid, b.saved = tid, saved
	return true
}

// lower puts the raised thread back: when the loop quiets, moves to
// another thread, or ends.
func (b *busyPriority) lower() {
	if b.tid != 0 {
		b.os.set(b.tid, b.saved) //nolint:errcheck // lowering a priority is always allowed; a gone thread has none
		b.tid = 0
	}
}

// busyNiceAllowed returns the nice value the loops may use: nice, or 0
// when raising a priority could end the process. Under a seccomp filter
// (systemd's SystemCallFilter=) a denied sched_setattr kills the process,
// and nothing tells whether the filter denies it; there callbox raises
// only where RLIMIT_NICE allows the value (systemd's LimitNICE=), which
// the shipped unit sets together with allowing sched_setattr. Elsewhere a
// refusal is an error, reported at the first try (busyPriority.raise).
func busyNiceAllowed(nice int, log *slog.Logger) int {
	if nice == 0 {
		return 0
	}
	if !seccompFiltered() {
		return nice
	}
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NICE, &lim); err == nil && rlimitAllowsNice(lim.Cur, nice) {
		return nice
	}
	log.Info("turn: the data plane's priority stays as it is while busy: a seccomp filter is on and LimitNICE does not allow turn.busy_nice",
		"busy_nice", nice)
	return 0
}

// rlimitAllowsNice says whether an RLIMIT_NICE of limit lets a thread
// take nice value nice: the limit is 20 - the lowest value allowed, so that
// it is never negative.
func rlimitAllowsNice(limit uint64, nice int) bool { return limit >= uint64(20-nice) }

// seccompFiltered says whether a seccomp filter applies to the process
// ("Seccomp: 2" in /proc/self/status).
func seccompFiltered() bool {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return true // cannot tell: assume the careful case
	}
	mode, ok := procfs.StatusValue(status, "Seccomp")
	return ok && mode != "0" // no line: a kernel without seccomp
}
