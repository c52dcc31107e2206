package coordinator

import (
	"bytes"
	"context"
	"log/slog"

	"github.com/hashicorp/go-hclog"
)

// newHCLogger routes hashicorp's hclog output (raft) into slog. Raft logs heartbeat failures at
// warn level many times a second while a peer is down, so it is capped at warn.
func newHCLogger(name string, log *slog.Logger) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:       name,
		Level:      hclog.Warn,
		Output:     &slogWriter{log: log.With("component", name)},
		JSONFormat: false,
	})
}

// slogWriter turns each hclog line into one slog record.
type slogWriter struct{ log *slog.Logger }

func (w *slogWriter) Write(p []byte) (int, error) {
	line := string(bytes.TrimSpace(p))
	level := slog.LevelInfo
	switch {
	case bytes.Contains(p, []byte("[ERROR]")):
		level = slog.LevelError
	case bytes.Contains(p, []byte("[WARN]")):
		level = slog.LevelWarn
	}
	w.log.Log(context.Background(), level, line)
	return len(p), nil
}
