package mockserver

import (
	"context"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"strconv"
)

// FileMeta is what a download's headers say about the file.
type FileMeta struct {
	Path     string
	Size     int64
	Mode     uint32 // Go os.FileMode bits, from octal text
	UID, GID string
}

// DownloadFile fetches a device file as mender-cli cp does and writes it
// to dst. It returns the headers' metadata; a body shorter than
// X-MEN-File-Size is an error (the server cannot change its 200 once a
// transfer fails part-way).
func DownloadFile(ctx context.Context, baseURL, userJWT, deviceID, devicePath string, dst io.Writer) (*FileMeta, error) {
	u := apiURL(baseURL, DeviceConnectMgmtDir+url.PathEscape(deviceID)+"/download") + "?" + url.Values{"path": {devicePath}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Close = true
	req.Header.Set("Authorization", "Bearer "+userJWT)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("download %s: %w", devicePath, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("download %s: %w", devicePath, newHTTPError(resp))
	}
	mode := resp.Header.Get(HeaderFileMode)
	if mode == "" {
		return nil, fmt.Errorf("download %s: missing %s header", devicePath, HeaderFileMode)
	}
	m, err := strconv.ParseUint(mode, 8, 32)
	if err != nil {
		return nil, fmt.Errorf("download %s: %s %q: %w", devicePath, HeaderFileMode, mode, err)
	}
	size, err := strconv.ParseInt(resp.Header.Get(HeaderFileSize), 10, 64)
	if err != nil {
		return nil, fmt.Errorf("download %s: no proper size given for the file: %q", devicePath, resp.Header.Get(HeaderFileSize))
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/octet-stream" {
		return nil, fmt.Errorf("download %s: unexpected Content-Type header: %s", devicePath, ct)
	}
	meta := &FileMeta{Path: resp.Header.Get(HeaderFilePath), Size: size, Mode: uint32(m),
		UID: resp.Header.Get(HeaderFileUID), GID: resp.Header.Get(HeaderFileGID)}
	n, err := io.Copy(dst, resp.Body)
	if err != nil {
		return meta, fmt.Errorf("download %s: %w", devicePath, err)
	}
	if n != size {
		return meta, fmt.Errorf("download %s: the downloaded file does not match the expected length in 'X-MEN-FILE-SIZE' (%d of %d bytes)", devicePath, n, size)
	}
	return meta, nil
}

// UploadField is one extra multipart field of an upload.
type UploadField struct{ Name, Value string }

// UploadFile sends src to the device as mender-cli cp does: a multipart
// PUT with "path", then the "file" part (its file name is the source
// path), then the fields in after (mender-cli sends "mode" there, which
// the server never reads because it stops at the file). before are sent
// ahead of the file, as the web UI or another client may. The body is
// streamed, not buffered.
func UploadFile(ctx context.Context, baseURL, userJWT, deviceID, devicePath, srcName string, src io.Reader, before, after []UploadField) error {
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		err := func() error {
			if err := mw.WriteField("path", devicePath); err != nil {
				return err
			}
			for _, f := range before {
				if err := mw.WriteField(f.Name, f.Value); err != nil {
					return err
				}
			}
			part, err := mw.CreateFormFile("file", srcName)
			if err != nil {
				return err
			}
			if _, err := io.Copy(part, src); err != nil {
				return err
			}
			for _, f := range after {
				if err := mw.WriteField(f.Name, f.Value); err != nil {
					return err
				}
			}
			return mw.Close()
		}()
		pw.CloseWithError(err)
	}()
	u := apiURL(baseURL, DeviceConnectMgmtDir+url.PathEscape(deviceID)+"/upload")
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, u, pr)
	if err != nil {
		pr.CloseWithError(err)
		return err
	}
	req.Close = true
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.Header.Set("Authorization", "Bearer "+userJWT)
	resp, err := http.DefaultClient.Do(req)
	pr.CloseWithError(io.ErrClosedPipe) // ends the writer if the request stopped reading
	if err != nil {
		return fmt.Errorf("upload %s: %w", devicePath, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("upload %s: %w", devicePath, newHTTPError(resp))
	}
	return nil
}
