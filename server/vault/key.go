package vault

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// KeySize is the size of every key: AES-256.
const KeySize = 32

// KEK is a key-encryption key: it seals data keys, never values.
type KEK struct {
	// ID names the key without revealing it: a hash of the key, so a key
	// file needs no names and the same key has the same id everywhere.
	ID  string
	Key []byte
}

// NewKEK wraps key, which must be KeySize bytes.
func NewKEK(key []byte) (KEK, error) {
	if len(key) != KeySize {
		return KEK{}, fmt.Errorf("a key must be %d bytes, this one is %d", KeySize, len(key))
	}
	sum := sha256.Sum256(append([]byte("casare kek id\x00"), key...))
	return KEK{ID: "kek-" + hex.EncodeToString(sum[:8]), Key: key}, nil
}

// KeySource gives the key-encryption keys. The first seals; every one of
// them opens. It is an interface so that a KMS or Vault transit backend
// can take the place of the key file.
type KeySource interface {
	// Keys returns the keys, the one to seal with first.
	Keys(ctx context.Context) ([]KEK, error)
	// String names the source in messages (the file, the variable).
	String() string
}

// ParseKeys reads a key list: one base64 key per line (or separated by
// commas), the first the one to seal with; blank lines and lines starting
// with # are ignored. The error names the line.
func ParseKeys(text string) ([]KEK, error) {
	var keys []KEK
	seen := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(text))
	line := 0
	for sc.Scan() {
		line++
		for f := range strings.SplitSeq(sc.Text(), ",") {
			f = strings.TrimSpace(f)
			if f == "" || strings.HasPrefix(f, "#") {
				break
			}
			raw, err := base64.StdEncoding.DecodeString(f)
			if err != nil {
				return nil, fmt.Errorf("line %d: not base64: %v", line, err)
			}
			k, err := NewKEK(raw)
			if err != nil {
				return nil, fmt.Errorf("line %d: %v", line, err)
			}
			if seen[k.ID] {
				return nil, fmt.Errorf("line %d: key %s is listed twice", line, k.ID)
			}
			seen[k.ID] = true
			keys = append(keys, k)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return nil, errors.New("no key: write one base64 32-byte key per line, the one to seal with first")
	}
	return keys, nil
}

// FormatKey is key as a line of a key file.
func FormatKey(key []byte) string { return base64.StdEncoding.EncodeToString(key) }

// NewKey returns a random key.
func NewKey() []byte {
	k := make([]byte, KeySize)
	if _, err := rand.Read(k); err != nil {
		panic("vault: no randomness: " + err.Error())
	}
	return k
}

// File is a key file (--secret-key-file).
type File struct {
	Path string
}

func (f File) String() string { return f.Path }

// Keys reads the file; see ParseKeys.
func (f File) Keys(context.Context) ([]KEK, error) {
	b, err := os.ReadFile(f.Path)
	if err != nil {
		return nil, fmt.Errorf("secret key file: %w", err)
	}
	keys, err := ParseKeys(string(b))
	if err != nil {
		return nil, fmt.Errorf("secret key file %s: %w", f.Path, err)
	}
	return keys, nil
}

// Text is a key list given as text (CASARE_SECRET_KEY).
type Text struct {
	Name, Value string
}

func (t Text) String() string { return t.Name }

// Keys parses the text; see ParseKeys.
func (t Text) Keys(context.Context) ([]KEK, error) {
	keys, err := ParseKeys(t.Value)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", t.Name, err)
	}
	return keys, nil
}

// CreateKeyFile writes a new key file with one random key, readable only by
// this user, when path does not exist yet; it reports whether it wrote one.
// The embedded default calls it on first start, as it writes the admin
// token.
func CreateKeyFile(path string) (bool, error) {
	if _, err := os.Stat(path); err == nil {
		return false, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("secret key file: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return false, fmt.Errorf("secret key file: %w", err)
	}
	text := "# casare-server key-encryption keys: the first seals, all open.\n" + FormatKey(NewKey()) + "\n"
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("secret key file: %w", err)
	}
	if _, err := f.WriteString(text); err != nil {
		f.Close()
		os.Remove(path)
		return false, fmt.Errorf("secret key file: %w", err)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return false, fmt.Errorf("secret key file: %w", err)
	}
	return true, nil
}
