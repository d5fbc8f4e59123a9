package itest

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"
)

// The console's Files panel uploads a file to the device and downloads it
// back, byte for byte, through the file-transfer REST calls, as a person
// would with the file picker and the browser's download.
func TestBrowserFileUploadAndDownload(t *testing.T) {
	e := newEnv(t, nil)
	e.waitDevice()
	ctx := openConsole(t, e)

	// A directory the shell account may write; the upload is its file.
	devDir := t.TempDir()
	if err := os.Chmod(devDir, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Dir(devDir), 0o755); err != nil {
		t.Fatal(err)
	}
	content := make([]byte, 300<<10) // several chunks and windows
	if _, err := rand.Read(content); err != nil {
		t.Fatal(err)
	}
	local := filepath.Join(t.TempDir(), "payload.bin")
	if err := os.WriteFile(local, content, 0o644); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(devDir, "payload.bin")
	downloads := t.TempDir()

	row := fmt.Sprintf(`.device[data-device=%q]`, e.deviceID)
	panel := `.panel.files:not([hidden])`
	browse(t, ctx, "open the files panel",
		browser.SetDownloadBehavior(browser.SetDownloadBehaviorBehaviorAllow).WithDownloadPath(downloads),
		chromedp.Click(row+` button.files`, chromedp.ByQuery),
		chromedp.WaitVisible(panel+` input[name="upload-file"]`, chromedp.ByQuery))

	browse(t, ctx, "upload",
		chromedp.SetUploadFiles(panel+` input[name="upload-file"]`, []string{local}, chromedp.ByQuery),
		chromedp.SetValue(panel+` input[name="upload-path"]`, target, chromedp.ByQuery),
		chromedp.SetValue(panel+` input[name="upload-mode"]`, "0640", chromedp.ByQuery),
		chromedp.Click(panel+` .files-body form:nth-child(2) button[type="submit"]`, chromedp.ByQuery),
		waitJS(`document.querySelector('.panel.files:not([hidden]) .result.ok')?.textContent.startsWith('Uploaded')`))
	got, err := os.ReadFile(target)
	if err != nil || !bytes.Equal(got, content) {
		t.Fatalf("uploaded file: %d bytes, %v; want the %d bytes picked", len(got), err, len(content))
	}
	if fi, err := os.Stat(target); err != nil || fi.Mode().Perm() != 0o640 {
		t.Fatalf("uploaded file mode %v, %v; want 0640", fi.Mode(), err)
	}

	browse(t, ctx, "download",
		chromedp.SetValue(panel+` input[name="download-path"]`, target, chromedp.ByQuery),
		chromedp.Click(panel+` .files-body form:nth-child(1) button[type="submit"]`, chromedp.ByQuery))
	saved := filepath.Join(downloads, "payload.bin")
	eventually(t, 20*time.Second, "the browser to save the download", func() bool {
		b, err := os.ReadFile(saved)
		return err == nil && len(b) == len(content)
	})
	if b, _ := os.ReadFile(saved); !bytes.Equal(b, content) {
		t.Fatal("downloaded file differs from the upload")
	}
	var result string
	browse(t, ctx, "download result", chromedp.Text(panel+` .result.ok`, &result, chromedp.ByQuery))
	if want := "Downloaded " + target; len(result) < len(want) || result[:len(want)] != want {
		t.Fatalf("download result %q", result)
	}

	// A refusal is told in words: nothing to download there.
	browse(t, ctx, "refused download",
		chromedp.SetValue(panel+` input[name="download-path"]`, filepath.Join(devDir, "missing"), chromedp.ByQuery),
		chromedp.Click(panel+` .files-body form:nth-child(1) button[type="submit"]`, chromedp.ByQuery),
		waitJS(`document.querySelector('.panel.files:not([hidden]) .result.error')?.textContent.includes('failed')`))
}
