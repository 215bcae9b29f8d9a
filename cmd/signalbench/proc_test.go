package main

import (
	"os"
	"strings"
	"testing"
	"time"
)

const statusSample = "Name:\tcallbox\nUmask:\t0022\nState:\tS (sleeping)\nVmPeak:\t 1255508 kB\nVmSize:\t 1255508 kB\nVmHWM:\t   21180 kB\nVmRSS:\t   20844 kB\nRssAnon:\t    9984 kB\nThreads:\t8\n"

func TestParseVmRSS(t *testing.T) {
	tests := []struct {
		name    string
		status  string
		want    int64
		wantErr string
	}{
		{"real status", statusSample, 20844 << 10, ""},
		{"zero", "VmRSS:\t0 kB\n", 0, ""},
		{"no trailing newline", "VmRSS:   12 kB", 12 << 10, ""},
		{"kernel thread has none", "Name:\tkthreadd\nState:\tS\n", 0, "no VmRSS"},
		{"VmRSSx is not VmRSS", "VmRSSAnon:\t5 kB\n", 0, "no VmRSS"},
		{"unit", "VmRSS:\t12 MB\n", 0, "want \"N kB\""},
		{"number", "VmRSS:\tx kB\n", 0, "bad number"},
		{"negative", "VmRSS:\t-1 kB\n", 0, "bad number"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseVmRSS([]byte(tt.status))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %d, %v; want %d", got, err, tt.want)
			}
		})
	}
}

func TestParseStatCPU(t *testing.T) {
	tests := []struct {
		name    string
		stat    string
		want    time.Duration
		wantErr bool
	}{
		{"real stat", "9853 (node) S 9841 9841 9841 0 -1 4194304 11530 0 0 0 152 31 0 0 20 0 11 0 150218 1282662400 15862 18446744073709551615 1 1 0 0 0 0 0 16781312 17922 0 0 0 17 1 0 0 0 0 0",
			183 * 10 * time.Millisecond, false},
		{"name with spaces and parens", "42 (a) b) c) R 1 1 1 0 -1 0 0 0 0 0 5 5 0 0 20 0 1 0 1 1 1", 100 * time.Millisecond, false},
		{"no paren", "42 node R 1", 0, true},
		{"too short", "42 (node) R 1 1 1", 0, true},
		{"bad number", "42 (n) R 1 1 1 0 -1 0 0 0 0 0 x 5 0 0", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStatCPU([]byte(tt.stat))
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("got %s, %v; want %s, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

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
	if rss, err := readRSS(pid); err != nil || rss <= 0 {
		t.Errorf("readRSS(self) = %d, %v", rss, err)
	}
	if _, err := readCPU(pid); err != nil {
		t.Errorf("readCPU(self): %v", err)
	}
	lim, err := raiseOpenFiles()
	if err != nil {
		t.Fatal(err)
	}
	if got, err := readOpenFilesLimit(pid); err != nil || got != lim {
		t.Errorf("open-files limit %d, %v; want %d after raising", got, err, lim)
	}
}

func FuzzParseVmRSS(f *testing.F) {
	f.Add([]byte(statusSample))
	f.Add([]byte("VmRSS:\t9223372036854775807 kB\n"))
	f.Add([]byte("VmRSS:"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if n, err := parseVmRSS(b); err == nil && n < 0 {
			t.Fatalf("negative RSS %d without an error", n)
		}
	})
}

func FuzzParseStatCPU(f *testing.F) {
	f.Add([]byte("1 (x) R 1 1 1 0 -1 0 0 0 0 0 5 5 0 0"))
	f.Add([]byte("1 ()) R"))
	f.Add([]byte("1 (x) R 1 1 1 0 -1 0 0 0 0 0 9223372036854775807 5 0 0"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if d, err := parseStatCPU(b); err == nil && d < 0 {
			t.Fatalf("negative CPU time %s without an error", d)
		}
	})
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
