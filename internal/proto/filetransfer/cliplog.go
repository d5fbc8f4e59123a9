package filetransfer

import (
	"context"
	"log/slog"

	"github.com/tether-agent/tether/internal/logging"
)

// clipHandler clips every string and error a log line carries: in this
// package they are paths and texts the peer chose (an error quotes its
// path), and a hostile server would otherwise write a megabyte into the
// journal per line.
type clipHandler struct{ h slog.Handler }

func (c clipHandler) Enabled(ctx context.Context, l slog.Level) bool { return c.h.Enabled(ctx, l) }

func (c clipHandler) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, logging.Clip(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(clipAttr(a))
		return true
	})
	return c.h.Handle(ctx, out)
}

func (c clipHandler) WithAttrs(as []slog.Attr) slog.Handler {
	clipped := make([]slog.Attr, len(as))
	for i, a := range as {
		clipped[i] = clipAttr(a)
	}
	return clipHandler{c.h.WithAttrs(clipped)}
}

func (c clipHandler) WithGroup(name string) slog.Handler { return clipHandler{c.h.WithGroup(name)} }

func clipAttr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, logging.Clip(v.String()))
	case slog.KindGroup:
		g := v.Group()
		clipped := make([]any, len(g))
		for i, ga := range g {
			clipped[i] = clipAttr(ga)
		}
		return slog.Group(a.Key, clipped...)
	case slog.KindAny:
		if err, ok := v.Any().(error); ok {
			return slog.String(a.Key, logging.Clip(err.Error()))
		}
	}
	return slog.Attr{Key: a.Key, Value: v}
}
