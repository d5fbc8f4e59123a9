package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/tether-agent/tether/internal/mockserver"
)

// cp copies a file to or from a device through the server's file-transfer
// REST calls, as mender-cli cp does: DEVICE:PATH on either side (the
// destination side decides: a ':' there means upload).
func cp(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("mock-mender cp", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: mock-mender cp [flags] DEVICE:PATH LOCAL | LOCAL DEVICE:PATH")
		fs.PrintDefaults()
	}
	var cf clientFlags
	cf.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		fs.Usage()
		return errors.New("cp needs a source and a destination")
	}
	src, dst := fs.Arg(0), fs.Arg(1)
	tok, err := mockserver.Login(ctx, cf.server, cf.user, cf.password)
	if err != nil {
		return err
	}
	check := func(spec string) (string, string, error) {
		parts := strings.Split(spec, ":")
		switch {
		case len(parts) > 2:
			return "", "", errors.New("the device specification contains multiple ':' delimiters")
		case len(parts) != 2:
			return "", "", errors.New("the device specification is missing the ':' separator")
		}
		st, err := mockserver.DeviceStatus(ctx, cf.server, tok, parts[0])
		if err != nil {
			return "", "", fmt.Errorf("unable to get the device: %w", err)
		}
		if st != "connected" {
			return "", "", errors.New("the device is not connected")
		}
		return parts[0], parts[1], nil
	}
	if strings.Contains(dst, ":") {
		id, path, err := check(dst)
		if err != nil {
			return err
		}
		f, err := os.Open(src)
		if err != nil {
			return err
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return err
		}
		after := []mockserver.UploadField{{Name: "mode", Value: fmt.Sprintf("%o", fi.Mode())}}
		if err := mockserver.UploadFile(ctx, cf.server, tok, id, path, src, f, nil, after); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "Successfully uploaded the file %q to device %q at location %q\n", src, id, path)
		return nil
	}
	id, path, err := check(src)
	if err != nil {
		return err
	}
	// Written next to the destination and renamed in place when complete:
	// a failed download leaves no partial file.
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".part-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	meta, err := mockserver.DownloadFile(ctx, cf.server, tok, id, path, tmp)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Chmod(tmp.Name(), os.FileMode(meta.Mode).Perm()); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Successfully downloaded the file: %q from device %q to %q\n", path, id, dst)
	return nil
}
