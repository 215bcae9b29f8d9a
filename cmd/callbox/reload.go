package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/callbox/callbox/app"
	"github.com/callbox/callbox/config"
)

// reloader applies the config file to the running app on SIGHUP
// (`systemctl reload callbox`).
type reloader struct {
	path  string
	app   *app.App
	level *slog.LevelVar
	log   *slog.Logger
}

// reloadOnHUP reloads at each signal on hup until ctx ends.
func reloadOnHUP(ctx context.Context, hup <-chan os.Signal, r reloader) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			r.reload()
		}
	}
}

// reload tells systemd it is reloading, applies what can change live and
// says READY again, whatever the outcome: a broken file leaves the running
// configuration in force, which is still a ready service.
func (r reloader) reload() {
	notify(r.log, fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d", monotonicUsec()))
	defer notify(r.log, "READY=1")
	if r.path == "" {
		r.log.Warn("reload: callbox runs on its built-in defaults (no -config): nothing to reload")
		return
	}
	cfg, err := config.Load(r.path)
	if err != nil {
		r.log.Error("reload: config file is broken; still running the previous configuration", "err", err)
		return
	}
	needRestart, err := r.app.Reload(cfg)
	if err != nil {
		r.log.Error("reload: not applied; still running the previous configuration", "err", err)
		return
	}
	if err := r.level.UnmarshalText([]byte(cfg.Log.Level)); err != nil {
		r.log.Error("reload: log.level", "err", err) // Load validated it: should not happen
	}
	if len(needRestart) > 0 {
		r.log.Warn("reload: these keys changed but need a restart (systemctl restart callbox); their old values stay in force",
			"keys", strings.Join(needRestart, ", "))
	}
	r.log.Info("reloaded", "file", r.path, "turn_secrets", len(cfg.TURN.Secrets), "access", cfg.Signal.Access)
}

func notify(log *slog.Logger, state string) {
	if err := sdNotify(state); err != nil {
		log.Warn("systemd notify failed", "err", err)
	}
}

// monotonicUsec is CLOCK_MONOTONIC in microseconds: systemd wants it with
// RELOADING=1 (sd_notify(3)) to tell this reload from an older one.
func monotonicUsec() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return ts.Nano() / 1000
}
