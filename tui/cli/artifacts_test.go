package cli

import (
	"os"
	"path/filepath"
	"testing"
)

func TestByteSize(t *testing.T) {
	tests := []struct {
		n    int64
		want string
	}{
		{0, "0 B"}, {1023, "1023 B"}, {1024, "1.0 KiB"}, {1536, "1.5 KiB"}, {64 << 20, "64.0 MiB"}, {3 << 30, "3.0 GiB"},
	}
	for _, tt := range tests {
		if got := byteSize(tt.n); got != tt.want {
			t.Errorf("byteSize(%d) = %q, want %q", tt.n, got, tt.want)
		}
	}
}

func TestWriteNewRefusesToOverwrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.png")
	if err := writeNew(path, []byte("first"), false); err != nil {
		t.Fatal(err)
	}
	if err := writeNew(path, []byte("second"), false); !isExit(err, ExitError) {
		t.Fatalf("second write without --force: %v, want a usage error", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "first" {
		t.Fatalf("a refused write changed the file to %q", b)
	}
	if err := writeNew(path, []byte("2nd"), true); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != "2nd" {
		t.Fatalf("with --force the file holds %q, want 2nd", b)
	}
}
