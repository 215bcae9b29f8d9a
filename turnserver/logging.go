package turnserver

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/pion/logging"
)

// levelTrace is below slog's Debug, for pion's per-packet trace lines.
const levelTrace = slog.LevelDebug - 4

// slogFactory adapts pion's LoggerFactory to log/slog, so pion's lines
// share callbox's handler, level and format.
type slogFactory struct{ log *slog.Logger }

func (f slogFactory) NewLogger(scope string) logging.LeveledLogger {
	return &slogLeveled{log: f.log.With("pion", scope)}
}

// slogLeveled maps pion's levels onto slog's. pion's Info lines are
// per-request chatter ("permission denied for client", "No Permission or
// Channel exists"), which a peer can trigger at will, so they go to Debug;
// callbox logs the events operators need itself, rate-limited.
type slogLeveled struct{ log *slog.Logger }

func (l *slogLeveled) logf(level slog.Level, format string, args ...any) {
	// Check first: pion calls Debugf on every packet, and formatting is the
	// expensive part.
	if !l.log.Enabled(context.Background(), level) {
		return
	}
	l.log.Log(context.Background(), level, fmt.Sprintf(format, args...))
}

func (l *slogLeveled) Trace(msg string)                  { l.logf(levelTrace, "%s", msg) }
func (l *slogLeveled) Tracef(format string, args ...any) { l.logf(levelTrace, format, args...) }
func (l *slogLeveled) Debug(msg string)                  { l.logf(slog.LevelDebug, "%s", msg) }
func (l *slogLeveled) Debugf(format string, args ...any) { l.logf(slog.LevelDebug, format, args...) }
func (l *slogLeveled) Info(msg string)                   { l.logf(slog.LevelDebug, "%s", msg) }
func (l *slogLeveled) Infof(format string, args ...any)  { l.logf(slog.LevelDebug, format, args...) }
func (l *slogLeveled) Warn(msg string)                   { l.logf(slog.LevelWarn, "%s", msg) }
func (l *slogLeveled) Warnf(format string, args ...any)  { l.logf(slog.LevelWarn, format, args...) }
func (l *slogLeveled) Error(msg string)                  { l.logf(slog.LevelError, "%s", msg) }
func (l *slogLeveled) Errorf(format string, args ...any) { l.logf(slog.LevelError, format, args...) }
