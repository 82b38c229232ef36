// Package event delivers the outbox's events to the subscriptions that want
// them: signed in the Standard Webhooks scheme, at least once, in order per
// resource, with retries, one lane per subscription so that a slow
// receiver delays nobody else.
package event

import (
	"fmt"
	"time"

	"github.com/casarerpa/casare/server/stdwebhook"
)

// Standard Webhooks names, as the scheme's package spells them; events are
// signed exactly as inbound triggers are verified.
const (
	SecretPrefix    = stdwebhook.SecretPrefix
	HeaderID        = stdwebhook.HeaderID
	HeaderTimestamp = stdwebhook.HeaderTimestamp
	HeaderSignature = stdwebhook.HeaderSignature
)

// NewSecret returns a new signing secret: whsec_ and 32 random bytes in
// standard base64.
func NewSecret() string { return stdwebhook.NewSecret() }

// Sign returns the webhook-signature header of body sent as message id at
// ts: "v1," and the base64 HMAC-SHA256 of "{id}.{ts}.{body}".
func Sign(secret, id string, ts time.Time, body []byte) (string, error) {
	key, err := stdwebhook.DecodeSecret(secret)
	if err != nil {
		return "", fmt.Errorf("sign event %s: %w", id, err)
	}
	return stdwebhook.Sign(key, id, ts, body), nil
}

// Verify checks the headers of a delivery as a receiver does: one of the
// space-separated v1 signatures matches and the timestamp is within
// tolerance of now (so a captured request cannot be replayed later).
func Verify(secret, id, timestamp, signatures string, body []byte, now time.Time, tolerance time.Duration) error {
	key, err := stdwebhook.DecodeSecret(secret)
	if err != nil {
		return err
	}
	return stdwebhook.Verify([][]byte{key}, stdwebhook.Request{ID: id, Timestamp: timestamp, Signature: signatures, Body: body}, now, tolerance)
}
