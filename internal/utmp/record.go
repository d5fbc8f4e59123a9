package utmp

import (
	"bytes"
	"fmt"
	"time"
)

// Record is one struct utmp, the fields tether sets.
type Record struct {
	Type    int16
	PID     int32
	Line    string // the terminal, without /dev/: "pts/3"
	ID      string // up to 4 bytes: "ts/3"
	User    string
	Host    string
	Session int32
	Time    time.Time // microseconds are kept
}

// encode writes r in layout l; strings are cut at their field's size (the
// C fields need no terminating NUL).
func (l *layout) encode(r *Record) []byte {
	b := make([]byte, l.size)
	byteOrder.PutUint16(b[offType:], uint16(r.Type))
	byteOrder.PutUint32(b[offPID:], uint32(r.PID))
	copy(b[offLine:offLine+lineSize], r.Line)
	copy(b[offID:offID+idSize], r.ID)
	copy(b[offUser:offUser+userSize], r.User)
	copy(b[offHost:offHost+hostSize], r.Host)
	sec, usec := r.Time.Unix(), int64(r.Time.Nanosecond()/1000)
	if l.wide {
		byteOrder.PutUint64(b[l.session:], uint64(int64(r.Session)))
		byteOrder.PutUint64(b[l.tvSec:], uint64(sec))
		byteOrder.PutUint64(b[l.tvUsec:], uint64(usec))
	} else {
		byteOrder.PutUint32(b[l.session:], uint32(r.Session))
		// glibc declares tv_sec unsigned here: good until 2106.
		byteOrder.PutUint32(b[l.tvSec:], uint32(sec))
		byteOrder.PutUint32(b[l.tvUsec:], uint32(usec))
	}
	return b
}

// decode reads one record in layout l.
func (l *layout) decode(b []byte) (Record, error) {
	if len(b) != l.size {
		return Record{}, fmt.Errorf("utmp record of %d bytes, want %d", len(b), l.size)
	}
	r := Record{
		Type: int16(byteOrder.Uint16(b[offType:])),
		PID:  int32(byteOrder.Uint32(b[offPID:])),
		Line: cstr(b[offLine : offLine+lineSize]),
		ID:   cstr(b[offID : offID+idSize]),
		User: cstr(b[offUser : offUser+userSize]),
		Host: cstr(b[offHost : offHost+hostSize]),
	}
	var sec, usec int64
	if l.wide {
		r.Session = int32(byteOrder.Uint64(b[l.session:]))
		sec, usec = int64(byteOrder.Uint64(b[l.tvSec:])), int64(byteOrder.Uint64(b[l.tvUsec:]))
	} else {
		r.Session = int32(byteOrder.Uint32(b[l.session:]))
		sec, usec = int64(byteOrder.Uint32(b[l.tvSec:])), int64(int32(byteOrder.Uint32(b[l.tvUsec:])))
	}
	r.Time = time.Unix(sec, usec*1000)
	return r, nil
}

func cstr(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// printable replaces what is not printable ASCII with '?': ut_host holds
// the remote user's id, which the server chooses, and who, w and last
// print it to a terminal as is.
func printable(s string, max int) string {
	b := make([]byte, 0, min(len(s), max))
	for i := 0; i < len(s) && len(b) < max; i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e {
			c = '?'
		}
		b = append(b, c)
	}
	return string(b)
}

// lineID is the ut_id of a terminal line: its last four bytes ("pts/3" →
// "ts/3", "pts/12" → "s/12"), the convention of login and sshd, so that
// a new login on a line replaces the line's stale entry.
func lineID(line string) string {
	if len(line) > idSize {
		return line[len(line)-idSize:]
	}
	return line
}
