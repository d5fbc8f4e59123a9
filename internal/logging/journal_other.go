//go:build !linux

package logging

import (
	"errors"
	"log/slog"
)

func newJournalHandler(string, string, slog.Leveler, slog.Handler) (slog.Handler, error) {
	return nil, errors.New("the journal is only supported on Linux")
}

func stderrSuitsJournal() bool { return false }
