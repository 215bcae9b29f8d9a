package main

import (
	"os"
	"testing"

	"github.com/callbox/callbox/internal/procfs"
)

const statusSample = "Name:\tcallbox\nUmask:\t0022\nState:\tS (sleeping)\nVmPeak:\t 1255508 kB\nVmSize:\t 1255508 kB\nVmHWM:\t   21180 kB\nVmRSS:\t   20844 kB\nRssAnon:\t    9984 kB\nThreads:\t8\n"

func TestParseOpenFilesLimit(t *testing.T) {
	tests := []struct {
		name    string
		limits  string
		want    uint64
		wantErr bool
	}{
		{"real", "Limit                     Soft Limit           Hard Limit           Units     \nMax open files            20000                20000                files     \n", 20000, false},
		{"raised soft", "Max open files            1024                 20000                files\n", 1024, false},
		{"unlimited", "Max open files            unlimited            unlimited            files\n", ^uint64(0), false},
		{"missing", "Max processes 100 100 processes\n", 0, true},
		{"garbage", "Max open files   many\n", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseOpenFilesLimit([]byte(tt.limits))
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("got %d, %v; want %d, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

// The readers work on this very process: the files are real.
func TestReadSelf(t *testing.T) {
	pid := os.Getpid()
	if rss, err := procfs.RSS(pid); err != nil || rss <= 0 {
		t.Errorf("procfs.RSS(self) = %d, %v", rss, err)
	}
	if _, err := procfs.CPU(pid); err != nil {
		t.Errorf("procfs.CPU(self): %v", err)
	}
	lim, err := raiseOpenFiles()
	if err != nil {
		t.Fatal(err)
	}
	if got, err := readOpenFilesLimit(pid); err != nil || got != lim {
		t.Errorf("open-files limit %d, %v; want %d after raising", got, err, lim)
	}
}

func TestParseLoadAvg(t *testing.T) {
	tests := []struct {
		in      string
		want    float64
		wantErr bool
	}{
		{"0.52 0.58 0.59 1/467 12345\n", 0.52, false},
		{"21.52 13.34 6.04 30/900 1", 21.52, false},
		{"", 0, true},
		{"x 1 1", 0, true},
		{"-1 0 0", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseLoadAvg([]byte(tt.in))
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("got %g, %v; want %g, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}
