package filetransfer

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/tether-agent/tether/internal/wire"
)

// TestSymlinksBeneathChroot: with FollowSymLinks, a symlink whose target,
// read in the device's namespace, stays beneath the Chroot is followed
// for stat, get and put, absolute or relative, through chains and
// directory links; one that leads out, or a loop, is refused with
// upstream's texts. Both with openat2 and with the walk of older kernels.
func TestSymlinksBeneathChroot(t *testing.T) {
	top := t.TempDir()
	data := filepath.Join(top, "data")
	outside := filepath.Join(top, "outside")
	v7 := filepath.Join(data, "releases", "v7")
	for _, d := range []string{v7, outside} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(v7, "f"), []byte("v7"), 0o644)
	os.WriteFile(filepath.Join(outside, "secret"), []byte("SECRET"), 0o644)
	// The Chroot named through a link of its own: targets may use either
	// name.
	alias := filepath.Join(top, "alias")
	os.Symlink("data", alias)
	links := map[string]string{
		"current":  v7,                                                           // absolute, to a directory
		"conf":     filepath.Join(v7, "f"),                                       // absolute, to a file
		"out":      outside,                                                      // absolute, out
		"outfile":  filepath.Join(outside, "secret"),                             // absolute, to a file out
		"chain":    filepath.Join(data, "chain2"),                                // absolute → relative → absolute
		"chain2":   "releases/../hop",                                            //
		"hop":      filepath.Join(data, "current"),                               //
		"loop1":    filepath.Join(data, "loop2"),                                 // a loop
		"loop2":    filepath.Join(data, "loop1"),                                 //
		"self":     data,                                                         // the Chroot itself
		"viadir":   filepath.Join(data, "current", "f"),                          // through a directory link
		"dotdot":   filepath.Join(data, "releases", "..", "releases", "v7", "f"), // ".." that stays inside
		"dotout":   data + "/../outside/secret",                                  // ".." that leads out
		"relout":   "releases/../../outside",
		"rel":      "releases/v7",                                // relative, out
		"real":     filepath.Join(data, "releases", "v7"),        // under the alias below
		"dangling": filepath.Join(data, "releases", "v7", "new"), // inside, nothing there yet
	}
	for name, to := range links {
		if err := os.Symlink(to, filepath.Join(data, name)); err != nil {
			t.Fatal(err)
		}
	}
	const (
		outsideText = "access denied: the target file path is outside chroot"
		linkText    = "access denied: forbidden to follow the link"
	)
	tests := []struct {
		name, path string
		want       string // content for get, or the error text
		lands      string // where a put lands, relative to data; "" = refused with want
	}{
		{"absolute link to a directory", "/current/f", "v7", "releases/v7/f"},
		{"absolute link to a file", "/conf", "v7", "releases/v7/f"},
		{"absolute link out", "/out/secret", outsideText, ""},
		{"absolute link to a file out", "/outfile", outsideText, ""},
		{"chain of links", "/chain/f", "v7", "releases/v7/f"},
		{"loop", "/loop1/f", linkText, ""},
		{"link to the chroot itself", "/self/self/current/f", "v7", "releases/v7/f"},
		{"through a directory link", "/viadir", "v7", "releases/v7/f"},
		{"dot-dot that stays inside", "/dotdot", "v7", "releases/v7/f"},
		{"dot-dot that leads out", "/dotout", outsideText, ""},
		{"relative link out", "/relout/secret", outsideText, ""},
		{"relative link in", "/rel/f", "v7", "releases/v7/f"},
		{"dot-dot in the request", "/releases/../current/f", outsideText, ""}, // refused whatever it resolves to
	}
	for _, fallback := range []bool{false, true} {
		t.Run("fallback="+strconv.FormatBool(fallback), func(t *testing.T) {
			for _, chroot := range []string{data, alias} {
				pr := newPeer(t, limits(FileLimits{Chroot: chroot, FollowSymLinks: true, AllowOverwrite: true}))
				if fallback {
					pr.p.res.openat2.Store(-1)
				}
				for _, tt := range tests {
					p := chroot + tt.path
					got, e := pr.get(p)
					if tt.lands != "" && (e != "" || string(got) != tt.want) {
						t.Errorf("%s: get %s: %q %q, want %q", tt.name, p, got, e, tt.want)
					}
					if tt.lands == "" && e != tt.want {
						t.Errorf("%s: get %s: %q, want %q", tt.name, p, e, tt.want)
					}
					pr.send(wire.FileStat, user1, enc(t, wire.FilePathBody{Path: sp(p)}))
					m := pr.recv()
					switch {
					case tt.lands != "" && m.Header.MsgType != wire.FileInfo:
						t.Errorf("%s: stat %s: %s %q", tt.name, p, m.Header.MsgType, m.Body)
					case tt.lands == "" && m.Header.MsgType != wire.FileError:
						t.Errorf("%s: stat %s: %s, want an error", tt.name, p, m.Header.MsgType)
					}
					e = pr.put(wire.UploadBody{Path: sp(p)}, []byte("put "+tt.name))
					if tt.lands == "" {
						if e != tt.want {
							t.Errorf("%s: put %s: %q, want %q", tt.name, p, e, tt.want)
						}
						continue
					}
					if e != "" {
						t.Errorf("%s: put %s: %q", tt.name, p, e)
						continue
					}
					if b, _ := os.ReadFile(filepath.Join(data, tt.lands)); string(b) != "put "+tt.name {
						t.Errorf("%s: put %s: %s holds %q", tt.name, p, tt.lands, b)
					}
					os.WriteFile(filepath.Join(v7, "f"), []byte("v7"), 0o644)
				}
				// A put through a dangling link inside creates its target.
				if e := pr.put(wire.UploadBody{Path: sp(chroot + "/dangling")}, []byte("new")); e != "" {
					t.Errorf("put through a dangling link: %q", e)
				}
				if b, _ := os.ReadFile(filepath.Join(v7, "new")); string(b) != "new" {
					t.Errorf("put through a dangling link: target holds %q", b)
				}
				os.Remove(filepath.Join(v7, "new"))
				// The real name of the Chroot in a target works under its alias.
				if got, e := pr.get(chroot + "/real/f"); e != "" || string(got) != "v7" {
					t.Errorf("link by the Chroot's other name: %q %q", got, e)
				}
			}
			// Links stay links, nothing landed outside, no temporary file.
			for name := range links {
				if fi, err := os.Lstat(filepath.Join(data, name)); err != nil || fi.Mode()&os.ModeSymlink == 0 {
					t.Errorf("%s is no longer a symlink", name)
				}
			}
			if b, _ := os.ReadFile(filepath.Join(outside, "secret")); string(b) != "SECRET" {
				t.Error("the file outside was overwritten")
			}
			if ents, _ := os.ReadDir(outside); len(ents) != 1 {
				t.Errorf("files planted outside: %v", ents)
			}
			noTemp(t, data)
			noTemp(t, v7)
		})
	}
}

// TestSymlinksNotFollowed: without FollowSymLinks an absolute link that
// stays inside is still refused.
func TestSymlinksNotFollowed(t *testing.T) {
	data := t.TempDir()
	os.MkdirAll(filepath.Join(data, "v7"), 0o755)
	os.WriteFile(filepath.Join(data, "v7", "f"), []byte("v7"), 0o644)
	os.Symlink(filepath.Join(data, "v7"), filepath.Join(data, "current"))
	pr := newPeer(t, limits(FileLimits{Chroot: data, AllowOverwrite: true}))
	if _, e := pr.get(data + "/current/f"); e != "access denied: forbidden to follow the link" {
		t.Errorf("get: %q", e)
	}
	if e := pr.put(wire.UploadBody{Path: sp(data + "/current/f")}, []byte("x")); e != "access denied: forbidden to follow the link" {
		t.Errorf("put: %q", e)
	}
}

// TestSymlinkSwapRace: a link flips between an absolute target inside the
// Chroot and one outside while downloads and uploads go through it: what
// follow read is opened with no symlink allowed, so a flip in between is
// refused or retried, never followed out.
func TestSymlinkSwapRace(t *testing.T) {
	for _, fallback := range []bool{false, true} {
		t.Run("fallback="+strconv.FormatBool(fallback), func(t *testing.T) {
			top := t.TempDir()
			data, outside := filepath.Join(top, "data"), filepath.Join(top, "outside")
			os.MkdirAll(filepath.Join(data, "real"), 0o755)
			os.MkdirAll(outside, 0o755)
			os.WriteFile(filepath.Join(outside, "f"), []byte("SECRET"), 0o644)
			os.WriteFile(filepath.Join(data, "real", "f"), []byte("inside"), 0o644)
			in, out, sw := filepath.Join(data, "in"), filepath.Join(data, "out"), filepath.Join(data, "sw")
			os.Symlink(filepath.Join(data, "real"), sw)
			stop := make(chan struct{})
			done := make(chan struct{})
			go func() {
				defer close(done)
				for {
					select {
					case <-stop:
						return
					default:
					}
					os.Symlink(filepath.Join(data, "real"), in)
					os.Rename(in, sw)
					os.Symlink(outside, out)
					os.Rename(out, sw)
				}
			}()
			pr := newPeer(t, limits(FileLimits{Chroot: data, FollowSymLinks: true, AllowOverwrite: true}))
			if fallback {
				pr.p.res.openat2.Store(-1)
			}
			inside, i := 0, 0
			// 300 tries, more until one went through while inside.
			for ; i < 300 || (inside == 0 && i < 5000); i++ {
				got, _ := pr.get(sw + "/f")
				switch string(got) {
				case "SECRET":
					t.Fatalf("read outside the Chroot through a flipping link (try %d)", i)
				case "inside":
					inside++
				}
				_ = pr.put(wire.UploadBody{Path: sp(sw + "/planted")}, []byte("x"))
				if _, err := os.Stat(filepath.Join(outside, "planted")); err == nil {
					t.Fatalf("planted outside the Chroot through a flipping link (try %d)", i)
				}
			}
			close(stop)
			<-done
			// The race ran both ways: the link was followed while inside.
			if inside == 0 {
				t.Error("no download through the link while it led inside")
			}
			t.Logf("%d of %d downloads through the link while it led inside", inside, i)
		})
	}
}

// TestSymlinkStepsBounded: a link whose target has more components than
// a lookup may visit is refused, not walked for seconds.
func TestSymlinkStepsBounded(t *testing.T) {
	data := t.TempDir()
	os.WriteFile(filepath.Join(data, "f"), []byte("x"), 0o644)
	os.Symlink(strings.Repeat("./", 1100)+"f", filepath.Join(data, "wide"))
	os.Symlink(strings.Repeat("./", 500)+"f", filepath.Join(data, "narrow"))
	os.Symlink(filepath.Join(data, "wide"), filepath.Join(data, "abs"))
	pr := newPeer(t, limits(FileLimits{Chroot: data, FollowSymLinks: true}))
	if _, e := pr.get(data + "/abs"); !strings.HasSuffix(e, "file name too long") {
		t.Errorf("get through a link of 1100 components: %q", e)
	}
	os.Remove(filepath.Join(data, "abs"))
	os.Symlink(filepath.Join(data, "narrow"), filepath.Join(data, "abs"))
	if got, e := pr.get(data + "/abs"); e != "" || string(got) != "x" {
		t.Errorf("get through a link of 500 components: %q %q", got, e)
	}
}
