// Package syncbuf is a bytes.Buffer that another goroutine may write while
// a test reads it, typically a child process's stdout or stderr.
package syncbuf

import (
	"bytes"
	"sync"
)

// Buffer collects writes. With Max > 0 it keeps at most about Max bytes,
// so a misbehaving process cannot eat the test's memory; further writes
// still succeed and are dropped.
type Buffer struct {
	Max int

	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.Max <= 0 || b.buf.Len() < b.Max {
		b.buf.Write(p)
	}
	return len(p), nil
}

// String returns everything collected so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
