package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"time"
)

// maxTokenFileSize bounds what Static reads; device JWTs are ~1 KiB.
const maxTokenFileSize = 64 << 10

// StaticOptions configure a Static source.
type StaticOptions struct {
	// ServerURL is handed out with the token.
	ServerURL string
	// Token is a fixed token. Exclusive with TokenFile.
	Token string
	// TokenFile is read for the token and re-read when it changes; while it
	// is missing, unreadable or empty there is no token.
	TokenFile string
	// PollInterval is how often TokenFile is checked when its directory
	// cannot be watched (inotify); default 1 s.
	PollInterval time.Duration
}

// Static serves credentials that do not come from D-Bus: a fixed token, or
// the contents of a file (surrounding whitespace trimmed) that another
// program keeps up to date.
type Static struct {
	log     *slog.Logger
	opts    StaticOptions
	box     *mailbox
	refresh chan struct{}
}

var _ Source = (*Static)(nil)

// NewStatic returns a Static source; it does nothing until Run.
func NewStatic(log *slog.Logger, opts StaticOptions) *Static {
	if opts.PollInterval <= 0 {
		opts.PollInterval = time.Second
	}
	return &Static{log: log, opts: opts, box: newMailbox(), refresh: make(chan struct{}, 1)}
}

// Updates implements Source.
func (s *Static) Updates() <-chan Credentials { return s.box.ch }

// Refresh implements Source: there is no provider to ask, but a token file
// is re-read at once.
func (s *Static) Refresh() {
	select {
	case s.refresh <- struct{}{}:
	default:
	}
}

// Run implements Source. It fails at once if both Token and TokenFile are
// set; otherwise it returns nil when ctx is done.
func (s *Static) Run(ctx context.Context) error {
	if s.opts.Token != "" && s.opts.TokenFile != "" {
		return errors.New("auth: a static token and a token file exclude each other")
	}
	if s.opts.ServerURL == "" {
		s.log.Warn("no server URL configured; the device stays unauthorised")
	}
	if s.opts.TokenFile == "" {
		c := Credentials{Token: strings.TrimSpace(s.opts.Token), ServerURL: s.opts.ServerURL}
		s.log.Info("using a static token", "credentials", c)
		s.box.put(c)
		<-ctx.Done()
		return nil
	}

	w := fileWatch{log: s.log, path: s.opts.TokenFile}
	// Watch first, then read: a change in between is not missed.
	dw, err := watchDir(filepath.Dir(s.opts.TokenFile))
	if err != nil {
		s.log.Warn("cannot watch the token file's directory; polling it", "error", err, "interval", s.opts.PollInterval)
	}
	s.box.put(Credentials{Token: w.read(), ServerURL: s.opts.ServerURL})
	var changed <-chan struct{}
	var poll <-chan time.Time
	if dw != nil {
		defer dw.Close()
		changed = dw.changed
	} else {
		ticker := time.NewTicker(s.opts.PollInterval)
		defer ticker.Stop()
		poll = ticker.C
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-changed:
			if !ok {
				// The directory went away: poll until it is back.
				s.log.Warn("token file's directory is gone; polling it", "path", s.opts.TokenFile, "interval", s.opts.PollInterval)
				changed = nil
				ticker := time.NewTicker(s.opts.PollInterval)
				defer ticker.Stop()
				poll = ticker.C
			}
		case <-poll:
		case <-s.refresh:
		}
		s.box.put(Credentials{Token: w.read(), ServerURL: s.opts.ServerURL})
	}
}

// fileWatch reads a token file and logs only changes of its state.
type fileWatch struct {
	log     *slog.Logger
	path    string
	started bool
	problem string // last reported problem, "" when fine
	exposed bool   // last read found the file readable by others
	token   string
}

// read returns the token in the file, "" when there is none.
func (w *fileWatch) read() string {
	token, problem := readTokenFile(w.path)
	exposed := problem == exposedProblem
	if exposed {
		problem = ""
		if !w.exposed {
			w.log.Warn("token file is readable by other users; the device token is exposed", "path", w.path, "fix", exposedProblem)
		}
	}
	w.exposed = exposed
	switch {
	case problem != "" && problem != w.problem:
		w.log.Warn("token file unusable; no token until it is fixed", "path", w.path, "problem", problem)
	case problem == "" && w.problem != "":
		w.log.Info("token file usable again", "path", w.path, "token", Fingerprint(token))
	case problem == "" && (!w.started || token != w.token):
		w.log.Info("token read from file", "path", w.path, "token", Fingerprint(token))
	}
	w.started, w.problem, w.token = true, problem, token
	return token
}

func readTokenFile(path string) (token, problem string) {
	f, exposed, err := openTokenFile(path)
	if err != nil {
		return "", err.Error()
	}
	defer f.Close()
	data, err := readLimited(f, maxTokenFileSize)
	if err != nil {
		return "", fmt.Sprintf("reading: %v", err)
	}
	if len(data) > maxTokenFileSize {
		return "", fmt.Sprintf("larger than %d bytes", maxTokenFileSize)
	}
	token = strings.TrimSpace(string(data))
	if token == "" {
		return "", "empty"
	}
	if exposed {
		// Usable, but worth a warning each time its state changes.
		return token, exposedProblem
	}
	return token, ""
}

// exposedProblem is the warning for a token file others can read.
const exposedProblem = "readable by group or others: chmod 0600 it"
