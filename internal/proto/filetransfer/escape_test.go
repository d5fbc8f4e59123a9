package filetransfer

import (
	"github.com/tether-agent/tether/internal/identity"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/tether-agent/tether/internal/wire"
)

// TestEscapes tries every way out of the Chroot; all must be refused,
// whatever FollowSymLinks says and whether openat2 or the fallback walk
// resolves.
func TestEscapes(t *testing.T) {
	root := t.TempDir()
	data := filepath.Join(root, "data")
	outside := filepath.Join(root, "outside")
	for _, d := range []string{data, outside, filepath.Join(data, "sub")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	secret := filepath.Join(outside, "secret")
	os.WriteFile(secret, []byte("SECRET"), 0o644)
	links := map[string]string{
		"absdir":  outside,
		"reldir":  "../outside",
		"absleaf": secret,
		"relleaf": "../outside/secret",
		"deep":    "sub/../../outside",
		"proc":    "/proc/self/root" + outside,
		"procfd":  "/proc/self/cwd",
	}
	for name, to := range links {
		if err := os.Symlink(to, filepath.Join(data, name)); err != nil {
			t.Fatal(err)
		}
	}
	paths := []string{
		data + "/../outside/secret",
		data + "/sub/../../outside/secret",
		data + "/absdir/secret",
		data + "/reldir/secret",
		data + "/absleaf",
		data + "/relleaf",
		data + "/deep/secret",
		data + "/proc/secret",
		data + "/procfd" + secret,
		"/proc/self/root" + secret,
		outside + "/secret",
		data + "/../" + filepath.Base(outside) + "/secret",
	}
	for _, follow := range []bool{false, true} {
		for _, fallback := range []bool{false, true} {
			name := "follow=" + strconv.FormatBool(follow) + ",fallback=" + strconv.FormatBool(fallback)
			t.Run(name, func(t *testing.T) {
				pr := newPeer(t, limits(FileLimits{Chroot: data, FollowSymLinks: follow, AllowOverwrite: true}))
				if fallback {
					pr.p.res.openat2.Store(-1)
				}
				for _, p := range paths {
					for _, typ := range []string{wire.FileStat, wire.FileGet} {
						pr.send(typ, user1, enc(t, wire.FilePathBody{Path: sp(p)}))
						m := pr.recv()
						if m.Header.MsgType != wire.FileError {
							t.Errorf("%s %s: answered %s %q", typ, p, m.Header.MsgType, m.Body)
							continue
						}
						var e wire.FileErrorBody
						_ = wire.DecodeBody(m.Body, &e)
						if !strings.HasPrefix(e.Error, "access denied: ") {
							t.Errorf("%s %s: %q, want a denial", typ, p, e.Error)
						}
					}
					up := p
					if strings.HasSuffix(p, "/secret") {
						up = strings.TrimSuffix(p, "secret") + "planted"
					}
					if e := pr.put(wire.UploadBody{Path: sp(up)}, []byte("x")); !strings.HasPrefix(e, "access denied: ") && !strings.HasPrefix(e, "conflicting file path") {
						t.Errorf("put %s: %q, want a denial", up, e)
					}
				}
				if _, err := os.Stat(filepath.Join(outside, "planted")); err == nil {
					t.Error("a file was planted outside the chroot")
				}
				if b, _ := os.ReadFile(secret); string(b) != "SECRET" {
					t.Error("the secret was overwritten")
				}
			})
		}
	}
}

// TestSwapRace swaps a directory for a symlink that leads out while
// downloads and uploads go through it: the lookup and the open are one
// step, so none may reach the outside.
func TestSwapRace(t *testing.T) {
	root := t.TempDir()
	data := filepath.Join(root, "data")
	outside := filepath.Join(root, "outside")
	os.MkdirAll(filepath.Join(data, "real"), 0o755)
	os.MkdirAll(outside, 0o755)
	os.WriteFile(filepath.Join(outside, "f"), []byte("SECRET"), 0o644)
	os.WriteFile(filepath.Join(data, "real", "f"), []byte("inside"), 0o644)
	sw := filepath.Join(data, "sw")
	os.Symlink("real", sw) // placeholder, replaced below
	os.Remove(sw)
	os.MkdirAll(sw, 0o755)
	os.WriteFile(filepath.Join(sw, "f"), []byte("inside"), 0o644)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tmpLink := filepath.Join(data, "swlink")
		tmpDir := filepath.Join(data, "swdir")
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			// Atomically replace sw by a symlink out, then by a directory.
			os.Remove(tmpLink)
			os.Symlink(outside, tmpLink)
			os.Rename(tmpLink, sw+".l")
			os.Rename(sw, tmpDir)
			os.Rename(sw+".l", sw)
			os.Rename(sw, sw+".l")
			os.Rename(tmpDir, sw)
		}
	}()
	pr := newPeer(t, limits(FileLimits{Chroot: data, FollowSymLinks: true, AllowOverwrite: true}))
	for i := 0; i < 300; i++ {
		got, e := pr.get(sw + "/f")
		if string(got) == "SECRET" {
			t.Fatalf("read outside the chroot through a swapped directory (try %d)", i)
		}
		_ = e
		_ = pr.put(wire.UploadBody{Path: sp(sw + "/planted")}, []byte("x"))
		if _, err := os.Stat(filepath.Join(outside, "planted")); err == nil {
			t.Fatalf("planted outside the chroot through a swapped directory (try %d)", i)
		}
	}
	close(stop)
	wg.Wait()
}

func nobody(t *testing.T) *identity.Identity {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test switches identity and must run as root (CI does)")
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &identity.Identity{Name: "nobody", UID: uint32(uid), GID: uint32(gid)}
}

// TestLeastPrivilege: as nobody the kernel refuses what nobody may not do,
// although the daemon is root.
func TestLeastPrivilege(t *testing.T) {
	id := nobody(t)
	pr := newPeer(t, Options{Identity: id})
	if _, e := pr.get("/etc/shadow"); !strings.Contains(e, "permission denied") {
		t.Errorf("get /etc/shadow as nobody: %q", e)
	}
	if e := pr.put(wire.UploadBody{Path: sp("/etc/tether-planted")}, []byte("x")); !strings.Contains(e, "permission denied") {
		t.Errorf("put under /etc as nobody: %q", e)
	}
	if _, err := os.Stat("/etc/tether-planted"); err == nil {
		os.Remove("/etc/tether-planted")
		t.Error("nobody wrote under /etc")
	}
	ents, _ := os.ReadDir("/etc")
	for _, e := range ents {
		if strings.Contains(e.Name(), ".tether-") {
			t.Errorf("temporary file under /etc: %s", e.Name())
		}
	}
	// A directory nobody may write: the upload is nobody's.
	dir := t.TempDir()
	os.Chmod(filepath.Dir(dir), 0o755)
	os.Chmod(dir, 0o777)
	p := filepath.Join(dir, "mine")
	if e := pr.put(wire.UploadBody{Path: sp(p)}, []byte("x")); e != "" {
		t.Fatal(e)
	}
	fi, _ := os.Stat(p)
	if fileUID(fi) != id.UID {
		t.Errorf("upload owned by uid %d, want nobody's %d", fileUID(fi), id.UID)
	}
	// Giving it away is up to the kernel: nobody may not.
	zero := uint32(0)
	if e := pr.put(wire.UploadBody{Path: sp(p), UID: &zero, GID: &zero}, []byte("y")); e != "failed to chown the file: operation not permitted" {
		t.Errorf("chown to root as nobody: %q", e)
	}
	if b, _ := os.ReadFile(p); string(b) != "x" {
		t.Errorf("refused upload changed the file: %q", b)
	}
	noTemp(t, dir)
	// A 0600 root file in that directory cannot be read.
	os.WriteFile(filepath.Join(dir, "rootonly"), []byte("r"), 0o600)
	if _, e := pr.get(filepath.Join(dir, "rootonly")); !strings.Contains(e, "permission denied") {
		t.Errorf("get a root 0600 file as nobody: %q", e)
	}
}

func fileUID(fi os.FileInfo) uint32 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Uid
	}
	return ^uint32(0)
}
