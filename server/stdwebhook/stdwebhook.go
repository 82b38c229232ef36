// Package stdwebhook signs and verifies HTTP requests in the Standard
// Webhooks scheme (standardwebhooks.com): an HMAC-SHA256 over
// "{webhook-id}.{webhook-timestamp}.{body}" with a secret written
// "whsec_" + base64 of the key, sent as "webhook-signature: v1,<base64>"
// (several space-separated while a secret is being rotated).
package stdwebhook

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Header names of the scheme.
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// SecretPrefix starts every secret.
const SecretPrefix = "whsec_"

// DefaultTolerance is how far a request's timestamp may be from the
// receiver's clock, either way: the scheme's five minutes.
const DefaultTolerance = 5 * time.Minute

// Limits on what a sender controls. A webhook-id becomes part of a job's
// idempotency key, so it is short visible ASCII; a signature header holds
// a few signatures, one per secret the sender knows.
const (
	MaxIDLength        = 128
	MaxSignatureHeader = 4096
	MaxSignatures      = 16
)

// keyBytes is the length of the keys NewSecret makes: the scheme asks for
// 24 to 64.
const keyBytes = 32

// Errors Verify returns, each wrapped with what was wrong; all of them mean
// the request is not authentic.
var (
	ErrMissing   = errors.New("missing header")
	ErrMalformed = errors.New("malformed header")
	ErrStale     = errors.New("timestamp outside the tolerance")
	ErrNoMatch   = errors.New("no signature matches")
)

// NewSecret returns a new random secret, "whsec_" + base64 of 32 bytes.
func NewSecret() string {
	key := make([]byte, keyBytes)
	_, _ = rand.Read(key) // never fails (crypto/rand panics instead)
	return SecretPrefix + base64.StdEncoding.EncodeToString(key)
}

// DecodeSecret returns the key of a "whsec_…" secret. The prefix may be
// left out, as some senders' libraries do.
func DecodeSecret(secret string) ([]byte, error) {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, SecretPrefix))
	if err != nil || len(key) == 0 {
		return nil, fmt.Errorf("secret: not %sBASE64", SecretPrefix)
	}
	return key, nil
}

// Sign returns the webhook-signature value ("v1,<base64>") for a request.
func Sign(key []byte, id string, timestamp time.Time, body []byte) string {
	return "v1," + base64.StdEncoding.EncodeToString(mac(key, id, strconv.FormatInt(timestamp.Unix(), 10), body))
}

func mac(key []byte, id, timestamp string, body []byte) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(id))
	h.Write([]byte{'.'})
	h.Write([]byte(timestamp))
	h.Write([]byte{'.'})
	h.Write(body)
	return h.Sum(nil)
}

// ParseSignatures returns the v1 signatures of a webhook-signature header:
// space-separated "version,base64" entries. Entries of other versions
// (v1a, asymmetric) are skipped; a v1 entry that is not base64 of 32 bytes,
// an entry without a comma, a header longer than MaxSignatureHeader or with
// more than MaxSignatures entries is ErrMalformed, and a header with no v1
// entry ErrMissing.
func ParseSignatures(header string) ([][]byte, error) {
	if len(header) > MaxSignatureHeader {
		return nil, fmt.Errorf("%s: %w: longer than %d bytes", HeaderSignature, ErrMalformed, MaxSignatureHeader)
	}
	entries := strings.Fields(header)
	if len(entries) > MaxSignatures {
		return nil, fmt.Errorf("%s: %w: more than %d signatures", HeaderSignature, ErrMalformed, MaxSignatures)
	}
	var sigs [][]byte
	for _, entry := range entries {
		version, value, ok := strings.Cut(entry, ",")
		if !ok {
			return nil, fmt.Errorf("%s: %w: an entry is not version,signature", HeaderSignature, ErrMalformed)
		}
		if version != "v1" {
			continue
		}
		sig, err := base64.StdEncoding.DecodeString(value)
		if err != nil || len(sig) != sha256.Size {
			return nil, fmt.Errorf("%s: %w: a v1 signature is not base64 of %d bytes", HeaderSignature, ErrMalformed, sha256.Size)
		}
		sigs = append(sigs, sig)
	}
	if len(sigs) == 0 {
		return nil, fmt.Errorf("%s: %w: no v1 signature", HeaderSignature, ErrMissing)
	}
	return sigs, nil
}

// Request is what Verify checks: the three headers and the body as sent.
type Request struct {
	ID, Timestamp, Signature string
	Body                     []byte
}

// Verify checks that one of req's signatures was made with one of keys and
// that its timestamp is within tolerance of now, so a captured request
// cannot be replayed later. Replays within the tolerance pass: a receiver
// tells them apart by the webhook-id. The error says which header is at
// fault and wraps ErrMissing, ErrMalformed, ErrStale or ErrNoMatch.
func Verify(keys [][]byte, req Request, now time.Time, tolerance time.Duration) error {
	if req.ID == "" {
		return fmt.Errorf("%s: %w", HeaderID, ErrMissing)
	}
	if err := checkID(req.ID); err != nil {
		return err
	}
	if req.Timestamp == "" {
		return fmt.Errorf("%s: %w", HeaderTimestamp, ErrMissing)
	}
	// Seconds since the epoch, digits only: no sign, no spaces, and a
	// length that cannot overflow.
	if len(req.Timestamp) > 12 || strings.Trim(req.Timestamp, "0123456789") != "" {
		return fmt.Errorf("%s: %w: not seconds since the epoch", HeaderTimestamp, ErrMalformed)
	}
	secs, _ := strconv.ParseInt(req.Timestamp, 10, 64)
	if d := now.Sub(time.Unix(secs, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("%s: %w of %s (it is %s away from the server's clock)", HeaderTimestamp, ErrStale, tolerance, d.Round(time.Second).Abs())
	}
	if req.Signature == "" {
		return fmt.Errorf("%s: %w", HeaderSignature, ErrMissing)
	}
	sigs, err := ParseSignatures(req.Signature)
	if err != nil {
		return err
	}
	for _, key := range keys {
		want := mac(key, req.ID, req.Timestamp, req.Body)
		for _, sig := range sigs {
			if hmac.Equal(sig, want) {
				return nil
			}
		}
	}
	return fmt.Errorf("%s: %w", HeaderSignature, ErrNoMatch)
}

func checkID(id string) error {
	if len(id) > MaxIDLength {
		return fmt.Errorf("%s: %w: longer than %d characters", HeaderID, ErrMalformed, MaxIDLength)
	}
	for i := range len(id) {
		if c := id[i]; c < 0x21 || c > 0x7e {
			return fmt.Errorf("%s: %w: only visible ASCII characters", HeaderID, ErrMalformed)
		}
	}
	return nil
}
