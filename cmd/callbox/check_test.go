package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/callbox/callbox/app"
	"github.com/callbox/callbox/config"
)

func TestParseCheckArgs(t *testing.T) {
	t.Setenv("CALLBOX_PASSWORD", "")
	cases := []struct {
		name     string
		args     []string
		url      string
		room     string
		password string
		json     bool
		timeout  time.Duration
		wantErr  string
	}{
		{name: "url only", args: []string{"https://call.example.com"}, url: "https://call.example.com", timeout: 20 * time.Second},
		{name: "flags first", args: []string{"-json", "-room", "standup", "-timeout", "8s", "https://c.example"},
			url: "https://c.example", room: "standup", json: true, timeout: 8 * time.Second},
		{name: "flags after the URL", args: []string{"http://127.0.0.1:8080", "-json", "-password", "pw"},
			url: "http://127.0.0.1:8080", password: "pw", json: true, timeout: 20 * time.Second},
		{name: "flags around the URL", args: []string{"-room", "a", "https://c.example", "-json"},
			url: "https://c.example", room: "a", json: true, timeout: 20 * time.Second},
		{name: "no URL", args: []string{"-json"}, wantErr: "a URL is required"},
		{name: "two URLs", args: []string{"https://a.example", "https://b.example"}, wantErr: "one URL only"},
		{name: "bad scheme", args: []string{"ftp://a.example"}, wantErr: "want http or https"},
		{name: "zero timeout", args: []string{"-timeout", "0s", "https://a.example"}, wantErr: "-timeout"},
		{name: "unknown flag", args: []string{"-bogus", "https://a.example"}, wantErr: "bogus"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseCheckArgs(tc.args, io.Discard)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.opts.URL != tc.url || c.opts.Room != tc.room || c.opts.Password != tc.password || c.json != tc.json || c.opts.Timeout != tc.timeout {
				t.Errorf("got url %q room %q password %q json %v timeout %s", c.opts.URL, c.opts.Room, c.opts.Password, c.json, c.opts.Timeout)
			}
			if c.opts.StepTimeout <= 0 || c.opts.StepTimeout > c.opts.Timeout {
				t.Errorf("step timeout %s outside (0, %s]", c.opts.StepTimeout, c.opts.Timeout)
			}
		})
	}
}

func TestCheckPasswordFromEnvironment(t *testing.T) {
	t.Setenv("CALLBOX_PASSWORD", "from-env")
	c, err := parseCheckArgs([]string{"https://a.example"}, io.Discard)
	if err != nil || c.opts.Password != "from-env" {
		t.Fatalf("password %q, %v; want it from $CALLBOX_PASSWORD", c.opts.Password, err)
	}
}

func TestCheckHelp(t *testing.T) {
	var errOut bytes.Buffer
	err := run([]string{"check", "-h"}, io.Discard, &errOut)
	if !errors.Is(err, flag.ErrHelp) || !strings.Contains(errOut.String(), "usage: callbox check") {
		t.Errorf("err %v, usage %q", err, errOut.String())
	}
}

// The subcommand end to end against a callbox on loopback: exit status
// and output, text and JSON, healthy and in password mode.
func TestCheckCommand(t *testing.T) {
	t.Setenv("CALLBOX_PASSWORD", "")
	cfg := config.Default()
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.TURN.Listen = "127.0.0.1:0"
	cfg.TURN.AllowLoopbackPeers = true
	cfg.TURN.UDPSockets = 1
	cfg.Metrics.Listen = ""
	cfg.Signal.Access = config.AccessPassword
	cfg.Signal.Password = "correct horse battery"
	a, err := app.New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	cases := []struct {
		name   string
		args   []string
		failed bool
		want   string
	}{
		{name: "text", args: []string{a.HTTPURL(), "-password", cfg.Signal.Password}, want: "  ok    relay"},
		{name: "json", args: []string{"-json", "-password", cfg.Signal.Password, a.HTTPURL()}, want: `"ok": true`},
		{name: "no password", args: []string{a.HTTPURL()}, failed: true, want: "pass -password"},
		{name: "no password json", args: []string{"-json", a.HTTPURL()}, failed: true, want: `"ok": false`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := run(append([]string{"check", "-timeout", "10s"}, tc.args...), &out, &errOut)
			if tc.failed != errors.Is(err, errCheckFailed) || (!tc.failed && err != nil) {
				t.Errorf("err %v, want failed=%v", err, tc.failed)
			}
			if !strings.Contains(out.String(), tc.want) {
				t.Errorf("output lacks %q:\n%s", tc.want, out.String())
			}
			if strings.HasPrefix(tc.name, "json") && !json.Valid(out.Bytes()) {
				t.Errorf("not JSON:\n%s", out.String())
			}
		})
	}
}

func TestCheckCAFile(t *testing.T) {
	notPEM := writeConfig(t, "not a certificate")
	cases := []struct {
		name, file, want string
	}{
		{name: "missing", file: "/nonexistent/ca.pem", want: "-ca: open"},
		{name: "not PEM", file: notPEM, want: "no PEM certificates"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := run([]string{"check", "-ca", tc.file, "https://a.example"}, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err %v, want one containing %q", err, tc.want)
			}
		})
	}
}
