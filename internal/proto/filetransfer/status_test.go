package filetransfer

import (
	"errors"
	"fmt"
	"testing"

	"golang.org/x/sys/unix"
)

func TestStatusOf(t *testing.T) {
	wrap := func(err error) error { return &pathError{op: "open", path: "/x", err: err} }
	tests := []struct {
		name string
		err  error
		want int
	}{
		{"outside the chroot", errOutsideChroot, statusForbidden},
		{"a link not to follow", fmt.Errorf("resolve: %w", errFollowLink), statusForbidden},
		{"permission", wrap(unix.EACCES), statusForbidden},
		{"operation not permitted", wrap(unix.EPERM), statusForbidden},
		{"read-only file system", wrap(unix.EROFS), statusForbidden},
		{"a limit found after the lookup", deny("forbidden to overwrite the file"), statusForbidden},
		{"missing", wrap(unix.ENOENT), statusNotFound},
		{"not a directory", wrap(unix.ENOTDIR), statusConflict},
		{"a directory", wrap(unix.EISDIR), statusConflict},
		{"another type at the path", conflict("conflicting file path: cannot overwrite directory"), statusConflict},
		{"file system full", wrap(unix.ENOSPC), statusTooLarge},
		{"quota", wrap(unix.EDQUOT), statusTooLarge},
		{"file too large", wrap(unix.EFBIG), statusTooLarge},
		{"anything else", errors.New("boom"), statusBadRequest},
		{"i/o error", wrap(unix.EIO), statusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := statusOf(tt.err); got != tt.want {
				t.Fatalf("statusOf(%v) = %d, want %d", tt.err, got, tt.want)
			}
		})
	}
}
