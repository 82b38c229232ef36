package gateway

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/quic-go/quic-go"
)

// ResetKeyFile is the stateless-reset key's file in the data dir.
const ResetKeyFile = "quic-reset.key"

// LoadResetKey reads the stateless-reset key (64 hex digits) from path.
// When create is set and the file does not exist, it makes a new key and
// writes it there (mode 0600) first: the data dir's own key. A key that
// replicas share is made once by the operator, so a missing one is an
// error rather than a key of one replica only.
func LoadResetKey(path string, create bool) (*quic.StatelessResetKey, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && create {
		var key quic.StatelessResetKey
		if _, err := rand.Read(key[:]); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, err
		}
		// O_EXCL: of two processes starting on one data dir, the second
		// reads the first one's key rather than replacing it.
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err == nil {
			_, err = f.WriteString(hex.EncodeToString(key[:]) + "\n")
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				os.Remove(path)
				return nil, err
			}
			return &key, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return nil, err
		}
		b, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, err
	}
	text := strings.TrimSpace(string(b))
	raw, err := hex.DecodeString(text)
	if err != nil || len(raw) != len(quic.StatelessResetKey{}) {
		return nil, fmt.Errorf("%s: want %d hex digits (a key of %d random bytes, e.g. from openssl rand -hex %d), got %d characters",
			path, 2*len(quic.StatelessResetKey{}), len(quic.StatelessResetKey{}), len(quic.StatelessResetKey{}), len(text))
	}
	var key quic.StatelessResetKey
	copy(key[:], raw)
	return &key, nil
}
