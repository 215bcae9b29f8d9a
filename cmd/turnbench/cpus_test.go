package main

import (
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseCPUList(t *testing.T) {
	tests := []struct {
		in      string
		want    []int
		wantErr string
	}{
		{in: "1", want: []int{1}},
		{in: "0,2", want: []int{0, 2}},
		{in: "1-3", want: []int{1, 2, 3}},
		{in: " 0 , 4-5 ", want: []int{0, 4, 5}},
		{in: "", wantErr: "no CPU"},
		{in: "3-1", wantErr: "want CPU numbers"},
		{in: "-1", wantErr: "want CPU numbers"},
		{in: "a", wantErr: "want CPU numbers"},
		{in: "1-", wantErr: "want CPU numbers"},
		{in: "5000", wantErr: "want CPU numbers"},
	}
	for _, tc := range tests {
		got, err := parseCPUList(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("parseCPUList(%q) = %v, %v; want error %q", tc.in, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("parseCPUList(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

func cpuSet(cpus ...int) unix.CPUSet {
	var s unix.CPUSet
	for _, c := range cpus {
		s.Set(c)
	}
	return s
}

func TestNewCPUSplit(t *testing.T) {
	allowed := cpuSet(0, 1, 2)
	tests := []struct {
		list              string
		server, generator unix.CPUSet
		wantErr           string
	}{
		{list: "2", server: cpuSet(2), generator: cpuSet(0, 1)},
		{list: "1-2", server: cpuSet(1, 2), generator: cpuSet(0)},
		{list: "0-2", wantErr: "no CPU left"},
		{list: "3", wantErr: "CPU 3 is not one"},
	}
	for _, tc := range tests {
		c, err := newCPUSplit(tc.list, allowed)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%q: err %v, want %q", tc.list, err, tc.wantErr)
			}
			continue
		}
		if err != nil || c.server != tc.server || c.generator != tc.generator {
			t.Errorf("%q: server %v generator %v (%v), want %v and %v", tc.list, c.server, c.generator, err, tc.server, tc.generator)
		}
	}
}

// lastCPU is the highest CPU of set.
func lastCPU(set unix.CPUSet) int {
	last := -1
	for c := range 1024 {
		if set.IsSet(c) {
			last = c
		}
	}
	return last
}

// TestCPUSplitStart: a process started through the split runs on the
// servers' CPUs, and the thread that started it is back on its own.
func TestCPUSplitStart(t *testing.T) {
	var allowed unix.CPUSet
	if err := unix.SchedGetaffinity(0, &allowed); err != nil {
		t.Fatal(err)
	}
	if allowed.Count() < 2 {
		t.Skip("one CPU: none to spare for the servers")
	}
	server := lastCPU(allowed)
	c, err := newCPUSplit(strconv.Itoa(server), allowed)
	if err != nil {
		t.Fatal(err)
	}
	// Locked here, start's own lock nests: the thread checked below is
	// the one that forked.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cmd := exec.Command("grep", "Cpus_allowed_list", "/proc/self/status")
	var out strings.Builder
	cmd.Stdout = &out
	if err := c.start(cmd); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(strings.TrimPrefix(out.String(), "Cpus_allowed_list:")); got != strconv.Itoa(server) {
		t.Errorf("child's CPUs %q, want %d", got, server)
	}
	var after unix.CPUSet
	if err := unix.SchedGetaffinity(0, &after); err != nil || after != allowed {
		t.Errorf("starting thread's CPUs %v (%v), want %v", after, err, allowed)
	}
}
