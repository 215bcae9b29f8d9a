package main

// -server-cpus: the servers on some CPUs, the generator on the others.
// Sharing every CPU, a server's tail latency measures how it competes
// with the generator's own threads for a CPU as much as the server
// itself; on CPUs of its own it runs as on a VPS of that many CPUs.

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// cpuSplit is the placement of -server-cpus.
type cpuSplit struct {
	server, generator unix.CPUSet
	serverList        string // as given, for the report
}

// parseCPUList reads a list such as "1", "0,2" or "1-3".
func parseCPUList(s string) ([]int, error) {
	var cpus []int
	for _, part := range splitList(s) {
		lo, hi, isRange := strings.Cut(part, "-")
		first, err := strconv.Atoi(lo)
		last := first
		if err == nil && isRange {
			last, err = strconv.Atoi(hi)
		}
		if err != nil || first < 0 || last < first || last >= 1024 {
			return nil, fmt.Errorf("%q: want CPU numbers such as 1, 0,2 or 1-3", part)
		}
		for c := first; c <= last; c++ {
			cpus = append(cpus, c)
		}
	}
	if len(cpus) == 0 {
		return nil, errors.New("no CPU named")
	}
	return cpus, nil
}

// newCPUSplit puts the servers on list, which must be CPUs this process
// may use, and the generator on the rest, which must not be empty.
func newCPUSplit(list string, allowed unix.CPUSet) (*cpuSplit, error) {
	cpus, err := parseCPUList(list)
	if err != nil {
		return nil, err
	}
	c := &cpuSplit{generator: allowed, serverList: list}
	for _, cpu := range cpus {
		if !allowed.IsSet(cpu) {
			return nil, fmt.Errorf("CPU %d is not one this process may run on", cpu)
		}
		c.server.Set(cpu)
		c.generator.Clear(cpu)
	}
	if c.generator.Count() == 0 {
		return nil, errors.New("no CPU left for the generator")
	}
	return c, nil
}

// serverCPUs is how many CPUs the servers get.
func (c *cpuSplit) serverCPUs() int { return c.server.Count() }

// pinGenerator moves every thread of this process to the generator's
// CPUs; threads started later inherit that from the thread that starts
// them.
func (c *cpuSplit) pinGenerator() error { return pinThreads(&c.generator) }

// pinThreads moves every thread of this process to set.
func pinThreads(set *unix.CPUSet) error {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return fmt.Errorf("turnbench: pin threads: %w", err)
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := unix.SchedSetaffinity(tid, set); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("turnbench: pin thread %d: %w", tid, err)
		}
	}
	return nil
}

// start starts cmd on the servers' CPUs: the child inherits the CPUs of
// the thread that forks it, so that thread holds them for the fork.
func (c *cpuSplit) start(cmd *exec.Cmd) error {
	runtime.LockOSThread()
	var own unix.CPUSet
	if err := unix.SchedGetaffinity(0, &own); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("turnbench: affinity: %w", err)
	}
	if err := unix.SchedSetaffinity(0, &c.server); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("turnbench: move to the servers' CPUs: %w", err)
	}
	startErr := cmd.Start()
	if err := unix.SchedSetaffinity(0, &own); err != nil {
		// The thread stays locked: back among the others it would run
		// generator goroutines on the servers' CPUs.
		return errors.Join(startErr, fmt.Errorf("turnbench: move back to the generator's CPUs: %w", err))
	}
	runtime.UnlockOSThread()
	return startErr
}
