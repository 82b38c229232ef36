package registry

import (
	"errors"
	"testing"
)

func TestPageToken(t *testing.T) {
	token := encodePageToken("0190-abc", "jobs", "w")
	after, err := decodePageToken(token, "jobs", "w")
	if err != nil || after != "0190-abc" {
		t.Fatalf("decode(encode) = %q, %v", after, err)
	}
	if _, err := decodePageToken(token, "jobs", "other"); !errors.Is(err, ErrInvalidPageToken) {
		t.Errorf("a token for another query: %v", err)
	}
	if after, err := decodePageToken("", "jobs"); err != nil || after != "" {
		t.Errorf("no token: %q, %v", after, err)
	}
}

// FuzzDecodePageToken: page tokens come from clients; any string must give
// a key or ErrInvalidPageToken, never a panic.
func FuzzDecodePageToken(f *testing.F) {
	f.Add(encodePageToken("0190-abc", "jobs"))
	f.Add("e30")
	f.Add("!!!")
	f.Fuzz(func(t *testing.T, token string) {
		after, err := decodePageToken(token, "jobs")
		if err != nil && !errors.Is(err, ErrInvalidPageToken) {
			t.Fatalf("unexpected error kind: %v", err)
		}
		if err == nil && token != "" && after == "" {
			t.Fatal("a non-empty token decoded to no key")
		}
	})
}
