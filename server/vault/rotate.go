package vault

import (
	"context"
	"fmt"
)

// Sealed is a store of sealed values that rotation re-seals, such as the
// assets or the jobs' secret inputs.
type Sealed interface {
	// Reseal calls reseal for every sealed value with the context it was
	// sealed with, and stores what it returns. It returns how many values
	// it re-sealed.
	Reseal(ctx context.Context, reseal func(sealed, context string) (string, error)) (int, error)
}

// RotateResult says what a rotation did.
type RotateResult struct {
	// KEK is the key every data key is now sealed under.
	KEK string
	// DataKey is the new data key values are sealed with.
	DataKey string
	// DataKeys is how many data keys were re-sealed under KEK.
	DataKeys int
	// Values is how many values were re-sealed under DataKey.
	Values int
}

// Rotate re-seals every data key under the source's first key, makes a new
// data key and re-seals every value of each store under it. Servers
// running meanwhile keep working: they open values under the new data key
// by reading it on first sight (with the keys they hold, the new one among
// them), and the old data keys stay stored, so values they seal with
// those still open. Afterwards no data key is sealed under a key other
// than the first, so the others can leave the key file.
func (v *Vault) Rotate(ctx context.Context, stores ...Sealed) (RotateResult, error) {
	stored, err := v.store.DataKeys(ctx)
	if err != nil {
		return RotateResult{}, fmt.Errorf("read data keys: %w", err)
	}
	first := v.kekList()[0].ID
	resealed := make([]SealedKey, 0, len(stored))
	for _, s := range stored {
		raw, err := v.unwrap(s)
		if err != nil {
			return RotateResult{}, err
		}
		if s.KEKID == first {
			continue
		}
		if err := v.wrap(&s, raw); err != nil {
			return RotateResult{}, err
		}
		resealed = append(resealed, s)
	}
	if len(resealed) > 0 {
		if err := v.store.ResealDataKeys(ctx, resealed); err != nil {
			return RotateResult{}, fmt.Errorf("re-seal data keys: %w", err)
		}
	}
	k, err := v.newDataKey()
	if err != nil {
		return RotateResult{}, err
	}
	if err := v.store.AddDataKey(ctx, k.sealed); err != nil {
		return RotateResult{}, fmt.Errorf("store the new data key: %w", err)
	}
	v.mu.Lock()
	v.keys[k.sealed.ID] = k.aead
	v.active = k.sealed.ID
	v.mu.Unlock()
	res := RotateResult{KEK: first, DataKey: k.sealed.ID, DataKeys: len(resealed)}
	for _, s := range stores {
		n, err := s.Reseal(ctx, func(sealed, context string) (string, error) {
			plain, err := v.Open(ctx, sealed, context)
			if err != nil {
				return "", err
			}
			return v.Seal(plain, context)
		})
		res.Values += n
		if err != nil {
			return res, fmt.Errorf("re-seal values: %w", err)
		}
	}
	return res, nil
}
