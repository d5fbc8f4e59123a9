package itest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tether-agent/tether/internal/mockserver"
)

// ftDir is a directory the file-transfer account (nobody in CI) may use.
func ftDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "tether-ft-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	if err := os.Chmod(d, 0o777); err != nil {
		t.Fatal(err)
	}
	return d
}

func httpErr(t *testing.T, err error) *mockserver.HTTPError {
	t.Helper()
	var he *mockserver.HTTPError
	if !errors.As(err, &he) {
		t.Fatalf("want an HTTP error, got %v", err)
	}
	return he
}

func noTempFiles(t *testing.T, dir string) {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.Contains(e.Name(), ".tether-") {
			t.Errorf("temporary file left in %s: %s", dir, e.Name())
		}
	}
}

// TestFileTransferREST drives the mock server's REST calls as mender-cli
// does, against the real daemon: a round trip, then each failure with its
// text and the HTTP status the device's "code" gives it through the server (403
// refused, 404 missing, 409 another type, 413 too large, 400 the rest).
func TestFileTransferREST(t *testing.T) {
	dir := ftDir(t)
	e := newEnv(t, map[string]interface{}{
		"Limits": map[string]interface{}{"Enabled": true, "FileTransfer": map[string]interface{}{
			"Chroot": dir, "AllowOverwrite": true, "MaxFileSize": 1 << 20}},
	})
	e.waitDevice()
	jwt := e.jwt(adminEmail)
	data := bytes.Repeat([]byte("0123456789abcdef"), 20000) // 320000 bytes
	target := filepath.Join(dir, "up.bin")
	if err := mockserver.UploadFile(e.ctx, e.url, jwt, e.deviceID, target, "up.bin", bytes.NewReader(data), nil,
		[]mockserver.UploadField{{Name: "mode", Value: "600"}}); err != nil {
		t.Fatalf("upload: %v", err)
	}
	var got bytes.Buffer
	meta, err := mockserver.DownloadFile(e.ctx, e.url, jwt, e.deviceID, target, &got)
	if err != nil {
		t.Fatalf("download: %v", err)
	}
	if !bytes.Equal(got.Bytes(), data) {
		t.Fatalf("downloaded %d bytes, differ from the upload", got.Len())
	}
	if meta.Size != int64(len(data)) || meta.Path != target || os.FileMode(meta.Mode) != 0o644 {
		t.Errorf("headers %+v", meta)
	}
	fi, _ := os.Stat(target)
	if uid := fmt.Sprint(fileOwner(fi)); meta.UID != uid {
		t.Errorf("X-MEN-File-UID %q, file owner %s", meta.UID, uid)
	}
	if shellUser(t) == "nobody" && meta.UID == "0" {
		t.Error("the upload is root's; it must be the configured user's")
	}
	noTempFiles(t, dir)

	outside := "/etc/hostname"
	for _, c := range []struct {
		name   string
		do     func() error
		status int
		msg    string
	}{
		{"download outside chroot", func() error {
			_, err := mockserver.DownloadFile(e.ctx, e.url, jwt, e.deviceID, outside, io.Discard)
			return err
		}, 403, "failed to retrieve file info: error received from device: access denied: the target file path is outside chroot"},
		{"upload outside chroot", func() error {
			return mockserver.UploadFile(e.ctx, e.url, jwt, e.deviceID, "/etc/planted", "x", strings.NewReader("x"), nil, nil)
		}, 403, "access denied: the target file path is outside chroot"},
		{"setuid as the server sends it", func() error {
			return mockserver.UploadFile(e.ctx, e.url, jwt, e.deviceID, filepath.Join(dir, "s"), "s", strings.NewReader("x"),
				[]mockserver.UploadField{{Name: "mode", Value: "4755"}}, nil)
		}, 403, "access denied: the set uid mode is forbidden"},
		{"upload over the size limit", func() error {
			return mockserver.UploadFile(e.ctx, e.url, jwt, e.deviceID, target, "big", bytes.NewReader(make([]byte, 1<<20+1)), nil, nil)
		}, 413, "failed to write file chunk: the file size is over the limit"},
		{"download a directory", func() error {
			_, err := mockserver.DownloadFile(e.ctx, e.url, jwt, e.deviceID, dir, io.Discard)
			return err
		}, 400, "path is not a regular file"},
		{"missing file", func() error {
			_, err := mockserver.DownloadFile(e.ctx, e.url, jwt, e.deviceID, filepath.Join(dir, "none"), io.Discard)
			return err
		}, 404, "failed to retrieve file info: error received from device: failed to get file info from path '" + filepath.Join(dir, "none") + "': open " + filepath.Join(dir, "none") + ": no such file or directory"},
		{"upload beneath a file", func() error {
			return mockserver.UploadFile(e.ctx, e.url, jwt, e.deviceID, filepath.Join(target, "x"), "x", strings.NewReader("x"), nil, nil)
		}, 409, "failed to open the target directory: open " + target + ": not a directory"},
		{"relative path", func() error {
			_, err := mockserver.DownloadFile(e.ctx, e.url, jwt, e.deviceID, "etc/passwd", io.Discard)
			return err
		}, 400, "path: must be absolute."},
		{"unknown device", func() error {
			_, err := mockserver.DownloadFile(e.ctx, e.url, jwt, "no-such-device", target, io.Discard)
			return err
		}, 404, "device not found"},
	} {
		t.Run(c.name, func(t *testing.T) {
			he := httpErr(t, c.do())
			if he.StatusCode != c.status || he.Message != c.msg {
				t.Errorf("got %d %q, want %d %q", he.StatusCode, he.Message, c.status, c.msg)
			}
		})
	}
	// The refused oversize upload left the old file and no temporary file.
	if b, _ := os.ReadFile(target); !bytes.Equal(b, data) {
		t.Error("a refused upload changed the target")
	}
	noTempFiles(t, dir)
	if _, err := os.Stat("/etc/planted"); err == nil {
		t.Error("planted under /etc")
	}
}

// TestFileTransferLeastPrivilege: with no limits at all, a transfer is
// still only what the configured user (nobody) may do.
func TestFileTransferLeastPrivilege(t *testing.T) {
	if shellUser(t) != "nobody" {
		t.Fatal("run as root so that the daemon can switch to nobody")
	}
	e := newEnv(t, nil)
	e.waitDevice()
	jwt := e.jwt(adminEmail)
	var got bytes.Buffer
	_, err := mockserver.DownloadFile(e.ctx, e.url, jwt, e.deviceID, "/etc/shadow", &got)
	// The stat is allowed (as for ls -l); the open is not, after the 200.
	if err == nil || got.Len() != 0 || !strings.Contains(err.Error(), "does not match the expected length") {
		t.Errorf("download /etc/shadow as nobody: %v, %d bytes", err, got.Len())
	}
	err = mockserver.UploadFile(e.ctx, e.url, jwt, e.deviceID, "/etc/tether-planted", "x", strings.NewReader("x"), nil, nil)
	if he := httpErr(t, err); he.StatusCode != 403 || !strings.HasSuffix(he.Message, "permission denied") {
		t.Errorf("upload under /etc as nobody: %v", err)
	}
	if _, err := os.Stat("/etc/tether-planted"); err == nil {
		os.Remove("/etc/tether-planted")
		t.Error("nobody wrote under /etc")
	}
	noTempFiles(t, "/etc")
}

// TestFileTransferDisabled: accept lacks 2, the server says 502.
func TestFileTransferDisabled(t *testing.T) {
	e := newEnv(t, map[string]interface{}{"FileTransfer": map[string]interface{}{"Disable": true}})
	e.waitDevice()
	_, err := mockserver.DownloadFile(e.ctx, e.url, e.jwt(adminEmail), e.deviceID, "/etc/hostname", io.Discard)
	if he := httpErr(t, err); he.StatusCode != 502 || he.Message != "file transfer disabled on device" {
		t.Errorf("%v", err)
	}
}

// TestFileTransferInterrupted: the link drops in the middle of an
// upload; the old file stays and no temporary file is left.
func TestFileTransferInterrupted(t *testing.T) {
	dir := ftDir(t)
	e := newEnv(t, nil)
	dev := e.waitDevice()
	target := filepath.Join(dir, "keep")
	if err := os.WriteFile(target, []byte("old"), 0o666); err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- mockserver.UploadFile(e.ctx, e.url, e.jwt(adminEmail), e.deviceID, target, "keep", pr, nil, nil)
	}()
	// Half a megabyte goes through, then the device's link is dropped.
	if _, err := pw.Write(make([]byte, 512<<10)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "a temporary file", func() bool {
		ents, _ := os.ReadDir(dir)
		return len(ents) == 2
	})
	dev.Close()
	pw.CloseWithError(errors.New("client gone"))
	<-done
	eventually(t, 10*time.Second, "the temporary file removed", func() bool {
		ents, _ := os.ReadDir(dir)
		return len(ents) == 1
	})
	if b, _ := os.ReadFile(target); string(b) != "old" {
		t.Errorf("target changed: %q", b)
	}
}

// TestFileTransferGiB streams 1 GiB each way; the daemon's peak memory
// must not grow with the size (compared with a 64 MiB warm-up).
func TestFileTransferGiB(t *testing.T) {
	dir := ftDir(t)
	// The race detector's shadow memory grows with the traffic and slows
	// the daemon tenfold: memory is measured on a plain build.
	bin := filepath.Join(t.TempDir(), "tether")
	build := exec.Command("go", "build", "-o", bin, "github.com/tether-agent/tether/cmd/tether")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		t.Fatalf("build tether: %v", err)
	}
	e := newEnvBin(t, bin, map[string]interface{}{"Log": map[string]interface{}{"Journal": "off", "Level": "warn"}})
	e.waitDevice()
	jwt := e.jwt(adminEmail)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	e.ctx = ctx
	round := func(size int64) {
		t.Helper()
		p := filepath.Join(dir, "big")
		src := io.LimitReader(&pattern{}, size)
		if err := mockserver.UploadFile(e.ctx, e.url, jwt, e.deviceID, p, "big", src, nil, nil); err != nil {
			t.Fatalf("upload %d: %v", size, err)
		}
		want := sha256.New()
		io.Copy(want, io.LimitReader(&pattern{}, size))
		h := sha256.New()
		if _, err := mockserver.DownloadFile(e.ctx, e.url, jwt, e.deviceID, p, h); err != nil {
			t.Fatalf("download %d: %v", size, err)
		}
		if !bytes.Equal(h.Sum(nil), want.Sum(nil)) {
			t.Fatalf("download of %d bytes differs", size)
		}
	}
	round(64 << 20)
	before := e.peakRSS()
	start := time.Now()
	round(1 << 30)
	growth := e.peakRSS() - before
	t.Logf("1 GiB up and down in %v; daemon peak RSS %d kB, growth %d kB", time.Since(start).Round(time.Millisecond), before, growth)
	if growth >= 1024 {
		t.Errorf("daemon peak RSS grew by %d kB for 1 GiB each way", growth)
	}
}

// pattern is an endless, cheap, non-constant byte stream.
type pattern struct{ n uint64 }

func (p *pattern) Read(b []byte) (int, error) {
	for i := range b {
		b[i] = byte(p.n*2654435761>>13) ^ byte(p.n)
		p.n++
	}
	return len(b), nil
}

// peakRSS is the daemon's VmHWM in kB.
func (e *env) peakRSS() int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", e.daemon.Process.Pid))
	if err != nil {
		e.t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmHWM:" {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return n
		}
	}
	e.t.Fatal("no VmHWM")
	return 0
}

func fileOwner(fi os.FileInfo) uint32 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Uid
	}
	return ^uint32(0)
}
