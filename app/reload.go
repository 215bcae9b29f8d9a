package app

import (
	"fmt"
	"reflect"
	"strings"

	"github.com/callbox/callbox/config"
)

// liveKeys can change without a restart; a changed key outside these is
// reported by Reload as needing one. log.level is applied by the caller,
// which owns the logger.
var liveKeys = map[string]bool{
	"turn.secrets":        true,
	"turn.credential_ttl": true,
	"log.level":           true,
}

// Reload applies a new configuration without dropping calls (SIGHUP): TURN
// secrets (rotation: running allocations are checked against the new list
// at their next request), credential lifetime, the whole [signal] section
// (access mode, password, limits: for new joins and messages), and the
// certificate files, re-read. The keys it cannot apply are returned: they
// keep their old values until a restart. cfg must be valid (config.Load
// checked it); on error nothing has changed.
func (a *App) Reload(cfg config.Config) (needRestart []string, err error) {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	old := a.cfg.Load()
	if len(cfg.TURN.Secrets) == 0 {
		// The running secret was generated at start; a config that still
		// sets none keeps it, so handed-out credentials stay valid.
		cfg.TURN.Secrets = old.TURN.Secrets
	}
	if err := a.hub.SetConfig(cfg.Signal); err != nil {
		return nil, fmt.Errorf("app: reload: %w", err)
	}
	if err := a.turn.SetSecrets(cfg.TURN.Secrets); err != nil {
		a.hub.SetConfig(old.Signal) //nolint:errcheck // it was in force a moment ago
		return nil, fmt.Errorf("app: reload: %w", err)
	}
	// Certificate files are re-read even when the config is unchanged:
	// SIGHUP is how a renewal hook tells callbox.
	if err := a.certs.Reload(); err != nil {
		a.log.Error("reload: certificate files cannot be loaded; still serving the previous certificate", "err", err)
	}

	for _, key := range changedKeys(*old, cfg) {
		if strings.HasPrefix(key, "signal.") || liveKeys[key] {
			continue
		}
		needRestart = append(needRestart, key)
	}
	next := *old
	next.TURN.Secrets = cfg.TURN.Secrets
	next.TURN.CredentialTTL = cfg.TURN.CredentialTTL
	next.Signal = cfg.Signal
	next.Log.Level = cfg.Log.Level
	a.cfg.Store(&next)
	return needRestart, nil
}

// changedKeys lists the dotted keys ("turn.listen") whose values differ.
func changedKeys(a, b config.Config) []string {
	var out []string
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	for i := range va.NumField() {
		section := va.Type().Field(i).Tag.Get("toml")
		sa, sb := va.Field(i), vb.Field(i)
		for j := range sa.NumField() {
			if !reflect.DeepEqual(sa.Field(j).Interface(), sb.Field(j).Interface()) {
				out = append(out, section+"."+sa.Type().Field(j).Tag.Get("toml"))
			}
		}
	}
	return out
}

// Config is the configuration in force (after reloads).
func (a *App) Config() config.Config { return *a.cfg.Load() }
