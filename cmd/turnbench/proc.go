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
)

// userHZ is the unit of utime and stime in /proc/PID/stat: USER_HZ, 100 on
// every Linux architecture Go runs on.
const userHZ = 100

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
	if s.statCPU, err = parseStatCPU(stat); err != nil {
		return s, fmt.Errorf("turnbench: pid %d: %w", pid, err)
	}
	status, err := os.ReadFile(filepath.Join(dir, "status"))
	if err != nil {
		return s, fmt.Errorf("turnbench: read status of %d: %w", pid, err)
	}
	if s.rss, err = parseVmRSS(status); err != nil {
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
		ns, err := parseSchedstat(b)
		if err != nil {
			return s, fmt.Errorf("turnbench: thread %s of %d: %w", task.Name(), pid, err)
		}
		s.runCPU += ns
	}
	return s, nil
}

// parseStatCPU returns utime+stime from the text of /proc/PID/stat. The
// command name (field 2) may hold spaces and ')', so fields are counted
// from its last ')': field 3 is then the first, utime (14) the 12th.
func parseStatCPU(stat []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("stat: no ')' closing the command name")
	}
	fields := strings.Fields(string(stat[i+1:]))
	if len(fields) < 13 {
		return 0, fmt.Errorf("stat: %d fields after the command name, want at least 13", len(fields))
	}
	var ticks int64
	for _, f := range fields[11:13] {
		n, err := strconv.ParseInt(f, 10, 64)
		// The bound keeps the conversion to nanoseconds from overflowing.
		if err != nil || n < 0 || n > 1<<40 {
			return 0, fmt.Errorf("stat: bad CPU time %q", f)
		}
		ticks += n
	}
	return time.Duration(ticks) * (time.Second / userHZ), nil
}

// parseSchedstat returns the first field of /proc/PID/task/TID/schedstat:
// nanoseconds the thread has run.
func parseSchedstat(b []byte) (time.Duration, error) {
	fields := strings.Fields(string(b))
	if len(fields) < 1 {
		return 0, errors.New("schedstat: empty")
	}
	n, err := strconv.ParseInt(fields[0], 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("schedstat: bad run time %q", fields[0])
	}
	return time.Duration(n), nil
}

// parseVmRSS returns the resident set size in bytes from the text of
// /proc/PID/status (a line "VmRSS:     1234 kB").
func parseVmRSS(status []byte) (int64, error) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("status: VmRSS line %q is not \"N kB\"", sc.Text())
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || kb < 0 || kb > 1<<40 {
			return 0, fmt.Errorf("status: VmRSS line %q: bad number", sc.Text())
		}
		return kb << 10, nil
	}
	return 0, errors.New("status: no VmRSS line")
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
func udpRcvbufErrors() int64 {
	b, err := os.ReadFile("/proc/net/snmp")
	if err != nil {
		return -1
	}
	n, err := parseUDPRcvbufErrors(b)
	if err != nil {
		return -1
	}
	return n
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
