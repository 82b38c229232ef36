// Package vault encrypts the values the control plane keeps secret
// (credentials, secret assets, secret job inputs) with AES-256-GCM. Values
// are sealed under a data key; data keys are stored sealed under a
// key-encryption key (KEK) from a KeySource, so the database alone never
// holds what it takes to read them, and changing the KEK re-seals a few
// data keys rather than every value.
package vault

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// SealedKey is a data key as stored: sealed under the KEK KEKID.
type SealedKey struct {
	ID        string
	KEKID     string
	Sealed    []byte
	CreatedAt time.Time
}

// Store keeps the sealed data keys (the registry implements it).
type Store interface {
	// DataKeys returns every data key.
	DataKeys(ctx context.Context) ([]SealedKey, error)
	// AddDataKey stores a new data key.
	AddDataKey(ctx context.Context, k SealedKey) error
	// ResealDataKeys replaces the stored seal of each key given, by id,
	// all in one transaction.
	ResealDataKeys(ctx context.Context, keys []SealedKey) error
}

// Errors callers tell apart with errors.Is.
var (
	// ErrWrongKey: no key of the source opens a stored data key.
	ErrWrongKey = errors.New("wrong secret key")
	// ErrCorrupt: a value was changed, belongs to another record, or is
	// not a sealed value at all.
	ErrCorrupt = errors.New("sealed value refused")
)

// prefix starts every sealed value: the format's version.
const prefix = "v1."

// Vault seals and opens values. It is safe for concurrent use.
type Vault struct {
	source KeySource
	store  Store

	mu     sync.RWMutex
	keks   []KEK                  // the source's keys as last read
	keys   map[string]cipher.AEAD // data keys by id
	active string                 // the data key new values are sealed with
}

// Open reads the keys of source and opens every data key in store with
// them; with no data key stored yet it makes the first one. It fails with
// ErrWrongKey, naming the keys, when the source lacks the KEK of a stored
// data key or holds one that does not open it: a server started with the
// wrong key file refuses to start and changes nothing.
func Open(ctx context.Context, source KeySource, store Store) (*Vault, error) {
	keks, err := source.Keys(ctx)
	if err != nil {
		return nil, err
	}
	v := &Vault{source: source, store: store, keks: keks, keys: map[string]cipher.AEAD{}}
	if err := v.load(ctx); err != nil {
		return nil, err
	}
	if v.active == "" {
		k, err := v.newDataKey()
		if err != nil {
			return nil, err
		}
		if err := store.AddDataKey(ctx, k.sealed); err != nil {
			return nil, fmt.Errorf("store the first data key: %w", err)
		}
		// Another replica may have stored its own first key at the same
		// time; reading back makes every replica agree on the newest.
		if err := v.load(ctx); err != nil {
			return nil, err
		}
	}
	return v, nil
}

// kekList is the source's keys as last read.
func (v *Vault) kekList() []KEK {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.keks
}

// KEKs lists the ids of the source's keys, the sealing one first.
func (v *Vault) KEKs() []string {
	keks := v.kekList()
	ids := make([]string, len(keks))
	for i, k := range keks {
		ids[i] = k.ID
	}
	return ids
}

// ActiveKey is the id of the data key new values are sealed with.
func (v *Vault) ActiveKey() string {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.active
}

// load opens every stored data key it has not opened yet; the newest
// becomes the active one.
func (v *Vault) load(ctx context.Context) error {
	stored, err := v.store.DataKeys(ctx)
	if err != nil {
		return fmt.Errorf("read data keys: %w", err)
	}
	v.mu.RLock()
	keys := make(map[string]cipher.AEAD, len(stored))
	for id, aead := range v.keys {
		keys[id] = aead
	}
	v.mu.RUnlock()
	for _, s := range stored {
		if keys[s.ID] != nil {
			// Opened already: a rotation may have re-sealed it under a
			// key this server does not hold yet, which changes nothing
			// of the data key itself.
			continue
		}
		raw, err := v.unwrap(s)
		if err != nil {
			return err
		}
		aead, err := newAEAD(raw)
		if err != nil {
			return err
		}
		keys[s.ID] = aead
	}
	active := ""
	if len(stored) > 0 {
		newest := slices.MaxFunc(stored, func(a, b SealedKey) int {
			if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
				return c
			}
			return strings.Compare(a.ID, b.ID)
		})
		active = newest.ID
	}
	v.mu.Lock()
	v.keys, v.active = keys, active
	v.mu.Unlock()
	return nil
}

// reload reads the source's keys again, then the data keys: a rotation
// under a running server made a data key sealed under the key the source
// now lists first (a key file changed in place).
func (v *Vault) reload(ctx context.Context) error {
	keks, err := v.source.Keys(ctx)
	if err != nil {
		return err
	}
	v.mu.Lock()
	v.keks = keks
	v.mu.Unlock()
	return v.load(ctx)
}

// unwrap opens a stored data key with the KEK that sealed it.
func (v *Vault) unwrap(s SealedKey) ([]byte, error) {
	keks := v.kekList()
	i := slices.IndexFunc(keks, func(k KEK) bool { return k.ID == s.KEKID })
	if i < 0 {
		return nil, fmt.Errorf("%w: data key %s is sealed by key %s, which %s does not hold (it holds %s); start with the key that sealed it, listed after the new one while rotating",
			ErrWrongKey, s.ID, s.KEKID, v.source, strings.Join(v.KEKs(), ", "))
	}
	aead, err := newAEAD(keks[i].Key)
	if err != nil {
		return nil, err
	}
	raw, err := openRaw(aead, s.Sealed, []byte("data-key/"+s.ID))
	if err != nil || len(raw) != KeySize {
		return nil, fmt.Errorf("%w: key %s of %s does not open data key %s: the key or the stored data key was changed",
			ErrWrongKey, s.KEKID, v.source, s.ID)
	}
	return raw, nil
}

type dataKey struct {
	sealed SealedKey
	aead   cipher.AEAD
}

// newDataKey makes a random data key sealed under the first KEK.
func (v *Vault) newDataKey() (dataKey, error) {
	raw := NewKey()
	id := make([]byte, 8)
	if _, err := rand.Read(id); err != nil {
		return dataKey{}, err
	}
	k := SealedKey{ID: "dk-" + hex.EncodeToString(id), CreatedAt: time.Now().UTC().Truncate(time.Microsecond)}
	if err := v.wrap(&k, raw); err != nil {
		return dataKey{}, err
	}
	aead, err := newAEAD(raw)
	if err != nil {
		return dataKey{}, err
	}
	return dataKey{sealed: k, aead: aead}, nil
}

// wrap seals raw as k's data key under the first KEK.
func (v *Vault) wrap(k *SealedKey, raw []byte) error {
	kek := v.kekList()[0]
	aead, err := newAEAD(kek.Key)
	if err != nil {
		return err
	}
	k.KEKID = kek.ID
	k.Sealed = sealRaw(aead, raw, []byte("data-key/"+k.ID))
	return nil
}

// Seal encrypts plaintext under the active data key. context binds the
// value to the record it belongs to (e.g. "asset/mail/site=hq"): Open with
// another context refuses it, so a value cannot be moved to another row.
// The result is text that records the data key's id: v1.<key id>.<base64>.
func (v *Vault) Seal(plaintext []byte, context string) (string, error) {
	v.mu.RLock()
	id, aead := v.active, v.keys[v.active]
	v.mu.RUnlock()
	if aead == nil {
		return "", errors.New("vault: no data key")
	}
	return prefix + id + "." + base64.RawStdEncoding.EncodeToString(sealRaw(aead, plaintext, aad(id, context))), nil
}

// Open decrypts a value Seal returned for the same context. A value sealed
// under a data key this vault has not seen (another replica's rotation)
// makes it read the data keys again. ErrCorrupt when the value was
// changed or belongs to another context.
func (v *Vault) Open(ctx context.Context, sealed, context string) ([]byte, error) {
	id, body, err := split(sealed)
	if err != nil {
		return nil, err
	}
	v.mu.RLock()
	aead := v.keys[id]
	v.mu.RUnlock()
	if aead == nil {
		if err := v.reload(ctx); err != nil {
			return nil, err
		}
		v.mu.RLock()
		aead = v.keys[id]
		v.mu.RUnlock()
		if aead == nil {
			return nil, fmt.Errorf("%w: data key %s is not stored", ErrCorrupt, id)
		}
	}
	raw, err := base64.RawStdEncoding.DecodeString(body)
	if err != nil {
		return nil, fmt.Errorf("%w: not base64", ErrCorrupt)
	}
	out, err := openRaw(aead, raw, aad(id, context))
	if err != nil {
		return nil, fmt.Errorf("%w: it was changed or belongs to another record", ErrCorrupt)
	}
	return out, nil
}

// KeyOf returns the id of the data key a sealed value was sealed with.
func KeyOf(sealed string) (string, error) {
	id, _, err := split(sealed)
	return id, err
}

// IsSealed reports whether s has the form of a sealed value.
func IsSealed(s string) bool {
	_, _, err := split(s)
	return err == nil
}

func split(sealed string) (id, body string, err error) {
	rest, ok := strings.CutPrefix(sealed, prefix)
	if !ok {
		return "", "", fmt.Errorf("%w: not a sealed value", ErrCorrupt)
	}
	id, body, ok = strings.Cut(rest, ".")
	if !ok || id == "" {
		return "", "", fmt.Errorf("%w: not a sealed value", ErrCorrupt)
	}
	return id, body, nil
}

func aad(keyID, context string) []byte {
	return []byte(prefix + keyID + "\x00" + context)
}

func newAEAD(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// sealRaw returns nonce || ciphertext.
func sealRaw(aead cipher.AEAD, plaintext, ad []byte) []byte {
	out := make([]byte, aead.NonceSize(), aead.NonceSize()+len(plaintext)+aead.Overhead())
	if _, err := rand.Read(out); err != nil {
		panic("vault: no randomness: " + err.Error())
	}
	return aead.Seal(out, out, plaintext, ad)
}

func openRaw(aead cipher.AEAD, sealed, ad []byte) ([]byte, error) {
	if len(sealed) < aead.NonceSize() {
		return nil, errors.New("short")
	}
	n := aead.NonceSize()
	return aead.Open(nil, sealed[:n], sealed[n:], ad)
}
