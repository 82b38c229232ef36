package agentv1

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/testing/protocmp"
)

func validToken() *EnrollmentToken {
	return &EnrollmentToken{Server: "cp.example.com:8443", CaFingerprint: bytes.Repeat([]byte{7}, 32), Secret: bytes.Repeat([]byte{1}, 32)}
}

func TestTokenRoundTrip(t *testing.T) {
	s := EncodeToken(validToken())
	got, err := ParseToken(" " + s + "\n")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(validToken(), got, protocmp.Transform()); diff != "" {
		t.Fatal(diff)
	}
}

func TestParseTokenErrors(t *testing.T) {
	noSecret := validToken()
	noSecret.Secret = nil
	noCA := validToken()
	noCA.CaFingerprint = []byte{1}
	tests := []struct{ name, token, want string }{
		{"NoPrefix", "hello", "does not start with"},
		{"BadBase64", TokenPrefix + "!!!", "damaged"},
		{"NotProto", TokenPrefix + "_w", "damaged"},
		{"NoSecret", EncodeToken(noSecret), "no secret"},
		{"NoFingerprint", EncodeToken(noCA), "no CA fingerprint"},
		{"NoServer", EncodeToken(&EnrollmentToken{CaFingerprint: make([]byte, 32), Secret: make([]byte, 32)}), "no server"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ParseToken(tt.token); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ParseToken() = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestFrames(t *testing.T) {
	var buf bytes.Buffer
	msgs := []*AgentMessage{
		{Msg: &AgentMessage_Hello{Hello: &Hello{RobotId: "r1", MaxJobs: 2, Labels: map[string]string{"site": "hq"}}}},
		{Msg: &AgentMessage_Heartbeat{Heartbeat: &Heartbeat{}}},
	}
	for _, m := range msgs {
		if err := WriteFrame(&buf, m); err != nil {
			t.Fatal(err)
		}
	}
	fr := NewFrameReader(&buf)
	for _, want := range msgs {
		got := &AgentMessage{}
		if err := fr.Read(got); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
			t.Fatal(diff)
		}
	}
	if err := fr.Read(&AgentMessage{}); !errors.Is(err, io.EOF) {
		t.Fatalf("after the last frame: %v, want io.EOF", err)
	}

	// A length prefix over the limit is refused before anything is read.
	var huge bytes.Buffer
	huge.Write(protowireVarint(MaxFrameSize + 1))
	var sizeErr *protodelim.SizeTooLargeError
	if err := NewFrameReader(&huge).Read(&AgentMessage{}); !errors.As(err, &sizeErr) {
		t.Fatalf("oversized frame: %v, want SizeTooLargeError", err)
	}
}

func protowireVarint(n uint64) []byte {
	var b []byte
	for n >= 0x80 {
		b = append(b, byte(n)|0x80)
		n >>= 7
	}
	return append(b, byte(n))
}

// FuzzParseToken: tokens are pasted by people and may be anything.
func FuzzParseToken(f *testing.F) {
	f.Add(EncodeToken(validToken()))
	f.Add(TokenPrefix)
	f.Add("cet1_AAAA")
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := ParseToken(s)
		if err != nil {
			return
		}
		again, err := ParseToken(EncodeToken(tok))
		if err != nil || !cmp.Equal(tok, again, protocmp.Transform()) {
			t.Fatalf("a parsed token does not survive a round trip: %v", err)
		}
	})
}

// FuzzFrameReader: frames come from the network; the reader must return
// messages or errors, never panic or allocate past the limit.
func FuzzFrameReader(f *testing.F) {
	var buf bytes.Buffer
	WriteFrame(&buf, &AgentMessage{Msg: &AgentMessage_Hello{Hello: &Hello{RobotId: "r"}}})
	f.Add(buf.Bytes())
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, data []byte) {
		fr := NewFrameReader(bytes.NewReader(data))
		for range 16 {
			if err := fr.Read(&AgentMessage{}); err != nil {
				return
			}
		}
	})
}
