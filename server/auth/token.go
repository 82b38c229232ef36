// Package auth authenticates API callers by bearer token, authorizes them by
// the role each RPC declares in its proto options, and records who did what
// for the audit log.
package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"strings"
)

// TokenPrefix starts every API token so a leaked one is recognisable by
// secret scanners and people alike.
const TokenPrefix = "csr_"

// NewToken returns a new random API token: the prefix and 32 random bytes.
func NewToken() string {
	var b [32]byte
	// crypto/rand.Read never returns an error on supported platforms.
	_, _ = rand.Read(b[:])
	return TokenPrefix + base64.RawURLEncoding.EncodeToString(b[:])
}

// HashToken returns the hex SHA-256 of a token, the only form stored. A fast
// hash is right here: tokens carry 256 random bits, so there is nothing for
// a slow password hash to protect.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// WellFormed reports whether s looks like a token this server issues, so a
// garbage header is refused without a database lookup.
func WellFormed(s string) bool {
	if !strings.HasPrefix(s, TokenPrefix) {
		return false
	}
	raw, err := base64.RawURLEncoding.DecodeString(s[len(TokenPrefix):])
	return err == nil && len(raw) == 32
}
