package logs

import (
	"context"
	"log/slog"
	"maps"
	"slices"

	golog "github.com/ipfs/go-log/v2"
	"github.com/libp2p/go-libp2p/gologshim"
	"go.uber.org/zap/zapcore"
)

// routeLibraries points gologshim and go-log at s.
func routeLibraries(s *Switch) {
	gologshim.SetDefaultHandler(s)
	golog.SetPrimaryCore(&zapCore{s: s})
}

// zapCore is a zapcore.Core that hands go-log's entries to a Switch as
// slog records: the logger's name as "logger", the fields as attributes
// in key order.
type zapCore struct {
	s      *Switch
	fields []zapcore.Field
}

var _ zapcore.Core = (*zapCore)(nil)

func (c *zapCore) Enabled(zapcore.Level) bool { return true } // Check decides, knowing the logger

func (c *zapCore) With(fields []zapcore.Field) zapcore.Core {
	return &zapCore{s: c.s, fields: append(slices.Clip(c.fields), fields...)}
}

func (c *zapCore) Check(ent zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.s.levels.Load().enabled(ent.LoggerName, zapToSlog(ent.Level)) {
		return ce.AddCore(ent, c)
	}
	return ce
}

func (c *zapCore) Write(ent zapcore.Entry, fields []zapcore.Field) error {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range c.fields {
		f.AddTo(enc)
	}
	for _, f := range fields {
		f.AddTo(enc)
	}
	r := slog.NewRecord(ent.Time, zapToSlog(ent.Level), ent.Message, 0)
	r.AddAttrs(slog.String("logger", ent.LoggerName))
	for _, k := range slices.Sorted(maps.Keys(enc.Fields)) {
		r.AddAttrs(slog.Any(k, enc.Fields[k]))
	}
	return (*c.s.cur.Load()).Handle(context.Background(), r)
}

func (c *zapCore) Sync() error { return nil }

func zapToSlog(l zapcore.Level) slog.Level {
	switch {
	case l <= zapcore.DebugLevel:
		return slog.LevelDebug
	case l == zapcore.InfoLevel:
		return slog.LevelInfo
	case l == zapcore.WarnLevel:
		return slog.LevelWarn
	}
	return slog.LevelError
}
