package filetransfer

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tether-agent/tether/internal/wire"
)

// loopExt4 makes a small ext4 with half its blocks reserved for root,
// mounts it through a loop device and returns the mount point (mode 0777,
// so that nobody may create files in it). Everything is undone when the
// test ends, whether it passed or not.
func loopExt4(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("mounting a loop device needs root; CI runs the tests as root")
	}
	dir := t.TempDir()
	// nobody must be able to reach the mount point.
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	img, mnt := filepath.Join(dir, "fs.img"), filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 16<<20); err != nil {
		t.Fatal(err)
	}
	// No journal and 1 KiB blocks: every block counts, and nothing is
	// written behind the test's back once it has synced.
	run(t, "mkfs.ext4", "-q", "-F", "-m", "50", "-b", "1024", "-O", "^has_journal", img)
	run(t, "mount", "-o", "loop", img, mnt)
	t.Cleanup(func() {
		// The loop device is set up with autoclear: unmounting frees it.
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s", mnt, err, out)
			_ = exec.Command("umount", "-l", mnt).Run()
		}
	})
	if err := os.Chmod(mnt, 0o777); err != nil {
		t.Fatal(err)
	}
	return mnt
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

func statfs(t *testing.T, dir string) unix.Statfs_t {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// TestUploadCannotUseReservedBlocks: on a file system that is full for
// everyone but root, an upload as nobody fails with ENOSPC and root's
// reserved blocks stay free, although the daemon is root. ext4 lets a
// writer into the reserve if its fsuid is the reserve's owner (root) or
// it has CAP_SYS_RESOURCE; this test catches both where the test runs
// with CAP_SYS_RESOURCE, and the fsuid alone where the container took
// that capability away (TestIdentityOnItsThread then pins that the
// writing thread has no capability left).
func TestUploadCannotUseReservedBlocks(t *testing.T) {
	id := nobody(t)
	mnt := loopExt4(t)
	var hdr = unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var caps [2]unix.CapUserData
	if err := unix.Capget(&hdr, &caps[0]); err == nil && caps[0].Effective&(1<<unix.CAP_SYS_RESOURCE) == 0 {
		t.Log("the test runs without CAP_SYS_RESOURCE: only the fsuid path into the reserve is exercised")
	}

	// Fill what non-root may use, as root.
	fill, err := os.Create(filepath.Join(mnt, "fill"))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1024)
	for statfs(t, mnt).Bavail > 0 {
		if _, err := fill.Write(buf); err != nil {
			t.Fatalf("fill: %v", err)
		}
	}
	if err := fill.Close(); err != nil {
		t.Fatal(err)
	}
	unix.Sync()
	before := statfs(t, mnt)
	if before.Bavail != 0 || before.Bfree < 1000 {
		t.Fatalf("want 0 blocks available and the reserve free, got avail %d free %d", before.Bavail, before.Bfree)
	}

	pr := newPeer(t, Options{Identity: id})
	target := filepath.Join(mnt, "up")
	e := pr.put(wire.UploadBody{Path: sp(target)}, random(t, 256<<10))
	if !strings.HasPrefix(e, "failed to write file chunk: ") || !strings.Contains(e, "no space left on device") {
		t.Errorf("upload as nobody onto a full file system: %q, want ENOSPC", e)
	}
	unix.Sync()
	after := statfs(t, mnt)
	if after.Bfree < before.Bfree {
		t.Errorf("the upload used %d of root's reserved blocks", before.Bfree-after.Bfree)
	}
	if _, err := os.Stat(target); err == nil {
		t.Error("the refused upload left its target")
	}
	noTemp(t, mnt)
}
