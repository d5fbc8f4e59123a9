package filetransfer

import (
	"errors"
	"io/fs"

	"golang.org/x/sys/unix"
)

// HTTP statuses a failed request's error carries as "code". The real
// server makes a device error's code (an integer above 0) the HTTP status
// of the user's download or upload, else 400 (docs/protocol.md §5.1):
// without it every failure reads as a bad request in mender-cli and the
// Mender UI, whether the file was missing, forbidden or too large.
const (
	statusBadRequest = 400 // malformed requests, protocol errors, anything else
	statusForbidden  = 403 // the account's rights or a limit refuse it
	statusNotFound   = 404 // no such file or directory
	statusConflict   = 409 // the path names something of another type
	statusTooLarge   = 413 // over MaxFileSize, or the file system is full
)

// statusOf maps a failure to its status.
func statusOf(err error) int {
	var c conflict
	var d deny
	switch {
	case err == nil:
		return statusBadRequest
	case errors.As(err, &c), errors.Is(err, unix.ENOTDIR), errors.Is(err, unix.EISDIR),
		errors.Is(err, unix.EEXIST), errors.Is(err, unix.ENOTEMPTY):
		return statusConflict
	case errors.As(err, &d), isDenial(err), errors.Is(err, fs.ErrPermission), errors.Is(err, unix.EROFS):
		return statusForbidden
	case errors.Is(err, fs.ErrNotExist):
		return statusNotFound
	case errors.Is(err, unix.EFBIG), errors.Is(err, unix.ENOSPC), errors.Is(err, unix.EDQUOT):
		return statusTooLarge
	}
	return statusBadRequest
}
