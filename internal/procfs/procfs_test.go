package procfs

import (
	"strings"
	"testing"
	"time"
)

func TestParseStatCPU(t *testing.T) {
	tests := []struct {
		name    string
		stat    string
		want    time.Duration
		wantErr bool
	}{
		{name: "plain", stat: "1234 (turnserver) S 1 1234 1234 0 -1 4194560 1 0 0 0 250 130 0 0 20 0 5 0 100 1000 200",
			want: 3800 * time.Millisecond},
		{name: "name with spaces and parens", stat: "7 (a b) c) R 1 7 7 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 1 1 1", want: 30 * time.Millisecond},
		{name: "no paren", stat: "1234 turnserver S 1", wantErr: true},
		{name: "short", stat: "1 (x) S 1 2 3", wantErr: true},
		{name: "negative", stat: "1 (x) S 1 1 1 0 -1 0 0 0 0 0 -5 2 0", wantErr: true},
		{name: "not a number", stat: "1 (x) S 1 1 1 0 -1 0 0 0 0 0 ab 2 0", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseStatCPU([]byte(tc.stat))
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("got %v, %v; want %v, error %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestParseSchedstat(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Duration
		wantErr bool
	}{
		{in: "7451284 80611110 17\n", want: 7451284},
		{in: "0 0 0", want: 0},
		{in: "", wantErr: true},
		{in: "-1 0 0", wantErr: true},
		{in: "x 0 0", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseSchedstat([]byte(tc.in))
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("got %v, %v; want %v, error %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestParseVmRSS(t *testing.T) {
	tests := []struct {
		name    string
		status  string
		want    int64
		wantErr bool
	}{
		{name: "present", status: "Name:\tturnserver\nVmPeak:\t 99 kB\nVmRSS:\t   16180 kB\nThreads:\t5\n", want: 16180 << 10},
		{name: "missing", status: "Name:\tzombie\nState:\tZ\n", wantErr: true},
		{name: "no unit", status: "VmRSS:\t16180\n", wantErr: true},
		{name: "bad number", status: "VmRSS:\t1x kB\n", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseVmRSS([]byte(tc.status))
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("got %d, %v; want %d, error %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestStatusValue(t *testing.T) {
	status := "Name:\tcallbox\nSeccomp:\t2\nSeccomp_filters:\t1\nVmRSS:\t   16180 kB\n"
	tests := []struct {
		key, want string
		ok        bool
	}{
		{"Seccomp", "2", true}, // not Seccomp_filters, which shares the prefix
		{"VmRSS", "16180 kB", true},
		{"Threads", "", false},
	}
	for _, tc := range tests {
		if got, ok := StatusValue([]byte(status), tc.key); got != tc.want || ok != tc.ok {
			t.Errorf("StatusValue(%q) = %q, %v; want %q, %v", tc.key, got, ok, tc.want, tc.ok)
		}
	}
}

func TestStatFields(t *testing.T) {
	// Field 19 is the nice value: index 19-3.
	fields, err := StatFields([]byte("7 (a b) c) R 1 7 7 0 -1 0 0 0 0 0 1 2 0 0 20 -3 1"))
	if err != nil || len(fields) != 18 || fields[0] != "R" || fields[19-3] != "-3" {
		t.Fatalf("got %q, %v", fields, err)
	}
	if _, err := StatFields([]byte("7 a R 1")); err == nil {
		t.Fatal("no error without the command name's ')'")
	}
}

func FuzzProcParsers(f *testing.F) {
	f.Add([]byte("1234 (turnserver) S 1 1234 1234 0 -1 4194560 1 0 0 0 250 130 0 0 20 0 5 0 100 1000 200"))
	f.Add([]byte("VmRSS:\t   16180 kB\n"))
	f.Add([]byte("7451284 80611110 17\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if d, err := ParseStatCPU(b); err == nil && d < 0 {
			t.Fatalf("negative CPU %v", d)
		}
		if d, err := ParseSchedstat(b); err == nil && d < 0 {
			t.Fatalf("negative run time %v", d)
		}
		if n, err := ParseVmRSS(b); err == nil && n < 0 {
			t.Fatalf("negative RSS %d", n)
		}
		if v, ok := StatusValue(b, "Seccomp"); ok && strings.ContainsRune(v, '\n') {
			t.Fatalf("value %q spans lines", v)
		}
	})
}
