package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/callbox/callbox/internal/procfs"
)

// procSample is one reading of a server process's resource use.
type procSample struct {
	// statCPU is utime+stime from /proc/PID/stat: the classic measure, in
	// 10 ms ticks.
	statCPU time.Duration
	// runCPU sums the time on CPU of every thread (/proc/PID/task/*/schedstat),
	// in nanoseconds: precise enough for the low-rate scenarios, where a few
	// hundred milliseconds of CPU make the whole window.
	runCPU time.Duration
	rss    int64 // bytes, VmRSS
}

func sampleProc(pid int) (procSample, error) {
	var s procSample
	dir := fmt.Sprintf("/proc/%d", pid)
	stat, err := os.ReadFile(filepath.Join(dir, "stat"))
	if err != nil {
		return s, fmt.Errorf("turnbench: read stat of %d: %w", pid, err)
	}
	if s.statCPU, err = procfs.ParseStatCPU(stat); err != nil {
		return s, fmt.Errorf("turnbench: pid %d: %w", pid, err)
	}
	status, err := os.ReadFile(filepath.Join(dir, "status"))
	if err != nil {
		return s, fmt.Errorf("turnbench: read status of %d: %w", pid, err)
	}
	if s.rss, err = procfs.ParseVmRSS(status); err != nil {
		return s, fmt.Errorf("turnbench: pid %d: %w", pid, err)
	}
	tasks, err := os.ReadDir(filepath.Join(dir, "task"))
	if err != nil {
		return s, fmt.Errorf("turnbench: list threads of %d: %w", pid, err)
	}
	for _, task := range tasks {
		b, err := os.ReadFile(filepath.Join(dir, "task", task.Name(), "schedstat"))
		if err != nil {
			continue // the thread ended between the listing and the read
		}
		ns, err := procfs.ParseSchedstat(b)
		if err != nil {
			return s, fmt.Errorf("turnbench: thread %s of %d: %w", task.Name(), pid, err)
		}
		s.runCPU += ns
	}
	return s, nil
}

// parseUDPRcvbufErrors reads Udp RcvbufErrors from the text of
// /proc/net/snmp: datagrams the kernel dropped because a socket's receive
// buffer was full. It counts every socket of the network namespace, so it
// is a diagnostic for the log, not a figure of the table.
func parseUDPRcvbufErrors(snmp []byte) (int64, error) {
	var header []string
	sc := bufio.NewScanner(bytes.NewReader(snmp))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "Udp:")
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		if header == nil {
			header = fields
			continue
		}
		for i, name := range header {
			if name == "RcvbufErrors" && i < len(fields) {
				n, err := strconv.ParseInt(fields[i], 10, 64)
				if err != nil || n < 0 {
					return 0, fmt.Errorf("snmp: bad RcvbufErrors %q", fields[i])
				}
				return n, nil
			}
		}
		return 0, errors.New("snmp: no Udp RcvbufErrors column")
	}
	return 0, errors.New("snmp: no Udp lines")
}

// udpRcvbufErrors is parseUDPRcvbufErrors of this machine, or -1.
func udpRcvbufErrors() int64 { return readCounter("/proc/net/snmp", parseUDPRcvbufErrors) }

// counterDelta is after − before, or -1 when either reading failed.
func counterDelta[T int64 | time.Duration](before, after T) T {
	if before < 0 || after < 0 {
		return -1
	}
	return after - before
}

// readCounter parses a machine-wide counter out of the file at path; -1
// when the file or the counter is missing (the log then shows -1).
func readCounter(path string, parse func([]byte) (int64, error)) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return -1
	}
	n, err := parse(b)
	if err != nil {
		return -1
	}
	return n
}

// parseCPUSteal reads the machine's steal time from the text of
// /proc/stat: how long the hypervisor ran something else while this
// machine's CPUs had work, in USER_HZ ticks (10 ms). Like the drops, a
// diagnostic for the log: a round with steal in its window explains a
// tail both servers would have had.
func parseCPUSteal(stat []byte) (int64, error) {
	sc := bufio.NewScanner(bytes.NewReader(stat))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || fields[0] != "cpu" {
			continue
		}
		// cpu user nice system idle iowait irq softirq steal ...
		if len(fields) < 9 {
			return 0, errors.New("stat: no steal column")
		}
		n, err := strconv.ParseInt(fields[8], 10, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("stat: bad steal %q", fields[8])
		}
		return n, nil
	}
	return 0, errors.New("stat: no cpu line")
}

// cpuSteal is parseCPUSteal of this machine as a duration, or -1.
func cpuSteal() time.Duration {
	ticks := readCounter("/proc/stat", parseCPUSteal)
	if ticks < 0 {
		return -1
	}
	return time.Duration(ticks) * 10 * time.Millisecond
}

// loadAverage is the first field of /proc/loadavg, for the report: the
// machine is shared, and a busy one explains a wide spread.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	if f := strings.Fields(string(b)); len(f) > 0 {
		return f[0]
	}
	return "?"
}
