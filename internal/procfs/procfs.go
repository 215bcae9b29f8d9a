// Package procfs reads Linux's /proc: a process's CPU time and memory for
// the benchmark commands that measure a server from outside, and the
// fields of stat and status for whoever needs one.
package procfs

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// userHZ is the unit of utime and stime in /proc/PID/stat: USER_HZ, 100 on
// every Linux architecture Go runs on.
const userHZ = 100

// CPU is utime+stime of process pid.
func CPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("procfs: cpu of %d: %w", pid, err)
	}
	return ParseStatCPU(b)
}

// RSS is the resident set size of process pid, in bytes.
func RSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("procfs: rss of %d: %w", pid, err)
	}
	return ParseVmRSS(b)
}

// StatFields splits the text of /proc/PID/stat (or .../task/TID/stat)
// after the command name: field 3 (the state) is the first, so field N is
// at index N-3. The command name (field 2) may hold spaces and ')', so the
// split starts at its last ')'.
func StatFields(stat []byte) ([]string, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return nil, errors.New("stat: no ')' closing the command name")
	}
	return strings.Fields(string(stat[i+1:])), nil
}

// ParseStatCPU returns utime+stime (fields 14 and 15) from the text of
// /proc/PID/stat.
func ParseStatCPU(stat []byte) (time.Duration, error) {
	fields, err := StatFields(stat)
	if err != nil {
		return 0, err
	}
	if len(fields) < 13 {
		return 0, fmt.Errorf("stat: %d fields after the command name, want at least 13", len(fields))
	}
	var ticks int64
	for _, f := range fields[11:13] {
		n, err := strconv.ParseInt(f, 10, 64)
		// The bound (about 5 years of CPU per field) keeps the sum's
		// conversion to nanoseconds from overflowing.
		if err != nil || n < 0 || n > 1<<34 {
			return 0, fmt.Errorf("stat: bad CPU time %q", f)
		}
		ticks += n
	}
	return time.Duration(ticks) * (time.Second / userHZ), nil
}

// ParseSchedstat returns the first field of /proc/PID/task/TID/schedstat:
// nanoseconds the thread has run.
func ParseSchedstat(b []byte) (time.Duration, error) {
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

// StatusValue returns the value of key in the text of /proc/PID/status
// (the line "key:\tvalue"), spaces trimmed.
func StatusValue(status []byte, key string) (string, bool) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), key+":"); ok {
			return strings.TrimSpace(rest), true
		}
	}
	return "", false
}

// ParseVmRSS returns the resident set size in bytes from the text of
// /proc/PID/status (a line "VmRSS:     1234 kB").
func ParseVmRSS(status []byte) (int64, error) {
	v, ok := StatusValue(status, "VmRSS")
	if !ok {
		return 0, errors.New("status: no VmRSS line")
	}
	f := strings.Fields(v)
	if len(f) != 2 || f[1] != "kB" {
		return 0, fmt.Errorf("status: VmRSS %q is not \"N kB\"", v)
	}
	kb, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil || kb < 0 || kb > 1<<40 {
		return 0, fmt.Errorf("status: VmRSS %q: bad number", v)
	}
	return kb << 10, nil
}
