// Package event delivers the outbox's events to the subscriptions that want
// them: signed in the Standard Webhooks scheme, at least once, in order per
// resource, with retries, one lane per subscription so that a slow
// receiver delays nobody else.
package event

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

// SecretPrefix starts every signing secret, as Standard Webhooks writes
// them.
const SecretPrefix = "whsec_"

// Standard Webhooks headers.
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// NewSecret returns a new signing secret: whsec_ and 32 random bytes in
// standard base64.
func NewSecret() string {
	k := make([]byte, 32)
	rand.Read(k) // never fails; see crypto/rand.Read
	return SecretPrefix + base64.StdEncoding.EncodeToString(k)
}

// key returns the HMAC key a secret holds.
func key(secret string) ([]byte, error) {
	k, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, SecretPrefix))
	if err != nil || len(k) == 0 {
		return nil, errors.New("not a signing secret: want whsec_ and base64")
	}
	return k, nil
}

// Sign returns the webhook-signature header of body sent as message id at
// ts: "v1," and the base64 HMAC-SHA256 of "{id}.{ts}.{body}".
func Sign(secret, id string, ts time.Time, body []byte) (string, error) {
	k, err := key(secret)
	if err != nil {
		return "", err
	}
	return "v1," + base64.StdEncoding.EncodeToString(mac(k, id, ts.Unix(), body)), nil
}

func mac(k []byte, id string, ts int64, body []byte) []byte {
	h := hmac.New(sha256.New, k)
	fmt.Fprintf(h, "%s.%d.", id, ts)
	h.Write(body)
	return h.Sum(nil)
}

// Verify checks the headers of a delivery as a receiver does: one of the
// space-separated v1 signatures matches and the timestamp is within
// tolerance of now (so a captured request cannot be replayed later).
func Verify(secret, id, timestamp, signatures string, body []byte, now time.Time, tolerance time.Duration) error {
	k, err := key(secret)
	if err != nil {
		return err
	}
	ts, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil {
		return fmt.Errorf("%s: not a Unix time", HeaderTimestamp)
	}
	if d := now.Sub(time.Unix(ts, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("%s: %s is more than %s from now", HeaderTimestamp, timestamp, tolerance)
	}
	want := mac(k, id, ts, body)
	for sig := range strings.FieldsSeq(signatures) {
		version, value, ok := strings.Cut(sig, ",")
		if !ok || version != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(value)
		if err == nil && hmac.Equal(got, want) {
			return nil
		}
	}
	return fmt.Errorf("%s: no signature matches", HeaderSignature)
}
