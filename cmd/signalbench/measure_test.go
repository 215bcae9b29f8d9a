package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// needTool skips a test when a tool is missing, except in CI, which must
// have every tool.
func needTool(t *testing.T, tool, debianPackage string) {
	t.Helper()
	if _, err := exec.LookPath(tool); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not found: install the Debian package %s", tool, debianPackage)
		}
		t.Skipf("%s not found: install the Debian package %s", tool, debianPackage)
	}
}

// TestMeasure runs the whole command path on a small load against both real
// servers, each in its own process: fresh server, joins, idle RSS, paced
// relay, clean stop. The figures are not checked (timing on a shared
// machine); that every client joins and every message arrives is.
func TestMeasure(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real servers (and may build callbox or run npm ci): not in -short")
	}
	if _, err := raiseOpenFiles(); err != nil {
		t.Fatal(err)
	}
	repo, err := repoRoot(".")
	if err != nil {
		t.Fatal(err)
	}
	l := &launcher{log: slog.New(slog.NewTextHandler(io.Discard, nil)), repo: repo, tmp: t.TempDir()}
	cfg := loadConfig{N: 40, Room: 4, Rate: 400, Duration: time.Second, Settle: 100 * time.Millisecond,
		Concurrency: 8, JoinTimeout: 10 * time.Second, LatencyLog: filepath.Join(t.TempDir(), "lat")}
	tests := []struct {
		name  string
		tool  string
		pkg   string
		proto protocol
		start func(ctx context.Context) (*server, error)
	}{
		{"callbox", "go", "golang", callboxProto{}, func(ctx context.Context) (*server, error) {
			return l.startCallbox(ctx, cfg.N, cfg.Room, cfg.Rate)
		}},
		{"peerjs", "node", "nodejs", peerjsProto{}, func(ctx context.Context) (*server, error) {
			return l.startPeerJS(ctx, cfg.N)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			needTool(t, tt.tool, tt.pkg)
			if _, err := os.Stat(filepath.Join(repo, "bench", "peerjs", "node_modules")); tt.tool == "node" && err != nil {
				needTool(t, "npm", "npm") // startPeerJS installs the server with npm ci
			}
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			srv, err := tt.start(ctx)
			if err != nil {
				t.Fatal(err)
			}
			res, err := measure(ctx, l.log, tt.proto, srv, cfg)
			if serr := srv.stop(); serr != nil {
				t.Errorf("stop: %v", serr)
			}
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%+v", res)
			if res.Joined != cfg.N || res.JoinRate <= 0 {
				t.Errorf("joined %d of %d at %.0f/s", res.Joined, cfg.N, res.JoinRate)
			}
			if want := int64(cfg.Rate * cfg.Duration.Seconds()); res.Sent != want || res.Received != want {
				t.Errorf("sent %d, received %d; want %d each", res.Sent, res.Received, want)
			}
			if res.Errors != 0 || res.P50 <= 0 || res.P99 < res.P50 || res.Max < res.P99 {
				t.Errorf("errors %v, p50 %s, p99 %s, max %s", res.ErrorsByCategory, res.P50, res.P99, res.Max)
			}
			// 40 clients each 5 s over at least the 1 s message phase: 8 or more.
			if hb := tt.proto.Heartbeat() != nil; hb && res.Heartbeats < 6 || !hb && res.Heartbeats != 0 {
				t.Errorf("%d heartbeats sent", res.Heartbeats)
			}
			// -latency-log: a line per delivered message, "send-µs latency-µs".
			if b, err := os.ReadFile(fmt.Sprintf("%s-%s-%d.txt", cfg.LatencyLog, tt.proto.Name(), cfg.N)); err != nil {
				t.Error(err)
			} else if lines := strings.Split(strings.TrimSpace(string(b)), "\n"); int64(len(lines)) != res.Received || len(strings.Fields(lines[0])) != 2 {
				t.Errorf("latency log: %d lines for %d messages, first %q", len(lines), res.Received, lines[0])
			}
			if res.RSSBefore <= 0 || res.RSSIdle <= 0 {
				t.Errorf("RSS before %d, idle %d", res.RSSBefore, res.RSSIdle)
			}
			select {
			case <-srv.done:
			default:
				t.Error("server still running after stop")
			}
		})
	}
}
