// Package logtest gives tests a log destination they can read while
// loggers and processes still write to it.
package logtest

import (
	"bytes"
	"strings"
	"sync"
)

// Buffer collects what is written to it; it is safe for concurrent use.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Count says how many times text was written so far.
func (b *Buffer) Count(text string) int {
	return strings.Count(b.String(), text)
}
