package agentv1

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
)

// artifactStream writes an artifact as a robot does and returns the bytes
// on the wire.
func artifactStream(t *testing.T, h *ArtifactHeader, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := WriteArtifact(&buf, h, data); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestArtifactRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		size int
	}{
		{"Empty", 0},
		{"OneChunk", 1000},
		{"ExactlyOneChunk", MaxArtifactChunk},
		{"SeveralChunks", 3*MaxArtifactChunk + 17},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := make([]byte, tt.size)
			for i := range data {
				data[i] = byte(i * 7)
			}
			wire := artifactStream(t, &ArtifactHeader{JobId: "j1", Attempt: 2, Name: "report.pdf", ContentType: "application/pdf"}, data)
			fr := NewFrameReader(bytes.NewReader(wire))
			hdr := &UniStreamHeader{}
			if err := fr.Read(hdr); err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(data)
			want := &ArtifactHeader{JobId: "j1", Attempt: 2, Name: "report.pdf", ContentType: "application/pdf", Size: int64(tt.size), Sha256: sum[:]}
			if diff := cmp.Diff(want, hdr.GetArtifact(), protocmp.Transform()); diff != "" {
				t.Fatalf("header (-want +got):\n%s", diff)
			}
			got, err := ReadArtifact(fr, hdr.GetArtifact())
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, data) {
				t.Fatalf("read %d bytes back, want the %d written", len(got), len(data))
			}
		})
	}
}

func TestLogStreamHeaderRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	want := &UniStreamHeader{Kind: &UniStreamHeader_Log{Log: &LogStreamHeader{JobId: "j1", Attempt: 3}}}
	if err := WriteFrame(&buf, want); err != nil {
		t.Fatal(err)
	}
	WriteFrame(&buf, &LogEntry{Line: 1, Message: "hello"})
	fr := NewFrameReader(&buf)
	got := &UniStreamHeader{}
	if err := fr.Read(got); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Fatalf("header (-want +got):\n%s", diff)
	}
	e := &LogEntry{}
	if err := fr.Read(e); err != nil || e.GetMessage() != "hello" {
		t.Fatalf("the entry after the header: %v, %v", e, err)
	}
}

func TestReadArtifactRefuses(t *testing.T) {
	data := []byte("the quick brown fox")
	sum := sha256.Sum256(data)
	header := func() *ArtifactHeader {
		return &ArtifactHeader{JobId: "j1", Attempt: 1, Name: "fox.txt", Size: int64(len(data)), Sha256: sum[:]}
	}
	chunks := func(parts ...[]byte) []byte {
		var buf bytes.Buffer
		for _, p := range parts {
			WriteFrame(&buf, &ArtifactChunk{Data: p})
		}
		return buf.Bytes()
	}
	tests := []struct {
		name   string
		header func(h *ArtifactHeader)
		wire   []byte
		want   string
	}{
		{"Truncated", nil, chunks(data[:5]), "ended after 5 of 19 bytes"},
		{"TooMany", nil, chunks(data, []byte("!")), "more bytes than the 19 announced"},
		{"Damaged", nil, chunks(append([]byte("T"), data[1:]...)), "do not match their SHA-256"},
		{"OverLimit", func(h *ArtifactHeader) { h.Size = MaxArtifactSize + 1 }, chunks(data), "over the 64 MiB limit"},
		{"NoDigest", func(h *ArtifactHeader) { h.Sha256 = nil }, chunks(data), "not SHA-256"},
		{"Slash", func(h *ArtifactHeader) { h.Name = "../etc/passwd" }, chunks(data), "without slashes"},
		{"Backslash", func(h *ArtifactHeader) { h.Name = `a\b` }, chunks(data), "without slashes"},
		{"Dots", func(h *ArtifactHeader) { h.Name = ".." }, chunks(data), "not a file name"},
		{"LongName", func(h *ArtifactHeader) { h.Name = strings.Repeat("a", MaxArtifactName+1) }, chunks(data), "over the 200 limit"},
		{"ControlCharacter", func(h *ArtifactHeader) { h.Name = "a\nb" }, chunks(data), "control characters"},
		{"NoJob", func(h *ArtifactHeader) { h.JobId = "" }, chunks(data), "no job id"},
		{"BigChunk", func(h *ArtifactHeader) {
			big := make([]byte, MaxArtifactChunk+1)
			s := sha256.Sum256(big)
			h.Size, h.Sha256 = int64(len(big)), s[:]
		}, chunks(make([]byte, MaxArtifactChunk+1)), "over the 262144 limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := header()
			if tt.header != nil {
				tt.header(h)
			}
			_, err := ReadArtifact(NewFrameReader(bytes.NewReader(tt.wire)), h)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ReadArtifact() = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestWriteArtifactChecksFirst(t *testing.T) {
	var buf bytes.Buffer
	err := WriteArtifact(&buf, &ArtifactHeader{JobId: "j1", Name: "a/b"}, []byte("x"))
	if err == nil || !strings.Contains(err.Error(), "without slashes") {
		t.Fatalf("WriteArtifact(a/b) = %v", err)
	}
	if buf.Len() != 0 {
		t.Fatalf("a refused artifact wrote %d bytes", buf.Len())
	}
	if err := WriteArtifact(&buf, &ArtifactHeader{JobId: "j1", Name: "big"}, make([]byte, MaxArtifactSize+1)); err == nil || !strings.Contains(err.Error(), "over the 64 MiB limit") {
		t.Fatalf("WriteArtifact(too big) = %v", err)
	}
}

// FuzzReadArtifact: artifact streams come from robots; reading one must
// return the bytes or an error, never panic or hold more than announced.
func FuzzReadArtifact(f *testing.F) {
	var buf bytes.Buffer
	WriteArtifact(&buf, &ArtifactHeader{JobId: "j", Name: "a.txt"}, []byte("hello"))
	f.Add(buf.Bytes())
	f.Add([]byte{0x02, 0x0a, 0x00})
	f.Fuzz(func(t *testing.T, wire []byte) {
		fr := NewFrameReader(bytes.NewReader(wire))
		hdr := &UniStreamHeader{}
		if err := fr.Read(hdr); err != nil || hdr.GetArtifact() == nil {
			return
		}
		data, err := ReadArtifact(fr, hdr.GetArtifact())
		if err != nil {
			if errors.Is(err, io.EOF) {
				t.Fatalf("a clean end must be judged, not passed on: %v", err)
			}
			return
		}
		if int64(len(data)) != hdr.GetArtifact().GetSize() {
			t.Fatalf("read %d bytes, the header says %d", len(data), hdr.GetArtifact().GetSize())
		}
	})
}
