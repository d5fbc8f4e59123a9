package main

import (
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/tether-agent/tether/internal/wire"
)

// fileTransfer measures proto 2 through the daemon, playing the server
// as deviceconnect does (ack every 10 chunks on download, at most 20
// chunks unacknowledged on upload), next to a plain local copy of the
// same file in the same run.
func (b *bench) fileTransfer(d *daemon, mb int) error {
	dir, err := os.MkdirTemp("", "tetherbench-ft-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	_ = os.Chmod(dir, 0o777) // the daemon works as nobody
	src := filepath.Join(dir, "src")
	size := int64(mb) << 20
	f, err := os.Create(src)
	if err != nil {
		return err
	}
	if _, err := io.CopyN(f, rand.Reader, size); err != nil {
		f.Close()
		return err
	}
	f.Close()
	_ = os.Chmod(src, 0o644)

	t0 := time.Now()
	if err := localCopy(src, filepath.Join(dir, "copy")); err != nil {
		return err
	}
	local := float64(size) / 1e6 / time.Since(t0).Seconds()

	cpu0 := d.cpuSeconds()
	t0 = time.Now()
	got, err := b.download("ft-down", src)
	if err != nil {
		return err
	}
	down := float64(got) / 1e6 / time.Since(t0).Seconds()
	cpuDown := (d.cpuSeconds() - cpu0) / (float64(got) / 100e6)
	if got != size {
		return fmt.Errorf("download: %d of %d bytes", got, size)
	}

	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	cpu0 = d.cpuSeconds()
	t0 = time.Now()
	if err := b.upload("ft-up", filepath.Join(dir, "up"), in); err != nil {
		return err
	}
	up := float64(size) / 1e6 / time.Since(t0).Seconds()
	cpuUp := (d.cpuSeconds() - cpu0) / (float64(size) / 100e6)

	row(fmt.Sprintf("file download (%d MiB)", mb), fmt.Sprintf("%.1f MB/s", down), fmt.Sprintf("local copy %.1f MB/s; %.2f CPU s / 100 MB", local, cpuDown))
	row(fmt.Sprintf("file upload (%d MiB, fsync)", mb), fmt.Sprintf("%.1f MB/s", up), fmt.Sprintf("local copy %.1f MB/s; %.2f CPU s / 100 MB", local, cpuUp))
	return nil
}

// localCopy is the floor: read and write the same bytes, fsync, as the
// upload does.
func localCopy(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	defer out.Close()
	buf := make([]byte, wire.FileChunkSize)
	if _, err := io.CopyBuffer(struct{ io.Writer }{out}, struct{ io.Reader }{in}, buf); err != nil {
		return err
	}
	return out.Sync()
}

func ftMsg(sid, typ string, off int64, body []byte) *wire.ProtoMsg {
	m := &wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoFileTransfer, MsgType: typ, SessionID: sid,
		Properties: map[string]interface{}{wire.PropUserID: "bench"}}, Body: body}
	if typ == wire.FileChunk || typ == wire.FileAck {
		m.Header.Properties[wire.PropOffset] = off
	}
	return m
}

// nextOf returns the next frame of sid, skipping other sessions'.
func (b *bench) nextOf(sid string) (*wire.ProtoMsg, error) {
	for {
		m, err := b.next()
		if err != nil || m.Header.SessionID == sid {
			return m, err
		}
	}
}

func ftErr(m *wire.ProtoMsg) error {
	var e wire.FileErrorBody
	_ = wire.DecodeBody(m.Body, &e)
	return fmt.Errorf("device error: %s", e.Error)
}

func (b *bench) download(sid, path string) (int64, error) {
	body, _ := wire.EncodeBody(wire.FilePathBody{Path: &path})
	if err := b.c.send(ftMsg(sid, wire.FileGet, 0, body)); err != nil {
		return 0, err
	}
	var got int64
	n := 0
	for {
		m, err := b.nextOf(sid)
		if err != nil {
			return got, err
		}
		switch m.Header.MsgType {
		case wire.FileError:
			return got, ftErr(m)
		case wire.FileChunk:
			if len(m.Body) == 0 {
				return got, b.c.send(ftMsg(sid, wire.FileAck, got, nil))
			}
			got += int64(len(m.Body))
			if n++; n == wire.FileAckEvery {
				if err := b.c.send(ftMsg(sid, wire.FileAck, got, nil)); err != nil {
					return got, err
				}
				n = 0
			}
		}
	}
}

func (b *bench) upload(sid, path string, src io.Reader) error {
	body, _ := wire.EncodeBody(wire.UploadBody{Path: &path})
	if err := b.c.send(ftMsg(sid, wire.FilePut, 0, body)); err != nil {
		return err
	}
	var off, acked int64
	await := func() error {
		m, err := b.nextOf(sid)
		if err != nil {
			return err
		}
		switch m.Header.MsgType {
		case wire.FileError:
			return ftErr(m)
		case wire.FileAck:
			if o, _ := m.Header.IntProp(wire.PropOffset); o > acked {
				acked = o
			}
		}
		return nil
	}
	if err := await(); err != nil {
		return err
	}
	buf := make([]byte, wire.FileChunkSize)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if err := b.c.send(ftMsg(sid, wire.FileChunk, off, buf[:n])); err != nil {
				return err
			}
			off += int64(n)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		for off > acked+wire.FileChunkSize*wire.FileWindowChunks {
			if err := await(); err != nil {
				return err
			}
		}
	}
	if err := b.c.send(ftMsg(sid, wire.FileChunk, off, nil)); err != nil {
		return err
	}
	for acked < off {
		if err := await(); err != nil {
			return err
		}
	}
	return nil
}

// cpuSeconds is the daemon's user+system CPU time so far.
func (d *daemon) cpuSeconds() float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", d.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ
}
