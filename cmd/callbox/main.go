// Command callbox runs a WebRTC call server: signaling hub, STUN/TURN and the
// web client, in one process.
//
//	callbox [-config FILE]                               run the server; SIGHUP reloads FILE
//	callbox credentials -config FILE -user NAME [-ttl 1h] print TURN REST credentials
//	callbox invite -config FILE -room NAME [-ttl 24h]     print an invite link
//	callbox check [-password P] [-json] URL               check a deployed callbox from outside
//	callbox version                                      print the version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	ossignal "os/signal"
	"runtime/debug"
	"sync"
	"syscall"

	"github.com/callbox/callbox/app"
	"github.com/callbox/callbox/config"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "callbox:", err)
		}
		os.Exit(2)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "version":
			fmt.Fprintln(stdout, "callbox", version())
			return nil
		case "credentials":
			return credentials(args[1:], stdout, stderr)
		case "invite":
			return invite(args[1:], stdout, stderr)
		case "check":
			return checkCmd(args[1:], stdout, stderr)
		}
	}
	return serve(args, stderr)
}

func serve(args []string, stderr io.Writer) error {
	ctx, stop := ossignal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	ossignal.Notify(hup, syscall.SIGHUP)
	defer ossignal.Stop(hup)
	return serveUntil(ctx, args, stderr, hup)
}

// serveUntil runs the server until ctx ends, reloading the config file at
// each value on hup.
func serveUntil(ctx context.Context, args []string, stderr io.Writer, hup <-chan os.Signal) error {
	fs := flag.NewFlagSet("callbox", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "TOML config `file`; without it callbox runs on its built-in local defaults")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unknown command %q (commands: version, credentials, invite, check)", fs.Arg(0))
	}
	cfg, err := loadConfig(*path)
	if err != nil {
		return err
	}
	level := new(slog.LevelVar)
	logger, err := newLogger(cfg.Log, stderr, level)
	if err != nil {
		return err
	}
	a, err := app.New(cfg, logger)
	if err != nil {
		return err
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		reloadOnHUP(runCtx, hup, reloader{path: *path, app: a, level: level, log: logger})
	}()
	defer wg.Wait()
	// Every listener is bound: connections queue from here on.
	if err := sdNotify("READY=1"); err != nil {
		logger.Warn("systemd notify failed", "err", err)
	}
	stopNotify := context.AfterFunc(ctx, func() { sdNotify("STOPPING=1") })
	defer stopNotify()
	err = a.Run(runCtx)
	cancel() // ends the reload loop when Run failed on its own
	return err
}

// loadConfig reads FILE, or returns the defaults when there is none.
func loadConfig(path string) (config.Config, error) {
	if path == "" {
		return config.Default(), nil
	}
	return config.Load(path)
}

// newLogger builds the logger at c.Level through level, which a reload
// may change later.
func newLogger(c config.Log, w io.Writer, level *slog.LevelVar) (*slog.Logger, error) {
	if err := level.UnmarshalText([]byte(c.Level)); err != nil {
		return nil, fmt.Errorf("log.level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return slog.New(slog.NewTextHandler(w, opts)), nil
}

func version() string {
	if info, ok := debug.ReadBuildInfo(); ok && info.Main.Version != "" && info.Main.Version != "(devel)" {
		return info.Main.Version
	}
	return "dev"
}
