package main

import (
	"context"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	ossignal "os/signal"
	"time"

	"github.com/callbox/callbox/check"
)

// checkArgs is what `callbox check` was asked to do.
type checkArgs struct {
	opts    check.Options
	json    bool
	caFile  string
	verbose bool
}

// parseCheckArgs reads the flags, which may come before or after the URL
// (people type `callbox check URL -json` as often as the other order).
func parseCheckArgs(args []string, stderr io.Writer) (checkArgs, error) {
	var c checkArgs
	fs := flag.NewFlagSet("callbox check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: callbox check [flags] URL\n\nURL is the server (https://call.example.com) or a call link (https://call.example.com/r/ROOM?invite=TOKEN).\nExit status non-zero when a check fails, 0 with warnings only.\n\nflags:")
		fs.PrintDefaults()
	}
	fs.StringVar(&c.opts.Room, "room", "", "room `name` to join (default: a throwaway room with a random name)")
	fs.StringVar(&c.opts.Password, "password", os.Getenv("CALLBOX_PASSWORD"), "the server's `password` when [signal] access = \"password\" (default $CALLBOX_PASSWORD, which keeps it out of ps)")
	fs.StringVar(&c.opts.Invite, "invite", "", "invite `token` when [signal] access = \"invite\" (or give the whole invite link as URL)")
	fs.DurationVar(&c.opts.Timeout, "timeout", 20*time.Second, "bound on the whole check")
	fs.BoolVar(&c.json, "json", false, "print the results as JSON")
	fs.StringVar(&c.caFile, "ca", "", "PEM `file` of extra root certificates to trust (a private CA)")
	fs.BoolVar(&c.verbose, "v", false, "log every step (and pion's TURN client) to stderr")
	rest := args
	for {
		if err := fs.Parse(rest); err != nil {
			return checkArgs{}, err
		}
		if fs.NArg() == 0 {
			break
		}
		if c.opts.URL != "" {
			return checkArgs{}, fmt.Errorf("check: one URL only, got %q and %q", c.opts.URL, fs.Arg(0))
		}
		c.opts.URL = fs.Arg(0)
		rest = fs.Args()[1:]
	}
	switch {
	case c.opts.URL == "":
		fs.Usage()
		return checkArgs{}, errors.New("check: a URL is required")
	case c.opts.Timeout <= 0:
		return checkArgs{}, fmt.Errorf("check: -timeout %s: must be > 0", c.opts.Timeout)
	}
	if _, err := check.ParseTarget(c.opts.URL); err != nil {
		return checkArgs{}, err
	}
	// Each step may take a quarter of the whole: a silent port then costs
	// a quarter, and the checks after it still run.
	c.opts.StepTimeout = min(c.opts.Timeout/4, 5*time.Second)
	return c, nil
}

// errCheckFailed makes the exit status non-zero; the report said why.
var errCheckFailed = errors.New("check: some checks failed (see above)")

// checkCmd runs `callbox check` and prints the report.
func checkCmd(args []string, stdout, stderr io.Writer) error {
	c, err := parseCheckArgs(args, stderr)
	if err != nil {
		return err
	}
	if c.caFile != "" {
		pem, err := os.ReadFile(c.caFile)
		if err != nil {
			return fmt.Errorf("check: -ca: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("check: -ca %s: no PEM certificates in it", c.caFile)
		}
		c.opts.RootCAs = pool
	}
	level := slog.LevelWarn
	if c.verbose {
		level = slog.LevelDebug
	}
	c.opts.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := ossignal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	rep := check.Run(ctx, c.opts)
	if c.json {
		err = rep.WriteJSON(stdout)
	} else {
		err = rep.WriteText(stdout)
	}
	if err != nil {
		return fmt.Errorf("check: write report: %w", err)
	}
	if rep.Failed() {
		return errCheckFailed
	}
	return nil
}
