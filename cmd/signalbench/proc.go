package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// parseVmRSS reads the resident set size, in bytes, from the text of
// /proc/PID/status (a line "VmRSS:	   12345 kB").
func parseVmRSS(status []byte) (int64, error) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:")
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) != 2 || fields[1] != "kB" {
			return 0, fmt.Errorf("VmRSS line %q: want \"N kB\"", sc.Text())
		}
		kb, err := strconv.ParseInt(fields[0], 10, 64)
		// Above 2^53 kB the shift to bytes would overflow: no machine has that.
		if err != nil || kb < 0 || kb > 1<<53 {
			return 0, fmt.Errorf("VmRSS line %q: bad number", sc.Text())
		}
		return kb << 10, nil
	}
	return 0, fmt.Errorf("no VmRSS line (a zombie or kernel thread has none)")
}

// clockTick is USER_HZ, the unit of /proc/PID/stat times: 100 on every
// Linux architecture Go supports.
const clockTick = 100

// parseStatCPU returns the user plus system CPU time of a process from the
// text of /proc/PID/stat. The command name (field 2) may hold spaces and
// parentheses, so fields are counted after its last ')'.
func parseStatCPU(stat []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("stat: no ')' after the command name")
	}
	// After ')': field 3 (state) is fields[0], so utime (14) and stime (15)
	// are fields[11] and fields[12].
	fields := strings.Fields(string(stat[i+1:]))
	if len(fields) < 13 {
		return 0, fmt.Errorf("stat: %d fields after the command name, want >= 13", len(fields))
	}
	var ticks int64
	for _, f := range fields[11:13] {
		n, err := strconv.ParseInt(f, 10, 64)
		// The bound keeps ticks*time.Second from overflowing (about 29 years of CPU).
		if err != nil || n < 0 || n > 1<<34 {
			return 0, fmt.Errorf("stat: bad CPU time %q", f)
		}
		ticks += n
	}
	return time.Duration(ticks) * (time.Second / clockTick), nil
}

// parseOpenFilesLimit returns the soft "Max open files" of /proc/PID/limits.
func parseOpenFilesLimit(limits []byte) (uint64, error) {
	sc := bufio.NewScanner(bytes.NewReader(limits))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "Max open files")
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) < 1 {
			return 0, fmt.Errorf("limits line %q: no soft limit", sc.Text())
		}
		if fields[0] == "unlimited" {
			return ^uint64(0), nil
		}
		n, err := strconv.ParseUint(fields[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("limits line %q: %w", sc.Text(), err)
		}
		return n, nil
	}
	return 0, fmt.Errorf("limits: no \"Max open files\" line")
}

func readRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("rss of %d: %w", pid, err)
	}
	return parseVmRSS(b)
}

func readCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("cpu of %d: %w", pid, err)
	}
	return parseStatCPU(b)
}

func readOpenFilesLimit(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		return 0, fmt.Errorf("limits of %d: %w", pid, err)
	}
	return parseOpenFilesLimit(b)
}

// raiseOpenFiles lifts this process's soft open-files limit to the hard one.
// An explicit Setrlimit is also what makes os/exec hand the raised limit to
// the servers started here (Go otherwise restores the original for children).
func raiseOpenFiles() (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("getrlimit nofile: %w", err)
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("setrlimit nofile %d: %w", lim.Max, err)
	}
	return lim.Cur, nil
}

// parseLoadAvg returns the 1-minute load average from /proc/loadavg
// ("0.52 0.58 0.59 1/467 12345"): other work on the machine skews every
// figure, so each row says how busy the machine was.
func parseLoadAvg(b []byte) (float64, error) {
	fields := strings.Fields(string(b))
	if len(fields) < 1 {
		return 0, fmt.Errorf("loadavg: empty")
	}
	f, err := strconv.ParseFloat(fields[0], 64)
	if err != nil || f < 0 {
		return 0, fmt.Errorf("loadavg: bad 1-minute average %q", fields[0])
	}
	return f, nil
}

func readLoadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	f, err := parseLoadAvg(b)
	if err != nil {
		return -1
	}
	return f
}
