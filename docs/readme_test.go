package docs_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tether-agent/tether/internal/config"
)

// TestReadmeConfigLoads: the configuration README.md shows a newcomer
// loads as it is, without a warning, and means what the text under it
// says.
func TestReadmeConfigLoads(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)```json\n(.*?)```").FindSubmatch(b)
	if m == nil {
		t.Fatal("README.md has no json block")
	}
	if n := strings.Count(string(m[1]), "\n"); n > 12 {
		t.Errorf("README's configuration example has %d lines; keep it short", n)
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "tether.conf")
	if err := os.WriteFile(p, m[1], 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, warnings, err := config.Load(config.LoadOptions{Path: p, FallbackPath: filepath.Join(dir, "absent.conf")})
	if err != nil {
		t.Fatalf("README's configuration does not load: %v", err)
	}
	if len(warnings) > 0 {
		t.Errorf("README's configuration loads with warnings: %q", warnings)
	}
	if cfg.User != "tether-shell" || cfg.Sessions.MaxPerUser != 1 || cfg.Sessions.MaxTotal != 16 {
		t.Errorf("user %q, sessions %d per user, %d in total", cfg.User, cfg.Sessions.MaxPerUser, cfg.Sessions.MaxTotal)
	}
	if cfg.IdleTimeout() != 10*time.Minute {
		t.Errorf("idle timeout %v", cfg.IdleTimeout())
	}
	if cfg.Auth.Source != "dbus" || !strings.HasPrefix(cfg.Metrics.Listen, "unix:") {
		t.Errorf("auth %q, metrics %q", cfg.Auth.Source, cfg.Metrics.Listen)
	}
}
