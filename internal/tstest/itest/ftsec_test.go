package itest

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tether-agent/tether/internal/mockserver"
)

// TestFileTransferKilledUploadCleanedUp: the daemon is SIGKILLed in the
// middle of an upload; its temporary file stays behind until the next
// start removes it. Files of a similar name that this daemon did not
// create stay.
func TestFileTransferKilledUploadCleanedUp(t *testing.T) {
	if shellUser(t) != "nobody" {
		t.Fatal("run as root so that the daemon can switch to nobody")
	}
	dir := ftDir(t)
	runtimeDir := t.TempDir()
	e := newEnv(t, map[string]interface{}{
		"Limits": map[string]interface{}{"Enabled": true, "FileTransfer": map[string]interface{}{"Chroot": dir, "AllowOverwrite": true}},
	}, "RUNTIME_DIRECTORY="+runtimeDir)
	e.waitDevice()
	target := filepath.Join(dir, "up.bin")

	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- mockserver.UploadFile(e.ctx, e.url, e.jwt(adminEmail), e.deviceID, target, "up.bin", pr, nil, nil)
	}()
	if _, err := pw.Write(make([]byte, 256<<10)); err != nil {
		t.Fatal(err)
	}
	var temp string
	eventually(t, 10*time.Second, "a temporary file with data", func() bool {
		ents, _ := os.ReadDir(dir)
		for _, ent := range ents {
			if fi, err := ent.Info(); err == nil && strings.HasPrefix(ent.Name(), ".up.bin.tether-") && fi.Size() > 0 {
				temp = filepath.Join(dir, ent.Name())
				return true
			}
		}
		return false
	})
	if err := e.daemon.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-e.exited
	pw.CloseWithError(errors.New("client gone"))
	<-done
	if _, err := os.Stat(temp); err != nil {
		t.Fatalf("the killed upload's temporary file is not there to clean up: %v", err)
	}
	// Not ours: the same naming but never created by the daemon (owned
	// by the account, as ours would be), and near names.
	nobodyUID := uidOf(t, "nobody")
	decoys := []string{".up.bin.tether-0123456789ab", ".up.bin.tether-partial", "up.bin.tether-0123456789ab", ".up.bin.tether-0123456789ab.old"}
	for _, d := range decoys {
		p := filepath.Join(dir, d)
		if err := os.WriteFile(p, []byte("mine"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(p, nobodyUID, -1); err != nil {
			t.Fatal(err)
		}
	}

	e.startDaemon()
	e.waitDevice()
	eventually(t, 10*time.Second, "the stale temporary file removed", func() bool {
		_, err := os.Lstat(temp)
		return errors.Is(err, os.ErrNotExist)
	})
	for _, d := range decoys {
		if b, err := os.ReadFile(filepath.Join(dir, d)); err != nil || string(b) != "mine" {
			t.Errorf("%s: %q %v; a file the daemon did not create was touched", d, b, err)
		}
	}
	if _, err := os.Stat(target); err == nil {
		t.Error("the killed upload's target exists")
	}
	if !strings.Contains(e.log.String(), "removed the temporary file of an interrupted upload") {
		t.Error("the clean-up is not logged")
	}
	// The transfer works after the restart, and leaves no record.
	if err := mockserver.UploadFile(e.ctx, e.url, e.jwt(adminEmail), e.deviceID, target, "up.bin", strings.NewReader("x"), nil, nil); err != nil {
		t.Fatalf("upload after the restart: %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(runtimeDir, "uploads")); len(ents) != 0 {
		t.Errorf("records left in the journal: %v", ents)
	}
}

// TestFileTransferAbsoluteSymlinks: with FollowSymLinks, an absolute link
// beneath the Chroot (/data/current -> /data/releases/v7) is followed for
// download (its stat included) and upload through the daemon; one that
// leads out is refused with upstream's text.
func TestFileTransferAbsoluteSymlinks(t *testing.T) {
	dir := ftDir(t)
	v7 := filepath.Join(dir, "releases", "v7")
	if err := os.MkdirAll(v7, 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Join(dir, "releases"), 0o755)
	os.Chmod(v7, 0o777)
	os.WriteFile(filepath.Join(v7, "app.conf"), []byte("v7 config"), 0o644)
	os.Symlink(v7, filepath.Join(dir, "current"))
	os.Symlink("/etc", filepath.Join(dir, "etc"))
	e := newEnv(t, map[string]interface{}{
		"Limits": map[string]interface{}{"Enabled": true, "FileTransfer": map[string]interface{}{
			"Chroot": dir, "FollowSymLinks": true, "AllowOverwrite": true}},
	})
	e.waitDevice()
	jwt := e.jwt(adminEmail)

	var got bytes.Buffer
	meta, err := mockserver.DownloadFile(e.ctx, e.url, jwt, e.deviceID, filepath.Join(dir, "current", "app.conf"), &got)
	if err != nil || got.String() != "v7 config" {
		t.Fatalf("download through an absolute link inside: %v %q", err, got.String())
	}
	if meta.Size != int64(len("v7 config")) {
		t.Errorf("stat through the link: size %d", meta.Size)
	}
	if err := mockserver.UploadFile(e.ctx, e.url, jwt, e.deviceID, filepath.Join(dir, "current", "new.conf"), "new.conf",
		strings.NewReader("new"), nil, nil); err != nil {
		t.Fatalf("upload through an absolute link inside: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(v7, "new.conf")); string(b) != "new" {
		t.Errorf("the upload did not land in the link's target: %q", b)
	}
	if fi, err := os.Lstat(filepath.Join(dir, "current")); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Error("the link was replaced")
	}

	_, err = mockserver.DownloadFile(e.ctx, e.url, jwt, e.deviceID, filepath.Join(dir, "etc", "hostname"), io.Discard)
	if he := httpErr(t, err); he.StatusCode != 403 ||
		he.Message != "failed to retrieve file info: error received from device: access denied: the target file path is outside chroot" {
		t.Errorf("download through a link out: %d %q", he.StatusCode, he.Message)
	}
	err = mockserver.UploadFile(e.ctx, e.url, jwt, e.deviceID, filepath.Join(dir, "etc", "planted"), "x", strings.NewReader("x"), nil, nil)
	if he := httpErr(t, err); he.StatusCode != 403 || he.Message != "access denied: the target file path is outside chroot" {
		t.Errorf("upload through a link out: %d %q", he.StatusCode, he.Message)
	}
	if _, err := os.Stat("/etc/planted"); err == nil {
		os.Remove("/etc/planted")
		t.Error("planted under /etc")
	}
	noTempFiles(t, v7)
}

// TestFileTransferReservedBlocks: through the daemon (root, with
// file transfer as nobody), an upload onto an ext4 that is full for
// everyone but root fails with ENOSPC and leaves root's reserved blocks
// free.
func TestFileTransferReservedBlocks(t *testing.T) {
	if shellUser(t) != "nobody" {
		t.Fatal("run as root so that the daemon can switch to nobody and mount a loop device")
	}
	mnt := fullExt4(t)
	var before, after unix.Statfs_t
	if err := unix.Statfs(mnt, &before); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, nil)
	e.waitDevice()
	target := filepath.Join(mnt, "up.bin")
	err := mockserver.UploadFile(e.ctx, e.url, e.jwt(adminEmail), e.deviceID, target, "up.bin",
		bytes.NewReader(make([]byte, 256<<10)), nil, nil)
	if he := httpErr(t, err); he.StatusCode != 413 || !strings.HasPrefix(he.Message, "failed to write file chunk: ") ||
		!strings.HasSuffix(he.Message, "no space left on device") {
		t.Errorf("upload onto a full file system: %d %q, want 413 and ENOSPC", he.StatusCode, he.Message)
	}
	unix.Sync()
	if err := unix.Statfs(mnt, &after); err != nil {
		t.Fatal(err)
	}
	if after.Bfree < before.Bfree {
		t.Errorf("the upload took %d of root's reserved blocks", before.Bfree-after.Bfree)
	}
	if _, err := os.Stat(target); err == nil {
		t.Error("the refused upload left its target")
	}
	noTempFiles(t, mnt)
}

// fullExt4 mounts a small ext4 with half its blocks reserved for root
// (mkfs.ext4 -m 50) through a loop device, fills what non-root may use and
// returns its mount point (0777). It is unmounted, and the loop device
// freed, when the test ends, passed or failed.
func fullExt4(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "tether-ext4-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
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
	for _, args := range [][]string{
		{"mkfs.ext4", "-q", "-F", "-m", "50", "-b", "1024", "-O", "^has_journal", img},
		{"mount", "-o", "loop", img, mnt},
	} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s", mnt, err, out)
			_ = exec.Command("umount", "-l", mnt).Run()
		}
	})
	if err := os.Chmod(mnt, 0o777); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(mnt, "fill"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1024)
	for {
		var st unix.Statfs_t
		if err := unix.Statfs(mnt, &st); err != nil {
			t.Fatal(err)
		}
		if st.Bavail == 0 {
			if st.Bfree < 1000 {
				t.Fatalf("the reserve is gone: %d blocks free", st.Bfree)
			}
			break
		}
		if _, err := f.Write(buf); err != nil {
			t.Fatalf("fill: %v", err)
		}
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	return mnt
}

func uidOf(t *testing.T, name string) int {
	t.Helper()
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		t.Fatal(err)
	}
	return uid
}
