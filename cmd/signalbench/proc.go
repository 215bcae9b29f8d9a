package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

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
