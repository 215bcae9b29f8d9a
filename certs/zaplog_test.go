package certs

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
)

func TestZapToSlog(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		log   func(*zap.Logger)
		want  []string // substrings of the one line written; nil: nothing written
		level slog.Level
	}{
		{"info with fields", func(l *zap.Logger) {
			l.Named("obtain").With(zap.String("identifier", "a.test")).Info("obtaining", zap.Int("attempt", 2), zap.Duration("wait", time.Second))
		}, []string{"level=INFO", `msg=obtaining`, "logger=obtain", "identifier=a.test", "attempt=2", "wait=1s"}, slog.LevelInfo},
		{"error value", func(l *zap.Logger) {
			l.Error("failed", zap.Error(errors.New("boom")))
		}, []string{"level=ERROR", "error=boom"}, slog.LevelInfo},
		{"warn", func(l *zap.Logger) { l.Warn("careful") }, []string{"level=WARN"}, slog.LevelInfo},
		{"debug dropped at info", func(l *zap.Logger) { l.Debug("noise") }, nil, slog.LevelInfo},
		{"debug kept at debug", func(l *zap.Logger) { l.Debug("detail", zap.Strings("names", []string{"a", "b"})) }, []string{"level=DEBUG", "names=\"[a b]\""}, slog.LevelDebug},
		{"with does not leak into siblings", func(l *zap.Logger) {
			_ = l.With(zap.String("only", "here"))
			l.Info("plain")
		}, []string{"msg=plain"}, slog.LevelInfo},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			tt.log(zapToSlog(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: tt.level})))
			out := buf.String()
			if tt.want == nil {
				if out != "" {
					t.Fatalf("wrote %q, want nothing", out)
				}
				return
			}
			if strings.Count(out, "\n") != 1 {
				t.Fatalf("wrote %q, want one line", out)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("line %q lacks %q", out, w)
				}
			}
			if strings.Contains(out, "only=here") {
				t.Errorf("line %q has a sibling logger's field", out)
			}
		})
	}
}
