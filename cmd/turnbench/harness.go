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
	"runtime/pprof"
	"syscall"

	"github.com/callbox/callbox/config"
	"github.com/callbox/callbox/turnserver"
)

// harnessCmd is the hidden subcommand that -callbox-cpuprofile runs in
// place of the callbox binary: the same config file and the same
// turnserver.New as cmd/callbox, without the hub and the web server (idle
// in the bench anyway), with a CPU profile of the whole process written
// when it is stopped. callbox itself serves no pprof, and a profile taken
// from outside (perf) would not read as go tool pprof's top lines.
const harnessCmd = "serve-turn"

func serveTURN(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet(harnessCmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	confPath := fs.String("config", "", "callbox config `file`")
	profPath := fs.String("cpuprofile", "", "write the CPU profile to `file` on SIGTERM")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *confPath == "" || *profPath == "" {
		return errors.New(harnessCmd + ": -config and -cpuprofile are required")
	}
	cfg, err := config.Load(*confPath)
	if err != nil {
		return err
	}
	f, err := os.Create(*profPath)
	if err != nil {
		return fmt.Errorf("%s: %w", harnessCmd, err)
	}
	defer f.Close()
	ctx, stop := ossignal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	s, err := turnserver.New(cfg.TURN, turnserver.Options{Logger: log})
	if err != nil {
		return err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		s.Close()
		return fmt.Errorf("%s: cpu profile: %w", harnessCmd, err)
	}
	<-ctx.Done()
	pprof.StopCPUProfile()
	return s.Close()
}
